"""Reptile (Nichol, Achiam and Schulman 2018, "On first-order meta-learning algorithms").

For each task ``T_i`` of the meta-batch: ``θ̃_i = U^k_{T_i}(φ)``, ``k`` SGD steps on the task's
support set from ``φ``. Then ``φ ← φ + ε (1/n) Σ_i (θ̃_i − φ)``. No query loss is
differentiated; the query set only reports how well the adapted parameters do.
"""

from __future__ import annotations

import torch
from torch import nn

from modmeta import losses
from modmeta.adapt import InnerRates
from modmeta.learners.gradient import GradientLearner
from modmeta.meta.execution import Execution, map_tasks
from modmeta.meta.reptile import reptile_gradient, set_gradients
from modmeta.models.functional import parameters
from modmeta.tasks.batch import TaskBatch


class Reptile(GradientLearner):
    """Reptile with ``inner_steps`` SGD steps at rate ``inner_lr``; the outer optimizer's
    learning rate is Reptile's ``ε`` (see :mod:`modmeta.meta.reptile`)."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 5,
                 execution: Execution = "auto") -> None:
        super().__init__(model, inner_steps, InnerRates("fixed", inner_lr), first_order=True,
                         execution=execution)

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """``φ − mean_i θ̃_i`` into ``.grad``."""
        names = list(parameters(self.model))

        def task(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                 ) -> tuple[torch.Tensor, ...]:
            theta = self.adapt(xs, ys)
            pred = self.predict(theta, xq)
            return (losses.loss(pred, yq), losses.metric(pred, yq), *(theta[n] for n in names))

        with torch.no_grad():
            task_loss, metric, *adapted = map_tasks(task, batch.tensors(), self.execution)
        phi = parameters(self.model)
        set_gradients(phi, reptile_gradient(phi, dict(zip(names, adapted))))
        return {"loss": task_loss.mean().item(), "metric": metric.mean().item()}
