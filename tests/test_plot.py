"""Figures a researcher would keep: `modmeta plot` on a run of each learner kind draws every
figure with a title naming the run, accuracy in percent, no empty axis and no figure without
data; module-usage heat maps group their rows and count slots on a colour bar of whole numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modmeta import plot
from modmeta.cli import main

SINUSOID = {"name": "sinusoid", "shots": 5, "queries": 5}
TRAIN = {"iterations": 6, "meta_batch": 2, "seed": 0, "val_every": 3, "val_episodes": 4, "checkpoint_every": 3,
         "log_every": 1}


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every figure ``modmeta.plot`` saves, by file name, as the Figure itself."""
    figures: dict[str, Any] = {}
    save = plot._save

    def keep(fig: Any, path: str | Path, title: str = "") -> Path:
        figures[Path(path).name] = fig
        return save(fig, path, title)

    monkeypatch.setattr(plot, "_save", keep)
    return figures


def _images(tmp_path: Path) -> Path:
    """An .npz of 6 classes of 10 random 1×16×16 images each (class-dependent brightness)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 10)
    x = rng.random((60, 1, 16, 16)).astype(np.float32) * (1 + y[:, None, None, None] % 3)
    np.savez(tmp_path / "images.npz", x=x, y=y)
    return tmp_path / "images.npz"


def _run(tmp_path: Path, name: str, cfg: dict[str, Any], evaluate: bool = True) -> Path:
    path, out = tmp_path / f"{name}.yaml", tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(out), "--quiet"]) == 0
    if evaluate:
        assert main(["eval", str(out), "--episodes", "4"]) == 0
    assert main(["plot", str(out)]) == 0
    return out


def _check(fig: Any, heading: str) -> None:
    """The figure names the run, and each of its panels (colour bars aside) holds data."""
    texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
    assert any(heading in t for t in texts), (heading, texts)
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.lines or ax.images or ax.collections or ax.patches, f"an empty panel: {ax.get_title()!r}"


def test_gradient_learner_figures_are_titled_and_full(tmp_path, drawn):
    cfg = {"tasks": SINUSOID, "model": {"name": "mlp", "hidden": [8]},
           "learner": {"name": "lslr", "inner_lr": 0.01, "inner_steps": 2}, "train": TRAIN}
    _run(tmp_path, "lslr", cfg)
    assert {"learning_curves.png", "adaptation.png", "inner_rates.png"} <= set(drawn)
    for fig in drawn.values():
        _check(fig, "lslr on sinusoid, 5 shots")


def test_without_validation_the_learning_curves_have_one_panel_with_visible_points(tmp_path, drawn):
    cfg = {"tasks": SINUSOID, "model": {"name": "mlp", "hidden": [8]},
           "learner": {"name": "maml", "inner_lr": 0.01}, "train": {**TRAIN, "iterations": 1, "val_every": 0}}
    _run(tmp_path, "maml", cfg, evaluate=False)
    fig = drawn["learning_curves.png"]
    assert len(fig.axes) == 1
    (line,) = fig.axes[0].lines
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"  # one logged point, drawn as a dot
    assert "adaptation.png" not in drawn  # no validation, no eval: nothing to draw there


def test_metric_learner_accuracy_is_in_percent_and_no_single_dot_adaptation_figure(tmp_path, drawn, capsys):
    cfg = {"tasks": {"name": "npz", "path": str(_images(tmp_path)), "ways": 2, "shots": 1, "queries": 2, "test": 2,
                     "val": 2},
           "model": {"name": "conv4", "out": None, "hidden": 4}, "learner": {"name": "protonet"}, "train": TRAIN}
    _run(tmp_path, "protonet", cfg)
    assert "no adaptation.png: the learner is scored without adaptation steps" in capsys.readouterr().out
    assert "adaptation.png" not in drawn
    fig = drawn["learning_curves.png"]
    _check(fig, "protonet on npz, 2-way 1-shot")
    validation = fig.axes[1]
    assert validation.get_ylabel() == "validation accuracy (%)"
    assert max(validation.lines[0].get_ydata()) > 1  # percent, not a fraction


def test_structure_learner_heat_maps_group_rows_and_count_in_whole_numbers(tmp_path, drawn):
    cfg = {"tasks": {"name": "function-sums", "shots": 8, "queries": 8},
           "model": {"name": "modular", "modules": [[4, [8]]]},
           "learner": {"name": "bouncegrad", "search_steps": 5, "anneal_iterations": 6}, "train": TRAIN}
    _run(tmp_path, "bouncegrad", cfg)
    assert {"learning_curves.png", "module_usage.png", "test_module_usage.png", "test_structures.png",
            "test_function_modules.png"} <= set(drawn)
    for fig in drawn.values():
        _check(fig, "bouncegrad on function-sums, 8 shots")
    usage = drawn["test_module_usage.png"]
    heat, bar = usage.axes
    labels = [t.get_text() for t in heat.get_yticklabels()]
    assert len(labels) < 100 and all(label.endswith(("tasks)", "(1 task)")) for label in labels)
    shares = drawn["test_function_modules.png"].axes[1]
    assert "%" in shares.get_ylabel()


def test_group_rows_merges_equal_labels_or_equal_rows_and_keeps_the_largest():
    rows, labels, total = plot.group_rows([[1, 0], [0, 1], [1, 1]], ["a", "b", "a"])
    assert (rows, labels, total) == ([[1.0, 0.5], [0.0, 1.0]], ["a (2 tasks)", "b (1 task)"], 2)
    rows, labels, total = plot.group_rows([[1, 0], [0, 1], [1, 0], [1, 0]], ["t0", "t1", "t2", "t3"], most=1)
    assert (rows, labels, total) == ([[1.0, 0.0]], ["3 tasks: t0, ..."], 2)
    rows, labels, total = plot.group_rows([[1, 0], [0, 1]], ["t0", "t1"])
    assert (rows, labels, total) == ([[1, 0], [0, 1]], ["t0", "t1"], 2)


def test_whole_number_maps_get_a_labelled_integer_colour_bar(tmp_path, drawn):
    plot.module_usage([[0, 2, 1], [1, 1, 0]], ["t0", "t1"], tmp_path / "usage.png", "run")
    bar = drawn["usage.png"].axes[1]
    assert list(bar.get_yticks()) == [0, 1, 2] and bar.get_ylabel() == "slots holding the module"


def test_a_single_point_is_no_adaptation_curve(tmp_path):
    with pytest.raises(ValueError, match="no adaptation curve"):
        plot.adaptation({"protonet": [(0.9, 0.01)]}, "accuracy", tmp_path / "a.png")


def test_run_title_reads_ways_and_shots_or_the_family_defaults():
    assert plot.run_title({"learner": {"name": "maml"}, "tasks": {"name": "omniglot", "ways": 20}}) == \
        "maml on omniglot, 20-way 1-shot"
    assert plot.run_title({"learner": {"name": "maml"}, "tasks": {"name": "sinusoid"}}) == "maml on sinusoid, 10 shots"
