"""Aggregations: how the tasks' meta-gradients become one update of the meta-parameters.

Each task of a meta-batch gives a surrogate scalar whose gradient is its meta-gradient (see
:mod:`modmeta.meta.outer`). An :class:`Aggregation` says how those gradients combine:

- :func:`mean` (every learner's default): ``(1/T) Σ_t g_t``. It never stacks the per-task
  gradients: it backpropagates the mean surrogate, and in the loop each task's own share as
  soon as it is computed, summed as it goes (per worker thread, then in worker order), so
  only one task's graph is alive at a time (one per worker thread).
- any other combination is a function of the stacked per-task gradients ``[T, ...]``
  (``Aggregation(combine=...)``): gradient surgery across tasks (:func:`pcgrad`) or a gather
  across processes plugs in here, for every learner at once.

In a distributed step (:mod:`modmeta.distributed`) :func:`backward` runs this process's
share of the tasks: the mean's gradient is all-reduced, other combinations get every task's
gradient gathered first, and the reported per-task numbers are gathered, so every learner
built on :func:`backward` trains distributed without knowing it.

Where the per-task gradients are formed, ``diagnostics`` adds the gradient-conflict statistics
of seed 004 to what a training step reports (:func:`conflict`): the mean and minimum pairwise
cosine of the tasks' meta-gradients, the fraction of conflicting pairs, and the norm of the
combined meta-gradient. ``mean(diagnostics=True)`` forms them for the plain mean.

:func:`backward` runs a per-task function over a batch, as ``execution`` says, and writes the
aggregated meta-gradient into the parameters' ``.grad`` (accumulating, as ``backward`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from modmeta import distributed
from modmeta.meta.execution import Run, TaskFn, map_tasks, worker
from modmeta.models.functional import Params


@dataclass(frozen=True)
class Aggregation:
    """``combine`` maps per-task gradients (``[T, *shape]`` per parameter) to one gradient;
    ``None`` is the mean, computed without per-task gradients. ``diagnostics`` reports the
    gradient-conflict statistics (:func:`conflict`) of each step."""

    name: str = "mean"
    combine: Callable[[Params], Params] | None = None
    diagnostics: bool = False


def _mean(per_task: Params) -> Params:
    return {n: g.mean(0) for n, g in per_task.items()}


def mean(diagnostics: bool = False) -> Aggregation:
    """``(1/T) Σ_t g_t``: the meta-gradient of the mean query loss; with ``diagnostics`` the
    per-task gradients are formed to report how much they conflict."""
    return Aggregation("mean", _mean, True) if diagnostics else Aggregation()


def project_conflicting(grads: torch.Tensor) -> torch.Tensor:
    """PCGrad's projection of each row ``g_i`` of ``grads`` (``[T, D]``).

    For each ``i``, over the other rows ``j`` in a random order (torch's default RNG, which the
    Trainer keeps per run): whenever ``g_i · g_j < 0``, ``g_i ← g_i − (g_i · g_j / ‖g_j‖²) g_j``,
    removing the component of ``g_i`` that conflicts with the original ``g_j`` (Yu et al.
    2020, "Gradient surgery for multi-task learning", Algorithm 1). Rows that conflict with no
    other row are returned unchanged.
    """
    out = grads.clone()
    n = grads.shape[0]
    squared = (grads * grads).sum(1)
    for i in range(n):
        for j in torch.randperm(n).tolist():
            if j == i or squared[j] == 0:
                continue
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] = out[i] - dot / squared[j] * grads[j]
    return out


def pcgrad(reduction: Literal["mean", "sum"] = "mean", group: int = 1, diagnostics: bool = True) -> Aggregation:
    """Meta-PCGrad (seed 004, "attempt 2"): the tasks' meta-gradients with their mutually
    conflicting components projected away (:func:`project_conflicting`), then averaged (or
    summed, as PCGrad's paper does). ``group > 1`` first averages consecutive sets of
    ``group`` tasks of the meta-batch and projects the sets' meta-gradients (the seed's
    grouping). With one task (or one set) it is the identity."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")

    def combine(per_task: Params) -> Params:
        names = list(per_task)
        flat = torch.cat([per_task[n].flatten(1) for n in names], 1)  # [T, D]
        if group > 1:
            flat = torch.stack([chunk.mean(0) for chunk in flat.split(group)])
        projected = project_conflicting(flat)
        total = projected.mean(0) if reduction == "mean" else projected.sum(0)
        sizes = [per_task[n][0].numel() for n in names]
        return {n: g.view_as(per_task[n][0]) for n, g in zip(names, total.split(sizes))}

    return Aggregation("pcgrad", combine, diagnostics)


def conflict(per_task: Params, combined: Params) -> dict[str, float]:
    """Gradient-conflict statistics of one step: ``grad_cos_mean`` and ``grad_cos_min``, the mean
    and minimum cosine between two tasks' meta-gradients over all pairs; ``grad_conflict``,
    the fraction of pairs with a negative cosine; ``grad_norm``, the norm of the combined
    meta-gradient (seed 004's gradient-thrashing diagnostics)."""
    flat = torch.cat([g.flatten(1) for g in per_task.values()], 1).double()
    norm = torch.cat([g.flatten() for g in combined.values()]).double().norm().item()
    n = flat.shape[0]
    if n < 2:
        return {"grad_norm": norm}
    unit = flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-300)
    cos = (unit @ unit.T)[torch.triu_indices(n, n, 1).unbind()]
    return {"grad_cos_mean": cos.mean().item(), "grad_cos_min": cos.min().item(),
            "grad_conflict": (cos < 0).double().mean().item(), "grad_norm": norm}


def backward(task_fn: TaskFn, tensors: tuple[torch.Tensor, ...], execution: Run,
             params: Params, aggregation: Aggregation) -> tuple[tuple[torch.Tensor, ...], dict[str, float]]:
    """Accumulate the aggregated meta-gradient of ``task_fn`` over the tasks into ``.grad``.

    ``task_fn`` takes one task's slice of ``tensors`` and returns ``(surrogate, *reported)``;
    ``params`` are the meta-parameters (by name) the surrogates are differentiated in. Returns
    the ``reported`` tensors, detached and stacked on a task axis, and the aggregation's
    statistics (``{}``, or :func:`conflict`'s with ``diagnostics``).
    """
    total = tensors[0].shape[0]
    names = [k for k, p in params.items() if p.requires_grad]
    live = [params[k] for k in names]
    tensors = distributed.share(tensors)  # this process's tasks when the trainer splits them
    n = tensors[0].shape[0]
    if aggregation.combine is None:
        with distributed.averaging(params, total):
            if execution == "vmap":
                surrogate, *reported = map_tasks(task_fn, tensors, "vmap")
                surrogate.mean().backward()
                reported = [r.detach() for r in reported]
            else:
                sums: dict[int, list[torch.Tensor | None]] = {}  # per worker thread: its tasks' summed gradient

                def each(*task: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    surrogate, *reported = task_fn(*task)
                    grads = torch.autograd.grad(surrogate / n, live, allow_unused=True)
                    mine = sums.setdefault(worker(), [None] * len(live))
                    for i, g in enumerate(grads):  # out of place: a gradient may be an expanded view
                        if g is not None:
                            mine[i] = g if mine[i] is None else mine[i] + g
                    return tuple(r.detach() for r in reported)

                reported = map_tasks(each, tensors, execution)
                for w in sorted(sums):  # in worker order, whichever finished first: reproducible
                    for p, g in zip(live, sums[w]):
                        if g is not None:
                            p.grad = g if p.grad is None else p.grad + g
        return distributed.gather(reported, total), {}
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

        out = map_tasks(each, tensors, execution)
        per_task, reported = dict(zip(names, out[:len(names)])), out[len(names):]
    gathered = distributed.gather([*per_task.values(), *(r.detach() for r in reported)], total)
    per_task, reported = dict(zip(names, gathered[:len(names)])), gathered[len(names):]  # every task's, everywhere
    combined = aggregation.combine(per_task)
    set_gradients({k: params[k] for k in names}, combined)
    stats = conflict(per_task, combined) if aggregation.diagnostics else {}
    return tuple(r.detach() for r in reported), stats


def set_gradients(params: Params, grads: Params) -> None:
    """Write ``grads`` into ``.grad`` of ``params`` (accumulating, as ``backward`` does)."""
    for n, p in params.items():
        g = grads[n].to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g
