"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017).

Each class ``k`` of a task is represented by the mean embedding of its support examples,
``c_k = (1/|S_k|) Σ_{(x_i, y_i) ∈ S_k} f_φ(x_i)`` (eq. 1), and a query is classified by a
softmax over negative squared Euclidean distances to the prototypes,
``p_φ(y = k | x) = exp(−d(f_φ(x), c_k)) / Σ_{k'} exp(−d(f_φ(x), c_{k'}))`` (eq. 2). The
embedding ``φ`` is meta-learned by minimising ``−log p_φ(y = k | x)`` over the queries.

The paper trains Omniglot with more ways than it tests (60-way episodes): the ways are read
from each batch's labels, so the same learner trains on the training family's ways and is
evaluated on the test family's.
"""

from __future__ import annotations

import torch

from modmeta.adapt.metric import prototypes, squared_euclidean
from modmeta.learners.metric import MetricLearner


class ProtoNet(MetricLearner):
    """Nearest class mean in the embedding of ``model``; logits ``−‖f_φ(x) − c_k‖²``."""

    def fit(self, x_support: torch.Tensor, y_support: torch.Tensor, ways: int) -> torch.Tensor:
        """The prototypes ``c_k``, ``[ways, D]``."""
        return prototypes(self.model(x_support), y_support, ways)

    def predict(self, state: torch.Tensor, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        return -squared_euclidean(self.embed(x, support), state)
