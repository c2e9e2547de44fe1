"""Weight norms along a run: the norm of every convolution's weight and the validation accuracy
(before adaptation, after one step and after the config's test steps), every ``--every`` CPU
seconds of training. ``--train-split`` also scores the same kind of episodes drawn from the
training characters (``train_accuracy_*``): if they are no better than the validation ones the
learner underfits rather than meta-overfits. ``--training-shape`` scores validation episodes of
the training tasks' shape (ways, shots, queries) after the training inner steps
(``training_shape_accuracy``): how well the task it is meta-trained on is learned.

Batch norm after a convolution makes its weight scale-invariant: the gradient is at right
angles to the weight and every step lengthens it, so a fixed inner rate changes it less and less
relative to its size. This shows how fast that happens for a config (RESULTS.md, Reptile):

    python benchmarks/weight_norms.py configs/omniglot-reptile-5w1s.yaml --set learner.inner.lr=0.01 \\
        --decay-minutes 20 --minutes 3 --out results/reptile-weight-norms-lr1e-2.json

The training loop is ``omniglot.py``'s (the config's optimizer, meta-batch and rate; a
``linear`` schedule decayed over ``--decay-minutes``), stopped after ``--minutes``.
``--renormalize`` rescales every convolution's weight back to its initial norm after each
meta-step: with batch statistics after each convolution no prediction changes, but the inner
rate keeps its size relative to the weights (a probe, not a library feature).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date

import torch

import modmeta as mm
from modmeta import config
from modmeta.train.optimizers import make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a config, e.g. configs/omniglot-reptile-5w1s.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--minutes", type=float, default=3.0, help="CPU minutes of training before stopping")
    parser.add_argument("--decay-minutes", type=float, default=20.0, help="horizon of a linear schedule")
    parser.add_argument("--every", type=float, default=60.0, help="CPU seconds between measurements")
    parser.add_argument("--episodes", type=int, default=100, help="validation episodes per measurement")
    parser.add_argument("--renormalize", action="store_true", help="rescale convolutions to their initial norms")
    parser.add_argument("--train-split", action="store_true", help="also score episodes of training characters")
    parser.add_argument("--training-shape", action="store_true", help="also score validation episodes shaped as training's")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = config.load(args.config, args.set)
    run = config.build(cfg)
    learner, t = run.learner, cfg.train
    opt = make_optimizer(t.optimizer, learner.parameters(), t.lr, "train.optimizer")
    generator = torch.Generator().manual_seed(t.seed)
    family = config.evaluation_tasks(run)
    val = family.split("val")
    convs = {n: p for n, p in learner.model.named_parameters() if p.dim() == 4}
    initial = {n: p.detach().norm() for n, p in convs.items()}
    rows: list[dict] = []
    used, not_training, iterations, cpu_start = 0.0, 0.0, 0, time.process_time()
    while True:
        done = used >= 60 * args.minutes
        if done or used >= args.every * len(rows):  # every --every seconds, and once at the end
            before = time.process_time()
            r = mm.evaluate(learner, val, episodes=args.episodes, steps=cfg.eval.steps, seed=t.val_seed)
            rows.append({"cpu_seconds": round(used), "iteration": iterations, "accuracy_0": r.curve[0][0],
                         "accuracy_1": r.curve[1][0], "accuracy_last": r.curve[-1][0],
                         "norms": {n: round(p.detach().norm().item(), 3) for n, p in convs.items()}})
            if args.train_split:
                r = mm.evaluate(learner, family.split("train"), episodes=args.episodes, steps=cfg.eval.steps,
                                seed=t.val_seed)
                rows[-1] |= {"train_accuracy_1": r.curve[1][0], "train_accuracy_last": r.curve[-1][0]}
            if args.training_shape:
                r = mm.evaluate(learner, run.tasks.split("val"), episodes=args.episodes, seed=t.val_seed)
                rows[-1]["training_shape_accuracy"] = r.mean
            print(rows[-1], flush=True)
            not_training += time.process_time() - before
        if done:
            break
        if t.schedule == "linear":
            for group in opt.param_groups:
                group["lr"] = t.lr * max(0.0, 1 - used / (60 * args.decay_minutes))
        opt.zero_grad()
        learner.meta_backward(learner.draw(run.tasks, t.meta_batch, generator))
        opt.step()
        if args.renormalize:
            with torch.no_grad():
                for n, p in convs.items():
                    p.mul_(initial[n] / p.norm())
        iterations += 1
        used = time.process_time() - cpu_start - not_training
    result = {"command": "python benchmarks/weight_norms.py " + " ".join(
        [args.config] + [f"--set {s}" for s in args.set] + [f"--minutes {args.minutes}",
                                                             f"--decay-minutes {args.decay_minutes}",
                                                             f"--every {args.every}", f"--episodes {args.episodes}"]
        + [f"--{flag.replace('_', '-')}" for flag in ("renormalize", "train_split", "training_shape")
           if getattr(args, flag)]),
              "date": date.today().isoformat(), "config": run.config.to_dict(), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
