"""The evaluation protocol: the mean query metric over held-out episodes, with a 95% CI.

Episodes come from a generator seeded with ``seed`` and are drawn in the same order whatever
the learner, so two learners evaluated with the same seed see the same episodes. The metric is
reported after every adaptation step ``0 .. steps`` (a curve), and the headline number is its
last point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from modmeta import losses
from modmeta.learners.base import Learner
from modmeta.tasks.base import TaskFamily


@dataclass(frozen=True)
class Evaluation:
    """Mean and 95% confidence half-width of the metric, after ``steps`` adaptation steps.

    ``curve[k]`` is ``(mean, ci95)`` after ``k`` steps, ``k = 0 .. steps``.
    """

    metric: str
    mean: float
    ci95: float
    episodes: int
    seed: int
    steps: int
    curve: list[tuple[float, float]] = field(default_factory=list)

    def __str__(self) -> str:
        if self.metric == "accuracy":
            return f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% ({self.episodes} episodes)"
        return f"MSE {self.mean:.4f} ± {self.ci95:.4f} ({self.episodes} episodes)"

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return asdict(self)


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width ``1.96 · s / √n`` of its normal 95% confidence interval."""
    values = values.double()
    n = values.numel()
    sd = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * sd / math.sqrt(n)


def evaluate(learner: Learner, family: TaskFamily, episodes: int = 600, steps: int | None = None,
             seed: int = 0, batch: int = 25, device: torch.device | str | None = None) -> Evaluation:
    """Adapt ``learner`` to ``episodes`` tasks of ``family`` and score their query sets.

    ``steps`` adaptation steps (default: the learner's training number) may exceed the
    training number. ``batch`` tasks are adapted at a time.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = learner.inner_steps if steps is None else steps
    if device is None:
        device = next(learner.parameters()).device
    dtype = next(learner.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    was_training = learner.training
    learner.eval()
    curves, name = [], None
    try:
        done = 0
        while done < episodes:
            tasks = family.sample(min(batch, episodes - done), generator).to(device, dtype)
            name = name or losses.metric_name(tasks.y_query)
            curves.append(learner.curve(tasks, steps).cpu())
            done += len(tasks)
    finally:
        learner.train(was_training)
    per_step = torch.cat(curves)  # [episodes, steps + 1] (metric learners: [episodes, 1])
    curve = [mean_ci95(per_step[:, k]) for k in range(per_step.shape[1])]
    mean, ci = curve[-1]
    return Evaluation(name, mean, ci, episodes, seed, per_step.shape[1] - 1, curve)
