"""Meta-SGD (Li, Zhou, Chen and Li 2017, "Meta-SGD: learning to learn quickly for few-shot
learning").

Inner step: ``θ'_i = θ − α ⊙ ∇_θ L_{T_i}^{support}(f_θ)``, with ``α`` a learned tensor of the
same shape as ``θ`` (direction and rate per coordinate). Outer step:
``(θ, α) ← (θ, α) − β ∇_{(θ, α)} Σ_i L_{T_i}^{query}(f_{θ'_i})``.

``MetaSGD = GradientLearner(inner=sgd(α, rates="per_parameter"), outer=exact())``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt.optim import sgd
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class MetaSGD(GradientLearner):
    """MAML with a learned per-parameter inner rate ``α``, initialised to ``inner_lr``."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, sgd(inner_lr, rates="per_parameter"), inner_steps, outer=outer.exact(),
                         aggregate=aggregate, execution=execution, batchnorm=batchnorm)
