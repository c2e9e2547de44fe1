"""Devices (``--device``, the config key ``device``: checked when read, not compared on resume)
and cross-domain evaluation (``modmeta.load_run``, ``modmeta eval RUN --tasks CONFIG_OR_NPZ``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import modmeta as mm
from modmeta import config
from modmeta.cli import main
from modmeta.config import ConfigError
from modmeta.train import CheckpointError, checkpoint

UNAVAILABLE = "cuda:99"  # no machine has a hundredth GPU


def clusters(path, classes: int, features: int = 16, per_class: int = 12, seed: int = 0) -> None:
    """An .npz of ``classes`` well-separated Gaussian clusters of ``features``-vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, features))
    x = np.concatenate([c + rng.normal(0, 0.3, (per_class, features)) for c in centres]).astype(np.float32)
    np.savez(path, x=x, y=np.repeat(np.arange(classes), per_class))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A MAML run of 3-way, 2-shot episodes on one .npz data set, and a second data set."""
    folder = tmp_path_factory.mktemp("domains")
    clusters(folder / "train.npz", classes=8, seed=0)
    clusters(folder / "other.npz", classes=6, seed=1)
    cfg = {"tasks": {"name": "npz", "path": str(folder / "train.npz"), "ways": 3, "shots": 2, "queries": 4},
           "model": {"name": "mlp", "hidden": [16]},
           "learner": {"name": "maml", "inner_lr": 0.1, "inner_steps": 1},
           "train": {"iterations": 6, "meta_batch": 2, "val_every": 0, "log_every": 3, "checkpoint_every": 3},
           "eval": {"episodes": 20}}
    (folder / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(folder / "run.yaml"), "--out", str(folder / "run"), "--quiet", "--device", "cpu"]) == 0
    return folder


def test_an_unavailable_or_unknown_device_is_refused_when_the_config_is_read(tmp_path, capsys):
    base = yaml.safe_load(yaml.safe_dump({"tasks": {"name": "sinusoid"}, "model": {"name": "mlp"},
                                          "learner": {"name": "maml"}, "train": {"iterations": 2}}))
    with pytest.raises(ConfigError, match=rf"device: '{UNAVAILABLE}' is not available here .*this machine has: auto, cpu"):
        config.parse({**base, "device": UNAVAILABLE})
    with pytest.raises(ConfigError, match="device: 'gpu' is not a device name; this machine has: auto, cpu"):
        config.parse({**base, "device": "gpu"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, "train": {"iterations": 2, "val_every": 0}}))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"), "--device", UNAVAILABLE]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device" in err and not (tmp_path / "r" / "last.pt").exists()
    auto = config.build(config.parse(base))  # the default: auto, where it is resolved
    assert auto.config.device == "auto"
    assert next(auto.learner.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_run_resumes_and_evaluates_on_another_device_setting(run, capsys):
    folder = run / "run"
    assert yaml.safe_load((folder / "config.yaml").read_text())["device"] == "cpu"
    before = checkpoint.load(folder / "last.pt")
    assert main(["train", str(run / "run.yaml"), "--out", str(folder), "--quiet", "--resume"]) == 0  # device: auto
    assert main(["train", str(run / "run.yaml"), "--out", str(folder), "--quiet", "--resume",
                 "--set", "train.meta_batch=3"]) == 1
    assert "train.meta_batch: 2 -> 3" in capsys.readouterr().err  # any other change is still refused
    assert checkpoint.load(folder / "last.pt")["iteration"] == before["iteration"] == 6
    state = {"config": {"device": "cuda", "train": {"lr": 0.1}}}
    checkpoint.check_config(state, {"device": "cpu", "train": {"lr": 0.1}}, "x.pt", "this run's config")
    with pytest.raises(CheckpointError, match=r"train.lr: 0.1 -> 0.2"):
        checkpoint.check_config(state, {"device": "cpu", "train": {"lr": 0.2}}, "x.pt", "this run's config")
    loaded = mm.load_run(folder, device="auto")
    assert loaded.config.device == "auto" and loaded.iteration == 6
    assert main(["eval", str(folder), "--device", "cpu", "--split", "train", "--episodes", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["iteration"] == 6
    assert main(["eval", str(folder), "--device", UNAVAILABLE]) == 1
    assert f"device: '{UNAVAILABLE}' is not available here" in capsys.readouterr().err


def test_eval_with_tasks_from_an_npz_matches_the_python_api(run, capsys):
    folder = run / "run"
    (folder / "eval.json").unlink(missing_ok=True)
    assert main(["eval", str(folder), "--tasks", str(run / "other.npz"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tasks"] == str(run / "other.npz") and record["split"] == "all" and record["episodes"] == 20
    assert not (folder / "eval.json").exists()  # the run's own evaluation is not replaced
    loaded = mm.load_run(folder)
    assert isinstance(loaded.learner, mm.learners.MAML) and loaded.config.tasks.kwargs["ways"] == 3
    other = mm.tasks.ClassificationFamily.from_npz(run / "other.npz", ways=3, shots=2, queries=4)  # the run's ways
    expected = mm.evaluate(loaded.learner, other, episodes=20, seed=0)
    assert record["metric"] == "accuracy" and record["mean"] == expected.mean and record["curve"] == [list(c) for c in expected.curve]
    own = mm.evaluate(loaded.learner, loaded.tasks, episodes=20, seed=0)
    assert own.mean != expected.mean  # other data, other episodes


def test_eval_with_the_tasks_section_of_a_yaml_file(run, capsys):
    (run / "tasks.yaml").write_text(yaml.safe_dump(
        {"tasks": {"name": "npz", "path": str(run / "other.npz"), "test": 3, "queries": 2}}))
    assert main(["eval", str(run / "run"), "--tasks", str(run / "tasks.yaml"), "--json", "--episodes", "10"]) == 0
    record = json.loads(capsys.readouterr().out)
    other = mm.tasks.ClassificationFamily.from_npz(run / "other.npz", 3, 2, 2, test=3).split("test")
    assert record["split"] == "test" and record["mean"] == mm.evaluate(mm.load_run(run / "run").learner, other,
                                                                          episodes=10).mean
    assert main(["eval", str(run / "run"), "--tasks", str(run / "tasks.yaml")]) == 0
    assert f"maml on {run / 'tasks.yaml'} (test split)" in capsys.readouterr().out


@pytest.mark.parametrize("tasks, split, message", [
    ({"name": "npz", "path": "ten.npz", "ways": 5, "test": 5}, None,
     "its tasks have 5 ways, but the run's learner gives 3 outputs (its model's head); evaluate on tasks with ways: 3"),
    ("wide.npz", None, "its examples have shape [20], but the run's model takes [16]"),
    ({"name": "sinusoid"}, None, "its examples have shape [1], but the run's model takes [16]"),
    ({"name": "npz", "paht": "other.npz"}, None, "tasks.paht: unknown argument of tasks 'npz'; did you mean tasks.path?"),
    ({"shots": 2}, None, "has no tasks: section naming a task family"),
    ("other.npz", "test", "an .npz file is evaluated whole"),
])
def test_tasks_the_learner_cannot_take_are_refused_in_one_line(run, capsys, tasks, split, message):
    clusters(run / "wide.npz", classes=4, features=20)
    clusters(run / "ten.npz", classes=10)
    if isinstance(tasks, dict):
        tasks = {k: str(run / v) if k == "path" else v for k, v in tasks.items()}
        (run / "bad.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
        source = run / "bad.yaml"
    else:
        source = run / tasks
    assert main(["eval", str(run / "run"), "--tasks", str(source), *(["--split", split] if split else [])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
