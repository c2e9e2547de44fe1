"""Running one task's computation over a whole batch of tasks: vectorised or looped.

The per-task computation is written once, for one task, and mapped over the task axis here.
The executions give the same numbers up to rounding (the tests hold them to it):

- ``"vmap"``: ``torch.func.vmap`` over the task axis, one batched kernel per operation. It
  removes the per-task Python overhead that dominates small networks (the sinusoid MLP).
- ``"loop"``: a Python loop over tasks. For convolutional networks, per-task weights under
  vmap become grouped convolutions that are slower and use several times the memory of
  running each task's ordinary convolution in turn, and a loop can backpropagate task by
  task, keeping one task's graph alive at a time (:func:`modmeta.meta.aggregate.backward`).
- ``"channels_last"``: the loop, each task's images (4-D floating tensors) handed to the
  model with channels-last strides (NHWC in memory, :func:`channels_last`). A convolution
  answers in the layout of its input, so every feature map of the network stays NHWC, the
  layout the CPU's convolution and max-pool kernels are fastest in: on the Omniglot configs
  meta-iterations run 1.0-1.5x faster than the NCHW loop's (benchmarks/executions.py). A
  model that calls ``.view`` on a feature map cannot take such input (``.reshape`` and
  ``.flatten`` can); the user's tensors are never changed, the learner copies each task's images.
- ``"threads"``: the channels-last loop with the tasks shared among worker threads, as many
  as torch's intra-op threads (each worker then runs its kernels on one of them, restored
  after). The tasks' small operations (the 5-image support pass and its double backward) split
  badly across intra-op threads; whole tasks split well (at two threads, Omniglot meta-iterations
  1.79x faster than ``"channels_last"``'s for iMAML, 1.33x for first-order MAML, 1.23x for
  Reptile: benchmarks/executions.py; two tasks' graphs are alive at once, about 100 MiB more
  peak memory on max-pool Conv4 MAML: benchmarks/SPEED.md). Each worker runs the modules through
  its own copies (:func:`modmeta.models.functional.replicas`), and what the workers return is
  put together in task order, so a run is reproducible; per-task code that draws random
  numbers from torch's global generator is not (the threads would interleave the draws), and
  ``"auto"`` drops this execution for it. A learner's own per-task code runs modules through
  :func:`~modmeta.models.functional.forward` or :func:`~modmeta.models.functional.local`;
  state a module keeps on itself across calls stays with a worker's copy.

``"auto"`` is chosen by measurement (:class:`Choice`): it starts from a guess
(``"threads"``, or with one intra-op thread ``"channels_last"``, for models with 2-D
convolutions, ``"loop"`` for other convolutional ones, ``"vmap"`` otherwise), times every
candidate (:func:`candidates`) on the meta-iterations after the first (which warms up,
untimed) and from then on keeps the fastest if it was clearly
faster than the guess (``SWITCH``), the guess otherwise. The choice lives here, not in the
learners.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.func import vmap

from modmeta.models.functional import replicas


Execution = Literal["auto", "vmap", "loop", "channels_last", "threads"]
EXECUTIONS: tuple[str, ...] = ("auto", "vmap", "loop", "channels_last", "threads")
Run = Literal["vmap", "loop", "channels_last", "threads"]  # an execution a meta-iteration runs with
TaskFn = Callable[..., tuple[torch.Tensor, ...]]
T = TypeVar("T")
SWITCH = 2 / 3  # "auto" leaves its guess for an execution taking less than this fraction of its time
MIN_SECONDS = 0.05  # ... measured on a meta-iteration at least this long


def candidates(model: nn.Module) -> list[Run]:
    """The executions ``"auto"`` chooses from for ``model``, its guess first: for a model with
    2-D convolutions ``threads`` (when torch has more than one intra-op thread now), then
    ``channels_last`` and the plain loop; the loop alone for other convolutional models; vmap
    then the loop otherwise. vmap is no candidate for convolutions: their per-task weights
    become grouped convolutions, 3.6x slower than the loop on Omniglot's Conv4 at 9.5x its
    memory, and its one timing iteration would set the whole run's peak memory (4.7 GB against
    0.65 GB for max-pool Conv4 MAML; benchmarks/SPEED.md)."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return ["threads", "channels_last", "loop"] if torch.get_num_threads() > 1 else ["channels_last", "loop"]
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        return ["loop"]
    return ["vmap", "loop"]


def resolve(execution: Execution, model: nn.Module) -> Run:
    """The execution to use for ``model``: ``execution`` itself unless it is ``"auto"``, then the guess."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {', '.join(map(repr, EXECUTIONS))}, got {execution!r}")
    return candidates(model)[0] if execution == "auto" else execution


class Choice:
    """The execution a learner runs its meta-iterations with: ``execution`` itself unless it is
    ``"auto"``; for ``"auto"``, the fastest of the :func:`candidates` on this machine, timed on
    the first meta-iterations (:meth:`run`, :meth:`_decide`). All compute the same meta-gradient
    (the tests hold them to it), so the choice changes the time per iteration, not the numbers
    beyond rounding. A candidate that fails on the model (an operation vmap cannot batch, a
    ``.view`` of a channels-last feature map, memory it cannot have) is dropped with a warning
    and the step runs again with the next one; the plain loop, the last resort, is never dropped."""

    def __init__(self, execution: Execution, model: nn.Module, exclude: Collection[str] = (),
                 why: str = "") -> None:
        """``exclude``: executions this learner cannot run (``why`` says why, for the error
        when one is asked for by name); ``"auto"`` chooses among the rest."""
        if execution in exclude:
            raise ValueError(f"execution={execution!r} cannot run this learner{': ' + why if why else ''}; "
                             f"use one of {', '.join(repr(e) for e in EXECUTIONS if e not in exclude)}")
        self.auto = execution == "auto"
        allowed = [e for e in candidates(model) if e not in exclude] or ["loop"]
        self.current = allowed[0] if self.auto else resolve(execution, model)
        others = allowed[1:]
        # (execution, timed) for each meta-iteration before the choice is made
        self._plan = ([(self.current, False), *((e, True) for e in others), (self.current, True)]
                      if self.auto and others else [])
        self.seconds: dict[str, float] = {}

    def state(self) -> dict[str, Any]:
        """The choice as plain data, for a checkpoint: a resumed run goes on with the same
        executions instead of timing again (its numbers stay those of an uninterrupted run)."""
        return {"current": self.current, "plan": [list(p) for p in self._plan], "seconds": dict(self.seconds)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state`; a fixed execution stays as it was given."""
        if self.auto:
            self.current = state["current"]
            self._plan = [(e, t) for e, t in state["plan"]]
            self.seconds = dict(state["seconds"])

    def run(self, step: Callable[[Run], T], params: Iterable[torch.Tensor] = ()) -> T:
        """``step(execution)``, one meta-iteration: with the current execution, or the next
        candidate while ``"auto"`` is choosing (``seconds`` holds the times measured). A
        candidate that fails may have accumulated some tasks' gradients into ``params'``
        ``.grad`` and drawn random numbers first: both are put back as they were before the
        next one runs. ``"threads"`` fails here when its step drew from torch's global
        generator (its tasks would interleave the draws: the run would not be reproducible)."""
        if not self._plan:
            return step(self.current)
        params = list(params)
        before = [None if p.grad is None else p.grad.clone() for p in params]
        rng = torch.get_rng_state()
        execution, timed = self._plan.pop(0)
        start = time.perf_counter()
        try:
            out = step(execution)
            if execution == "threads" and not torch.equal(rng, torch.get_rng_state()):
                raise RuntimeError("its tasks draw random numbers, in an order threads do not keep")
        except Exception as e:  # noqa: BLE001  (the candidate cannot run this model: drop it)
            if execution == "loop":
                raise
            for p, g in zip(params, before):
                p.grad = g
            torch.set_rng_state(rng)
            self._plan = [(c, t) for c, t in self._plan if c != execution]
            self.seconds.pop(execution, None)
            if execution == self.current:  # the guess: the next candidate, or the plain loop, replaces it
                self.current = next((c for c, _ in self._plan if c != execution), "loop")
            if {c for c, _ in self._plan} <= {self.current}:  # nothing left to compare it with
                self._plan = []
            elif not any(c == self.current and t for c, t in self._plan):  # the new guess is timed too
                self._plan.append((self.current, True))
            warnings.warn(f"execution 'auto': {execution} cannot run this model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); running {self.current}", stacklevel=2)
            return self.run(step, params)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the kernels this step queued belong to its time
        if timed:
            self.seconds[execution] = time.perf_counter() - start
        if not self._plan:
            self.current = self._decide()
        return out

    def _decide(self) -> Run:
        """The guess (``current``) unless another execution was clearly faster: under ``SWITCH``
        times the guess's time, on an iteration of at least ``MIN_SECONDS``. One timed
        iteration each is noisy on a shared machine; without this margin two identical runs
        could choose differently where the choice hardly matters."""
        guess = self.seconds.get(self.current)
        if guess is None or guess < MIN_SECONDS:
            return self.current
        fastest = min(self.seconds, key=self.seconds.__getitem__)
        return fastest if self.seconds[fastest] < SWITCH * guess else self.current


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A copy of the image tensor ``x`` (``[N, C, H, W]``) with channels-last strides, even for
    one channel (where ``x.contiguous(memory_format=torch.channels_last)`` returns ``x`` itself,
    whose NCHW strides then decide the layout of every convolution after it)."""
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


_worker = threading.local()  # .index: which of in_threads' jobs this thread runs


def worker() -> int:
    """Which worker of :func:`in_threads` runs the caller (0, 1, ...); 0 in any other thread."""
    return getattr(_worker, "index", 0)


def in_threads(jobs: list[Callable[[], T]]) -> list[T]:
    """Each job run in its own thread, the results in order. Torch's intra-op threads are set to
    one while they run (a process-wide setting, restored after) and each thread runs modules
    through its own copies (:func:`~modmeta.models.functional.replicas`); the caller's grad
    mode holds in every thread. The first job's exception, if any, is raised here."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException | None] = [None] * len(jobs)
    grad = torch.is_grad_enabled()

    def work(i: int) -> None:
        _worker.index = i
        try:
            with torch.set_grad_enabled(grad), replicas():
                results[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            errors[i] = e

    intra = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=work, args=(i,), name=f"modmeta-task-{i}") for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(intra)
    for e in errors:
        if e is not None:
            raise e
    return results


def worker_shares(tasks: int) -> list[tuple[int, int]]:
    """The ``"threads"`` execution's split of ``tasks`` tasks: consecutive ``(start, stop)``
    ranges, one per worker, as many workers as intra-op threads (at most one per task)."""
    workers = max(1, min(torch.get_num_threads(), tasks))
    bounds = [round(i * tasks / workers) for i in range(workers + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def map_tasks(fn: TaskFn, tensors: tuple[torch.Tensor, ...], execution: Run) -> tuple[torch.Tensor, ...]:
    """``fn`` applied to each task's slice of ``tensors``; outputs stacked on a new task axis.

    ``fn`` takes one task's tensors (no task axis) and returns a tuple of tensors; with
    ``"channels_last"`` and ``"threads"`` its 4-D floating-point ones are :func:`channels_last` copies.
    """
    if execution == "vmap":
        return vmap(fn, randomness="different")(*tensors)
    if execution == "threads" and tensors[0].device.type == "cpu":  # a GPU runs one task at a time
        shares = worker_shares(tensors[0].shape[0])
        if len(shares) > 1:
            parts = in_threads([lambda a=a, b=b: map_tasks(fn, tuple(t[a:b] for t in tensors), "channels_last")
                                for a, b in shares])
            return tuple(torch.cat(o) for o in zip(*parts))

    def task(t: torch.Tensor) -> torch.Tensor:
        return channels_last(t) if execution != "loop" and t.dim() == 4 and t.is_floating_point() else t

    outs = [fn(*(task(t[i]) for t in tensors)) for i in range(tensors[0].shape[0])]
    return tuple(torch.stack(o) for o in zip(*outs))
