"""Checks and data shared by several test files."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import modmeta as mm

DT = torch.float64


def sine_batch(tasks: int = 4, seed: int = 0) -> mm.tasks.TaskBatch:
    """Sinusoid tasks of 5 support and 7 query points, in float64."""
    return mm.tasks.Sinusoid(5, 7).sample(tasks, torch.Generator().manual_seed(seed)).to("cpu", DT)


def tiny_mlp() -> torch.nn.Module:
    """A seeded float64 MLP 1 -> 8 -> 8 -> 1."""
    torch.manual_seed(0)
    return mm.models.MLP(1, 1, (8, 8)).to(DT)


def meta_grads(learner: mm.learners.Learner, batch: mm.tasks.TaskBatch) -> dict[str, torch.Tensor]:
    """One meta-gradient of ``learner`` on ``batch``: a copy of each parameter's ``.grad``."""
    learner.zero_grad()
    learner.meta_backward(batch)
    return {n: p.grad.clone() for n, p in learner.named_parameters()}


def assert_matches_finite_differences(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                                      loss: Callable[[], float], seed: int, directions: int = 3,
                                      abs: float = 1e-9) -> None:
    """``grads · v`` equals the central difference of ``loss`` along random directions ``v``.

    ``params`` are perturbed in place (and restored); ``loss()`` reads them.
    """
    gen = torch.Generator().manual_seed(seed)
    eps = 1e-6
    for _ in range(directions):
        direction = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p += eps * direction[n]
            plus = loss()
            for n, p in params.items():
                p -= 2 * eps * direction[n]
            minus = loss()
            for n, p in params.items():
                p += eps * direction[n]
        analytic = sum((grads[n] * direction[n]).sum() for n in params).item()
        assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=abs)


def linear_batch(tasks: int = 3, dim: int = 3, shots: int = 10, seed: int = 0) -> mm.tasks.TaskBatch:
    """Noisy linear-regression tasks in float64 (closed-form inner problems)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(tasks, dim, 1, generator=g, dtype=DT)
    x = torch.randn(tasks, 2 * shots, dim, generator=g, dtype=DT)
    y = x @ w + 0.3 + 0.1 * torch.randn(tasks, 2 * shots, 1, generator=g, dtype=DT)
    return mm.tasks.TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
