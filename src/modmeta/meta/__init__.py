"""Outer updates (how one task's meta-gradient is formed) and aggregations (how the tasks'
meta-gradients combine), as values a learner is composed from."""

from modmeta.meta.aggregate import Aggregation, mean, pcgrad
from modmeta.meta.hessian import hessian_norm, hessian_penalty
from modmeta.meta.outer import Outcome, OuterUpdate, Task, exact, first_order, implicit, joint, reptile

__all__ = ["Aggregation", "Outcome", "OuterUpdate", "Task", "exact", "first_order", "hessian_norm",
           "hessian_penalty", "implicit", "joint", "mean",
           "pcgrad", "reptile"]
