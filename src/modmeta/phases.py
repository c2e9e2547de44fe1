"""Forgetting across task families (seed 004): meta-train on family A, then on family B, ...,
and measure after each phase how well the learner still does on every family.

A config with ``phases`` (a list of ``{name, tasks, iterations}``) is run as one run folder per
phase, ``OUT/1-A``, ``OUT/2-B``, ...: phase ``k`` is ``modmeta train`` of the config with that
phase's task family and iterations (its own seed, validation and checkpoints), starting from
the final weights of phase ``k − 1`` (its ``last.pt``) with a fresh outer optimizer. After
each phase, the learner is evaluated on the test split of every phase's family with the
config's ``eval`` settings (the same episodes each time). The report, ``OUT/phases.json``:

- ``results[after][family]``: mean and 95% CI of the metric on ``family`` after phase ``after``;
- ``forgetting[family]``: how much ``family`` lost from the end of its own phase to the end of
  the last one (accuracy: before − after; MSE: after − before; positive means forgotten).

Every phase is resumable: running the command again skips finished phases (their folders hold
their final checkpoint and ``phase.json``) and resumes an interrupted one exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from modmeta import config
from modmeta.evaluate import evaluate
from modmeta.train import checkpoint, files

DONE = "phase.json"  # a finished phase's evaluations, written last


def phase_config(cfg: config.Config, k: int) -> config.Config:
    """The single-family config of phase ``k``."""
    phase = cfg.phases[k]
    train = cfg.train.model_copy(update={"iterations": phase.iterations})
    return cfg.model_copy(update={"tasks": phase.tasks, "train": train, "phases": []})


def run(cfg: config.Config, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the phases of ``cfg`` in turn into ``out`` and return the forgetting report."""
    if len(cfg.phases) < 2:
        raise config.ConfigError("a sequential run needs `phases`: at least two {name, tasks, iterations}")
    out = Path(out)
    families, size, builds = {}, None, []
    for k, phase in enumerate(cfg.phases):
        built = config.build(phase_config(cfg, k))
        builds.append(built)
        families[phase.name] = config.evaluation_tasks(built).split("test")
        if size is not None and built.tasks.output_size != size:
            raise config.ConfigError(f"phases.{k}.tasks: its tasks need {built.tasks.output_size} outputs but "
                                     f"phase {cfg.phases[0].name!r} needs {size}: one model must fit all phases")
        size = built.tasks.output_size
    results: dict[str, dict[str, Any]] = {}
    previous: Path | None = None
    for k, phase in enumerate(cfg.phases):
        folder = out / f"{k + 1}-{phase.name}"
        done = folder / DONE
        if done.is_file():
            results[phase.name] = json.loads(done.read_text())
            previous = folder
            continue
        built = builds[k]  # each phase is built once: its family for the evaluations, its learner here
        with files.lock(folder):
            resume = checkpoint.holds_run(folder)
            files.claim(folder, existing_run=resume)
            if not resume:
                if previous is not None:
                    built.learner.load_state_dict(checkpoint.load(previous / checkpoint.LAST)["learner"])
                files.write_atomic(folder / "config.yaml", yaml.safe_dump(built.config.to_dict(), sort_keys=False))
            config.trainer(built, folder, progress=progress).fit(phase.iterations, resume=resume)
            e = cfg.eval
            results[phase.name] = {name: evaluate(built.learner, family, episodes=e.episodes, steps=e.steps,
                                                  seed=e.seed).to_dict() for name, family in families.items()}
            files.write_atomic(done, json.dumps(results[phase.name]) + "\n")
        previous = folder
    return report(results)


def report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results`` (after phase -> family -> evaluation) with each family's forgetting."""
    names = list(results)
    last = names[-1]
    forgetting = {}
    for name in names[:-1]:
        before, after = results[name][name]["mean"], results[last][name]["mean"]
        sign = 1 if results[name][name]["metric"] == "accuracy" else -1
        forgetting[name] = sign * (before - after)
    return {"phases": names, "results": results, "forgetting": forgetting}


def table(rep: dict[str, Any]) -> str:
    """Rows: after each phase; columns: each family's metric (± 95% CI); then what was lost."""
    names = rep["phases"]
    first = rep["results"][names[0]][names[0]]
    pct = first["metric"] == "accuracy"

    def num(x: float) -> str:
        if not math.isfinite(x):
            return "diverged"  # the adaptation on this family blew up (non-finite metric)
        return f"{100 * x:.2f}%" if pct else f"{x:.4f}"

    width = max(18, *(len(n) + 2 for n in names))
    lines = [f"{first['metric'] + ' on →':<16}" + "".join(f"{n:>{width}}" for n in names)]
    for after in names:
        row = rep["results"][after]
        lines.append(f"{'after ' + after:<16}" + "".join(
            f"{num(row[n]['mean']) + ('' if not math.isfinite(row[n]['mean']) else ' ± ' + num(row[n]['ci95'])):>{width}}"
            for n in names))
    lost = "  ".join(f"{n}: {num(v)}" for n, v in rep["forgetting"].items())
    lines.append(f"forgotten by the end (positive: worse than right after its own phase): {lost}")
    return "\n".join(lines)
