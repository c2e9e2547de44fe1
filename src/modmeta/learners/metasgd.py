"""Meta-SGD (Li, Zhou, Chen and Li 2017, "Meta-SGD: learning to learn quickly for few-shot
learning").

Inner step: ``θ'_i = θ − α ⊙ ∇_θ L_{T_i}^{support}(f_θ)``, with ``α`` a learned tensor of the
same shape as ``θ`` (direction and rate per coordinate). Outer step:
``(θ, α) ← (θ, α) − β ∇_{(θ, α)} Σ_i L_{T_i}^{query}(f_{θ'_i})``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt import InnerRates
from modmeta.learners.gradient import GradientLearner
from modmeta.meta.execution import Execution
from modmeta.models.functional import parameters


class MetaSGD(GradientLearner):
    """MAML with a learned per-parameter inner rate ``α``, initialised to ``inner_lr``."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 execution: Execution = "auto") -> None:
        rates = InnerRates("per_parameter", inner_lr, parameters(model))
        super().__init__(model, inner_steps, rates, execution=execution)
