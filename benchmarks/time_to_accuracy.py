"""The time-to-accuracy figure: validation accuracy against training CPU minutes, every learner
on one plot (issue 11, item 7), from the JSON results of ``omniglot.py``.

Each result holds the validation points its run took every ``--val-every`` CPU seconds. Runs
of one learner with several seeds are drawn as thin lines with their mean as a thick one (the
points are averaged by position: the seeds validate at the same CPU times). The legend gives
each learner's final test accuracy (mean over its seeds) and the number of seeds.

    python benchmarks/time_to_accuracy.py benchmarks/results/omniglot-*-20min-seed*.json \\
        --out benchmarks/results/time-to-accuracy.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure


def label(result: dict) -> str:
    """The learner's name and its settings that tell two curves apart (ways, shots)."""
    tasks = result["config"]["tasks"]
    test = {**tasks, **(result["config"].get("eval", {}).get("tasks") or {})}
    return f"{result['config']['learner']['name']} {test['ways']}w{test['shots']}s"


def draw(results: list[dict], out: Path) -> Path:
    """One line per learner (mean over seeds) with each seed's run drawn thinly."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("validation"):
            groups[label(r)].append(r)
    if not groups:
        raise SystemExit("none of the results holds validation points: rerun them with omniglot.py")
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for i, (name, runs) in enumerate(sorted(groups.items())):
        color = f"C{i % 10}"
        for r in runs:
            ax.plot([p["cpu_seconds"] / 60 for p in r["validation"]],
                    [100 * p["accuracy"] for p in r["validation"]], color=color, alpha=0.3, linewidth=0.8)
        points = min(len(r["validation"]) for r in runs)
        minutes = [sum(r["validation"][k]["cpu_seconds"] for r in runs) / len(runs) / 60 for k in range(points)]
        accuracy = [100 * sum(r["validation"][k]["accuracy"] for r in runs) / len(runs) for k in range(points)]
        test = 100 * sum(r["evaluation"]["mean"] for r in runs) / len(runs)
        ax.plot(minutes, accuracy, color=color, linewidth=2, marker="o", markersize=3,
                label=f"{name}: test {test:.1f}% ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    ax.set_xlabel("training CPU minutes (one thread)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Omniglot: validation accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON results of omniglot.py")
    parser.add_argument("--out", default="benchmarks/results/time-to-accuracy.png")
    args = parser.parse_args()
    results = [json.loads(Path(p).read_text()) for p in args.results]
    print(draw(results, Path(args.out)))


if __name__ == "__main__":
    main()
