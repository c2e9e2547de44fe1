"""Regression task families: each task is a function drawn from a parametric family."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import TaskBatch

DrawParams = Callable[[int, torch.Generator], torch.Tensor]
Function = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FunctionFamily(TaskFamily):
    """Tasks ``y = f(x; p) + ε``: ``p`` drawn once per task, ``x`` uniform in ``[low, high)``,
    observation noise ``ε ~ N(0, noise²)`` independent per point (none by default).

    ``draw_params(tasks, generator)`` returns a ``[T, P]`` tensor of task parameters and
    ``function(x, p)`` maps ``x: [T, N, x_dim]`` and ``p: [T, P]`` to ``y: [T, N, y_dim]``.
    Any callable family of functions becomes a regression family this way.
    """

    def __init__(
        self,
        function: Function,
        draw_params: DrawParams,
        shots: int,
        queries: int,
        low: float,
        high: float,
        x_dim: int = 1,
        output_size: int = 1,
        noise: float = 0.0,
    ) -> None:
        if not noise >= 0:
            raise ValueError(f"noise is a standard deviation, >= 0; got {noise}")
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be at least 1, got {shots} and {queries}")
        if not high > low:
            raise ValueError(f"the x range needs low < high, got [{low}, {high})")
        self.function = function
        self.draw_params = draw_params
        self.shots = shots
        self.queries = queries
        self.low = low
        self.high = high
        self.x_dim = x_dim
        self.output_size = output_size
        self.noise = noise

    def sample(self, tasks: int, generator: torch.Generator) -> TaskBatch:
        p = self.draw_params(tasks, generator)
        n = self.shots + self.queries
        x = self.low + (self.high - self.low) * torch.rand(tasks, n, self.x_dim, generator=generator)
        y = self.function(x, p)
        if y.shape != (tasks, n, self.output_size):
            raise ValueError(
                f"the family's function returned shape {tuple(y.shape)}, expected "
                f"{(tasks, n, self.output_size)} (tasks, points, output_size)"
            )
        if self.noise:
            y = y + self.noise * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        s = self.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])


class Sinusoid(FunctionFamily):
    """Sinusoid regression of MAML (Finn et al. 2017, section 5.1).

    ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5.0]``, phase ``φ ~ U[0, π]`` and
    ``x ~ U[-5, 5]``; ``shots`` support and ``queries`` query points per task (K and K in
    the paper).
    """

    def __init__(self, shots: int = 10, queries: int = 10) -> None:
        super().__init__(
            function=self._sine, draw_params=self._draw, shots=shots, queries=queries,
            low=-5.0, high=5.0,
        )

    @staticmethod
    def _draw(tasks: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(tasks, 2, generator=generator)
        amplitude = 0.1 + 4.9 * u[:, 0]
        phase = math.pi * u[:, 1]
        return torch.stack([amplitude, phase], dim=1)

    @staticmethod
    def _sine(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return p[:, None, 0:1] * torch.sin(x - p[:, None, 1:2])
