"""Checkpoints that lose nothing and can never run code.

A checkpoint file is one header line, ``MODMETA-CHECKPOINT 1 sha256=<hex> size=<bytes>``,
followed by the bytes of ``torch.save`` of a dict of tensors and plain data. Reading checks
the size (a truncated file) and the digest (a corrupt one) before anything is unpickled, and
unpickles with ``torch.load(weights_only=True)``, which builds only tensors and plain
containers: a file crafted to run code is refused.

Writing goes to a temporary file in the same folder, which is flushed to disk and then
renamed over the target (``os.replace`` is atomic), so a process killed at any instant leaves
either the old file or the new one, never half of one (:func:`modmeta.train.files.write_atomic`).
:func:`save_rotating` keeps the file it replaces as ``previous.pt``.

Each checkpoint records the resolved config of its run and that config's digest;
:func:`check_config` refuses a checkpoint written under another config (one copied in from
another run, say), listing the keys that differ.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from modmeta.train import files

MAGIC = b"MODMETA-CHECKPOINT"
VERSION = 1
LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"
DAMAGED = ".damaged"  # the suffix of a damaged checkpoint set aside (last.pt.damaged, best.pt.damaged)
PORTABLE = ("device",)  # config keys a run may change when it resumes or is evaluated: where it runs


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or holds something other than data."""


def encode(payload: bytes) -> bytes:
    """``payload`` behind its header line (digest and size)."""
    digest = hashlib.sha256(payload).hexdigest()
    return MAGIC + f" {VERSION} sha256={digest} size={len(payload)}\n".encode() + payload


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: the file is either the old one or the new one."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files.write_atomic(path, encode(buffer.getvalue()))


def save_rotating(state: dict[str, Any], folder: str | Path) -> Path:
    """Write ``folder/last.pt``, first renaming the current one to ``folder/previous.pt``.

    Killed between the two renames, the folder holds ``previous.pt`` and no ``last.pt``;
    :func:`latest` then resumes from ``previous.pt``.
    """
    folder = Path(folder)
    last = folder / LAST
    if last.exists():
        os.replace(last, folder / PREVIOUS)
    save(state, last)
    return last


def load(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`, checking its size and digest first.

    Raises :class:`CheckpointError` with one line saying what is wrong with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a modmeta checkpoint (no modmeta header)")
    header, newline, payload = data.partition(b"\n")
    fields = header.split(b" ")
    if not newline:
        raise CheckpointError(f"{path} is truncated: it ends inside its header")
    if len(fields) != 4:
        raise CheckpointError(f"{path} has a damaged header: {header[:120]!r}")
    try:
        version = int(fields[1])
        digest = fields[2].removeprefix(b"sha256=").decode()
        size = int(fields[3].removeprefix(b"size="))
    except ValueError:
        raise CheckpointError(f"{path} has a damaged header: {header[:120]!r}") from None
    if version != VERSION:
        raise CheckpointError(f"{path} is a version {version} checkpoint; this modmeta reads version {VERSION}")
    if len(payload) < size:
        raise CheckpointError(f"{path} is truncated: it holds {len(payload)} of its {size} bytes")
    if len(payload) > size or hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupt: its contents do not match the digest it was written with")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error: ([^.]*)", str(e))
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, "
            f"and loading them could run code" + (f" ({found.group(1)})" if found else "")
        ) from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read as a checkpoint: {' '.join(str(e).split())}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def latest(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint of a run folder, ``last.pt`` else ``previous.pt``, and its path.

    ``None`` when the folder holds neither. A damaged ``last.pt`` is reported with
    ``warnings.warn`` before falling back; if no file is readable, the error names each.
    (:meth:`modmeta.Trainer.fit` then renames the damaged file to ``last.pt.damaged``.)
    """
    folder = Path(folder)
    problems = []
    for name in (LAST, PREVIOUS):
        if not (folder / name).exists():
            continue
        try:
            state = load(folder / name)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(f"{problems[0]}; resuming from {folder / name} (iteration {state['iteration']})",
                          stacklevel=2)
        return folder / name, state
    if problems:
        raise CheckpointError("; ".join(problems) + "; no readable checkpoint is left to resume from")
    return None


def set_aside(path: str | Path) -> Path:
    """Rename the damaged checkpoint ``path`` out of the rotation (``best.pt`` to
    ``best.pt.damaged``), kept for inspection; returns the new path."""
    path = Path(path)
    aside = path.with_name(path.name + DAMAGED)
    os.replace(path, aside)
    return aside


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` already holds checkpoints of a run."""
    return any((Path(folder) / name).exists() for name in (LAST, PREVIOUS, BEST))


def config_digest(config: dict[str, Any] | None) -> str | None:
    """The sha256 of a run's resolved config (plain data), as each checkpoint records it."""
    if config is None:
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def check_config(state: dict[str, Any], config: dict[str, Any] | None, path: str | Path, against: str) -> None:
    """Refuse the checkpoint ``state`` read from ``path`` if it was written under another config
    than ``config`` (described as ``against``): the error lists the differing keys. Keys the
    checkpoint does not record (settings added by a later modmeta) and the :data:`PORTABLE`
    ones are not compared."""
    stored = state.get("config")
    if config is None or stored is None:
        return
    digest = state.get("config_digest") or config_digest(stored)
    if digest == config_digest(config):
        return
    found = config_changes(stored, config, recorded_only=True)
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        raise CheckpointError(f"{path} was written by another run: its config differs from {against} ({shown})")


def config_changes(a: dict[str, Any], b: dict[str, Any], recorded_only: bool = False) -> list[str]:
    """The :func:`differences` of two run configs that make them different runs: all but the
    :data:`PORTABLE` keys (a run trained on a GPU may resume or be evaluated on a CPU)."""
    return [d for d in differences(a, b, recorded_only=recorded_only) if d.split(":")[0] not in PORTABLE]


def differences(a: Any, b: Any, path: str = "", recorded_only: bool = False) -> list[str]:
    """Each key path where plain data ``a`` and ``b`` differ, as ``"key: a -> b"``;
    ``recorded_only`` skips the keys of ``b`` that ``a`` lacks."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in list(a) + [k for k in b if k not in a and not recorded_only]:
            found += differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), recorded_only)
        return found
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]
