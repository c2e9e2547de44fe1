"""N-way K-shot classification episodes from any labelled data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import TaskBatch


class ClassificationFamily(TaskFamily):
    """N-way K-shot episodes drawn from labelled examples.

    An episode picks ``ways`` distinct classes, then ``shots + queries`` distinct examples of
    each; the classes are relabelled ``0 .. ways-1`` in the order drawn. With
    ``rotations=4`` every class also appears rotated by 90°, 180° and 270° as three new
    classes (the Omniglot augmentation of Santoro et al. and MAML); images must then be
    ``[..., H, W]`` with ``H == W``.

    Every class must hold at least ``shots + queries`` examples; the check runs here, when
    the family is built, and names the class and the counts.
    """

    kind = "classification"

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | Sequence[int],
        ways: int,
        shots: int,
        queries: int,
        rotations: int = 1,
        classes: Sequence[int] | None = None,
    ) -> None:
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.shape[0] == 0:
            raise ValueError("the data set is empty: x has no examples")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"labels must be one per example: x has {x.shape[0]} examples, "
                f"y has shape {tuple(y.shape)}"
            )
        if y.is_floating_point():
            raise ValueError("labels must be integers (class ids), got a floating-point y")
        if ways < 1 or shots < 1 or queries < 1:
            raise ValueError(f"ways, shots and queries must be >= 1, got {ways}, {shots}, {queries}")
        if rotations not in (1, 2, 4):
            raise ValueError(f"rotations must be 1, 2 or 4 (multiples of 90°), got {rotations}")
        if rotations > 1 and (x.dim() < 3 or x.shape[-1] != x.shape[-2]):
            raise ValueError(f"rotations need square images [..., H, W], got x of shape {tuple(x.shape)}")
        labels = sorted(set(y.tolist())) if classes is None else list(classes)
        need = shots + queries
        self._index: list[torch.Tensor] = []
        for c in labels:
            idx = torch.nonzero(y == c).flatten()
            if idx.numel() < need:
                raise ValueError(
                    f"class {c!r} has {idx.numel()} examples, but an episode needs "
                    f"shots + queries = {shots} + {queries} = {need} of each class; "
                    f"lower shots or queries, or drop the class"
                )
            self._index.append(idx)
        if ways > len(labels) * rotations:
            raise ValueError(
                f"{ways}-way episodes need at least {ways} classes, the data has "
                f"{len(labels)}" + (f" ({len(labels) * rotations} with rotations)" if rotations > 1 else "")
            )
        self.x = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        self.labels = labels
        self.ways = ways
        self.shots = shots
        self.queries = queries
        self.rotations = rotations
        self.output_size = ways

    @property
    def num_classes(self) -> int:
        """Classes an episode draws from, rotated copies included."""
        return len(self._index) * self.rotations

    def sample(self, tasks: int, generator: torch.Generator) -> TaskBatch:
        need = self.shots + self.queries
        chosen = torch.empty(tasks, self.ways, need, dtype=torch.long)
        turns = torch.zeros(tasks, self.ways, dtype=torch.long)
        for t in range(tasks):
            classes = torch.randperm(self.num_classes, generator=generator)[: self.ways]
            for w, c in enumerate(classes.tolist()):
                base, turns[t, w] = divmod(c, self.rotations)
                idx = self._index[base]
                chosen[t, w] = idx[torch.randperm(idx.numel(), generator=generator)[:need]]
        x = self.x[chosen]  # [T, ways, need, *shape]
        if self.rotations > 1:
            x = x.clone()
            for k in range(1, self.rotations):
                mask = turns == k
                if mask.any():
                    x[mask] = torch.rot90(x[mask], k * (4 // self.rotations), dims=(-2, -1))
        y = torch.arange(self.ways).view(1, self.ways, 1).expand(tasks, self.ways, need)
        s = self.shots
        shape = x.shape[3:]
        return TaskBatch(
            x[:, :, :s].reshape(tasks, self.ways * s, *shape),
            y[:, :, :s].reshape(tasks, self.ways * s),
            x[:, :, s:].reshape(tasks, self.ways * self.queries, *shape),
            y[:, :, s:].reshape(tasks, self.ways * self.queries),
        )

    @classmethod
    def from_npz(
        cls, path: str | Path, ways: int, shots: int, queries: int, x_key: str = "x", y_key: str = "y",
        rotations: int = 1,
    ) -> ClassificationFamily:
        """Episodes from an ``.npz`` file holding examples under ``x_key`` and labels under ``y_key``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no .npz file at {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise KeyError(
                    f"{path} has no array named {missing[0]!r}; it holds {sorted(data.files)}: "
                    f"name the right ones (x_key, y_key)"
                )
            return cls(data[x_key], data[y_key], ways, shots, queries, rotations=rotations)
