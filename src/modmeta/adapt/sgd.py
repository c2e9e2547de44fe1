"""The gradient-descent inner loop (TASKADAPT) as a pure function on parameter dicts."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from torch.func import grad

from modmeta.adapt.rates import InnerRates
from modmeta.models.functional import Params


def sgd(
    loss: Callable[[Params], torch.Tensor],
    params: Params,
    steps: int,
    rates: InnerRates,
    adapt: Collection[str] | None = None,
    first_order: bool = False,
    history: bool = True,
) -> list[Params]:
    """``steps`` gradient steps ``θ ← θ − α_{n,k} ∇_θ loss(θ)`` from ``params``.

    Only the tensors named in ``adapt`` move (all when ``None``); the others enter ``loss``
    unchanged. The gradients come from ``torch.func.grad``, so the loop runs under
    ``torch.func.vmap`` and stays differentiable: an outer ``backward`` differentiates
    through it (second order). ``first_order=True`` detaches each inner gradient, which is
    first-order MAML's approximation: the meta-gradient then treats ``∇_θ loss`` as constant.

    Returns the trajectory ``[θ_0, θ_1, ..., θ_steps]`` (``θ_0 = params``); the adapted
    parameters are its last entry. ``history=False`` returns ``[θ_steps]`` alone and lets each
    step's parameters go as soon as the next exist, so memory does not grow with ``steps``
    (for inner loops nothing differentiates through, as iMAML's).
    """
    names = list(params) if adapt is None else [n for n in params if n in adapt]
    fixed = {n: p for n, p in params.items() if n not in names}
    moving = {n: params[n] for n in names}

    def step_loss(m: Params) -> torch.Tensor:
        return loss({**fixed, **m})

    trajectory = [dict(params)]
    for k in range(steps):
        g = grad(step_loss)(moving)
        if first_order:
            g = {n: v.detach() for n, v in g.items()}
        moving = {n: moving[n] - rates(n, k) * g[n] for n in names}
        if history:
            trajectory.append({**fixed, **moving})
        else:
            trajectory = [{**fixed, **moving}]
    return trajectory
