"""Modules and their shrinkage variances (Chen et al. 2020, "Modular meta-learning with shrinkage").

A model's parameter tensors are grouped into modules ``m = 1 .. M``; each task's parameters
in module ``m`` are drawn around the shared ones, ``θ_{m,t} ~ N(φ_m, σ_m² I)``. A small ``σ_m``
shrinks the module to ``φ_m`` (shared across tasks), a large one lets it move (task-specific).

The learned parameter is ``ρ_m`` with ``σ_m² = σ_min² + exp(2 ρ_m)``: with ``σ_min = 0`` this
is plain ``log σ_m``. The floor ``σ_min`` keeps the inner loop stable: gradient descent at
rate ``α`` on the prior term, a quadratic of curvature ``1/σ_m²``, diverges once
``α/σ_m² > 2``, so the shrinkage learners set ``σ_min² = α`` by default; the smooth floor
(rather than a clamp) never zeroes ``ρ``'s gradient, so a module shrunk early can grow again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from modmeta.models.functional import Params

ModuleRule = Sequence[str] | Callable[[str], str] | None
"""How parameters form modules: ``None`` (one module per layer), a list of name prefixes (a
parameter joins the first prefix it falls under, e.g. ``"body"`` for a whole block; the rest
stay one module per layer), or a function from parameter name to module name."""


def layer(name: str) -> str:
    """The layer a parameter belongs to: its name without the last part (``body.0.weight`` →
    ``body.0``)."""
    return name.rpartition(".")[0] or name


def group_modules(names: Iterable[str], rule: ModuleRule = None) -> dict[str, list[str]]:
    """Module name → the parameter names in it, modules in order of first appearance."""
    if rule is None:
        module_of = layer
    elif callable(rule):
        module_of = rule
    else:
        prefixes = [rule] if isinstance(rule, str) else list(rule)

        def module_of(n: str) -> str:
            return next((p for p in prefixes if n == p or n.startswith(p + ".")), layer(n))

    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(module_of(n), []).append(n)
    return groups


class Shrinkage(nn.Module):
    """The per-module prior scales ``σ_m`` of the parameters ``params`` (names and tensors).

    ``sigma`` is every module's initial ``σ_m``; ``learn=False`` keeps them fixed (a buffer,
    not a meta-parameter). ``modules`` groups the parameters (see :data:`ModuleRule`). Without
    ``params`` the prior is a value to compose a learner from: the learner binds its copy to
    its model's parameters (:meth:`bind`).
    """

    def __init__(self, params: Params | None = None, sigma: float = 1.0, modules: ModuleRule = None,
                 min_sigma: float = 0.0, learn: bool = True) -> None:
        super().__init__()
        if not math.isfinite(sigma) or not sigma > min_sigma >= 0:
            raise ValueError(
                f"need a finite sigma > min_sigma >= 0, got sigma={sigma}, min_sigma={min_sigma}: "
                "for the sigma -> infinity limit use a large finite sigma"
            )
        self.sigma, self.modules, self.learn = float(sigma), modules, learn
        self.min_sigma = float(min_sigma)
        self.names: list[str] = []
        if params is not None:
            self.bind(params)

    def bind(self, params: Params) -> Shrinkage:
        """Group ``params`` into modules and create each module's ``ρ_m`` (a learner calls this
        on its own copy of the prior); returns ``self``."""
        if self.names:
            if set(self.index) != set(params):
                raise ValueError("this prior is bound to other parameters: build a new one")
            return self
        self.groups = group_modules(params, self.modules)
        self.names = list(self.groups)
        self.index = {n: i for i, m in enumerate(self.names) for n in self.groups[m]}
        like = next(iter(params.values()))
        rho = torch.full((len(self.names),), 0.5 * math.log(self.sigma**2 - self.min_sigma**2),
                         dtype=like.dtype, device=like.device)
        if self.learn:
            self.rho = nn.Parameter(rho)
        else:
            self.register_buffer("rho", rho)
        return self

    def precision(self, rho: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``Λ_n = 1/σ_m²`` for every parameter ``n`` of module ``m``, from ``rho`` (default:
        this module's own)."""
        rho = self.rho if rho is None else rho
        lam = 1 / (self.min_sigma**2 + torch.exp(2 * rho))
        return {n: lam[i] for n, i in self.index.items()}

    def sigmas(self) -> dict[str, float]:
        """``σ_m`` of each module, by module name: the report of which modules are shared
        (small) and which task-specific (large)."""
        sigma = torch.sqrt(self.min_sigma**2 + torch.exp(2 * self.rho.detach()))
        return {m: sigma[i].item() for i, m in enumerate(self.names)}

    def report(self) -> dict[str, dict[str, float]]:
        """``{"sigma": σ per module}``: what a learner with this prior reports."""
        return {"sigma": self.sigmas()}

    def extra_repr(self) -> str:
        return f"modules={self.names}, min_sigma={self.min_sigma:g}"
