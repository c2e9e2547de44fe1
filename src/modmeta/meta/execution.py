"""Running one task's computation over a whole batch of tasks: vectorised or looped.

The per-task computation is written once, for one task, and mapped over the task axis here.
Two executions give the same numbers (the tests hold them to it):

- ``"vmap"``: ``torch.func.vmap`` over the task axis, one batched kernel per operation. It
  removes the per-task Python overhead that dominates small networks (the sinusoid MLP).
- ``"loop"``: a Python loop over tasks. For convolutional networks, per-task weights under
  vmap become grouped convolutions that are slower and use several times the memory of
  running each task's ordinary convolution in turn, and a loop can backpropagate task by
  task, keeping one task's graph alive at a time (:func:`modmeta.meta.aggregate.backward`).

``"auto"`` is chosen by measurement (:class:`Choice`): it starts from a guess (``"loop"`` for
models with convolutions, ``"vmap"`` otherwise), times both executions on the learner's second
and third meta-iterations (the first warms up, untimed) and from then on keeps the other one if
it was clearly faster (``SWITCH``), the guess otherwise. The choice lives here, not in the
learners.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.func import vmap


Execution = Literal["auto", "vmap", "loop"]
TaskFn = Callable[..., tuple[torch.Tensor, ...]]
T = TypeVar("T")
SWITCH = 2 / 3  # "auto" leaves its guess for an execution taking less than this fraction of its time
MIN_SECONDS = 0.05  # ... measured on a meta-iteration at least this long


def resolve(execution: Execution, model: nn.Module) -> Literal["vmap", "loop"]:
    """The execution to use for ``model``: ``execution`` itself unless it is ``"auto"``."""
    if execution not in ("auto", "vmap", "loop"):
        raise ValueError(f"execution must be 'auto', 'vmap' or 'loop', got {execution!r}")
    if execution != "auto":
        return execution
    convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if convolutional else "vmap"


class Choice:
    """The execution a learner runs its meta-iterations with: ``execution`` itself when it is
    ``"vmap"`` or ``"loop"``; for ``"auto"``, the faster of the two on this machine, timed on the
    first meta-iterations (:meth:`run`, :meth:`_decide`). Both compute the same meta-gradient (the tests hold them
    to it), so the choice changes the time per iteration, not the numbers beyond rounding. A
    candidate that fails on the model (an operation vmap cannot batch, memory it cannot have)
    is dropped with a warning, and the step runs again with the guess."""

    def __init__(self, execution: Execution, model: nn.Module) -> None:
        self.auto = execution == "auto"
        self.current = resolve(execution, model)
        other = "vmap" if self.current == "loop" else "loop"
        # (execution, timed) for each meta-iteration before the choice is made
        self._plan = [(self.current, False), (other, True), (self.current, True)] if self.auto else []
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

    def run(self, step: Callable[[Literal["vmap", "loop"]], T]) -> T:
        """``step(execution)``, one meta-iteration: with the current execution, or the next
        candidate while ``"auto"`` is choosing (``seconds`` holds the times measured)."""
        if not self._plan:
            return step(self.current)
        execution, timed = self._plan.pop(0)
        start = time.perf_counter()
        try:
            out = step(execution)
        except Exception as e:  # noqa: BLE001  (the candidate cannot run this model: keep the guess)
            if execution == self.current:
                raise
            warnings.warn(f"execution 'auto': {execution} cannot run this model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); keeping {self.current}", stacklevel=2)
            self._plan = []
            return step(self.current)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the kernels this step queued belong to its time
        if timed:
            self.seconds[execution] = time.perf_counter() - start
        if not self._plan:
            self.current = self._decide()
        return out

    def _decide(self) -> Literal["vmap", "loop"]:
        """The guess (``current``) unless the other execution was clearly faster: under
        ``SWITCH`` times the guess's time, on an iteration of at least ``MIN_SECONDS``. One
        timed iteration each is noisy on a shared machine; without this margin two identical
        runs could choose differently where the choice hardly matters."""
        other = "vmap" if self.current == "loop" else "loop"
        guess = self.seconds[self.current]
        return other if guess >= MIN_SECONDS and self.seconds[other] < SWITCH * guess else self.current


def map_tasks(fn: TaskFn, tensors: tuple[torch.Tensor, ...], execution: Literal["vmap", "loop"]
              ) -> tuple[torch.Tensor, ...]:
    """``fn`` applied to each task's slice of ``tensors``; outputs stacked on a new task axis.

    ``fn`` takes one task's tensors (no task axis) and returns a tuple of tensors.
    """
    if execution == "vmap":
        return vmap(fn, randomness="different")(*tensors)
    outs = [fn(*(t[i] for t in tensors)) for i in range(tensors[0].shape[0])]
    return tuple(torch.stack(o) for o in zip(*outs))
