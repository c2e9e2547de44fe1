"""Hessian regularisation of the meta-objective (seed 004, "attempt 3").

The seed adds ``L_H = Σ_i ‖H[L(θ'_i, D_i^train)]‖_F²``, the squared Frobenius norm of the
Hessian of each task's training loss at its adapted parameters, to the meta-objective with a
coefficient: flat minima of the support loss, where a task's adaptation is less brittle.

``‖H‖_F² = tr(H²) = E_v[‖H v‖²]`` for any random ``v`` with ``E[v vᵀ] = I``; Hutchinson's
estimate averages ``‖H v‖²`` over a few Rademacher probes ``v ∈ {−1, 1}^d``, each costing one
Hessian-vector product (reverse-over-reverse, as in :mod:`modmeta.meta.implicit`), never the
``d × d`` Hessian. The estimate is differentiable: its gradient reaches the meta-parameters
through ``θ'_i`` (third order for MAML).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, vjp

from modmeta.meta.outer import Outcome, OuterUpdate, Task, exact
from modmeta.models.functional import Params


def hessian_norm(objective: Callable[[Params], torch.Tensor], theta: Params, probes: int = 1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Hutchinson's estimate ``(1/P) Σ_p ‖∇²objective(θ) v_p‖²`` of ``‖∇²objective(θ)‖_F²``
    with ``P = probes`` Rademacher vectors (drawn from ``generator``, or torch's default RNG)."""
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    _, hvp = vjp(grad(objective), theta)  # H is symmetric: vᵀH = (Hv)ᵀ
    total = 0.0
    for _ in range(probes):
        v = {n: (torch.randint(0, 2, t.shape, generator=generator, device=t.device) * 2 - 1).to(t.dtype)
             for n, t in theta.items()}
        hv = hvp(v)[0]
        total = total + sum(h.pow(2).sum() for h in hv.values())
    return total / probes


@dataclass(frozen=True)
class HessianPenalty:
    """``outer``'s meta-gradient plus ``coefficient ·`` that of the task's ``‖H‖_F²`` at ``θ̂``."""

    outer: OuterUpdate
    coefficient: float = 0.01
    probes: int = 1

    def __post_init__(self) -> None:
        if not self.coefficient >= 0 or self.probes < 1:
            raise ValueError(f"need coefficient >= 0 and probes >= 1, got {self.coefficient} and {self.probes}")

    def __call__(self, task: Task) -> Outcome:
        outcome = self.outer(task)
        penalty = hessian_norm(lambda theta: task.objective(theta, task.psi), outcome.adapted, self.probes)
        return Outcome(outcome.surrogate + self.coefficient * penalty, outcome.loss, outcome.metric, outcome.adapted)


def hessian_penalty(outer: OuterUpdate | None = None, coefficient: float = 0.01, probes: int = 1) -> HessianPenalty:
    """``outer`` (default ``exact()``) with the seed's Hessian regulariser ``coefficient · Σ_i
    ‖H[L(θ'_i, D_i^train)]‖_F²`` added to the meta-objective, estimated with ``probes``
    Hutchinson probes per task (from torch's default RNG, which the Trainer keeps per run).
    Needs an outer update whose ``θ̂`` carries the graph (``exact()``, ``first_order()``)."""
    return HessianPenalty(exact() if outer is None else outer, coefficient, probes)
