"""Seed 004's attempts at an equal CPU budget: MAML, MAML + Meta-PCGrad, MAML + Hessian
regularisation and LSLR on Omniglot 5-way 1-shot, from the configs in ``configs/seed004/``.

One run: the config's learner and task family (``modmeta.config.build``, with ``train.seed``
set to ``--seed``) trained with the config's optimizer and meta-batch for ``--minutes`` of its
own CPU time (one thread); every ``--val-seconds`` CPU seconds the accuracy on
``train.val_episodes`` validation episodes (the same episodes each time); the logged training
statistics, gradient conflicts included; at the end ``eval.episodes`` test episodes after
``eval.steps`` steps (the same episodes for every run). Writes
``benchmarks/results/seed004/NAME-seedN.json``.

    python benchmarks/seed004.py configs/seed004/omniglot-maml.yaml --minutes 4 --seed 0
    python benchmarks/seed004.py --report     # the table and figure of all runs found
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from modmeta import config, evaluate, plot
from modmeta.seeds import across
from machine import cpu_name

RESULTS = Path(__file__).parent / "results" / "seed004"


def train(path: str, minutes: float, seed: int, val_seconds: float) -> dict:
    cfg = config.load(path, [f"train.seed={seed}"])
    run = config.build(cfg)
    learner, t = run.learner, cfg.train
    val = config.evaluation_tasks(run).split("val")
    test = config.evaluation_tasks(run).split("test")
    opt = (torch.optim.Adam if t.optimizer == "adam" else torch.optim.SGD)(learner.parameters(), lr=t.lr)
    generator = torch.Generator().manual_seed(seed)
    budget, start = 60 * minutes, time.process_time()
    log, curve, window = [], [], []
    next_val, iterations = 0.0, 0
    while (used := time.process_time() - start) < budget:
        if used >= next_val:
            e = evaluate(learner, val, episodes=t.val_episodes, steps=cfg.eval.steps, seed=t.val_seed)
            curve.append({"iteration": iterations, "cpu_seconds": round(used, 1), "accuracy": e.mean, "ci95": e.ci95})
            print(curve[-1], flush=True)
            next_val += val_seconds
            start += time.process_time() - start - used  # validation is not training time
        learner.train()
        opt.zero_grad(set_to_none=True)
        window.append(learner.meta_backward(learner.draw(run.tasks, t.meta_batch, generator)))
        opt.step()
        iterations += 1
        if iterations % t.log_every == 0:
            log.append({"iteration": iterations, "cpu_seconds": round(time.process_time() - start, 1),
                        **{k: statistics.fmean(w[k] for w in window) for k in window[0]}})
            window = []
    final = evaluate(learner, val, episodes=t.val_episodes, steps=cfg.eval.steps, seed=t.val_seed)
    curve.append({"iteration": iterations, "cpu_seconds": round(time.process_time() - start, 1),
                  "accuracy": final.mean, "ci95": final.ci95})
    ev = evaluate(learner, test, episodes=cfg.eval.episodes, steps=cfg.eval.steps, seed=cfg.eval.seed)
    return {"benchmark": "seed 004 attempts, Omniglot 5-way 1-shot", "config": path, "seed": seed,
            "date": date.today().isoformat(), "command": " ".join(["python", "benchmarks/seed004.py", *sys.argv[1:]]),
            "machine": f"{cpu_name()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
            "minutes": minutes, "iterations": iterations, "test": ev.to_dict(), "validation": curve, "log": log,
            "report": learner.report()}


def report() -> None:
    runs: dict[str, list[dict]] = {}
    for f in sorted(RESULTS.glob("*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(Path(r["config"]).stem, []).append(r)
    rows = ["| config | seeds | iterations | test accuracy (mean ± 95% CI over seeds) | sd over seeds | "
            "episode CI | val change between checks | mean cos | min cos | conflicting pairs | ‖g‖ |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rs in runs.items():
        t = across([r["test"]["mean"] for r in rs])
        logs = [x for r in rs for x in r["log"]]

        def avg(key: str) -> str:
            values = [x[key] for x in logs if key in x]
            return f"{statistics.fmean(values):.3f}" if values else "-"

        change = statistics.fmean(statistics.fmean(abs(b["accuracy"] - a["accuracy"])
                                                   for a, b in zip(r["validation"], r["validation"][1:])) for r in rs)
        rows.append(f"| {name} | {len(rs)} | {statistics.fmean(r['iterations'] for r in rs):.0f} | "
                    f"{100 * t['mean']:.2f}% ± {100 * t['ci95']:.2f}% | {100 * t['sd']:.2f} | "
                    f"± {100 * statistics.fmean(r['test']['ci95'] for r in rs):.2f}% | {100 * change:.2f} | "
                    f"{avg('grad_cos_mean')} | {avg('grad_cos_min')} | {avg('grad_conflict')} | {avg('grad_norm')} |")
    print("\n".join(rows))
    fig = plot._figure((11, 4))
    left, right = fig.subplots(1, 2)
    for name, rs in runs.items():
        for r in rs:
            left.plot([p["cpu_seconds"] for p in r["validation"]], [100 * p["accuracy"] for p in r["validation"]],
                      alpha=0.25, color=f"C{list(runs).index(name)}")
        n = min(len(r["validation"]) for r in rs)
        mean = [statistics.fmean(100 * r["validation"][i]["accuracy"] for r in rs) for i in range(n)]
        secs = [statistics.fmean(r["validation"][i]["cpu_seconds"] for r in rs) for i in range(n)]
        left.plot(secs, mean, label=name, color=f"C{list(runs).index(name)}")
        its = [x["iteration"] for x in rs[0]["log"] if "grad_cos_mean" in x]
        right.plot(its, [x["grad_cos_mean"] for x in rs[0]["log"] if "grad_cos_mean" in x], label=name)
    left.set(xlabel="training CPU seconds (one thread)", ylabel="validation accuracy (%)",
             title="validation during training (thin: each seed)")
    right.set(xlabel="iteration", ylabel="mean cosine between tasks' meta-gradients", title="gradient conflict (seed 0)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    plot._save(fig, RESULTS.parent / "seed004.png")
    print(f"wrote {RESULTS.parent / 'seed004.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-seconds", type=float, default=60.0)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
        return
    torch.set_num_threads(1)
    result = train(args.config, args.minutes, args.seed, args.val_seconds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{Path(args.config).stem}-seed{args.seed}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{out}: test {100 * result['test']['mean']:.2f}% ± {100 * result['test']['ci95']:.2f}% "
          f"after {result['iterations']} iterations")


if __name__ == "__main__":
    main()
