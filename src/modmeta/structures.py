"""Seeing the modules of a modular learner: which modules each task uses, the structure found
for each test task, and, where the truth is known, how well the modules match it.

Alet, Lozano-Pérez and Kaelbling (CoRL 2018) show that BounceGrad's modules specialise: on
function sums each true function tends to map to one module. :func:`component_match`
measures that from plain tensors (structures and true components), :func:`search_tasks` and
:func:`examples` produce them from a learner and a family, and :func:`figures` draws a run's
figures (``modmeta plot`` calls it for learners that report structures; ``modmeta eval`` reports
:func:`match`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from modmeta import losses, plot
from modmeta.models.functional import forward
from modmeta.tasks.modular import ModularFamily
from modmeta.train import files


class StructureLearner(Protocol):
    """What these functions need of a modular learner (BounceGrad, MoMA): its
    :class:`~modmeta.models.ModularNet`, the meta-training tasks' ``structures`` and a
    ``search`` of structures for support sets; ``adapt`` and ``predict`` as every learner."""

    model: nn.Module
    structures: torch.Tensor

    def search(self, x_support: torch.Tensor, y_support: torch.Tensor) -> torch.Tensor: ...

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor) -> Any: ...

    def predict(self, state: Any, x: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Any: ...


def usage(structures: torch.Tensor, modules: int) -> torch.Tensor:
    """``[T, K]``: how many slots of each task's structure (``[T, slots]``) hold module ``k``."""
    counts = torch.zeros(structures.shape[0], modules, dtype=torch.long)
    return counts.scatter_add_(1, structures.cpu(), torch.ones_like(structures.cpu()))


@dataclass(frozen=True)
class ComponentMatch:
    """How the modules chosen for tasks line up with the tasks' true components.

    ``counts[f][k]``: tasks having true component ``f`` whose structure uses module ``k``;
    ``module[f]``: the module most used by ``f``'s tasks (of equally used ones, the one whose
    uses are most often ``f``'s); ``share[f]``: the fraction of ``f``'s tasks using it (1:
    ``f`` always maps to one module); ``mean_share``: its mean over the components present;
    ``distinct``: how many different modules the components map to (as many as components: no
    two share a module); ``explained``: the fraction of tasks whose
    structure uses exactly the modules of their components.
    """

    names: list[str]
    counts: list[list[int]]
    tasks: list[int]
    module: list[int]
    share: list[float]
    mean_share: float
    distinct: int
    explained: float

    def __str__(self) -> str:
        present = [i for i, n in enumerate(self.tasks) if n]
        return (f"each true component's most used module is used by {100 * self.mean_share:.0f}% of its tasks "
                f"(mean over {len(present)} components); they map to {self.distinct} distinct modules; "
                f"{100 * self.explained:.0f}% of tasks use exactly their components' modules")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def component_match(structures: torch.Tensor, components: torch.Tensor, names: list[str],
                    modules: int) -> ComponentMatch:
    """Match structures ``[T, slots]`` against true components ``[T, c]`` (indices into ``names``).

    Slots and components are compared as sets, which suits sums; for compositions the order
    is ignored.
    """
    used = usage(structures, modules) > 0  # [T, K]
    has = torch.zeros(components.shape[0], len(names), dtype=torch.bool)
    has[torch.arange(components.shape[0])[:, None], components.cpu()] = True  # [T, F]
    counts = has.long().T @ used.long()  # [F, K]
    tasks = has.sum(0)
    specificity = counts / counts.sum(0, keepdim=True).clamp(min=1)  # in [0, 1]: breaks ties only
    module = (counts + 0.5 * specificity).argmax(1)
    share = counts.max(1).values / tasks.clamp(min=1)
    present = tasks > 0
    expected = torch.zeros_like(used)
    expected[torch.arange(components.shape[0])[:, None], module[components.cpu()]] = True
    return ComponentMatch(
        names=list(names), counts=counts.tolist(), tasks=tasks.tolist(), module=module.tolist(),
        share=share.tolist(), mean_share=share[present].mean().item(),
        distinct=len(set(module[present].tolist())), explained=(expected == used).all(1).float().mean().item(),
    )


def search_tasks(learner: StructureLearner, family: ModularFamily, episodes: int = 100, seed: int = 0,
                 batch: int = 100) -> dict[str, torch.Tensor | None]:
    """The structure searched for each of ``episodes`` tasks of ``family`` (drawn with ``seed``):
    ``structures [E, slots]``, ``task_ids [E]`` and true ``components [E, c]`` (``None`` where
    the family does not know them)."""
    generator = torch.Generator().manual_seed(seed)
    param = next(learner.parameters())
    structures, ids = [], []
    done = 0
    while done < episodes:
        tasks = family.sample(min(batch, episodes - done), generator).to(param.device, param.dtype)
        structures.append(learner.search(tasks.x_support, tasks.y_support).cpu())
        if tasks.task_ids is not None:
            ids.append(tasks.task_ids.cpu())
        done += len(tasks)
    task_ids = torch.cat(ids) if ids else None
    return {"structures": torch.cat(structures), "task_ids": task_ids,
            "components": family.components(task_ids) if task_ids is not None else None}


def match(learner: StructureLearner, family: ModularFamily, episodes: int = 600, seed: int = 0,
          batch: int = 25) -> ComponentMatch | None:
    """:func:`component_match` of the structures searched on ``episodes`` tasks of ``family``
    (the episodes :func:`modmeta.evaluate` draws with the same ``seed`` and ``batch``), or
    ``None`` where the family does not know its tasks' true components."""
    found = search_tasks(learner, family, episodes, seed, batch)
    if found["components"] is None:
        return None
    return component_match(found["structures"], found["components"], family.names, learner.model.num_modules)


def examples(learner: StructureLearner, family: ModularFamily, count: int = 9, seed: int = 0,
             points: int = 200) -> list[dict[str, Any]]:
    """Plain data for :func:`modmeta.plot.structures`: ``count`` tasks of ``family`` with their
    support points, the structure :meth:`~BounceGrad.adapt` finds (and its fine-tuning, if the
    learner has ``inner_steps``), the prediction, and each slot's module, on a grid of ``x``."""
    param = next(learner.parameters())
    tasks = family.sample(count, torch.Generator().manual_seed(seed)).to(param.device, param.dtype)
    grid = torch.linspace(family.low, family.high, points, dtype=param.dtype, device=param.device)[:, None]
    truth = family.components(tasks.task_ids) if tasks.task_ids is not None else None
    out = []
    for t in range(count):
        state = learner.adapt(tasks.x_support[t], tasks.y_support[t])
        library = {n.removeprefix("library."): v for n, v in state.params.items()}
        with torch.no_grad():
            parts = forward(learner.model.library, library, state.structure, grid)  # [slots, points, 1]
            prediction = learner.predict(state, grid)
            mse = losses.metric(learner.predict(state, tasks.x_query[t]), tasks.y_query[t]).item()
        label = learner.model.scheme.describe(state.structure)
        if truth is not None:
            label = f"{family.describe(truth[t].tolist())}: {label}"
        out.append({
            "x": tasks.x_support[t, :, 0].tolist(), "y": tasks.y_support[t, :, 0].tolist(),
            "grid": grid[:, 0].tolist(), "prediction": prediction[:, 0].tolist(),
            "parts": {f"slot {i + 1}: m{int(m)}": parts[i, :, 0].tolist() for i, m in enumerate(state.structure)},
            "label": label, "mse": mse,
        })
    return out


def figures(learner: StructureLearner, family: ModularFamily, folder: str | Path, episodes: int = 100,
            seed: int = 0, heading: str = "") -> list[Path]:
    """Draw a modular run's figures into ``folder`` and write ``structures.json``:

    - ``module_usage.png``: the meta-training tasks' current structures (the learner's
      buffer), task × module, tasks sorted by their true components where known;
    - ``test_module_usage.png``: the same for the structures searched on ``episodes`` test tasks;
    - ``test_structures.png``: nine test tasks, their points, prediction and modules;
    - ``test_function_modules.png`` (where the truth is known): true function × module, the
      share of the function's test tasks whose structure uses the module.

    ``structures.json`` holds the component match (:func:`component_match`) of both, where
    the truth is known. ``heading`` (what the run is: learner, task family) opens each title.
    """
    lead = f"{heading}\n" if heading else ""
    folder = Path(folder)
    k = learner.model.num_modules
    report: dict[str, Any] = {}
    written = []
    train = family.split("train")
    n = min(learner.structures.shape[0], train.num_tasks or 0)
    if n:
        ids = torch.arange(n)
        truth = train.components(ids)
        labels = _labels(family, truth, n)
        order = sorted(range(n), key=lambda i: labels[i])
        written.append(plot.module_usage(usage(learner.structures[:n].cpu(), k)[order].tolist(),
                                         [labels[i] for i in order], folder / "module_usage.png",
                                         f"{lead}meta-training tasks: modules in their current structures"))
        if truth is not None:
            report["train"] = component_match(learner.structures[:n], truth, family.names, k).to_dict()
    test = family.split("test")
    found = search_tasks(learner, test, episodes, seed)
    labels = _labels(family, found["components"], episodes)
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    written.append(plot.module_usage(usage(found["structures"], k)[order].tolist(), [labels[i] for i in order],
                                     folder / "test_module_usage.png", f"{lead}{episodes} test tasks: searched structures"))
    written.append(plot.structures(examples(learner, test, seed=seed), folder / "test_structures.png", heading))
    if found["components"] is not None:
        test_match = component_match(found["structures"], found["components"], family.names, k)
        report["test"] = test_match.to_dict()
        shares = [[100 * c / max(n, 1) for c in row] for row, n in zip(test_match.counts, test_match.tasks)]
        written.append(plot.module_usage(shares, family.names, folder / "test_function_modules.png",
                                         f"{lead}test tasks: % of each true function's tasks using each module",
                                         ylabel="true function", value="% of the function's tasks", group=False))
    path = folder / "structures.json"
    files.write_atomic(path, json.dumps(report, indent=1) + "\n")
    return [*written, path]


def _labels(family: ModularFamily, truth: torch.Tensor | None, count: int) -> list[str]:
    """Row labels: the true components' names where known, else the task's number."""
    if truth is not None:
        return [family.describe(row) for row in truth.tolist()]
    return [f"task {i:04d}" for i in range(count)]
