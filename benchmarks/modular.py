"""Modular meta-learning against monolithic networks (Alet, Lozano-Pérez and Kaelbling, CoRL 2018).

The paper's four algorithms — Pooled, MAML, BounceGrad, MoMA — on function sums (meta-test on
held-out pairs: new combinations of known functions) and sines, with 8 and 16 training points
per task. Each run is the config ``configs/{family}-{algorithm}.yaml`` with ``tasks.shots``
set, trained by :class:`modmeta.Trainer` for the config's iterations on one CPU thread (no
validation), then evaluated by :func:`modmeta.evaluate` on ``--episodes`` meta-test episodes
(seed 0): the MSE on standardised outputs with its 95% confidence interval. For modular
learners on function sums, the match of the chosen modules with the true functions too.

    python benchmarks/modular.py                     # all 16 runs, one after the other
    python benchmarks/modular.py --families function-sums --shots 16 --algorithms bouncegrad maml

Each finished run is merged into ``benchmarks/results/modular.json`` (keyed by family, shots
and algorithm, with machine, command, date, iterations, wall and CPU time) and the results
table of ``benchmarks/MODULAR.md`` is rewritten from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import torch

from modmeta import config, structures
from modmeta.evaluate import evaluate
from modmeta.learners.bouncegrad import BounceGrad
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["function-sums", "sines"]
ALGORITHMS = ["pooled", "maml", "bouncegrad", "moma"]
NAMES = {"pooled": "Pooled", "maml": "MAML", "bouncegrad": "BounceGrad", "moma": "MoMA"}
START, END = "<!-- results: start (written by benchmarks/modular.py) -->", "<!-- results: end -->"


def run_one(family: str, shots: int, algorithm: str, episodes: int, iterations: int | None) -> dict:
    """Train and evaluate one config; the record of the run."""
    path = ROOT / "configs" / f"{family}-{algorithm}.yaml"
    overrides = [f"tasks.shots={shots}", "train.val_every=0"]
    if iterations is not None:
        overrides += [f"train.iterations={iterations}", f"learner.anneal_iterations={iterations}"] \
            if algorithm in ("bouncegrad", "moma") else [f"train.iterations={iterations}"]
    cfg = config.load(path, overrides)
    run = config.build(cfg)
    trainer = config.trainer(run, out=None, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(cfg.train.iterations)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test = run.tasks.split("test")
    result = evaluate(run.learner, test, episodes=episodes, steps=cfg.eval.steps, seed=0)
    record = {
        "family": family, "shots": shots, "algorithm": algorithm,
        "config": str(path.relative_to(ROOT)), "overrides": overrides,
        "iterations": cfg.train.iterations, "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
        "mse": result.mean, "ci95": result.ci95, "episodes": result.episodes, "eval_steps": result.steps,
        "curve": result.curve,
    }
    if isinstance(run.learner, BounceGrad):
        match = structures.match(run.learner, test, episodes=episodes, seed=0)
        if match is not None:
            record["modules"] = {"mean_share": match.mean_share, "distinct": match.distinct,
                                 "explained": match.explained}
    return record


def machine() -> str:
    """The CPU model, its core count, and the thread count and torch version of the runs."""
    return f"{cpu_name()}, {os.cpu_count()} cores (shared), 1 thread, torch {torch.__version__}"


def table(records: list[dict]) -> str:
    """The markdown results table: one row per run, grouped by family and shots."""
    rows = ["| family | shots | algorithm | test MSE ± 95% CI | iterations | train wall s | train CPU s "
            "| modules ↔ true functions |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {a: i for i, a in enumerate(ALGORITHMS)}
    for r in sorted(records, key=lambda r: (FAMILIES.index(r["family"]), r["shots"], order[r["algorithm"]])):
        m = r.get("modules")
        modules = (f"share {100 * m['mean_share']:.0f}%, {m['distinct']} modules, exact {100 * m['explained']:.0f}%"
                   if m else "")
        rows.append(f"| {r['family']} | {r['shots']} | {NAMES[r['algorithm']]} | {r['mse']:.3f} ± {r['ci95']:.3f} "
                    f"| {r['iterations']} | {r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} | {modules} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--shots", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--algorithms", nargs="+", default=ALGORITHMS, choices=ALGORITHMS)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--iterations", type=int, help="override the configs' iterations (a quick check)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "modular.json"))
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "MODULAR.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    for family in args.families:
        for shots in args.shots:
            for algorithm in args.algorithms:
                record = run_one(family, shots, algorithm, args.episodes, args.iterations)
                record.update(date=date.today().isoformat(), machine=machine(),
                              command=" ".join(["python", "benchmarks/modular.py", *sys.argv[1:]]))
                found["runs"][f"{family}/{shots}/{algorithm}"] = record
                out.write_text(json.dumps(found, indent=1) + "\n")
                print(f"{family} {shots} shots {NAMES[algorithm]}: MSE {record['mse']:.4f} ± {record['ci95']:.4f} "
                      f"({record['iterations']} iterations, {record['train_wall_s']:.0f} s wall, "
                      f"{record['train_cpu_s']:.0f} s CPU) {record.get('modules', '')}", flush=True)
                write_table(Path(args.markdown), list(found["runs"].values()))


def write_table(markdown: Path, records: list[dict]) -> None:
    """Replace the results table between the markers of ``markdown`` (if it has them)."""
    if not markdown.exists() or START not in markdown.read_text():
        return
    head, rest = markdown.read_text().split(START, 1)
    markdown.write_text(head + START + "\n" + table(records) + "\n" + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
