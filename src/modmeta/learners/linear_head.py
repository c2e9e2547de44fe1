"""A good embedding plus a linear head (Tian, Wang, Krishnan, Tenenbaum and Isola, ECCV 2020,
"Rethinking few-shot image classification: a good embedding is all you need?").

Meta-training is not episodic: the embedding ``f_φ`` and a linear classifier over all
meta-training classes merged into one task are trained by plain cross-entropy,
``φ, W_g ← argmin Σ_{(x, y)} −log softmax(W_g f_φ(x))_y`` over the training split with global
class ids (:meth:`LinearHead.draw`). The global classifier is then dropped. To adapt to
an episode, the support set is embedded with ``φ`` frozen, each embedding is scaled to unit
length, ``z = f_φ(x) / ‖f_φ(x)‖``, and a multinomial logistic regression ``softmax(W z + b)``
is fitted to it with an L2 penalty (:func:`modmeta.adapt.metric.logistic_regression`; the
paper fits scikit-learn's, whose default ``C = 1`` is ``l2 = 1/N`` for ``N`` support
examples). Queries are classified by ``W z + b``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from modmeta import losses
from modmeta.adapt.metric import count_ways, logistic_regression
from modmeta.arguments import at_least
from modmeta.learners.metric import MetricLearner
from modmeta.meta.execution import Execution, map_tasks
from modmeta.models.batchnorm import Statistics
from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import LabelledBatch, TaskBatch


class LinearHead(MetricLearner):
    """Supervised pretraining over all training classes, then logistic regression per episode.

    ``model`` must end in an ``nn.Linear`` called ``head`` with one output per training class,
    e.g. ``Conv4(out=family.num_classes)``; that head becomes the learner's ``classifier``
    (it is taken out of the learner's copy of ``model``, which then returns embeddings). Each training step draws
    ``batch_size`` examples. The per-episode fit runs ``fit_steps`` gradient steps with
    penalty ``l2``.
    """

    def __init__(self, model: nn.Module, batch_size: int = 64, l2: float = 0.1, fit_steps: int = 100,
                 execution: Execution = "auto", batchnorm: Statistics = "transductive") -> None:
        at_least(1, batch_size=batch_size, fit_steps=fit_steps)
        at_least(0, l2=l2)
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear):
            raise ValueError(
                "LinearHead needs a model whose last layer is an nn.Linear named `head`, with one "
                "output per training class, e.g. Conv4(out=family.num_classes)"
            )
        super().__init__(model, execution, batchnorm=batchnorm)
        self.classifier = self.model.head
        self.model.head = nn.Identity()
        self.batch_size = batch_size
        self.l2 = l2
        self.fit_steps = fit_steps

    def draw(self, family: TaskFamily, size: int, generator: torch.Generator) -> LabelledBatch:
        """``batch_size`` examples of ``family``'s training classes with global class ids
        (``family.sample_flat``), not episodes; ``size`` (the meta-batch) is not used."""
        if not hasattr(family, "sample_flat"):
            raise TypeError(f"LinearHead trains on labelled examples; {type(family).__name__} has no sample_flat")
        if family.num_classes != self.classifier.out_features:
            raise ValueError(
                f"the model's head has {self.classifier.out_features} outputs but the family has "
                f"{family.num_classes} training classes: build the model with out={family.num_classes}"
            )
        return LabelledBatch(*family.sample_flat(self.batch_size, generator))

    def meta_backward(self, data: LabelledBatch) -> dict[str, float]:
        """One supervised step's gradient into ``.grad``: cross-entropy of the global
        classifier on ``data`` (from :meth:`draw`); returns ``{"loss", "metric"}``."""
        if not isinstance(data, LabelledBatch):
            raise NotImplementedError(
                "LinearHead is trained on all training classes merged into one classification "
                "problem, not on episodes: give meta_backward the labelled batch of draw(family, size, "
                "generator), or call train_batch(family, generator), which does both"
            )
        param = self.classifier.weight
        data = data.to(param.device, param.dtype)
        logits = self.classifier(self.model(data.x))
        loss = F.cross_entropy(logits, data.y)
        loss.backward()
        return {"loss": loss.item(), "metric": losses.metric(logits, data.y).item()}

    def train_batch(self, family: TaskFamily, generator: torch.Generator) -> dict[str, float]:
        """:meth:`draw` and :meth:`meta_backward` in one call."""
        return self.meta_backward(self.draw(family, self.batch_size, generator))

    def embed(self, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-length embeddings ``f_φ(x) / ‖f_φ(x)‖`` (batch statistics as
        :meth:`MetricLearner.embed`)."""
        return F.normalize(super().embed(x, support), dim=-1)

    def embed_support(self, x_support: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of a support set, normalised by its own batch statistics
        whatever ``batchnorm`` says (that choice is about the queries)."""
        return F.normalize(self.model(x_support), dim=-1)

    def fit(self, x_support: torch.Tensor, y_support: torch.Tensor, ways: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` of the logistic regression on the embedded support set (``φ`` frozen)."""
        with torch.no_grad():
            z = self.embed_support(x_support)
        return logistic_regression(z, y_support, ways, self.l2, self.fit_steps)

    def predict(self, state: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor,
                support: torch.Tensor | None = None) -> torch.Tensor:
        return classify(state, self.embed(x, support))

    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        """``[T, 1]``, as :meth:`MetricLearner.curve`, faster: the tasks are embedded as
        ``execution`` says, then the logistic regressions (many tiny steps) are fitted for all
        tasks at once under ``vmap``."""
        ways = count_ways(batch.y_support)

        def embed(xs: torch.Tensor, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.embed_support(xs), self.embed(xq, xs)

        def score(zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
            state = logistic_regression(zs, ys, ways, self.l2, self.fit_steps)
            return losses.metric(classify(state, zq), yq)

        with torch.no_grad():
            zs, zq = map_tasks(embed, (batch.x_support, batch.x_query), self.execution)
            return vmap(score)(zs, batch.y_support, zq, batch.y_query)[:, None]


def classify(state: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The logits ``W z + b`` of the fitted regression ``state = (W, b)``."""
    w, b = state
    return z @ w.T + b
