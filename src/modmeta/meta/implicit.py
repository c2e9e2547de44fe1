"""The implicit meta-gradient: differentiate the solution of the inner problem, not its steps.

Let the inner loop find ``θ̂(ψ) = argmin_θ F(θ, ψ)`` for outer parameters ``ψ`` (iMAML:
``ψ = φ``; shrinkage: ``ψ = (φ, log σ)``). At the minimum ``∇_θ F(θ̂, ψ) = 0``; differentiating
that identity in ``ψ`` (the implicit function theorem) gives

    dθ̂/dψ = −H⁻¹ ∂²F/∂θ∂ψ,   H = ∇²_θ F(θ̂, ψ),

so the gradient of an outer loss ``L(θ̂)`` is

    dL/dψ = (dθ̂/dψ)ᵀ ∇L(θ̂) = −∂/∂ψ ⟨∇_θ F(θ̂, ψ), v⟩   with   v = H⁻¹ ∇L(θ̂).

``v`` is found by conjugate gradient on Hessian-vector products, as in iMAML (Rajeswaran et
al. 2019, "Meta-learning with implicit gradients"), and the last step is one ``vjp`` in ``ψ``
at ``θ̂`` (below): neither needs the inner steps, so memory does not grow with their number. Everything
is ``torch.func`` on one task, so it runs under ``vmap``.

The products ``Hu`` are reverse-over-reverse (``vjp`` of ``grad``, linearised once in ``θ`` and
reused by every CG step; ``H`` is symmetric, so ``uᵀH = (Hu)ᵀ``). The last step is a ``vjp`` in
``ψ`` alone at ``θ̂``: of the *coupling* ``∂F/∂θ``'s part that depends on ``ψ`` where the caller
knows it (a prior's pull ``Λ (θ − φ)``: no network pass at all), else of the whole ``∇_θ F``
(one more first-order support pass). Forward-over-reverse
(``jvp(grad(F))``) would be cheaper but fails on ``F.mse_loss`` in torch 2.13 ("ZeroTensors are
immutable", pytorch/pytorch#123996).

For iMAML's ``F = L_train(θ) + (λ/2)‖θ − φ‖²`` this is ``dL/dφ = λ (H_L + λI)⁻¹ ∇L =
(I + H_L/λ)⁻¹ ∇L``, iMAML's meta-gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, vjp

from modmeta.models.functional import Params


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[n] * b[n]).sum() for n in a)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, and 0 where ``den`` is 0 (CG has converged exactly: nothing left to do)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, iterations: int) -> Params:
    """``x ≈ A⁻¹ b`` after ``iterations`` steps of conjugate gradient from ``x = 0``.

    ``A`` is given as ``matvec(p) = A p`` and should be symmetric positive definite; in exact
    arithmetic ``dim(b)`` iterations then solve the system. The Hessian of a network's loss
    need not be definite: as in truncated-Newton (Steihaug) CG, the iterate stops at the first
    search direction of non-positive curvature ``pᵀAp ≤ 0`` (from the start, that gives
    ``x = 0``) instead of stepping along it without bound. ``iterations`` is fixed and the stop
    is a mask, not a branch, so the loop runs under ``vmap``.
    """
    x = {n: torch.zeros_like(v) for n, v in b.items()}
    r = dict(b)
    p = dict(b)
    rr = _dot(r, r)
    active = torch.ones_like(rr, dtype=torch.bool)
    for _ in range(iterations):
        ap = matvec(p)
        pap = _dot(p, ap)
        active = active & (pap > 0)
        alpha = torch.where(active, _ratio(rr, pap), torch.zeros_like(rr))
        x = {n: x[n] + alpha * p[n] for n in x}
        r = {n: r[n] - alpha * ap[n] for n in r}
        rr_next = _dot(r, r)
        beta = _ratio(rr_next, rr)
        p = {n: r[n] + beta * p[n] for n in p}
        rr = rr_next
    return x


def implicit_gradient(objective: Callable[[Params, Params], torch.Tensor], theta: Params, psi: Params,
                      outer_grad: Params, iterations: int, damping: float = 0.0,
                      coupling: Callable[[Params, Params], Params] | None = None) -> Params:
    """``dL/dψ`` at the inner solution ``theta = θ̂ = argmin_θ objective(θ, ψ)``.

    ``outer_grad`` is ``∇L(θ̂)`` (keys of ``theta``); the result has the keys of ``psi``.
    ``iterations`` conjugate-gradient steps solve ``(∇²_θ F + δI) v = ∇L`` with ``δ =
    damping``. The answer is exact only as far as ``theta`` is a stationary point of
    ``objective``, CG has converged and ``δ = 0``; a damping ``δ > 0`` makes the system
    better conditioned (and definite where ``H`` is not quite), at the price of a bias, as the
    iMAML authors' code damps its CG system (for iMAML's ``(I + H_L/λ) u = ∇L``, adding
    ``r I`` there is ``δ = r λ`` here).

    ``coupling(θ, ψ)``, when given, is the part of ``∇_θ objective`` that depends on ``ψ`` (by
    name of ``θ``, for the entries it touches): the rest of the gradient must not depend on
    ``ψ``. A prior's pull ``Λ (θ − φ)`` is one; the last step then differentiates it alone.
    """
    theta = {n: t.detach() for n, t in theta.items()}
    psi = {n: t.detach() for n, t in psi.items()}
    _, hessian = vjp(lambda th: grad(objective)(th, psi), theta)  # u ↦ Hu

    def matvec(u: Params) -> Params:
        hu = hessian(u)[0]
        return hu if not damping else {n: hu[n] + damping * u[n] for n in hu}

    v = conjugate_gradient(matvec, outer_grad, iterations)
    mixed = grad(objective) if coupling is None else coupling
    part, cross = vjp(lambda ps: mixed(theta, ps), psi)  # w ↦ ∂_ψ ⟨∇_θ F(θ̂, ψ), w⟩
    return {n: -g for n, g in cross({n: v[n] for n in part})[0].items()}


def curvatures(objective: Callable[[Params], torch.Tensor], theta: Params, iterations: int = 30
               ) -> tuple[float, float]:
    """Estimates of the lowest and highest eigenvalues of ``∇²objective`` at ``theta``.

    Power iteration on Hessian-vector products finds the eigenvalue of largest magnitude; a
    second run on ``H − μI`` (``μ`` the first) finds the one farthest from it, the other end
    of the spectrum. A lowest eigenvalue below 0 at the inner loop's end means the inner
    problem is not convex there: ``θ̂`` is no minimum, conjugate gradient stops at the
    negative curvature (:func:`conjugate_gradient`) and the implicit gradient is not the
    gradient of the inner solution (``damping`` above ``−lowest`` makes the CG system
    definite). Estimates after ``iterations`` products each, from a fixed start (no global
    random state is used); they approach the true values from inside the spectrum.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    theta = {n: t.detach() for n, t in theta.items()}
    _, hvp = vjp(grad(objective), theta)
    generator = torch.Generator().manual_seed(0)
    start = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for n, t in theta.items()}

    def dominant(shift: float) -> float:
        """The Rayleigh quotient of ``H − shift·I`` after power iteration, plus ``shift``."""
        v = start
        for _ in range(iterations):
            norm = _dot(v, v).sqrt()
            v = {n: x / norm for n, x in v.items()}
            hv = {n: h - shift * v[n] for n, h in hvp(v)[0].items()}
            value, v = _dot(v, hv), hv
        return value.item() + shift

    first = dominant(0.0)
    second = dominant(first)
    return min(first, second), max(first, second)

