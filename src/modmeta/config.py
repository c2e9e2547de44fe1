"""Run configs: one YAML file records every choice of a run, checked against a schema.

A config names a task family, a model and a learner from :mod:`modmeta.registry`, each with
the keyword arguments its constructor takes, and the training and evaluation settings::

    tasks:   {name: sinusoid, shots: 10, queries: 10}
    model:   {name: mlp, hidden: [40, 40]}          # out (and in_features) come from the tasks
    learner: {name: maml, inner_lr: 0.01, inner_steps: 1}
    train:   {iterations: 70000, meta_batch: 25, optimizer: adam, lr: 0.001, seed: 0}
    eval:    {episodes: 600, steps: 10, seed: 0}

A learner's composed values are components too (:data:`modmeta.registry.COMPOSED`): ``inner``
(an inner optimizer), ``outer`` (an outer update, whose ``others`` is one as well), ``prior``
and ``aggregate``, each ``{name: ..., <its arguments>}`` or just its name::

    learner: {name: reptile, inner: {name: adam, lr: 0.001, beta1: 0}, inner_steps: 5}
    learner: {name: gradient, inner: sgd, outer: {name: reptile, others: implicit},
              prior: {name: shrinkage, sigma: 0.5}, inner_steps: 10}

The schema is pydantic's; a key that does not exist, a value of the wrong type or an argument
a constructor does not take is refused with the key's path and, for a typo, the closest valid
name. ``--set a.b=value`` assignments are applied before validation, their values read as YAML.
Relative paths inside a config (a data ``root``) are relative to the working directory.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modmeta import arguments, losses, registry
from modmeta.learners.base import Learner
from modmeta.tasks.base import TaskFamily
from modmeta.train import Trainer, checkpoint, optimizers

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Model arguments filled from the task family when the config leaves them out.
INFERRED = ("out", "in_features", "in_channels", "image_size")


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, also reading ``1e-3`` (no dot) as a number, as YAML 1.2 does, and
    refusing a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """Plain data from YAML text (safe: no objects are built)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)


class ConfigError(ValueError):
    """A config that cannot be used, with one line saying which key and why."""


class _Section(BaseModel):
    # strict: a boolean is not an integer (train.iterations=true), nor 1.5 or "10"
    model_config = ConfigDict(extra="forbid", strict=True)


class Component(BaseModel):
    """A registry name plus the keyword arguments of its constructor."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainConfig(_Section):
    """The outer loop (see :class:`modmeta.Trainer` for what each setting does)."""

    iterations: int = Field(ge=1)
    meta_batch: int = Field(25, ge=1)
    optimizer: str | dict[str, Any] = "adam"  # a torch.optim class: adam, sgd, AdamW, {name: AdamW, weight_decay: 0.01}
    lr: float = Field(1e-3, gt=0)
    schedule: Literal["constant", "linear"] = "constant"
    scheduler: str | dict[str, Any] | None = None  # a torch.optim.lr_scheduler class: {name: CosineAnnealingLR, T_max: 1000}
    clip_grad_norm: float | None = Field(None, gt=0)
    autocast: Literal["bfloat16", "float16"] | None = None
    seed: int = 0
    val_every: int = Field(1000, ge=0)
    val_episodes: int = Field(100, ge=1)
    val_seed: int = 1
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(100, ge=1)
    max_loss: float | None = Field(None, gt=0)
    max_loss_growth: float | None = Field(1e6, gt=0)


class EvalConfig(_Section):
    """The meta-test protocol: ``episodes`` test episodes drawn with ``seed``, scored after
    ``steps`` adaptation steps (``null``: the learner's training number).

    ``tasks`` holds task-family arguments that differ at validation and test from training,
    e.g. ``{ways: 5, queries: 15}`` after Prototypical Networks' 60-way training episodes."""

    episodes: int = Field(600, ge=1)
    steps: int | None = Field(None, ge=0)
    seed: int = 0
    tasks: dict[str, Any] = Field(default_factory=dict)


class Phase(_Section):
    """One phase of a sequential run (``modmeta phases``): ``iterations`` of meta-training on
    the task family ``tasks``, called ``name`` in the reports."""

    name: str
    tasks: Component
    iterations: int = Field(ge=1)


class Config(_Section):
    """Every choice of a run. ``phases`` (optional) make it a sequence of task families
    trained one after the other (see :mod:`modmeta.phases`); ``tasks`` then builds the model.
    ``device`` is where the learner runs: ``auto`` (CUDA when there is one, else the CPU),
    ``cpu``, ``cuda``, ``cuda:1``, ``mps``; it is checked when the config is read, and a run
    may resume on another device (checkpoints do not compare it)."""

    tasks: Component
    model: Component
    learner: Component
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "auto"
    phases: list[Phase] = Field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to a run's ``config.yaml``."""
        return self.model_dump(mode="json")


@dataclass
class Run:
    """What a config builds: its learner and its task family (on the training split)."""

    config: Config
    learner: Learner
    tasks: TaskFamily
    checkpoint: Path | None = None  # where the learner's weights came from, if not fresh
    iteration: int = 0


def restore(folder: str | Path, device: str | None = None) -> Run:
    """The run trained into ``folder``: its config rebuilt, with the learner's weights from
    ``best.pt`` (the best validation) or, without a readable one, from the newest good
    checkpoint (``last.pt``, else ``previous.pt``; a damaged ``best.pt`` is warned about).
    A checkpoint written under another config than the folder's ``config.yaml`` is refused.
    ``device`` (``"cpu"``, ``"auto"``, ...) replaces the device the run was trained on.

    Public as :func:`modmeta.load_run`: ``run.learner`` and ``run.config`` are the learner and
    its config, ``run.tasks`` the task family it trained on."""
    folder = Path(folder)
    path = folder / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{folder} holds no run: there is no {path} (train one with `modmeta train`)")
    data = apply_overrides(read_yaml(path.read_text()), [] if device is None else [f"device={device}"])
    run = build(parse(data, source=str(path)))
    found = None
    best = folder / checkpoint.BEST
    if best.exists():
        try:
            found = best, checkpoint.load(best)
        except checkpoint.CheckpointError as e:
            warnings.warn(f"{e}; using the newest good checkpoint instead", stacklevel=2)
    found = found or checkpoint.latest(folder)
    if found is None:
        raise ConfigError(f"{folder} holds no checkpoint yet (best.pt, last.pt or previous.pt)")
    checkpoint.check_config(found[1], run.config.to_dict(), found[0], str(path))
    run.learner.load_state_dict(found[1]["learner"])
    run.checkpoint, run.iteration = found[0], found[1]["iteration"]
    return run


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override (``"a.b=value"`` strings) and validate the YAML config at ``path``."""
    path = Path(path)
    return parse(apply_overrides(_read_file(path), overrides), source=str(path))


def _read_file(path: Path) -> Any:
    """The plain data of the YAML file at ``path``; a missing, binary or invalid file is one line."""
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    try:
        return read_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a YAML config: it is not UTF-8 text (byte {e.start} is "
                          f"{e.object[e.start:e.start + 1]!r}); give a .yaml file such as configs/sinusoid-maml.yaml") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``data`` with each ``"a.b=value"`` assignment applied; ``value`` is read as YAML."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config is a mapping of keys to values, got a {type(data).__name__}")
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as key.path=value, e.g. learner.inner_lr=0.01")
        try:
            value = read_yaml(text)
        except yaml.YAMLError:
            value = text
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def parse(data: dict[str, Any], source: str = "config") -> Config:
    """Validate plain data as a :class:`Config`, including each component's arguments."""
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")  # typos first
        raise ConfigError(f"{source}: " + "; ".join(map(_describe, errors))) from None
    problems = [
        *_check_device(config.device),
        *_check_train(config),
        *_check_component(config.tasks, "tasks", registry.TASKS, skip=0),
        *_check_component(config.model, "model", registry.MODELS, skip=0),
        *_check_component(config.learner, "learner", registry.LEARNERS, skip=1),
        *_check_composed(config.learner.kwargs, "learner"),
    ]
    if config.eval.tasks:
        merged = Component(name=config.tasks.name, **(config.tasks.kwargs | config.eval.tasks))
        problems += _check_component(merged, "eval.tasks", registry.TASKS, skip=0)
    for i, phase in enumerate(config.phases):
        problems += _check_component(phase.tasks, f"phases.{i}.tasks", registry.TASKS, skip=0)
    names = [phase.name for phase in config.phases]
    if len(set(names)) < len(names):
        problems.append(f"phases: each phase needs its own name, got {names}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def build(config: Config) -> Run:
    """The learner and training task family of ``config``, with the model seeded by
    ``train.seed``. The config returned in the :class:`Run` has the model arguments that were
    filled from the task family written in (``out``, ``in_features``, ...)."""
    tasks = _construct("tasks", registry.TASKS[config.tasks.name].build, **config.tasks.kwargs)
    model_kwargs = _inferred_model_kwargs(config.model, tasks) | config.model.kwargs
    with torch.random.fork_rng(devices=[]):  # the initial weights from the seed; the global RNG untouched
        torch.manual_seed(config.train.seed)
        model = _construct("model", registry.MODELS[config.model.name].build, **model_kwargs)
        learner = _construct("learner", registry.LEARNERS[config.learner.name].build, model,
                             **_composed(config.learner.kwargs, "learner"))
    learner.to(device=resolve_device(config.device), dtype=DTYPES[config.dtype])
    resolved = config.model_copy(update={"model": Component(name=config.model.name, **model_kwargs)})
    return Run(resolved, learner, tasks)


def trainer(run: Run, out: str | Path | None = None, progress: bool = True, callbacks: Sequence[Any] = (),
            distributed: bool = False) -> Trainer:
    """A :class:`modmeta.Trainer` with the config's training settings (and ``callbacks``);
    ``distributed``: one process of a distributed run (see :class:`modmeta.Trainer`)."""
    t = run.config.train
    val = evaluation_tasks(run).split("val") if t.val_every else None
    return Trainer(
        run.learner, run.tasks, meta_batch=t.meta_batch, optimizer=t.optimizer, lr=t.lr, seed=t.seed,
        schedule=t.schedule, val_tasks=val, val_every=t.val_every, val_episodes=t.val_episodes,
        val_seed=t.val_seed, out=out, checkpoint_every=t.checkpoint_every, log_every=t.log_every,
        progress=progress, config=run.config.to_dict(), max_loss=t.max_loss, max_loss_growth=t.max_loss_growth,
        scheduler=t.scheduler, clip_grad_norm=t.clip_grad_norm, autocast=t.autocast, callbacks=callbacks,
        distributed=distributed,
    )


def available_devices() -> list[str]:
    """The devices this machine can run a learner on: ``cpu``, then each CUDA device and MPS."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps:0")
    return found


def resolve_device(name: str) -> torch.device:
    """The device a config's ``device`` names: ``auto`` is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_device(name: str) -> list[str]:
    """The problem with a config's ``device``, if it is not a device of this machine."""
    available = available_devices()
    choices = f"this machine has: auto, {', '.join(available)} (set it with --device or the config key device)"
    if name == "auto":
        return []
    try:
        device = torch.device(name)
    except RuntimeError:
        return [f"device: {name!r} is not a device name; {choices}"]
    if device.type != "cpu" and f"{device.type}:{device.index or 0}" not in available:
        return [f"device: {name!r} is not available here (torch {torch.__version__}); {choices}"]
    return []


def _check_train(config: Config) -> list[str]:
    """Problems with the training section's optimizer and scheduler (each built, and stepped
    once, on a stand-in parameter, so a wrong name, argument or value is refused before the
    run) and with its precision."""
    t = config.train
    problems = []
    if t.schedule == "linear" and t.scheduler is not None:
        problems.append("train.scheduler: give either train.schedule=linear or a train.scheduler, not both")
    try:
        optimizer = optimizers.make_optimizer(t.optimizer, [torch.nn.Parameter(torch.zeros(1))], t.lr,
                                              where="train.optimizer")
        scheduler = optimizers.make_scheduler(t.scheduler, optimizer, where="train.scheduler")
        if scheduler is not None:
            optimizer.step()
            scheduler.step()
    except ValueError as e:
        problems.append(str(e))
    except (TypeError, RuntimeError) as e:  # a value the scheduler's first step cannot use
        problems.append(f"train.scheduler: {t.scheduler} fails at its first step: {' '.join(str(e).split())}")
    if t.autocast is not None and config.dtype != "float32":
        problems.append(f"train.autocast: autocast lowers float32 operations only; with dtype {config.dtype} "
                        f"it would do nothing: remove one of the two")
    return problems


def evaluation_tasks(run: Run) -> TaskFamily:
    """The task family validation and test episodes come from: the training family, or the
    same one rebuilt with the config's ``eval.tasks`` arguments (split still to be chosen)."""
    overrides = run.config.eval.tasks
    if not overrides:
        return run.tasks
    build = registry.TASKS[run.config.tasks.name].build
    return _construct("eval.tasks", build, **(run.config.tasks.kwargs | overrides))


def other_tasks(run: Run, source: str | Path, split: str | None = None) -> TaskFamily:
    """A task family other than the run's, to evaluate its learner on (cross-domain).

    ``source`` is an ``.npz`` file of labelled examples (the ``npz`` family, used whole: every
    class of it is new to the learner; ``split`` must then be ``None``) or a YAML file with a
    ``tasks:`` section (a whole config, or just ``tasks: {name: ..., ...}``), on ``split``
    (default ``test``). ``ways``, ``shots`` and ``queries`` the family takes and the file
    leaves out are the run's. Refused with one line when the learner cannot take its
    episodes: another input shape, another kind of target, another number of outputs (ways)
    than the model's head gives."""
    path = Path(source)
    if path.suffix == ".npz":
        if split is not None:
            raise ConfigError(f"{path}: an .npz file is evaluated whole (all its classes are new to the learner); "
                              f"to evaluate a split of it, give a YAML file with tasks: {{name: npz, path: {path}, "
                              f"test: 0.5}} instead")
        if not path.is_file():
            raise ConfigError(f"no .npz file at {path}")
        component = Component(name="npz", path=str(path))
    else:
        data = _read_file(path)
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or "name" not in data["tasks"]:
            raise ConfigError(f"{path} has no tasks: section naming a task family; give a config, or a file holding "
                              f"tasks: {{name: ..., <its arguments>}} (`modmeta list` shows the families)")
        component = Component(**data["tasks"])
    own = run.config.tasks.kwargs | run.config.eval.tasks
    entry = registry.TASKS.get(component.name)
    takes = inspect.signature(entry.build).parameters if entry else {}
    inherited = {k: own[k] for k in ("ways", "shots", "queries") if k in own and k in takes}
    component = Component(name=component.name, **(inherited | component.kwargs))
    problems = _check_component(component, "tasks", registry.TASKS, skip=0)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    family = _construct(str(path), entry.build, **component.kwargs)
    if path.suffix != ".npz":
        family = _construct(str(path), family.split, split or "test")
    _check_compatible(run, family, str(path))
    return family


def _check_compatible(run: Run, family: TaskFamily, source: str) -> None:
    """Refuse ``family`` when ``run``'s learner cannot take its episodes (one line)."""
    generator = torch.Generator().manual_seed(0)
    param = next(run.learner.parameters())
    own = evaluation_tasks(run).sample(1, generator)
    new = family.sample(1, generator).to(param.device, param.dtype)
    if own.x_support.shape[2:] != new.x_support.shape[2:]:
        raise ConfigError(f"{source}: its examples have shape {list(new.x_support.shape[2:])}, but the run's model "
                          f"takes {list(own.x_support.shape[2:])} (images are [channels, height, width])")
    kinds = [losses.metric_name(batch.y_query) for batch in (own, new)]
    if kinds[0] != kinds[1]:
        raise ConfigError(f"{source}: its tasks are scored by {kinds[1]}, the run's by {kinds[0]}: "
                          f"a {'classifier' if kinds[0] == 'accuracy' else 'regressor'} cannot be evaluated on them")
    was_training = run.learner.training
    run.learner.eval()
    try:
        width = run.learner.predict(run.learner.adapt(new.x_support[0], new.y_support[0], steps=0),
                                    new.x_query[0]).shape[-1]
    except ValueError:  # a gradient learner's own check: its head does not fit these tasks
        width = evaluation_tasks(run).output_size
    finally:
        run.learner.train(was_training)
    if width != family.output_size:
        what = "ways" if kinds[0] == "accuracy" else "outputs"
        raise ConfigError(f"{source}: its tasks have {family.output_size} {what}, but the run's learner gives "
                          f"{width} outputs (its model's head); evaluate on tasks with {what}: {width}")


def _as_component(value: Any) -> Component | None:
    """A composed value's component: ``{name: ..., ...}`` or a bare name; ``None`` if it is
    neither (a value given in Python, or a wrong type the constructor will refuse)."""
    if isinstance(value, str):
        return Component(name=value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return Component(**value)
    return None


def _composed(kwargs: dict[str, Any], section: str) -> dict[str, Any]:
    """``kwargs`` with each composed value (``inner``, ``outer``, ...) built from its table."""
    built = dict(kwargs)
    for key, table in registry.COMPOSED.items():
        component = _as_component(kwargs.get(key))
        if component is not None:
            path = f"{section}.{key}"
            built[key] = _construct(path, table[component.name].build, **_composed(component.kwargs, path))
    return built


def _check_composed(kwargs: dict[str, Any], section: str) -> list[str]:
    """Problems with the composed values among a component's arguments, at any depth."""
    problems = []
    for key, table in registry.COMPOSED.items():
        if key not in kwargs:
            continue
        component = _as_component(kwargs[key])
        path = f"{section}.{key}"
        if component is None:
            problems.append(f"{path}: give a name from `modmeta list` ({', '.join(table)}), or "
                            f"{{name: ..., <its arguments>}}; got {kwargs[key]!r}")
            continue
        skip = 1 if table is registry.PRIORS else 0  # a prior's parameters come from the learner's model
        found = _check_component(component, path, table, skip=skip)
        problems += found or _check_composed(component.kwargs, path)
    return problems


def _construct(section: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """``build(*args, **kwargs)``; its errors become one config line naming the section."""
    try:
        return build(*args, **kwargs)
    except arguments.ArgumentError as e:
        if e.name in kwargs:  # the key the config gave
            raise ConfigError(f"{section}.{e.name}: {e.reason}") from None
        raise ConfigError(f"{section}: {e}") from None
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise ConfigError(f"{section}: {e}") from None


def _inferred_model_kwargs(model: Component, tasks: TaskFamily) -> dict[str, Any]:
    """Model arguments read off the task family: output width and input shape.

    ``out`` is the family's ``output_size``; for vectors ``[F]``, ``in_features = F``; for
    images ``[C, H, W]``, ``in_channels = C`` and ``image_size = W``. Only arguments the
    model's constructor takes and the config leaves out are filled.
    """
    takes = set(inspect.signature(registry.MODELS[model.name].build).parameters) - set(model.kwargs)
    wanted = takes.intersection(INFERRED)
    if not wanted:
        return {}
    shape = tuple(tasks.sample(1, torch.Generator().manual_seed(0)).x_support.shape[2:])
    found: dict[str, Any] = {"out": tasks.output_size}
    if len(shape) == 1:
        found["in_features"] = shape[0]
    if len(shape) == 3:
        found["in_channels"], found["image_size"] = shape[0], shape[2]
    return {k: v for k, v in found.items() if k in wanted}


def _check_component(component: Component, section: str, table: dict[str, registry.Entry],
                     skip: int) -> list[str]:
    """Problems with a component: an unknown name, arguments its constructor does not take,
    required ones missing. ``skip`` leading parameters are filled by modmeta (a learner's model)."""
    if component.name not in table:
        return [f"{section}.name: unknown {section} {component.name!r}{_suggest(component.name, table)} "
                f"(`modmeta list` shows them all)"]
    params = list(inspect.signature(table[component.name].build).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problems = []
    for key in component.kwargs:
        if section == "tasks" and key == "split":
            problems.append("tasks.split: modmeta picks the split (train to train, val to validate, "
                            "test to evaluate); remove this key")
        elif key not in named:
            problems.append(f"{section}.{key}: unknown argument of {section} {component.name!r}"
                            f"{_suggest(key, named, prefix=section + '.')}; it takes {', '.join(named)}")
    types = arguments.hints(table[component.name].build)
    for key, value in component.kwargs.items():
        want = None if key in registry.COMPOSED or key not in types else arguments.mismatch(value, types[key])
        if want is not None and key in named:
            problems.append(f"{section}.{key}: expected {want}, got {_shown(value)}")
    auto = INFERRED if section == "model" else ()
    for p in params:
        if (p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                and p.name not in component.kwargs and p.name not in auto):
            problems.append(f"{section}.{p.name}: required by {section} {component.name!r}, but missing")
    return problems


def _describe(err: dict[str, Any]) -> str:
    """One pydantic error as ``path: what is wrong``, with a suggestion for a misspelt key."""
    loc = [str(part) for part in err["loc"]]
    path = ".".join(loc)
    if err["type"] == "extra_forbidden":
        valid = _fields_at(Config, loc[:-1])
        prefix = ".".join(loc[:-1]) + "." if len(loc) > 1 else ""
        return f"{path}: unknown key{_suggest(loc[-1], valid, prefix)}; valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"{path}: required key missing"
    got = repr(err["input"])
    return f"{path}: {err['msg']} (got {got if len(got) <= 60 else got[:57] + '...'})"


def _shown(value: Any) -> str:
    """A config value as its YAML reads, with its kind: ``true (a boolean)``, ``'ten' (a string)``."""
    kinds = {bool: "a boolean", str: "a string", float: "a number", int: "an integer", list: "a list",
             dict: "a mapping", type(None): "null"}
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    text = repr(value) if isinstance(value, str) else text
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = kinds.get(type(value))
    return f"{text} ({kind})" if kind and kind != "null" else text


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the section of ``model`` at ``loc``."""
    for part in loc:
        if part.isdigit():  # an item of a list section (phases.0)
            continue
        model = model.model_fields[part].annotation
        if typing.get_origin(model) is list:
            model = typing.get_args(model)[0]
    return list(model.model_fields)


def _suggest(word: str, choices: Any, prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""
