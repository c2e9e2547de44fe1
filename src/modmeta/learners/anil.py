"""ANIL, "almost no inner loop" (Raghu, Raghu, Bengio and Vinyals, ICLR 2020).

MAML in which only the head adapts: ``w'_i = w − α ∇_w L_{T_i}^{support}(f_{θ, w})`` while
the body ``θ`` stays fixed per task; both are meta-learned by
``∇_{(θ, w)} Σ_i L_{T_i}^{query}(f_{θ, w'_i})``.

``ANIL = GradientLearner(inner=sgd(α), outer=exact(), adapt_only=["head"])``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from modmeta.adapt.optim import InnerOptimizer, sgd
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class ANIL(GradientLearner):
    """MAML adapting only the parameters under ``head`` (a prefix list; default ``("head",)``)."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 head: Sequence[str] = ("head",), first_order: bool = False, inner: InnerOptimizer | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, sgd(inner_lr) if inner is None else inner, inner_steps,
                         outer=outer.first_order() if first_order else outer.exact(), adapt_only=head,
                         aggregate=aggregate, execution=execution, batchnorm=batchnorm)
