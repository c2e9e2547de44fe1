"""Task adaptation in an embedding space: the shared pieces of the metric learners.

A metric learner adapts to a task without gradient steps: it summarises the embedded support
set (class prototypes, class sums, a fitted linear classifier) and compares queries with the
summary (a distance, a similarity, a learned relation). Everything here works on one task
(no task axis) and runs under ``torch.func.vmap``.

The number of classes ``ways`` is always passed as a Python ``int``. It cannot be read from
the labels under ``vmap`` (that is a data-dependent value), so the learners read it once per
batch, outside ``vmap``, with :func:`count_ways`; the labels of an episode need not be in
class-major order, and episodes of any ways (60-way training, 5-way testing) work alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import grad


def count_ways(y_support: torch.Tensor) -> int:
    """The ways of the episodes whose support labels are ``y_support`` (``[N]`` or ``[T, N]``).

    Labels must be ``0 .. ways-1`` with every class present in the support set of every
    episode; otherwise a prototype would be an empty mean, so this raises and names the
    episode and the class. Reads the labels: call it outside ``vmap``.
    """
    if y_support.is_floating_point():
        raise ValueError("metric learners classify: support labels must be integer class indices")
    if y_support.numel() == 0:
        raise ValueError("the support set is empty: an episode needs at least one example per class")
    if y_support.min() < 0:
        raise ValueError(f"support labels must be 0 .. ways-1, got {y_support.min().item()}")
    ways = int(y_support.max()) + 1
    counts = F.one_hot(y_support.reshape(-1, y_support.shape[-1]), ways).sum(1)  # [T, ways]
    task, missing = torch.nonzero(counts == 0, as_tuple=True)
    if task.numel():
        raise ValueError(
            f"episode {task[0].item()} has no support example of class {missing[0].item()}, "
            f"but its labels go up to {ways - 1}: every class 0 .. ways-1 needs a support example"
        )
    return ways


def class_sums(z: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """``[ways, *z.shape[1:]]``: ``Σ_{i: y_i = k} z_i`` for each class ``k``."""
    onehot = F.one_hot(y, ways).to(z.dtype)  # [N, ways]
    return (onehot.T @ z.flatten(1)).view(ways, *z.shape[1:])


def prototypes(z: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """``[ways, D]``: the class means ``c_k = (1/|S_k|) Σ_{i: y_i = k} z_i`` (Snell et al., eq. 1)."""
    counts = F.one_hot(y, ways).sum(0).to(z.dtype)
    return class_sums(z, y, ways) / counts.view(ways, *([1] * (z.dim() - 1)))


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]``: ``‖a_i − b_j‖²``, as ``‖a_i‖² + ‖b_j‖² − 2 a_i·b_j`` (no ``[A, B, D]`` tensor)."""
    return a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2 * a @ b.T


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]``: the cosine similarity ``a_i·b_j / (‖a_i‖ ‖b_j‖)`` (0 for a zero vector)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def logistic_regression(z: torch.Tensor, y: torch.Tensor, ways: int, l2: float, steps: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit multinomial logistic regression ``p(y = k | z) = softmax(W z + b)_k`` to one task.

    Minimises ``(1/N) Σ_i −log p(y_i | z_i) + (l2/2) ‖W‖²`` by ``steps`` steps of full-batch
    gradient descent from zero, with step size ``1 / (‖z̃‖²_max / 2 + l2)`` where
    ``z̃ = [z, 1]``: the inverse of a bound on the objective's curvature, so every step
    descends. Plain gradient steps (``torch.func.grad``) keep it runnable under ``vmap``.
    Returns ``(W [ways, D], b [ways])``.
    """
    rate = 1.0 / ((z.pow(2).sum(-1).max() + 1) / 2 + l2)

    def objective(wb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        w, b = wb
        return F.cross_entropy(z @ w.T + b, y) + l2 / 2 * w.pow(2).sum()

    w = z.new_zeros(ways, z.shape[-1])
    b = z.new_zeros(ways)
    for _ in range(steps):
        gw, gb = grad(objective)((w, b))
        w, b = w - rate * gw, b - rate * gb
    return w, b
