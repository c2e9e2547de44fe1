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

``"auto"`` is chosen by measurement (:class:`Choice`): it starts from a guess
(``"channels_last"`` for models with 2-D convolutions, ``"loop"`` for other convolutional
ones, ``"vmap"`` otherwise), times every candidate (:func:`candidates`) on the meta-iterations
after the first (which warms up, untimed) and from then on keeps the fastest if it was clearly
faster than the guess (``SWITCH``), the guess otherwise. The choice lives here, not in the
learners.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.func import vmap


Execution = Literal["auto", "vmap", "loop", "channels_last"]
Run = Literal["vmap", "loop", "channels_last"]  # an execution a meta-iteration runs with
TaskFn = Callable[..., tuple[torch.Tensor, ...]]
T = TypeVar("T")
SWITCH = 2 / 3  # "auto" leaves its guess for an execution taking less than this fraction of its time
MIN_SECONDS = 0.05  # ... measured on a meta-iteration at least this long


def candidates(model: nn.Module) -> list[Run]:
    """The executions ``"auto"`` chooses from for ``model``, its guess first: ``channels_last``
    then the plain loop for a model with 2-D convolutions, the loop alone for other
    convolutional ones, vmap then the loop otherwise. vmap is no candidate for convolutions:
    their per-task weights become grouped convolutions, 3.6x slower than the loop on Omniglot's
    Conv4 at 9.5x its memory, and its one timing iteration would set the whole run's peak memory
    (4.7 GB against 0.65 GB for max-pool Conv4 MAML; benchmarks/SPEED.md)."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return ["channels_last", "loop"]
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        return ["loop"]
    return ["vmap", "loop"]


def resolve(execution: Execution, model: nn.Module) -> Run:
    """The execution to use for ``model``: ``execution`` itself unless it is ``"auto"``, then the guess."""
    if execution not in ("auto", "vmap", "loop", "channels_last"):
        raise ValueError(f"execution must be 'auto', 'vmap', 'loop' or 'channels_last', got {execution!r}")
    return candidates(model)[0] if execution == "auto" else execution


class Choice:
    """The execution a learner runs its meta-iterations with: ``execution`` itself unless it is
    ``"auto"``; for ``"auto"``, the fastest of the :func:`candidates` on this machine, timed on
    the first meta-iterations (:meth:`run`, :meth:`_decide`). All compute the same meta-gradient
    (the tests hold them to it), so the choice changes the time per iteration, not the numbers
    beyond rounding. A candidate that fails on the model (an operation vmap cannot batch, a
    ``.view`` of a channels-last feature map, memory it cannot have) is dropped with a warning
    and the step runs again with the next one; the plain loop, the last resort, is never dropped."""

    def __init__(self, execution: Execution, model: nn.Module) -> None:
        self.auto = execution == "auto"
        self.current = resolve(execution, model)
        others = candidates(model)[1:]
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
        candidate that fails may have accumulated some tasks' gradients into ``params``'
        ``.grad`` first: they are put back as they were before the next one runs."""
        if not self._plan:
            return step(self.current)
        params = list(params)
        before = [None if p.grad is None else p.grad.clone() for p in params]
        execution, timed = self._plan.pop(0)
        start = time.perf_counter()
        try:
            out = step(execution)
        except Exception as e:  # noqa: BLE001  (the candidate cannot run this model: drop it)
            if execution == "loop":
                raise
            for p, g in zip(params, before):
                p.grad = g
            self._plan = [(c, t) for c, t in self._plan if c != execution]
            self.seconds.pop(execution, None)
            if execution == self.current:  # the guess: the plain loop replaces it
                self.current = "loop"
            if {c for c, _ in self._plan} <= {self.current}:  # nothing left to compare it with
                self._plan = []
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


def map_tasks(fn: TaskFn, tensors: tuple[torch.Tensor, ...], execution: Run) -> tuple[torch.Tensor, ...]:
    """``fn`` applied to each task's slice of ``tensors``; outputs stacked on a new task axis.

    ``fn`` takes one task's tensors (no task axis) and returns a tuple of tensors; with
    ``"channels_last"`` its 4-D floating-point ones are :func:`channels_last` copies.
    """
    if execution == "vmap":
        return vmap(fn, randomness="different")(*tensors)

    def task(t: torch.Tensor) -> torch.Tensor:
        return channels_last(t) if execution == "channels_last" and t.dim() == 4 and t.is_floating_point() else t

    outs = [fn(*(task(t[i]) for t in tensors)) for i in range(tensors[0].shape[0])]
    return tuple(torch.stack(o) for o in zip(*outs))
