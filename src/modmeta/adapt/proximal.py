"""The MAP inner objective: the task loss plus a Gaussian prior centred on the meta-parameters.

Task adaptation under the prior ``θ_n ~ N(φ_n, Λ_n⁻¹ I)`` minimises

    F(θ) = L(θ) + Σ_n (Λ_n / 2) ‖θ_n − φ_n‖²

(iMAML's proximal term when every ``Λ_n = λ``; the shrinkage prior ``Λ_n = 1/σ_m²`` for each
tensor ``n`` of module ``m``). The objective is handed to :func:`modmeta.adapt.sgd`, started at
``θ = φ``; the same function gives the implicit gradient its Hessian
(:mod:`modmeta.meta.implicit`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from modmeta.models.functional import Params


def proximal(loss: Callable[[Params], torch.Tensor], anchor: Params,
             precision: Mapping[str, torch.Tensor | float]) -> Callable[[Params], torch.Tensor]:
    """``θ ↦ loss(θ) + Σ_n (Λ_n / 2) ‖θ_n − anchor_n‖²`` over the tensors ``n`` in ``precision``.

    Gradients flow into ``anchor`` and ``precision`` if they carry any (σ-MAML differentiates
    through them); pass detached tensors to keep the inner loop out of the outer graph.
    """

    def objective(theta: Params) -> torch.Tensor:
        penalty = sum(lam / 2 * (theta[n] - anchor[n]).pow(2).sum() for n, lam in precision.items())
        return loss(theta) + penalty

    return objective
