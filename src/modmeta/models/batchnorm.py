"""Batch normalisation written from mean and variance, with batch statistics only.

MAML normalises every forward pass with the statistics of the batch it is given and keeps no
running averages: the support set is normalised with support statistics, and the query set
with query statistics (transductive over the query set, as MAML and its reference code do).
Which statistics normalise the queries is a learner's ``batchnorm`` choice
(:data:`STATISTICS`, applied by :func:`normalised`):

- ``"transductive"``: each call is normalised by its own batch, so the queries by the query
  set's statistics: a query's prediction depends on the other queries (MAML's and Reptile's
  transductive protocol, and what the reference code of MAML does);
- ``"support"``: the queries are normalised by the support set's statistics, computed in the
  same forward pass (so they follow the parameters being used, adapted or not): a query's
  prediction depends on the support set and itself only (non-transductive).
``torch.nn.BatchNorm2d`` under ``torch.func.vmap`` gave a wrong second-order meta-gradient in
torch 2.13, so under ``vmap`` this layer is built from differentiable primitives, which is
exact; everywhere else (the looped execution, evaluation, the metric learners) it calls torch's
fused kernel (``F.batch_norm`` without running statistics), which computes the same thing in
about half the time of a Conv4 meta-iteration the primitives took (issue 12).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from modmeta.models.functional import Params, forward, local


def under_vmap() -> bool:
    """Whether the caller runs inside ``torch.func.vmap`` (at any level of nested transforms)."""
    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


Statistics = Literal["transductive", "support"]
STATISTICS: tuple[str, ...] = ("transductive", "support")


class BatchNorm(nn.Module):
    """Normalise over every axis but the channel axis (1), then scale and shift per channel.

    The statistics are those of the whole batch, or of its first ``rows`` examples while
    :func:`statistics_from_first` says so (every example is normalised by them).
    """

    rows: int | None = None

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None and not under_vmap():
            return fused(x, self.weight, self.bias, self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, self.num_features] + [1] * (x.dim() - 2)
        reference = x if self.rows is None else x[: self.rows]
        mean = reference.mean(dims, keepdim=True)
        var = (reference - mean).pow(2).mean(dims, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            x = x * self.weight.view(shape) + self.bias.view(shape)
        return x

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


def fused(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Batch normalisation of ``x`` (channels on axis 1) by its own batch statistics, in torch's
    fused kernel. A channels-last ``x`` (channels innermost in memory) goes in as the 2-D view
    ``(examples × positions, channels)`` of the same memory and comes back as a view of ``x``'s
    shape: the same statistics, the same numbers to rounding, and ATen's double backward of
    batch norm (second order through a support pass) then reduces over one contiguous axis,
    where on the 4-D channels-last tensor it first sums over the batch axis alone into an NCHW
    result, 6x slower (1.6-2.2x over forward, backward and double backward of a Conv4 layer:
    benchmarks/SPEED.md)."""
    if x.dim() > 2:
        order = (0, *range(2, x.dim()), 1)
        innermost = x.permute(order)
        if innermost.is_contiguous():
            flat = F.batch_norm(innermost.reshape(-1, x.shape[1]), None, None, weight, bias, training=True, eps=eps)
            return flat.view(innermost.shape).permute(0, x.dim() - 1, *range(1, x.dim() - 1))
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


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
            like = next(child.parameters(), None)
            if like is not None:  # the layer's dtype and device, not the default float32
                new.to(device=like.device, dtype=like.dtype)
            if child.affine:
                with torch.no_grad():
                    new.weight.copy_(child.weight)
                    new.bias.copy_(child.bias)
            setattr(module, name, new)
        else:
            replace_batchnorm(child)
    return module


@contextmanager
def statistics_from_first(model: nn.Module, rows: int) -> Iterator[None]:
    """Inside the ``with`` block, every :class:`BatchNorm` of ``model`` normalises its whole
    batch by the statistics of the batch's first ``rows`` examples (a learner's own copy of
    the model: the attribute is restored on exit)."""
    layers = [m for m in model.modules() if isinstance(m, BatchNorm)]
    for layer in layers:
        layer.rows = rows
    try:
        yield
    finally:
        for layer in layers:
            layer.rows = None


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a :class:`BatchNorm` (only then do the statistics matter)."""
    return any(isinstance(m, BatchNorm) for m in model.modules())


def check_statistics(batchnorm: str) -> str:
    """``batchnorm`` if it is one of :data:`STATISTICS`; else a ``ValueError`` naming them."""
    if batchnorm not in STATISTICS:
        raise ValueError(f"batchnorm must be one of {', '.join(map(repr, STATISTICS))}, got {batchnorm!r}")
    return batchnorm


def normalised(model: nn.Module, params: Params | None, x: torch.Tensor, support: torch.Tensor | None,
               batchnorm: Statistics) -> torch.Tensor:
    """``model`` run on ``x`` (with ``params`` in place of its parameters, or its own for
    ``None``) under the batch statistics ``batchnorm`` says: ``x``'s own (``"transductive"``)
    or those of ``support`` (``"support"``, found by running the model on ``support`` and ``x``
    together, the support set first, at a cost of ``len(support)`` more rows). A model without
    :class:`BatchNorm` is run on ``x`` alone. The module run is this thread's (:func:`local`)."""
    module = local(model)

    def call(inputs: torch.Tensor) -> torch.Tensor:
        return module(inputs) if params is None else forward(model, params, inputs)

    if batchnorm == "transductive" or not has_batchnorm(module):
        return call(x)
    if support is None:
        raise ValueError(
            "this learner normalises queries by the support set's batch statistics "
            "(batchnorm='support'): pass the support inputs, predict(state, x, support=x_support)"
        )
    n = support.shape[0]
    with statistics_from_first(module, n):
        return call(torch.cat([support, x]))[n:]


def predicted(predict: Callable[..., torch.Tensor], state: Any, x: torch.Tensor,
              support: torch.Tensor, batchnorm: Statistics) -> torch.Tensor:
    """A learner's ``predict(state, x)``, given ``support=support`` only under
    ``batchnorm="support"``: a subclass whose ``predict`` was written without the support
    argument keeps working with the transductive statistics."""
    return predict(state, x, support=support) if batchnorm == "support" else predict(state, x)
