"""modmeta: meta-learning on PyTorch, with modular meta-learning at its heart."""

from modmeta import adapt, learners, losses, meta, models, tasks
from modmeta.config import restore as load_run
from modmeta.evaluate import Evaluation, evaluate
from modmeta.train import Trainer

__version__ = "0.1.0"

__all__ = ["Evaluation", "Trainer", "adapt", "evaluate", "learners", "load_run", "losses", "meta", "models", "tasks"]
