"""Config fuzzing: mutated shipped configs are either trained (and evaluated) or refused with
modmeta's own one-line error, never a traceback.

Each mutation takes a shipped config, shrinks it to a few iterations and episodes, then changes
it once: a key removed, renamed or added, a value replaced by one of another type or range
(negative, zero, NaN, infinity, a string, a list, null...), a component's name swapped for
another registered one, or the YAML text itself cut short or given a duplicate key. The result
runs through the real ``modmeta train`` (``modmeta phases`` for a config with phases) and, when
that succeeds, ``modmeta eval``. Each case ends trained, refused (a
:class:`~modmeta.config.ConfigError`), diverged (:class:`~modmeta.train.Diverged`, with its
cause), or stopped by a check of modmeta's own once training starts (a ``ValueError``,
``TypeError`` or ``OSError`` raised in modmeta's code, e.g. a learner given a model it cannot
use). Anything else, a raw error from inside torch, numpy or Python included, is a failure,
reported with the mutation so that it can be replayed.

``tasks.download``, ``tasks.cache`` and ``tasks.base_url`` are never mutated: they would reach
for the network or write outside the test's folders. The default run fuzzes the cheap configs
(:data:`QUICK` mutations); ``-m slow`` runs :data:`FULL` mutations over every shipped config,
Omniglot included.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import math
import random
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

import modmeta
from modmeta import cli, config, registry
from modmeta.train import Diverged

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(modmeta.__file__).resolve().parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
CHEAP = [p for p in CONFIGS if "omniglot" not in p.name]
QUICK, FULL = 40, 500
FIXED = {"download", "cache", "base_url"}
SMALL = {"iterations": 2, "meta_batch": 2, "val_episodes": 2, "val_every": 1, "checkpoint_every": 1,
         "log_every": 1}
VALUES: list[Any] = [-1, 0, 1, 2, 7, -0.5, 0.0, 1e-3, 1.5, 1e30, math.nan, math.inf, True, False, "", "ten",
                     "adam", None, [], [1, "a"], [0], {}, {"name": "nothing"}, "maml"]


def mutate(data: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any] | str]:
    """One random change of ``data``: its description and the changed data (or YAML text)."""
    paths = list(_paths(data))
    kind = rng.choice(["value", "value", "value", "delete", "rename", "add", "name", "text"])
    if kind == "text":
        text = yaml.safe_dump(data, sort_keys=False)
        if rng.random() < 0.5:
            cut = rng.randrange(len(text))
            return f"YAML cut at character {cut}", text[:cut]
        return "a top-level key given twice", text + "train: {iterations: 1}\n"
    changed = copy.deepcopy(data)
    if kind == "name":
        sections = [p for p in paths if p[-1] == "name" and p[0] in ("tasks", "model", "learner")]
        path = rng.choice(sections)
        table = {"tasks": registry.TASKS, "model": registry.MODELS, "learner": registry.LEARNERS}[path[0]]
        value = rng.choice(list(table))
        _set(changed, path, value)
        return f"{_dotted(path)} = {value!r}", changed
    path = rng.choice(paths)
    parent = _get(changed, path[:-1])
    if isinstance(parent, list) and kind in ("rename", "add"):
        kind = "value"  # a list item has no key to misspell or to add beside
    if kind == "delete":
        del parent[path[-1]]
        return f"{_dotted(path)} removed", changed
    if kind == "rename":
        parent[path[-1] + rng.choice(["s", "_", "x"])] = parent.pop(path[-1])
        return f"{_dotted(path)} misspelt", changed
    if kind == "add":
        parent[rng.choice(["extra", "lr", "ways", "seed", "name"])] = rng.choice(VALUES)
        return f"a key added beside {_dotted(path)}", changed
    value = rng.choice(VALUES)
    _set(changed, path, value)
    return f"{_dotted(path)} = {value!r}", changed


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Any:
    """Every leaf's path (dict keys and list indices) that the fuzz may change."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if key in FIXED:
            continue
        path = (*prefix, key)
        yield path
        if isinstance(value, dict | list) and value:
            yield from _paths(value, path)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _small(data: dict[str, Any], cache: Path) -> dict[str, Any]:
    """``data`` shrunk to a run of seconds, with Omniglot's decoded images cached in ``cache``."""
    data = copy.deepcopy(data)
    data.setdefault("train", {}).update(SMALL)
    data.setdefault("eval", {})["episodes"] = 2
    for phase in data.get("phases", []):
        phase["iterations"] = 2
    for tasks in [data.get("tasks", {}), *(p.get("tasks", {}) for p in data.get("phases", []))]:
        if tasks.get("name") == "omniglot":
            tasks["cache"] = str(cache)
    learner = data.get("learner", {})
    for key in ("search_steps", "anneal_iterations", "inner_steps", "fit_steps"):
        if isinstance(learner.get(key), int) and learner[key] > 5:
            learner[key] = 5
    return data


def _capped(data: Any) -> Any:
    """A mutated config whose sizes were made large is cut back, so that no case runs for minutes."""
    if isinstance(data, dict):
        train = data.get("train")
        if isinstance(train, dict):
            for key in ("iterations", "meta_batch", "val_episodes"):
                if isinstance(train.get(key), int) and not isinstance(train[key], bool) and train[key] > 4:
                    train[key] = 4
    return data


def run_case(source: Path, description: str, data: dict[str, Any] | str, folder: Path) -> str:
    """Train (or run the phases of) one mutated config and evaluate it. The outcome:
    ``"trained"``, ``"refused"`` (a ConfigError), ``"diverged"``, or the bug found (an exception
    modmeta does not raise on purpose), described with the mutation."""
    path = folder / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(_capped(data), sort_keys=False))
    phased = isinstance(data, dict) and bool(data.get("phases"))
    commands = ([["phases", str(path), "--out", str(folder / "run"), "--quiet"]] if phased else
                [["train", str(path), "--out", str(folder / "run"), "--quiet"],
                 ["eval", str(folder / "run"), "--episodes", "2"]])
    for argv in commands:
        args = cli._parser().parse_args(argv)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                args.run(args)
        except config.ConfigError:
            return "refused"
        except Diverged:
            return "diverged"
        except Exception as e:  # noqa: BLE001  (any other exception is what the fuzz looks for)
            if isinstance(e, ValueError | TypeError | OSError) and _raised_by_modmeta(e):
                return "stopped"
            return f"BUG {source.name}: {description}: `modmeta {argv[0]}` raised {type(e).__name__}: {e}"
    return "trained"


def _raised_by_modmeta(error: BaseException) -> bool:
    """Whether ``error`` was raised in modmeta's own code (a check with its own message, made
    when training starts rather than when the config is read), not deep inside torch or numpy."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def fuzz(configs: list[Path], count: int, seed: int, tmp: Path, cache: Path) -> collections.Counter[str]:
    """The outcomes of ``count`` mutations of ``configs`` (drawn with ``seed``), by kind."""
    rng = random.Random(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    for i in range(count):
        source = rng.choice(configs)
        description, data = mutate(_small(yaml.safe_load(source.read_text()), cache), rng)
        folder = tmp / f"case-{i}"
        folder.mkdir()
        outcomes[run_case(source, description, data, folder)] += 1
    return outcomes


def _bugs(outcomes: collections.Counter[str]) -> list[str]:
    return [outcome for outcome in outcomes if outcome.startswith("BUG")]


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs name data relative to the repository root (``../shared/data/omniglot``)."""
    monkeypatch.chdir(ROOT)


def test_mutations_change_the_config_in_many_ways():
    data = _small(yaml.safe_load((ROOT / "configs/sinusoid-maml.yaml").read_text()), Path("."))
    rng = random.Random(0)
    changed = [mutate(data, rng) for _ in range(50)]
    assert sum(d != data for _, d in changed) >= 45  # a value drawn equal to the old one changes nothing
    assert len({description for description, _ in changed}) > 30


def test_a_few_mutated_cheap_configs_never_end_in_a_traceback(in_repo, tmp_path, request):
    outcomes = fuzz(CHEAP, QUICK, seed=0, tmp=tmp_path, cache=request.config.cache.mkdir("modmeta-omniglot"))
    assert not _bugs(outcomes), "\n".join(_bugs(outcomes))
    assert outcomes["trained"] >= 3 and outcomes["refused"] >= 10, outcomes  # both paths exercised


@pytest.mark.slow
def test_500_mutated_configs_never_end_in_a_traceback(in_repo, tmp_path, request):
    outcomes = fuzz(CONFIGS, FULL, seed=1, tmp=tmp_path, cache=request.config.cache.mkdir("modmeta-omniglot"))
    bugs = _bugs(outcomes)
    print(f"{FULL} mutations: {outcomes['trained']} trained, {outcomes['refused']} refused, "
          f"{outcomes['stopped']} stopped by a check at training, {outcomes['diverged']} diverged, {len(bugs)} bugs")
    assert not bugs, f"{len(bugs)} of {FULL} mutations ended in a traceback:\n" + "\n".join(bugs)
