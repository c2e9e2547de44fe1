"""Aggregations: how the tasks' meta-gradients become one update of the meta-parameters.

Each task of a meta-batch gives a surrogate scalar whose gradient is its meta-gradient (see
:mod:`modmeta.meta.outer`). An :class:`Aggregation` says how those gradients combine:

- :func:`mean` (every learner's default): ``(1/T) Σ_t g_t``. It never forms the per-task
  gradients: it backpropagates the mean surrogate, and in the loop each task's own share as
  soon as it is computed, so only one task's graph is alive at a time.
- any other combination is a function of the stacked per-task gradients ``[T, ...]``
  (``Aggregation(combine=...)``): gradient surgery across tasks (PCGrad) or a gather across
  processes plugs in here, for every learner at once.

:func:`backward` runs a per-task function over a batch, as ``execution`` says, and writes the
aggregated meta-gradient into the parameters' ``.grad`` (accumulating, as ``backward`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from modmeta.meta.execution import TaskFn, map_tasks
from modmeta.models.functional import Params


@dataclass(frozen=True)
class Aggregation:
    """``combine`` maps per-task gradients (``[T, *shape]`` per parameter) to one gradient;
    ``None`` is the mean, computed without per-task gradients."""

    name: str = "mean"
    combine: Callable[[Params], Params] | None = None


def mean() -> Aggregation:
    """``(1/T) Σ_t g_t``: the meta-gradient of the mean query loss."""
    return Aggregation()


def backward(task_fn: TaskFn, tensors: tuple[torch.Tensor, ...], execution: Literal["vmap", "loop"],
             params: Params, aggregation: Aggregation) -> tuple[torch.Tensor, ...]:
    """Accumulate the aggregated meta-gradient of ``task_fn`` over the tasks into ``.grad``.

    ``task_fn`` takes one task's slice of ``tensors`` and returns ``(surrogate, *reported)``;
    ``params`` are the meta-parameters (by name) the surrogates are differentiated in. Returns
    the ``reported`` tensors, detached and stacked on a task axis.
    """
    n = tensors[0].shape[0]
    if aggregation.combine is None:
        if execution == "vmap":
            surrogate, *reported = map_tasks(task_fn, tensors, "vmap")
            surrogate.mean().backward()
            return tuple(r.detach() for r in reported)

        def each(*task: torch.Tensor) -> tuple[torch.Tensor, ...]:
            surrogate, *reported = task_fn(*task)
            (surrogate / n).backward()
            return tuple(r.detach() for r in reported)

        return map_tasks(each, tensors, "loop")
    names = [k for k, p in params.items() if p.requires_grad]
    live = [params[k] for k in names]
    if execution == "vmap":
        surrogate, *reported = map_tasks(task_fn, tensors, "vmap")
        eye = torch.eye(n, dtype=surrogate.dtype, device=surrogate.device)
        grads = torch.autograd.grad(surrogate, live, eye, is_grads_batched=True, allow_unused=True)
        per_task = {k: torch.zeros(n, *p.shape, dtype=p.dtype, device=p.device) if g is None else g
                    for k, p, g in zip(names, live, grads)}
    else:
        def each(*task: torch.Tensor) -> tuple[torch.Tensor, ...]:
            surrogate, *reported = task_fn(*task)
            grads = torch.autograd.grad(surrogate, live, allow_unused=True)
            return (*(torch.zeros_like(p) if g is None else g for p, g in zip(live, grads)),
                    *(r.detach() for r in reported))

        out = map_tasks(each, tensors, "loop")
        per_task, reported = dict(zip(names, out[:len(names)])), out[len(names):]
    set_gradients({k: params[k] for k in names}, aggregation.combine(per_task))
    return tuple(r.detach() for r in reported)


def set_gradients(params: Params, grads: Params) -> None:
    """Write ``grads`` into ``.grad`` of ``params`` (accumulating, as ``backward`` does)."""
    for n, p in params.items():
        g = grads[n].to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g
