"""Modular meta-learning with shrinkage (Chen et al. 2020) against MAML, iMAML and Reptile.

Three benchmarks, one learner per call, each writing
``benchmarks/results/shrinkage-BENCH-LEARNER.json`` (machine, command, date, settings,
iterations, CPU and wall time, the metric with its 95% CI after every adaptation step, σ per
module):

- ``sinusoid``: MAML's sine regression, K=10 support and 10 query points, MLP 1-40-40-1. All
  learners train with ``--train-steps`` inner steps at rate 0.01 and are tested after 1, 10
  and 100 steps at the same rate on 600 held-out tasks: long adaptation from few points.
- ``omniglot``: 5-way 1-shot, Conv4 (stride 2), trained with ``--train-steps`` inner steps at
  rate 0.1, tested after 1, 10 and 100 steps on 200 episodes of the test characters.
  The archives are read from ``--root`` (default ``../shared/data/omniglot``).
- ``teacher``: the family whose truth is known (:class:`modmeta.tasks.TeacherFamily`): a fixed
  random network ``4 → 8 → 1`` in which only layer ``--layer`` varies per task (by
  ``--spread``), ``--shots`` support points with target noise ``--noise``; 100 MAP steps at
  rate 0.1 in training, 1000 at test. The student starts from a random initialisation, or with
  ``--init teacher`` from the teacher's mean weights (φ is meta-trained either way). Reports
  ``σ`` of the varying layer over the largest other ``σ``.

Training runs for ``--minutes`` of the process's CPU time (``time.process_time``; with one
thread, the time it takes on an idle core: the machine's cores are shared, so the wall time is
recorded too), Adam at ``--lr`` (``--sigma-lr`` for ``σ``), meta-batch ``--meta-batch``.

    python benchmarks/shrinkage.py sinusoid sigma-imaml --minutes 1.5
    python benchmarks/shrinkage.py teacher sigma-imaml --layer -1 --minutes 2.5 --lr 1e-2 --sigma-lr 3e-2
    python benchmarks/shrinkage.py omniglot sigma-imaml --minutes 8 --sigma-lr 1e-2
    python benchmarks/shrinkage.py report          # tables of every result into SHRINKAGE.md
    python benchmarks/shrinkage.py omniglot implicit-check   # implicit vs unrolled meta-gradient

Learners: maml, imaml, reptile, sigma-maml, sigma-imaml, sigma-reptile, pretrained.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch

import modmeta as mm
from modmeta import plot
from machine import cpu_name

RESULTS = Path(__file__).parent / "results"
OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
REPORT_STEPS = (1, 10, 100, 1000)


def make_learner(name: str, model: torch.nn.Module, inner_lr: float, steps: int, sigma: float, lam: float
                 ) -> mm.learners.Learner:
    """The learner ``name`` with the benchmark's shared inner loop (rate, steps)."""
    common = dict(inner_lr=inner_lr, inner_steps=steps)
    shrink = dict(common, sigma=sigma)
    return {
        "maml": lambda: mm.learners.MAML(model, **common),
        "imaml": lambda: mm.learners.IMAML(model, lam=lam, **common),
        "reptile": lambda: mm.learners.Reptile(model, **common),
        "pretrained": lambda: mm.learners.Pretrained(model, **common),
        "sigma-maml": lambda: mm.learners.SigmaMAML(model, **shrink),
        "sigma-imaml": lambda: mm.learners.SigmaIMAML(model, **shrink),
        "sigma-reptile": lambda: mm.learners.SigmaReptile(model, **shrink),
    }[name]()


def setup(args: argparse.Namespace) -> tuple[mm.tasks.TaskFamily, mm.tasks.TaskFamily, torch.nn.Module]:
    """Training tasks, test tasks and a fresh model for the benchmark."""
    if args.bench == "sinusoid":
        family = mm.tasks.Sinusoid(shots=10, queries=10)
        return family, family, mm.models.MLP(1, 1, (40, 40))
    if args.bench == "teacher":
        family = mm.tasks.TeacherFamily(layer=args.layer, hidden=(8,), x_dim=4, shots=args.shots, queries=20,
                                        spread=args.spread, low=-1.0, high=1.0, noise=args.noise)
        return family, family, family.teacher() if args.init == "teacher" else mm.models.MLP(4, 1, (8,))
    train = mm.tasks.Omniglot(args.root, "train", ways=5, shots=1, queries=15)
    test = mm.tasks.Omniglot(args.root, "test", ways=5, shots=1, queries=15)
    return train, test, mm.models.Conv4(5, downsample="stride")


DEFAULTS = {  # bench: (inner_lr, train steps, test steps, episodes, meta-batch, sigma, lambda)
    "sinusoid": (0.01, 10, 100, 600, 25, 1.0, 2.0),
    "teacher": (0.1, 100, 1000, 600, 8, 1.0, 1.0),
    "omniglot": (0.1, 5, 100, 200, 8, 1.0, 1.0),
}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    inner_lr, train_steps, test_steps, episodes, meta_batch, sigma, lam = DEFAULTS[args.bench]
    inner_lr = args.inner_lr or inner_lr
    train_steps = args.train_steps or train_steps
    meta_batch = args.meta_batch or meta_batch
    sigma = args.sigma or sigma
    lam = args.lam or lam
    episodes = args.episodes or episodes
    test_steps = args.test_steps or test_steps
    train, test, model = setup(args)
    learner = make_learner(args.learner, model, inner_lr, train_steps, sigma, lam)
    sigma_params = [p for n, p in learner.named_parameters() if n.startswith("shrinkage.")]
    others = [p for n, p in learner.named_parameters() if not n.startswith("shrinkage.")]
    opt = torch.optim.Adam([{"params": others}, {"params": sigma_params, "lr": args.sigma_lr or args.lr}],
                           lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    budget = 60 * args.minutes
    start, cpu_start = time.perf_counter(), time.process_time()
    iterations, log, window = 0, [], []
    while time.process_time() - cpu_start < budget:
        opt.zero_grad()
        stats = learner.meta_backward(train.sample(meta_batch, generator))
        if not all(torch.isfinite(p.grad).all() for p in learner.parameters() if p.grad is not None):
            raise RuntimeError(f"{args.learner}: non-finite meta-gradient at iteration {iterations + 1}")
        opt.step()
        iterations += 1
        window.append(stats["loss"])
        if iterations % 100 == 0:
            entry = {"iteration": iterations, "cpu_seconds": round(time.process_time() - cpu_start, 1),
                     "loss": sum(window) / len(window)}
            if hasattr(learner, "sigmas"):
                entry["sigma"] = learner.sigmas()
            log.append(entry)
            window = []
            print(entry, flush=True)
    cpu_seconds, wall_seconds = time.process_time() - cpu_start, time.perf_counter() - start
    tag = f"-{args.tag}" if args.tag else ""
    ev = mm.evaluate(learner, test, episodes=episodes, steps=test_steps, seed=12345)
    result = {
        "benchmark": args.bench, "learner": args.learner + tag, "date": date.today().isoformat(),
        "machine": f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}",
        "command": " ".join(["python", "benchmarks/shrinkage.py", *sys.argv[1:]]),
        "settings": {"inner_lr": inner_lr, "train_steps": train_steps, "test_steps": test_steps,
                     "meta_batch": meta_batch, "optimizer": "adam", "lr": args.lr,
                     "sigma_lr": (args.sigma_lr or args.lr) if hasattr(learner, "sigmas") else None, "seed": args.seed,
                     "sigma_init": sigma if args.learner.startswith("sigma") else None,
                     "lambda": lam if args.learner == "imaml" else None,
                     **({"layer": args.layer, "init": args.init, "shots": args.shots, "spread": args.spread,
                         "noise": args.noise} if args.bench == "teacher" else {"layer": None, "init": None})},
        "iterations": iterations, "train_cpu_seconds": round(cpu_seconds, 1),
        "train_wall_seconds": round(wall_seconds, 1), "evaluation": ev.to_dict(),
        "sigma": learner.sigmas() if hasattr(learner, "sigmas") else None, "log": log,
    }
    suffix = f"-layer{args.layer}-{args.init}" if args.bench == "teacher" else ""
    out = RESULTS / f"shrinkage-{args.bench}{suffix}-{args.learner}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.learner}: {ev} after {iterations} iterations ({cpu_seconds:.0f} CPU s, "
          f"{wall_seconds:.0f} wall s); sigma {result['sigma']} -> {out}")


def setting(text: str) -> tuple[float, int, int, float]:
    """``LR:STEPS:CG[:ANNEAL]`` as (inner rate, inner steps, CG steps, the rate's final fraction)."""
    lr, steps, cg, *anneal = text.split(":")
    return float(lr), int(steps), int(cg), float(anneal[0]) if anneal else 1.0


def implicit_check(args: argparse.Namespace) -> None:
    """How far the implicit meta-gradient of iMAML is from the exact gradient of the same inner
    loop, on one meta-batch of the benchmark's tasks at its (random) initialisation.

    For each inner rate (annealed to a fraction of itself over the steps, when a setting's
    fourth field says so), number of MAP steps and of CG steps (``Implicit.agreement``): the norm
    of the MAP objective's gradient at ``θ̂`` (0 at a stationary point, where the implicit
    function theorem holds), averaged over the tasks (results dated before 2026-12-04 measured
    it on the first task alone), and the cosine and norm ratio between iMAML's gradient and the
    gradient through the unrolled steps of the same proximal objective, over the meta-batch
    (``--meta-batch``, default 4).
    Writes ``results/implicit-check-BENCH[TAG].json``.
    """
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, _, model = setup(args)
    batch = train.sample(args.meta_batch or 4, torch.Generator().manual_seed(args.seed))
    lam = args.lam or DEFAULTS[args.bench][6]
    settings = [(0.1, 5, 5, 1.0), (0.1, 100, 5, 1.0), (0.1, 100, 20, 1.0), (0.03, 100, 5, 1.0), (0.03, 100, 20, 1.0)]
    if args.bench != "omniglot":
        settings = [(DEFAULTS[args.bench][0], k, cg, 1.0) for k in (10, 100) for cg in (5, 20)]
    if args.settings:
        settings = [setting(s) for s in args.settings.split(",")]

    rows = []
    for inner_lr, steps, cg, anneal_to in settings:
        imaml = mm.learners.IMAML(copy.deepcopy(model), inner_steps=steps, lam=lam, cg_steps=cg,
                                  inner=mm.adapt.sgd(inner_lr, anneal_to=anneal_to))
        check = imaml.outer.agreement(imaml.tasks(batch))
        row = {"inner_lr": inner_lr, "anneal_to": anneal_to, "inner_steps": steps, "cg_steps": cg,
               "map_gradient_norm": check["stationarity"], "map_gradient_ratio": check["stationarity_ratio"],
               "lowest_curvature": check["lowest_curvature"], "highest_curvature": check["highest_curvature"],
               "cosine": check["cosine"],
               "norm_ratio": check["norm_ratio"]}
        rows.append(row)
        print(row, flush=True)
    out = RESULTS / f"implicit-check-{args.bench}{args.tag}.json"
    out.write_text(json.dumps({"benchmark": args.bench, "lambda": lam, "tasks": len(batch), "date": date.today().isoformat(),
                               "command": " ".join(["python", "benchmarks/shrinkage.py", *sys.argv[1:]]),
                               "rows": rows}, indent=1))
    print(f"-> {out}")


def number(metric: str, mean: float, ci: float) -> str:
    return f"{100 * mean:.1f} ± {100 * ci:.1f}%" if metric == "accuracy" else f"{mean:.3f} ± {ci:.3f}"


ORDER = ["maml", "imaml", "reptile", "pretrained", "sigma-maml", "sigma-imaml", "sigma-reptile"]


def base_learner(name: str) -> str:
    """The learner of a result's name, without the ``--tag`` suffix (``sigma-imaml-seed1``)."""
    return max((n for n in ORDER if name == n or name.startswith(n + "-")), key=len)


def varying_module(layer: int) -> str:
    """The student module of the teacher benchmark's varying layer (network 4 → 8 → 1)."""
    return "head" if layer in (-1, 1) else "body.0"


def report() -> str:
    """Markdown tables of every ``shrinkage-*.json`` result: the metric at 1/10/100(/1000) steps,
    the best point of the curve and its step (a best step short of the last is overfitting of
    long adaptation), σ, and for the teacher family the ratio of the varying layer's σ to the
    largest other σ; each table with its adaptation curves (``results/shrinkage-*.png``); then
    the ``implicit-check`` results."""
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("shrinkage-*.json"))]
    results.sort(key=lambda r: (ORDER.index(base_learner(r["learner"])), r["learner"]))
    lines = []

    def key(r: dict) -> tuple:
        """Benchmark, varying layer and start (runs from before ``--init`` started randomly)."""
        layer = r["settings"]["layer"]
        return r["benchmark"], layer, r["settings"].get("init") or ("random" if layer is not None else None)

    for bench in sorted({key(r) for r in results}, key=str):
        rows = [r for r in results if key(r) == bench]
        metric = rows[0]["evaluation"]["metric"]
        teacher = bench[1] is not None
        steps = [k for k in REPORT_STEPS if any(k < len(r["evaluation"]["curve"]) for r in rows)]
        title = bench[0] + (f", only {varying_module(bench[1])} varies, {bench[2]} start" if teacher else "")
        figure = plot.adaptation({r["learner"]: r["evaluation"]["curve"] for r in rows}, f"test {metric}",
                                    RESULTS / f"shrinkage-{bench[0]}{f'-layer{bench[1]}-{bench[2]}' if teacher else ''}.png", title)
        lines += [f"\n#### {title} ({metric}, mean ± 95% CI over {rows[0]['evaluation']['episodes']} test tasks)\n",
                  "| learner | train steps | " + " | ".join(f"{k} step{'s' * (k > 1)}" for k in steps)
                  + " | best (step) | iterations | CPU min | wall min | σ per module |" + (" σ ratio |" if teacher else ""),
                  "|---" * (len(steps) + 7 + teacher) + "|"]
        for r in rows:
            curve = r["evaluation"]["curve"]
            cells = [number(metric, *curve[k]) if k < len(curve) else "" for k in steps]
            sigma = ", ".join(f"{m} {v:.3g}" for m, v in r["sigma"].items()) if r["sigma"] else ""
            means = [m for m, _ in curve]
            best = (max if metric == "accuracy" else min)(range(len(curve)), key=means.__getitem__)
            line = (f"| {r['learner']} | {r['settings']['train_steps']} | " + " | ".join(cells)
                    + f" | {number(metric, *curve[best])} ({best}) | {r['iterations']} | {r['train_cpu_seconds'] / 60:.1f} | {r['train_wall_seconds'] / 60:.1f}"
                    + f" | {sigma} |")
            if teacher:
                mine = varying_module(bench[1])
                found = r["sigma"] and mine in r["sigma"]
                ratio = r["sigma"][mine] / max(v for m, v in r["sigma"].items() if m != mine) if found else None
                line += f" {ratio:.2f} |" if found else " |"
            lines.append(line)
        lines.append(f"\n![{title}](results/{figure.name})")
    for path in sorted(RESULTS.glob("implicit-check-*.json")):
        check = json.loads(path.read_text())
        lines += [f"\n#### implicit-check, {check['benchmark']} (iMAML's λ = {check['lambda']:g}, "
                  f"{check['tasks']} tasks at initialisation; `{path.name}`)\n",
                  "| inner rate | MAP steps | CG steps | MAP gradient norm at θ̂ (over its norm at φ) | "
                  "curvature of the MAP objective at θ̂ | cosine to unrolled | norm ratio |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['inner_lr']:g}" + (f" annealed to {r['inner_lr'] * r['anneal_to']:g}"
                                              if r.get("anneal_to", 1) < 1 else "") + f" | {r['inner_steps']} | {r['cg_steps']} | {r['map_gradient_norm']:.2g}"
                  + (f" ({r['map_gradient_ratio']:.2f})" if "map_gradient_ratio" in r else "") + " | "
                  + (f"{r['lowest_curvature']:.1f} to {r['highest_curvature']:.1f}" if "lowest_curvature" in r else "")
                  + f" | {r['cosine']:.3f} | {r['norm_ratio']:.2f} |" for r in check["rows"]]
    return "\n".join(lines) + "\n"


def write_report(text: str, path: Path = Path(__file__).parent / "SHRINKAGE.md") -> None:
    """Put ``text`` between the results markers of ``path``."""
    start, end = "<!-- results: start (written by benchmarks/shrinkage.py report) -->", "<!-- results: end -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise ValueError(f"{path} has no results markers; add {start} and {end}")
    head, rest = doc.split(start)
    path.write_text(head + start + "\n" + text + rest[rest.index(end):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["sinusoid", "omniglot", "teacher", "report"])
    parser.add_argument("learner", nargs="?", choices=["maml", "imaml", "reptile", "pretrained", "sigma-maml",
                                                        "sigma-imaml", "sigma-reptile", "implicit-check"])
    parser.add_argument("--minutes", type=float, default=1.5, help="training budget, CPU minutes")
    parser.add_argument("--lr", type=float, default=1e-3, help="outer Adam learning rate")
    parser.add_argument("--sigma-lr", type=float, default=None, help="Adam learning rate of σ (default: --lr)")
    parser.add_argument("--inner-lr", type=float, default=None)
    parser.add_argument("--train-steps", type=int, default=None, help="inner steps in training")
    parser.add_argument("--meta-batch", type=int, default=None)
    parser.add_argument("--sigma", type=float, default=None, help="initial σ of every module")
    parser.add_argument("--lam", type=float, default=None, help="iMAML's λ")
    parser.add_argument("--episodes", type=int, default=None, help="test tasks")
    parser.add_argument("--test-steps", type=int, default=None, help="adaptation steps at test time")
    parser.add_argument("--layer", type=int, default=-1, help="teacher: the layer that varies")
    parser.add_argument("--init", choices=["random", "teacher"], default="random", help="teacher: the student's start")
    parser.add_argument("--shots", type=int, default=10, help="teacher: support points per task")
    parser.add_argument("--spread", type=float, default=1.0, help="teacher: scale of the varying layer's per-task change")
    parser.add_argument("--noise", type=float, default=0.1, help="teacher: standard deviation of the target noise")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=str(OMNIGLOT))
    parser.add_argument("--tag", default="", help="suffix of the result's name, for a variant's settings")
    parser.add_argument("--settings", default=None, metavar="LR:STEPS:CG[:ANNEAL],...",
                        help="implicit-check: the (inner rate, inner steps, CG steps[, the rate's final fraction]) "
                             "to measure")
    args = parser.parse_args()
    if args.bench == "report":
        text = report()
        print(text)
        write_report(text)
    elif args.learner == "implicit-check":
        implicit_check(args)
    elif args.learner is None:
        parser.error("name a learner")
    else:
        run(args)


if __name__ == "__main__":
    main()
