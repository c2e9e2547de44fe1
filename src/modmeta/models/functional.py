"""Running a module on a dict of parameters: the functional core of every learner.

Parameters travel as plain dicts of tensors (``dict(model.named_parameters())``) and a
module is run on any such dict with ``torch.func.functional_call``: an inner loop makes new
dicts and never mutates or deep-copies the module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def parameters(model: nn.Module) -> Params:
    """The module's own parameters, by name (the tensors themselves, not copies)."""
    return dict(model.named_parameters())


def forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``params`` in place of the module's parameters."""
    return functional_call(model, params, (x,))
