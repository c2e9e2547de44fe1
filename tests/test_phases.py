"""Forgetting across task families: phases trained in turn, each family evaluated after each."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from modmeta import config
from modmeta.cli import main
from modmeta.train import Trainer, checkpoint

PHASED = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16]},
    "learner": {"name": "maml", "inner_lr": 0.01},
    "phases": [{"name": "sines", "tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "iterations": 6},
               {"name": "sums", "tasks": {"name": "function-sums", "shots": 5, "queries": 5}, "iterations": 6}],
    "train": {"iterations": 6, "meta_batch": 3, "lr": 0.01, "val_every": 0, "log_every": 3, "checkpoint_every": 3},
    "eval": {"episodes": 20, "steps": 1},
}


def run_phases(tmp_path, out) -> dict:
    path = tmp_path / "phased.yaml"
    path.write_text(yaml.safe_dump(PHASED))
    assert main(["phases", str(path), "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "phases.json").read_text())


def final_weights(out) -> dict[str, torch.Tensor]:
    return checkpoint.load(out / "2-sums" / checkpoint.LAST)["learner"]


def test_each_family_is_evaluated_after_each_phase_and_forgetting_is_what_it_lost(tmp_path, monkeypatch):
    starts = {}
    fit = Trainer.fit

    def recording_fit(self, iterations, resume=False):
        starts[self.out.name] = {k: v.clone() for k, v in self.learner.state_dict().items()}
        return fit(self, iterations, resume)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    rep = run_phases(tmp_path, tmp_path / "run")
    phase_one = checkpoint.load(tmp_path / "run" / "1-sines" / checkpoint.LAST)["learner"]
    assert all(torch.equal(starts["2-sums"][k], v) for k, v in phase_one.items())  # phase 2 starts where 1 ended
    assert not all(torch.equal(starts["1-sines"][k], v) for k, v in phase_one.items())
    assert rep["phases"] == ["sines", "sums"]
    for after in rep["phases"]:
        assert set(rep["results"][after]) == {"sines", "sums"}
        assert all(e["episodes"] == 20 and e["metric"] == "mse" for e in rep["results"][after].values())
    before, after = rep["results"]["sines"]["sines"]["mean"], rep["results"]["sums"]["sines"]["mean"]
    assert rep["forgetting"] == {"sines": pytest.approx(after - before)}
    saved = yaml.safe_load((tmp_path / "run" / "2-sums" / "config.yaml").read_text())
    assert saved["tasks"]["name"] == "function-sums" and saved["phases"] == []


def test_a_run_killed_between_or_within_phases_resumes_to_the_uninterrupted_result(tmp_path):
    whole = run_phases(tmp_path, tmp_path / "whole")
    expected = final_weights(tmp_path / "whole")
    cut = tmp_path / "cut"
    run_phases(tmp_path, cut)
    shutil.rmtree(cut / "2-sums")  # killed between the phases
    assert run_phases(tmp_path, cut) == whole
    (cut / "2-sums" / "phase.json").unlink()  # killed within phase 2, after its checkpoint at iteration 3
    (cut / "2-sums" / "last.pt").unlink()
    assert run_phases(tmp_path, cut) == whole
    for name, tensor in expected.items():
        assert torch.equal(final_weights(cut)[name], tensor), name


def test_a_phased_config_is_checked_and_refused_by_train(tmp_path, capsys):
    bad = {**PHASED, "phases": [{**PHASED["phases"][0], "iteratons": 3}]}
    with pytest.raises(config.ConfigError, match=r"phases.0.iteratons: unknown key; did you mean phases.0.iterations"):
        config.parse(bad)
    with pytest.raises(config.ConfigError, match="each phase needs its own name"):
        config.parse({**PHASED, "phases": [PHASED["phases"][0]] * 2})
    path = tmp_path / "phased.yaml"
    path.write_text(yaml.safe_dump(PHASED))
    assert main(["train", str(path), "--out", str(tmp_path / "x")]) == 1
    assert "has phases: train them in turn with `modmeta phases" in capsys.readouterr().err
