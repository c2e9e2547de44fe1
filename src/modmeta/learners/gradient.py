"""The gradient-based family's shared body: SGD adaptation from meta-learned parameters.

A gradient-based learner is a composition of
- a *meta-representation*: the model's initial parameters ``θ`` and the inner rates ``α``,
- a *task adaptation*: :func:`modmeta.adapt.sgd` on the support loss, over all parameters or
  only some (``adapt_only``),
- a *meta-update*: backpropagation of the query loss through the inner loop (exact or
  first-order); Reptile replaces it with its own (see :mod:`modmeta.learners.reptile`).

The named learners (MAML, Meta-SGD, ANIL, ...) only choose these pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modmeta import losses
from modmeta.adapt import InnerRates, sgd
from modmeta.learners.base import Learner
from modmeta.meta.execution import Execution, map_tasks, mean_loss_backward, resolve
from modmeta.models.batchnorm import replace_batchnorm
from modmeta.models.functional import Params, forward, parameters
from modmeta.tasks.batch import TaskBatch


class GradientLearner(Learner):
    """Adapt by ``inner_steps`` of SGD from the meta-learned parameters; meta-learn by
    backpropagating the query loss through the adaptation.

    ``model`` is any ``nn.Module``; its ``nn.BatchNorm*`` layers are replaced by
    :class:`modmeta.models.BatchNorm` (batch statistics of each call, no running averages).
    ``adapt_only`` lists parameter-name prefixes that adapt (``None``: all of them).
    ``execution`` chooses how tasks are batched (see :mod:`modmeta.meta.execution`).
    """

    def __init__(
        self,
        model: nn.Module,
        inner_steps: int,
        rates: InnerRates,
        first_order: bool = False,
        adapt_only: Sequence[str] | None = None,
        execution: Execution = "auto",
    ) -> None:
        super().__init__()
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        self.model = replace_batchnorm(model)
        self.rates = rates
        self.inner_steps = inner_steps
        self.first_order = first_order
        names = list(parameters(self.model))
        if adapt_only is None:
            self.adapted = names
        else:
            self.adapted = [n for n in names if any(n == p or n.startswith(p + ".") for p in adapt_only)]
            if not self.adapted:
                raise ValueError(
                    f"adapt_only={list(adapt_only)} matches no parameter of the model; "
                    f"its parameters are {names}"
                )
        self.execution = resolve(execution, self.model)

    def trajectory(self, x_support: torch.Tensor, y_support: torch.Tensor,
                   steps: int | None = None) -> list[Params]:
        """Parameters after ``0 .. steps`` inner steps on one task's support set."""
        steps = self.inner_steps if steps is None else steps

        def support_loss(p: Params) -> torch.Tensor:
            return losses.loss(forward(self.model, p, x_support), y_support)

        return sgd(support_loss, parameters(self.model), steps, self.rates,
                   adapt=self.adapted, first_order=self.first_order)

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int | None = None) -> Params:
        """The task's adapted parameters ``θ'`` after ``steps`` (default: ``inner_steps``)."""
        return self.trajectory(x_support, y_support, steps)[-1]

    def predict(self, state: Params, x: torch.Tensor) -> torch.Tensor:
        return forward(self.model, state, x)

    def task_loss(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                  y_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_query(θ'(θ))`` of one task and its metric."""
        pred = self.predict(self.adapt(x_support, y_support), x_query)
        return losses.loss(pred, y_query), losses.metric(pred, y_query)

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """``∇ (1/T) Σ_t L_query,t(θ'_t)`` into ``.grad`` (second order unless ``first_order``)."""
        task_losses, metrics = mean_loss_backward(self.task_loss, batch, self.execution)
        return {"loss": task_losses.mean().item(), "metric": metrics.mean().item()}

    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        def task_curve(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                       ) -> tuple[torch.Tensor]:
            path = self.trajectory(xs, ys, steps)
            return (torch.stack([losses.metric(self.predict(p, xq), yq) for p in path]),)

        with torch.no_grad():
            return map_tasks(task_curve, batch.tensors(), self.execution)[0]
