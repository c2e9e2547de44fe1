"""The evaluation protocol: seeded episodes, the 95% interval, the curve over steps."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import modmeta as mm
from helpers import DT
from modmeta.evaluate import mean_ci95


def test_ci95_is_normal_interval_of_the_mean():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, ci = mean_ci95(values)
    assert mean == 2.5
    assert ci == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert mean_ci95(torch.tensor([0.25])) == (0.25, 0.0)  # one value: no spread to estimate
    assert mean_ci95(torch.full((7,), 0.5)) == (0.5, 0.0)


def test_same_seed_same_episodes_for_different_learners():
    seen = []

    class Recorder(mm.tasks.Sinusoid):
        def sample(self, tasks, generator):
            b = super().sample(tasks, generator)
            seen.append(b.x_support.clone())
            return b

    fam = Recorder()
    for lr in (0.01, 0.02):
        torch.manual_seed(int(lr * 100))
        mm.evaluate(mm.learners.MAML(mm.models.MLP(1, 1), inner_lr=lr), fam, episodes=30, seed=7, batch=10)
    assert len(seen) == 6
    assert all(torch.equal(a, b) for a, b in zip(seen[:3], seen[3:]))
    mm.evaluate(mm.learners.MAML(mm.models.MLP(1, 1), inner_lr=0.01), fam, episodes=30, seed=8, batch=10)
    assert len(seen) == 9
    assert not any(torch.equal(a, b) for a, b in zip(seen[:3], seen[6:]))  # another seed, other episodes


def zero_predictor() -> mm.learners.MAML:
    """A learner whose unadapted prediction is 0 everywhere: its query MSE is the mean of ``y²``."""
    model = torch.nn.Linear(1, 1).to(DT)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    return mm.learners.MAML(model)


def test_mse_mean_and_ci95_equal_a_hand_computation_over_the_seeded_episodes():
    fam = mm.tasks.Sinusoid(shots=3, queries=4)
    ev = mm.evaluate(zero_predictor(), fam, episodes=25, steps=0, seed=3, batch=10)
    # The protocol: one generator seeded with `seed`, `batch` tasks at a time (10, 10, then 5).
    g = torch.Generator().manual_seed(3)
    per_task = [y.double().pow(2).mean().item()
                for n in (10, 10, 5) for y in fam.sample(n, g).y_query]
    assert ev.metric == "mse" and ev.episodes == 25 and ev.steps == 0 and len(ev.curve) == 1
    assert ev.mean == pytest.approx(statistics.fmean(per_task), rel=1e-12)
    assert ev.ci95 == pytest.approx(1.96 * statistics.stdev(per_task) / math.sqrt(25), rel=1e-10)
    again = mm.evaluate(zero_predictor(), fam, episodes=25, steps=0, seed=3, batch=10)
    other = mm.evaluate(zero_predictor(), fam, episodes=25, steps=0, seed=4, batch=10)
    assert again.curve == ev.curve
    assert other.mean != ev.mean


def identity_embedding(dim: int) -> torch.nn.Linear:
    """The embedding ``f(x) = x`` (a module with parameters, so evaluation can read its dtype)."""
    model = torch.nn.Linear(dim, dim).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.eye(dim, dtype=DT))
        model.bias.zero_()
    return model


class FarthestPrototype(mm.learners.ProtoNet):
    """Deliberately wrong: predicts the class whose prototype is the farthest."""

    def predict(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -super().predict(state, x)


def test_accuracy_is_exact_on_well_separated_classes():
    # Six classes of ten points each, class c within 0.1 of (10 c, -10 c): the nearest class
    # mean of a query is always its own class and the farthest never is.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 6
    x = torch.stack([10.0 * y, -10.0 * y], 1).to(DT) + 0.1 * torch.rand(60, 2, generator=g, dtype=DT)
    fam = mm.tasks.ClassificationFamily(x, y, ways=3, shots=2, queries=3)
    right = mm.evaluate(mm.learners.ProtoNet(identity_embedding(2)), fam, episodes=20, seed=1, batch=7)
    wrong = mm.evaluate(FarthestPrototype(identity_embedding(2)), fam, episodes=20, seed=1, batch=7)
    assert right.metric == "accuracy" and (right.mean, right.ci95) == (1.0, 0.0)
    assert wrong.metric == "accuracy" and (wrong.mean, wrong.ci95) == (0.0, 0.0)
    assert right.episodes == 20 and right.curve == [(1.0, 0.0)]


def test_accuracy_mean_and_ci95_equal_nearest_class_means_by_hand():
    # Overlapping classes: the identity ProtoNet is the nearest-class-mean classifier, right on
    # some queries and wrong on others.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 6
    x = torch.randn(6, 2, generator=g, dtype=DT)[y] + 0.8 * torch.randn(60, 2, generator=g, dtype=DT)
    fam = mm.tasks.ClassificationFamily(x, y, ways=3, shots=2, queries=3)
    ev = mm.evaluate(mm.learners.ProtoNet(identity_embedding(2)), fam, episodes=30, seed=2, batch=8)
    gen = torch.Generator().manual_seed(2)
    per_task = []
    for n in (8, 8, 8, 6):
        b = fam.sample(n, gen)
        for xs, ys, xq, yq in zip(*b.tensors()):
            means = torch.stack([xs[ys == k].mean(0) for k in range(3)])
            nearest = ((xq[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
            per_task.append((nearest == yq).double().mean().item())
    assert len(set(per_task)) > 1 and 0 < statistics.fmean(per_task) < 1  # neither all right nor all wrong
    assert ev.metric == "accuracy"
    assert ev.mean == pytest.approx(statistics.fmean(per_task), rel=1e-12)
    assert ev.ci95 == pytest.approx(1.96 * statistics.stdev(per_task) / math.sqrt(30), rel=1e-10)


def test_curve_has_one_point_per_step_and_headline_is_last():
    torch.manual_seed(0)
    learner = mm.learners.MAML(mm.models.MLP(1, 1), inner_lr=0.01, inner_steps=1)
    ev = mm.evaluate(learner, mm.tasks.Sinusoid(), episodes=20, steps=5, seed=1)
    assert ev.metric == "mse" and ev.steps == 5 and len(ev.curve) == 6
    assert (ev.mean, ev.ci95) == ev.curve[-1]
    assert ev.curve[-1][0] < ev.curve[0][0]  # fine-tuning on the support set helps the queries
    assert ev.to_dict()["seed"] == 1


def test_zero_episodes_are_refused():
    x = torch.randn(50, 4)
    y = torch.arange(50) % 5
    fam = mm.tasks.ClassificationFamily(x, y, ways=5, shots=2, queries=3)
    with pytest.raises(ValueError, match="episodes"):
        mm.evaluate(mm.learners.MAML(mm.models.MLP(4, 5, (8,))), fam, episodes=0)
