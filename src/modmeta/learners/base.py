"""The interface every learner offers to the Trainer, the evaluation and the user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from modmeta.tasks.batch import TaskBatch


class Learner(nn.Module, ABC):
    """A meta-learner: its ``nn.Parameter``\\ s are the meta-parameters.

    - ``adapt(x_support, y_support, steps)`` fits one task and returns its task state (adapted
      parameters, prototypes, ...); ``predict(state, x)`` predicts that task's queries.
    - ``meta_backward(batch)`` computes the meta-gradient of a batch of tasks into the
      meta-parameters' ``.grad`` (the outer optimizer then steps) and returns metrics.
    - ``curve(batch, steps)`` is the query metric of each task after 0, 1, ..., ``steps``
      adaptation steps, the evaluation protocol's raw material.
    """

    inner_steps: int = 0

    @abstractmethod
    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int | None = None) -> Any:
        """Fit one task (no task axis) and return its state."""

    @abstractmethod
    def predict(self, state: Any, x: torch.Tensor) -> torch.Tensor:
        """Predictions (logits or values) for ``x`` under a task state from :meth:`adapt`."""

    @abstractmethod
    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """Accumulate the meta-gradient of ``batch`` into ``.grad``; return ``{"loss", "metric"}``."""

    @abstractmethod
    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        """``[T, steps + 1]``: each task's query metric after ``0 .. steps`` adaptation steps."""
