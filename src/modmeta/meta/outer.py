"""Outer updates as values: how one task's meta-gradient is formed.

Every outer update has one signature, ``outer(task: Task) -> Outcome``. A :class:`Task` is one
task's inner problem as a learner poses it, written as functions of the meta-parameters ``ψ``
(the initialisation ``φ`` and any prior parameters, by learner parameter name): where
adaptation starts, ``θ_0(ψ)``; the inner objective ``F(θ, ψ)``; the inner loop ``θ̂(ψ)``;
and the loss of the adapted parameters on the query set. The :class:`Outcome` carries a
*surrogate*: a scalar whose gradient in the learner's parameters is the task's
meta-gradient. Backpropagating the surrogate is then the one thing every aggregation
(:mod:`modmeta.meta.aggregate`) and execution (:mod:`modmeta.meta.execution`) needs to know.

- :func:`exact`: ``L^query(θ̂(ψ))``, differentiated through the inner steps (second order).
- :func:`first_order`: the same with each inner gradient held constant (first-order MAML).
- :func:`reptile`: ``φ − θ̂`` for the initialisation (Nichol et al. 2018); the other
  meta-parameters (learned rates, a prior's σ) by the outer update ``others``.
- :func:`implicit`: the implicit-function gradient at the inner solution, by conjugate gradient
  (iMAML, Rajeswaran et al. 2019; σ-iMAML, Chen et al. 2020), with optional damping.
- :func:`joint`: the unadapted parameters' loss on all of the task's data (the pretrained
  baseline of Finn et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch.func import grad

from modmeta.meta.implicit import curvatures, implicit_gradient
from modmeta.models.functional import Params

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Task:
    """One task's inner problem, as an outer update sees it.

    - ``psi``: the meta-parameters the problem depends on, by learner parameter name;
      ``anchor``: those of them that are the initialisation ``φ``.
    - ``start(ψ)``: ``θ_0``, where adaptation starts.
    - ``objective(θ, ψ)``: the inner objective ``F`` (support loss, plus a prior's penalty).
    - ``adapt(ψ, first_order)``: ``θ̂``, the inner optimizer's steps on ``F(·, ψ)`` from
      ``θ_0(ψ)`` (inner gradients detached when ``first_order``).
    - ``evaluate(θ, x, y)``: ``(loss, metric)`` of parameters ``θ`` on data ``(x, y)``.
    - ``support``, ``query``: the task's data.
    - ``coupling(θ, ψ)``, optional: the part of ``∇_θ F`` that depends on ``ψ`` (a prior's pull
      ``Λ (θ − φ)``), when the rest of it does not; :func:`implicit` then differentiates only
      it in ``ψ`` instead of ``∇_θ F`` whole.
    """

    psi: Params
    anchor: frozenset[str]
    start: Callable[[Params], Params]
    objective: Callable[[Params, Params], torch.Tensor]
    adapt: Callable[[Params, bool], Params]
    evaluate: Callable[[Params, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    support: Data
    query: Data
    coupling: Callable[[Params, Params], Params] | None = None

    def detached(self, keys: frozenset[str] | None = None) -> Params:
        """``ψ`` with the entries in ``keys`` (all when ``None``) cut from the graph."""
        return {k: v.detach() if keys is None or k in keys else v for k, v in self.psi.items()}


@dataclass(frozen=True)
class Outcome:
    """What an outer update makes of one task: the ``surrogate`` whose gradient is the task's
    meta-gradient, the query ``loss`` and ``metric`` to report, and the adapted ``θ̂``."""

    surrogate: torch.Tensor
    loss: torch.Tensor
    metric: torch.Tensor
    adapted: Params


OuterUpdate = Callable[[Task], Outcome]


def _linear(params: Params, grads: Params) -> torch.Tensor:
    """``Σ_n ⟨p_n, g_n⟩`` with ``g`` constant: its gradient in ``p`` is ``g``."""
    return sum((params[n] * grads[n].detach()).sum() for n in grads)


def _with_value(evaluate: Callable[..., tuple[torch.Tensor, torch.Tensor]]
                ) -> Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]:
    """``evaluate`` returning ``(loss, (loss, metric))``, for ``grad(..., has_aux=True)``: the
    gradient and the values it is taken at from one pass."""
    def both(*args: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        loss, metric = evaluate(*args)
        return loss, (loss, metric)
    return both


@dataclass(frozen=True)
class Unrolled:
    """Backpropagate the query loss through the inner steps; ``first_order`` holds each inner
    gradient constant."""

    first_order: bool = False

    def __call__(self, task: Task) -> Outcome:
        theta = task.adapt(task.psi, self.first_order)
        loss, metric = task.evaluate(theta, *task.query)
        return Outcome(loss, loss, metric, theta)


def exact() -> Unrolled:
    """MAML's meta-gradient ``∇_ψ L^query(θ̂(ψ))``, second order through the inner loop."""
    return Unrolled(first_order=False)


def first_order() -> Unrolled:
    """First-order MAML: ``∇_θ L^query`` at ``θ̂``, as if ``dθ̂/dφ = I``."""
    return Unrolled(first_order=True)


@dataclass(frozen=True)
class Implicit:
    """The implicit meta-gradient at the inner solution (see :mod:`modmeta.meta.implicit`)."""

    cg_steps: int = 5
    damping: float = 0.0

    def __post_init__(self) -> None:
        if self.cg_steps < 1:
            raise ValueError(f"cg_steps must be >= 1, got {self.cg_steps}")
        if not self.damping >= 0:
            raise ValueError(f"damping must be >= 0, got {self.damping}")

    def __call__(self, task: Task) -> Outcome:
        fixed = task.detached()
        wrt = [k for k, v in task.psi.items() if v.requires_grad]
        with torch.no_grad():
            theta = task.adapt(fixed, False)
            outer_grad, (loss, metric) = grad(_with_value(task.evaluate), has_aux=True)(theta, *task.query)
            hyper = {}
            if wrt:
                coupling = None if task.coupling is None else (lambda th, ps: task.coupling(th, {**fixed, **ps}))
                hyper = implicit_gradient(lambda th, ps: task.objective(th, {**fixed, **ps}), theta,
                                          {k: fixed[k] for k in wrt}, outer_grad, self.cg_steps, self.damping,
                                          coupling)
        return Outcome(_linear(task.psi, hyper) if wrt else loss.new_zeros(()), loss, metric, theta)

    def agreement(self, tasks: Iterable[Task]) -> dict[str, float]:
        """How far this implicit meta-gradient is from the exact gradient of the same inner loop
        (backpropagated through its steps, as :func:`exact`), over ``tasks``; a check to run
        during training, since the implicit function theorem holds only where the inner loop
        ends at a stationary point, and how close it gets changes as ``ψ`` is learned.

        Returns ``cosine`` and ``norm_ratio`` (implicit over exact) of the two mean
        meta-gradients; ``stationarity``: the mean over tasks of ``‖∇_θ F(θ̂, ψ)‖``, with
        ``stationarity_ratio``, the same over ``‖∇_θ F(θ_0, ψ)‖`` (0 at a stationary point, 1
        where the inner steps made no progress); and ``lowest_curvature``, ``highest_curvature``:
        the extreme eigenvalues of ``∇²_θ F(θ̂, ψ)`` over the tasks (estimates, see
        :func:`modmeta.meta.implicit.curvatures`): below ``−damping``, the CG system is
        indefinite and CG stops early. Tasks run one at a time; nothing is written to any
        ``.grad``."""
        implicit, unrolled, ends, starts, spectra = [], [], [], [], []
        for task in tasks:
            wrt = [k for k, v in task.psi.items() if v.requires_grad]
            if not wrt:
                raise ValueError("the task has no meta-parameter that requires a gradient: nothing to compare")
            mine = self(task)
            for surrogate, found in ((mine.surrogate, implicit), (exact()(task).surrogate, unrolled)):
                grads = torch.autograd.grad(surrogate, [task.psi[k] for k in wrt], allow_unused=True)
                found.append(torch.cat([(torch.zeros_like(task.psi[k]) if g is None else g).flatten()
                                        for k, g in zip(wrt, grads)]))
            fixed = task.detached()

            def objective(th: Params) -> torch.Tensor:
                return task.objective(th, fixed)

            theta = {n: t.detach() for n, t in mine.adapted.items()}
            for point, norms in ((theta, ends), (task.start(fixed), starts)):
                norms.append(torch.cat([g.flatten() for g in grad(objective)(point).values()]).norm())
            spectra.append(curvatures(objective, theta))
        if not implicit:
            raise ValueError("agreement needs at least one task")
        a, b = torch.stack(implicit).mean(0), torch.stack(unrolled).mean(0)
        end, begin = torch.stack(ends).mean(), torch.stack(starts).mean()
        return {"cosine": (a @ b / (a.norm() * b.norm())).item(), "norm_ratio": (a.norm() / b.norm()).item(),
                "stationarity": end.item(), "stationarity_ratio": (end / begin).item(),
                "lowest_curvature": min(low for low, _ in spectra), "highest_curvature": max(high for _, high in spectra)}


def implicit(cg_steps: int = 5, damping: float = 0.0) -> Implicit:
    """``dL^query/dψ = −∂_ψ ⟨∇_θ F(θ̂, ψ), v⟩`` with ``(∇²_θ F + δI) v = ∇L^query(θ̂)`` solved
    by ``cg_steps`` of conjugate gradient, never backpropagating through the inner steps
    (memory flat in their number). Needs an inner objective that depends on ``ψ`` (a prior):
    plain ``L^support`` has no implicit gradient in its starting point."""
    return Implicit(cg_steps, damping)


@dataclass(frozen=True)
class Reptile:
    """Reptile's difference for the initialisation; ``others`` for the rest of ``ψ``."""

    others: OuterUpdate | None = None

    def __call__(self, task: Task) -> Outcome:
        if self.others is None:
            with torch.no_grad():
                theta = task.adapt(task.detached(), False)
                loss, metric = task.evaluate(theta, *task.query)
            rest = loss.new_zeros(())
        else:  # the others' meta-gradient with φ held fixed; its θ̂ is Reptile's too
            inner = self.others(replace(task, psi=task.detached(task.anchor)))
            theta, loss, metric, rest = inner.adapted, inner.loss.detach(), inner.metric, inner.surrogate
        start = task.start(task.psi)
        difference = {n: (start[n] - theta[n]).detach() for n in start}
        return Outcome(rest + _linear(start, difference), loss, metric, theta)


def reptile(others: OuterUpdate | None = None) -> Reptile:
    """``φ − θ̂`` as the gradient of the initialisation ``φ``: with plain SGD at rate ``ε`` as
    the outer optimizer this is Reptile's ``φ ← φ + ε (θ̂ − φ)`` (Adam on it is the paper's
    variant too). Other meta-parameters (learned inner rates, a prior's σ) get the gradient
    of the outer update ``others`` with ``φ`` held fixed, e.g. ``implicit()`` for σ-Reptile;
    with ``others=None`` they get none."""
    return Reptile(others)


@dataclass(frozen=True)
class Joint:
    """The unadapted parameters' loss on the support and query sets together."""

    def __call__(self, task: Task) -> Outcome:
        theta = task.start(task.psi)
        x = torch.cat([task.support[0], task.query[0]])
        y = torch.cat([task.support[1], task.query[1]])
        loss, metric = task.evaluate(theta, x, y)
        return Outcome(loss, loss, metric, theta)


def joint() -> Joint:
    """No learning to adapt: ``∇_φ L^{support ∪ query}(φ)``, joint training on all tasks (the
    pretrained-then-fine-tuned baseline of Finn et al. 2017, section 5.1)."""
    return Joint()
