"""Regression families whose truth is modular (Alet, Lozano-Pérez and Kaelbling, "Modular
meta-learning", CoRL 2018, section 5.1, and the datasets of its code).

- :class:`FunctionSums`: ``y = (f_a(x) + f_b(x)) / 2`` for a pair ``a < b`` of the paper's 16
  functions (``FUNCTIONS``); 120 pairs, of which ``test_pairs`` (default 12) are held out, so
  meta-test asks for new combinations of known parts.
- :class:`Sines`: ``y = sin(π(f·x + φ))``, ``f ~ U(0.1, 5)``, ``φ ~ U(0, π)``.
- :class:`Compositions`: ``y = g_b(g_a(x))`` for an ordered pair ``a ≠ b`` of a pool of
  functions from ``[-1, 1]`` to ``[-1, 1]`` (``POOL``).

``x ~ U[-1, 1)``. The paper's setting: 80 points per task, 16 to adapt on (``shots``, the
task's training set) and 64 to score (``queries``, its validation set), and outputs
standardised with the meta-training statistics: ``y ← (y − μ) / σ`` where ``μ`` and ``σ`` are
the mean and standard deviation of ``y`` over the training split's functions on a dense grid
of ``x`` (``standardise=False`` keeps raw outputs).

Task identity. Each split is a *finite* list of functions (pairs, or sine parameters), and a
sampled task is one of them with ``shots + queries`` fresh points. ``TaskBatch.task_ids`` is the
function's index in its split, which is what BounceGrad keys each meta-training task's
structure by. Sines' training split is a fixed draw of ``train_tasks`` sines; its val and test
splits draw new sines every time (``task_ids`` is then ``None``). Where the truth is known,
:meth:`ModularFamily.components` gives each task's true components (indices into ``names``).

Difference from the paper's data: the paper fixes one dataset of 80 points per task; here the
points are drawn afresh at every draw of a task, so the meta-test confidence intervals are
over independent episodes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import TaskBatch

Fn = Callable[[torch.Tensor], torch.Tensor]

# The 16 functions of the paper's code, in its (alphabetical) order, with its constant c = 4.
FUNCTIONS: dict[str, Fn] = {
    "abs": torch.abs,
    "arcsinh": lambda x: torch.asinh(4 * x) / math.asinh(4),
    "arctan": lambda x: torch.atan(4 * x) / math.atan(4),
    "cbrt": lambda x: torch.sign(x) * x.abs().pow(1 / 3),
    "ceil": torch.ceil,
    "cos": lambda x: torch.cos(4 * math.pi * x),
    "cosh": lambda x: torch.cosh(4 * x) / math.cosh(4),
    "exp2": lambda x: torch.exp2(4 * x) / 2**4,
    "floor": torch.floor,
    "id": lambda x: x,
    "rint": torch.round,  # round half to even, as numpy's rint
    "sign": torch.sign,
    "sin": lambda x: torch.sin(4 * math.pi * x),
    "sinc": lambda x: torch.sinc(4 * math.pi * x),  # numpy's normalised sinc: sin(πu) / (πu)
    "square": torch.square,
    "tanh": torch.tanh,
}

# Functions from [-1, 1] onto [-1, 1] whose ordered pairs compose to 30 different functions.
POOL: dict[str, Fn] = {
    "sin": lambda x: torch.sin(math.pi * x),
    "cos": lambda x: torch.cos(math.pi * x),
    "square": torch.square,
    "cube": lambda x: x**3,
    "tanh": lambda x: torch.tanh(3 * x) / math.tanh(3),
    "exp": lambda x: (torch.exp(x) - math.cosh(1)) / math.sinh(1),
}

GRID = 1000  # points of the grid the standardisation statistics are computed on


class ModularFamily(TaskFamily):
    """Tasks ``y = g(x; p)`` with ``p`` from a finite list per split; see the module docstring.

    ``splits`` maps ``"train"``, ``"val"`` and ``"test"`` to the split's task parameters
    ``[n, P]``, or to ``None`` for a split drawn afresh by :meth:`draw`. Subclasses define
    :meth:`function`.
    """

    output_size = 1
    low, high = -1.0, 1.0
    names: list[str] = []  # the true components' names, where known

    def __init__(self, shots: int, queries: int, splits: dict[str, torch.Tensor | None],
                 standardise: bool = True) -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be at least 1, got {shots} and {queries}")
        if splits["train"] is None:
            raise ValueError("the training split needs a finite list of tasks")
        self.shots = shots
        self.queries = queries
        self.splits = splits
        self.split_name = "train"
        self.tasks = splits["train"]
        self.y_mean, self.y_std = 0.0, 1.0
        if standardise:
            n = self.tasks.shape[0]
            grid = torch.linspace(self.low, self.high, GRID + 1, dtype=torch.float64)[:-1]
            y = self.function(grid.view(1, GRID, 1).expand(n, GRID, 1), self.tasks)
            self.y_mean, self.y_std = y.mean().item(), y.std().item()

    def function(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``[T, N, 1]`` of the tasks with parameters ``params [T, P]`` at ``x [T, N, 1]``."""
        raise NotImplementedError

    def draw(self, tasks: int, generator: torch.Generator) -> torch.Tensor:
        """Parameters ``[tasks, P]`` of new tasks, for a split with no finite list."""
        raise NotImplementedError(f"{type(self).__name__} draws no new tasks")

    def components(self, task_ids: torch.Tensor) -> torch.Tensor | None:
        """The true components (indices into ``names``) of this split's tasks ``task_ids``, or
        ``None`` where the truth is not a combination of named parts."""
        return None

    @property
    def num_tasks(self) -> int | None:
        """How many tasks this split holds (``None``: drawn afresh)."""
        return None if self.tasks is None else self.tasks.shape[0]

    def sample(self, tasks: int, generator: torch.Generator) -> TaskBatch:
        """``tasks`` tasks of this split, distinct while the split has enough, each with fresh points."""
        if self.tasks is None:
            ids, params = None, self.draw(tasks, generator)
        else:
            n = self.tasks.shape[0]
            ids = (torch.randperm(n, generator=generator)[:tasks] if tasks <= n
                   else torch.randint(n, (tasks,), generator=generator))
            params = self.tasks[ids]
        x = self.low + (self.high - self.low) * torch.rand(tasks, self.shots + self.queries, 1, generator=generator)
        y = ((self.function(x.double(), params) - self.y_mean) / self.y_std).to(x.dtype)
        s = self.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:], task_ids=ids)

    def split(self, name: str) -> ModularFamily:
        """The family on another split, with the training split's standardisation."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}: use 'train', 'val' or 'test'")
        other = copy.copy(self)
        other.split_name = name
        other.tasks = self.splits[name]
        return other


class PairFamily(ModularFamily):
    """Tasks made of a pair of named functions; ``test_pairs`` and ``val_pairs`` of the pairs are
    held out (drawn with ``split_seed``). Without validation pairs (``val_pairs=0``, the
    paper's split) the val split is the training pairs with fresh points."""

    def __init__(self, functions: dict[str, Fn], pairs: torch.Tensor, shots: int, queries: int,
                 test_pairs: int, val_pairs: int, split_seed: int, standardise: bool) -> None:
        n = pairs.shape[0]
        if test_pairs < 1 or val_pairs < 0 or test_pairs + val_pairs >= n:
            raise ValueError(f"test_pairs >= 1 and val_pairs >= 0 must leave training pairs out of {n}, "
                             f"got {test_pairs} and {val_pairs}")
        self.functions = functions
        self.names = list(functions)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        test = pairs[order[:test_pairs].sort().values]
        val = pairs[order[test_pairs:test_pairs + val_pairs].sort().values]
        train = pairs[order[test_pairs + val_pairs:].sort().values]
        unseen = set(test.flatten().tolist()) - set(train.flatten().tolist())
        if unseen:
            raise ValueError(f"held-out pairs use {[self.names[i] for i in sorted(unseen)]}, which no training pair "
                             f"does: hold out fewer pairs or change split_seed")
        super().__init__(shots, queries, {"train": train, "val": val if val_pairs else train, "test": test},
                         standardise)

    def components(self, task_ids: torch.Tensor) -> torch.Tensor:
        """``[T, 2]``: the pair ``(a, b)`` of each task."""
        return self.tasks[task_ids.cpu()]

    def describe(self, pair: list[int]) -> str:
        """A task's true function as text, from its pair."""
        return f"({self.names[pair[0]]} + {self.names[pair[1]]}) / 2"

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """Every function at ``x``: ``[F, *x.shape]``."""
        return torch.stack([f(x) for f in self.functions.values()])

    @staticmethod
    def pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``values[index[t], t]`` for each task ``t``: ``[F, T, ...]`` to ``[T, ...]``."""
        return values[index, torch.arange(index.shape[0])]


class FunctionSums(PairFamily):
    """``y = (f_a(x) + f_b(x)) / 2`` for the 120 pairs ``a < b`` of ``FUNCTIONS``.

    The paper's setting is the default: 16 training and 64 validation points per task, 12
    held-out pairs (108 for meta-training), outputs standardised.
    """

    def __init__(self, shots: int = 16, queries: int = 64, test_pairs: int = 12, val_pairs: int = 0,
                 split_seed: int = 0, standardise: bool = True) -> None:
        pairs = torch.combinations(torch.arange(len(FUNCTIONS)), 2)
        super().__init__(FUNCTIONS, pairs, shots, queries, test_pairs, val_pairs, split_seed, standardise)

    def function(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        v = self.values(x)
        return (self.pick(v, params[:, 0]) + self.pick(v, params[:, 1])) / 2


class Compositions(PairFamily):
    """``y = g_b(g_a(x))`` for the 30 ordered pairs ``a ≠ b`` of ``POOL``; ``test_pairs`` held out."""

    def __init__(self, shots: int = 16, queries: int = 64, test_pairs: int = 4, val_pairs: int = 0,
                 split_seed: int = 0, standardise: bool = True) -> None:
        k = len(POOL)
        pairs = torch.tensor([(a, b) for a in range(k) for b in range(k) if a != b])
        super().__init__(POOL, pairs, shots, queries, test_pairs, val_pairs, split_seed, standardise)

    def describe(self, pair: list[int]) -> str:
        return f"{self.names[pair[1]]} ∘ {self.names[pair[0]]}"

    def function(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        inner = self.pick(self.values(x), params[:, 0])
        return self.pick(self.values(inner), params[:, 1])


class Sines(ModularFamily):
    """``y = sin(π(f·x + φ))``, ``f ~ U(0.1, 5)``, ``φ ~ U(0, π)`` (the paper's sines).

    The training split is ``train_tasks`` sines drawn once with ``split_seed``; val and test
    draw new sines at every sample.
    """

    def __init__(self, shots: int = 16, queries: int = 64, train_tasks: int = 1000, split_seed: int = 0,
                 standardise: bool = True) -> None:
        if train_tasks < 1:
            raise ValueError(f"train_tasks must be >= 1, got {train_tasks}")
        train = self.draw(train_tasks, torch.Generator().manual_seed(split_seed))
        super().__init__(shots, queries, {"train": train, "val": None, "test": None}, standardise)

    def draw(self, tasks: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(tasks, 2, generator=generator)
        return torch.stack([0.1 + 4.9 * u[:, 0], math.pi * u[:, 1]], dim=1)

    def function(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        p = params.to(x.dtype)
        return torch.sin(math.pi * (p[:, None, 0:1] * x + p[:, None, 1:2]))
