"""Reptile on Omniglot as the authors' code runs it, in plain PyTorch, to tell modmeta's Reptile
from the reference's settings at the same CPU budget (RESULTS.md, Reptile).

Written from reading ``openai/supervised-reptile`` (``run_omniglot.py --shots 1 --train-shots 10
--inner-batch 10 --inner-iters 5 --learning-rate 0.001 --meta-step 1 --meta-step-final 0
--meta-batch 5 --eval-batch 5 --eval-iters 50 --transductive``), with none of modmeta's code, so
that a difference in modmeta shows as a difference in accuracy. Their choices, each of which a
switch turns into modmeta's:

- images: each PNG resized to 28×28 by Pillow's default for its binary mode (nearest
  neighbour), paper 1 and ink 0 (``--lanczos``: modmeta's grayscale Lanczos resize, ink 1);
- split: the 1,623 characters of both archives shuffled with the seed, 1,200 to train (each in 4
  rotations, 4,800 classes) and 423 to test (unrotated);
- network: 4 × [3×3 convolution, 64 filters, stride 2, TensorFlow's 'same' padding (one row and
  column at the bottom and right where modmeta pads one all round: ``--torch-pad``), batch norm
  with batch statistics and ε 1e-3 (``--bn-eps``), ReLU], the 2×2×64 maps flattened
  (``--mean-pool`` averages them), a dense layer; Glorot-uniform weights and zero biases
  (``--torch-init``: PyTorch's default);
- loss: the sum over the batch (``--mean-loss``), which changes Adam's steps only through ε;
- inner loop: one Adam (1e-3, β1 0) whose moments and step count run on from task to task and
  iteration to iteration, and into each evaluation, which restores them afterwards
  (``--fresh-adam``: a new Adam for every task, as modmeta's);
- training task: 5 classes × 10 images, 5 steps on batches of 10 drawn without replacement;
  meta-batch 5; φ ← φ + ε (mean θ̃ − φ), ε from 1 to 0 linearly over the budget;
- test task: 5 classes × 1 image, 50 steps on those 5, then one query per class predicted in a
  single batch (transductive batch norm; ``--queries 15`` as modmeta's).

The budget is CPU time at one thread (``--minutes``, wall-clock with ``--device cuda``) with ε
decayed over it, as ``omniglot.py`` does; validation every ``--val-every`` seconds on the same
``--val-tasks`` test-split tasks each time (the reference has no validation split) is left out
of the budget, and the final score is on ``--test-tasks`` other tasks of the test split.

    python benchmarks/reptile_reference.py --minutes 20 --out benchmarks/results/reptile-reference-20min-seed0.json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import random
import sys
import time
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from machine import cpu_name

ARCHIVES = ("images_background.zip", "images_evaluation.zip")


def read_characters(root: Path, lanczos: bool) -> torch.Tensor:
    """``[1623, 20, 28, 28]`` float images of every character of both archives, in name order."""
    characters = []
    for archive in ARCHIVES:
        with zipfile.ZipFile(root / archive) as z:
            folders: dict[str, list[str]] = {}
            for name in sorted(n for n in z.namelist() if n.endswith(".png")):
                folders.setdefault(name.rsplit("/", 1)[0], []).append(name)
            for folder in sorted(folders):
                images = []
                for name in folders[folder]:
                    image = Image.open(io.BytesIO(z.read(name)))
                    if lanczos:  # modmeta's: grayscale, Lanczos, ink bright
                        gray = image.convert("L").resize((28, 28), Image.Resampling.LANCZOS)
                        images.append((255 - np.asarray(gray)).astype(np.float32) / 255)
                    else:  # theirs: a binary image resizes by nearest neighbour; paper 1, ink 0
                        images.append(np.asarray(image.resize((28, 28))).astype(np.float32))
                characters.append(np.stack(images))
    return torch.from_numpy(np.stack(characters))


class ReferenceNet(nn.Module):
    """Their ``OmniglotModel``: 4 × [conv 3×3/2 'same', batch norm, ReLU], flatten, dense."""

    def __init__(self, ways: int, bn_eps: float, torch_pad: bool, mean_pool: bool, torch_init: bool) -> None:
        super().__init__()
        self.torch_pad, self.mean_pool = torch_pad, mean_pool
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else 64, 64, 3, stride=2, padding=1 if torch_pad else 0)
                                   for i in range(4))
        self.norms = nn.ModuleList(nn.BatchNorm2d(64, eps=bn_eps, track_running_stats=False) for _ in range(4))
        self.head = nn.Linear(64 if mean_pool else 256, ways)
        if not torch_init:
            for layer in [*self.convs, self.head]:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            if not self.torch_pad:  # 'same' at stride 2: the padding a ceil(n / 2) output needs, extra at the end
                pad = max(2 * (math.ceil(x.shape[-1] / 2) - 1) + 3 - x.shape[-1], 0)
                x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
            x = F.relu(norm(conv(x)))
        return self.head(x.mean((2, 3)) if self.mean_pool else x.flatten(1))


class Reference:
    """The reference's training and evaluation loop around one network and one inner Adam."""

    def __init__(self, args: argparse.Namespace, images: torch.Tensor, rng: random.Random) -> None:
        self.args, self.images, self.rng = args, images, rng
        self.device = torch.device(args.device)
        order = list(range(len(images)))
        rng.shuffle(order)
        self.train_classes = [(c, r) for c in order[:1200] for r in range(4)]
        self.test_classes = [(c, 0) for c in order[1200:]]
        self.net = ReferenceNet(5, args.bn_eps, args.torch_pad, args.mean_pool, args.torch_init).to(self.device)
        self.params = list(self.net.parameters())
        self.adam = self.new_adam()

    def new_adam(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.params, lr=1e-3, betas=(0.0, 0.999), eps=1e-8)

    def task(self, classes: list[tuple[int, int]], shots: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``shots`` images of each of 5 random classes, labelled by draw order."""
        xs = [torch.rot90(self.images[c, self.rng.sample(range(20), shots)], r, (1, 2))
              for c, r in self.rng.sample(classes, 5)]
        y = torch.arange(5).repeat_interleave(shots)
        return torch.cat(xs).unsqueeze(1).to(self.device), y.to(self.device)

    def adapt(self, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, adam: torch.optim.Adam) -> None:
        """``steps`` Adam steps on batches of ``batch`` rows, drawn without replacement, reshuffled per pass."""
        order: list[int] = []
        for _ in range(steps):
            rows = []
            while len(rows) < batch:
                if not order:
                    order = torch.randperm(len(y)).tolist()
                rows.append(order.pop())
            adam.zero_grad()
            F.cross_entropy(self.net(x[rows]), y[rows], reduction="mean" if self.args.mean_loss else "sum").backward()
            adam.step()

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def load(self, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, values):
                p.copy_(v)

    def meta_step(self, epsilon: float) -> None:
        phi = self.weights()
        mean = [torch.zeros_like(p) for p in phi]
        for _ in range(5):
            x, y = self.task(self.train_classes, 10)
            self.adapt(x, y, 10, 5, self.new_adam() if self.args.fresh_adam else self.adam)
            for m, p in zip(mean, self.params):
                m += p.detach() / 5
            self.load(phi)
        self.load([p + epsilon * (m - p) for p, m in zip(phi, mean)])

    def evaluate(self, tasks: int, seed: int) -> float:
        """Accuracy on ``tasks`` 1-shot test tasks drawn with ``seed``; weights and Adam restored."""
        rng, self.rng = self.rng, random.Random(seed)
        phi, state = self.weights(), copy.deepcopy(self.adam.state_dict())
        correct = total = 0
        for _ in range(tasks):
            x, y = self.task(self.test_classes, 1 + self.args.queries)
            support = torch.arange(len(y), device=self.device) % (1 + self.args.queries) == 0
            self.adapt(x[support], y[support], 5, 50, self.new_adam() if self.args.fresh_adam else self.adam)
            with torch.no_grad():
                correct += (self.net(x[~support]).argmax(1) == y[~support]).sum().item()
            total += int((~support).sum())
            self.load(phi)
            self.adam.load_state_dict(copy.deepcopy(state))
        self.rng = rng
        return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget in CPU minutes (wall with cuda)")
    parser.add_argument("--val-every", type=float, default=240.0, help="seconds of training between validations")
    parser.add_argument("--val-tasks", type=int, default=200)
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", type=Path, default=Path(__file__).parents[2] / "shared" / "data" / "omniglot")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lanczos", action="store_true", help="modmeta's images: grayscale Lanczos resize, ink 1")
    parser.add_argument("--torch-init", action="store_true", help="PyTorch's default initialisation")
    parser.add_argument("--bn-eps", type=float, default=1e-3, help="batch norm's ε (modmeta: 1e-5)")
    parser.add_argument("--torch-pad", action="store_true", help="padding 1 all round")
    parser.add_argument("--mean-pool", action="store_true", help="average the last maps (MAML's network)")
    parser.add_argument("--mean-loss", action="store_true", help="mean cross-entropy over the batch")
    parser.add_argument("--fresh-adam", action="store_true", help="a new Adam for every task and test task")
    parser.add_argument("--queries", type=int, default=1, help="test queries per class (modmeta: 15)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    reference = Reference(args, read_characters(args.root, args.lanczos), random.Random(args.seed))
    clock = time.process_time if args.device == "cpu" else time.perf_counter
    budget, start, validating = 60 * args.minutes, clock(), 0.0
    iterations, validation = 0, []
    while (used := clock() - start - validating) < budget:
        if used >= args.val_every * len(validation):
            before = clock()
            validation.append({"iteration": iterations, "seconds": round(used, 1),
                               "accuracy": reference.evaluate(args.val_tasks, seed=1)})
            print(validation[-1], flush=True)
            validating += clock() - before
        reference.meta_step(epsilon=1.0 - used / budget)
        iterations += 1
    used = clock() - start - validating
    validation.append({"iteration": iterations, "seconds": round(used, 1),
                       "accuracy": reference.evaluate(args.val_tasks, seed=1)})
    test = reference.evaluate(args.test_tasks, seed=2)
    n = args.test_tasks * 5 * args.queries
    result = {"benchmark": "omniglot 5-way 1-shot, openai/supervised-reptile's settings",
              "command": " ".join(["python", "benchmarks/reptile_reference.py", *sys.argv[1:]]),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "date": date.today().isoformat(),
              "machine": f"{cpu_name()} {args.device}, 1 thread, torch {torch.__version__}",
              "iterations": iterations, "train_seconds": round(used, 1),
              "test": {"accuracy": test, "ci95": 1.96 * math.sqrt(test * (1 - test) / n), "tasks": args.test_tasks,
                       "queries": n},
              "validation": validation}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"reference Reptile: {100 * test:.2f}% on {args.test_tasks} test tasks after {iterations} iterations -> {args.out}")


if __name__ == "__main__":
    main()
