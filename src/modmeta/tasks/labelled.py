"""N-way K-shot classification episodes from any labelled data."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
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
    ``[..., H, W]`` with ``H == W``. ``rotated_repeats=False`` keeps an episode from holding
    two rotations of one class: it draws ``ways`` distinct classes, then a rotation for each
    (the Omniglot protocol of the papers: never the same character twice in an episode).

    Every class must hold at least ``shots + queries`` examples; the check runs here, when
    the family is built, and names the class and the counts.

    ``splits`` maps ``"train"``, ``"val"`` and ``"test"`` (any of them) to disjoint lists of
    class labels, e.g. from ``split_classes``; the family draws from ``splits[split]`` and
    ``split(name)`` gives the same family on another split. Without ``splits`` every class
    (or those in ``classes``) is a training class.
    """

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray | Sequence[int],
        ways: int,
        shots: int,
        queries: int,
        rotations: int = 1,
        classes: Sequence[int] | None = None,
        *,
        splits: Mapping[str, Sequence[int]] | None = None,
        split: str = "train",
        rotated_repeats: bool = True,
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
        if splits is not None and classes is not None:
            raise ValueError("give either classes or splits, not both: splits name the classes of each split")
        groups = _group_by_label(y)
        if splits is None:
            self.splits = {"train": sorted(groups) if classes is None else list(classes)}
        else:
            self.splits = _check_splits(splits)
        need = shots + queries
        self._by_class: dict[int, torch.Tensor] = {}
        for name, labels in self.splits.items():
            for c in labels:
                idx = groups.get(c, torch.empty(0, dtype=torch.long))
                if idx.numel() < need:
                    raise ValueError(
                        f"class {c!r} has {idx.numel()} examples, but an episode needs "
                        f"shots + queries = {shots} + {queries} = {need} of each class; "
                        f"lower shots or queries, or drop the class"
                    )
                self._by_class[c] = idx
            available = len(labels) * (rotations if rotated_repeats else 1)
            if ways > available:
                where = f" split {name!r}" if splits is not None else ""
                raise ValueError(
                    f"{ways}-way episodes need at least {ways} classes, the data{where} has "
                    f"{len(labels)}" + (f" ({available} with rotations)" if available > len(labels) else "")
                )
        self.x = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        self.ways = ways
        self.shots = shots
        self.queries = queries
        self.rotations = rotations
        self.rotated_repeats = rotated_repeats
        self.output_size = ways
        self._has_splits = splits is not None
        self._select(split)

    def _select(self, name: str) -> None:
        """Point this family at the classes of split ``name``."""
        if name not in self.splits:
            raise ValueError(
                f"unknown split {name!r}: this family has splits {sorted(self.splits)}"
                + ("" if self._has_splits else (
                    "; hold classes out with splits=... (see split_classes), or with "
                    "from_npz(..., val=0.1, test=0.2)"
                ))
            )
        self.split_name = name
        self.labels = list(self.splits[name])
        self._index = [self._by_class[c] for c in self.labels]

    def split(self, name: str) -> ClassificationFamily:
        """The same episodes drawn from the classes of split ``name`` (the arrays are shared).

        Splits hold disjoint classes, so validation and test episodes show classes never
        trained on. A family built without ``splits`` is all training classes: asking it for
        ``"val"`` or ``"test"`` raises rather than quietly reusing the training classes.
        """
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: use 'train', 'val' or 'test'")
        other = copy.copy(self)
        other._select(name)
        return other

    @property
    def num_classes(self) -> int:
        """Classes an episode draws from, rotated copies included."""
        return len(self._index) * self.rotations

    def sample(self, tasks: int, generator: torch.Generator) -> TaskBatch:
        need = self.shots + self.queries
        chosen = torch.empty(tasks, self.ways, need, dtype=torch.long)
        turns = torch.zeros(tasks, self.ways, dtype=torch.long)
        for t in range(tasks):
            if self.rotated_repeats:
                classes = torch.randperm(self.num_classes, generator=generator)[: self.ways]
                picks = [divmod(c, self.rotations) for c in classes.tolist()]
            else:
                bases = torch.randperm(len(self._index), generator=generator)[: self.ways]
                rotated = torch.randint(self.rotations, (self.ways,), generator=generator)
                picks = list(zip(bases.tolist(), rotated.tolist()))
            for w, (base, turn) in enumerate(picks):
                turns[t, w] = turn
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

    def sample_flat(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` distinct examples of this split with class ids ``0 .. num_classes-1``: ``(x, y)``.

        The plain supervised data of one classification problem over all the split's classes
        merged (the linear-head baseline of Tian et al. 2020 trains on it). Examples are drawn
        uniformly without replacement, each turned by a random multiple of ``360° / rotations``;
        class id ``c`` is the split's ``c // rotations``-th class turned ``c % rotations`` times,
        the numbering :meth:`sample` draws classes from.
        """
        index = torch.cat(self._index)
        if not 1 <= n <= index.numel():
            raise ValueError(
                f"n must be between 1 and the {index.numel()} examples of split {self.split_name!r}, got {n}"
            )
        pick = torch.randperm(index.numel(), generator=generator)[:n]
        sizes = torch.tensor([idx.numel() for idx in self._index])
        base = torch.searchsorted(sizes.cumsum(0), pick, right=True)
        turns = torch.randint(self.rotations, (n,), generator=generator)
        x = self.x[index[pick]]
        for k in range(1, self.rotations):
            mask = turns == k
            if mask.any():
                x[mask] = torch.rot90(x[mask], k * (4 // self.rotations), dims=(-2, -1))
        return x, base * self.rotations + turns

    @classmethod
    def from_npz(
        cls, path: str | Path, ways: int, shots: int, queries: int, x_key: str = "x", y_key: str = "y",
        rotations: int = 1, *, val: float = 0, test: float = 0, split_seed: int = 0, split: str = "train",
    ) -> ClassificationFamily:
        """Episodes from an ``.npz`` file holding examples under ``x_key`` and labels under ``y_key``.

        ``val`` and ``test`` (fractions below 1, or class counts) hold classes out as those
        splits, chosen by ``split_classes`` with ``split_seed``; the family returned is on ``split``.
        """
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
            x, y = data[x_key], data[y_key]
        splits = split_classes(y, val=val, test=test, seed=split_seed) if val or test else None
        return cls(x, y, ways, shots, queries, rotations=rotations, splits=splits, split=split)


def split_classes(
    y: torch.Tensor | np.ndarray | Sequence[int], val: float = 0.1, test: float = 0.2, seed: int = 0
) -> dict[str, list[int]]:
    """Deal the classes of ``y`` into disjoint ``"train"``, ``"val"`` and ``"test"`` lists.

    ``val`` and ``test`` are fractions of the classes when below 1 (rounded, at least one
    class when non-zero) or class counts otherwise. The classes are sorted, then permuted by
    a ``torch.Generator`` seeded with ``seed``: val takes the first ones, test the next, train
    the rest, so the same labels and seed give the same splits. Each list is sorted; a split
    of no classes (``val=0``) is left out.
    """
    labels = sorted(set(torch.as_tensor(y).tolist()))
    counts = {}
    for name, share in (("val", val), ("test", test)):
        if share < 0 or (share >= 1 and share != int(share)):
            raise ValueError(f"{name} must be a fraction in [0, 1) or a whole number of classes, got {share}")
        counts[name] = int(share) if share >= 1 else (max(1, round(share * len(labels))) if share > 0 else 0)
    if counts["val"] + counts["test"] >= len(labels):
        raise ValueError(
            f"the data has {len(labels)} classes: holding out {counts['val']} for val and "
            f"{counts['test']} for test leaves none to train on"
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [labels[i] for i in order]
    v, t = counts["val"], counts["val"] + counts["test"]
    splits = {"train": sorted(shuffled[t:]), "val": sorted(shuffled[:v]), "test": sorted(shuffled[v:t])}
    return {name: chosen for name, chosen in splits.items() if chosen}


def _group_by_label(y: torch.Tensor) -> dict[int, torch.Tensor]:
    """Example indices of each label, in data order (one sort, not a scan per class)."""
    order = torch.argsort(y, stable=True)
    values, counts = torch.unique_consecutive(y[order], return_counts=True)
    return dict(zip(values.tolist(), torch.split(order, counts.tolist()), strict=True))


def _check_splits(splits: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Copy ``splits`` after checking the names and that no class is in two splits."""
    unknown = sorted(set(splits) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"unknown split names {unknown}: splits may name 'train', 'val' and 'test'")
    seen: dict[int, str] = {}
    out = {}
    for name, labels in splits.items():
        out[name] = [int(c) for c in labels]
        for c in out[name]:
            if c in seen:
                raise ValueError(
                    f"class {c!r} is in both split {seen[c]!r} and split {name!r}: "
                    f"splits must hold disjoint classes"
                )
            seen[c] = name
    return out
