"""The interface every learner offers to the Trainer, the evaluation and the user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from modmeta.meta.execution import Choice
from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import TaskBatch


class Learner(nn.Module, ABC):
    """A meta-learner: its ``nn.Parameter``\\ s are the meta-parameters.

    - ``adapt(x_support, y_support, steps)`` fits one task and returns its task state (adapted
      parameters, prototypes, ...); ``predict(state, x)`` predicts that task's queries.
    - ``draw(family, size, generator)`` draws one training step's data (a meta-batch of
      episodes by default) and ``meta_backward(data)`` computes the meta-gradient of it into
      the meta-parameters' ``.grad`` (the outer optimizer then steps) and returns metrics.
    - ``curve(batch, steps)`` is the query metric of each task after 0, 1, ..., ``steps``
      adaptation steps, the evaluation protocol's raw material.
    - ``report()`` is what the learner has learned beyond its weights, as plain data (σ per
      module, learned inner rates, structures): ``modmeta eval`` prints it and ``modmeta
      plot`` draws it. ``divergence_hint()`` names the learner's own settings a divergence
      most likely comes from.

    The Trainer knows this contract alone.
    """

    inner_steps: int = 0
    choice: Choice | None = None  # how a learner that maps its code over tasks batches them

    @property
    def execution(self) -> str | None:
        """How the tasks are batched now, ``"vmap"``, ``"loop"``, ``"channels_last"`` or
        ``"threads"`` (see :mod:`modmeta.meta.execution`); ``None`` for a learner without that
        choice."""
        return None if self.choice is None else self.choice.current

    @abstractmethod
    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int | None = None) -> Any:
        """Fit one task (no task axis) and return its state."""

    @abstractmethod
    def predict(self, state: Any, x: torch.Tensor) -> torch.Tensor:
        """Predictions (logits or values) for ``x`` under a task state from :meth:`adapt`."""

    def draw(self, family: TaskFamily, size: int, generator: torch.Generator) -> Any:
        """One training step's data: ``size`` episodes of ``family`` (a :class:`TaskBatch`).
        The returned object has ``.to(device, dtype)``."""
        return family.sample(size, generator)

    @abstractmethod
    def meta_backward(self, data: TaskBatch) -> dict[str, float]:
        """Accumulate the meta-gradient of ``data`` (from :meth:`draw`) into ``.grad``; return
        ``{"loss", "metric"}`` (and any other numbers worth logging)."""

    @abstractmethod
    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        """``[T, steps + 1]``: each task's query metric after ``0 .. steps`` adaptation steps."""

    def report(self) -> dict[str, Any]:
        """Learned quantities as plain data: ``{"sigma": {module: σ}}``, ``{"inner_rates":
        {parameter: [rate per step]}}``, ``{"structures": [[module per slot] per task]}``, ...;
        ``{}`` when there is nothing beyond the weights."""
        return {}

    def schedules(self) -> dict[str, int]:
        """The learner's own schedules by argument name, each a length in training iterations
        (BounceGrad's ``anneal_iterations``): the Trainer warns when one is longer than the run."""
        return {}

    def divergence_hint(self) -> str:
        """What of this learner's settings to lower when training diverges, e.g. ``"the inner
        one (inner_lr=0.4; sgd(lr=0.4))"``; empty when only the outer rate applies."""
        return ""
