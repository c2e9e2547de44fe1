"""Checks of constructor arguments, so that a wrong value is refused where it is given.

- :func:`positive` and :func:`at_least` are the range checks the constructors run on their own
  arguments, so the Python API and configs refuse ``inner_lr=-0.1`` or ``hidden=[0]`` alike;
  they raise :class:`ArgumentError`, which names the parameter (a config error then names the
  key, ``model.hidden``).
- :func:`mismatch` compares a plain config value (what YAML gives: numbers, strings, booleans,
  lists, mappings, null) with a constructor parameter's type hint, so a config is refused
  before anything is built: ``inner_steps: 1.5`` is not an integer, ``shots: ten`` is not a
  number, and ``true`` is not an integer (YAML booleans are Python ``bool``, a subclass of
  ``int``, which plain ``isinstance`` would let through).
"""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union


class ArgumentError(ValueError):
    """A constructor argument out of its range: ``name`` (the parameter) and ``reason``."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} {reason}")
        self.name, self.reason = name, reason


def positive(**values: float) -> None:
    """Refuse any of ``values`` (name = value) that is not a finite number > 0."""
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ArgumentError(name, f"must be a finite number > 0, got {value!r}")


def at_least(low: float, **values: float | Sequence[float]) -> None:
    """Refuse any of ``values`` (name = a number, or a list of numbers) below ``low``."""
    for name, value in values.items():
        listed = isinstance(value, list | tuple)
        items = value if listed else [value]
        if not all(isinstance(v, int | float) and math.isfinite(v) and v >= low for v in items):
            raise ArgumentError(name, f"must {'hold numbers' if listed else 'be a number'} >= {low}, got {value!r}")


def hints(build: Any) -> dict[str, Any]:
    """The type hints of ``build``'s parameters (a class's ``__init__``, a function's own);
    empty when they cannot be resolved, so that nothing is checked rather than wrongly refused."""
    target = build.__init__ if isinstance(build, type) else build
    try:
        return typing.get_type_hints(target)
    except (NameError, TypeError):
        return {}


def mismatch(value: Any, hint: Any) -> str | None:
    """What ``hint`` expects, in words, when the config value ``value`` does not fit it; else None.

    Understood: ``int`` (not ``bool``), ``float`` (an integer too), ``bool``, ``str``, ``Path``
    (a string), ``None``, ``Literal``, unions, sequences and tuples (a YAML list; a string is
    not a list of strings), ``dict``. A value a config cannot give (a module, a callable) is
    expected as such; hints not listed here accept anything.
    """
    return None if _fits(value, hint) else describe(hint)


def describe(hint: Any) -> str:
    """``hint`` in words: ``an integer``, ``a list, each item a number``, ``one of 'a', 'b'``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "a list [" + ", ".join(map(describe, args)) + "]"
        return f"a list, each item {describe(args[0])}" if args else "a list"
    if origin in _MAPPINGS or hint is dict:
        return "a mapping"
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return "a Python callable (given in Python, not in a config)"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path",
             type(None): "null"}
    if hint in words:
        return words[hint]
    name = getattr(hint, "__name__", str(hint))
    return f"a {name} (built in Python, not in a config)"


_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in _SEQUENCES:
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_fits, value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in _MAPPINGS or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, str | Path)
    if hint is None or hint is type(None):
        return value is None
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True
