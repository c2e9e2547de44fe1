"""Figures of a run: learning curves, and the metric against adaptation steps.

Both read plain data (the records of ``metrics.jsonl``, the ``curve`` of an evaluation), so
a figure can be redrawn from a run folder without rebuilding anything. Figures are drawn
off-screen on plain ``matplotlib.figure.Figure`` objects: no display is needed, and neither
pyplot's global state nor the user's backend is touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import ticker
from matplotlib.figure import Figure

Records = Sequence[Mapping[str, Any]]
Curve = Sequence[Sequence[float]]  # [(mean, ci95) after 0, 1, ... steps]


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: is {folder} a run folder written by `modmeta train`?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metric_of(records: Records) -> str:
    """The metric the records report (``"accuracy"`` or ``"mse"``)."""
    for r in records:
        for key in ("accuracy", "mse"):
            if key in r:
                return key
    raise ValueError("the records report no metric (accuracy or mse)")


def learning_curves(runs: Mapping[str, Records], path: str | Path) -> Path:
    """Training loss, and the validation metric with its 95% CI, against iterations.

    ``runs`` maps a label to a run's records; each run is one line per panel.
    """
    fig = _figure((10, 4))
    left, right = fig.subplots(1, 2)
    metric = "metric"
    for label, records in runs.items():
        train = [r for r in records if r["split"] == "train"]
        left.plot([r["iteration"] for r in train], [r["loss"] for r in train], label=label)
        val = [r for r in records if r["split"] == "val"]
        if val:
            metric = metric_of(val)
            its = [r["iteration"] for r in val]
            mean = [r[metric] for r in val]
            ci = [r["ci95"] for r in val]
            right.plot(its, mean, marker="o", markersize=3, label=label)
            right.fill_between(its, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)], alpha=0.2)
    left.set(xlabel="iteration", ylabel="training loss (meta-batch mean)", yscale="log",
             title="training")
    right.set(xlabel="iteration", ylabel=f"validation {metric}", title="validation (mean ± 95% CI)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend()
    return _save(fig, path)


CONFLICT = (("grad_cos_mean", "mean cosine"), ("grad_cos_min", "minimum cosine"),
            ("grad_conflict", "conflicting pairs"))


def gradient_conflict(runs: Mapping[str, Records], path: str | Path) -> Path:
    """The tasks' meta-gradient conflicts over training (seed 004's thrashing diagnostics): the
    mean and minimum pairwise cosine and the fraction of conflicting pairs (left), and the
    meta-gradient norm (right), from the training records that carry them."""
    fig = _figure((10, 4))
    left, right = fig.subplots(1, 2)
    for label, records in runs.items():
        train = [r for r in records if r["split"] == "train" and "grad_norm" in r]
        its = [r["iteration"] for r in train]
        for key, name in CONFLICT:
            if any(key in r for r in train):
                left.plot(its, [r.get(key, float("nan")) for r in train], label=f"{label}: {name}" if len(runs) > 1 else name)
        right.plot(its, [r["grad_norm"] for r in train], label=label)
    left.axhline(0, color="black", linewidth=0.5)
    left.set(xlabel="iteration", ylabel="between two tasks' meta-gradients", title="gradient conflict")
    right.set(xlabel="iteration", ylabel="‖meta-gradient‖", yscale="log", title="meta-gradient norm")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    if len(runs) > 1:
        right.legend(fontsize=7)
    return _save(fig, path)


def adaptation(curves: Mapping[str, Curve], metric: str, path: str | Path, title: str = "") -> Path:
    """The metric (mean ± 95% CI) against the number of adaptation steps, one line per label.

    Curves of more than 50 steps (long adaptation) get a logarithmic step axis (linear up to
    one step), and a logarithmic MSE axis, so the first steps and the late overfitting are both
    visible."""
    fig = _figure((6, 4))
    ax = fig.subplots()
    long = max(map(len, curves.values()), default=0) > 51
    for label, curve in curves.items():
        steps = list(range(len(curve)))
        mean = [m for m, _ in curve]
        ci = [c for _, c in curve]
        ax.plot(steps, mean, marker="" if long else "o", markersize=3, label=label)
        ax.fill_between(steps, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)], alpha=0.2)
    if long:
        ax.set_xscale("symlog", linthresh=1)
        if "mse" in metric.lower():
            ax.set_yscale("log")
    ax.set(xlabel="adaptation steps", ylabel=metric, title=title or f"{metric} after k adaptation steps")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _figure(size: tuple[float, float]) -> Figure:
    """A figure of ``size`` inches, drawn off-screen: a plain ``Figure`` needs no pyplot, no
    display and no backend choice, so plotting changes nothing in the user's matplotlib."""
    return Figure(figsize=size)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# -- modular learners (BounceGrad, MoMA): see modmeta.structures for the data ------------------


def module_usage(usage: Sequence[Sequence[float]], tasks: Sequence[str], path: str | Path, title: str = "",
                 ylabel: str = "task") -> Path:
    """A task × module heat map: ``usage[t][k]`` slots of task ``t``'s structure hold module ``k``
    (or any other row × module quantity, e.g. a true function's share of tasks using it)."""
    rows, cols = len(usage), len(usage[0]) if usage else 0
    fig = _figure((2 + 0.3 * cols, 1.5 + 0.12 * rows))
    ax = fig.subplots()
    image = ax.imshow(usage, aspect="auto", cmap="Blues", interpolation="nearest", vmin=0)
    ax.set(xlabel="module", ylabel=ylabel, title=title or "modules used by each task")
    ax.set_xticks(range(cols))
    if rows <= 150:
        ax.set_yticks(range(rows))
        ax.set_yticklabels(tasks, fontsize=max(3, min(8, 600 // max(rows, 1))))
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def structures(examples: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """The structure found for each of a few test tasks: its support points, the prediction and
    each selected module on a grid (the records of :func:`modmeta.structures.examples`)."""
    n = len(examples)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = _figure((4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, e in zip(axes.flat, examples):
        for name, values in e["parts"].items():
            ax.plot(e["grid"], values, linestyle="--", linewidth=1, label=name)
        ax.plot(e["grid"], e["prediction"], color="black", linewidth=1.5, label="prediction")
        ax.scatter(e["x"], e["y"], color="red", s=12, zorder=3, label="training points")
        ax.set_title(f"{e['label']}\nquery MSE {e['mse']:.3f}", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)


# -- shrinkage learners (σ-MAML, σ-iMAML, σ-Reptile): see modmeta.learners.shrinkage ----------


def inner_rates(rates: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Learned inner rates: one line per parameter tensor of its rate at each inner step (a
    single point per tensor for per-parameter rates, their mean); ``learner.report()["inner_rates"]``."""
    fig = _figure((6, 4))
    ax = fig.subplots()
    for name, values in rates.items():
        ax.plot(range(len(values)), values, marker="o", markersize=3, label=name)
    ax.set(xlabel="inner step", ylabel="learned rate α", title=title or "learned inner rates")
    ax.set_xticks(range(max(map(len, rates.values()), default=0)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def shrinkage(sigmas: Mapping[str, float], path: str | Path, title: str = "") -> Path:
    """A bar per module of its learned prior scale ``σ_m`` (log axis): small bars are modules
    shared across tasks, tall ones task-specific (``learner.sigmas()`` gives the mapping)."""
    names = list(sigmas)
    fig = _figure((3 + 0.5 * len(names), 3.5))
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), [sigmas[n] for n in names], color="tab:blue")
    ax.bar_label(bars, labels=[f"{sigmas[n]:.3g}" for n in names], fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set(yscale="log", xlabel="module", ylabel="σ (prior scale)")
    ax.set_title(title or "σ per module\n(large: task-specific, small: shared)", fontsize=9)
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
