"""The ``modmeta`` command: train, eval --json against the Python API, plot, list, demo, help
and one-line errors."""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml

import modmeta as mm
from modmeta import config, registry
from modmeta.cli import main
from modmeta.train import checkpoint

TINY = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "train": {"iterations": 20, "meta_batch": 4, "seed": 2, "val_every": 10, "val_episodes": 10,
              "checkpoint_every": 10, "log_every": 5},
    "eval": {"episodes": 30, "steps": 3, "seed": 5},
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def trained(tmp_path, tiny_config):
    out = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_the_resolved_config_metrics_and_checkpoints(trained):
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved["model"]["out"] == 1 and saved["train"]["lr"] == 0.001 and saved["eval"]["seed"] == 5
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["split"] == "train"] == [5, 10, 15, 20]
    assert [r["iteration"] for r in records if r["split"] == "val"] == [10, 20]
    for name in ("last.pt", "previous.pt", "best.pt"):
        assert (trained / name).is_file()


def test_eval_json_parses_and_matches_the_python_api(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--json", "--episodes", "40"]) == 0
    shown = json.loads(capsys.readouterr().out)
    for key in ("metric", "mean", "ci95", "episodes", "seed"):
        assert key in shown

    cfg = config.parse(yaml.safe_load((trained / "config.yaml").read_text()))
    run = config.build(cfg)
    run.learner.load_state_dict(checkpoint.load(trained / "best.pt")["learner"])
    expected = mm.evaluate(run.learner, run.tasks.split("test"), episodes=40, steps=cfg.eval.steps,
                           seed=cfg.eval.seed)
    assert (shown["metric"], shown["episodes"], shown["seed"], shown["steps"]) == ("mse", 40, 5, 3)
    assert shown["mean"] == expected.mean and shown["ci95"] == expected.ci95
    assert shown["curve"] == [list(p) for p in expected.curve]


def test_eval_prints_a_table_and_plot_writes_pngs(trained, capsys):
    assert main(["eval", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "maml on sinusoid (test split), best.pt" in out and "after  3 steps" in out
    assert main(["plot", str(trained)]) == 0
    for name in ("learning_curves.png", "adaptation.png"):
        assert (trained / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_shrinkage_run_reports_sigma_per_module_in_eval_and_plot(tmp_path, capsys):
    cfg = {**TINY, "learner": {"name": "sigma-imaml", "inner_lr": 0.01, "inner_steps": 2, "sigma": 0.8}}
    path = tmp_path / "sigma.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sigma-run"
    assert main(["train", str(path), "--out", str(out), "--quiet"]) == 0
    sigmas = config.restore(out).learner.sigmas()
    assert set(sigmas) == {"body.0", "head"} and sigmas != pytest.approx({"body.0": 0.8, "head": 0.8})
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sigma"] == pytest.approx(sigmas)
    assert main(["eval", str(out), "--steps", "30", "--episodes", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("  after")] == ["0", "1", "2", "5", "10", "20", "30"]
    assert any(line.startswith("  best ") for line in lines) and "σ per module" in "\n".join(lines)
    assert main(["plot", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "σ per module" in shown and f"{sigmas['head']:.4g}" in shown and "sigma.png" in shown
    assert (out / "sigma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_of_a_finished_run_changes_nothing_and_a_changed_config_is_refused(trained, tiny_config, capsys):
    before = (trained / "metrics.jsonl").read_text()
    assert main(["train", str(tiny_config), "--out", str(trained), "--quiet", "--resume"]) == 0
    assert (trained / "metrics.jsonl").read_text() == before
    assert main(["train", str(tiny_config), "--out", str(trained), "--quiet"]) == 1
    assert "already holds a run: add --resume" in capsys.readouterr().err
    assert main(["train", str(tiny_config), "--out", str(trained), "--quiet", "--resume",
                 "--set", "learner.inner_lr=0.02"]) == 1
    assert "learner.inner_lr: 0.01 -> 0.02" in capsys.readouterr().err


def test_nan_run_stops_with_one_line_naming_the_iteration_and_cause(tiny_config, tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["train", str(tiny_config), "--out", str(out), "--quiet",
                 "--set", "train.lr=1e6", "--set", "train.checkpoint_every=1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert re.match(r"modmeta: error: the loss became (nan|inf) at iteration 2 "
                    r"\(last good checkpoint: .*last.pt at iteration 1\)", err)
    assert "inner_lr=0.01" in err and "lr=1e+06" in err and "lower it" in err
    state = checkpoint.load(out / "last.pt")
    assert state["iteration"] == 1 and all(v.isfinite().all() for v in state["learner"].values())


def test_errors_are_one_line_unless_debug(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "iteratons": 3}}))
    assert main(["train", str(bad), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean train.iterations?" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.startswith("modmeta: error: ")
    assert main(["--debug", "eval", str(tmp_path / "nothing")]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["plot"], ["list"], ["demo"]])
def test_help_everywhere_with_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_list_shows_every_registered_name_on_one_line(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for table in (registry.LEARNERS, registry.TASKS, registry.MODELS):
        for name, entry in table.items():
            assert f"  {name}" in "\n".join(lines)
            assert sum(line.split()[0] == name and entry.summary in line for line in lines) == 1


def test_demo_compares_maml_with_the_baseline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iterations", "30", "--episodes", "20", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "MAML (meta-learned)" in text and "pretrained (baseline)" in text and "±" in text
    assert str(out / "adaptation.png") in text
    results = json.loads((out / "results.json").read_text())
    assert {e["episodes"] for e in results.values()} == {20}
    assert all(math.isfinite(e["mean"]) for e in results.values())
    for name in ("maml/best.pt", "pretrained/best.pt", "adaptation.png", "learning_curves.png"):
        assert (out / name).is_file()


def test_the_best_step_of_a_long_curve_is_chosen_on_validation_episodes(trained, capsys):
    assert main(["eval", str(trained), "--steps", "25", "--episodes", "20", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    run = config.restore(trained)
    val = mm.evaluate(run.learner, run.tasks.split("val"), episodes=10, steps=25, seed=run.config.train.val_seed)
    means = [m for m, _ in val.curve]
    chosen = record["best_step"]
    assert chosen["step"] == means.index(min(means)) and chosen["episodes"] == 10  # train.val_episodes
    assert chosen["val"] == list(val.curve[chosen["step"]]) and chosen["test"] == record["curve"][chosen["step"]]
    assert main(["eval", str(trained), "--steps", "25", "--episodes", "20"]) == 0
    assert "chosen on 10 validation episodes" in capsys.readouterr().out
