"""Sinusoid regression (MAML, Finn et al. 2017, section 5.1): who adapts best from K=10 points.

Each learner meta-trains an MLP 1-40-40-1 on tasks with K=10 support and 10 query points,
1 inner step at rate 0.01, meta-batch 25, Adam 1e-3, for ``--iterations`` iterations; then
adapts to 600 held-out tasks (the same seeded episodes for every learner) and reports the
query MSE with its 95% confidence interval after 1, 5 and 10 steps of SGD at rate 0.01.

The baseline "pretrained" trains the same network on all tasks jointly (no inner loop) and is
then fine-tuned the same way. Reptile's update is degenerate with one inner step (it becomes
joint training), so it runs 5 inner steps, as in the Reptile paper's regression experiments.

    python benchmarks/sinusoid.py --iterations 30000
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
from machine import cpu_name

LEARNERS = {
    "maml": lambda m: mm.learners.MAML(m, inner_lr=0.01, inner_steps=1),
    "fomaml": lambda m: mm.learners.FOMAML(m, inner_lr=0.01, inner_steps=1),
    "reptile": lambda m: mm.learners.Reptile(m, inner_lr=0.01, inner_steps=5),
    "metasgd": lambda m: mm.learners.MetaSGD(m, inner_lr=0.01, inner_steps=1),
    "pretrained": lambda m: mm.learners.Pretrained(m, inner_lr=0.01, inner_steps=1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30000)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sinusoid.json"))
    args = parser.parse_args()
    tasks = mm.tasks.Sinusoid(shots=10, queries=10)
    rows = {}
    for name in args.learners:
        torch.manual_seed(args.seed)
        learner = LEARNERS[name](mm.models.MLP(1, 1, (40, 40)))
        start = time.perf_counter()
        mm.Trainer(learner, tasks, meta_batch=25, optimizer="adam", lr=1e-3, seed=args.seed,
                   progress=False).fit(args.iterations)
        seconds = time.perf_counter() - start
        ev = mm.evaluate(learner, tasks.split("test"), episodes=args.episodes, steps=10, seed=2024)
        rows[name] = {"train_seconds": round(seconds, 1), "iterations": args.iterations,
                      "mse_after_steps": {k: {"mean": ev.curve[k][0], "ci95": ev.curve[k][1]} for k in (0, 1, 5, 10)}}
        print(name, f"{seconds:.0f}s", {k: f"{ev.curve[k][0]:.3f}±{ev.curve[k][1]:.3f}" for k in (0, 1, 5, 10)}, flush=True)
    result = {
        "benchmark": "sinusoid K=10", "date": date.today().isoformat(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": " ".join(["python", "benchmarks/sinusoid.py", *sys.argv[1:]]),
        "episodes": args.episodes, "eval_seed": 2024, "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
