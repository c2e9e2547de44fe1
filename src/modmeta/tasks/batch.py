"""A batch of tasks: support and query sets stacked along a leading task axis."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskBatch:
    """Support and query sets of ``T`` tasks.

    Shapes: ``x_support`` is ``[T, N_s, *x_shape]``, ``y_support`` is ``[T, N_s, *y_shape]``
    and likewise for the query set. Classification labels are ``int64`` class indices in
    ``0 .. ways-1`` *within each task*; regression targets are floating point.

    ``task_ids`` (optional, ``int64 [T]``) says which task of its split each one is, for
    families with a finite set of tasks per split (:mod:`modmeta.tasks.modular`). Learners
    that keep state per meta-training task read it (BounceGrad keeps each task's structure);
    all others ignore it. ``None`` when the family draws every task afresh.
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    task_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        t = self.x_support.shape[0]
        for name in ("y_support", "x_query", "y_query"):
            if getattr(self, name).shape[0] != t:
                raise ValueError(
                    f"TaskBatch: {name} has {getattr(self, name).shape[0]} tasks on its leading "
                    f"axis but x_support has {t}; all four tensors need the same task axis"
                )
        if self.x_support.shape[1] != self.y_support.shape[1]:
            raise ValueError(
                f"TaskBatch: x_support has {self.x_support.shape[1]} examples per task but "
                f"y_support has {self.y_support.shape[1]}"
            )
        if self.x_query.shape[1] != self.y_query.shape[1]:
            raise ValueError(
                f"TaskBatch: x_query has {self.x_query.shape[1]} examples per task but "
                f"y_query has {self.y_query.shape[1]}"
            )
        if self.task_ids is not None and tuple(self.task_ids.shape) != (t,):
            raise ValueError(
                f"TaskBatch: task_ids has shape {tuple(self.task_ids.shape)}, expected ({t},): "
                f"one id per task"
            )

    def __len__(self) -> int:
        return self.x_support.shape[0]

    def task(self, i: int) -> TaskBatch:
        """Task ``i`` alone, as a batch of one (keeps the task axis)."""
        ids = None if self.task_ids is None else self.task_ids[i : i + 1]
        return TaskBatch(*(t[i : i + 1] for t in self.tensors()), task_ids=ids)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_support, y_support, x_query, y_query)``."""
        return self.x_support, self.y_support, self.x_query, self.y_query

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to ``device``; ``dtype`` (if given) applies to floating-point tensors only."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        ids = None if self.task_ids is None else self.task_ids.to(device=device)
        return TaskBatch(*(move(t) for t in self.tensors()), task_ids=ids)


@dataclass(frozen=True)
class LabelledBatch:
    """Plain labelled examples ``x [N, *x_shape]``, ``y [N]``: the training data of learners
    that are not trained on episodes (the linear-head baseline)."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LabelledBatch:
        """Move to ``device``; ``dtype`` (if given) applies to ``x`` when it is floating point."""
        x = self.x.to(device=device, dtype=dtype) if dtype is not None and self.x.is_floating_point() else self.x.to(device)
        return LabelledBatch(x, self.y.to(device))
