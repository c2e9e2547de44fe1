"""Figures of a run: learning curves, and the metric against adaptation steps.

Both read plain data (the records of ``metrics.jsonl``, the ``curve`` of an evaluation), so
a figure can be redrawn from a run folder without rebuilding anything. Figures are drawn
off-screen on plain ``matplotlib.figure.Figure`` objects: no display is needed, and neither
pyplot's global state nor the user's backend is touched.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colors, ticker
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


def learning_curves(runs: Mapping[str, Records], path: str | Path, title: str = "") -> Path:
    """Training loss, and the validation metric with its 95% CI, against iterations.

    ``runs`` maps a label to a run's records; each run is one line per panel. The validation
    panel is left out when no run validated; accuracy is drawn in percent; short curves get
    markers, so that a run of one logged step still shows its point.
    """
    if not any(r["split"] == "train" for records in runs.values() for r in records):
        raise ValueError("no training records to draw: the run has not logged a step yet")
    validated = any(r["split"] == "val" for records in runs.values() for r in records)
    fig = _figure((10, 4) if validated else (5.5, 4))
    axes = fig.subplots(1, 2 if validated else 1, squeeze=False)[0]
    left = axes[0]
    metric = "metric"
    for label, records in runs.items():
        train = [r for r in records if r["split"] == "train"]
        left.plot([r["iteration"] for r in train], [r["loss"] for r in train], label=label, **_markers(len(train)))
        val = [r for r in records if r["split"] == "val"]
        if val:
            metric = metric_of(val)
            scale = _scale(metric)
            its = [r["iteration"] for r in val]
            mean = [scale * r[metric] for r in val]
            ci = [scale * r["ci95"] for r in val]
            axes[1].plot(its, mean, label=label, **_markers(len(val), always=True))
            axes[1].fill_between(its, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)], alpha=0.2)
    left.set(xlabel="iteration", ylabel="training loss (meta-batch mean)", yscale="log", title="training")
    _plain_log_labels(left)
    if validated:
        axes[1].set(xlabel="iteration", ylabel=f"validation {_axis_label(metric)}", title="validation (mean ± 95% CI)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend()
    return _save(fig, path, title)


CONFLICT = (("grad_cos_mean", "mean cosine"), ("grad_cos_min", "minimum cosine"),
            ("grad_conflict", "conflicting pairs"))


def gradient_conflict(runs: Mapping[str, Records], path: str | Path, title: str = "") -> Path:
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
    return _save(fig, path, title)


def adaptation(curves: Mapping[str, Curve], metric: str, path: str | Path, title: str = "") -> Path:
    """The metric (mean ± 95% CI) against the number of adaptation steps, one line per label.

    Curves of more than 50 steps (long adaptation) get a logarithmic step axis (linear up to
    one step), and a logarithmic MSE axis, so the first steps and the late overfitting are both
    visible. Accuracy is drawn in percent. A learner that does not adapt in steps (a metric
    learner: one point) has no curve to draw, and is refused."""
    if max(map(len, curves.values()), default=0) < 2:
        raise ValueError("no adaptation curve to draw: the learner is scored once, without adaptation steps")
    fig = _figure((6, 4))
    ax = fig.subplots()
    long = max(map(len, curves.values())) > 51
    scale = _scale(metric)
    for label, curve in curves.items():
        steps = list(range(len(curve)))
        mean = [scale * m for m, _ in curve]
        ci = [scale * c for _, c in curve]
        ax.plot(steps, mean, marker="" if long else "o", markersize=3, label=label)
        ax.fill_between(steps, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)], alpha=0.2)
    if long:
        ax.set_xscale("symlog", linthresh=1)
        if "mse" in metric.lower():
            ax.set_yscale("log")
    ax.set(xlabel="adaptation steps", ylabel=_axis_label(metric))
    ax.set_title(title or f"{metric} after k adaptation steps", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def run_title(cfg: Mapping[str, Any]) -> str:
    """What a run is, for its figures' titles: ``maml on omniglot, 5-way 1-shot`` (ways and shots
    from the config's ``tasks``, else the task family's defaults), from the plain config data."""
    from modmeta import registry  # the registry imports every component: only when a title is made

    tasks = dict(cfg.get("tasks") or {})
    learner, family = (cfg.get("learner") or {}).get("name", "?"), tasks.get("name", "?")
    entry = registry.TASKS.get(family)
    if entry is not None:
        defaults = inspect.signature(entry.build).parameters
        for key in ("ways", "shots"):
            if key not in tasks and key in defaults and defaults[key].default is not inspect.Parameter.empty:
                tasks[key] = defaults[key].default
    if "ways" in tasks:
        return f"{learner} on {family}, {tasks['ways']}-way {tasks.get('shots', '?')}-shot"
    return f"{learner} on {family}, {tasks['shots']} shots" if "shots" in tasks else f"{learner} on {family}"


def _plain_log_labels(ax: Any) -> None:
    """Log-axis labels as plain numbers (0.8, not 8×10⁻¹); minor ticks labelled only when the
    axis spans less than a decade (else no decade label would show)."""
    def minor(value: float, _: int) -> str:
        low, high = ax.get_ylim()
        return f"{value:g}" if low > 0 and math.log10(high / low) < 1 else ""

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(minor))


def _tasks(n: int) -> str:
    return f"{n} task{'s' if n != 1 else ''}"


def _scale(metric: str) -> float:
    """100 for accuracy (drawn in percent), else 1."""
    return 100.0 if "accuracy" in metric.lower() else 1.0


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if "accuracy" in metric.lower() else metric


def _markers(points: int, always: bool = False) -> dict[str, Any]:
    """Markers for a short line (a single logged point is otherwise invisible)."""
    return {"marker": "o", "markersize": 3} if always or points <= 30 else {}


def _figure(size: tuple[float, float]) -> Figure:
    """A figure of ``size`` inches, drawn off-screen: a plain ``Figure`` needs no pyplot, no
    display and no backend choice, so plotting changes nothing in the user's matplotlib."""
    return Figure(figsize=size)


def _save(fig: Any, path: str | Path, title: str = "") -> Path:
    """Write ``fig`` to ``path`` (a PNG), with ``title`` above all its panels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# -- modular learners (BounceGrad, MoMA): see modmeta.structures for the data ------------------


def module_usage(usage: Sequence[Sequence[float]], tasks: Sequence[str], path: str | Path, title: str = "",
                 ylabel: str = "task", value: str = "slots holding the module", group: bool = True,
                 most: int = 40) -> Path:
    """A task × module heat map: ``usage[t][k]`` slots of task ``t``'s structure hold module ``k``
    (or any other row × module quantity named by ``value``, e.g. a true function's share of tasks
    using it, with ``group=False``).

    Rows of tasks are grouped (:func:`group_rows`) and the ``most`` largest groups drawn, so a
    hundred tasks make a readable figure; a map of small whole numbers (slot counts) gets a
    colour bar of whole numbers."""
    if not usage:
        raise ValueError("no rows to draw: module usage needs at least one task")
    rows, labels, total = group_rows(usage, tasks, most) if group else ([list(r) for r in usage], list(tasks), len(usage))
    cols = len(rows[0])
    fig = _figure((4.5 + 0.3 * cols, 1.8 + 0.22 * len(rows)))
    ax = fig.subplots()
    top = max(v for row in rows for v in row)
    whole = top <= 20 and all(float(v).is_integer() for row in rows for v in row)  # counts of slots
    norm = colors.BoundaryNorm([b - 0.5 for b in range(int(top) + 2)], 256) if whole else None
    image = ax.imshow(rows, aspect="auto", cmap="Blues", interpolation="nearest", norm=norm,
                      **({} if whole else {"vmin": 0}))
    shown = f" ({len(rows)} largest of {total} groups)" if total > len(rows) else ""
    ax.set(xlabel="module", ylabel=ylabel + shown)
    ax.set_title(title or "modules used by each task", fontsize=9)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    bar = fig.colorbar(image, ax=ax, ticks=range(int(top) + 1) if whole else None)
    bar.set_label(value if whole or not group else f"{value}\n(mean over the group)", fontsize=8)
    return _save(fig, path)


def group_rows(rows: Sequence[Sequence[float]], labels: Sequence[str], most: int = 40
               ) -> tuple[list[list[float]], list[str], int]:
    """Rows grouped for a heat map: rows sharing a label (tasks of one true function) become their
    mean, labelled ``name (n tasks)``, in first-seen order; with every label distinct, equal rows
    (tasks with one structure) become one, labelled by their count and first label, and rows
    using the same modules are put next to each other. The ``most`` largest groups are kept;
    the total number of groups comes back too."""
    keys = labels if len(set(labels)) < len(labels) else [tuple(r) for r in rows]
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    kept = sorted(groups.values(), key=len, reverse=True)[:most]
    if keys is labels:  # in first-seen order
        kept.sort(key=lambda members: members[0])
    else:  # clustered: rows using the same modules next to each other
        kept.sort(key=lambda members: [-v for v in rows[members[0]]])
    if len(groups) == len(rows):  # nothing to group: the rows as they are
        return [list(rows[i]) for i, in kept], [labels[i] for i, in kept], len(groups)
    means = [[sum(rows[i][k] for i in members) / len(members) for k in range(len(rows[0]))] for members in kept]
    names = [f"{labels[m[0]]} ({_tasks(len(m))})" if keys is labels else
             f"{_tasks(len(m))}: {labels[m[0]]}{', ...' if len(m) > 1 else ''}" for m in kept]
    return means, names, len(groups)


def structures(examples: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
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
    return _save(fig, path, title)


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
