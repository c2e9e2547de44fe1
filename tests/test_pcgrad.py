"""Meta-PCGrad and the gradient-conflict diagnostics (seed 004), as aggregations any learner takes."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

import modmeta as mm
from helpers import DT, meta_grads, sine_batch, tiny_mlp
from modmeta.cli import main
from modmeta.meta.aggregate import conflict, project_conflicting


def test_conflicting_gradients_lose_their_conflicting_components():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=DT)
    # g1 · g2 = -1: g1 - (-1/2) g2 = [0.5, 0.5]; g2 - (-1/1) g1 = [0, 1]
    torch.testing.assert_close(project_conflicting(g), torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=DT))
    for row, other in ((0, 1), (1, 0)):
        assert project_conflicting(g)[row] @ g[other] >= -1e-12  # no conflict with the other task is left


def test_gradients_that_do_not_conflict_are_left_untouched():
    g = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]], dtype=DT)
    assert torch.equal(project_conflicting(g), g)


def test_only_the_conflicting_pair_is_projected_whatever_the_order():
    # tasks 0 and 1 conflict; task 2 is orthogonal to task 0 and agrees with task 1
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 1.0, 1.0]], dtype=DT)
    for seed in range(5):
        torch.manual_seed(seed)
        out = project_conflicting(g)
        torch.testing.assert_close(out[0], g[0] - (-1 / 5) * g[1])
        torch.testing.assert_close(out[1], g[1] - (-1 / 1) * g[0])
        assert torch.equal(out[2], g[2])


def test_pcgrad_of_one_task_is_its_meta_gradient():
    batch = sine_batch().task(0)
    plain = meta_grads(mm.learners.MAML(tiny_mlp(), inner_lr=0.1).to(DT), batch)
    surgery = meta_grads(mm.learners.MAML(tiny_mlp(), inner_lr=0.1, aggregate=mm.meta.pcgrad()).to(DT), batch)
    for n in plain:
        torch.testing.assert_close(surgery[n], plain[n], rtol=1e-12, atol=1e-15)


def test_pcgrad_groups_average_sets_of_tasks_before_projecting():
    per_task = {"w": torch.tensor([[1.0, 0.0], [3.0, 0.0], [-1.0, 1.0], [-3.0, 1.0]], dtype=DT)}
    out = mm.meta.pcgrad(group=2).combine(per_task)["w"]
    expected = project_conflicting(torch.tensor([[2.0, 0.0], [-2.0, 1.0]], dtype=DT)).mean(0)
    torch.testing.assert_close(out, expected)
    summed = mm.meta.pcgrad(reduction="sum").combine(per_task)["w"]
    assert summed.shape == (2,)
    with pytest.raises(ValueError, match="group must be >= 1"):
        mm.meta.pcgrad(group=0)


@pytest.mark.parametrize("name", ["maml", "fomaml", "lslr", "metasgd", "sigma-maml"])
def test_pcgrad_composes_with_gradient_learners_and_is_vmapped_equal_to_looped(name):
    batch = sine_batch()
    grads = {}
    for execution in ("vmap", "loop"):
        learner = mm.registry.LEARNERS[name].build(tiny_mlp(), inner_steps=2, aggregate=mm.meta.pcgrad(),
                                                   execution=execution).to(DT)
        torch.manual_seed(0)  # the same projection order
        grads[execution] = meta_grads(learner, batch)
    for n in grads["vmap"]:
        torch.testing.assert_close(grads["vmap"][n], grads["loop"][n], rtol=1e-9, atol=1e-12)


def test_conflict_statistics_equal_a_hand_computation():
    per_task = {"a": torch.tensor([[1.0], [0.0], [-1.0]], dtype=DT), "b": torch.tensor([[0.0], [1.0], [0.0]], dtype=DT)}
    stats = conflict(per_task, {"a": torch.tensor([3.0], dtype=DT), "b": torch.tensor([4.0], dtype=DT)})
    # pairs: (1,0)·(0,1) = 0, (1,0)·(-1,0) = -1, (0,1)·(-1,0) = 0
    assert stats == pytest.approx({"grad_cos_mean": -1 / 3, "grad_cos_min": -1.0, "grad_conflict": 1 / 3,
                                   "grad_norm": 5.0})


def test_training_logs_the_conflicts_and_plot_draws_them(tmp_path, capsys):
    cfg = {"tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [16]},
           "learner": {"name": "maml", "inner_lr": 0.01, "aggregate": {"name": "mean", "diagnostics": True}},
           "train": {"iterations": 6, "meta_batch": 4, "val_every": 0, "log_every": 3, "checkpoint_every": 6}}
    path = tmp_path / "maml.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    train = [r for r in mm.plot.read_metrics(tmp_path / "run") if r["split"] == "train"]
    assert len(train) == 2
    for r in train:
        assert -1 <= r["grad_cos_min"] <= r["grad_cos_mean"] <= 1 and 0 <= r["grad_conflict"] <= 1
        assert r["grad_norm"] > 0 and math.isfinite(r["loss"])
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "gradient_conflict.png").stat().st_size > 0


def test_a_pcgrad_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    def trainer(out):
        torch.manual_seed(0)  # the same initial weights
        learner = mm.learners.MAML(mm.models.MLP(1, 1, (8,)), inner_lr=0.01, aggregate=mm.meta.pcgrad())
        return mm.Trainer(learner, mm.tasks.Sinusoid(5, 5), meta_batch=6, out=out, checkpoint_every=3,
                          log_every=3, progress=False)

    whole = trainer(tmp_path / "whole").fit(6)
    trainer(tmp_path / "cut").fit(3)
    resumed = trainer(tmp_path / "cut").fit(6, resume=True)
    for (n, a), (_, b) in zip(whole.learner.named_parameters(), resumed.learner.named_parameters()):
        assert torch.equal(a, b), n
    assert mm.plot.read_metrics(tmp_path / "whole") == mm.plot.read_metrics(tmp_path / "cut")
