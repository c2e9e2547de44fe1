"""The non-meta-learned baseline: pretrain one network on all tasks jointly, then fine-tune.

MAML's comparison (Finn et al. 2017, section 5.1, "pretrained"): meta-training minimises the
average loss of the *unadapted* network over all data of the tasks,
``θ ← θ − β ∇_θ (1/T) Σ_t L_t^{support ∪ query}(f_θ)``; at test time it fine-tunes by the same
SGD inner loop as MAML. Whatever MAML gains over it is the value of learning to adapt.

``Pretrained = GradientLearner(inner=sgd(α), outer=joint())``.
"""

from __future__ import annotations

from torch import nn

from modmeta.adapt.optim import InnerOptimizer, sgd
from modmeta.learners.gradient import GradientLearner
from modmeta.meta import outer
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics


class Pretrained(GradientLearner):
    """Joint training without an inner loop; SGD fine-tuning (``inner_lr``, or ``inner``) at test time."""

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 inner: InnerOptimizer | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, sgd(inner_lr) if inner is None else inner, inner_steps, outer=outer.joint(),
                         execution=execution, batchnorm=batchnorm)
