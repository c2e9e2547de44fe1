"""Batch normalisation written from mean and variance, with batch statistics only.

MAML normalises every forward pass with the statistics of the batch it is given and keeps no
running averages: the support set is normalised with support statistics, and the query set
with query statistics (transductive over the query set, as MAML and its reference code do).
``torch.nn.BatchNorm2d`` under ``torch.func.vmap`` gave a wrong second-order meta-gradient in
torch 2.13, so under ``vmap`` this layer is built from differentiable primitives, which is
exact; everywhere else (the looped execution, evaluation, the metric learners) it calls torch's
fused kernel (``F.batch_norm`` without running statistics), which computes the same thing in
about half the time of a Conv4 meta-iteration the primitives took (issue 12).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters


def under_vmap() -> bool:
    """Whether the caller runs inside ``torch.func.vmap`` (at any level of nested transforms)."""
    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


class BatchNorm(nn.Module):
    """Normalise over every axis but the channel axis (1), then scale and shift per channel."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not under_vmap():
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, self.num_features] + [1] * (x.dim() - 2)
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).pow(2).mean(dims, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            x = x * self.weight.view(shape) + self.bias.view(shape)
        return x

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


def replace_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm1d/2d/3d`` in ``module`` for :class:`BatchNorm`, in place.

    Affine weights are copied; running statistics are dropped, since meta-learning
    normalises each task's batch with its own statistics. Returns ``module``. Learners call it
    on a copy of the user's model, after refusing what it cannot convert exactly
    (:func:`modmeta.models.safety.functional_copy`).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = BatchNorm(child.num_features, eps=child.eps, affine=child.affine)
            if child.affine:
                with torch.no_grad():
                    new.weight.copy_(child.weight)
                    new.bias.copy_(child.bias)
            new.to(device=next(child.parameters(), torch.empty(0)).device)
            setattr(module, name, new)
        else:
            replace_batchnorm(child)
    return module
