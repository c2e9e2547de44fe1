"""The evaluation protocol: seeded episodes, the 95% interval, the curve over steps."""

from __future__ import annotations

import math

import pytest
import torch

import modmeta as mm
from modmeta.evaluate import mean_ci95


def test_ci95_is_normal_interval_of_the_mean():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, ci = mean_ci95(values)
    assert mean == 2.5
    assert ci == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)


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


def test_curve_has_one_point_per_step_and_headline_is_last():
    torch.manual_seed(0)
    learner = mm.learners.MAML(mm.models.MLP(1, 1), inner_lr=0.01, inner_steps=1)
    ev = mm.evaluate(learner, mm.tasks.Sinusoid(), episodes=20, steps=5, seed=1)
    assert ev.metric == "mse" and ev.steps == 5 and len(ev.curve) == 6
    assert (ev.mean, ev.ci95) == ev.curve[-1]
    assert ev.curve[-1][0] < ev.curve[0][0]  # fine-tuning on the support set helps the queries
    assert ev.to_dict()["seed"] == 1


def test_classification_accuracy_metric():
    x = torch.randn(50, 4)
    y = torch.arange(50) % 5
    fam = mm.tasks.ClassificationFamily(x, y, ways=5, shots=2, queries=3)
    ev = mm.evaluate(mm.learners.MAML(mm.models.MLP(4, 5, (8,))), fam, episodes=10, steps=2)
    assert ev.metric == "accuracy" and 0.0 <= ev.mean <= 1.0
    with pytest.raises(ValueError, match="episodes"):
        mm.evaluate(mm.learners.MAML(mm.models.MLP(4, 5, (8,))), fam, episodes=0)
