"""MAML and first-order MAML (Finn, Abbeel and Levine, ICML 2017).

Inner loop, per task ``T_i`` (k steps): ``θ'_i = θ − α ∇_θ L_{T_i}^{support}(f_θ)``.
Outer loop: ``θ ← θ − β ∇_θ Σ_i L_{T_i}^{query}(f_{θ'_i})``, differentiating through the
inner steps (second order). First-order MAML drops the second-order terms: it treats each
inner gradient ``∇_θ L^{support}`` as a constant, so the meta-gradient is the query gradient at
``θ'_i``.

``MAML = GradientLearner(inner=sgd(α), outer=exact())``; ``FOMAML`` has ``outer=first_order()``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt.optim import InnerOptimizer, sgd
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class MAML(GradientLearner):
    """MAML with a fixed inner learning rate ``α = inner_lr``; ``inner`` replaces the plain
    SGD inner loop with another inner optimizer (e.g. ``adam(...)``)."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 first_order: bool = False, inner: InnerOptimizer | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, sgd(inner_lr) if inner is None else inner, inner_steps,
                         outer=outer.first_order() if first_order else outer.exact(),
                         aggregate=aggregate, execution=execution, batchnorm=batchnorm)


class FOMAML(MAML):
    """First-order MAML: MAML with every inner gradient detached."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 inner: InnerOptimizer | None = None, aggregate: Aggregation | None = None,
                 execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, inner_lr, inner_steps, first_order=True, inner=inner, aggregate=aggregate,
                         execution=execution, batchnorm=batchnorm)
