"""Fully connected network, the backbone of MAML's regression experiments."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modmeta.arguments import at_least


class MLP(nn.Module):
    """``in -> hidden[0] -> ... -> hidden[-1] -> out`` with ReLU between layers.

    MAML's sinusoid network is ``MLP(1, 1, hidden=(40, 40))``. The last layer is called
    ``head`` so head-only learners (ANIL) find it.
    """

    def __init__(self, in_features: int, out: int, hidden: Sequence[int] = (40, 40)) -> None:
        super().__init__()
        at_least(1, in_features=in_features, out=out, hidden=list(hidden))
        sizes = [in_features, *hidden]
        self.body = nn.Sequential(
            *(m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU()))
        )
        self.head = nn.Linear(sizes[-1], out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
