"""ClassificationFamily on a user's own arrays: episodes, rotations, class splits, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modmeta.tasks.labelled import ClassificationFamily, split_classes

torch.set_num_threads(1)


def tagged(classes: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples that say who they are: x[i] = [class, example index], y[i] = class."""
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.stack([y, torch.arange(classes * per_class)], dim=1).float()
    return x, y


def test_episode_labels_follow_the_classes() -> None:
    x, y = tagged(classes=12, per_class=7)
    family = ClassificationFamily(x, y, ways=4, shots=2, queries=3)
    batch = family.sample(20, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (20, 8, 2) and batch.x_query.shape == (20, 12, 2)
    for t in range(20):
        support_class = {}
        for xs, label in zip(batch.x_support[t], batch.y_support[t].tolist(), strict=True):
            assert support_class.setdefault(label, xs[0].item()) == xs[0].item()
        assert sorted(support_class) == [0, 1, 2, 3]
        assert len(set(support_class.values())) == 4, "an episode's classes must be distinct"
        for xq, label in zip(batch.x_query[t], batch.y_query[t].tolist(), strict=True):
            assert xq[0].item() == support_class[label], "a query carries its support class's label"
        ids = torch.cat([batch.x_support[t, :, 1], batch.x_query[t, :, 1]])
        assert ids.unique().numel() == ids.numel(), "support and query examples must not repeat"


def test_rotations_are_new_classes_consistent_within_a_class() -> None:
    # Each example is a 4x4 image with one lit pixel: where it sits tells the rotation,
    # its value tells the class.
    classes, per_class = 3, 5
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.zeros(classes * per_class, 1, 4, 4)
    x[:, 0, 0, 1] = (y + 1).float()
    family = ClassificationFamily(x, y, ways=5, shots=1, queries=2, rotations=4)
    assert family.num_classes == 12
    marks = {tuple(torch.nonzero(torch.rot90(x[0, 0], k))[0].tolist()): k for k in range(4)}
    assert len(marks) == 4
    seen = set()
    batch = family.sample(30, torch.Generator().manual_seed(1))
    for t in range(30):
        imgs = torch.cat([batch.x_support[t], batch.x_query[t]])
        labels = torch.cat([batch.y_support[t], batch.y_query[t]]).tolist()
        per_label = {}
        for img, label in zip(imgs, labels, strict=True):
            (pos,) = torch.nonzero(img[0]).tolist()
            key = (int(img[0].max().item()) - 1, marks[tuple(pos)])  # (class, turn)
            assert per_label.setdefault(label, key) == key, "a class keeps one rotation across the episode"
            seen.add(key)
        assert len(set(per_label.values())) == 5
    assert {turn for _, turn in seen} == {0, 1, 2, 3}
    assert len(seen) == 12


def test_same_generator_seed_same_batch() -> None:
    x, y = tagged(classes=10, per_class=6)
    family = ClassificationFamily(x, y, ways=3, shots=1, queries=2)
    a = family.sample(5, torch.Generator().manual_seed(7))
    b = family.sample(5, torch.Generator().manual_seed(7))
    c = family.sample(5, torch.Generator().manual_seed(8))
    assert all(torch.equal(p, q) for p, q in zip(a.tensors(), b.tensors(), strict=True))
    assert not torch.equal(a.x_query, c.x_query)


def test_too_few_examples_names_the_class() -> None:
    x, y = tagged(classes=4, per_class=6)
    keep = ~((y == 2) & (x[:, 1] % 6 >= 3))  # class 2 keeps 3 of its 6 examples
    with pytest.raises(ValueError, match=r"class 2 has 3 examples.*shots \+ queries = 1 \+ 3 = 4"):
        ClassificationFamily(x[keep], y[keep], ways=2, shots=1, queries=3)


def test_npz_family_with_class_splits(tmp_path: Path) -> None:
    x, y = tagged(classes=20, per_class=5)
    path = tmp_path / "mine.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    train = ClassificationFamily.from_npz(path, ways=2, shots=1, queries=2, val=0.2, test=5, split_seed=3)
    val, test = train.split("val"), train.split("test")
    assert (len(train.labels), len(val.labels), len(test.labels)) == (11, 4, 5)
    assert set(train.labels).isdisjoint(val.labels) and set(train.labels).isdisjoint(test.labels)
    assert set(val.labels).isdisjoint(test.labels)
    assert set(train.labels) | set(val.labels) | set(test.labels) == set(range(20))
    assert val.x is train.x, "splits share the arrays"
    assert train.split("train").labels == train.labels
    batch = val.sample(50, torch.Generator().manual_seed(0))
    assert set(batch.x_support[..., 0].unique().long().tolist()) <= set(val.labels)
    again = ClassificationFamily.from_npz(
        path, ways=2, shots=1, queries=2, val=0.2, test=5, split_seed=3, split="test"
    )
    assert again.labels == test.labels


def test_npz_key_names_and_missing_keys(tmp_path: Path) -> None:
    x, y = tagged(classes=5, per_class=4)
    path = tmp_path / "data.npz"
    np.savez(path, images=x.numpy(), targets=y.numpy())
    family = ClassificationFamily.from_npz(path, 2, 1, 1, x_key="images", y_key="targets")
    assert family.num_classes == 5
    with pytest.raises(KeyError, match=r"no array named 'x'.*\['images', 'targets'\]"):
        ClassificationFamily.from_npz(path, 2, 1, 1)


def test_without_splits_val_and_test_refuse_to_reuse_training_classes() -> None:
    x, y = tagged(classes=5, per_class=4)
    family = ClassificationFamily(x, y, ways=2, shots=1, queries=1)
    assert family.split("train") is not None and family.split("train").labels == family.labels
    with pytest.raises(ValueError, match=r"unknown split 'val'.*splits=.*split_classes"):
        family.split("val")
    with pytest.raises(ValueError, match="use 'train', 'val' or 'test'"):
        family.split("evaluation")


def test_splits_must_be_disjoint_and_large_enough() -> None:
    x, y = tagged(classes=8, per_class=4)
    with pytest.raises(ValueError, match=r"class 3 is in both split 'train' and split 'val'"):
        ClassificationFamily(x, y, 2, 1, 1, splits={"train": [0, 1, 2, 3], "val": [3, 4]})
    with pytest.raises(ValueError, match=r"3-way episodes need at least 3 classes, the data split 'test' has 2"):
        ClassificationFamily(x, y, 3, 1, 1, splits={"train": [0, 1, 2, 3], "test": [4, 5]}).split("test")
    with pytest.raises(ValueError, match="either classes or splits"):
        ClassificationFamily(x, y, 2, 1, 1, classes=[0, 1], splits={"train": [0, 1]})


def test_split_classes_is_seeded_and_counts_right() -> None:
    y = np.repeat(np.arange(100, 150), 3)
    a = split_classes(y, val=0.1, test=0.2, seed=0)
    assert {k: len(v) for k, v in a.items()} == {"train": 35, "val": 5, "test": 10}
    assert a == split_classes(y, val=0.1, test=0.2, seed=0)
    assert a != split_classes(y, val=0.1, test=0.2, seed=1)
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(100, 150))
    assert "val" not in split_classes(y, val=0, test=3)
    with pytest.raises(ValueError, match="leaves none to train on"):
        split_classes(y, val=25, test=25)


@pytest.mark.parametrize("rotated_repeats", [False, True])
def test_an_episode_holds_each_class_once_unless_rotated_repeats_are_allowed(rotated_repeats) -> None:
    # 20 classes of 4x4 images whose single lit pixel's value names the class; 20-way episodes
    # with rotations=4 draw from 80 rotated classes.
    classes, per_class = 20, 3
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.zeros(classes * per_class, 1, 4, 4)
    x[:, 0, 0, 1] = (y + 1).float()
    family = ClassificationFamily(x, y, ways=20, shots=1, queries=1, rotations=4, rotated_repeats=rotated_repeats)
    batch = family.sample(50, torch.Generator().manual_seed(0))
    bases = batch.x_support.flatten(2).max(-1).values.long() - 1  # [episodes, ways]
    repeated = sum(len(set(row.tolist())) < 20 for row in bases)
    if rotated_repeats:
        assert repeated > 0  # drawing 20 of 80 rotated classes repeats a class in almost every episode
    else:
        assert repeated == 0 and all(sorted(row.tolist()) == list(range(20)) for row in bases)
        turns = {tuple(torch.nonzero(img[0])[0].tolist()) for img in batch.x_support.flatten(0, 1)}
        assert len(turns) == 4  # each class still shows up in all four rotations across episodes
    with pytest.raises(ValueError, match="21-way episodes need at least 21 classes"):
        ClassificationFamily(x, y, ways=21, shots=1, queries=1, rotations=4, rotated_repeats=False)
