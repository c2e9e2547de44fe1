"""Data beyond arrays: any torch Dataset as an N-way K-shot family (with worker processes),
invert/normalize, the few-classes errors, and the mini-ImageNet, CIFAR-FS and CUB loaders on
small archives built here in the official formats (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from modmeta import config, registry
from modmeta.tasks import benchmarks as bm
from modmeta.tasks.download import Checksum, CorruptArchiveError
from modmeta.tasks.labelled import ClassificationFamily

torch.set_num_threads(1)


class Pictures(Dataset):
    """A torchvision-style data set: PIL images, a transform applied in ``__getitem__``.

    Item ``i`` is a 4x4 grayscale picture whose first two pixels spell ``i`` (``i % 256``,
    ``i // 256``), of class ``i % classes`` (classes interleaved, so grouping matters).
    """

    def __init__(self, n: int = 96, classes: int = 12, transform=None, targets: bool = True) -> None:
        self.n, self.transform = n, transform
        self.labels = [i % classes for i in range(n)]
        if targets:
            self.targets = list(self.labels)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        pixels = np.full((4, 4), 200, dtype=np.uint8)
        pixels[0, 0], pixels[0, 1] = i % 256, i // 256
        image = Image.fromarray(pixels, mode="L")
        return (image if self.transform is None else self.transform(image)), self.labels[i]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """What torchvision's ToTensor does for a grayscale picture: [1, H, W] floats in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None]


def item_ids(x: torch.Tensor) -> torch.Tensor:
    """The item indices spelled by pictures ``x [..., 1, 4, 4]`` (the inverse of ``Pictures``)."""
    pixels = (x[..., 0, 0, :2] * 255).round().long()
    return pixels[..., 0] + 256 * pixels[..., 1]


@pytest.mark.parametrize("targets", [True, False], ids=["targets", "read-labels"])
def test_a_dataset_becomes_episodes_of_its_classes(targets: bool) -> None:
    data = Pictures(transform=to_tensor, targets=targets)
    family = ClassificationFamily.from_dataset(data, ways=4, shots=2, queries=3)
    assert family.num_classes == 12 and family.x.shape == (96, 1, 4, 4)
    batch = family.sample(5, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (5, 8, 1, 4, 4) and batch.x_query.shape == (5, 12, 1, 4, 4)
    for t in range(5):
        ids = torch.cat([item_ids(batch.x_support[t]), item_ids(batch.x_query[t])])
        labels = torch.cat([batch.y_support[t], batch.y_query[t]])
        assert ids.unique().numel() == ids.numel(), "an episode's items are distinct"
        classes = {}
        for i, label in zip(ids.tolist(), labels.tolist(), strict=True):
            assert classes.setdefault(label, data.labels[i]) == data.labels[i], "a label stands for one class"
        assert len(set(classes.values())) == 4


def test_same_seed_same_episode_with_or_without_workers() -> None:
    data = Pictures(transform=to_tensor)
    one = ClassificationFamily.from_dataset(data, 3, 1, 2, val=3)
    many = ClassificationFamily.from_dataset(data, 3, 1, 2, val=3, workers=2)
    rng = torch.get_rng_state()
    for split in ("train", "val"):
        a = one.split(split).sample(4, torch.Generator().manual_seed(7))
        b = many.split(split).sample(4, torch.Generator().manual_seed(7))
        again = many.split(split).sample(4, torch.Generator().manual_seed(7))
        for name in ("x_support", "y_support", "x_query", "y_query"):
            assert torch.equal(getattr(a, name), getattr(b, name)) and torch.equal(getattr(b, name), getattr(again, name))
    seven, eight = (one.sample(4, torch.Generator().manual_seed(s)).x_support for s in (7, 8))
    assert not torch.equal(seven, eight), "another seed, other episodes"
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG is not drawn from, workers or not"
    val_ids = item_ids(many.split("val").sample(3, torch.Generator()).x_query).flatten().tolist()
    assert {data.labels[i] for i in val_ids} <= set(many.splits["val"]), "val episodes hold val classes only"


def test_a_dataset_item_that_is_not_a_tensor_or_has_no_integer_label_says_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"dataset\[0\] has x of type PIL\..*Image, not a tensor: .*ToTensor"):
        ClassificationFamily.from_dataset(Pictures(), 2, 1, 1)
    named = Pictures(transform=to_tensor, targets=False)
    named.labels = [f"class{i % 3}" for i in range(named.n)]
    with pytest.raises(TypeError, match=r"dataset\[0\] has label 'class0' \(str\): labels must be integer .*target_transform"):
        ClassificationFamily.from_dataset(named, 2, 1, 1)
    named.targets = named.labels
    with pytest.raises(ValueError, match=r"^the data set's targets: y must hold real numbers, got an array of dtype <U6$"):
        ClassificationFamily.from_dataset(named, 2, 1, 1)
    ragged = Pictures(transform=lambda im: to_tensor(im)[:, : 1 + im.getpixel((0, 0)) % 2])
    family = ClassificationFamily.from_dataset(ragged, 2, 1, 1)
    with pytest.raises(ValueError, match=r"dataset\[\d+\] has x of shape \(1, \d, 4\), dataset\[0\] of shape \(1, 1, 4\)"):
        for seed in range(5):
            family.sample(4, torch.Generator().manual_seed(seed))
    with pytest.raises(ValueError, match="workers must be a whole number >= 0"):
        ClassificationFamily.from_dataset(Pictures(transform=to_tensor), 2, 1, 1, workers=-1)


def test_too_few_classes_for_validation_name_the_fix() -> None:
    family = ClassificationFamily.from_dataset(Pictures(classes=4, transform=to_tensor), 2, 1, 1)
    with pytest.raises(ValueError, match=r"unknown split 'val'.*tasks: \{val: 0\.1.*train\.val_every: 0$"):
        family.split("val")
    with pytest.raises(ValueError, match=(
        r"^5-way episodes need at least 5 classes, the data split 'val' has 2: give val a larger share of the "
        r"classes, or fewer ways to its episodes \(in a config, eval.tasks: \{ways: 2\}\), or train without "
        r"validation \(train.val_every: 0\)$"
    )):
        ClassificationFamily.from_dataset(Pictures(classes=12, transform=to_tensor), 5, 1, 1, val=2).split("val")


def test_invert_and_normalize_for_arrays_npz_and_datasets(tmp_path: Path) -> None:
    x = np.zeros((6, 1, 4, 4), dtype=np.uint8)
    x[:, :, 1, :] = 255  # a bright stroke on black paper after inversion: here dark on white
    x = 255 - x
    y = np.arange(6) % 3
    plain = ClassificationFamily(x, y, 3, 1, 1)
    inverted = ClassificationFamily(x, y, 3, 1, 1, invert=True)
    assert torch.equal(inverted.x, 255 - plain.x) and inverted.x[:, :, 1].eq(255).all() and inverted.x.sum() == 6 * 4 * 255
    floats = ClassificationFamily((x / 255).astype(np.float32), y, 3, 1, 1, invert=True, normalize=(0.5, 0.25))
    assert torch.allclose(floats.x, (inverted.x / 255 - 0.5) / 0.25)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert torch.equal(ClassificationFamily.from_npz(tmp_path / "d.npz", 3, 1, 1, invert=True).x, inverted.x)
    data = Pictures(transform=to_tensor)
    pictures = ClassificationFamily.from_dataset(data, 3, 1, 1, invert=True, normalize=([0.1], [2.0]))
    index = torch.tensor([[5, 6]])
    expected = (1 - torch.stack([data[i][0] for i in (5, 6)]) - 0.1) / 2.0
    assert torch.allclose(pictures.x[index], expected[None])
    with pytest.raises(ValueError, match=r"invert maps v to 1 - v, for images in \[0, 1\], but they hold values in \[0, 255\]"):
        ClassificationFamily(x.astype(np.float32), y, 3, 1, 1, invert=True)
    with pytest.raises(ValueError, match=r"normalize gives 3 values per channel, but the examples have shape \(1, 4, 4\)"):
        ClassificationFamily(x, y, 3, 1, 1, normalize=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))
    with pytest.raises(ValueError, match=r"every std must be > 0"):
        ClassificationFamily(x, y, 3, 1, 1, normalize=(0.5, 0.0))


# --- the benchmark loaders, on small archives in the official formats -----------------------


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def accept(monkeypatch: pytest.MonkeyPatch, constant: str, path: Path) -> None:
    """Make the loader accept the fake archive at ``path`` (its own MD5), fetched from its file URL."""
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(bm, constant, bm.Archive(path.name, path.as_uri(), (Checksum(md5=md5),)))


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm, "_MEMO", {})


def colour(k: int, j: int) -> np.ndarray:
    """A flat RGB colour that spells class ``k`` and picture ``j``."""
    return np.array([10 * k, j, 255 - k], dtype=np.uint8)


MINI_CLASSES = {"train": ["n01532829", "n01558993", "n01704323"], "val": ["n01855672", "n02091244"],
                "test": ["n01930112", "n01981276"]}
MINI_NUMBER = {c: k for k, c in enumerate(c for classes in MINI_CLASSES.values() for c in classes)}


def miniimagenet(folder: Path) -> Path:
    """``mini-imagenet.tar.gz``: one pickle per split, {image_data [N, 84, 84, 3], class_dict}."""
    path = folder / "mini-imagenet.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, classes in MINI_CLASSES.items():
            images = np.stack([np.broadcast_to(colour(MINI_NUMBER[c], j), (84, 84, 3)) for c in classes for j in range(3)])
            class_dict = {c: list(range(3 * i, 3 * i + 3)) for i, c in enumerate(classes)}
            protocol = {"train": 2, "val": 4, "test": 5}[split]  # the numpy pickles of each protocol are read
            add(tar, f"mini-imagenet-cache-{split}.pkl",
                pickle.dumps({"image_data": images, "class_dict": class_dict}, protocol=protocol))
    return path


def test_miniimagenet_reads_the_split_of_its_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accept(monkeypatch, "MINIIMAGENET", miniimagenet(tmp_path))
    family = bm.MiniImageNet(tmp_path, ways=2, shots=1, queries=2, cache=tmp_path / "cache")
    assert family.class_names() == ["n01532829", "n01558993", "n01704323"]
    assert family.split("val").class_names() == ["n01855672", "n02091244"]
    assert family.split("test").class_names() == ["n01930112", "n01981276"]
    batch = family.sample(2, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (2, 2, 3, 84, 84) and batch.x_support.dtype == torch.float32
    pixel = (batch.x_support[0, :, :, 5, 7] * 255).round().long()  # [ways, RGB]
    assert set(pixel[:, 0].div(10).tolist()) < {0, 1, 2}, "each class's pictures are its own"
    assert (pixel[:, 2] == 255 - pixel[:, 0] // 10).all()


def test_miniimagenet_refuses_a_pickle_that_would_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mini-imagenet.tar.gz"

    class Boom:
        def __reduce__(self):
            return (print, ("this ran",))

    with tarfile.open(path, "w:gz") as tar:
        add(tar, "mini-imagenet-cache-train.pkl", pickle.dumps({"image_data": Boom(), "class_dict": {}}))
    accept(monkeypatch, "MINIIMAGENET", path)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing builtins\.print: only numpy arrays and plain data"):
        bm.MiniImageNet(tmp_path, cache=False)


def cifar100(folder: Path) -> Path:
    """``cifar-100-binary.tar.gz``: records of (coarse, fine, 3x32x32 bytes) and the fine class names."""
    path = folder / "cifar-100-binary.tar.gz"
    names = ["apple", "beaver", "otter", "whale", "rose", "bicycle", "bus", "camel"]
    split = {"train": [], "test": []}
    for k in range(len(names)):
        for j in range(4):
            pixels = np.broadcast_to(colour(k, j)[:, None, None], (3, 32, 32))
            split["train" if j < 3 else "test"].append(np.concatenate([[k // 2, k], pixels.reshape(-1)]).astype(np.uint8))
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "cifar-100-binary/fine_label_names.txt", ("\n".join(names) + "\n").encode())
        add(tar, "cifar-100-binary/coarse_label_names.txt", b"a\nb\nc\nd\n")
        for name, records in split.items():
            add(tar, f"cifar-100-binary/{name}.bin", np.stack(records).tobytes())
    return path


def test_cifarfs_pools_train_and_test_and_splits_by_class_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accept(monkeypatch, "CIFAR100", cifar100(tmp_path))
    family = bm.CIFARFS(tmp_path, ways=2, shots=2, queries=2, cache=False)
    assert family.class_names() == ["apple", "bus"]
    assert family.split("val").class_names() == ["beaver", "camel", "otter"]
    assert family.split("test").class_names() == ["bicycle", "rose", "whale"]
    assert len(family.data.labels) == 8 * 4, "train and test images are pooled: 4 per class"
    x = family.x[torch.arange(32)]
    assert x.shape == (32, 3, 32, 32)
    ids = (x[:, :, 3, 4] * 255).round().long()
    assert ids[:, 1].tolist() == [0, 1, 2, 3] * 8, "the pictures of a class, train then test"
    assert ids[::4, 0].div(10).tolist() == [0, 1, 5, 6, 7, 2, 4, 3], "classes sorted by name, each its own pictures"


def cub(folder: Path) -> Path:
    """``CUB_200_2011.tgz``: ``CUB_200_2011/images/<NNN.Name>/<photo>.jpg``, photos of any size."""
    path = folder / "CUB_200_2011.tgz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "CUB_200_2011/classes.txt", b"")
        for k in range(8):
            for j in range(3):
                buffer = io.BytesIO()
                Image.new("RGB", (20 + j, 15), tuple(int(v) for v in colour(k, 40 * j))).save(buffer, "JPEG", quality=95)
                add(tar, f"CUB_200_2011/images/{k + 1:03d}.Bird_{k}/Bird_{k}_{j:04d}.jpg", buffer.getvalue())
    return path


def test_cub_follows_the_class_index_split_of_chen_et_al(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accept(monkeypatch, "CUB200", cub(tmp_path))
    family = bm.CUB(tmp_path, ways=2, shots=1, queries=1, image_size=10, cache=False)
    assert family.class_names() == ["001.Bird_0", "003.Bird_2", "005.Bird_4", "007.Bird_6"]  # index % 2 == 0
    assert family.split("val").class_names() == ["002.Bird_1", "006.Bird_5"]  # index % 4 == 1
    assert family.split("test").class_names() == ["004.Bird_3", "008.Bird_7"]  # index % 4 == 3
    x = family.x[torch.arange(len(family.data.labels))]
    assert x.shape == (24, 3, 10, 10)
    means = (x.mean((2, 3)) * 255).round()
    expected = torch.tensor(np.stack([colour(k, 40 * j) for k in range(8) for j in range(3)])).float()
    assert (means - expected).abs().max() <= 3, "each photo resized whole, in class then file order (JPEG: ±3)"


def test_a_wrong_checksum_is_refused_and_download_fetches_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    fake = cifar100(source)
    root = tmp_path / "root"
    root.mkdir()
    (root / fake.name).write_bytes(fake.read_bytes())
    with pytest.raises(CorruptArchiveError, match=re.escape(
        f"Expected: the official binary archive (168,513,733 bytes, MD5 03b5dce01913d631647c71ecec9e9cb8). "
        f"Fetch {bm.CIFAR100.url} and save it as {root / fake.name}, or pass download=True"
    )):
        bm.CIFARFS(root)  # the fake archive is not the official one
    accept(monkeypatch, "CIFAR100", fake)
    fresh = tmp_path / "fresh"
    decoded = []
    decode = bm._decode_cifarfs
    monkeypatch.setattr(bm, "_decode_cifarfs", lambda path: decoded.append(path) or decode(path))
    with pytest.raises(FileNotFoundError, match="pass download=True"):
        bm.CIFARFS(fresh, cache=tmp_path / "cache")
    first = bm.CIFARFS(fresh, ways=2, queries=1, download=True, cache=tmp_path / "cache")
    assert (fresh / fake.name).read_bytes() == fake.read_bytes() and len(decoded) == 1
    monkeypatch.setattr(bm, "_MEMO", {})
    again = bm.CIFARFS(fresh, ways=2, queries=1, cache=tmp_path / "cache")
    assert len(decoded) == 1, "the second load reads the cache"
    np.testing.assert_array_equal(again.data.images, first.data.images)
    cached = tmp_path / "cache" / f"cifar-100-binary-v1-{hashlib.sha256(fake.read_bytes()).hexdigest()[:12]}.npz"
    assert list((tmp_path / "cache").iterdir()) == [cached]
    with np.load(cached) as f:  # a valid .npz, digest kept, every image blank
        arrays = {name: f[name] for name in f.files}
    np.savez(cached, **(arrays | {"images": np.zeros_like(arrays["images"])}))
    monkeypatch.setattr(bm, "_MEMO", {})
    with pytest.warns(UserWarning, match=re.escape(
        f"ignoring the unusable CIFAR-FS cache {cached} (its arrays do not match the sha256 digest stored with them)"
    )):
        rebuilt = bm.CIFARFS(fresh, ways=2, queries=1, cache=tmp_path / "cache")
    assert len(decoded) == 2
    np.testing.assert_array_equal(rebuilt.data.images, first.data.images)


def test_the_benchmarks_are_registered_and_a_config_builds_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"miniimagenet", "cifarfs", "cub"} <= set(registry.TASKS)
    accept(monkeypatch, "MINIIMAGENET", miniimagenet(tmp_path))
    monkeypatch.setenv("MODMETA_CACHE", str(tmp_path / "cache"))
    path = Path(__file__).parents[1] / "configs/miniimagenet-protonet-5w1s.yaml"
    c = config.load(path, [f"tasks.root={tmp_path}", "tasks.ways=3", "tasks.queries=2"])
    run = config.build(c)
    assert run.config.model.kwargs["image_size"] == 84 and run.config.model.kwargs["in_channels"] == 3
    assert run.tasks.class_names() == MINI_CLASSES["train"]
