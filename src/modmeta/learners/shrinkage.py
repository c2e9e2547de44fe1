"""Modular meta-learning with shrinkage: σ-MAML, σ-iMAML, σ-Reptile (Chen, Friesen, Behbahani,
Doucet, Budden, Hoffman and de Freitas, NeurIPS 2020).

The hierarchical model: the parameters are grouped into modules ``m`` (see
:mod:`modmeta.adapt.shrinkage`), and for each task ``t``

    θ_{m,t} ~ N(φ_m, σ_m² I),   D_t | θ_t ~ p(D_t | θ_t).

**Task adaptation (MAP on the training split).** From ``θ = φ``, gradient descent on

    ℓ_t(θ) = L_t^train(θ) + Σ_m ‖θ_m − φ_m‖² / (2 σ_m²)

for ``inner_steps`` steps (``θ̂_t``). ``L`` is the *mean* loss over examples, so ``σ_m²`` here is
``N`` times the paper's (whose likelihood term is a sum over the ``N`` examples).

**σ by the predictive log-likelihood on the validation split.** ``σ̂ = argmax_σ Σ_t log
p(D_t^val | θ̂_t(σ))``, i.e. minimise the mean query loss ``L_t^val(θ̂_t)`` over ``log σ``.

The three estimators differ in how the meta-gradient of ``(φ, σ)`` is found:

- **σ-MAML**: both ``φ`` and ``σ`` by the validation loss, differentiated through the unrolled
  inner steps (second order, memory grows with the steps).
- **σ-iMAML**: both by the validation loss, through the implicit function theorem at the MAP
  stationary point ``∇L_t^train(θ̂_t) + Λ(θ̂_t − φ) = 0`` with ``Λ = diag(σ_m⁻²)``.
  Differentiating it, ``(H_t + Λ) dθ̂_t = Λ dφ − dΛ (θ̂_t − φ)`` with ``H_t = ∇²L_t^train(θ̂_t)``,
  so one solve ``v_t = (H_t + Λ)⁻¹ g_t`` of ``g_t = ∇L_t^val(θ̂_t)`` gives both gradients:

      ∂L_t^val/∂φ = Λ v_t,     ∂L_t^val/∂ log σ_m = 2 σ_m⁻² ⟨θ̂_{m,t} − φ_m, v_{m,t}⟩

  (with the floor ``σ_min``, the chain rule through ``σ_m² = σ_min² + e^{2ρ_m}``). With every
  ``σ_m = σ`` fixed this is iMAML with ``λ = 1/σ²`` (see :mod:`modmeta.learners.imaml`).
- **σ-Reptile**: ``φ`` by MAP. ``∂ℓ_MAP/∂φ_m = Σ_t (θ̂_{m,t} − φ_m) / σ_m²``, preconditioned by
  ``σ_m²``, is Reptile's difference ``φ ← φ + ε (1/T) Σ_t (θ̂_t − φ)``, the same for every
  ``σ``: as ``σ → ∞`` the inner loop is plain SGD and σ-Reptile *is* Reptile. ``σ`` by the
  validation loss with the implicit gradient above, treating ``φ`` as a constant. The exact
  gradient would also carry ``dφ̂/dσ`` through the joint MAP estimate of ``φ`` over all tasks,
  a solve coupling every task; the paper instead approximates the σ-gradient from the
  stationarity condition of each task, which is what we read it as doing. The dropped term
  vanishes when ``φ̂`` is a MAP estimate that changes slowly with ``σ``.

The implicit gradients assume ``θ̂_t`` is stationary: enough inner steps for the MAP objective
to converge, and ``cg_steps`` conjugate-gradient steps (:mod:`modmeta.meta.implicit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import grad

from modmeta import losses
from modmeta.adapt import InnerRates, sgd
from modmeta.adapt.proximal import proximal
from modmeta.adapt.shrinkage import ModuleRule, Shrinkage
from modmeta.learners.gradient import GradientLearner
from modmeta.meta.execution import Execution, map_tasks
from modmeta.meta.implicit import implicit_gradient
from modmeta.meta.reptile import reptile_gradient, set_gradients
from modmeta.models.functional import Params, forward, parameters
from modmeta.tasks.batch import TaskBatch


class ShrinkageLearner(GradientLearner):
    """MAP adaptation under the per-module prior ``N(φ_m, σ_m² I)``; the meta-update is the
    subclass's (this class's own is σ-MAML's: backpropagation through the inner steps).

    ``sigma`` is the initial ``σ_m`` of every module, ``modules`` groups the parameters (one
    module per layer by default), ``learn_sigma=False`` fixes ``σ``. ``min_sigma`` (default
    ``√inner_lr``) is the floor that keeps the inner loop stable.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 10, sigma: float = 1.0,
                 modules: ModuleRule = None, learn_sigma: bool = True, min_sigma: float | None = None,
                 cg_steps: int = 5, execution: Execution = "auto") -> None:
        super().__init__(model, inner_steps, InnerRates("fixed", inner_lr), execution=execution)
        if cg_steps < 1:
            raise ValueError(f"cg_steps must be >= 1, got {cg_steps}")
        min_sigma = math.sqrt(inner_lr) if min_sigma is None else min_sigma
        self.shrinkage = Shrinkage(parameters(self.model), sigma, modules, min_sigma, learn_sigma)
        self.cg_steps = cg_steps

    def map_objective(self, x_support: torch.Tensor, y_support: torch.Tensor, phi: Params,
                      rho: torch.Tensor) -> Callable[[Params], torch.Tensor]:
        """``θ ↦ L^train(θ) + Σ_m ‖θ_m − φ_m‖² / (2σ_m²)`` of one task, ``σ`` from ``rho``."""

        def support_loss(p: Params) -> torch.Tensor:
            return losses.loss(forward(self.model, p, x_support), y_support)

        return proximal(support_loss, phi, self.shrinkage.precision(rho))

    def trajectory(self, x_support: torch.Tensor, y_support: torch.Tensor,
                   steps: int | None = None) -> list[Params]:
        """MAP adaptation ``θ_0 = φ, ..., θ_steps``; differentiable in ``φ`` and ``σ``."""
        steps = self.inner_steps if steps is None else steps
        phi = parameters(self.model)
        return sgd(self.map_objective(x_support, y_support, phi, self.shrinkage.rho), phi, steps, self.rates)

    def sigmas(self) -> dict[str, float]:
        """``σ_m`` per module: small means shared across tasks, large means task-specific."""
        return self.shrinkage.sigmas()

    def implicit_pass(self, batch: TaskBatch, wrt: Sequence[str]) -> tuple[dict[str, float], Params, Params]:
        """Adapt each task by MAP from a detached ``φ`` (no graph through the inner steps).

        Returns the mean query loss and metric, the mean over tasks of the implicit gradients
        ``dL^val/dψ`` for the meta-parameters named in ``wrt`` (names as in
        ``named_parameters()``), and the adapted ``θ̂`` of each task (stacked on a task axis).
        """
        phi = {n: p.detach() for n, p in parameters(self.model).items()}
        current = {**{"model." + n: p for n, p in phi.items()}, "shrinkage.rho": self.shrinkage.rho.detach()}

        def task(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                 ) -> tuple[torch.Tensor, ...]:
            def objective(theta: Params, psi: Params) -> torch.Tensor:
                q = {**current, **psi}
                return self.map_objective(xs, ys, {n: q["model." + n] for n in phi}, q["shrinkage.rho"])(theta)

            def query_loss(theta: Params) -> torch.Tensor:
                return losses.loss(self.predict(theta, xq), yq)

            theta = sgd(lambda th: objective(th, {}), phi, self.inner_steps, self.rates, history=False)[-1]
            hyper = {}
            if wrt:
                hyper = implicit_gradient(objective, theta, {k: current[k] for k in wrt},
                                          grad(query_loss)(theta), self.cg_steps)
            pred = self.predict(theta, xq)
            return (losses.loss(pred, yq), losses.metric(pred, yq), *(hyper[k] for k in wrt),
                    *(theta[n] for n in phi))

        with torch.no_grad():
            loss, metric, *out = map_tasks(task, batch.tensors(), self.execution)
        grads = {k: g.mean(0) for k, g in zip(wrt, out)}
        adapted = dict(zip(phi, out[len(wrt):]))
        return {"loss": loss.mean().item(), "metric": metric.mean().item()}, grads, adapted


class SigmaMAML(ShrinkageLearner):
    """σ-MAML: ``(φ, log σ) ← (φ, log σ) − β ∇ (1/T) Σ_t L_t^val(θ̂_t(φ, σ))``, differentiating
    through the ``inner_steps`` unrolled MAP steps."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 10, sigma: float = 1.0,
                 modules: ModuleRule = None, learn_sigma: bool = True, min_sigma: float | None = None,
                 execution: Execution = "auto") -> None:
        super().__init__(model, inner_lr, inner_steps, sigma, modules, learn_sigma, min_sigma,
                         execution=execution)


class SigmaIMAML(ShrinkageLearner):
    """σ-iMAML: ``φ ← φ − β (1/T) Σ_t Λ v_t`` and
    ``log σ_m ← log σ_m − β (1/T) Σ_t 2σ_m⁻² ⟨θ̂_{m,t} − φ_m, v_{m,t}⟩``, with
    ``v_t = (H_t + Λ)⁻¹ ∇L_t^val(θ̂_t)`` by ``cg_steps`` of conjugate gradient."""

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """The implicit gradient of every meta-parameter (``φ``, and ``log σ`` if learned)."""
        stats, grads, _ = self.implicit_pass(batch, [n for n, _ in self.named_parameters()])
        set_gradients(dict(self.named_parameters()), grads)
        return stats


class SigmaReptile(ShrinkageLearner):
    """σ-Reptile: ``φ ← φ + ε (1/T) Σ_t (θ̂_t − φ)`` from MAP-adapted ``θ̂_t``, and ``log σ`` by the
    implicit gradient of the validation loss with ``φ`` held constant."""

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """``φ − mean_t θ̂_t`` into ``φ``'s ``.grad``; the implicit ``dL^val/d log σ`` into ``σ``'s."""
        learned = dict(self.named_parameters())
        wrt = ["shrinkage.rho"] if "shrinkage.rho" in learned else []
        stats, grads, adapted = self.implicit_pass(batch, wrt)
        phi = parameters(self.model)
        set_gradients(phi, reptile_gradient(phi, adapted))
        set_gradients({k: learned[k] for k in wrt}, grads)
        return stats
