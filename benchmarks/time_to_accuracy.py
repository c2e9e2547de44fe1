"""The time-to-accuracy figure: validation accuracy against training CPU minutes, every learner
on one plot (issue 11, item 7), from the JSON results of ``omniglot.py``, and the table of
the same runs (``--table``): per learner, each seed's test accuracy, their mean with the
spread across seeds (sample standard deviation) and the mean 95% CI over test episodes.

Each result holds the validation points its run took every ``--val-every`` CPU seconds. Runs
of one learner with several seeds are drawn as thin lines with their mean as a thick one (the
points are averaged by position: the seeds validate at the same CPU times). The legend gives
each learner's test accuracy (mean over its seeds; at the step chosen on validation, as in the
table) and the number of seeds.

    python benchmarks/time_to_accuracy.py benchmarks/results/omniglot-*-20min-seed*.json \\
        --out benchmarks/results/time-to-accuracy.png --table
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure


def label(result: dict) -> str:
    """The learner's name and its settings that tell two curves apart: the test ways and shots,
    and the command's ``--set`` overrides other than the training seed (a base learner run from
    another's config, e.g. σ-MAML with ``learner.sigma=1e8``, is not a seed of it)."""
    tasks = result["config"]["tasks"]
    test = {**tasks, **(result["config"].get("eval", {}).get("tasks") or {})}
    words = result.get("command", "").split()
    overrides = [w.split("=", 1)[1] if w.startswith("--set=") else words[i + 1]
                 for i, w in enumerate(words) if w == "--set" or w.startswith("--set=")]
    changed = [o for o in overrides if not o.startswith("train.seed=")]
    return f"{result['config']['learner']['name']} {test['ways']}w{test['shots']}s" + (
        f" [{', '.join(changed)}]" if changed else "")


def test_accuracy(result: dict) -> tuple[float, float]:
    """The run's test accuracy and its 95% CI: at the step chosen on validation (``best``) where
    the run chose one, else after its last step."""
    return tuple(result.get("best", {}).get("test", [result["evaluation"]["mean"], result["evaluation"]["ci95"]]))


def by_learner(results: list[dict]) -> dict[str, list[dict]]:
    """The results with validation points, grouped by :func:`label`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("validation"):
            groups[label(r)].append(r)
    return groups


def table(results: list[dict]) -> str:
    """A markdown table: one row per learner with its seeds' test accuracies (the reported
    ``best`` step where the run chose one on validation), their mean ± the spread across seeds,
    the mean episode CI, the other batch-norm statistics' mean, and the mean iterations."""
    rows = ["| learner | seeds | test accuracy per seed (%) | mean ± spread across seeds | "
            "episode 95% CI | other batch norm | iterations |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in sorted(by_learner(results).items()):
        runs = sorted(runs, key=lambda r: r["config"]["train"]["seed"])
        test = [test_accuracy(r) for r in runs]
        acc = [100 * t[0] for t in test]
        spread = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else " (one seed)"
        other = [(mode, 100 * o["mean"]) for r in runs for mode, o in (r.get("other_batchnorm") or {}).items()]
        other_text = f"{statistics.fmean(a for _, a in other):.2f}% ({other[0][0]})" if other else "—"
        rows.append(f"| {name} | {', '.join(str(r['config']['train']['seed']) for r in runs)} | "
                    f"{', '.join(f'{a:.2f}' for a in acc)} | **{statistics.fmean(acc):.2f}**{spread} | "
                    f"± {100 * statistics.fmean(t[1] for t in test):.2f} | {other_text} | "
                    f"{statistics.fmean(r['iterations'] for r in runs):,.0f} |")
    return "\n".join(rows)


def draw(results: list[dict], out: Path) -> Path:
    """One line per learner (mean over seeds) with each seed's run drawn thinly."""
    groups = by_learner(results)
    if not groups:
        raise SystemExit("none of the results holds validation points: rerun them with omniglot.py")
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for i, (name, runs) in enumerate(sorted(groups.items())):
        color, style = f"C{i % 10}", ["-", "--", ":"][i // 10 % 3]  # past ten learners the colours repeat: the line style tells
        for r in runs:
            ax.plot([p["cpu_seconds"] / 60 for p in r["validation"]],
                    [100 * p["accuracy"] for p in r["validation"]], color=color, alpha=0.3, linewidth=0.8)
        points = min(len(r["validation"]) for r in runs)
        minutes = [sum(r["validation"][k]["cpu_seconds"] for r in runs) / len(runs) / 60 for k in range(points)]
        accuracy = [100 * sum(r["validation"][k]["accuracy"] for r in runs) / len(runs) for k in range(points)]
        test = 100 * sum(test_accuracy(r)[0] for r in runs) / len(runs)
        ax.plot(minutes, accuracy, color=color, linestyle=style, linewidth=2, marker="o", markersize=3,
                label=f"{name}: test {test:.1f}% ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    ax.set_xlabel("training CPU minutes (one thread)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Omniglot: validation accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the plot, not over the curves
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON results of omniglot.py")
    parser.add_argument("--out", default="benchmarks/results/time-to-accuracy.png")
    parser.add_argument("--table", action="store_true", help="also print the markdown table of the runs")
    args = parser.parse_args()
    results = [json.loads(Path(p).read_text()) for p in args.results]
    print(draw(results, Path(args.out)))
    if args.table:
        print(table(results))


if __name__ == "__main__":
    main()
