"""Training: the outer loop, checkpoints that resume exactly, and safe loading."""

from modmeta.train.checkpoint import CheckpointError
from modmeta.train.memory import keep_freed_memory
from modmeta.train.trainer import Diverged, Trainer

__all__ = ["CheckpointError", "Diverged", "Trainer", "keep_freed_memory"]
