"""Module libraries and composition schemes: the hypothesis space of modular meta-learning.

Alet, Lozano-Pérez and Kaelbling, "Modular meta-learning", CoRL 2018, section 3. A modular
hypothesis space is a pair ``(F, C)``:

- a *library* ``F = {f_1, ..., f_K}`` of small networks with weights ``Θ = (θ_1, ..., θ_K)``;
  it may mix module types (the paper's function sums use 10 MLPs 1-16-16-1 and 10 MLPs
  1-16-1). The weights of one type are stacked on a leading module axis, ``[K_type, ...]``, so
  the modules a structure selects are gathered by index and run in one batched product;
- a *composition scheme* ``C``: an initial structure, the map from a structure ``S`` to a
  function ``C(S)[F]``, and the local moves that propose a neighbour ``S'`` of ``S``.

A *structure* is data: a small ``int64`` tensor ``[slots]`` saying which module sits in each
slot (``[T, slots]`` for ``T`` tasks). It can be saved, printed (:meth:`Scheme.describe`),
compared with ``==``, and evaluated for many tasks at once under ``torch.func.vmap``.

Two schemes come with the library:

- :class:`Sum`: ``C(S)(x) = Σ_{i=1}^{m} f_{S_i}(x)`` (or the mean), the paper's function sums;
- :class:`Composition`: ``C(S)(x) = f_{S_m}(… f_{S_2}(f_{S_1}(x)))``.

A new scheme is one short subclass of :class:`Scheme` defining :meth:`Scheme.forward` (and,
for structures that are not "one module per slot", :meth:`Scheme.initial` and
:meth:`Scheme.propose`); ``docs/modular.md`` shows a small graph of modules.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from modmeta.arguments import at_least


class StackedMLPs(nn.Module):
    """``count`` ReLU MLPs of the same layer sizes, weights stacked as ``[count, out, in]``."""

    def __init__(self, count: int, sizes: Sequence[int]) -> None:
        super().__init__()
        if count < 1 or len(sizes) < 2:
            raise ValueError(f"a module type needs count >= 1 and at least two layer sizes, got {count}, {list(sizes)}")
        self.count = count
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(a)  # nn.Linear's default initialisation, per module
            self.weights.append(nn.Parameter(torch.empty(count, b, a).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(count, b).uniform_(-bound, bound)))

    def forward(self, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Module ``index[i]`` on ``x[i]`` for every ``i`` of ``index``'s shape.

        ``index`` is ``int64 [*B]`` (entries in ``0 .. count-1``), ``x`` is ``[*B, N, in]`` or
        broadcasts to it (``[N, in]``: the same input for all); returns ``[*B, N, out]``.
        """
        h = x
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w[index].transpose(-1, -2) + b[index].unsqueeze(-2)
            if layer < last:
                h = torch.relu(h)
        return h


class ModuleLibrary(nn.Module):
    """The library ``F``: ``K`` modules numbered ``0 .. K-1``, type by type.

    ``types`` lists ``(count, hidden)`` pairs: ``count`` MLPs ``in_features -> hidden... ->
    out`` each. ``((10, (16, 16)), (10, (16,)))`` is the paper's library for function sums:
    modules 0-9 have two hidden layers, 10-19 one. All modules map ``in_features`` to ``out``,
    so any module fits any slot.
    """

    def __init__(self, in_features: int, out: int,
                 types: Sequence[tuple[int, Sequence[int]]] = ((10, (16, 16)), (10, (16,)))) -> None:
        super().__init__()
        at_least(1, in_features=in_features, out=out)
        if not types:
            raise ValueError("a module library needs at least one module type, e.g. [[10, [16, 16]]]")
        self.types = nn.ModuleList(StackedMLPs(int(count), [in_features, *hidden, out]) for count, hidden in types)
        counts = [t.count for t in self.types]
        self.starts = [sum(counts[:i]) for i in range(len(counts))]
        self.size = sum(counts)

    def forward(self, modules: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Module ``modules[i]`` on ``x[i]``: ``int64 [*B]`` and ``[*B, N, in]`` (or ``[N, in]``)
        give ``[*B, N, out]``.

        Every type runs on every entry with its own (clamped) index, and each entry keeps the
        output of its module's type: no data-dependent branch, so it runs under ``vmap``.
        """
        out = None
        for stack, start in zip(self.types, self.starts):
            y = stack((modules - start).clamp(0, stack.count - 1), x)
            if out is None:
                out = y
            else:
                mine = ((modules >= start) & (modules < start + stack.count))[..., None, None]
                out = torch.where(mine, y, out)
        return out


class Scheme(ABC):
    """A composition scheme ``C`` over a structure of ``slots`` integers.

    Subclasses define :meth:`forward`. The default structure holds one module index per slot;
    its initial structures are uniformly random and its local move puts a different module,
    drawn uniformly, in one uniformly chosen slot (the paper's proposal). A scheme whose
    structure means something else (edges of a graph, say) overrides :meth:`initial` and
    :meth:`propose` too. Every draw comes from the ``generator`` passed in.
    """

    name = "scheme"

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a composition scheme needs at least one slot, got {slots}")
        self.slots = slots

    @abstractmethod
    def forward(self, library: ModuleLibrary, structure: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``C(S)[F](x)`` for one structure ``S`` (``int64 [slots]``) and inputs ``x: [N, in]``."""

    def initial(self, tasks: int, modules: int, generator: torch.Generator) -> torch.Tensor:
        """``tasks`` initial structures, ``int64 [tasks, slots]``, each slot uniform over modules."""
        return torch.randint(modules, (tasks, self.slots), generator=generator)

    def propose(self, structures: torch.Tensor, modules: int, generator: torch.Generator) -> torch.Tensor:
        """A neighbour of each structure ``[T, slots]``: one slot, uniform, gets another module,
        uniform over the ``modules - 1`` others. Draws on the CPU, returns on the input's device."""
        t = structures.shape[0]
        if modules < 2:
            raise ValueError("proposing a new structure needs a library of at least two modules")
        slot = torch.randint(self.slots, (t,), generator=generator)
        shift = torch.randint(1, modules, (t,), generator=generator)
        proposed = structures.detach().cpu().clone()
        rows = torch.arange(t)
        proposed[rows, slot] = (proposed[rows, slot] + shift) % modules
        return proposed.to(structures.device)

    def describe(self, structure: torch.Tensor) -> str:
        """A structure as text, e.g. ``"m3 + m12"``."""
        return f"{self.name}({', '.join(f'm{int(m)}' for m in structure)})"


class Sum(Scheme):
    """``C(S)(x) = Σ_i f_{S_i}(x)``, or the mean with ``mean=True``: all slots run in one
    batched product."""

    name = "sum"

    def __init__(self, slots: int, mean: bool = False) -> None:
        super().__init__(slots)
        self.mean = mean

    def forward(self, library: ModuleLibrary, structure: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = library(structure, x)  # [slots, N, out]
        return parts.mean(0) if self.mean else parts.sum(0)

    def describe(self, structure: torch.Tensor) -> str:
        joined = " + ".join(f"m{int(m)}" for m in structure)
        return f"({joined}) / {self.slots}" if self.mean else joined


class Composition(Scheme):
    """``C(S)(x) = f_{S_m}(… f_{S_2}(f_{S_1}(x)))``: slot 1 is applied first."""

    name = "composition"

    def forward(self, library: ModuleLibrary, structure: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for s in range(self.slots):
            x = library(structure[s], x)
        return x

    def describe(self, structure: torch.Tensor) -> str:
        return " ∘ ".join(f"m{int(m)}" for m in reversed(structure.tolist()))


SCHEMES: dict[str, type[Scheme]] = {"sum": Sum, "composition": Composition}


class ModularNet(nn.Module):
    """A library of modules under a composition scheme: ``net(structure, x) = C(S)[F](x)``.

    ``modules`` lists the library's ``(count, hidden)`` types (see :class:`ModuleLibrary`);
    ``scheme`` is ``"sum"``, ``"composition"`` or a :class:`Scheme` instance (then ``slots`` is
    the scheme's own). ``structure`` is ``int64 [slots]`` and ``x`` is ``[N, in_features]``;
    many structures or tasks at once go through ``torch.func.vmap``.
    """

    def __init__(self, in_features: int, out: int,
                 modules: Sequence[tuple[int, Sequence[int]]] = ((10, (16, 16)), (10, (16,))),
                 scheme: str | Scheme = "sum", slots: int = 2) -> None:
        super().__init__()
        if isinstance(scheme, str):
            if scheme not in SCHEMES:
                raise ValueError(f"unknown composition scheme {scheme!r}: use one of {sorted(SCHEMES)} "
                                 f"or pass a modmeta.models.Scheme")
            scheme = SCHEMES[scheme](slots)
        self.library = ModuleLibrary(in_features, out, modules)
        self.scheme = scheme

    @property
    def num_modules(self) -> int:
        """``K``, the number of modules in the library."""
        return self.library.size

    def forward(self, structure: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scheme.forward(self.library, structure, x)

    def extra_repr(self) -> str:
        return f"scheme={self.scheme.name}, slots={self.scheme.slots}, modules={self.library.size}"
