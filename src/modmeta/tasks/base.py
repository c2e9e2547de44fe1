"""What every task family offers: seeded sampling of task batches, and named splits."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from modmeta.tasks.batch import TaskBatch


class TaskFamily(ABC):
    """A distribution over tasks.

    Which loss and metric apply is read off the targets a family draws (class indices:
    cross-entropy and accuracy; real values: squared error; see :mod:`modmeta.losses`).
    ``output_size`` is the width of the model output a task needs (the ways of a
    classification task, the target dimension of a regression task).
    Every random draw comes from the generator passed in, so a seeded generator gives the
    same tasks on the same machine.
    """

    output_size: int

    @abstractmethod
    def sample(self, tasks: int, generator: torch.Generator) -> TaskBatch:
        """Draw ``tasks`` independent tasks."""

    def split(self, name: str) -> TaskFamily:
        """The same family on another split (``"train"``, ``"val"`` or ``"test"``).

        Families drawn from a continuous distribution (sinusoids) have one distribution for
        all splits: the tasks differ because the draws differ.
        """
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: use 'train', 'val' or 'test'")
        return self
