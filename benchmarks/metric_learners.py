"""Omniglot 5-way 1-shot, 5-way 5-shot and 20-way 1-shot for the four metric learners, each
trained from its config in ``configs/`` for a CPU-time budget.

For each config: build the run (``modmeta.config``), train for ``--minutes`` of this process's
CPU time (``time.process_time``: with one thread, the wall time on an idle core; the cores
here are shared, so wall time is recorded too) instead of the config's ``train.iterations``,
then evaluate on ``eval.episodes`` test episodes (held-out characters, ``eval.tasks`` applied)
with a 95% confidence interval. One JSON result per config (machine, command, date,
iterations, times, config, evaluation) goes to ``benchmarks/results/metric-CONFIG.json``, and
a table of all results found there, beside the papers' numbers, is printed.

    python benchmarks/metric_learners.py configs/omniglot-protonet-5w1s.yaml --minutes 2
    python benchmarks/metric_learners.py configs/omniglot-*-5w1s.yaml --minutes 2
    python benchmarks/metric_learners.py --table

Every learner trains on what its ``draw`` gives: the linear-head baseline plain mini-batches
over all training classes, the episodic learners ``train.meta_batch`` episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

import modmeta as mm
from modmeta import config
from machine import cpu_name

RESULTS = Path(__file__).parent / "results"

PAPERS = {  # Omniglot accuracy (%) reported by each paper: 5-way 1-shot, 5-way 5-shot, 20-way 1-shot
    "protonet": ("Snell et al. 2017, table 1", {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0}),
    "matchingnet": ("Vinyals et al. 2016, table 1", {"5w1s": 98.1, "5w5s": 98.9, "20w1s": 93.8}),
    "relationnet": ("Sung et al. 2018, table 1", {"5w1s": 99.6, "5w5s": 99.8, "20w1s": 97.6}),
    "linearhead": ("Tian et al. 2020 (no Omniglot result)", {}),
}


def train(run: config.Run, minutes: float) -> dict:
    """Train ``run.learner`` for ``minutes`` of CPU time; return the counts and a loss log."""
    t = run.config.train
    learner, tasks = run.learner, run.tasks
    opt_cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(learner.parameters(), lr=t.lr)
    generator = torch.Generator().manual_seed(t.seed)
    param = next(learner.parameters())
    learner.train()
    budget = 60 * minutes
    start, cpu_start = time.perf_counter(), time.process_time()
    iterations, log = 0, []
    while time.process_time() - cpu_start < budget:
        opt.zero_grad()
        stats = learner.meta_backward(learner.draw(tasks, t.meta_batch, generator).to(param.device, param.dtype))
        opt.step()
        iterations += 1
        if iterations % 25 == 0:
            log.append({"iteration": iterations, "cpu_seconds": round(time.process_time() - cpu_start, 1), **stats})
            print(log[-1], flush=True)
    return {"iterations": iterations, "train_cpu_seconds": round(time.process_time() - cpu_start, 1),
            "train_wall_seconds": round(time.perf_counter() - start, 1), "log": log}


def benchmark(path: Path, minutes: float, threads: int) -> Path:
    """Train and evaluate the run of the config at ``path``; write and return its result file."""
    cfg = config.load(path)
    run = config.build(cfg)
    trained = train(run, minutes)
    start = time.perf_counter()
    test = config.evaluation_tasks(run).split("test")
    ev = mm.evaluate(run.learner, test, episodes=cfg.eval.episodes, steps=cfg.eval.steps, seed=cfg.eval.seed)
    result = {
        "config": str(path), "learner": cfg.learner.name, "benchmark": path.stem.rsplit("-", 1)[-1],
        "date": date.today().isoformat(),
        "machine": f"{cpu_name()}, {threads} thread(s), torch {torch.__version__}",
        "command": " ".join(["python", "benchmarks/metric_learners.py", *sys.argv[1:]]),
        "budget_cpu_minutes": minutes, **{k: v for k, v in trained.items() if k != "log"},
        "eval_wall_seconds": round(time.perf_counter() - start, 1),
        "test_episodes": {"ways": test.ways, "shots": test.shots, "queries": test.queries},
        "evaluation": ev.to_dict(), "resolved_config": run.config.to_dict(), "log": trained["log"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"metric-{path.stem}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{path.stem}: {ev} after {trained['iterations']} iterations "
          f"({trained['train_cpu_seconds']:.0f} CPU s, {trained['train_wall_seconds']:.0f} wall s) -> {out}")
    return out


def table() -> str:
    """Markdown table of every ``metric-*.json`` result, beside the papers' numbers."""
    rows = ["| learner | benchmark | ours (95% CI) | paper | iterations | train CPU s | train wall s | eval wall s |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    results = [json.loads(f.read_text()) for f in RESULTS.glob("metric-*.json")]
    order = {name: i for i, name in enumerate([*PAPERS, "5w1s", "5w5s", "20w1s"])}
    for r in sorted(results, key=lambda r: (order.get(r["learner"], 99), order.get(r["benchmark"], 99))):
        ev = r["evaluation"]
        paper = PAPERS.get(r["learner"], ("", {}))[1].get(r["benchmark"])
        rows.append(
            f"| {r['learner']} | {r['benchmark']} | {100 * ev['mean']:.2f} ± {100 * ev['ci95']:.2f} "
            f"| {'—' if paper is None else paper} | {r['iterations']} | {r['train_cpu_seconds']:.0f} "
            f"| {r['train_wall_seconds']:.0f} | {r['eval_wall_seconds']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", type=Path, help="configs/omniglot-LEARNER-SETTING.yaml files")
    parser.add_argument("--minutes", type=float, default=2.0, help="CPU minutes of training per config")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only print the table of the results so far")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.table:
        for path in args.configs:
            benchmark(path, args.minutes, args.threads)
    print(table())


if __name__ == "__main__":
    main()
