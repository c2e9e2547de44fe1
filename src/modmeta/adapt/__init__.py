"""Task adaptation (inner loops): how one task is fitted from its support set.

Inner optimizers (``sgd``, ``adam``, ``chain`` of transforms ending in ``learned_rates``),
priors (``Shrinkage``), and the inner loop ``descend``; the metric summaries and the
structure search live in ``modmeta.adapt.metric`` and ``modmeta.adapt.structure``.
"""

from modmeta.adapt.optim import (Anneal, CarriedState, InnerOptimizer, InnerRates, Momentum, ScaleByAdam, Transform,
                                 adam, chain, descend, learned_rates, sgd)
from modmeta.adapt.shrinkage import Shrinkage

__all__ = ["Anneal", "CarriedState", "InnerOptimizer", "InnerRates", "Momentum", "ScaleByAdam", "Shrinkage", "Transform", "adam", "chain",
           "descend", "learned_rates", "sgd"]
