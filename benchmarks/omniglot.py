"""Omniglot 5-way 1-shot with a wall-clock training budget: MAML, first-order MAML, Reptile.

Trains one learner on the meta-training characters (Vinyals split, rotations as new classes)
for ``--minutes`` of its own CPU time (``time.process_time``: with one thread, the wall time it
would take on an idle core; this machine's two cores are shared, so wall time is recorded too), then evaluates it on 600 episodes of the 423 meta-test
characters with a 95% confidence interval, and writes a JSON result (machine, command, date,
iterations, wall time, hyperparameters, accuracy curve over adaptation steps).

    python benchmarks/omniglot.py maml --minutes 20
    python benchmarks/omniglot.py fomaml --minutes 20
    python benchmarks/omniglot.py reptile --minutes 20

The hyperparameters follow the papers where the budget allows (see ``SETTINGS``): MAML's
Omniglot network (Conv4 with stride-2 convolutions), inner rate 0.4, one inner step in training
and three at test; Reptile trains on 10-shot tasks and adapts for 50 steps at test time.
Reptile's paper uses Adam in the inner loop; here it is plain SGD. Ctrl-C (SIGINT) stops
training early and still evaluates; the result records it.
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

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"

SETTINGS = {
    "maml": dict(learner="MAML", inner_lr=0.4, inner_steps=1, test_steps=3, meta_batch=32,
                 train_shots=1, optimizer="adam", lr=1e-3),
    "fomaml": dict(learner="FOMAML", inner_lr=0.4, inner_steps=1, test_steps=3, meta_batch=32,
                   train_shots=1, optimizer="adam", lr=1e-3),
    "reptile": dict(learner="Reptile", inner_lr=0.1, inner_steps=5, test_steps=50, meta_batch=5,
                    train_shots=10, optimizer="sgd", lr=1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("learner", choices=sorted(SETTINGS))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--out", default=None, help="JSON result file (default benchmarks/results/omniglot-LEARNER.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = SETTINGS[args.learner]
    torch.manual_seed(args.seed)
    # 20 drawings per character: 10-shot training tasks leave 10 for the (reporting-only) queries.
    train = mm.tasks.Omniglot(args.root, "train", ways=5, shots=s["train_shots"],
                              queries=min(15, 20 - s["train_shots"]))
    test = mm.tasks.Omniglot(args.root, "test", ways=5, shots=1, queries=15)
    model = mm.models.Conv4(5, downsample="stride")
    learner = getattr(mm.learners, s["learner"])(model, inner_lr=s["inner_lr"], inner_steps=s["inner_steps"])
    opt_cls = torch.optim.Adam if s["optimizer"] == "adam" else torch.optim.SGD
    opt = opt_cls(learner.parameters(), lr=s["lr"])
    generator = torch.Generator().manual_seed(args.seed)
    budget = 60 * args.minutes
    start, cpu_start = time.perf_counter(), time.process_time()
    iterations, log = 0, []
    stopped_early = False
    try:
        while (used := time.process_time() - cpu_start) < budget:
            if s["optimizer"] == "sgd":  # Reptile's meta step size, annealed linearly to 0 over the budget
                for group in opt.param_groups:
                    group["lr"] = s["lr"] * max(0.0, 1 - used / budget)
            opt.zero_grad()
            m = learner.meta_backward(train.sample(s["meta_batch"], generator))
            opt.step()
            iterations += 1
            if iterations % 20 == 0:
                log.append({"iteration": iterations, "cpu_seconds": round(time.process_time() - cpu_start, 1), **m})
                print(log[-1], flush=True)
    except KeyboardInterrupt:  # Ctrl-C (SIGINT) ends training early; the result says so
        stopped_early = True
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    ev = mm.evaluate(learner, test, episodes=args.episodes, steps=s["test_steps"], seed=12345)
    result = {
        "benchmark": "omniglot 5-way 1-shot", "learner": args.learner, "date": date.today().isoformat(),
        "machine": f"{platform.machine()} CPU, {args.threads} threads, torch {torch.__version__}",
        "command": " ".join(["python", "benchmarks/omniglot.py", *sys.argv[1:]]),
        "settings": s, "iterations": iterations, "stopped_early": stopped_early, "train_cpu_seconds": round(cpu_seconds, 1),
        "train_wall_seconds": round(train_seconds, 1),
        "tasks_seen": iterations * s["meta_batch"], "evaluation": ev.to_dict(), "log": log,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"omniglot-{args.learner}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.learner}: {ev} after {iterations} iterations, "
          f"{cpu_seconds / 60:.1f} CPU min ({train_seconds / 60:.1f} wall min) -> {out}")


if __name__ == "__main__":
    main()
