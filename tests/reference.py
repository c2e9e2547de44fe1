"""Meta-gradients recorded from every registered learner, so a refactoring can show it changed
no number.

``python tests/reference.py`` writes ``tests/data/meta_gradients.pt``: for each case, a named
learner built by its registry name and constructor arguments on a fixed float64 model, one
meta-gradient on a fixed batch, as the list of ``(parameter shape, gradient)`` in
``named_parameters()`` order (names may change with the code; the order and shapes may not).
The file was written by the code before the composition redesign (issue 10) and is compared
against in ``tests/test_composition.py``; rerun this only when a change of numbers is meant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

import modmeta as mm
from modmeta.registry import LEARNERS

DT = torch.float64
FILE = Path(__file__).resolve().parent / "data" / "meta_gradients.pt"


def sine_batch() -> mm.tasks.TaskBatch:
    return mm.tasks.Sinusoid(5, 7).sample(4, torch.Generator().manual_seed(0)).to("cpu", DT)


def image_family(size: int = 16) -> mm.tasks.ClassificationFamily:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, size, size, generator=g, dtype=DT)
    return mm.tasks.ClassificationFamily(x, torch.arange(40) % 4, ways=3, shots=2, queries=3)


def image_batch() -> mm.tasks.TaskBatch:
    return image_family().sample(3, torch.Generator().manual_seed(1))


def omniglot_size_batch() -> mm.tasks.TaskBatch:
    """28×28 images: Relation Networks' embedding keeps 5×5 maps of them."""
    return image_family(28).sample(2, torch.Generator().manual_seed(1))


def sums_batch() -> mm.tasks.TaskBatch:
    return mm.tasks.FunctionSums(shots=5, queries=7).sample(6, torch.Generator().manual_seed(0)).to("cpu", DT)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.MLP(1, 1, (8, 8)).to(DT)


def conv(out: int | None = 3, downsample: str = "maxpool") -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.Conv4(out, hidden=4, image_size=16, downsample=downsample).to(DT)


def modular() -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.ModularNet(1, 1, modules=((3, (5, 4)), (4, (6,))), scheme="sum", slots=2).to(DT)


def relation_embedding() -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.RelationEmbedding(1, hidden=4).to(DT)


# name: (registry name, model, constructor arguments, batch)
CASES: dict[str, tuple[str, Callable[[], torch.nn.Module], dict, Callable[[], mm.tasks.TaskBatch]]] = {
    "maml": ("maml", mlp, {"inner_lr": 0.1, "inner_steps": 2}, sine_batch),
    "maml-vmap": ("maml", mlp, {"inner_lr": 0.1, "inner_steps": 2, "execution": "vmap"}, sine_batch),
    "fomaml": ("fomaml", mlp, {"inner_lr": 0.1, "inner_steps": 2}, sine_batch),
    "reptile": ("reptile", mlp, {"inner_lr": 0.1, "inner_steps": 3}, sine_batch),
    "metasgd": ("metasgd", mlp, {"inner_lr": 0.05, "inner_steps": 2}, sine_batch),
    "anil": ("anil", mlp, {"inner_lr": 0.1, "inner_steps": 2}, sine_batch),
    "lslr": ("lslr", mlp, {"inner_lr": 0.1, "inner_steps": 2}, sine_batch),
    "pretrained": ("pretrained", mlp, {"inner_lr": 0.1}, sine_batch),
    "imaml": ("imaml", mlp, {"inner_lr": 0.05, "inner_steps": 5, "lam": 2.0, "cg_steps": 4}, sine_batch),
    "sigma-maml": ("sigma-maml", mlp, {"inner_lr": 0.05, "inner_steps": 3, "sigma": 0.7}, sine_batch),
    "sigma-imaml": ("sigma-imaml", mlp, {"inner_lr": 0.05, "inner_steps": 5, "sigma": 0.7, "cg_steps": 4}, sine_batch),
    "sigma-reptile": ("sigma-reptile", mlp, {"inner_lr": 0.05, "inner_steps": 5, "sigma": 0.7, "cg_steps": 4},
                      sine_batch),
    "maml-conv": ("maml", conv, {"inner_lr": 0.4, "inner_steps": 2}, image_batch),
    "maml-conv-vmap": ("maml", conv, {"inner_lr": 0.4, "inner_steps": 1, "execution": "vmap"}, image_batch),
    "maml-conv-stride": ("maml", lambda: conv(3, "stride"), {"inner_lr": 0.4, "inner_steps": 1}, image_batch),
    "fomaml-conv": ("fomaml", conv, {"inner_lr": 0.4, "inner_steps": 2}, image_batch),
    "reptile-conv": ("reptile", conv, {"inner_lr": 0.1, "inner_steps": 2}, image_batch),
    "sigma-imaml-conv": ("sigma-imaml", conv, {"inner_lr": 0.05, "inner_steps": 3, "cg_steps": 3}, image_batch),
    "protonet": ("protonet", lambda: conv(None), {}, image_batch),
    "matchingnet": ("matchingnet", lambda: conv(None), {}, image_batch),
    "matchingnet-fce": ("matchingnet", lambda: conv(None), {"fce": True, "features": 4, "fce_steps": 2}, image_batch),
    "relationnet": ("relationnet", relation_embedding, {"channels": 4, "hidden": 3}, omniglot_size_batch),
    "bouncegrad": ("bouncegrad", modular, {"anneal_iterations": 10}, sums_batch),
    "moma": ("moma", modular, {"inner_lr": 0.05, "inner_steps": 2, "anneal_iterations": 10}, sums_batch),
}


def build(case: str) -> tuple[mm.learners.Learner, mm.tasks.TaskBatch]:
    """The case's learner (float64) and batch."""
    name, model, kwargs, batch = CASES[case]
    # Relation Networks have since taken their authors' initialisation, which changes the
    # starting point but not the computation pinned here: the recorded case keeps torch's.
    with mock.patch("modmeta.models.relation._authors_init", lambda module: None):
        learner = LEARNERS[name].build(model(), **kwargs)
    return learner.to(DT), batch()


def meta_gradient(learner: mm.learners.Learner, batch: mm.tasks.TaskBatch) -> list[tuple[tuple[int, ...], torch.Tensor]]:
    """One meta-gradient, as ``(shape, gradient)`` in ``named_parameters()`` order (zeros where
    a parameter got none)."""
    learner.zero_grad(set_to_none=True)
    learner.meta_backward(batch)
    return [(tuple(p.shape), torch.zeros_like(p) if p.grad is None else p.grad.detach().clone())
            for _, p in learner.named_parameters()]


def linear_head_gradient() -> list[tuple[tuple[int, ...], torch.Tensor]]:
    """The linear-head baseline's supervised step on 16 labelled images (it draws no episodes)."""
    learner = LEARNERS["linearhead"].build(conv(4), batch_size=16).to(DT)
    learner.zero_grad(set_to_none=True)
    learner.train_batch(image_family(), torch.Generator().manual_seed(2))
    return [(tuple(p.shape), p.grad.detach().clone()) for _, p in learner.named_parameters()]


def record() -> dict[str, list[tuple[tuple[int, ...], torch.Tensor]]]:
    torch.set_num_threads(1)
    return {**{case: meta_gradient(*build(case)) for case in CASES}, "linearhead": linear_head_gradient()}


if __name__ == "__main__":
    FILE.parent.mkdir(exist_ok=True)
    torch.save(record(), FILE)
    print(f"wrote {FILE}")
