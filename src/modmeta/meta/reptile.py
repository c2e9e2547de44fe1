"""Reptile's outer update (Nichol, Achiam and Schulman 2018, Algorithm 2).

``φ ← φ + ε · (1/T) Σ_t (θ̃_t − φ)``, where ``θ̃_t`` is the result of the inner loop on task
``t``. modmeta hands the outer optimizer the *gradient* ``φ − mean_t θ̃_t``: plain SGD with
learning rate ``ε`` is then exactly Reptile, and Adam on it is the variant the paper also uses.
"""

from __future__ import annotations

from modmeta.models.functional import Params


def reptile_gradient(phi: Params, adapted: Params) -> Params:
    """``φ − mean_t θ̃_t`` for each tensor; ``adapted`` holds ``θ̃`` stacked on a task axis."""
    return {n: (p.detach() - adapted[n].detach().mean(0)) for n, p in phi.items()}


def set_gradients(params: Params, grads: Params) -> None:
    """Write ``grads`` into ``.grad`` of ``params`` (accumulating, as ``backward`` does)."""
    for n, p in params.items():
        g = grads[n].to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g
