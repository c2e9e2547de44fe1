"""The non-meta-learned baseline: pretrain one network on all tasks jointly, then fine-tune.

MAML's comparison (Finn et al. 2017, section 5.1, "pretrained"): meta-training minimises the
average loss of the *unadapted* network over all data of the tasks,
``θ ← θ − β ∇_θ (1/T) Σ_t L_t^{support ∪ query}(f_θ)``; at test time it fine-tunes by the same
SGD inner loop as MAML. Whatever MAML gains over it is the value of learning to adapt.
"""

from __future__ import annotations

import torch
from torch import nn

from modmeta import losses
from modmeta.adapt import InnerRates
from modmeta.learners.gradient import GradientLearner
from modmeta.meta.execution import Execution


class Pretrained(GradientLearner):
    """Joint training without an inner loop; SGD fine-tuning (``inner_lr``) at test time."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 execution: Execution = "auto") -> None:
        super().__init__(model, inner_steps, InnerRates("fixed", inner_lr), execution=execution)

    def task_loss(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                  y_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unadapted network's loss on all of the task's data."""
        x = torch.cat([x_support, x_query])
        y = torch.cat([y_support, y_query])
        pred = self.model(x)
        return losses.loss(pred, y), losses.metric(pred, y)
