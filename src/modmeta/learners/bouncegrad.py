"""BounceGrad (Alet, Lozano-Pérez and Kaelbling, "Modular meta-learning", CoRL 2018, section 4).

- Meta-representation: the weights ``Θ`` of a library of modules ``F`` under a composition
  scheme ``C`` (:class:`modmeta.models.ModularNet`).
- Task adaptation: simulated annealing over structures ``S`` with ``Θ`` frozen
  (:mod:`modmeta.adapt.structure`).
- Meta-update: a gradient step on ``Θ`` (the outer optimizer).

Each meta-training task ``j`` keeps its current structure ``S_j`` (the buffer ``structures``,
row ``j``, indexed by the batch's ``task_ids``; checkpoints save it). One iteration on a
meta-batch ``B``, with ``D^train`` the support set and ``D^val`` the query set:

- (a) bounce: ``S'_j = propose(S_j)``, and ``S_j ← S'_j`` with probability
  ``min(1, exp((L(D_j^train; S_j, Θ) − L(D_j^train; S'_j, Θ)) / τ))`` for ``j ∈ B``;
- (b) grad: ``Θ ← Θ − η ∇_Θ (1/|B|) Σ_{j ∈ B} L(D_j^val; S_j, Θ)``.

The current and proposed structures of every task of the batch are scored in one vectorised
pass (``vmap`` over tasks and structures; the modules a structure selects are gathered from
the stacked weights). ``τ`` adapts to a target rate of accepted worse proposals that decays
from ``accept_start`` to ``accept_end`` over ``anneal_iterations`` iterations.

Meta-test: ``S* =`` simulated annealing (``search_steps`` proposals, the best structure
visited kept) on the task's ``D^train`` with ``Θ`` frozen, then optionally ``steps`` SGD steps
of fine-tuning of the selected modules at ``inner_lr``; the paper fine-tunes nothing
(``inner_steps = 0``). ``curve(batch, k)`` is the query MSE after the search and ``0 .. k``
fine-tuning steps.

As a composition: the grad step is the outer update ``exact()`` of the selected modules' query
loss (after MoMA's inner steps, with any inner optimizer value), combined across tasks by
``aggregate``; tasks run as ``execution`` says.

Distributed (:mod:`modmeta.distributed`): every process proposes the same structures for
the whole meta-batch from the same generator, scores only its own tasks' current and proposed
structures (the search's cost) and gathers the others' scores, so every process makes the same
Metropolis decisions and its ``structures`` buffer stays identical to a single process's.

Randomness: the learner draws from its own generators, seeded from ``seed`` and, in training,
the iteration counter (a buffer), so a resumed run proposes what an uninterrupted one would.
The search of :meth:`BounceGrad.curve` restarts from ``seed`` at each call: the same tasks get
the same structures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modmeta import distributed, losses
from modmeta.adapt.optim import InnerOptimizer, descend, sgd
from modmeta.adapt.structure import Annealing, anneal, anneal_step, target_rate
from modmeta.learners.base import Learner
from modmeta.meta import aggregate as aggregation
from modmeta.meta import outer as outers
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Choice, Execution, map_tasks
from modmeta.meta.outer import OuterUpdate, Task
from modmeta.models.functional import Params, forward, parameters
from modmeta.models.modular import ModularNet
from modmeta.tasks.batch import TaskBatch


@dataclass(frozen=True)
class ModularState:
    """A task's adaptation: its structure ``[slots]`` and the (fine-tuned) library weights."""

    structure: torch.Tensor
    params: Params


class BounceGrad(Learner):
    """Simulated annealing on each task's structure, gradient descent on the module weights.

    ``model`` is a :class:`modmeta.models.ModularNet` (the learner trains a copy of it). ``inner_steps`` SGD steps at
    ``inner_lr`` (or steps of ``inner``) fine-tune the selected modules after the meta-test
    search (0: none, as in the paper). ``search_steps`` proposals make one meta-test search;
    ``temperature`` is the initial ``τ``; ``accept_start``, ``accept_end`` and
    ``anneal_iterations`` set the decaying target rate of accepted worse proposals; ``seed``
    seeds the learner's draws.
    """

    adapts_weights = False  # MoMA adapts the module weights inside each task as well

    def __init__(self, model: ModularNet, inner_lr: float = 0.01, inner_steps: int = 0,
                 search_steps: int = 200, temperature: float = 1.0, accept_start: float = 0.5,
                 accept_end: float = 0.005, anneal_iterations: int = 3000, seed: int = 0,
                 inner: InnerOptimizer | None = None, outer: OuterUpdate | None = None,
                 aggregate: Aggregation | None = None, execution: Execution = "auto") -> None:
        super().__init__()
        if not isinstance(model, ModularNet):
            raise ValueError(f"{type(self).__name__} needs a modmeta.models.ModularNet (config: model name "
                             f"'modular'), got a {type(model).__name__}")
        if inner_steps < 0 or search_steps < 0:
            raise ValueError(f"inner_steps and search_steps must be >= 0, got {inner_steps} and {search_steps}")
        if temperature <= 0 or anneal_iterations < 1:
            raise ValueError(f"temperature must be > 0 and anneal_iterations >= 1, got {temperature} and "
                             f"{anneal_iterations}")
        target_rate(0, accept_start, accept_end, anneal_iterations)  # checks the targets
        if model.num_modules < 2:
            raise ValueError("a structure search needs a library of at least two modules")
        model = copy.deepcopy(model)  # the learner trains a copy: the user's module is never changed
        self.model = model
        if inner is not None and inner.carry:
            raise ValueError(f"{type(self).__name__} starts every adaptation afresh: an inner optimizer with "
                             "carry=True is for the gradient learners (GradientLearner, Reptile, MAML, ...)")
        self.inner = copy.deepcopy(sgd(inner_lr) if inner is None else inner).bind(parameters(model),
                                                                                 max(inner_steps, 1))
        self.rates = self.inner.rates  # registered: learned rates are meta-parameters
        self.inner_steps = inner_steps
        self.outer = outers.exact() if outer is None else outer
        self.aggregate = aggregation.mean() if aggregate is None else aggregate
        self.choice = Choice(execution, model)
        self.search_steps = search_steps
        self.accept_start = accept_start
        self.accept_end = accept_end
        self.anneal_iterations = anneal_iterations
        self.seed = seed
        self.register_buffer("structures", torch.zeros(0, model.scheme.slots, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_buffer("accept_rate", torch.tensor(float(accept_start)))

    def schedules(self) -> dict[str, int]:
        return {"anneal_iterations": self.anneal_iterations}

    # -- one task, one structure -----------------------------------------------------------

    @property
    def train_steps(self) -> int:
        """Inner steps inside training and scoring: 0 for BounceGrad, ``inner_steps`` for MoMA."""
        return self.inner_steps if self.adapts_weights else 0

    def _forward(self, params: Params, structure: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return forward(self.model, params, structure, x)

    def _support_loss(self, structure: torch.Tensor, x_support: torch.Tensor, y_support: torch.Tensor
                      ) -> Callable[[Params], torch.Tensor]:
        def support_loss(p: Params) -> torch.Tensor:
            return losses.loss(self._forward(p, structure, x_support), y_support)

        return support_loss

    def trajectory(self, structure: torch.Tensor, x_support: torch.Tensor, y_support: torch.Tensor,
                   steps: int) -> list[Params]:
        """Library weights after ``0 .. steps`` inner steps on the support loss of ``structure``.

        Only the modules the structure uses get a gradient, so only they move; a module in
        two slots is one set of weights, adapted once."""
        return descend(self._support_loss(structure, x_support, y_support), parameters(self.model), self.inner,
                       steps)

    def task(self, structure: torch.Tensor, x_support: torch.Tensor, y_support: torch.Tensor,
             x_query: torch.Tensor, y_query: torch.Tensor) -> Task:
        """One task's inner problem under its structure, for the outer update."""
        objective = self._support_loss(structure, x_support, y_support)

        def start(psi: Params) -> Params:
            return psi

        def adapt(psi: Params, first_order: bool) -> Params:
            return descend(objective, psi, self.inner, self.train_steps, first_order=first_order, history=False)[-1]

        def evaluate(theta: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pred = self._forward(theta, structure, x)
            return losses.loss(pred, y), losses.metric(pred, y)

        psi = parameters(self.model)
        return Task(psi, frozenset(psi), start, lambda theta, p: objective(theta), adapt, evaluate,
                    (x_support, y_support), (x_query, y_query))

    def _train_loss(self, structure: torch.Tensor, x_support: torch.Tensor, y_support: torch.Tensor
                    ) -> tuple[torch.Tensor]:
        """``L(D^train; S, Θ')``, the score of a structure (``Θ' = Θ`` without adaptation)."""
        params = self.trajectory(structure, x_support, y_support, self.train_steps)[-1]
        return (losses.loss(self._forward(params, structure, x_support), y_support),)

    def _val_loss(self, structure: torch.Tensor, x_support: torch.Tensor, y_support: torch.Tensor,
                  x_query: torch.Tensor, y_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L(D^val; S, Θ')`` and its metric: what the outer update differentiates."""
        outcome = self.outer(self.task(structure, x_support, y_support, x_query, y_query))
        return outcome.loss, outcome.metric

    # -- many tasks ------------------------------------------------------------------------

    def score(self, structures: torch.Tensor, x_support: torch.Tensor, y_support: torch.Tensor) -> torch.Tensor:
        """Training losses ``[T, P]`` of ``P`` structures per task (``[T, P, slots]``), in one
        pass over the ``T · P`` (task, structure) pairs.

        One map over the flattened pairs, not two nested ones: ``F.mse_loss`` under nested
        ``vmap`` with a target batched only by the outer one fails (torch 2.13).
        """
        t, p = structures.shape[:2]

        def pairs(x: torch.Tensor) -> torch.Tensor:
            return x[:, None].expand(t, p, *x.shape[1:]).reshape(t * p, *x.shape[1:])

        flat = map_tasks(self._train_loss, (structures.reshape(t * p, -1), pairs(x_support), pairs(y_support)),
                         self.execution)[0]
        return flat.view(t, p)

    def search(self, x_support: torch.Tensor, y_support: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The meta-test search: ``[T, slots]`` structures for ``T`` tasks' support sets, by
        simulated annealing from random structures with the weights frozen."""
        scheme, k = self.model.scheme, self.model.num_modules
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        start = scheme.initial(x_support.shape[0], k, g).to(x_support.device)
        with torch.no_grad():
            best, _ = anneal(lambda s: self.score(s, x_support, y_support), start,
                             lambda s: scheme.propose(s, k, g), self.search_steps, float(self.temperature),
                             self.accept_start, self.accept_end, g)
        return best

    # -- the Learner interface -------------------------------------------------------------

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int | None = None) -> ModularState:
        """Search the task's structure, then fine-tune for ``steps`` (default ``inner_steps``)."""
        steps = self.inner_steps if steps is None else steps
        structure = self.search(x_support[None], y_support[None])[0]
        return ModularState(structure, self.trajectory(structure, x_support, y_support, steps)[-1])

    def predict(self, state: ModularState, x: torch.Tensor) -> torch.Tensor:
        return self._forward(state.params, state.structure, x)

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """One BounceGrad iteration's bounce (structures updated in place) and grad (into ``.grad``)."""
        if batch.task_ids is None:
            raise ValueError(f"{type(self).__name__} keeps one structure per meta-training task and needs the "
                             f"batch's task_ids: train it on a family with a finite set of meta-training tasks "
                             f"(function-sums, sines, compositions)")
        ids = batch.task_ids
        xs, ys, xq, yq = batch.tensors()
        g = torch.Generator().manual_seed(self.seed * 2**32 + int(self.step) + 1)
        self._grow(int(ids.max()) + 1, g)
        scheme, k = self.model.scheme, self.model.num_modules
        target = target_rate(int(self.step), self.accept_start, self.accept_end, self.anneal_iterations)
        with torch.no_grad():
            chosen, _, state, accept = anneal_step(
                self.structures[ids], None, Annealing(self.temperature, self.accept_rate),
                lambda s: distributed.gather([self.score(*distributed.share((s, xs, ys)))], len(ids))[0],
                lambda s: scheme.propose(s, k, g), target, g)
        self.temperature.copy_(state.temperature)
        self.accept_rate.copy_(state.rate)
        self.structures[ids] = chosen

        def task_fn(s: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
            outcome = self.outer(self.task(s, xs, ys, xq, yq))
            return outcome.surrogate, outcome.loss, outcome.metric

        (task_losses, metrics), stats = self.choice.run(lambda execution: aggregation.backward(
            task_fn, (chosen, xs, ys, xq, yq), execution, dict(self.named_parameters()), self.aggregate),
            self.parameters())
        self.step.add_(1)
        return {"loss": task_losses.mean().item(), "metric": metrics.mean().item(),
                "accepted": accept.float().mean().item(), "temperature": float(self.temperature), **stats}

    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        """``[T, steps + 1]``: query MSE after the search and ``0 .. steps`` fine-tuning steps."""
        steps = self.inner_steps if steps is None else steps
        xs, ys, xq, yq = batch.tensors()
        structures = self.search(xs, ys)

        def task_curve(s: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor,
                       yq: torch.Tensor) -> tuple[torch.Tensor]:
            path = self.trajectory(s, xs, ys, steps)
            return (torch.stack([losses.metric(self._forward(p, s, xq), yq) for p in path]),)

        with torch.no_grad():
            return map_tasks(task_curve, (structures, xs, ys, xq, yq), self.execution)[0]

    def report(self) -> dict[str, Any]:
        """``{"structures": [[module per slot] per meta-training task], "modules": K, "slots": m}``."""
        return {"structures": self.structures.tolist(), "modules": self.model.num_modules,
                "slots": self.model.scheme.slots}

    def divergence_hint(self) -> str:
        if not self.adapts_weights:
            return ""
        return f"the inner one (inner_lr={self.inner.rates.lr:g}; {self.inner.describe()})"

    # -- the per-task structures -----------------------------------------------------------

    def _grow(self, tasks: int, generator: torch.Generator) -> None:
        """Give tasks ``len(structures) .. tasks-1`` their initial structures."""
        have = self.structures.shape[0]
        if tasks > have:
            new = self.model.scheme.initial(tasks - have, self.model.num_modules, generator)
            self.structures = torch.cat([self.structures, new.to(self.structures.device)])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # The number of meta-training tasks seen so far is the saved buffer's length.
        saved = state_dict.get(prefix + "structures")
        if saved is not None:
            self.structures = torch.empty_like(saved, device=self.structures.device)
        super()._load_from_state_dict(state_dict, prefix, *args)
