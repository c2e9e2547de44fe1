"""Training stability across seeds (seed 004, limitation 1): one config trained with several
seeds, each evaluated on the same test episodes, and how much the results vary.

``modmeta seeds CONFIG --out DIR --seeds 0 1 2 3 4`` trains ``DIR/seed-N`` with
``train.seed = N`` through ``modmeta train`` (resuming a run folder that exists), evaluates it
with ``modmeta eval`` (the config's ``eval`` settings: every seed sees the same episodes), and
reports:

- each seed's test metric (± its 95% CI over episodes) and best validation;
- across seeds: the mean, the standard deviation and the 95% CI of the mean (Student's t);
- the iteration-to-iteration variability of validation: the mean absolute change between
  consecutive validation points, and the standard deviation of the validation metric over the
  second half of training, each averaged over seeds.

Everything comes from the run folders' ``metrics.jsonl`` and ``eval.json``, written to
``DIR/seeds.json``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Two-sided 95% quantiles of Student's t for n - 1 = 1 .. 30 degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042]


def across(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation and the half-width of the 95% CI of the mean (Student's t)."""
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    t = T95[min(n - 2, len(T95) - 1)] if n > 1 else math.nan
    return {"mean": mean, "sd": sd, "ci95": t * sd / math.sqrt(n) if n > 1 else math.nan, "seeds": n}


def variability(val: Sequence[float]) -> dict[str, float]:
    """Of one run's validation metrics in order: the mean absolute change between consecutive
    points and the standard deviation over the second half."""
    steps = [abs(b - a) for a, b in zip(val, val[1:])]
    late = val[len(val) // 2:]
    return {"mean_change": statistics.fmean(steps) if steps else math.nan,
            "late_sd": statistics.stdev(late) if len(late) > 1 else math.nan}


def summarise(folders: dict[int, Path]) -> dict[str, Any]:
    """The stability report of trained and evaluated run folders (seed -> folder)."""
    runs = []
    for seed, folder in folders.items():
        evaluation = json.loads((folder / "eval.json").read_text())
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        metric = evaluation["metric"]
        val = [r[metric] for r in records if r["split"] == "val"]
        best = (max if metric == "accuracy" else min)(val) if val else math.nan
        runs.append({"seed": seed, "folder": str(folder), "metric": metric, "test": evaluation["mean"],
                     "test_ci95": evaluation["ci95"], "episodes": evaluation["episodes"], "best_val": best,
                     "validations": len(val), **variability(val)})
    report: dict[str, Any] = {"metric": runs[0]["metric"], "runs": runs,
                              "test": across([r["test"] for r in runs])}
    for key in ("mean_change", "late_sd"):
        finite = [r[key] for r in runs if math.isfinite(r[key])]
        report[f"val_{key}"] = statistics.fmean(finite) if finite else math.nan
    return report


def table(report: dict[str, Any]) -> str:
    """The report as text: one line per seed, then the spread."""
    pct = 100 if report["metric"] == "accuracy" else 1
    unit = "%" if pct == 100 else ""

    def num(x: float) -> str:
        return f"{pct * x:.2f}{unit}" if math.isfinite(x) else "-"

    lines = [f"{'seed':>6}  {'test ' + report['metric']:>22}  {'best val':>9}  {'val change':>10}  {'late val sd':>11}"]
    for r in report["runs"]:
        lines.append(f"{r['seed']:>6}  {num(r['test']) + ' ± ' + num(r['test_ci95']):>22}  {num(r['best_val']):>9}  "
                     f"{num(r['mean_change']):>10}  {num(r['late_sd']):>11}")
    t = report["test"]
    lines.append(f"across {t['seeds']} seeds: {num(t['mean'])} ± {num(t['ci95'])} (95% CI of the mean), "
                 f"sd {num(t['sd'])}; validation changes by {num(report['val_mean_change'])} between "
                 f"validations on average, sd {num(report['val_late_sd'])} over the second half of training")
    return "\n".join(lines)
