"""Loss and metric of a task, chosen by its targets: class labels or real values.

Integer targets mean classification (cross-entropy, accuracy); floating-point targets mean
regression (mean squared error, which is also the metric). Choosing by dtype keeps learners
free of a task-kind flag, and works under ``torch.func.vmap``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_classification(y: torch.Tensor) -> bool:
    """True for class-index targets."""
    return not y.is_floating_point()


def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class labels, mean squared error for real targets."""
    if is_classification(y):
        return F.cross_entropy(pred, y)
    return F.mse_loss(pred, y)


def metric(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy for class labels, mean squared error for real targets (no gradient)."""
    pred = pred.detach()
    if is_classification(y):
        return (pred.argmax(-1) == y).to(pred.dtype).mean()
    return F.mse_loss(pred, y)


def metric_name(y: torch.Tensor) -> str:
    """``"accuracy"`` or ``"mse"``."""
    return "accuracy" if is_classification(y) else "mse"
