"""Omniglot 5-way 1-shot with a CPU-time training budget, from a shipped config.

Builds the tasks, model and learner of ``CONFIG`` (``configs/omniglot-maml-5w1s.yaml``,
``configs/omniglot-fomaml-5w1s.yaml``, ``configs/omniglot-reptile-5w1s.yaml``: the configs are
the source of truth for every setting) and meta-trains it for ``--minutes`` of its own CPU
time (``time.process_time``: with one thread, the wall time it would take on an idle core;
this machine's two cores are shared, so wall time is recorded too) instead of the config's
iterations, with the config's optimizer, meta-batch and rate (a ``linear`` schedule is decayed
over the budget, as Reptile's meta step is over its iterations). It then evaluates on the
config's test episodes (``eval``: episodes, steps, seed, ``eval.tasks``) and writes a JSON
result (machine, command, config, date, iterations, wall time, accuracy curve over adaptation
steps).

    python benchmarks/omniglot.py configs/omniglot-maml-5w1s.yaml --minutes 20
    python benchmarks/omniglot.py configs/omniglot-reptile-5w1s.yaml --minutes 20 --set learner.inner_lr=0.05

The same learner trained for the config's iterations is ``modmeta train CONFIG`` then
``modmeta eval``. Ctrl-C (SIGINT) stops training early and still evaluates; the result says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

import modmeta as mm
from modmeta import config
from modmeta.train.optimizers import make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a shipped Omniglot config, e.g. configs/omniglot-maml-5w1s.yaml")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget in CPU minutes")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--out", default=None, help="JSON result file (default benchmarks/results/omniglot-LEARNER.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config, args.set)
    run = config.build(cfg)
    learner, t = run.learner, cfg.train
    opt = make_optimizer(t.optimizer, learner.parameters(), t.lr, "train.optimizer")
    generator = torch.Generator().manual_seed(t.seed)
    budget = 60 * args.minutes
    start, cpu_start = time.perf_counter(), time.process_time()
    iterations, log = 0, []
    stopped_early = False
    try:
        while (used := time.process_time() - cpu_start) < budget:
            if t.schedule == "linear":  # decayed to 0 over the budget, as over the iterations in a run
                for group in opt.param_groups:
                    group["lr"] = t.lr * max(0.0, 1 - used / budget)
            opt.zero_grad()
            m = learner.meta_backward(learner.draw(run.tasks, t.meta_batch, generator))
            opt.step()
            iterations += 1
            if iterations % 20 == 0:
                log.append({"iteration": iterations, "cpu_seconds": round(time.process_time() - cpu_start, 1), **m})
                print(log[-1], flush=True)
    except KeyboardInterrupt:  # Ctrl-C (SIGINT) ends training early; the result says so
        stopped_early = True
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    e = cfg.eval
    ev = mm.evaluate(learner, config.evaluation_tasks(run).split("test"), episodes=e.episodes, steps=e.steps,
                     seed=e.seed)
    result = {
        "benchmark": "omniglot 5-way 1-shot", "learner": cfg.learner.name, "date": date.today().isoformat(),
        "machine": f"{platform.machine()} CPU, {args.threads} threads, torch {torch.__version__}",
        "command": " ".join(["python", "benchmarks/omniglot.py", *sys.argv[1:]]),
        "config": run.config.to_dict(), "iterations": iterations, "stopped_early": stopped_early,
        "train_cpu_seconds": round(cpu_seconds, 1), "train_wall_seconds": round(train_seconds, 1),
        "tasks_seen": iterations * t.meta_batch, "evaluation": ev.to_dict(), "log": log,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"omniglot-{cfg.learner.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{cfg.learner.name}: {ev} after {iterations} iterations, "
          f"{cpu_seconds / 60:.1f} CPU min ({train_seconds / 60:.1f} wall min) -> {out}")


if __name__ == "__main__":
    main()
