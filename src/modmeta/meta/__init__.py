"""Outer updates: how the shared knowledge moves, given a batch of tasks."""

from modmeta.meta.execution import map_tasks, mean_loss_backward, resolve
from modmeta.meta.implicit import conjugate_gradient, implicit_gradient
from modmeta.meta.reptile import reptile_gradient, set_gradients

__all__ = ["map_tasks", "mean_loss_backward", "reptile_gradient", "resolve", "set_gradients"]
__all__ += ["conjugate_gradient", "implicit_gradient"]
