"""modmeta seeds: one config, several seeds, the spread of the results (seed 004's limitation 1)."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml

from modmeta.cli import main
from modmeta.seeds import across, variability

TINY = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "inner_lr": 0.01},
    "train": {"iterations": 8, "meta_batch": 3, "val_every": 2, "val_episodes": 10, "log_every": 4,
              "checkpoint_every": 4},
    "eval": {"episodes": 12, "steps": 1},
}


def test_spread_and_variability_equal_hand_computations():
    t = across([0.90, 0.94, 0.92])
    assert t["mean"] == pytest.approx(0.92) and t["sd"] == pytest.approx(0.02)
    assert t["ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3))  # Student's t, 2 degrees of freedom
    v = variability([0.5, 0.7, 0.6, 0.8, 0.7])
    assert v["mean_change"] == pytest.approx((0.2 + 0.1 + 0.2 + 0.1) / 4)
    assert v["late_sd"] == pytest.approx(statistics.stdev([0.6, 0.8, 0.7]))


def test_seeds_trains_each_seed_and_reports_what_each_run_folder_holds(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "seeds"
    assert main(["seeds", str(path), "--out", str(out), "--seeds", "3", "4", "--quiet"]) == 0
    report = json.loads((out / "seeds.json").read_text())
    tests = []
    for run, seed in zip(report["runs"], (3, 4)):
        folder = out / f"seed-{seed}"
        evaluation = json.loads((folder / "eval.json").read_text())
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert run["seed"] == seed and saved["train"]["seed"] == seed
        assert run["test"] == evaluation["mean"] and evaluation["episodes"] == 12 and run["validations"] == 4
        tests.append(run["test"])
    assert tests[0] != tests[1]  # different seeds, different runs
    assert report["test"]["mean"] == pytest.approx(statistics.fmean(tests))
    assert "across 2 seeds" in capsys.readouterr().out
    # run again: the finished runs are resumed (nothing retrained), the report is the same
    assert main(["seeds", str(path), "--out", str(out), "--seeds", "3", "4", "--quiet"]) == 0
    assert json.loads((out / "seeds.json").read_text())["test"] == report["test"]
