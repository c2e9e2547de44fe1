"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales, CVPR 2018).

An embedding ``f_φ`` maps images to feature maps. For K-shot tasks the maps of each class's
support examples are summed into one class map. A learned relation module
``g_ϕ`` scores each (class, query) pair from the concatenation ``C(·, ·)`` of their maps
along the channel axis: ``r_{i,j} = g_ϕ(C(f_φ(x_i), f_φ(x_j)))`` in ``(0, 1)`` (eq. 1). Both
are meta-learned by regressing the scores onto the match indicator,
``φ, ϕ ← argmin Σ_i Σ_j (r_{i,j} − 1(y_i == y_j))²`` (eq. 2), the mean squared error against
the one-hot query labels. The predicted class is the highest-scoring one; the scores are
returned in place of logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modmeta.adapt.metric import class_sums
from modmeta.learners.metric import MetricLearner
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics
from modmeta.models.relation import RelationModule
from modmeta.models.safety import functional_copy


class RelationNet(MetricLearner):
    """Relation scores of summed class maps and query maps.

    ``model`` must return feature maps ``[N, channels, H, W]`` (e.g.
    :class:`modmeta.models.RelationEmbedding`); ``relation`` defaults to the paper's
    :class:`modmeta.models.RelationModule` with a hidden layer of ``hidden`` units (a given
    ``relation`` is copied, as ``model`` is).
    """

    def __init__(self, model: nn.Module, channels: int = 64, hidden: int = 8,
                 relation: nn.Module | None = None, execution: Execution = "auto",
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__(model, execution, batchnorm=batchnorm)
        self.relation = RelationModule(channels, hidden) if relation is None else functional_copy(relation)

    def fit(self, x_support: torch.Tensor, y_support: torch.Tensor, ways: int) -> torch.Tensor:
        """The class maps ``Σ_{i: y_i = k} f_φ(x_i)``, ``[ways, C, H, W]``."""
        maps = self.model(x_support)
        if maps.dim() != 4:
            raise ValueError(
                f"RelationNet compares feature maps [N, C, H, W], but the model returns shape "
                f"{tuple(maps.shape)}: use an embedding without flattening, e.g. RelationEmbedding"
            )
        return class_sums(maps, y_support, ways)

    def predict(self, state: torch.Tensor, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """``[Q, ways]``: ``r = g_ϕ(C(class map, query map))`` for every pair."""
        queries = self.embed(x, support)
        q, ways = queries.shape[0], state.shape[0]
        pairs = torch.cat([state[None].expand(q, *state.shape),
                           queries[:, None].expand(q, ways, *queries.shape[1:])], dim=2)
        return self.relation(pairs.flatten(0, 1)).view(q, ways)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the scores against the one-hot labels (eq. 2)."""
        return F.mse_loss(pred, F.one_hot(y, pred.shape[-1]).to(pred.dtype))
