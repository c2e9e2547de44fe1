"""MAML with learned per-layer, per-step inner learning rates (LSLR of MAML++: Antoniou,
Edwards and Storkey, "How to train your MAML", ICLR 2019; seed 004, "attempt 1").

Inner step ``k``: ``θ_{n}^{(k+1)} = θ_{n}^{(k)} − α_{n,k} ∇_{θ_n} L^{support}`` with one learned
scalar ``α_{n,k}`` for each parameter tensor ``n`` (a layer's weight, its bias) and each step
``k``. The rates are meta-learned with ``θ`` by the outer gradient. Adapting for more steps
than trained reuses the last step's rates.

``LSLR = GradientLearner(inner=sgd(α, rates="per_layer_per_step"), outer=exact())``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt.optim import sgd
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class LSLR(GradientLearner):
    """MAML whose inner rates ``α_{n,k}`` are learned, initialised to ``inner_lr``."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 1,
                 first_order: bool = False, aggregate: Aggregation | None = None,
                 execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, sgd(inner_lr, rates="per_layer_per_step"), inner_steps,
                         outer=outer.first_order() if first_order else outer.exact(), aggregate=aggregate,
                         execution=execution, batchnorm=batchnorm)
