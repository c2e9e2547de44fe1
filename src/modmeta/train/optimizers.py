"""The outer optimizer and learning-rate scheduler of a run, from ``torch.optim`` by name.

A name is any optimizer class of :mod:`torch.optim` (``"AdamW"``) or scheduler class of
:mod:`torch.optim.lr_scheduler` (``"CosineAnnealingLR"``), matched exactly or, failing that,
ignoring case (so the historical ``"adam"`` and ``"sgd"`` are :class:`torch.optim.Adam` and
:class:`torch.optim.SGD`). A mapping ``{"name": ..., <its arguments>}`` adds keyword
arguments; the rate is always the run's ``lr``. Arguments are checked against the class's
signature before it is built, so a misspelt one is named with the closest valid one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import lr_scheduler

OptimizerSpec = (str | Mapping[str, Any] | type[torch.optim.Optimizer]
                 | Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer])
SchedulerSpec = (str | Mapping[str, Any] | type[lr_scheduler.LRScheduler]
                 | Callable[[torch.optim.Optimizer], lr_scheduler.LRScheduler])

# Classes whose step needs more than the Trainer gives it, and why.
UNSUPPORTED = {
    "LBFGS": "its step needs a closure that recomputes the loss, and a meta-batch is drawn once per step",
    "ReduceLROnPlateau": "its step needs a metric; choose a schedule by iteration (e.g. StepLR, CosineAnnealingLR)",
}


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter], lr: float,
                   where: str = "optimizer") -> torch.optim.Optimizer:
    """The optimizer of ``params`` that ``spec`` names: a name or ``{"name": ..., <arguments>}``
    (built with ``lr``), a :class:`torch.optim.Optimizer` subclass (built with ``lr``), or a
    callable taking the parameters and returning an optimizer (its own rate). ``where`` is
    the key named in errors (``train.optimizer`` in a config)."""
    if isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer):
        return spec(params, lr=lr)
    if isinstance(spec, str | Mapping):
        cls, kwargs = _resolve(spec, torch.optim, torch.optim.Optimizer, where, skip=1)
        if "lr" in kwargs:
            raise ValueError(f"{where}.lr: the rate is the run's lr (train.lr in a config), not an argument here")
        return _build(cls, kwargs, where, params, lr=lr)
    if callable(spec):
        return spec(params)
    raise TypeError(f"{where}: give a torch.optim name such as 'AdamW', {{'name': 'AdamW', 'weight_decay': 0.01}}, "
                    f"an optimizer class or a callable params -> optimizer; got {spec!r}")


def make_scheduler(spec: SchedulerSpec | None, optimizer: torch.optim.Optimizer,
                   where: str = "scheduler") -> lr_scheduler.LRScheduler | None:
    """The learning-rate scheduler ``spec`` names for ``optimizer`` (``None``: none): a name or
    ``{"name": ..., <arguments>}`` from :mod:`torch.optim.lr_scheduler`, a scheduler class
    (built with the optimizer alone) or a callable taking the optimizer."""
    if spec is None:
        return None
    if isinstance(spec, type) and issubclass(spec, lr_scheduler.LRScheduler):
        return spec(optimizer)
    if isinstance(spec, str | Mapping):
        cls, kwargs = _resolve(spec, lr_scheduler, lr_scheduler.LRScheduler, where, skip=1)
        return _build(cls, kwargs, where, optimizer)
    if callable(spec):
        return spec(optimizer)
    raise TypeError(f"{where}: give a torch.optim.lr_scheduler name such as 'CosineAnnealingLR', "
                    f"{{'name': 'StepLR', 'step_size': 100}}, a scheduler class or a callable optimizer -> "
                    f"scheduler; got {spec!r}")


def _resolve(spec: str | Mapping[str, Any], module: Any, base: type, where: str,
             skip: int) -> tuple[type, dict[str, Any]]:
    """The class of ``module`` that ``spec`` names and its keyword arguments, checked against
    its signature (``skip`` leading parameters are the Trainer's: the parameters, the optimizer)."""
    name, kwargs = (spec, {}) if isinstance(spec, str) else (spec.get("name"), {k: v for k, v in spec.items() if k != "name"})
    classes = {n: c for n, c in vars(module).items()
               if isinstance(c, type) and issubclass(c, base) and c is not base and not n.startswith("_")}
    if not isinstance(name, str):
        raise ValueError(f"{where}.name: required: the name of a {module.__name__} class ({', '.join(classes)})")
    found = classes.get(name) or {n.lower(): c for n, c in classes.items()}.get(name.lower())
    if found is None:
        close = difflib.get_close_matches(name.lower(), [n.lower() for n in classes], n=1, cutoff=0.5)
        hint = f"; did you mean {next(n for n in classes if n.lower() == close[0])!r}?" if close else ""
        raise ValueError(f"{where}: unknown {module.__name__} class {name!r}{hint} (one of {', '.join(classes)})")
    if found.__name__ in UNSUPPORTED:
        raise ValueError(f"{where}: {found.__name__} is not supported: {UNSUPPORTED[found.__name__]}")
    params = list(inspect.signature(found.__init__).parameters.values())[1 + skip:]
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problems = []
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        for key in kwargs:
            if key not in named:
                close = difflib.get_close_matches(key, named, n=1, cutoff=0.6)
                hint = f"; did you mean {where}.{close[0]}?" if close else ""
                problems.append(f"{where}.{key}: unknown argument of {found.__name__}{hint}; it takes {', '.join(named)}")
    for p in params:
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in kwargs:
            problems.append(f"{where}.{p.name}: required by {found.__name__}, but missing")
    if problems:
        raise ValueError("; ".join(problems))
    return found, kwargs


def _build(cls: type, kwargs: dict[str, Any], where: str, *args: Any, **fixed: Any) -> Any:
    """``cls(*args, **fixed, **kwargs)``, its refusal of a value as one line naming ``where``."""
    try:
        return cls(*args, **fixed, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"{where}: {cls.__name__}({shown}) refuses its arguments: {' '.join(str(e).split())}") from None
