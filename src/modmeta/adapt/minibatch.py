"""Mini-batches within the inner loop: which support rows each inner step sees.

Reptile's inner loop (Nichol, Achiam and Schulman 2018) takes each of its steps on a
mini-batch of the support set (10 of the 50 images of a 5-way 10-shot training task), passing
through the set without replacement, rather than on all of it. Each step is then cheaper by
the ratio of the sizes, so a fixed compute budget buys more meta-iterations.

The rows are a fixed function of the support set's size, not random draws: the same indices
for every task of a batch (so the loop runs under ``vmap``) and every run (so a resumed run
continues exactly). Which images meet in a mini-batch is still random, since every task's
support images are drawn at random.
"""

from __future__ import annotations

import random

import torch


def minibatches(rows: int, size: int | None, steps: int) -> list[torch.Tensor] | None:
    """The support rows that each of ``steps`` inner steps sees, or ``None`` for all of them at
    every step (``size`` is ``None`` or at least ``rows``: the test's 1-shot support sets are
    smaller than the training tasks' mini-batches).

    Step ``k`` sees ``size`` consecutive entries, from position ``k·size`` on, of a cyclic
    sequence that repeats one fixed permutation of the ``rows`` rows: consecutive steps see
    disjoint rows until each row has been seen once (an epoch), and no step sees a row twice.
    The permutation comes from its own seeded ``random.Random``; no global RNG is touched.
    """
    if size is not None and size < 1:
        raise ValueError(f"inner_batch must be >= 1 (or None for the whole support set), got {size}")
    if size is None or size >= rows:
        return None
    order = torch.tensor(random.Random(0).sample(range(rows), rows))  # no torch random op: runs under vmap
    return [order[torch.arange(k * size, (k + 1) * size) % rows] for k in range(steps)]
