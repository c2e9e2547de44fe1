"""Running a module on a dict of parameters: the functional core of every learner.

Parameters travel as plain dicts of tensors (``dict(model.named_parameters())``) and a
module is run on any such dict with ``torch.func.functional_call``: an inner loop makes new
dicts and never mutates or deep-copies the user's module.

``functional_call`` swaps the module's parameters in and out while it runs, and a batch norm
reads which rows to take its statistics from off the module, so two threads must not run one
module at once. The ``"threads"`` execution (:mod:`modmeta.meta.execution`) runs each worker
thread inside :func:`replicas`: there :func:`local` gives the thread its own copy of each
module it runs, sharing the parameter and buffer tensors (so gradients reach the originals).
Per-task code reaches modules through :func:`forward` or :func:`local`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]

_thread = threading.local()  # .replicas: {id(module): (module, its copy)} inside replicas()


def parameters(model: nn.Module) -> Params:
    """The module's own parameters, by name (the tensors themselves, not copies)."""
    return dict(model.named_parameters())


@contextmanager
def replicas() -> Iterator[None]:
    """Inside the block, :func:`local` gives this thread its own copy of each module (made on
    first use, dropped on exit, so a copy never outlives the parameters it shares)."""
    _thread.replicas = {}
    try:
        yield
    finally:
        del _thread.replicas


def local(model: nn.Module) -> nn.Module:
    """``model`` itself, or inside :func:`replicas` this thread's copy of it: the same parameter
    and buffer tensors in new module objects, whose attributes this thread alone changes."""
    table = getattr(_thread, "replicas", None)
    if table is None:
        return model
    if id(model) not in table:
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
        table[id(model)] = (model, copy.deepcopy(model, shared))  # the original kept: its id stays its own
    return table[id(model)][1]


def forward(model: nn.Module, params: Params, *inputs: torch.Tensor) -> torch.Tensor:
    """``model(*inputs)`` with ``params`` in place of the module's parameters."""
    return functional_call(local(model), params, inputs)
