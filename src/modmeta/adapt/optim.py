"""Inner optimizers as values: differentiable update rules on parameter dicts.

An inner optimizer is a chain of transforms, the way optax builds ``adam`` as
``chain(scale_by_adam(...), scale(-lr))``: each transform turns the incoming updates (first
the gradient) into new ones, and the chain's last stage is the inner rates ``α_{n,k}``
(:class:`modmeta.adapt.InnerRates`: fixed, or learned per parameter or per layer and step).
One inner step is ``θ_n ← θ_n − u_n`` with ``u`` what the chain makes of ``∇_θ L``:

- :func:`sgd`: ``u = α g`` (with ``momentum`` μ: ``v ← μ v + g``, ``u = α v``);
- :func:`adam`: ``m ← β₁ m + (1−β₁) g``, ``v ← β₂ v + (1−β₂) g²``,
  ``u = α m̂ / (√v̂ + ε)`` with the bias corrections ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)``
  (``β₁ = 0`` is the Adam of Reptile's paper);
- either with ``anneal_to``: ``u ← c_k u``, the rate annealed over the inner steps on a half
  cosine to that fraction of itself (:class:`Anneal`), so the inner loop ends settled;
- either with ``carry=True``: each adaptation starts from the state the training adaptations
  before it ended in (Adam's moments and step count) rather than a fresh one, as Reptile's
  authors run their inner Adam (:class:`CarriedState`): the mean of a meta-batch's final
  states, or with ``carry="sequential"`` the tasks of a meta-batch one after another, each
  from the state the one before it ended in, as the authors' code runs them.

The state is explicit: ``init(params) -> state`` and ``update(grads, state, params) ->
(new_params, state)``, plain tensors and a step counter, so the loop runs under
``torch.func.vmap`` and stays differentiable (an outer ``backward`` goes through it, second
order). ``√v`` is taken so that its derivative at ``v = 0`` is 0 rather than infinite: the
second-order meta-gradient through Adam stays finite where a gradient is exactly zero (a
parameter the support loss does not reach), where ``0 · ∞`` gives other libraries a NaN. Near
a zero gradient, ``d u / d g ≈ α / ε``: the second-order meta-gradient through Adam amplifies
whatever reaches such coordinates by up to ``1/ε``, so an ``eps`` well above the default
``1e-8`` (``1e-4`` to ``1e-3``) keeps it well conditioned.

Learned rates are ``nn.Parameter``\\ s of the rates stage, which a learner registers as its
submodule ``rates`` and meta-learns with everything else. A learner takes a *copy* of the
value it is given and binds it to its model's parameters (:meth:`InnerOptimizer.bind`), so one
value can build many learners and is never changed itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.func import grad

from modmeta.adapt.proximal import Proximal
from modmeta.arguments import positive
from modmeta.models.functional import Params

Mode = Literal["fixed", "per_parameter", "per_layer_per_step"]

State = tuple[int, tuple[Any, ...]]
"""An optimizer's state: the number of steps taken, and each transform's own state."""


class Transform:
    """One stage of an inner optimizer: ``init(params) -> state`` and
    ``update(updates, state, params, step) -> (updates, state)``. ``stateful``: whether the
    state holds anything an adaptation can carry on to the next."""

    stateful = False

    def bind(self, params: Params, steps: int) -> None:
        """Create what depends on the parameters' names and shapes (learned rates do)."""

    def init(self, params: Params) -> Any:
        return ()

    def update(self, updates: Params, state: Any, params: Params, step: int) -> tuple[Params, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        """The stage's settings, for messages."""
        return ""


class Momentum(Transform):
    """``v ← μ v + g``; passes on ``v`` (heavy ball), or ``g + μ v`` with ``nesterov``."""

    stateful = True

    def __init__(self, momentum: float, nesterov: bool = False) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = nesterov

    def init(self, params: Params) -> Params:
        return {n: torch.zeros_like(p) for n, p in params.items()}

    def update(self, updates: Params, state: Params, params: Params, step: int) -> tuple[Params, Params]:
        v = {n: self.momentum * state[n] + g for n, g in updates.items()}
        out = {n: g + self.momentum * v[n] for n, g in updates.items()} if self.nesterov else v
        return out, v

    def describe(self) -> str:
        return f"momentum={self.momentum:g}, nesterov={self.nesterov}"


class Anneal(Transform):
    """The rate annealed over the inner steps: ``u ← c_k u`` with ``c_k`` falling on a half
    cosine from 1 at the first of the ``K`` bound steps to ``final`` at the last,
    ``c_k = final + (1 − final)(1 + cos(π k / (K − 1)))/2``, and ``final`` past the last.

    Gradient descent at a fixed rate ``α`` cannot settle in a valley sharper than ``2/α``: on
    Omniglot's Conv4 it ends bouncing across one, where the implicit gradient, which assumes a
    stationary end, is wrong (benchmarks/RESULTS.md). Annealing keeps the early, large steps
    and lets the last ones settle.
    """

    def __init__(self, final: float) -> None:
        if not 0 < final <= 1:
            raise ValueError(f"the annealed rate's final fraction must be in (0, 1], got {final}")
        self.final = float(final)
        self.steps = 1

    def bind(self, params: Params, steps: int) -> None:
        self.steps = steps

    def factor(self, step: int) -> float:
        """``c_k`` of inner step ``step`` (0-based)."""
        if self.steps < 2:
            return 1.0
        k = min(step, self.steps - 1)
        return self.final + (1 - self.final) * (1 + math.cos(math.pi * k / (self.steps - 1))) / 2

    def update(self, updates: Params, state: Any, params: Params, step: int) -> tuple[Params, Any]:
        c = self.factor(step)
        return {n: c * u for n, u in updates.items()}, state

    def describe(self) -> str:
        return f"anneal_to={self.final:g}"


def _plain(*groups: Iterable[torch.Tensor]) -> bool:
    """Whether plain tensor code may stand in for the ``torch.func``-ready form: nothing is
    recorded for autograd, no ``torch.func`` transform (``vmap``, ``grad``) is running and no
    tensor is one's wrapper; elsewhere the per-tensor form is the one with batching rules and
    derivatives."""
    return (not torch.is_grad_enabled() and torch._C._functorch.peek_interpreter_stack() is None
            and not any(torch._C._functorch.is_functorch_wrapped_tensor(x) for group in groups for x in group))


def _dense(x: torch.Tensor) -> bool:
    """Whether ``x`` fills its memory in a standard layout: contiguous, or channels-last."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def _laid_out_as(p: torch.Tensor, x: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """``x`` with the strides of ``p``: ``x`` itself (a clone if ``copy``) where they are already
    its strides, else a copy laid out as ``p``."""
    if x.stride() != p.stride():
        return torch.empty_like(p).copy_(x)
    return x.clone() if copy else x


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    """``√v`` for ``v ≥ 0``, with derivative 0 (not ∞) at ``v = 0``."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


class ScaleByAdam(Transform):
    """Adam's direction ``m̂ / (√v̂ + ε)`` (Kingma and Ba 2015), without the rate. The state is
    ``(m, v, t)``, ``t`` the number of updates so far (a tensor, at least float32 so that it
    keeps counting past 256 for bfloat16 weights), so that a carried state keeps its bias
    corrections."""

    stateful = True

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam needs 0 <= beta1 < 1 and 0 <= beta2 < 1, got {beta1} and {beta2}")
        if not eps > 0:
            raise ValueError(f"Adam's eps must be > 0, got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def init(self, params: Params) -> tuple[Params, Params, torch.Tensor]:
        first = next(iter(params.values()))
        return ({n: torch.zeros_like(p) for n, p in params.items()},
                {n: torch.zeros_like(p) for n, p in params.items()},
                torch.zeros((), dtype=torch.promote_types(first.dtype, torch.float32), device=first.device))

    def update(self, updates: Params, state: tuple[Params, Params, torch.Tensor], params: Params, step: int
               ) -> tuple[Params, tuple[Params, Params, torch.Tensor]]:
        m0, v0, t0 = state
        b1, b2 = self.beta1, self.beta2
        t = t0 + 1
        c1, c2 = 1 - b1**t, 1 - b2**t
        if _plain(updates.values(), m0.values()):
            return self._update_together(updates, m0, v0, c1, c2, t)
        m = {n: b1 * m0[n] + (1 - b1) * g for n, g in updates.items()}
        v = {n: b2 * v0[n] + (1 - b2) * g * g for n, g in updates.items()}
        out = {n: (m[n] / c1) / (_sqrt(v[n] / c2) + self.eps) for n in updates}
        return out, (m, v, t)

    def _update_together(self, updates: Params, m0: Params, v0: Params, c1: torch.Tensor, c2: torch.Tensor,
                         t: torch.Tensor) -> tuple[Params, tuple[Params, Params, torch.Tensor]]:
        """:meth:`update`'s arithmetic, op for op, on all tensors at once (``torch._foreach_*``,
        as ``torch.optim.Adam``): where nothing is differentiated (Reptile's inner loop, every
        evaluation) a step of a Conv4's 18 tensors costs a third of the time."""
        names = list(updates)
        g = [updates[n] for n in names]
        m = torch._foreach_mul([m0[n] for n in names], self.beta1)
        torch._foreach_add_(m, torch._foreach_mul(g, 1 - self.beta1))
        squares = torch._foreach_mul(g, 1 - self.beta2)
        torch._foreach_mul_(squares, g)
        v = torch._foreach_mul([v0[n] for n in names], self.beta2)
        torch._foreach_add_(v, squares)
        scale = torch._foreach_div(v, c2)
        torch._foreach_sqrt_(scale)
        torch._foreach_add_(scale, self.eps)
        out = torch._foreach_div(m, c1)
        torch._foreach_div_(out, scale)
        return dict(zip(names, out)), (dict(zip(names, m)), dict(zip(names, v)), t)

    def step_fused(self, params: Params, grads: Params, state: tuple[Params, Params, torch.Tensor], lr: float
                   ) -> tuple[Params, tuple[Params, Params, torch.Tensor]]:
        """``θ − lr · m̂ / (√v̂ + ε)`` and the new state, in one ``torch._fused_adam_`` kernel (the
        kernel of ``torch.optim.Adam(fused=True)``) on copies of ``params`` and the moments:
        :meth:`update` followed by a fixed rate, to rounding, where nothing is differentiated
        (:func:`_plain`). Reptile's 25 inner steps per meta-batch on a Conv4's 18 tensors
        take about 13 ms this way against 27 ms for the eleven ``torch._foreach_*`` passes and
        the rate's and the step's products (one thread), about a tenth of an iteration."""
        m0, v0, t0 = state
        names = list(params)
        p = [params[n] for n in names]
        # The kernel writes in place and reads the four tensors of a parameter through the
        # parameter's strides: copies, and the gradients, laid out as the parameters.
        theta, m, v = ([_laid_out_as(q, d[n], copy=True) for q, n in zip(p, names)] for d in (params, m0, v0))
        g = [_laid_out_as(q, grads[n]) for q, n in zip(p, names)]
        t = t0 + 1
        torch._fused_adam_(theta, g, m, v, [], [t] * len(names), lr=lr, beta1=self.beta1, beta2=self.beta2,
                           weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        return dict(zip(names, theta)), (dict(zip(names, m)), dict(zip(names, v)), t)

    def describe(self) -> str:
        return f"beta1={self.beta1:g}, beta2={self.beta2:g}, eps={self.eps:g}"


def _leaves(state: Any) -> list[torch.Tensor]:
    """The tensors of a state (nested tuples and dicts), in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    items = state.values() if isinstance(state, dict) else state
    return [leaf for item in items for leaf in _leaves(item)]


def _rebuild(template: Any, leaves: Iterator[torch.Tensor]) -> Any:
    """``template``'s structure with its tensors (or ``None`` in their places) taken from
    ``leaves`` in order."""
    if template is None or isinstance(template, torch.Tensor):
        return next(leaves)
    if isinstance(template, dict):
        return {k: _rebuild(v, leaves) for k, v in template.items()}
    return tuple(_rebuild(v, leaves) for v in template)


class CarriedState(nn.Module):
    """An inner optimizer's state carried from adaptation to adaptation, as buffers (saved,
    moved and resumed with the learner that registers it).

    Reptile's authors (Nichol et al. 2018, openai/supervised-reptile) adapt every task with
    one TensorFlow Adam: its second moments and step count run on from task to task, and
    evaluation starts from them and restores them afterwards. Adam's first step from a fresh
    state moves every coordinate by ``±α`` whatever its gradient's size; a carried ``v`` scales
    each coordinate by the gradients it has seen across tasks. By default (``carry=True``) the
    tasks of a meta-batch adapt side by side, so each starts from :meth:`state` and
    :meth:`store` then keeps the mean over them of their final states; with
    ``carry="sequential"`` they adapt one after another as the authors run them, each from the
    state the one before it ended in (:meth:`keep`). Evaluation only reads. ``template`` is a
    fresh state of the transforms (their part of :meth:`InnerOptimizer.init`), whose structure
    and first values it keeps."""

    def __init__(self, template: tuple[Any, ...]) -> None:
        super().__init__()
        leaves = _leaves(template)
        self._structure = _rebuild(template, iter([None] * len(leaves)))
        for i, leaf in enumerate(leaves):
            self.register_buffer(f"s{i}", leaf.detach().clone())

    def state(self) -> tuple[Any, ...]:
        """The carried state, where the next adaptation starts."""
        return _rebuild(self._structure, iter(self.buffers()))

    @staticmethod
    def leaves(state: State) -> list[torch.Tensor]:
        """The tensors of an adaptation's final state (from :func:`descend`), to :meth:`store`."""
        return [leaf.detach() for leaf in _leaves(state[1])]

    @torch.no_grad()
    def store(self, leaves: Sequence[torch.Tensor]) -> None:
        """Keep the mean over tasks of their final states: ``leaves`` as :meth:`leaves` gives
        them, each stacked on a leading task axis."""
        self.keep([leaf.mean(0) for leaf in leaves])

    @torch.no_grad()
    def keep(self, leaves: Sequence[torch.Tensor]) -> None:
        """Keep one adaptation's final state (``leaves`` as :meth:`leaves` gives them, no task
        axis): where the next adaptation of a sequential carry starts."""
        buffers = list(self.buffers())
        if len(leaves) != len(buffers):
            raise ValueError(f"a carried state has {len(buffers)} tensors, got {len(leaves)}")
        for buffer, leaf in zip(buffers, leaves):
            buffer.copy_(leaf)


def _key(name: str) -> str:
    # Parameter names hold dots; nn.ParameterDict keys may not.
    return name.replace(".", ":")


class InnerRates(nn.Module, Transform):
    """The rates ``α_{n,k}`` of parameter tensor ``n`` at inner step ``k``: ``u ← α ⊙ u``.

    - ``"fixed"``: one number for everything (MAML, Finn et al. 2017).
    - ``"per_parameter"``: a learned tensor of each parameter's shape, the same at every step
      (Meta-SGD, Li et al. 2017).
    - ``"per_layer_per_step"``: a learned scalar per parameter tensor and per step (the LSLR of
      MAML++, Antoniou et al. 2019). Steps past the number trained with reuse the last one,
      so a learner can adapt for longer at test time.

    Learned rates are ``nn.Parameter``\\ s of this module, created by :meth:`bind` (or at
    construction when ``params`` is given), initialised to ``init``.
    """

    def __init__(self, mode: Mode, init: float, params: Params | None = None, steps: int = 1) -> None:
        super().__init__()
        if mode not in ("fixed", "per_parameter", "per_layer_per_step"):
            raise ValueError(
                f"unknown inner-rate mode {mode!r}: use 'fixed', 'per_parameter' or 'per_layer_per_step'"
            )
        positive(**{"the inner rate (inner_lr, or the inner optimizer's lr)": init})
        self.mode = mode
        self.lr = float(init)  # the rate, or where learned rates start
        self.alpha = nn.ParameterDict()
        if params is not None:
            self.bind(params, steps)

    def bind(self, params: Params, steps: int) -> None:
        if self.mode == "fixed":
            return
        if not params:
            raise ValueError(f"inner-rate mode {self.mode!r} needs the parameters it applies to")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if len(self.alpha):
            if set(self.alpha) != {_key(n) for n in params}:
                raise ValueError("these learned rates are bound to other parameters: build a new value")
            return
        for n, p in params.items():
            shape = p.shape if self.mode == "per_parameter" else (steps,)
            self.alpha[_key(n)] = nn.Parameter(torch.full(shape, self.lr, dtype=p.dtype, device=p.device))

    def forward(self, name: str, step: int) -> torch.Tensor | float:
        """``α`` for parameter ``name`` at inner step ``step`` (0-based)."""
        if self.mode == "fixed":
            return self.lr
        if not len(self.alpha):
            raise RuntimeError(f"learned rates ({self.mode}) are used before bind(params, steps) created them")
        a = self.alpha[_key(name)]
        if self.mode == "per_parameter":
            return a
        return a[min(step, a.shape[0] - 1)]

    def update(self, updates: Params, state: Any, params: Params, step: int) -> tuple[Params, Any]:
        return {n: self(n, step) * u for n, u in updates.items()}, state

    def report(self) -> dict[str, list[float]]:
        """The learned rates as plain data: per layer, the rate of each step (per-layer-per-step)
        or the mean rate (per-parameter); nothing for fixed rates."""
        if self.mode == "fixed":
            return {}
        rates = {k.replace(":", "."): a.detach() for k, a in self.alpha.items()}
        if self.mode == "per_parameter":
            return {n: [a.mean().item()] for n, a in rates.items()}
        return {n: a.tolist() for n, a in rates.items()}

    def describe(self) -> str:
        return f"mode={self.mode}, lr={self.lr:g}"

    def extra_repr(self) -> str:
        return self.describe()


Carry = bool | Literal["mean", "sequential"]
"""How adaptations share an inner optimizer's state: ``False`` (each starts fresh), ``True`` or
``"mean"`` (a meta-batch's tasks start from the carried state side by side, which becomes the
mean of their final states), ``"sequential"`` (they run one after another, each from the state
the one before it ended in)."""


class InnerOptimizer:
    """A chain of transforms ending in the inner rates: ``θ ← θ − u``.

    The rates are the chain's only ``nn.Module`` (learned rates are parameters): a learner
    registers them as its submodule ``rates``, so they are meta-learned, saved and moved
    with everything else. ``carry`` (see :data:`Carry`): adaptations start from a carried
    state rather than a fresh one (:class:`CarriedState`, which the learner creates by
    :meth:`carried` and registers as its submodule ``carried``); ``carry_order`` then says how
    a meta-batch's tasks share it, ``"mean"`` or ``"sequential"``."""

    def __init__(self, *transforms: Transform, name: str = "chain", carry: Carry = False) -> None:
        if not transforms or not isinstance(transforms[-1], InnerRates):
            raise ValueError("an inner optimizer's chain ends in its rates (an InnerRates, e.g. learned_rates(...))")
        if not isinstance(carry, bool) and carry not in ("mean", "sequential"):
            raise ValueError(f"carry must be true, false, 'mean' or 'sequential', got {carry!r}")
        if carry and not any(t.stateful for t in transforms):
            raise ValueError(f"carry={carry!r} needs a stage with a state to carry (Adam, or momentum); "
                             "plain gradient descent has none")
        self.transforms = tuple(transforms)
        self.name = name
        self.carry = bool(carry)
        self.carry_order: Literal["mean", "sequential"] = "sequential" if carry == "sequential" else "mean"

    @property
    def rates(self) -> InnerRates:
        """The chain's rates ``α_{n,k}`` (its last stage)."""
        return self.transforms[-1]

    def __repr__(self) -> str:
        return self.describe()

    def bind(self, params: Params, steps: int) -> InnerOptimizer:
        """Create the learned rates for ``params`` and ``steps`` inner steps; returns ``self``."""
        for t in self.transforms:
            t.bind(params, steps)
        return self

    def init(self, params: Params) -> State:
        """A fresh state for ``params``: step 0, and each transform's own."""
        return 0, tuple(t.init(params) for t in self.transforms)

    def carried(self, params: Params) -> CarriedState:
        """The state to carry across adaptations of ``params`` (the parameters that adapt),
        starting fresh."""
        return CarriedState(self.init({n: p.detach() for n, p in params.items()})[1])

    def update(self, grads: Params, state: State, params: Params) -> tuple[Params, State]:
        """One step: ``(θ − u, state')`` for the gradients ``grads`` at ``params``."""
        step, states = state
        if self._fused(grads, states, params):
            moved, adam_state = self.transforms[0].step_fused(params, grads, states[0], self.rates.lr)
            return moved, (step + 1, (adam_state, *states[1:]))
        updates, new = grads, []
        for t, s in zip(self.transforms, states):
            updates, s = t.update(updates, s, params, step)
            new.append(s)
        return {n: params[n] - updates[n] for n in params}, (step + 1, tuple(new))

    def _fused(self, grads: Params, states: tuple[Any, ...], params: Params) -> bool:
        """Whether :meth:`update` can be one fused Adam kernel: the chain is Adam at a fixed rate,
        nothing is differentiated, every tensor is float32 or float64 on one CPU or CUDA device,
        and the parameters are dense (contiguous or channels-last), so that the gradients and
        moments can be laid out as they are (:meth:`ScaleByAdam.step_fused`)."""
        if not (params and len(self.transforms) == 2 and isinstance(self.transforms[0], ScaleByAdam)
                and self.rates.mode == "fixed"):
            return False
        m0, v0, _ = states[0]
        tensors = [x for d in (params, grads, m0, v0) for x in d.values()]
        first = tensors[0]
        return (first.dtype in (torch.float32, torch.float64) and first.device.type in ("cpu", "cuda")
                and all(x.dtype == first.dtype and x.device == first.device for x in tensors) and _plain(tensors)
                and all(_dense(p) for p in params.values()))

    def describe(self) -> str:
        """A short text such as ``sgd(lr=0.4)``, for messages (what to lower on divergence)."""
        stages = [f"{type(t).__name__}({t.describe()})" for t in self.transforms[:-1]]
        rates = f"lr={self.rates.lr:g}" + ("" if self.rates.mode == "fixed" else f", rates={self.rates.mode}")
        carried = [] if not self.carry else ["carry='sequential'" if self.carry_order == "sequential" else "carry=True"]
        if self.name == "chain":
            return f"chain({', '.join([*stages, rates, *carried])})"
        annealed = [t.describe() for t in self.transforms if isinstance(t, Anneal)]
        return f"{self.name}({', '.join([rates, *annealed, *carried])})"


def chain(*transforms: Transform) -> InnerOptimizer:
    """The inner optimizer applying ``transforms`` in turn; the last one is its rates."""
    return InnerOptimizer(*transforms)


def learned_rates(mode: Mode = "fixed", init: float = 0.1) -> InnerRates:
    """The rates stage: ``"fixed"`` (one number), ``"per_parameter"`` (Meta-SGD) or
    ``"per_layer_per_step"`` (MAML++ LSLR), starting at ``init``."""
    return InnerRates(mode, init)


def _annealed(anneal_to: float) -> list[Transform]:
    return [] if anneal_to == 1 else [Anneal(anneal_to)]


def sgd(lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False, rates: Mode = "fixed",
        anneal_to: float = 1.0, carry: Carry = False) -> InnerOptimizer:
    """Gradient descent at rate ``lr`` (learned from there unless ``rates="fixed"``), with
    heavy-ball ``momentum`` if it is not 0; ``anneal_to < 1`` anneals the rate over the inner
    steps to that fraction of itself (:class:`Anneal`); ``carry=True`` (or ``"sequential"``,
    :data:`Carry`) starts each adaptation from the momentum the training adaptations before it
    ended with (:class:`CarriedState`)."""
    stages = [Momentum(momentum, nesterov)] if momentum else []
    return InnerOptimizer(*stages, *_annealed(anneal_to), InnerRates(rates, lr), name="sgd", carry=carry)


def adam(lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         rates: Mode = "fixed", anneal_to: float = 1.0, carry: Carry = False) -> InnerOptimizer:
    """Adam at rate ``lr`` (learned from there unless ``rates="fixed"``); ``beta1=0`` is
    Reptile's; ``anneal_to`` as in :func:`sgd`; ``carry=True`` starts each adaptation from
    the moments and step count the training adaptations before it ended with, as Reptile's
    authors run it (:class:`CarriedState`), and ``carry="sequential"`` runs a meta-batch's
    tasks one after another through that state, as their code does (:data:`Carry`)."""
    return InnerOptimizer(ScaleByAdam(beta1, beta2, eps), *_annealed(anneal_to), InnerRates(rates, lr), name="adam",
                          carry=carry)


def gradient(f: Callable[[Params], torch.Tensor], params: Params) -> Params:
    """``∇f(params)``, one tensor per name (zeros where ``f`` does not use one): ``torch.func.grad``,
    which runs under ``vmap`` and inside an outer differentiation, unless nothing is being
    recorded and no ``torch.func`` transform is running (:func:`_plain`: Reptile's looped inner
    loop, every evaluation). There one ``torch.autograd.grad`` on detached leaves gives the same
    numbers without ``torch.func``'s per-call wrapping (about a tenth of a Reptile step on a
    Conv4). A first-order step is not such a case: its gradient, constant in the moving
    parameters, still carries the derivative in whatever else ``f`` closes over (a learned
    proximal strength)."""
    if not _plain(params.values()):
        return grad(f)(params)
    leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
    with torch.enable_grad():
        value = f(leaves)
    grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(leaves.items(), grads)}


def descend(objective: Callable[[Params], torch.Tensor] | Sequence[Callable[[Params], torch.Tensor]],
            params: Params, optimizer: InnerOptimizer, steps: int, only: Collection[str] | None = None,
            first_order: bool = False, history: bool = True, state: tuple[Any, ...] | None = None,
            final: list[State] | None = None) -> list[Params]:
    """``steps`` steps of ``optimizer`` on ``objective`` from ``params`` (the inner loop).

    ``objective`` may be a sequence, one objective per step (step ``k`` descends
    ``objective[k]``): the inner mini-batches of :mod:`modmeta.adapt.minibatch`. A
    :class:`modmeta.adapt.proximal.Proximal` objective has its penalty's gradient added in
    closed form rather than differentiated.

    Only the tensors named in ``only`` move (all when ``None``); the others enter
    ``objective`` unchanged. Gradients come from :func:`gradient` (``torch.func.grad`` wherever
    it matters), so the loop runs under ``vmap`` and an outer ``backward`` differentiates
    through it. ``first_order=True`` takes each inner gradient at detached parameters
    (first-order MAML: ``∇_θ L`` is a constant), so the outer graph holds only the updates
    themselves, not the inner backward.

    ``state``: the transforms' states to start from (:meth:`CarriedState.state`), fresh when
    ``None``; ``final``, when given, gets the optimizer's last state appended.

    Returns ``[θ_0, θ_1, ..., θ_steps]`` (``θ_0 = params``); ``history=False`` returns
    ``[θ_steps]`` alone and lets each step's parameters go once the next exist.
    """
    names = list(params) if only is None else [n for n in params if n in only]
    fixed = {n: p for n, p in params.items() if n not in names}
    moving = {n: params[n] for n in names}
    current: State = optimizer.init(moving) if state is None else (0, state)

    frozen = {n: p.detach() for n, p in fixed.items()} if first_order else fixed

    per_step = list(objective) if isinstance(objective, Sequence) else [objective] * steps
    if len(per_step) < steps:
        raise ValueError(f"{steps} inner steps need {steps} objectives, got {len(per_step)}")

    def step_grad(m: Params, k: int) -> Params:
        objective_k = per_step[k]
        loss = objective_k.loss if isinstance(objective_k, Proximal) else objective_k
        g = gradient(lambda p: loss({**frozen, **p}), m)
        if not isinstance(objective_k, Proximal):
            return g
        # A proximal objective: autograd through its loss only, the penalty's gradient added in closed form.
        pull = objective_k.pull(m)
        return {n: g[n] + pull[n] if n in pull else g[n] for n in g}

    trajectory = [dict(params)]
    for k in range(steps):
        if first_order:  # the gradient at detached parameters: no graph is built for it at all
            g = step_grad({n: v.detach() for n, v in moving.items()}, k)
        else:
            g = step_grad(moving, k)
        moving, current = optimizer.update(g, current, moving)
        if history:
            trajectory.append({**fixed, **moving})
        else:
            trajectory = [{**fixed, **moving}]
    if final is not None:
        final.append(current)
    return trajectory
