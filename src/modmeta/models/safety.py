"""What a learner does to the user's model before running it functionally, and the checks
that turn the ways it can fail into one readable error.

A learner never changes the module it is given: it works on :func:`functional_copy`, a deep
copy whose ``nn.BatchNorm*`` layers are replaced by :class:`modmeta.models.BatchNorm`.
Layers that cannot be converted exactly are refused by :func:`check_layers`, with their path
in the model and what to do. Every task runs on the same module under ``torch.func``, so a
forward pass may not write the module's own state: :func:`check_stateless` runs the model once
and names a buffer that its forward updates, before ``torch.func`` fails on it with an error
about captured tensors. :func:`check_outputs` compares the model's output width with the
tasks' ways (or target width).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from modmeta import losses
from modmeta.models.batchnorm import replace_batchnorm

# torch's own BatchNorm classes, whose forward modmeta.models.BatchNorm reproduces with batch
# statistics; SyncBatchNorm computes the same statistics across processes.
_TORCH_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_FIX_BATCHNORM = ("use a plain nn.BatchNorm2d (or 1d/3d) or modmeta.models.BatchNorm there, or move the extra "
                  "behaviour into a separate layer")


def _describe(path: str, module: nn.Module) -> str:
    return f"layer {path or '(the model itself)'} ({type(module).__module__}.{type(module).__qualname__})"


def check_layers(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first layer of ``model`` modmeta cannot run exactly.

    Refused: a subclass of a BatchNorm with its own ``forward`` (replacing it by
    :class:`~modmeta.models.BatchNorm` would drop its extra behaviour), an instance norm that
    tracks running statistics (it updates them in every forward), and a lazy layer whose
    parameters are not created yet (there is nothing to copy or meta-learn).
    """
    for path, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own_forward = type(module).forward is not nn.modules.batchnorm._BatchNorm.forward
            if own_forward and type(module) not in _TORCH_BATCHNORM:
                raise ValueError(
                    f"{_describe(path, module)} is a BatchNorm with its own forward: modmeta replaces "
                    f"BatchNorm layers by modmeta.models.BatchNorm (batch statistics, no running averages), "
                    f"which would silently drop that forward; {_FIX_BATCHNORM}"
                )
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
            raise ValueError(
                f"{_describe(path, module)} tracks running statistics, which it updates in every "
                f"forward pass and torch.func cannot do per task: build it with track_running_stats=False"
            )
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise ValueError(
                f"{_describe(path, module)} has not created its parameters yet: run the model once on "
                f"an example batch before giving it to a learner"
            )


def functional_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its BatchNorm layers replaced by
    :class:`~modmeta.models.BatchNorm`, after :func:`check_layers`; ``model`` is unchanged."""
    check_layers(model)
    return replace_batchnorm(copy.deepcopy(model))


def check_stateless(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model(x)`` in training and evaluation mode without gradients and return the
    training-mode output; raise ``ValueError`` naming a buffer the forward pass writes.

    The random number generators are restored afterwards, so this check draws nothing a run
    would otherwise draw.
    """
    buffers = dict(model.named_buffers())
    versions = {name: b._version for name, b in buffers.items()}
    was_training = model.training
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            out = model.train()(x)
            model.eval()(x)
    finally:
        model.train(was_training)
    now = dict(model.named_buffers())
    changed = [n for n, b in buffers.items() if now.get(n) is not b or b._version != versions[n]]
    if changed:
        owner = model.get_submodule(changed[0].rpartition(".")[0])
        raise ValueError(
            f"the model's forward updates its buffer {changed[0]!r} ({type(owner).__qualname__}): every "
            f"task runs on the same module under torch.func, which cannot write its state; compute the "
            f"value without storing it, or keep it as a plain Python attribute updated outside forward"
        )
    return out


def check_outputs(shape: tuple[int, ...], y: torch.Tensor) -> None:
    """Raise ``ValueError`` when a model's output ``shape`` per example does not fit one task's
    support labels ``y``: one logit per class for class indices (``0 .. ways-1``, every class in
    the support set), the targets' width for real-valued targets ``[N, D]``. An output of more
    than one axis per example (feature maps) fits neither."""
    if len(shape) != 1:
        raise ValueError(
            f"the model outputs {list(shape)} per example, not one vector: a gradient learner needs "
            f"predictions of shape [N, {'ways' if losses.is_classification(y) else 'targets'}]; give the "
            f"model a head (e.g. conv4 with its out) or use a metric learner for feature maps (relationnet)"
        )
    width = shape[0]
    if losses.is_classification(y):
        ways = int(y.max()) + 1
        if width != ways:
            raise ValueError(
                f"the model outputs {width} logits per example but the tasks are {ways}-way: "
                f"set the model's out to {ways}"
            )
    elif y.dim() == 2 and width != y.shape[-1]:
        raise ValueError(
            f"the model outputs {width} values per example but the targets have {y.shape[-1]}: "
            f"set the model's out to {y.shape[-1]}"
        )
