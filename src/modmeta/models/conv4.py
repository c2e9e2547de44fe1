"""Conv4, the standard few-shot image backbone (Vinyals et al. 2016; Finn et al. 2017)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from modmeta.arguments import ArgumentError, at_least
from modmeta.models.batchnorm import BatchNorm


class Conv4(nn.Module):
    """Four blocks of [3×3 conv with ``hidden`` filters, BatchNorm, ReLU, downsampling], then a
    linear ``head`` with ``out`` outputs.

    ``downsample="maxpool"`` is the standard block (max-pool 2 after each ReLU, features
    flattened). ``downsample="stride"`` is MAML's Omniglot variant: stride-2 convolutions, no
    pooling, and the features averaged over space before the head. ``features`` overrides how
    the last feature maps reach the head: ``"mean"`` averages them over space, ``"flatten"``
    keeps every position (Reptile's Omniglot network is stride-2 convolutions *flattened*: 256
    features from 2×2 maps of 28×28 images, where MAML's has 64). BatchNorm uses batch
    statistics only (see :mod:`modmeta.models.batchnorm`).

    The max-pool is taken before the ReLU: ReLU is monotone, so ``relu(max(a, b)) ==
    max(relu(a), relu(b))`` exactly, and the gradients agree too (a window whose maximum is not
    positive passes no gradient either way). The ReLU then runs on a quarter of the values, and
    its backward with it: about 11% off a ProtoNet Omniglot iteration on one CPU thread
    (benchmarks/SPEED.md).

    ``out=None`` leaves the head out: the network returns its features, the embedding of the
    metric learners (ProtoNet, Matching Networks; 64 features for 28×28 Omniglot).
    """

    def __init__(
        self,
        out: int | None,
        in_channels: int = 1,
        hidden: int = 64,
        image_size: int = 28,
        downsample: Literal["maxpool", "stride"] = "maxpool",
        features: Literal["flatten", "mean"] | None = None,
    ) -> None:
        super().__init__()
        at_least(1, in_channels=in_channels, hidden=hidden, image_size=image_size, **({} if out is None else {"out": out}))
        if downsample not in ("maxpool", "stride"):
            raise ValueError(f"downsample must be 'maxpool' or 'stride', got {downsample!r}")
        if features not in (None, "flatten", "mean"):
            raise ValueError(f"features must be 'flatten' or 'mean' (default: 'mean' for stride, "
                             f"'flatten' for maxpool), got {features!r}")
        if downsample == "maxpool" and image_size < 16:
            raise ArgumentError("image_size", f"must be >= 16 for four 2x2 max-pools, got {image_size}: "
                                              f"use downsample 'stride' or larger images")
        stride = 2 if downsample == "stride" else 1
        blocks: list[nn.Module] = []
        for i in range(4):
            blocks += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, stride=stride, padding=1), BatchNorm(hidden)]
            if downsample == "maxpool":  # max-pool, then ReLU: see the class docstring
                blocks.append(nn.MaxPool2d(2))
            blocks.append(nn.ReLU())
        self.features = nn.Sequential(*blocks)
        self.average = (features or ("mean" if downsample == "stride" else "flatten")) == "mean"
        with torch.no_grad():
            probe = self._embed(torch.zeros(2, in_channels, image_size, image_size))
        self.head = None if out is None else nn.Linear(probe.shape[1], out)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return h.mean((2, 3)) if self.average else h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._embed(x)
        return h if self.head is None else self.head(h)
