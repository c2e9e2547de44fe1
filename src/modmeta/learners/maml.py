"""MAML and first-order MAML (Finn, Abbeel and Levine, ICML 2017).

Inner loop, per task ``T_i`` (k steps): ``θ'_i = θ − α ∇_θ L_{T_i}^{support}(f_θ)``.
Outer loop: ``θ ← θ − β ∇_θ Σ_i L_{T_i}^{query}(f_{θ'_i})``, differentiating through the
inner steps (second order). First-order MAML drops the second-order terms: it treats each
inner gradient ``∇_θ L^{support}`` as a constant, so the meta-gradient is the query gradient at
``θ'_i``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt import InnerRates
from modmeta.learners.gradient import GradientLearner
from modmeta.meta.execution import Execution


class MAML(GradientLearner):
    """MAML with a fixed inner learning rate ``α = inner_lr``."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 first_order: bool = False, execution: Execution = "auto") -> None:
        super().__init__(model, inner_steps, InnerRates("fixed", inner_lr),
                         first_order=first_order, execution=execution)


class FOMAML(MAML):
    """First-order MAML: MAML with every inner gradient detached."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 execution: Execution = "auto") -> None:
        super().__init__(model, inner_lr, inner_steps, first_order=True, execution=execution)
