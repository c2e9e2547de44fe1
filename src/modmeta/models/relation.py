"""The two networks of Relation Networks (Sung et al., CVPR 2018, figure 2).

The embedding keeps spatial feature maps (the relation module compares maps, not vectors):
four blocks of [3×3 conv with ``hidden`` filters, BatchNorm, ReLU], the first two unpadded
and followed by 2×2 max-pooling, the last two padded and not pooled; a 28×28 Omniglot image
becomes ``[hidden, 5, 5]``. The relation module scores a pair of concatenated maps with two
[3×3 conv, BatchNorm, ReLU, max-pool] blocks, a ReLU layer of ``hidden`` units and a sigmoid
unit. BatchNorm uses batch statistics only (see :mod:`modmeta.models.batchnorm`).

Both networks start from the initialisation of the authors' code (LearningToCompare_FSL):
convolutions ``N(0, 2 / (3·3·out_channels))`` with zero bias, linear layers ``N(0, 0.01)``
with bias 1. On Omniglot 5-way 1-shot it trains faster than torch's default initialisation
(benchmarks/metric_learners.md).
"""

from __future__ import annotations

import torch
from torch import nn

from modmeta.arguments import at_least
from modmeta.models.batchnorm import BatchNorm


def _block(cin: int, cout: int, padding: int, pool: bool) -> list[nn.Module]:
    """[conv, BatchNorm, ReLU, max-pool], the pool taken before the ReLU: the same function
    (see :class:`modmeta.models.Conv4`), with the ReLU on a quarter of the values."""
    return [nn.Conv2d(cin, cout, 3, padding=padding), BatchNorm(cout), *([nn.MaxPool2d(2)] if pool else []), nn.ReLU()]


def _authors_init(module: nn.Module) -> None:
    """The authors' initialisation of one layer (see the module docstring)."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        nn.init.ones_(module.bias)


class RelationEmbedding(nn.Module):
    """``f_φ``: ``[N, in_channels, H, W] -> [N, hidden, H', W']`` (``[N, 64, 5, 5]`` for Omniglot)."""

    def __init__(self, in_channels: int = 1, hidden: int = 64) -> None:
        super().__init__()
        at_least(1, in_channels=in_channels, hidden=hidden)
        self.features = nn.Sequential(
            *_block(in_channels, hidden, 0, True), *_block(hidden, hidden, 0, True),
            *_block(hidden, hidden, 1, False), *_block(hidden, hidden, 1, False),
        )
        self.apply(_authors_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class RelationModule(nn.Module):
    """``g_ϕ``: pairs of maps ``[P, 2·channels, H, W]`` -> relation scores ``[P]`` in ``(0, 1)``.

    After the two pooled blocks the maps are averaged over space, which is the paper's
    flattening when they are 1×1 (Omniglot: 5×5 -> 2×2 -> 1×1) and lets any map size through.
    """

    def __init__(self, channels: int = 64, hidden: int = 8) -> None:
        super().__init__()
        at_least(1, channels=channels, hidden=hidden)
        self.features = nn.Sequential(*_block(2 * channels, channels, 1, True),
                                      *_block(channels, channels, 1, True))
        self.score = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1),
                                   nn.Sigmoid())
        self.apply(_authors_init)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(pairs).mean((2, 3))).squeeze(-1)
