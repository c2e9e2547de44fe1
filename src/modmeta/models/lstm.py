"""An LSTM cell written from matrix products, so that it runs under ``torch.func.vmap``.

``torch.nn.LSTMCell`` and ``torch.nn.LSTM`` call fused kernels that have no batching rule in
torch 2.13 (``vmap`` raises), so the Matching Networks' context embeddings use this cell.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMCell(nn.Module):
    """``torch.nn.LSTMCell``'s equations and initialisation, one bias instead of two:

    ``i, f, g, o = split(W_ih x + W_hh h + b)``, ``c' = σ(f) c + σ(i) tanh(g)``,
    ``h' = σ(o) tanh(c')``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        k = hidden_size ** -0.5
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size).uniform_(-k, k))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size).uniform_(-k, k))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-k, k))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from ``state = (h, c)``; returns the new ``(h, c)``."""
        h, c = state
        i, f, g, o = (x @ self.weight_ih.T + h @ self.weight_hh.T + self.bias).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
