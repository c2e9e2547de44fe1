"""Running one task's computation over a whole batch of tasks: vectorised or looped.

The per-task computation is written once, for one task, and mapped over the task axis here.
Two executions give the same numbers (the tests hold them to it):

- ``"vmap"``: ``torch.func.vmap`` over the task axis, one batched kernel per operation. It
  removes the per-task Python overhead that dominates small networks (the sinusoid MLP).
- ``"loop"``: a Python loop over tasks. For convolutional networks, per-task weights under
  vmap become grouped convolutions that are slower and use several times the memory of
  running each task's ordinary convolution in turn, and a loop can backpropagate task by
  task, keeping one task's graph alive at a time (:func:`modmeta.meta.aggregate.backward`).

``"auto"`` picks ``"loop"`` for models with convolutions and ``"vmap"`` otherwise (measured in
``benchmarks/speed.py``). The choice lives here, not in the learners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.func import vmap


Execution = Literal["auto", "vmap", "loop"]
TaskFn = Callable[..., tuple[torch.Tensor, ...]]


def resolve(execution: Execution, model: nn.Module) -> Literal["vmap", "loop"]:
    """The execution to use for ``model``: ``execution`` itself unless it is ``"auto"``."""
    if execution not in ("auto", "vmap", "loop"):
        raise ValueError(f"execution must be 'auto', 'vmap' or 'loop', got {execution!r}")
    if execution != "auto":
        return execution
    convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if convolutional else "vmap"


def map_tasks(fn: TaskFn, tensors: tuple[torch.Tensor, ...], execution: Literal["vmap", "loop"]
              ) -> tuple[torch.Tensor, ...]:
    """``fn`` applied to each task's slice of ``tensors``; outputs stacked on a new task axis.

    ``fn`` takes one task's tensors (no task axis) and returns a tuple of tensors.
    """
    if execution == "vmap":
        return vmap(fn, randomness="different")(*tensors)
    outs = [fn(*(t[i] for t in tensors)) for i in range(tensors[0].shape[0])]
    return tuple(torch.stack(o) for o in zip(*outs))
