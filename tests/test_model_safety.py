"""The user's model is never changed by a learner; layers modmeta cannot run exactly, buffers
written in forward and heads of the wrong width are refused with a readable error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import modmeta as mm
from helpers import sine_batch
from modmeta.models.safety import check_stateless


def image_family(ways: int = 3) -> mm.tasks.ClassificationFamily:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    return mm.tasks.ClassificationFamily(x, torch.arange(48) % 6, ways, shots=2, queries=2)


def convnet(out: int | None) -> nn.Sequential:
    """Conv, BatchNorm, ReLU, then a linear head of ``out`` logits (an embedding when None)."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()]
    return nn.Sequential(*layers, *([nn.Linear(144, out)] if out else []))


class Headed(nn.Module):
    """``convnet`` with its last layer named ``head``, as the linear-head baseline needs."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.body = convnet(None)
        self.head = nn.Linear(144, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


LEARNERS: dict[str, Callable[[nn.Module], mm.learners.Learner]] = {
    "maml": lambda m: mm.learners.MAML(m, inner_lr=0.1),
    "protonet": mm.learners.ProtoNet,
    "linearhead": lambda m: mm.learners.LinearHead(m, batch_size=8, fit_steps=2),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_training_a_learner_leaves_the_users_module_as_it_was(name: str) -> None:
    model = Headed(6) if name == "linearhead" else convnet(3 if name == "maml" else None)
    classes = [(path, type(m)) for path, m in model.named_modules()]
    tensors = {n: (t, t.clone()) for n, t in model.state_dict(keep_vars=True).items()}
    learner = LEARNERS[name](model)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.1)
    family, g = image_family(), torch.Generator().manual_seed(0)
    for _ in range(2):
        optimizer.zero_grad()
        learner.meta_backward(learner.draw(family, 2, g))
        optimizer.step()
    assert any(type(m) is mm.models.BatchNorm for m in learner.model.modules())  # the learner's copy converted
    assert [(path, type(m)) for path, m in model.named_modules()] == classes
    after = model.state_dict(keep_vars=True)
    assert after.keys() == tensors.keys()
    for n, (tensor, before) in tensors.items():
        assert after[n] is tensor and torch.equal(tensor, before), n
    assert all(p.grad is None for p in model.parameters())
    moved = [n for n, p in learner.model.named_parameters() if not torch.equal(p, tensors[n][1])]
    assert moved  # the learner did train its copy


class ScaledBatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class QuietBatchNorm(nn.BatchNorm2d):
    """A subclass that keeps BatchNorm's forward: converted like nn.BatchNorm2d."""


def test_a_batchnorm_subclass_with_its_own_forward_is_refused_by_path_and_class() -> None:
    model = nn.Sequential()
    model.features = nn.Sequential(nn.Conv2d(1, 4, 3), ScaledBatchNorm(4))
    for build in (mm.learners.MAML, mm.learners.ProtoNet):
        with pytest.raises(ValueError, match=r"layer features\.1 \(.*ScaledBatchNorm\) is a BatchNorm with its "
                                             r"own forward.*use a plain nn\.BatchNorm2d"):
            build(model)
    assert type(model.features[1]) is ScaledBatchNorm  # nothing was replaced before refusing
    learner = mm.learners.ProtoNet(nn.Sequential(nn.Conv2d(1, 4, 3), QuietBatchNorm(4)))
    assert type(learner.model[1]) is mm.models.BatchNorm


@pytest.mark.parametrize("layer, fix", [
    (nn.InstanceNorm2d(4, track_running_stats=True), "track_running_stats=False"),
    (nn.LazyBatchNorm2d(), "run the model once"),
])
def test_layers_that_update_or_lack_their_state_are_refused(layer: nn.Module, fix: str) -> None:
    with pytest.raises(ValueError, match=rf"layer 1 \(.*{type(layer).__name__}\).*{fix}"):
        mm.learners.MAML(nn.Sequential(nn.Conv2d(1, 4, 3), layer))


class Counter(nn.Module):
    """A linear layer that counts its calls in a buffer: state written in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_a_buffer_written_in_forward_is_named_instead_of_a_torch_func_error(execution: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), Counter())
    learner = mm.learners.MAML(model, inner_lr=0.01, execution=execution)
    message = r"the model's forward updates its buffer '1\.calls' \(Counter\)"
    with pytest.raises(ValueError, match=message):
        learner.meta_backward(mm.tasks.Sinusoid(5, 5).sample(3, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=message):
        mm.evaluate(mm.learners.MAML(model, execution=execution), mm.tasks.Sinusoid(5, 5), episodes=2)
    assert model[1].calls.item() == 0


def test_the_stateless_check_draws_no_random_numbers() -> None:
    model = nn.Sequential(nn.Linear(1, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    torch.manual_seed(3)
    state = torch.get_rng_state()
    out = check_stateless(model, torch.ones(5, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert out.shape == (5, 1) and model.training


@pytest.mark.parametrize("out", [2, 6])
def test_a_head_wider_or_narrower_than_the_ways_is_refused(out: int) -> None:
    learner = mm.learners.MAML(convnet(out), inner_lr=0.1)
    family = image_family(ways=3)
    message = rf"the model outputs {out} logits per example but the tasks are 3-way: set the model's out to 3"
    with pytest.raises(ValueError, match=message):
        learner.meta_backward(family.sample(2, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=message):
        mm.evaluate(learner, family, episodes=2)
    mm.evaluate(mm.learners.MAML(convnet(3), inner_lr=0.1), family, episodes=2)  # the right width works


def test_a_regression_model_of_the_wrong_width_is_refused() -> None:
    learner = mm.learners.MAML(mm.models.MLP(1, 2, (8,)).to(torch.float64))
    batch = sine_batch(1)
    with pytest.raises(ValueError, match=r"outputs 2 values per example but the targets have 1: set the model's out to 1"):
        learner.adapt(batch.x_support[0], batch.y_support[0])


def test_feature_maps_are_not_predictions_for_a_gradient_learner() -> None:
    learner = mm.learners.MAML(mm.models.RelationEmbedding(hidden=4), inner_lr=0.1)
    family = mm.tasks.ClassificationFamily(torch.rand(48, 1, 28, 28), torch.arange(48) % 6, 3, shots=2, queries=2)
    with pytest.raises(ValueError, match=r"the model outputs \[4, 5, 5\] per example, not one vector"):
        learner.meta_backward(family.sample(2, torch.Generator().manual_seed(0)))
