"""Omniglot few-shot classification with a CPU-time training budget, from a shipped config
(5-way 1-shot, or the ways and shots of the config's test episodes).

Builds the tasks, model and learner of ``CONFIG`` (``configs/omniglot-maml-5w1s.yaml``,
``configs/omniglot-fomaml-5w1s.yaml``, ``configs/omniglot-reptile-5w1s.yaml``: the configs are
the source of truth for every setting) and meta-trains it for ``--minutes`` of its own CPU
time (``time.process_time``: with one thread, the wall time it would take on an idle core;
this machine's two cores are shared, so wall time is recorded too) instead of the config's
iterations, with the config's optimizer, meta-batch, rate, ``train.scheduler`` and
``train.clip_grad_norm`` (a ``linear`` schedule is decayed over the budget, as Reptile's meta
step is over its iterations). It then evaluates on the
config's test episodes (``eval``: episodes, steps, seed, ``eval.tasks``) and writes a JSON
result (machine, command, config, date, iterations, wall time, accuracy curve over adaptation
steps, and the machine's one-minute load average at each validation and their mean: a CPU
second is not a fixed amount of work on shared cores; a MAML iteration took 1.73 CPU seconds in
a run whose wall time was 3.1 times its CPU time and 0.84 in one at 1.07 times).

Every ``--val-every`` CPU seconds of training it scores ``train.val_episodes`` validation
episodes (``train.val_seed``, the same episodes each time) at the config's test steps; that
time is not counted in the budget. The points make the time-to-accuracy figure
(``time_to_accuracy.py``). When the test curve has more than one step, the step reported as
``best`` is the one with the highest accuracy on the last validation, never chosen on the test
episodes. For an implicit outer update (iMAML, σ-iMAML) each validation also records
``implicit``: the cosine and norm ratio of its meta-gradient to the exact gradient through the
same inner steps, how stationary the inner loop ends and the curvature there
(``Implicit.agreement``), on 4 fixed training episodes. ``learned`` holds the learner's
report at the end (``σ`` per module of the shrinkage learners, learned inner rates). ``--set train.seed=N`` runs another seed (the test episodes stay ``eval.seed``). The test
episodes are scored with the learner's ``batchnorm`` statistics and, under
``other_batchnorm``, with the other ones (transductive or from the support set).

    python benchmarks/omniglot.py configs/omniglot-maml-5w1s.yaml --minutes 20
    python benchmarks/omniglot.py configs/omniglot-reptile-5w1s.yaml --minutes 20 --set learner.inner_batch=5

``--device cuda`` trains and evaluates on the GPU with a budget of wall-clock minutes (CPU time
says little about work done on a GPU); the ``cpu_seconds`` fields then hold wall-clock seconds
and ``machine`` says so.

The same learner trained for the config's iterations is ``modmeta train CONFIG`` then
``modmeta eval``. Ctrl-C (SIGINT) stops training early and still evaluates; the result says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

import modmeta as mm
from modmeta import config
from modmeta.meta.outer import Implicit
from modmeta.models.batchnorm import STATISTICS, has_batchnorm
from modmeta.train.optimizers import make_optimizer, make_scheduler
from machine import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a shipped Omniglot config, e.g. configs/omniglot-maml-5w1s.yaml")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="training budget in CPU minutes (wall-clock minutes with --device cuda)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the budget is then wall-clock time")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--val-every", type=float, default=120.0, help="CPU seconds of training between validations")
    parser.add_argument("--out", default=None, help="JSON result file (default benchmarks/results/omniglot-LEARNER.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(args.config, args.set)
    run = config.build(cfg)
    learner, t = run.learner, cfg.train
    device = torch.device(args.device)
    learner.to(device)
    # CPU time measures the work on a CPU; on a GPU the process mostly waits for the device.
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    opt = make_optimizer(t.optimizer, learner.parameters(), t.lr, "train.optimizer")
    scheduler = make_scheduler(t.scheduler, opt)  # stepped once per iteration, as the Trainer does
    generator = torch.Generator().manual_seed(t.seed)
    e = cfg.eval
    family = config.evaluation_tasks(run)
    val_family = family.split("val")

    def validate() -> Any:
        return mm.evaluate(learner, val_family, episodes=t.val_episodes, steps=e.steps, seed=t.val_seed)

    # An implicit outer update (iMAML, σ-iMAML) is checked against the exact gradient of the same
    # inner loop at every validation, on the same 4 training episodes each time.
    implicit = learner.outer if isinstance(getattr(learner, "outer", None), Implicit) else None
    check_batch = run.tasks.sample(4, torch.Generator().manual_seed(t.val_seed)).to(device) if implicit else None

    budget = 60 * args.minutes
    start, cpu_start = time.perf_counter(), clock()
    iterations, log, validation = 0, [], []
    not_training = 0.0  # CPU seconds spent validating, left out of the budget
    stopped_early = False
    try:
        while (used := clock() - cpu_start - not_training) < budget:
            if used >= args.val_every * len(validation):
                before = clock()
                val = validate()
                validation.append({"iteration": iterations, "cpu_seconds": round(used, 1), "accuracy": val.mean,
                                   "ci95": val.ci95, "curve": [m for m, _ in val.curve],
                                   "load_average": os.getloadavg()[0]})
                if implicit is not None:
                    validation[-1]["implicit"] = implicit.agreement(learner.tasks(check_batch))
                print(validation[-1] | {"curve": None}, flush=True)
                not_training += clock() - before
            if t.schedule == "linear":  # decayed to 0 over the budget, as over the iterations in a run
                for group in opt.param_groups:
                    group["lr"] = t.lr * max(0.0, 1 - used / budget)
            opt.zero_grad()
            m = learner.meta_backward(learner.draw(run.tasks, t.meta_batch, generator).to(device))
            if t.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(learner.parameters(), t.clip_grad_norm)
            opt.step()
            if scheduler is not None:
                scheduler.step()
            iterations += 1
            if iterations % 20 == 0:
                log.append({"iteration": iterations, "cpu_seconds": round(used, 1), **m})
                print(log[-1], flush=True)
    except KeyboardInterrupt:  # Ctrl-C (SIGINT) ends training early; the result says so
        stopped_early = True
    train_seconds = time.perf_counter() - start
    cpu_seconds = clock() - cpu_start - not_training
    val = validate()
    validation.append({"iteration": iterations, "cpu_seconds": round(cpu_seconds, 1), "accuracy": val.mean,
                       "ci95": val.ci95, "curve": [m for m, _ in val.curve]})
    ev = mm.evaluate(learner, family.split("test"), episodes=e.episodes, steps=e.steps, seed=e.seed)
    other = {}  # the same test episodes with the other batch-norm statistics (transductive or not)
    if has_batchnorm(learner.model) and hasattr(learner, "batchnorm"):
        trained = learner.batchnorm
        for mode in STATISTICS:
            if mode != trained:
                learner.batchnorm = mode
                other[mode] = mm.evaluate(learner, family.split("test"), episodes=e.episodes, steps=e.steps,
                                          seed=e.seed).to_dict()
        learner.batchnorm = trained
    best = max(range(len(val.curve)), key=lambda k: val.curve[k][0])
    result = {
        "benchmark": f"omniglot {family.ways}-way {family.shots}-shot", "learner": cfg.learner.name,
        "date": date.today().isoformat(),
        "machine": (f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}" if device.type == "cpu"
                    else f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}; "
                         f"cpu_seconds are wall-clock seconds"),
        "command": " ".join(["python", "benchmarks/omniglot.py", *sys.argv[1:]]),
        "config": run.config.to_dict(), "iterations": iterations, "stopped_early": stopped_early,
        "train_cpu_seconds": round(cpu_seconds, 1), "train_wall_seconds": round(train_seconds, 1),
        "load_average": round(statistics.fmean(v["load_average"] for v in validation[:-1]), 2) if validation[:-1] else None,
        "tasks_seen": iterations * t.meta_batch, "evaluation": ev.to_dict(), "other_batchnorm": other,
        "best": {"step": best, "val": list(val.curve[best]), "test": list(ev.curve[best])},
        "validation": validation, "log": log,
        "learned": learner.report(),  # what the learner meta-learned besides weights: σ per module, inner rates
        "execution": learner.execution,  # how the tasks were batched after "auto"'s timing (None: no choice)
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"omniglot-{cfg.learner.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{cfg.learner.name}: {ev} after {iterations} iterations, "
          f"{cpu_seconds / 60:.1f} CPU min ({train_seconds / 60:.1f} wall min); at the step chosen on validation "
          f"({best}): {100 * ev.curve[best][0]:.2f}% -> {out}")


if __name__ == "__main__":
    main()
