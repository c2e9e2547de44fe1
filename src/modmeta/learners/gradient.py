"""The gradient-based family: a learner composed of a model, an inner optimizer, a number of
steps, an outer update and, optionally, a prior.

- *meta-representation*: the model's initial parameters ``φ`` (and what the inner optimizer
  and the prior learn: inner rates, per-module σ);
- *task adaptation*: ``inner_steps`` steps of the inner optimizer
  (:mod:`modmeta.adapt.optim`) on the support loss, plus the prior's penalty
  ``Σ_n (Λ_n/2) ‖θ_n − φ_n‖²`` when there is one (:mod:`modmeta.adapt.shrinkage`), over all
  parameters or only some (``adapt_only``);
- *meta-update*: the outer update (:mod:`modmeta.meta.outer`: exact, first-order, Reptile,
  implicit, joint) forms each task's meta-gradient, and the aggregation
  (:mod:`modmeta.meta.aggregate`) combines them.

The named learners (MAML, Reptile, Meta-SGD, ANIL, LSLR, iMAML, σ-MAML, ...) are short
aliases choosing these values; any other combination is one constructor call::

    GradientLearner(model, inner=adam(lr=1e-3, beta1=0), inner_steps=5, outer=first_order())
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from modmeta import distributed, losses
from modmeta.adapt.minibatch import minibatches
from modmeta.adapt.optim import InnerOptimizer, State, descend, sgd
from modmeta.adapt.proximal import proximal
from modmeta.adapt.shrinkage import Shrinkage
from modmeta.learners.base import Learner
from modmeta.meta import aggregate as aggregation
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Choice, Execution, Run, map_tasks
from modmeta.meta.outer import OuterUpdate, Task, exact
from modmeta.models.batchnorm import Statistics, check_statistics, normalised, predicted
from modmeta.models.functional import Params, forward, parameters
from modmeta.models.safety import check_outputs, check_stateless, functional_copy
from modmeta.tasks.batch import TaskBatch


class GradientLearner(Learner):
    """Adapt by ``inner_steps`` of ``inner`` from the meta-learned parameters; meta-learn by
    ``outer``, the tasks' meta-gradients combined by ``aggregate``.

    ``model`` is any ``nn.Module``; the learner trains a copy of it (``model`` itself is never
    changed) whose ``nn.BatchNorm*`` layers are replaced by :class:`modmeta.models.BatchNorm`
    (batch statistics of each call, no running averages); layers that cannot be converted
    exactly are refused (:mod:`modmeta.models.safety`). ``batchnorm`` says which batch
    statistics normalise the queries (:data:`modmeta.models.batchnorm.STATISTICS`): their own
    (``"transductive"``, MAML's protocol) or the support set's (``"support"``); the support set
    is always normalised by its own.
    ``inner`` (default ``sgd(0.4)``) and ``prior`` are copied, then bound to the model's
    parameters: learned rates become this learner's submodule ``rates``, and ``prior`` its
    submodule ``shrinkage`` (``σ`` per module), which makes the inner objective MAP under
    ``N(φ, diag(1/Λ))``. An ``inner`` with ``carry=True`` gets the submodule ``carried``
    (:class:`modmeta.adapt.optim.CarriedState`): every adaptation starts from it, and each
    :meth:`meta_backward` replaces it by the mean of its tasks' final states, or with
    ``carry="sequential"`` adapts the tasks one after another, each from the state the one
    before it ended in (the looped executions only). ``inner_batch``
    rows of the support set per inner step (:mod:`modmeta.adapt.minibatch`; ``None``: all of
    them, every step). ``adapt_only`` lists parameter-name
    prefixes that adapt (``None``: all of them). ``execution`` chooses how tasks are batched
    (see :mod:`modmeta.meta.execution`).
    """

    def __init__(
        self,
        model: nn.Module,
        inner: InnerOptimizer | None = None,
        inner_steps: int = 1,
        outer: OuterUpdate | None = None,
        prior: Shrinkage | None = None,
        adapt_only: Sequence[str] | None = None,
        aggregate: Aggregation | None = None,
        execution: Execution = "auto",
        batchnorm: Statistics = "transductive",
        inner_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.batchnorm = check_statistics(batchnorm)
        minibatches(1, inner_batch, 0)  # a ValueError now for a size below 1
        self.inner_batch = inner_batch
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        self.model = functional_copy(model)
        self._width: tuple[int, ...] | None = None  # the model's output shape per example, read on the first task
        self.inner_steps = inner_steps
        params = parameters(self.model)
        names = list(params)
        if adapt_only is None:
            self.adapted = names
        else:
            self.adapted = [n for n in names if any(n == p or n.startswith(p + ".") for p in adapt_only)]
            if not self.adapted:
                raise ValueError(
                    f"adapt_only={list(adapt_only)} matches no parameter of the model; "
                    f"its parameters are {names}"
                )
        self.inner = copy.deepcopy(sgd(0.4) if inner is None else inner).bind(params, max(inner_steps, 1))
        self.rates = self.inner.rates  # registered: learned rates are meta-parameters
        self.carried = self.inner.carried({n: params[n] for n in self.adapted}) if self.inner.carry else None
        self.shrinkage = None if prior is None else copy.deepcopy(prior).bind(params)
        self.outer = exact() if outer is None else outer
        self.aggregate = aggregation.mean() if aggregate is None else aggregate
        self.sequential = self.carried is not None and self.inner.carry_order == "sequential"
        self.choice = Choice(execution, self.model, exclude=("vmap", "threads") if self.sequential else (),
                             why="carry='sequential' adapts a meta-batch's tasks one after another")

    def check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Before ``torch.func`` runs the model on a task (``x``, ``y``: one task's support set):
        its forward writes no buffer (checked on the first task) and its output width fits ``y``
        (one logit per class, or the targets' width); raises ``ValueError`` saying what to change."""
        if self._width is None:
            self._width = tuple(check_stateless(self.model, x).shape[1:])
        check_outputs(self._width, y)

    # -- one task's inner problem ------------------------------------------------------------

    def psi(self) -> Params:
        """The meta-parameters the inner problem depends on: ``model.*`` (the initialisation
        ``φ``) and ``shrinkage.*`` (the prior's), by learner parameter name (the live tensors)."""
        own = {"model." + n: p for n, p in parameters(self.model).items()}
        if self.shrinkage is not None:
            own |= {"shrinkage." + n: p for n, p in self.shrinkage.named_parameters()}
        return own

    def start(self, psi: Params) -> Params:
        """``θ_0 = φ``: the model's parameters read from ``psi``."""
        return {n[len("model."):]: p for n, p in psi.items() if n.startswith("model.")}

    def objective(self, x_support: torch.Tensor, y_support: torch.Tensor, psi: Params
                  ) -> Callable[[Params], torch.Tensor]:
        """``θ ↦ L^support(θ) (+ Σ_n (Λ_n/2) ‖θ_n − φ_n‖²)`` of one task, ``φ`` and ``Λ`` from ``psi``."""

        def support_loss(theta: Params) -> torch.Tensor:
            return losses.loss(forward(self.model, theta, x_support), y_support)

        if self.shrinkage is None:
            return support_loss
        own = {n[len("shrinkage."):]: p for n, p in psi.items() if n.startswith("shrinkage.")}
        return proximal(support_loss, self.start(psi), self.shrinkage.precision(**own))

    def step_objectives(self, x_support: torch.Tensor, y_support: torch.Tensor, psi: Params, steps: int
                        ) -> Callable[[Params], torch.Tensor] | list[Callable[[Params], torch.Tensor]]:
        """What each of ``steps`` inner steps descends: :meth:`objective` on the whole support
        set, or on each step's ``inner_batch`` rows of it."""
        rows = minibatches(x_support.shape[0], self.inner_batch, steps)
        if rows is None:
            return self.objective(x_support, y_support, psi)
        return [self.objective(x_support[r], y_support[r], psi) for r in rows]

    def trajectory(self, x_support: torch.Tensor, y_support: torch.Tensor,
                   steps: int | None = None) -> list[Params]:
        """Parameters after ``0 .. steps`` inner steps on one task's support set."""
        steps = self.inner_steps if steps is None else steps
        psi = self.psi()
        return descend(self.step_objectives(x_support, y_support, psi, steps), self.start(psi), self.inner, steps,
                       only=self.adapted, state=self.carried_state())

    def carried_state(self) -> tuple[Any, ...] | None:
        """Where the inner optimizer's state starts: the carried one, or ``None`` (fresh)."""
        return None if self.carried is None else self.carried.state()

    def task(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
             y_query: torch.Tensor, final: list[State] | None = None) -> Task:
        """One task's inner problem, for the outer update; ``final``, when given, gets the inner
        optimizer's last state appended at each adaptation."""

        def adapt(psi: Params, first_order: bool) -> Params:
            return descend(self.step_objectives(x_support, y_support, psi, self.inner_steps), self.start(psi),
                           self.inner, self.inner_steps, only=self.adapted, first_order=first_order,
                           history=False, state=self.carried_state(), final=final)[-1]

        def evaluate(theta: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pred = predicted(self.predict, theta, x, x_support, self.batchnorm)
            return losses.loss(pred, y), losses.metric(pred, y)

        def coupling(theta: Params, p: Params) -> Params:  # the prior's pull, all of ∇_θ F that involves ψ
            return self.objective(x_support, y_support, p).pull(theta)

        psi = self.psi()
        return Task(psi, frozenset(k for k in psi if k.startswith("model.")), self.start,
                    lambda theta, p: self.objective(x_support, y_support, p)(theta), adapt, evaluate,
                    (x_support, y_support), (x_query, y_query), None if self.shrinkage is None else coupling)

    def tasks(self, batch: TaskBatch) -> list[Task]:
        """Each of the batch's episodes as its inner problem, one at a time: what an outer
        update's diagnostics take, e.g. ``implicit(5).agreement(learner.tasks(batch))``."""
        self.check(batch.x_support[0], batch.y_support[0])
        return [self.task(*episode) for episode in zip(*batch.tensors())]

    # -- the Learner interface ---------------------------------------------------------------

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int | None = None) -> Params:
        """The task's adapted parameters ``θ'`` after ``steps`` (default: ``inner_steps``)."""
        self.check(x_support, y_support)
        return self.trajectory(x_support, y_support, steps)[-1]

    def predict(self, state: Params, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """The model's output on ``x`` with the adapted parameters ``state``; with
        ``batchnorm="support"`` normalised by the support inputs ``support``'s statistics."""
        return normalised(self.model, state, x, support, self.batchnorm)

    def task_loss(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                  y_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss the outer update differentiates for one task (the query loss after
        adaptation, for most) and its metric."""
        outcome = self.outer(self.task(x_support, y_support, x_query, y_query))
        return outcome.loss, outcome.metric

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """The aggregated meta-gradient of the batch's tasks into ``.grad`` (and, with a carried
        inner state, the mean of the tasks' final states into it, or with a sequential carry
        the last task's, each task having started from the one before)."""
        self.check(batch.x_support[0], batch.y_support[0])
        if self.sequential and distributed.rank_and_world()[1] > 1:
            raise ValueError("carry='sequential' runs a meta-batch's tasks one after another, which "
                             "processes sharing the tasks cannot: use carry=True with distributed training")

        pending: list[list[torch.Tensor]] = []  # a sequential carry: the last task's final state

        def task_fn(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
            if pending:  # this task starts where the one before it ended (its backward is done)
                self.carried.keep(pending.pop())
            final: list[State] = []
            outcome = self.outer(self.task(xs, ys, xq, yq, final))
            ends = self.carried.leaves(final[-1]) if self.carried is not None and final else []
            if self.sequential and ends:
                pending.append(ends)
                ends = []
            return outcome.surrogate, outcome.loss, outcome.metric, *ends

        start = [b.clone() for b in self.carried.buffers()] if self.sequential else None

        def step(execution: Run) -> tuple[tuple[torch.Tensor, ...], dict[str, float]]:
            if start is not None:  # every try of "auto" starts the sequence from the same state
                pending.clear()
                self.carried.keep(start)
            return aggregation.backward(task_fn, batch.tensors(), execution, dict(self.named_parameters()),
                                        self.aggregate)

        (task_losses, metrics, *ends), stats = self.choice.run(step, self.parameters())
        if pending:
            self.carried.keep(pending.pop())
        if ends:
            self.carried.store(ends)
        return {"loss": task_losses.mean().item(), "metric": metrics.mean().item(), **stats}

    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        self.check(batch.x_support[0], batch.y_support[0])

        def task_curve(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                       ) -> tuple[torch.Tensor]:
            path = self.trajectory(xs, ys, steps)
            return (torch.stack([losses.metric(predicted(self.predict, p, xq, xs, self.batchnorm), yq) for p in path]),)

        with torch.no_grad():
            return map_tasks(task_curve, batch.tensors(), self.execution)[0]

    def report(self) -> dict[str, Any]:
        """Learned inner rates (``inner_rates``) and the prior's report (``sigma``), if any."""
        found: dict[str, Any] = {}
        rates = self.inner.rates.report()
        if rates:
            found["inner_rates"] = rates
        if self.shrinkage is not None:
            found |= self.shrinkage.report()
        return found

    def divergence_hint(self) -> str:
        return f"the inner one (inner_lr={self.inner.rates.lr:g}; {self.inner.describe()})"

