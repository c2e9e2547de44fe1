"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, NeurIPS 2016).

A query ``x̂`` is labelled by attention over the support set ``S = {(x_i, y_i)}``:
``P(ŷ | x̂, S) = Σ_i a(x̂, x_i) y_i`` (eq. 1, ``y_i`` one-hot), with the cosine-softmax kernel
``a(x̂, x_i) = exp(c(f(x̂), g(x_i))) / Σ_j exp(c(f(x̂), g(x_j)))`` (eq. 2). The embeddings are
meta-learned by minimising ``−log P(y | x̂, S)`` over the queries; the logits returned are
``log P``.

- Simple embedding (``fce=False``, the paper's Omniglot setting): ``f = g = model``.
- Full context embeddings (``fce=True``, section 2.1.2 and appendix A), with ``g'``, ``f'``
  the model's embedding of size ``features``:
  ``g(x_i, S) = h→_i + h←_i + g'(x_i)``, a bidirectional LSTM over the support set in its
  given order; and ``f(x̂, S) = h_K``, ``K = fce_steps`` steps of an attention LSTM from
  ``h_0 = f'(x̂)``, ``c_0 = 0``: ``r_{k−1} = Σ_i softmax(h_{k−1}ᵀ g(x_i)) g(x_i)``,
  ``ĥ_k, c_k = LSTM(f'(x̂), [h_{k−1}, r_{k−1}], c_{k−1})``, ``h_k = ĥ_k + f'(x̂)``.
  The paper leaves ``K`` open.

``scale`` multiplies the cosines before the softmax (1 in the paper). Cosines lie in
``[−1, 1]`` (in ``[0, 1]`` for the non-negative features of a ReLU network), so with
``scale = 1`` no attention weight can exceed ``e / (e + N − 1)`` (0.40 for 5-way 1-shot
with ReLU features): the loss cannot fall below 0.9 and its gradient stays small, and
training is slow. With a scale of 10 the learner trains as fast as ProtoNet on the same
episodes (benchmarks/metric_learners.md); this is the metric scaling of Oreshkin, Rodríguez
and Lacoste (TADAM, NeurIPS 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modmeta.adapt.metric import cosine
from modmeta.arguments import at_least, positive
from modmeta.learners.metric import MetricLearner
from modmeta.meta.execution import Execution
from modmeta.models.batchnorm import Statistics
from modmeta.models.lstm import LSTMCell

State = tuple[torch.Tensor, torch.Tensor]  # support embeddings g(x_i) [N, D], one-hot y_i [N, ways]


class MatchingNet(MetricLearner):
    """Cosine attention over the embedded support set (cosines times ``scale``); full context
    embeddings if ``fce``."""

    def __init__(self, model: nn.Module, fce: bool = False, features: int = 64, fce_steps: int = 5,
                 scale: float = 1.0, execution: Execution = "auto", batchnorm: Statistics = "transductive") -> None:
        at_least(1, features=features, fce_steps=fce_steps)
        positive(scale=scale)
        super().__init__(model, execution, batchnorm=batchnorm)
        self.scale = scale
        self.fce = fce
        self.features = features
        self.fce_steps = fce_steps
        if fce:
            self.forward_lstm = LSTMCell(features, features)
            self.backward_lstm = LSTMCell(features, features)
            self.attention_lstm = LSTMCell(2 * features, features)

    def fit(self, x_support: torch.Tensor, y_support: torch.Tensor, ways: int) -> State:
        g = self.model(x_support)
        if self.fce:
            g = self.support_context(g)
        return g, F.one_hot(y_support, ways).to(g.dtype)

    def attention(self, state: State, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """``[Q, N]``: ``a(x̂, x_i)`` for each query and support example (rows sum to one)."""
        return torch.softmax(self.similarity(state, x, support), -1)

    def similarity(self, state: State, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """``[Q, N]``: ``scale · c(f(x̂), g(x_i))``, the attention's logits."""
        g, _ = state
        f = self.embed(x, support)
        if self.fce:
            f = self.query_context(f, g)
        return self.scale * cosine(f, g)

    def predict(self, state: State, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(ŷ | x̂, S) = log Σ_i a(x̂, x_i) y_i``, as a log-sum-exp of the attention's log
        weights over each class's support examples (finite for any ``scale``)."""
        log_a = torch.log_softmax(self.similarity(state, x, support), -1)
        return torch.logsumexp(log_a[:, :, None] + state[1].log()[None], dim=1)

    def support_context(self, g0: torch.Tensor) -> torch.Tensor:
        """``g(x_i, S) = h→_i + h←_i + g'(x_i)`` for the support embeddings ``g0 = g'(S)``."""
        if g0.shape[-1] != self.features:
            raise ValueError(
                f"MatchingNet(fce=True) was built for {self.features} features but the model "
                f"embeds into {g0.shape[-1]}: pass features={g0.shape[-1]}"
            )
        zero = g0.new_zeros(self.features)
        forward, backward = [], []
        state = (zero, zero)
        for gi in g0:
            state = self.forward_lstm(gi, state)
            forward.append(state[0])
        state = (zero, zero)
        for gi in g0.flip(0):
            state = self.backward_lstm(gi, state)
            backward.append(state[0])
        return g0 + torch.stack(forward) + torch.stack(backward[::-1])

    def query_context(self, f0: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``f(x̂, S) = h_K``: ``fce_steps`` steps of the attention LSTM over ``g(S)``."""
        h, c = f0, torch.zeros_like(f0)
        for _ in range(self.fce_steps):
            r = torch.softmax(h @ g.T, -1) @ g
            h_hat, c = self.attention_lstm(torch.cat([f0, r], -1), (h, c))
            h = h_hat + f0
        return h
