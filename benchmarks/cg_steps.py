"""How many conjugate-gradient steps an implicit meta-gradient needs, measured during training.

Builds a config whose learner has an implicit outer update (iMAML, σ-iMAML), trains it with its
own outer optimizer, and at the iterations in ``--at`` computes each of 8 fixed training
episodes' meta-gradient with ``--cg`` CG steps and with ``--reference`` steps (the learner's
damping throughout). Reports the cosine of each count's mean meta-gradient to the reference's,
and the lowest cosine of one task's. One process, one thread::

    python benchmarks/cg_steps.py configs/omniglot-imaml-5w1s.yaml --out benchmarks/results/imaml-cg-steps.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from modmeta import config
from modmeta.meta import outer
from modmeta.train import optimizers
from machine import cpu_name


def meta_gradients(learner: torch.nn.Module, batch: object, update: outer.Implicit) -> torch.Tensor:
    """One row per task: the flattened meta-gradient ``update`` gives it."""
    rows = []
    for task in learner.tasks(batch):
        wrt = [p for p in task.psi.values() if p.requires_grad]
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(update(task).surrogate, wrt)]))
    return torch.stack(rows)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--cg", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--reference", type=int, default=20)
    parser.add_argument("--at", type=int, nargs="+", default=[0, 100, 400], help="training iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = config.build(config.load(args.config, [f"train.seed={args.seed}"]))
    learner = run.learner
    if not isinstance(learner.outer, outer.Implicit):
        sys.exit(f"{args.config}: the learner's outer update is not implicit")
    damping = learner.outer.damping
    train = run.config.train
    optimizer = optimizers.make_optimizer(train.optimizer, list(learner.parameters()), train.lr)
    generator = torch.Generator().manual_seed(args.seed)
    check = learner.draw(run.tasks, 8, torch.Generator().manual_seed(args.seed + 1000))
    rows = []
    for iteration in range(max(args.at) + 1):
        if iteration in args.at:
            reference = meta_gradients(learner, check, outer.implicit(args.reference, damping))
            for steps in args.cg:
                found = meta_gradients(learner, check, outer.implicit(steps, damping))
                rows.append({"iteration": iteration, "cg_steps": steps,
                             "mean_gradient_cosine": cosine(found.mean(0), reference.mean(0)).item(),
                             "lowest_task_cosine": cosine(found, reference).min().item()})
                print(rows[-1], flush=True)
        optimizer.zero_grad()
        learner.meta_backward(learner.draw(run.tasks, train.meta_batch, generator))
        optimizer.step()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{cpu_name()}, 1 thread, torch {torch.__version__}",
              "command": " ".join(["python", "benchmarks/cg_steps.py", *sys.argv[1:]]),
              "config": args.config, "damping": damping, "reference_cg_steps": args.reference, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
