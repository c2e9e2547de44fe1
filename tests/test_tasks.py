"""Task families: the distributions they promise, and seeded determinism."""

from __future__ import annotations

import math

import pytest
import torch

import modmeta as mm


def test_sinusoid_matches_maml_distribution():
    fam = mm.tasks.Sinusoid(shots=10, queries=10)
    b = fam.sample(2000, torch.Generator().manual_seed(0))
    assert b.x_support.shape == (2000, 10, 1) and b.y_query.shape == (2000, 10, 1)
    x = torch.cat([b.x_support, b.x_query], 1)
    y = torch.cat([b.y_support, b.y_query], 1)
    assert x.min() >= -5 and x.max() < 5 and x.min() < -4.9 and x.max() > 4.9
    # Recover amplitude and phase from two points per task: y = A sin(x - phi).
    p = fam._draw(2000, torch.Generator().manual_seed(0))
    assert p[:, 0].min() >= 0.1 and p[:, 0].max() <= 5.0
    assert p[:, 1].min() >= 0 and p[:, 1].max() <= math.pi
    assert y.abs().max() <= 5.0


def test_sinusoid_targets_follow_the_drawn_function():
    fam = mm.tasks.Sinusoid(3, 4)
    b = fam.sample(6, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    p = fam._draw(6, g)
    x = -5 + 10 * torch.rand(6, 7, 1, generator=g)
    torch.testing.assert_close(torch.cat([b.x_support, b.x_query], 1), x)
    torch.testing.assert_close(b.y_support, p[:, None, :1] * torch.sin(b.x_support - p[:, None, 1:]))


def test_same_generator_seed_gives_same_tasks():
    fam = mm.tasks.Sinusoid()
    a = fam.sample(5, torch.Generator().manual_seed(3))
    b = fam.sample(5, torch.Generator().manual_seed(3))
    c = fam.sample(5, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a.tensors(), b.tensors()))
    assert not torch.equal(a.x_support, c.x_support)


def test_function_family_from_any_callable():
    fam = mm.tasks.FunctionFamily(
        function=lambda x, p: p[:, None, :1] * x + p[:, None, 1:],
        draw_params=lambda n, g: torch.rand(n, 2, generator=g),
        shots=4, queries=3, low=0.0, high=1.0,
    )
    b = fam.sample(2, torch.Generator().manual_seed(0))
    assert b.x_support.shape == (2, 4, 1) and b.x_query.shape == (2, 3, 1)
    with pytest.raises(ValueError, match="returned shape"):
        mm.tasks.FunctionFamily(lambda x, p: x[..., 0], lambda n, g: torch.rand(n, 1, generator=g),
                                2, 2, 0.0, 1.0).sample(2, torch.Generator())
    with pytest.raises(ValueError, match="noise is a standard deviation"):
        mm.tasks.FunctionFamily(lambda x, p: x, lambda n, g: torch.rand(n, 1, generator=g), 2, 2, 0.0, 1.0,
                                noise=-0.1)


def test_classification_episodes_are_class_consistent():
    x = torch.arange(60, dtype=torch.float32).view(60, 1) * 1.0
    y = torch.arange(60) // 6  # 10 classes, example value // 6 is its class
    fam = mm.tasks.ClassificationFamily(x, y, ways=3, shots=2, queries=4)
    b = fam.sample(8, torch.Generator().manual_seed(0))
    assert b.x_support.shape == (8, 6, 1) and b.x_query.shape == (8, 12, 1)
    for t in range(8):
        xs, ys, xq, yq = (v[t] for v in b.tensors())
        cls_of = {}
        for xv, yv in zip(torch.cat([xs, xq]).flatten().tolist(), torch.cat([ys, yq]).tolist()):
            cls_of.setdefault(yv, set()).add(int(xv) // 6)
        assert all(len(s) == 1 for s in cls_of.values()) and len(cls_of) == 3
        assert len({next(iter(s)) for s in cls_of.values()}) == 3  # distinct classes
        assert len(set(torch.cat([xs, xq]).flatten().tolist())) == 18  # no repeated example


def test_rotations_make_new_classes():
    x = torch.zeros(8, 1, 3, 3)
    x[:, 0, 0, 0] = 1.0  # a mark in the top-left corner
    y = torch.arange(8) // 4
    fam = mm.tasks.ClassificationFamily(x, y, ways=8, shots=1, queries=1, rotations=4)
    assert fam.num_classes == 8
    b = fam.sample(1, torch.Generator().manual_seed(0))
    corners = {tuple(img[0].nonzero().flatten().tolist()) for img in b.x_support[0]}
    assert corners == {(0, 0), (0, 2), (2, 0), (2, 2)}


def test_task_batch_rejects_mismatched_task_axes():
    with pytest.raises(ValueError, match="same task axis"):
        mm.tasks.TaskBatch(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.zeros(3, 3, 1), torch.zeros(3, 3, 1))
