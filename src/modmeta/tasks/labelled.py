"""N-way K-shot classification episodes from any labelled data."""

from __future__ import annotations

import copy
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import TaskBatch

Normalize = tuple[float | Sequence[float], float | Sequence[float]]
"""``(mean, std)``: one number each for every value, or one per channel of ``[C, H, W]`` images."""


class Examples(ABC):
    """Examples read on demand instead of held in one tensor, indexed like one.

    ``shape`` is ``(N, *example shape)``; ``examples[index]`` takes a ``LongTensor`` of
    example indices and returns those examples as floating-point values shaped
    ``[*index.shape, *example shape]``. ``ClassificationFamily`` takes one in place of ``x``.
    """

    shape: tuple[int, ...]

    @abstractmethod
    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """The examples at ``index``, shaped ``[*index.shape, *shape[1:]]``."""

    def dim(self) -> int:
        """Dimensions of the whole: 1 + those of one example."""
        return len(self.shape)


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
    the family is built, and names the class and the counts. A split must hold at least
    ``ways`` classes when it is chosen (here for ``split``, or by ``split(name)``), so a
    family trained 30-way can still be evaluated 5-way on a split of 16 classes.

    The arrays are checked here too, so bad data fails on load rather than as a NaN loss or an
    index error in the middle of training: ``x`` must hold real numbers, at least two
    dimensions (examples × features) and no NaN or inf; ``y`` one class id per example, 1-D,
    of an integer dtype and ``>= 0``. Floating-point labels are refused even when every value
    is a whole number (a float array given as labels is more often a feature column or a
    regression target than class ids): convert them, e.g. ``y.astype(np.int64)``. Each error
    is one line giving how many values are wrong and the first example holding one.

    ``splits`` maps ``"train"``, ``"val"`` and ``"test"`` (any of them) to disjoint lists of
    class labels, e.g. from ``split_classes``; the family draws from ``splits[split]`` and
    ``split(name)`` gives the same family on another split. Without ``splits`` every class
    (or those in ``classes``) is a training class.

    Images follow modmeta's convention, Omniglot's: strokes bright on a dark background (ink
    1, paper 0), which is what the shipped configs and models were tuned on. Scans and
    drawings are usually the reverse, dark strokes on white: ``invert=True`` maps each value
    ``v`` to ``1 - v`` (``255 - v`` for ``uint8`` images; other values are refused).
    ``normalize=(mean, std)`` then maps ``v`` to ``(v - mean) / std``, with one number each or
    one per channel of ``[C, H, W]`` images (e.g. ImageNet's ``((0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225))``). Both apply once, here, to the arrays.

    ``x`` may also be an :class:`Examples`, read on demand (see ``from_dataset``); ``invert``
    and ``normalize`` are then that object's to apply.
    """

    def __init__(
        self,
        x: torch.Tensor | np.ndarray | Examples,
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
        invert: bool = False,
        normalize: Normalize | None = None,
    ) -> None:
        if isinstance(x, Examples):
            if invert or normalize is not None:
                raise ValueError("x reads its examples on demand: give invert and normalize to it, not here")
        else:
            x = _examples(x)
            x = _Pixels.build(invert, normalize, x.shape[1:])(x)
        y = _class_ids(y, x.shape[0])
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
        self.x = x
        self.ways = ways
        self.shots = shots
        self.queries = queries
        self.rotations = rotations
        self.rotated_repeats = rotated_repeats
        self.output_size = ways
        self._has_splits = splits is not None
        self._select(split)

    def _select(self, name: str) -> None:
        """Point this family at the classes of split ``name``, checking there are enough for ``ways``."""
        if name not in self.splits:
            raise ValueError(
                f"unknown split {name!r}: this family has splits {sorted(self.splits)}"
                + ("" if self._has_splits else (
                    "; hold classes out with splits=... (see split_classes), or with "
                    "from_npz(..., val=0.1, test=0.2) or from_dataset(..., val=0.1, test=0.2)"
                    " (in a config, tasks: {val: 0.1, test: 0.2})"
                ))
                + ("; or train without validation: train.val_every: 0" if name == "val" else "")
            )
        labels = self.splits[name]
        available = len(labels) * (self.rotations if self.rotated_repeats else 1)
        if self.ways > available:
            where = f" split {name!r}" if self._has_splits else ""
            raise ValueError(
                f"{self.ways}-way episodes need at least {self.ways} classes, the data{where} has "
                f"{len(labels)}" + (f" ({available} with rotations)" if available > len(labels) else "")
                + ("" if name == "train" else (
                    f": give {name} a larger share of the classes, or fewer ways to its episodes "
                    f"(in a config, eval.tasks: {{ways: {available}}})"
                    + (", or train without validation (train.val_every: 0)" if name == "val" else "")
                ))
            )
        self.split_name = name
        self.labels = list(labels)
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
        invert: bool = False, normalize: Normalize | None = None,
    ) -> ClassificationFamily:
        """Episodes from an ``.npz`` file holding examples under ``x_key`` and labels under ``y_key``.

        ``val`` and ``test`` (fractions below 1, or class counts) hold classes out as those
        splits, chosen by ``split_classes`` with ``split_seed``; the family returned is on ``split``.
        ``invert`` and ``normalize`` are the constructor's.

        The file is read without unpickling (``allow_pickle=False``): a file that is not an
        ``.npz`` archive (text, a lone ``.npy`` array, a damaged zip) or an array that cannot be
        read raises ``ValueError`` naming the file and how to save one; a missing array raises
        ``KeyError`` naming the arrays the file holds. The arrays are then checked as the
        constructor checks them.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no .npz file at {path}")
        how = f"save the arrays with numpy.savez(path, {x_key}=examples, {y_key}=labels)"
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile):
            # numpy's message for a file it cannot place advises unpickling it, which is
            # wrong here and unsafe on a file of unknown origin, so it is not passed on.
            raise ValueError(f"{path} is not an .npz archive (numpy cannot read it as one); {how}") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single .npy array, not an .npz archive of named arrays; {how}")
        with data:
            missing = [k for k in (x_key, y_key) if k not in data.files]
            if missing:
                raise KeyError(
                    f"{path} has no array named {missing[0]!r}; it holds {sorted(data.files)}: "
                    f"name the right ones (x_key, y_key)"
                )
            x, y = (_npz_array(data, key, path, how) for key in (x_key, y_key))
        splits = split_classes(y, val=val, test=test, seed=split_seed) if val or test else None
        return cls(x, y, ways, shots, queries, rotations=rotations, splits=splits, split=split,
                   invert=invert, normalize=normalize)

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, ways: int, shots: int, queries: int, rotations: int = 1, *,
        val: float = 0, test: float = 0, split_seed: int = 0, split: str = "train",
        workers: int = 0, invert: bool = False, normalize: Normalize | None = None,
    ) -> ClassificationFamily:
        """Episodes from a map-style ``torch.utils.data.Dataset`` of ``(x, label)`` pairs.

        Any torchvision-style data set works (``ImageFolder``, ``CIFAR100``, your own), with its
        transforms, as long as they make every ``x`` a tensor (or array) of one shape. The
        labels are read once, here: from the data set's ``targets`` (as torchvision's have),
        else by reading every item. The images are read when an episode needs them (see
        :class:`DatasetExamples`; ``workers`` processes decode them in parallel), so only the
        labels stay in memory. Which classes and items an episode holds comes from the
        generator alone, so a seed gives the same episodes with or without ``workers``.
        ``val``, ``test``, ``split_seed`` and ``split`` are ``from_npz``'s.
        """
        examples = DatasetExamples(dataset, workers=workers, invert=invert, normalize=normalize)
        y = examples.labels()
        splits = split_classes(y, val=val, test=test, seed=split_seed) if val or test else None
        return cls(examples, y, ways, shots, queries, rotations=rotations, splits=splits, split=split)


@dataclass(frozen=True)
class _Pixels:
    """What ``invert`` and ``normalize`` do to a batch of examples, checked against their shape."""

    invert: bool
    mean: torch.Tensor | None
    std: torch.Tensor | None

    @classmethod
    def build(cls, invert: bool, normalize: Normalize | None, shape: Sequence[int]) -> _Pixels:
        """Check ``normalize`` against examples of ``shape`` and shape it to broadcast over them."""
        if normalize is None:
            return cls(invert, None, None)
        if not isinstance(normalize, Sequence) or len(normalize) != 2:
            raise ValueError(f"normalize must be (mean, std), got {normalize!r}")
        mean, std = (torch.tensor(v, dtype=torch.get_default_dtype()).reshape(-1) for v in normalize)
        if not bool((std > 0).all()):
            raise ValueError(f"normalize: every std must be > 0, got {std.tolist()}")
        channels = {mean.numel(), std.numel()} - {1}
        if channels:
            if len(shape) != 3 or channels != {shape[0]}:
                raise ValueError(
                    f"normalize gives {max(channels)} values per channel, but the examples have shape "
                    f"{tuple(shape)}: give one number each, or one per channel of [C, H, W] images"
                )
            mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        return cls(invert, mean, std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as floats, inverted and normalised as asked."""
        if self.invert:
            if x.is_floating_point():
                peak = 1
            elif x.dtype == torch.uint8:
                peak = 255
            else:
                raise ValueError(f"invert needs float images in [0, 1] or uint8 ones in [0, 255], got dtype {x.dtype}")
            low, high = x.min().item(), x.max().item()
            if low < 0 or high > peak:
                raise ValueError(
                    f"invert maps v to {peak} - v, for images in [0, {peak}], but they hold values in "
                    f"[{low:g}, {high:g}]: scale them to [0, {peak}] first"
                )
            x = peak - x
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if self.mean is not None:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x


class DatasetExamples(Examples):
    """The ``x`` of a map-style ``Dataset`` of ``(x, label)`` items, read when indexed.

    ``examples[index]`` reads ``dataset[i]`` for each ``i`` in ``index`` and stacks the ``x``
    as floats, after ``invert`` and ``normalize`` (see ``ClassificationFamily``). Every ``x``
    must be a tensor or array of the shape of the first. With ``workers > 0`` the items are
    read by that many worker processes of a ``DataLoader`` (started on first use and kept),
    which pays where decoding is the cost (JPEGs, large images); the items come back in the
    order asked, so what an episode holds does not depend on ``workers``. A transform that
    draws random numbers (augmentation) draws them from the global RNG, or from the workers'
    own: only the choice of items is reproducible, not such a transform's draws.
    """

    def __init__(
        self, dataset: Dataset, workers: int = 0, invert: bool = False, normalize: Normalize | None = None
    ) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"the data set must be a map-style torch.utils.data.Dataset (with __len__ and __getitem__), "
                f"got {type(dataset).__name__}"
            )
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be a whole number >= 0 (0: read in this process), got {workers!r}")
        if len(dataset) == 0:
            raise ValueError(f"the data set {type(dataset).__name__} is empty")
        self.dataset = dataset
        self.workers = workers
        first = _item_x(0, dataset[0])
        self.shape = (len(dataset), *first.shape)
        self._pixels = _Pixels.build(invert, normalize, first.shape)
        self._loader: DataLoader | None = None
        self._wanted = _Wanted()

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        wanted = index.reshape(-1).tolist()
        xs = [_item_x(i, item) for i, item in zip(wanted, self._read(wanted), strict=True)]
        for i, x in zip(wanted, xs):
            if x.shape != self.shape[1:]:
                raise ValueError(
                    f"dataset[{i}] has x of shape {tuple(x.shape)}, dataset[0] of shape {self.shape[1:]}: "
                    f"every example needs one shape (resize or crop them in the transform)"
                )
        x = torch.stack(xs)
        if x.is_floating_point():
            bad = ~torch.isfinite(x)
            if bad.any():
                raise ValueError(f"dataset[{wanted[_first_example(bad)]}] holds NaN or inf")
        return self._pixels(x).reshape(*index.shape, *self.shape[1:])

    def labels(self) -> torch.Tensor:
        """The class id of every item: the data set's ``targets`` if it has them, else read item by item."""
        n = self.shape[0]
        targets = getattr(self.dataset, "targets", None)
        if targets is None:
            targets = []
            for start in range(0, n, _LABEL_CHUNK):
                wanted = list(range(start, min(n, start + _LABEL_CHUNK)))
                targets += [_item_label(i, item) for i, item in zip(wanted, self._read(wanted), strict=True)]
            return _class_ids(targets)
        try:
            return _class_ids(targets, n)
        except ValueError as e:
            raise ValueError(f"the data set's targets: {e}") from None

    def _read(self, wanted: list[int]) -> list[Any]:
        """The items ``dataset[i]`` for ``i`` in ``wanted``, in that order."""
        if self.workers == 0:
            return [self.dataset[i] for i in wanted]
        if self._loader is None:
            self._loader = DataLoader(
                self.dataset, batch_size=_WORKER_BATCH, sampler=self._wanted, num_workers=self.workers,
                collate_fn=list, persistent_workers=True,
                generator=torch.Generator(),  # the workers' seeds: not drawn from the global RNG
            )
        self._wanted.indices = wanted
        return [item for batch in self._loader for item in batch]


class _Wanted(Sampler[int]):
    """The indices the next pass of a ``DataLoader`` reads (set before each pass)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


_LABEL_CHUNK = 4096  # items read at once when labels are read item by item
_WORKER_BATCH = 4  # items a worker reads per request: small, so an episode spreads over all workers


def _item_x(i: int, item: Any) -> torch.Tensor:
    """The ``x`` of ``dataset[i]`` as a tensor, or an error saying what the item is instead."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"dataset[{i}] is a {type(item).__name__}, not an (x, label) pair")
    x = item[0]
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"dataset[{i}] has x of type {type(x).__module__}.{type(x).__name__}, not a tensor: give the data "
            f"set a transform that makes tensors (e.g. torchvision.transforms.ToTensor())"
        )
    return _numbers("x", x)


def _item_label(i: int, item: Any) -> int:
    """The label of ``dataset[i]`` as an int, or an error saying how to make it one."""
    label = item[1] if isinstance(item, (tuple, list)) and len(item) >= 2 else None
    if isinstance(label, (torch.Tensor, np.ndarray)) and label.dtype not in (torch.bool, np.bool_) and (
        label.numel() if isinstance(label, torch.Tensor) else label.size
    ) == 1:
        label = label.item()  # an int for integer dtypes; a float stays one and is refused below
    if isinstance(label, np.integer):
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise TypeError(
            f"dataset[{i}] has label {label!r} ({type(label).__name__}): labels must be integer class ids; "
            f"map them with a target_transform, or give the data set a targets list"
        )
    return label


def split_classes(
    y: torch.Tensor | np.ndarray | Sequence[int], val: float = 0.1, test: float = 0.2, seed: int = 0
) -> dict[str, list[int]]:
    """Deal the classes of ``y`` into disjoint ``"train"``, ``"val"`` and ``"test"`` lists.

    ``val`` and ``test`` are fractions of the classes when below 1 (rounded, at least one
    class when non-zero) or class counts otherwise. The classes are sorted, then permuted by
    a ``torch.Generator`` seeded with ``seed``: val takes the first ones, test the next, train
    the rest, so the same labels and seed give the same splits. Each list is sorted; a split
    of no classes (``val=0``) is left out. ``y`` is checked as ``ClassificationFamily`` checks it.
    """
    labels = sorted(set(_class_ids(y).tolist()))
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


def _npz_array(data: np.lib.npyio.NpzFile, key: str, path: Path, how: str) -> np.ndarray:
    """Array ``key`` of ``data`` (read from ``path``), or a one-line ``ValueError`` saying why not."""
    try:
        array = data[key]
    except (EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: array {key!r} is damaged ({e}); {how}") from None
    except ValueError:  # numpy's message here would point at allow_pickle=True, which is unsafe
        raise ValueError(
            f"{path}: array {key!r} cannot be read: it holds Python objects (stored pickled, which "
            f"is never loaded) or its header is damaged; {how}"
        ) from None
    if not isinstance(array, np.ndarray):  # a zip member that is not in .npy format
        raise ValueError(f"{path}: {key!r} is not a numpy array (not in .npy format); {how}")
    return array


def _numbers(name: str, a: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """``a`` as a tensor, refusing strings, Python objects and complex numbers."""
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got an array of dtype {a.dtype}")
        a = torch.as_tensor(a)
    if a.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return a


def _examples(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a tensor, checked to be ``[examples, features...]``, non-empty and finite."""
    x = _numbers("x", x)
    if x.dim() < 2:
        raise ValueError(
            f"x must have at least 2 dimensions (examples × features), got shape {tuple(x.shape)}; "
            f"for one feature per example pass x[:, None]"
        )
    if x.shape[0] == 0:
        raise ValueError(f"the data set is empty: x of shape {tuple(x.shape)} has no examples")
    if x[0].numel() == 0:
        raise ValueError(f"x of shape {tuple(x.shape)} holds no values in its examples")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bad.any():
            raise ValueError(
                f"x holds {_count(int(bad.sum()), 'non-finite value')} (NaN or inf); "
                f"the first at example {_first_example(bad)}"
            )
    return x


def _class_ids(y: torch.Tensor | np.ndarray | Sequence[int], examples: int | None = None) -> torch.Tensor:
    """``y`` as int64, checked to be 1-D integer class ids ``>= 0`` (``examples`` of them, if given)."""
    y = _numbers("y", y)
    if y.dim() != 1:
        raise ValueError(f"labels y must be 1-D (one class id per example), got shape {tuple(y.shape)}")
    if examples is not None and y.shape[0] != examples:
        raise ValueError(f"y has {_count(y.shape[0], 'label')} but x has {examples} examples: give one per example")
    if y.is_floating_point():
        bad = ~(torch.isfinite(y) & (y == y.round()))
        if bad.any():
            raise ValueError(
                f"labels y must be integer class ids: y holds {_count(int(bad.sum()), 'non-integer label')} "
                f"(fractions, NaN or inf); the first at example {_first_example(bad)} ({y[bad][0].item()})"
            )
        raise ValueError(
            f"labels y must have an integer dtype, got {y.dtype}; its values are whole numbers, "
            f"so convert them, e.g. y.astype(np.int64) or y.long()"
        )
    if y.dtype == torch.bool:
        raise ValueError("labels y must be integer class ids, got dtype torch.bool")
    negative = y < 0
    if negative.any():
        raise ValueError(
            f"class ids must be >= 0: y holds {_count(int(negative.sum()), 'negative label')}; "
            f"the first at example {_first_example(negative)} ({y[negative][0].item()})"
        )
    return y.long()


def _first_example(mask: torch.Tensor) -> int:
    """Index along the first axis of the first example in which ``mask`` marks anything."""
    return int(mask.reshape(mask.shape[0], -1).any(1).nonzero()[0, 0])


def _count(n: int, noun: str) -> str:
    """``"1 label"``, ``"12 labels"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
