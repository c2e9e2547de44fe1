"""Reptile (Nichol, Achiam and Schulman 2018, "On first-order meta-learning algorithms").

For each task ``T_i`` of the meta-batch: ``θ̃_i = U^k_{T_i}(φ)``, ``k`` steps of the inner
optimizer on the task's support set from ``φ``. Then ``φ ← φ + ε (1/n) Σ_i (θ̃_i − φ)``. No
query loss is differentiated; the query set only reports how well the adapted parameters do.
The paper's inner loop takes each step on a mini-batch of the support set (``inner_batch``).

``Reptile = GradientLearner(inner=sgd(α), outer=reptile())``; the paper's Omniglot runs adapt
with ``inner=adam(lr=1e-3, beta1=0)``. The outer optimizer's learning rate is ``ε``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt.optim import InnerOptimizer, sgd
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class Reptile(GradientLearner):
    """Reptile with ``inner_steps`` SGD steps at rate ``inner_lr``, or ``inner_steps`` of
    ``inner``. Learned inner rates (``inner=sgd(..., rates="per_layer_per_step")``) follow the
    first-order gradient of the query loss through the steps from a fixed ``φ``. Each step sees
    ``inner_batch`` rows of the support set (the paper's inner mini-batches,
    :mod:`modmeta.adapt.minibatch`) or all of them (``None``); ``batchnorm`` as in
    :class:`GradientLearner`."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 5,
                 inner: InnerOptimizer | None = None, aggregate: Aggregation | None = None,
                 execution: Execution = "auto", batchnorm: Statistics = "transductive",
                 inner_batch: int | None = None) -> None:
        inner = sgd(inner_lr) if inner is None else inner
        others = outer.first_order() if inner.rates.mode != "fixed" else None
        super().__init__(model, inner, inner_steps, outer=outer.reptile(others), aggregate=aggregate,
                         execution=execution, batchnorm=batchnorm, inner_batch=inner_batch)
