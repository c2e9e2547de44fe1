"""iMAML (Rajeswaran, Finn, Kakade and Levine, NeurIPS 2019, "Meta-learning with implicit
gradients").

Inner problem of task ``i``: ``θ_i = Alg*(φ) = argmin_θ L̂_i(θ) + (λ/2) ‖θ − φ‖²``, approximated
by ``inner_steps`` gradient steps from ``θ = φ``. Meta-gradient (implicit differentiation):

    d L_i^test(θ_i) / dφ = (I + H_i/λ)⁻¹ ∇L_i^test(θ_i),   H_i = ∇²L̂_i(θ_i),

found by ``cg_steps`` of conjugate gradient on Hessian-vector products, never
backpropagating through the inner steps, so memory does not grow with their number. Outer
step ``φ ← φ − β (1/T) Σ_i dL_i^test/dφ``.

iMAML is σ-iMAML (:mod:`modmeta.learners.shrinkage`) with one module holding every parameter
and a fixed ``σ² = 1/λ``, and is built that way.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt.optim import InnerOptimizer
from modmeta.learners.shrinkage import SigmaIMAML
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class IMAML(SigmaIMAML):
    """iMAML with proximal strength ``lam`` (``λ``) and inner gradient steps at rate ``inner_lr``
    (or ``inner_steps`` of ``inner``); ``damping`` as in :func:`modmeta.meta.implicit`."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 10, lam: float = 1.0,
                 cg_steps: int = 5, damping: float = 0.0, inner: InnerOptimizer | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        if inner is None and inner_lr * lam >= 2:
            raise ValueError(
                f"inner_lr * lam = {inner_lr * lam:g} >= 2: gradient descent on the proximal term "
                "alone diverges; lower inner_lr or lam"
            )
        super().__init__(model, inner_lr, inner_steps, sigma=lam**-0.5, modules=lambda name: "all",
                         learn_sigma=False, min_sigma=0.0, cg_steps=cg_steps, damping=damping, inner=inner,
                         aggregate=aggregate, execution=execution, batchnorm=batchnorm)
        self.lam = lam
