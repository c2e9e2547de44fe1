"""The Trainer's open parts: any torch.optim optimizer and scheduler by name, gradient
clipping, callbacks, TensorBoard hyperparameters and autocast."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from test_trainer import Stopped, assert_same, params, tiny_trainer

import modmeta as mm
from modmeta import config
from modmeta.config import ConfigError
from modmeta.train import checkpoint, trainer

BASE = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "inner_lr": 0.01},
    "train": {"iterations": 2, "meta_batch": 2, "val_every": 0},
}


def _tensorboard_importable() -> bool:
    """Whether the Trainer can write TensorBoard events here (torch's writer needs the package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


TENSORBOARD = _tensorboard_importable()


def parse(**train) -> config.Config:
    data = yaml.safe_load(yaml.safe_dump(BASE))  # a deep copy
    data["train"] |= train
    return config.parse(data, source="run.yaml")


def one_step(**kw) -> torch.Tensor:
    """The change of a seeded MAML's parameters after one Trainer iteration, as one vector."""
    torch.manual_seed(0)
    learner = mm.learners.MAML(mm.models.MLP(1, 1, (16, 16)), inner_lr=0.05, inner_steps=1)
    before = [p.detach().clone() for p in learner.parameters()]
    mm.Trainer(learner, mm.tasks.Sinusoid(5, 5), meta_batch=8, progress=False, **kw).fit(1)
    return torch.cat([(p.detach() - b).flatten() for b, p in zip(before, learner.parameters())])


def test_the_names_adam_and_sgd_are_torch_adam_and_sgd_with_the_same_numbers():
    for name, cls in (("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        by_name, by_class = tiny_trainer(None, optimizer=name), tiny_trainer(None, optimizer=cls)
        assert type(by_name.optimizer) is cls
        by_name.fit(6), by_class.fit(6)
        assert_same(params(by_name.learner), params(by_class.learner))


def test_an_adamw_config_decays_the_weights_by_lr_times_weight_decay():
    run = config.build(parse(optimizer={"name": "AdamW", "weight_decay": 0.5}, lr=0.01))
    t = config.trainer(run, progress=False)
    assert type(t.optimizer) is torch.optim.AdamW
    assert t.optimizer.param_groups[0]["weight_decay"] == 0.5
    # AdamW = Adam's step plus a decay of lr * weight_decay * p: one step from the same start
    adamw = one_step(optimizer={"name": "AdamW", "weight_decay": 0.5}, lr=0.01)
    adam = one_step(optimizer="AdamW", lr=0.01) - one_step(optimizer={"name": "AdamW", "weight_decay": 0.0}, lr=0.01)
    assert adam.abs().max() > 0  # AdamW's default weight_decay (0.01) is not 0
    torch.manual_seed(0)
    start = torch.cat([p.detach().flatten() for p in mm.models.MLP(1, 1, (16, 16)).parameters()])
    expected = one_step(optimizer={"name": "AdamW", "weight_decay": 0.0}, lr=0.01) - 0.01 * 0.5 * start
    torch.testing.assert_close(adamw, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("train, message", [
    ({"optimizer": "adamm"}, "train.optimizer: unknown torch.optim class 'adamm'; did you mean 'Adam'?"),
    ({"optimizer": {"name": "AdamW", "weight_decy": 0.1}},
     "train.optimizer.weight_decy: unknown argument of AdamW; did you mean train.optimizer.weight_decay?"),
    ({"optimizer": {"name": "AdamW", "weight_decay": -1}}, "train.optimizer: AdamW(weight_decay=-1) refuses its "
                                                           "arguments: Invalid weight_decay value: -1"),
    ({"optimizer": {"name": "SGD", "lr": 0.1}}, "train.optimizer.lr: the rate is the run's lr (train.lr"),
    ({"optimizer": {"weight_decay": 0.1}}, "train.optimizer.name: required"),
    ({"optimizer": "LBFGS"}, "train.optimizer: LBFGS is not supported: its step needs a closure"),
    ({"scheduler": "CosineAnnealingLR"}, "train.scheduler.T_max: required by CosineAnnealingLR, but missing"),
    ({"scheduler": {"name": "CosineAnealingLR", "T_max": 5}}, "did you mean 'CosineAnnealingLR'?"),
    ({"scheduler": {"name": "StepLR", "step_size": "x"}}, "train.scheduler: {'name': 'StepLR', 'step_size': 'x'} "
                                                          "fails at its first step"),
    ({"scheduler": "ReduceLROnPlateau"}, "ReduceLROnPlateau is not supported: its step needs a metric"),
    ({"scheduler": {"name": "StepLR", "step_size": 5}, "schedule": "linear"}, "give either train.schedule=linear"),
    ({"clip_grad_norm": 0}, "train.clip_grad_norm: Input should be greater than 0"),
])
def test_a_wrong_optimizer_or_scheduler_is_refused_when_the_config_is_read(train, message):
    with pytest.raises(ConfigError) as e:
        parse(**train)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_scheduler_sets_each_steps_rate_and_resumes_exactly(tmp_path):
    cosine = {"name": "CosineAnnealingLR", "T_max": 18, "eta_min": 1e-4}
    whole = tiny_trainer(tmp_path / "whole", scheduler=cosine).fit(18)
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in records if r["split"] == "train"):  # the rate of the record's last step
        t = r["iteration"] - 1
        assert r["lr"] == pytest.approx(1e-4 + (3e-3 - 1e-4) * (1 + math.cos(math.pi * t / 18)) / 2, rel=1e-12)
    with pytest.raises(KeyboardInterrupt):  # stops in iteration 11, after the checkpoint at 8
        tiny_trainer(tmp_path / "cut", Stopped, scheduler=cosine).fit(18)
    resumed = tiny_trainer(tmp_path / "cut", scheduler=cosine).fit(18, resume=True)
    assert_same(params(whole.learner), params(resumed.learner))
    assert whole.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "cut" / "metrics.jsonl").read_text()


def test_clipping_bounds_the_step_and_logs_the_norm_before_it():
    step = one_step(optimizer="sgd", lr=1.0)  # SGD at rate 1: the step is minus the meta-gradient
    assert step.norm() > 0.1
    clipped = one_step(optimizer="sgd", lr=1.0, clip_grad_norm=0.1)
    assert clipped.norm() == pytest.approx(0.1, rel=1e-5)
    torch.testing.assert_close(clipped, step * 0.1 / step.norm(), rtol=0, atol=2e-7)  # float32 rounding of p
    records = []
    torch.manual_seed(0)
    learner = mm.learners.MAML(mm.models.MLP(1, 1, (16, 16)), inner_lr=0.05, inner_steps=1)
    mm.Trainer(learner, mm.tasks.Sinusoid(5, 5), meta_batch=8, optimizer="sgd", lr=1.0, clip_grad_norm=0.1,
               log_every=1, progress=False, callbacks=[Recorder(records)]).fit(1)
    assert records[0][2]["meta_grad_norm"] == pytest.approx(float(step.norm()), rel=1e-5)


class Recorder:
    """Each callback's event, the trainer's iteration at the call and its argument."""

    def __init__(self, events: list) -> None:
        self.events = events

    def on_log(self, trainer: mm.Trainer, record: dict) -> None:
        self.events.append(("log", trainer.iteration, record))

    def on_validate(self, trainer: mm.Trainer, record: dict) -> None:
        self.events.append(("validate", trainer.iteration, record))

    def on_checkpoint(self, trainer: mm.Trainer, path) -> None:
        self.events.append(("checkpoint", trainer.iteration, (path.name, checkpoint.load(path)["iteration"])))


class OnlyCheckpoints:
    def __init__(self) -> None:
        self.paths = []

    def on_checkpoint(self, trainer: mm.Trainer, path) -> None:
        self.paths.append(path.name)


def test_callbacks_fire_at_their_iterations_with_the_records_and_checkpoints(tmp_path):
    events, partial = [], OnlyCheckpoints()
    trainer = tiny_trainer(tmp_path, callbacks=[Recorder(events), partial]).fit(10)  # log 2, val 5, ckpt 4
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(i, r) for kind, i, r in events if kind == "log"] == [
        (r["iteration"], r) for r in logged if r["split"] == "train"]
    assert [i for kind, i, _ in events if kind == "log"] == [2, 4, 6, 8, 10]
    assert [(i, json.loads(json.dumps(r))) for kind, i, r in events if kind == "validate"] == [  # curve: tuples
        (r["iteration"], r) for r in logged if r["split"] == "val"]
    assert [i for kind, i, _ in events if kind == "validate"] == [5, 10]
    saved = [(i, what) for kind, i, what in events if kind == "checkpoint"]
    assert [(i, what) for i, what in saved if what[0] == "last.pt"] == [(4, ("last.pt", 4)), (8, ("last.pt", 8)),
                                                                       (10, ("last.pt", 10))]
    best = [i for i, what in saved if what[0] == "best.pt"]
    assert best[0] == 5 and best[-1] == trainer.best["iteration"]
    assert partial.paths == [name for _, (name, _) in saved]
    with pytest.raises(TypeError, match="has none of the methods on_log, on_validate, on_checkpoint"):
        tiny_trainer(None, callbacks=[object()])


def test_the_config_becomes_tensorboard_hyperparameters_by_key_path():
    cfg = parse(optimizer={"name": "AdamW", "weight_decay": 0.01}).to_dict()
    flat = trainer.hparams(cfg)
    assert flat["train.optimizer.name"] == "AdamW" and flat["train.optimizer.weight_decay"] == 0.01
    assert flat["model.hidden"] == "[8]" and flat["train.scheduler"] == "null" and flat["learner.name"] == "maml"
    assert all(isinstance(v, int | float | str) for v in flat.values())


@pytest.mark.skipif(not TENSORBOARD, reason="the tensorboard package is not installed")
def test_a_run_writes_its_config_to_tensorboards_hparams(tmp_path):
    run = config.build(parse())
    config.trainer(run, tmp_path, progress=False).fit(2)
    events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert b"_hparams_/session_start_info" in events and b"train.meta_batch" in events


@pytest.mark.skipif(TENSORBOARD, reason="the tensorboard package is installed")
def test_without_tensorboard_a_run_writes_no_event_files(tmp_path):
    config.trainer(config.build(parse()), tmp_path, progress=False).fit(2)
    assert not (tmp_path / "tensorboard").exists()
    assert checkpoint.load(tmp_path / "last.pt")["iteration"] == 2


def test_bfloat16_autocast_meta_gradient_of_second_order_maml_is_close_to_float32():
    """One SGD step at rate 1 is minus MAML's second-order meta-gradient. bfloat16 keeps 8
    significant bits (unit roundoff u = 2^-8 ~ 0.4%); the meta-gradient passes through about
    ten rounded products in series (forward, inner backward, inner step, query forward, and
    the outer backward through all of them), so its relative error should be a few u: 0.7%
    here, 0.6% to 2.6% over five seeds. The bound 10% leaves room; the lower bound 0.1% is
    10^4 times float32's own error (~1e-7 against float64), so the test fails if autocast is off."""
    float32, bfloat16 = one_step(optimizer="sgd", lr=1.0), one_step(optimizer="sgd", lr=1.0, autocast="bfloat16")
    error = float((bfloat16 - float32).norm() / float32.norm())
    assert 1e-3 < error < 0.1
    assert torch.nn.functional.cosine_similarity(bfloat16, float32, dim=0) > 0.99
    assert parse(autocast="bfloat16").train.autocast == "bfloat16"
    with pytest.raises(ConfigError, match="train.autocast: autocast lowers float32 operations only"):
        config.parse({**BASE, "train": {**BASE["train"], "autocast": "bfloat16"}, "dtype": "float64"})
