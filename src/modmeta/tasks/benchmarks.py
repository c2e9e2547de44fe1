"""The few-shot image benchmarks beside Omniglot: mini-ImageNet, CIFAR-FS and CUB-200-2011.

Each is read from one archive in ``root``, the file its authors (or the tools most papers
use) distribute, after checking it against that file's published digest; ``download=True``
fetches it first (see ``modmeta.tasks.download``). The decoded images are kept as ``uint8``
arrays, cached on disk like Omniglot's (keyed by the archive's sha256, with a digest of the
arrays checked on every read) and shared within a process; an episode turns its own images
into floats in ``[0, 1]``, ``[3, S, S]``. Classes are split into train, val and test as the
papers do, so ``split("val")`` and ``split("test")`` hold classes never trained on.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
import re
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modmeta.arguments import at_least
from modmeta.tasks.cache import read_cache, write_cache
from modmeta.tasks.download import Checksum, default_cache_dir, fetch_file
from modmeta.tasks.labelled import ClassificationFamily, Examples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """A data set's archive: its file name in ``root``, where to fetch it, its accepted digests."""

    file: str
    url: str
    accepted: tuple[Checksum, ...]


MINIIMAGENET = Archive(
    "mini-imagenet.tar.gz",
    "https://drive.usercontent.google.com/download?id=16V_ZlkW4SsnNDtnGmaBRq2OoPmUOc5mY&export=download&confirm=t",
    (Checksum(md5="b38f1eb4251fb9459ecc8e7febf9b2eb", label="the archive of Ren et al. 2018 that torchmeta fetches"),),
)
"""mini-ImageNet as Ren et al. (2018, github.com/renmengye/few-shot-ssl-public) packed it and
torchmeta (``MiniImagenetClassDataset``: Google Drive id and MD5) downloads it: one pickle per
split, ``mini-imagenet-cache-{train,val,test}.pkl``, of 84x84 RGB images. Should Google Drive
answer with a page instead of the file, the check says so: fetch it in a browser then."""

CIFAR100 = Archive(
    "cifar-100-binary.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    (Checksum(md5="03b5dce01913d631647c71ecec9e9cb8", size=168_513_733, label="the official binary archive"),),
)
"""CIFAR-100 (Krizhevsky 2009) in its binary version (no pickles), MD5 as the author's page
gives it (also the ``md5sums`` of github.com/datasets-mila/datasets--cifar100)."""

CUB200 = Archive(
    "CUB_200_2011.tgz",
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
    (Checksum(md5="97eceeb196236b17998738112f37df78", label="the official CaltechDATA archive"),),
)
"""CUB-200-2011 (Wah et al. 2011) from CaltechDATA, MD5 as torchvision-style loaders check it."""

CIFARFS_VAL = (
    "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea", "camel",
    "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
)
CIFARFS_TEST = (
    "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard", "plain",
    "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck", "rocket",
)
"""The 16 val and 20 test classes of CIFAR-FS (Bertinetto et al. 2019, "Meta-learning with
differentiable closed-form solvers", split files of github.com/bertinetto/r2d2, as torchmeta's
``cifar100/cifar-fs`` assets list them); the other 64 CIFAR-100 classes train."""

_CACHE_FORMAT = 1  # bump when the decoding changes, so old cache files are not reused
_ARRAYS = ("images", "labels", "classes", "class_split")
_MEMO: dict[tuple[str, str, int], LabelledImages] = {}


@dataclass(frozen=True, eq=False)
class LabelledImages:
    """A decoded benchmark: ``images`` ``uint8 [N, 3, S, S]``, their class ``labels`` ``[N]``,
    the ``classes``' names and the split (``"train"``, ``"val"``, ``"test"``) of each class."""

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    class_split: np.ndarray

    def splits(self) -> dict[str, list[int]]:
        """Class indices of each split."""
        return {s: [k for k, g in enumerate(self.class_split) if g == s] for s in ("train", "val", "test")}


class ByteImages(Examples):
    """``uint8`` images held as they are, returned as floats in ``[0, 1]`` when indexed (4x less memory)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.from_numpy(images)
        self.shape = tuple(images.shape)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index].to(torch.get_default_dtype()).div_(255)


class ImageBenchmark(ClassificationFamily):
    """N-way K-shot episodes of a decoded benchmark, on its class split ``split``."""

    def __init__(self, data: LabelledImages, split: str, ways: int, shots: int, queries: int) -> None:
        self.data = data
        splits = {name: classes for name, classes in data.splits().items() if classes}
        super().__init__(ByteImages(data.images), data.labels, ways, shots, queries, splits=splits, split=split)

    def class_names(self) -> list[str]:
        """The name of each class of this split, in label order."""
        return [str(self.data.classes[c]) for c in self.labels]


class MiniImageNet(ImageBenchmark):
    """mini-ImageNet (Vinyals et al. 2016) on the split of Ravi & Larochelle (2017): 100 ImageNet
    classes of 600 images, 84x84 RGB; 64 train, 16 val and 20 test classes.

    Read from ``mini-imagenet.tar.gz`` in ``root`` (see ``MINIIMAGENET``): Ren et al.'s
    pickles follow Ravi & Larochelle's ``train.csv``, ``val.csv`` and ``test.csv``, one
    pickle per split, so the split is the archive's. Its pickles are read with an unpickler
    that builds only numpy arrays and plain data, after the archive's MD5 has been checked.
    """

    def __init__(
        self, root: str | Path, split: str = "train", ways: int = 5, shots: int = 1, queries: int = 15,
        download: bool = False, cache: bool | str | Path = True,
    ) -> None:
        data = load_benchmark(root, MINIIMAGENET, _decode_miniimagenet, "mini-ImageNet", download, cache)
        super().__init__(data, split, ways, shots, queries)


class CIFARFS(ImageBenchmark):
    """CIFAR-FS (Bertinetto et al. 2019): the 100 CIFAR-100 classes, train and test images
    pooled (600 per class), 32x32 RGB; 64 train, 16 val (``CIFARFS_VAL``) and 20 test
    (``CIFARFS_TEST``) classes. Read from ``cifar-100-binary.tar.gz`` in ``root`` (``CIFAR100``).
    """

    def __init__(
        self, root: str | Path, split: str = "train", ways: int = 5, shots: int = 1, queries: int = 15,
        download: bool = False, cache: bool | str | Path = True,
    ) -> None:
        data = load_benchmark(root, CIFAR100, _decode_cifarfs, "CIFAR-FS", download, cache)
        super().__init__(data, split, ways, shots, queries)


class CUB(ImageBenchmark):
    """CUB-200-2011 (Wah et al. 2011): 200 bird species, 11,788 photos, each resized (whole,
    not cropped) to ``image_size`` x ``image_size`` RGB.

    The split of Chen et al. 2019 ("A Closer Look at Few-shot Classification",
    ``filelists/CUB/write_CUB_filelist.py`` of github.com/wyharveychen/CloserLookFewShot):
    with the class folders sorted by name and numbered from 0, class ``i`` trains if
    ``i % 2 == 0`` (100 classes), validates if ``i % 4 == 1`` (50) and tests if ``i % 4 == 3``
    (50). Read from ``CUB_200_2011.tgz`` in ``root`` (see ``CUB200``).
    """

    def __init__(
        self, root: str | Path, split: str = "train", ways: int = 5, shots: int = 1, queries: int = 15,
        download: bool = False, cache: bool | str | Path = True, image_size: int = 84,
    ) -> None:
        at_least(1, image_size=image_size)
        decode = partial(_decode_cub, image_size=image_size)
        data = load_benchmark(root, CUB200, decode, "CUB", download, cache, image_size)
        super().__init__(data, split, ways, shots, queries)


def load_benchmark(
    root: str | Path, archive: Archive, decode: Callable[[Path], LabelledImages], name: str,
    download: bool = False, cache: bool | str | Path = True, image_size: int = 0,
) -> LabelledImages:
    """The images of ``archive`` in ``root``, checked, then decoded by ``decode`` or read from the cache.

    ``download=True`` fetches a missing or bad archive from ``archive.url``; otherwise either
    raises, saying what to fetch and where to save it. The decoded arrays are kept in this
    process and, when ``cache`` is true, in ``default_cache_dir()`` (or the folder ``cache``
    names), in a file keyed by the archive's sha256 (and ``image_size``, where the decoding
    resizes); a cache file that fails its digest is reported with a warning and rebuilt.
    """
    root = Path(root).expanduser()
    sha = fetch_file(root / archive.file, archive.url, archive.accepted, download).sha256
    key = (archive.file, sha, image_size)
    if key in _MEMO:
        return _MEMO[key]
    file = None
    if cache:
        folder = default_cache_dir() if cache is True else Path(cache).expanduser()
        size = f"-{image_size}px" if image_size else ""
        file = folder / f"{Path(archive.file).name.split('.')[0].lower()}-v{_CACHE_FORMAT}{size}-{sha[:12]}.npz"
    arrays = read_cache(file, _ARRAYS, name, _check_arrays) if file is not None and file.is_file() else None
    if arrays is None:
        start = time.perf_counter()
        data = decode(root / archive.file)
        log.info("decoded %d %s images in %.1f s", len(data.labels), name, time.perf_counter() - start)
        if file is not None:
            write_cache(file, {a: getattr(data, a) for a in _ARRAYS}, name)
    else:
        data = LabelledImages(**arrays)
    _MEMO[key] = data
    return data


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    """Refuse cached arrays that do not fit together (``ValueError`` saying how)."""
    images, labels, classes = arrays["images"], arrays["labels"], arrays["classes"]
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(f"images of shape {images.shape} and dtype {images.dtype} for {labels.shape} labels")
    if arrays["class_split"].shape != classes.shape or (len(labels) and labels.max() >= len(classes)):
        raise ValueError("the class lists do not match the labels")


def _labelled(
    path: Path, per_class: Mapping[str, Sequence[np.ndarray]], split_of: Callable[[int, str], str]
) -> LabelledImages:
    """Images grouped by class name (``[3, S, S]`` each) as one ``LabelledImages``, classes sorted by name.

    ``split_of(index, name)`` gives each class's split; ``path`` names the archive in errors.
    """
    classes = sorted(per_class)
    images = [image for c in classes for image in per_class[c]]
    if not images:
        raise ValueError(f"{path} holds none of the images expected in it")
    return LabelledImages(
        images=np.stack(images),
        labels=np.repeat(np.arange(len(classes)), [len(per_class[c]) for c in classes]),
        classes=np.array(classes),
        class_split=np.array([split_of(i, c) for i, c in enumerate(classes)]),
    )


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain data (dicts, lists, strings, numbers); refuses anything else."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):  # how protocols 0-2 store bytes: a pure function
            return codecs.encode
        if module in _NUMPY_MODULES and name in _NUMPY_PICKLE:
            return _NUMPY_PICKLE[name]
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays and plain data are read")


_NUMPY_MODULES = (
    "numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric",
)
_NUMPY_PICKLE = {  # what numpy's pickles of arrays call, found where this numpy keeps it
    "_reconstruct": np.zeros(0).__reduce__()[0],
    "_frombuffer": np.zeros(0).__reduce_ex__(5)[0],
    "scalar": np.int64(0).__reduce__()[0],
    "ndarray": np.ndarray,
    "dtype": np.dtype,
}


def _decode_miniimagenet(path: Path) -> LabelledImages:
    """Each split's pickle of ``{"image_data": uint8 [N, 84, 84, 3], "class_dict": {class: [indices]}}``."""
    per_class: dict[str, list[np.ndarray]] = {}
    split_of: dict[str, str] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            m = re.fullmatch(r"(?:.*/)?mini-imagenet-cache-(train|val|test)\.pkl", member.name)
            if not m or not member.isfile():
                continue
            data = _ArraysOnly(tar.extractfile(member)).load()
            images = np.asarray(data["image_data"]).transpose(0, 3, 1, 2)
            for name, indices in data["class_dict"].items():
                per_class[name] = list(images[np.asarray(indices)])
                split_of[name] = m.group(1)
    return _labelled(path, per_class, lambda i, name: split_of[name])


def _decode_cifarfs(path: Path) -> LabelledImages:
    """``train.bin`` and ``test.bin`` records (coarse label, fine label, 3x32x32 bytes), pooled."""
    with tarfile.open(path) as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        names = tar.extractfile(files["fine_label_names.txt"]).read().decode().split()
        records = np.concatenate([
            np.frombuffer(tar.extractfile(files[f]).read(), np.uint8).reshape(-1, 2 + 3 * 32 * 32)
            for f in ("train.bin", "test.bin")
        ])
    images = records[:, 2:].reshape(-1, 3, 32, 32)
    per_class = {name: list(images[records[:, 1] == k]) for k, name in enumerate(names)}
    split_of = {**{name: "val" for name in CIFARFS_VAL}, **{name: "test" for name in CIFARFS_TEST}}
    return _labelled(path, per_class, lambda i, name: split_of.get(name, "train"))


def _decode_cub(path: Path, image_size: int) -> LabelledImages:
    """``CUB_200_2011/images/<class>/<photo>.jpg``, each converted to RGB and resized."""
    per_class: dict[str, list[tuple[str, np.ndarray]]] = {}
    with tarfile.open(path) as tar:
        for member in tar:  # in archive order: a .tgz is read once, front to back
            m = re.fullmatch(r"(?:\./)?CUB_200_2011/images/([^/]+)/([^/]+\.jpg)", member.name)
            if not m or not member.isfile():
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                rgb = im.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            per_class.setdefault(m.group(1), []).append((m.group(2), np.asarray(rgb).transpose(2, 0, 1)))
    photos = {c: [image for _, image in sorted(items, key=lambda p: p[0])] for c, items in per_class.items()}
    return _labelled(path, photos, lambda i, name: "train" if i % 2 == 0 else "val" if i % 4 == 1 else "test")
