"""A task family whose truth is known: a fixed random teacher network in which one layer varies.

Every task is the same ReLU network ``x_dim → hidden[0] → ... → 1`` except for layer
``layer``, whose weights and bias are drawn per task around the teacher's,
``W_t = W̄ + spread · N(0, 1/fan_in)``, and the targets carry observation noise of standard
deviation ``noise``. A learner that finds task-specific modules (shrinkage,
Chen et al. 2020) should find that layer and no other: with a student of the same shape
(:class:`modmeta.models.MLP`), layer ``i`` is the student's ``body.{2i}`` and the last one its
``head``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modmeta.arguments import at_least
from modmeta.models.mlp import MLP
from modmeta.tasks.functions import FunctionFamily


class TeacherFamily(FunctionFamily):
    """Regression on ``x ~ U[low, high)^x_dim`` by a teacher whose layer ``layer`` is per task.

    The teacher's weights are drawn from ``N(0, 1/fan_in)`` (features and loss curvature of
    order one) by a generator seeded with ``seed``: families with the same arguments share it.
    """

    def __init__(self, layer: int = -1, hidden: Sequence[int] = (40, 40), x_dim: int = 1, shots: int = 10,
                 queries: int = 10, spread: float = 1.0, seed: int = 0, low: float = -2.0,
                 high: float = 2.0, noise: float = 0.0) -> None:
        at_least(1, x_dim=x_dim, hidden=list(hidden))
        at_least(0, spread=spread, noise=noise)
        if not low < high:
            raise ValueError(f"the inputs' range needs low < high, got low={low}, high={high}")
        sizes = [x_dim, *hidden, 1]
        n_layers = len(sizes) - 1
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"layer must be in [-{n_layers}, {n_layers}) for hidden={list(hidden)}, got {layer}")
        self.layer = layer % n_layers
        self.spread = spread
        g = torch.Generator().manual_seed(seed)
        self.weights = [torch.randn(b, a, generator=g) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]
        self.biases = [0.1 * torch.randn(b, generator=g) for b in sizes[1:]]
        super().__init__(function=self._teacher, draw_params=self._draw, shots=shots, queries=queries,
                         low=low, high=high, x_dim=x_dim, noise=noise)

    def teacher(self) -> MLP:
        """The teacher as an :class:`modmeta.models.MLP`, its varying layer at the mean ``W̄``."""
        net = MLP(self.x_dim, 1, [w.shape[0] for w in self.weights[:-1]])
        layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for m, w, b in zip(layers, self.weights, self.biases):
                m.weight.copy_(w)
                m.bias.copy_(b)
        return net

    def _draw(self, tasks: int, generator: torch.Generator) -> torch.Tensor:
        """``[T, P]``: each task's weights and bias of the varying layer, flattened."""
        w, b = self.weights[self.layer], self.biases[self.layer]
        scale = self.spread / w.shape[1] ** 0.5
        dw = torch.randn(tasks, *w.shape, generator=generator) * scale
        db = torch.randn(tasks, *b.shape, generator=generator) * scale
        return torch.cat([(w + dw).flatten(1), b + db], dim=1)

    def _teacher(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        h = x  # [T, N, in]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i == self.layer:
                n = w.numel()
                w = p[:, :n].view(-1, *w.shape)
                b = p[:, n:]
                h = torch.einsum("tni,toi->tno", h, w) + b[:, None, :]
            else:
                h = h @ w.T + b
            if i < last:
                h = torch.relu(h)
        return h
