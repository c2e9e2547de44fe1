"""Small things a new user meets first: `modmeta list NAME`, a warning for a learner schedule
longer than the run, progress lines instead of a bar in a log file, and the README's Python
quick start run twice in one folder."""

from __future__ import annotations

import runpy
import sys
import warnings
from pathlib import Path

import pytest
import torch

import modmeta as mm
from modmeta.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_list_name_prints_the_summary_and_each_argument_with_its_type_and_default(capsys):
    assert main(["list", "maml"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "maml (learner): " + mm.registry.LEARNERS["maml"].summary
    args = {line.split()[0]: line for line in lines[1:]}
    assert list(args) == ["model", "inner_lr", "inner_steps", "first_order", "inner", "aggregate", "execution", "batchnorm"]
    assert args["inner_lr"].split(None, 1)[1] == "float, default 0.4"
    assert "required (built from the config's model section)" in args["model"]
    assert main(["list", "implicit"]) == 0  # a value a learner is composed from
    out = capsys.readouterr().out
    assert out.startswith("implicit (outer update): ") and "cg_steps  int, default 5" in out
    assert main(["list", "conv4"]) == 0
    assert "out          int | None, required (read off the task family when left out)" in capsys.readouterr().out
    assert main(["list", "reptile"]) == 0  # a learner and an outer update share the name: both are shown
    out = capsys.readouterr().out
    assert "reptile (learner): " in out and "reptile (outer update): " in out


def test_list_of_an_unknown_name_is_one_line_with_the_closest_name(capsys):
    assert main(["list", "protonett"]) == 1
    err = capsys.readouterr().err
    assert err == "modmeta: error: nothing is called 'protonett'; did you mean protonet? (`modmeta list` shows every name)\n"


def bouncegrad_trainer(anneal_iterations: int) -> mm.Trainer:
    torch.manual_seed(0)
    learner = mm.learners.BounceGrad(mm.models.ModularNet(1, 1, modules=((2, (4,)),)), search_steps=2,
                                     anneal_iterations=anneal_iterations)
    return mm.Trainer(learner, mm.tasks.FunctionSums(shots=4, queries=4), meta_batch=2, progress=False)


def test_a_learner_schedule_longer_than_the_run_is_warned_about_with_both_numbers():
    with pytest.warns(UserWarning, match=r"the learner's anneal_iterations \(5\) exceeds the run's iterations \(2\)"):
        bouncegrad_trainer(5).fit(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bouncegrad_trainer(2).fit(2)


def test_without_a_terminal_progress_is_one_short_line_per_log_step(capsys, monkeypatch):
    tasks = mm.tasks.Sinusoid(3, 3)

    def fit(progress: bool) -> str:
        torch.manual_seed(0)
        learner = mm.learners.MAML(mm.models.MLP(1, 1, (4,)), inner_lr=0.01)
        mm.Trainer(learner, tasks, meta_batch=2, val_tasks=tasks.split("val"), val_every=4, val_episodes=2,
                   log_every=2, progress=progress).fit(6)
        return capsys.readouterr().err

    lines = fit(True).splitlines()  # captured: standard error is not a terminal
    assert [line.split("  ")[0] for line in lines] == ["iteration 2/6", "iteration 4/6", "iteration 6/6"]
    assert all(line.split("  ")[1].startswith("loss ") and "  mse " in line for line in lines)
    assert "val mse " in lines[1] and "val" not in lines[0]
    assert fit(False) == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = fit(True)
    assert "6/6" in bar and "\r" in bar and "iteration" not in bar  # on a terminal: the bar, as before


def test_the_readme_quick_start_runs_twice_in_one_folder(tmp_path, monkeypatch, capsys):
    block = README.read_text().split("In Python:\n\n```python\n")[1].split("```")[0]
    short = block.replace("iterations=10_000", "iterations=20").replace("val_every=1000", "val_every=10")
    short = short.replace("episodes=600", "episodes=10")
    assert short.count("=20") == 1 and short.count("val_every=10") == 1 and short.count("episodes=10") == 1
    script = tmp_path / "quickstart.py"
    script.write_text(short)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for _ in range(2):
        runpy.run_path(str(script), run_name="__main__")
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "MSE" in outputs[0]  # the second run resumed the finished one
    assert torch.load(tmp_path / "runs/maml/last.pt", weights_only=True)["iteration"] == 20
