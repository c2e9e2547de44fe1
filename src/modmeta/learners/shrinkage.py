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

As compositions: ``prior=Shrinkage(σ, modules)`` with ``outer=exact()`` (σ-MAML),
``implicit()`` (σ-iMAML) or ``reptile(others=implicit())`` (σ-Reptile); ``inner`` may be any
inner optimizer (plain SGD at ``inner_lr`` by default).

The implicit gradients assume ``θ̂_t`` is stationary: enough inner steps for the MAP objective
to converge, and ``cg_steps`` conjugate-gradient steps (:mod:`modmeta.meta.implicit`).
"""

from __future__ import annotations

import math

from torch import nn

from modmeta.adapt.optim import InnerOptimizer, sgd
from modmeta.adapt.shrinkage import ModuleRule, Shrinkage
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.meta.outer import OuterUpdate
from modmeta.models.batchnorm import Statistics


class ShrinkageLearner(GradientLearner):
    """MAP adaptation under the per-module prior ``N(φ_m, σ_m² I)``, meta-learned by ``outer``.

    ``sigma`` is the initial ``σ_m`` of every module, ``modules`` groups the parameters (one
    module per layer by default), ``learn_sigma=False`` fixes ``σ``. ``min_sigma`` (default
    ``√inner_lr``, the inner rate being ``inner``'s when given) is the floor that keeps the
    inner loop stable. ``batchnorm`` as in :class:`GradientLearner`.
    """

    def __init__(self, model: nn.Module, outer: OuterUpdate, inner_lr: float = 0.01, inner_steps: int = 10,
                 sigma: float = 1.0, modules: ModuleRule = None, learn_sigma: bool = True,
                 min_sigma: float | None = None, inner: InnerOptimizer | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        inner = sgd(inner_lr) if inner is None else inner
        min_sigma = math.sqrt(inner.rates.lr) if min_sigma is None else min_sigma
        super().__init__(model, inner, inner_steps, outer=outer,
                         prior=Shrinkage(sigma=sigma, modules=modules, min_sigma=min_sigma, learn=learn_sigma),
                         aggregate=aggregate, execution=execution, batchnorm=batchnorm)

    def sigmas(self) -> dict[str, float]:
        """``σ_m`` per module: small means shared across tasks, large means task-specific."""
        return self.shrinkage.sigmas()


class SigmaMAML(ShrinkageLearner):
    """σ-MAML: ``(φ, log σ) ← (φ, log σ) − β ∇ (1/T) Σ_t L_t^val(θ̂_t(φ, σ))``, differentiating
    through the ``inner_steps`` unrolled MAP steps."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 10, sigma: float = 1.0,
                 modules: ModuleRule = None, learn_sigma: bool = True, min_sigma: float | None = None,
                 inner: InnerOptimizer | None = None, aggregate: Aggregation | None = None,
                 execution: Execution = "auto", batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, outer.exact(), inner_lr, inner_steps, sigma, modules, learn_sigma, min_sigma,
                         inner, aggregate, execution, batchnorm)


class SigmaIMAML(ShrinkageLearner):
    """σ-iMAML: ``φ ← φ − β (1/T) Σ_t Λ v_t`` and
    ``log σ_m ← log σ_m − β (1/T) Σ_t 2σ_m⁻² ⟨θ̂_{m,t} − φ_m, v_{m,t}⟩``, with
    ``v_t = (H_t + Λ + δI)⁻¹ ∇L_t^val(θ̂_t)`` by ``cg_steps`` of conjugate gradient (``δ =
    damping``, 0 by default)."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 10, sigma: float = 1.0,
                 modules: ModuleRule = None, learn_sigma: bool = True, min_sigma: float | None = None,
                 cg_steps: int = 5, damping: float = 0.0, inner: InnerOptimizer | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, outer.implicit(cg_steps, damping), inner_lr, inner_steps, sigma, modules,
                         learn_sigma, min_sigma, inner, aggregate, execution, batchnorm)


class SigmaReptile(ShrinkageLearner):
    """σ-Reptile: ``φ ← φ + ε (1/T) Σ_t (θ̂_t − φ)`` from MAP-adapted ``θ̂_t``, and ``log σ`` by the
    implicit gradient of the validation loss with ``φ`` held constant."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 10, sigma: float = 1.0,
                 modules: ModuleRule = None, learn_sigma: bool = True, min_sigma: float | None = None,
                 cg_steps: int = 5, damping: float = 0.0, inner: InnerOptimizer | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, outer.reptile(others=outer.implicit(cg_steps, damping)), inner_lr, inner_steps,
                         sigma, modules, learn_sigma, min_sigma, inner, aggregate, execution, batchnorm)
