"""The metric-learning family's shared body: adapt by summarising the embedded support set.

A metric learner is a composition of
- a *meta-representation*: an embedding network (and, for some, a comparison network),
- a *task adaptation* without gradient steps: a summary of the embedded support set
  (:mod:`modmeta.adapt.metric`: prototypes, class sums, a fitted linear classifier),
- a *meta-update*: backpropagation of the query loss through the summary and comparison.

The named learners (ProtoNet, Matching Networks, Relation Networks, the linear-head baseline)
define only :meth:`MetricLearner.fit` (support set -> task state) and
:meth:`MetricLearner.predict` (task state, queries -> logits).

There are no adaptation steps: ``curve`` returns ``[T, 1]`` whatever ``steps`` is, and the
evaluation protocol reports that single point. The support set is embedded with its own batch
statistics; the queries with theirs (``batchnorm="transductive"``, as MAML does here) or with
the support set's (``"support"``: non-transductive, see :mod:`modmeta.models.batchnorm`). Tasks are batched as ``execution`` says (see
:mod:`modmeta.meta.execution`); the per-task code runs under ``vmap`` and in a loop alike.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from modmeta import losses
from modmeta.adapt.metric import count_ways
from modmeta.learners.base import Learner
from modmeta.meta import aggregate as aggregation
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Choice, Execution, map_tasks
from modmeta.models.batchnorm import Statistics, check_statistics, normalised, predicted
from modmeta.models.safety import functional_copy
from modmeta.tasks.batch import TaskBatch


class MetricLearner(Learner):
    """Embed with ``model``; adapt by :meth:`fit`; classify queries by :meth:`predict`.

    ``model`` is any ``nn.Module`` mapping a batch of inputs to a batch of embeddings; the
    learner trains a copy of it (``model`` itself is never changed) whose ``nn.BatchNorm*``
    layers are replaced by :class:`modmeta.models.BatchNorm`; ``batchnorm`` says which batch
    statistics normalise the queries (see :meth:`embed`). The tasks'
    meta-gradients (of their query losses) are combined by ``aggregate`` (the mean).
    """

    def __init__(self, model: nn.Module, execution: Execution = "auto", aggregate: Aggregation | None = None,
                 batchnorm: Statistics = "transductive") -> None:
        super().__init__()
        self.batchnorm = check_statistics(batchnorm)
        self.model = functional_copy(model)
        self.choice = Choice(execution, self.model)
        self.aggregate = aggregation.mean() if aggregate is None else aggregate

    def embed(self, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """The model's embedding of queries ``x``, normalised by their own batch statistics
        (``batchnorm="transductive"``) or by those of the support inputs ``support``."""
        return normalised(self.model, None, x, support, self.batchnorm)

    @abstractmethod
    def predict(self, state: Any, x: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (or scores) of queries ``x`` under the task state; ``support`` (the support
        inputs) is needed with ``batchnorm="support"``."""

    @abstractmethod
    def fit(self, x_support: torch.Tensor, y_support: torch.Tensor, ways: int) -> Any:
        """One task's state from its support set; ``ways`` is given (see :func:`count_ways`)."""

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int | None = None,
              ways: int | None = None) -> Any:
        """The task state from one support set. ``steps`` is ignored (there are none);
        ``ways`` defaults to the number of classes in ``y_support`` (pass it under ``vmap``)."""
        return self.fit(x_support, y_support, count_ways(y_support) if ways is None else ways)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of the query predictions (cross-entropy on logits)."""
        return losses.loss(pred, y)

    def task_loss(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                  y_query: torch.Tensor, ways: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One task's query loss and metric."""
        pred = predicted(self.predict, self.fit(x_support, y_support, ways), x_query, x_support, self.batchnorm)
        return self.loss(pred, y_query), losses.metric(pred, y_query)

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """``∇ (1/T) Σ_t L_query,t`` into ``.grad``."""
        ways = count_ways(batch.y_support)

        def task_fn(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            loss, metric = self.task_loss(*tensors, ways)
            return loss, loss, metric

        (task_losses, metrics), stats = self.choice.run(lambda execution: aggregation.backward(
            task_fn, batch.tensors(), execution, dict(self.named_parameters()), self.aggregate), self.parameters())
        return {"loss": task_losses.mean().item(), "metric": metrics.mean().item(), **stats}

    def curve(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        """``[T, 1]``: each task's query metric (``steps`` is ignored: there are none)."""
        ways = count_ways(batch.y_support)

        def task_metric(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
                        ) -> tuple[torch.Tensor]:
            return (losses.metric(predicted(self.predict, self.fit(xs, ys, ways), xq, xs, self.batchnorm), yq),)

        with torch.no_grad():
            return map_tasks(task_metric, batch.tensors(), self.execution)[0][:, None]
