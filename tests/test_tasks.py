"""Task families: the distributions they promise, and seeded determinism."""

from __future__ import annotations

import math

import pytest
import torch

import modmeta as mm


def uniform_ks(values: torch.Tensor, low: float, high: float) -> float:
    """Kolmogorov-Smirnov distance of ``values`` from the uniform distribution on ``[low, high]``."""
    v = ((values.sort().values - low) / (high - low)).double()
    n = len(v)
    return max((torch.arange(1, n + 1) / n - v).max().item(), (v - torch.arange(n) / n).max().item())


def test_sinusoid_matches_maml_distribution():
    fam = mm.tasks.Sinusoid(shots=10, queries=10)
    b = fam.sample(2000, torch.Generator().manual_seed(0))
    assert b.x_support.shape == (2000, 10, 1) and b.y_query.shape == (2000, 10, 1)
    x = torch.cat([b.x_support, b.x_query], 1).double()
    y = torch.cat([b.y_support, b.y_query], 1).double()
    assert x.min() >= -5 and x.max() < 5 and x.min() < -4.9 and x.max() > 4.9
    assert uniform_ks(x.flatten(), -5.0, 5.0) < 0.01  # x ~ U[-5, 5): 0.1% critical distance at n = 40000
    # Recover amplitude and phase from each task's points alone: y = A sin(x - phi) =
    # a sin x + b cos x with a = A cos phi, b = -A sin phi, linear in (a, b): least squares.
    design = torch.cat([torch.sin(x), torch.cos(x)], 2)  # [tasks, points, 2]
    a, b_ = torch.linalg.lstsq(design, y).solution[..., 0].unbind(1)
    amplitude, phase = torch.hypot(a, b_), torch.atan2(-b_, a)
    assert (design @ torch.stack([a, b_], 1)[..., None] - y).abs().max() < 1e-5  # noiseless: exact fits
    drawn = fam._draw(2000, torch.Generator().manual_seed(0)).double()  # what the sample drew first
    torch.testing.assert_close(amplitude, drawn[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(phase, drawn[:, 1], rtol=0, atol=1e-5)
    # A ~ U[0.1, 5.0], phi ~ U[0, pi] (Finn et al. 2017, section 5.1).
    assert amplitude.min() >= 0.1 - 1e-5 and amplitude.max() <= 5.0 + 1e-5
    assert phase.min() >= -1e-5 and phase.max() <= math.pi + 1e-5
    assert amplitude.min() < 0.12 and amplitude.max() > 4.98 and phase.min() < 0.02 and phase.max() > math.pi - 0.02
    # Kolmogorov-Smirnov: at n = 2000 the 0.1% critical distance is 1.95 / sqrt(2000) = 0.044.
    assert uniform_ks(amplitude, 0.1, 5.0) < 0.044 and uniform_ks(phase, 0.0, math.pi) < 0.044
    assert y.abs().max() <= 5.0


def test_sinusoid_targets_follow_the_drawn_function():
    fam = mm.tasks.Sinusoid(3, 4)
    b = fam.sample(6, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    p = fam._draw(6, g)
    x = -5 + 10 * torch.rand(6, 7, 1, generator=g)
    torch.testing.assert_close(torch.cat([b.x_support, b.x_query], 1), x)
    torch.testing.assert_close(b.y_support, p[:, None, :1] * torch.sin(b.x_support - p[:, None, 1:]))
    torch.testing.assert_close(b.y_query, p[:, None, :1] * torch.sin(b.x_query - p[:, None, 1:]))


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
    p = torch.rand(2, 2, generator=torch.Generator().manual_seed(0))  # the parameters drawn first
    for xs, ys in ((b.x_support, b.y_support), (b.x_query, b.y_query)):
        assert xs.min() >= 0.0 and xs.max() < 1.0
        torch.testing.assert_close(ys, p[:, None, :1] * xs + p[:, None, 1:])
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
