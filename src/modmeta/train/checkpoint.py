"""Checkpoints that any PyTorch user can open, that lose nothing and can never run code.

A checkpoint ``last.pt`` is a plain ``torch.save`` file of a dict of tensors and plain data:
``torch.load("last.pt", weights_only=True)`` opens it. Beside it, the digest file
``last.pt.sha256`` holds the line ``MODMETA-CHECKPOINT 2 sha256=<hex> size=<bytes>``.
:func:`load` checks the size (a truncated file) and the digest (a corrupt one) before anything
is unpickled, and unpickles with ``torch.load(weights_only=True)``, which builds only tensors
and plain containers: a file crafted to run code is refused. Checkpoints of the earlier format
(version 1: that line as a header, then the ``torch.save`` bytes, in one file) are read too.

Every file is written atomically (:func:`modmeta.train.files.write_atomic`: a temporary file in
the same folder, flushed, then renamed over the target), but a checkpoint and its digest are
two files, so the order of the writes keeps a readable pair whatever write a kill interrupts:

- :func:`save` first writes the new digest followed by the current file's (while the new file
  is being written, the digest file vouches for both), then the file, then the new digest
  alone. A file matching any line of its digest file is whole.
- :func:`save_rotating` keeps the ``last.pt`` it replaces as ``previous.pt``: it first copies
  the digest to ``previous.pt.sha256``, then renames ``last.pt`` to ``previous.pt`` (killed in
  between, ``last.pt`` is still whole), then writes the new ``last.pt`` by :func:`save`
  (killed before it is renamed in, the folder has no ``last.pt`` and :func:`latest` resumes
  from ``previous.pt``).

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
VERSION = 2  # the digest line beside a plain torch.save file; version 1 was a header inside the file
LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"
DIGEST = ".sha256"  # the suffix of a checkpoint's digest file (last.pt.sha256)
DAMAGED = ".damaged"  # the suffix of a damaged checkpoint set aside (last.pt.damaged, best.pt.damaged)
PORTABLE = ("device",)  # config keys a run may change when it resumes or is evaluated: where it runs


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or holds something other than data."""


def digest_line(payload: bytes) -> str:
    """The line a digest file records for the checkpoint bytes ``payload``: size and SHA-256."""
    return f"{MAGIC.decode()} {VERSION} sha256={hashlib.sha256(payload).hexdigest()} size={len(payload)}\n"


def digest_path(path: str | Path) -> Path:
    """The digest file beside the checkpoint ``path`` (``last.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + DIGEST)


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` and its digest beside it, so that a kill at any write leaves
    a file that matches its digest file: the old one or the new one."""
    path, digest = Path(path), digest_path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    line = digest_line(payload)
    current = _first_line(digest) if path.exists() and digest.exists() else ""
    files.write_atomic(digest, line + current)
    files.write_atomic(path, payload)
    if current:
        files.write_atomic(digest, line)


def save_rotating(state: dict[str, Any], folder: str | Path) -> Path:
    """Write ``folder/last.pt``, first renaming the current one (with its digest) to
    ``folder/previous.pt``.

    Killed after the rename, the folder holds ``previous.pt`` and no ``last.pt``;
    :func:`latest` then resumes from ``previous.pt``.
    """
    folder = Path(folder)
    last, previous = folder / LAST, folder / PREVIOUS
    if last.exists():
        if digest_path(last).exists():
            files.write_atomic(digest_path(previous), _first_line(digest_path(last)))
        else:  # a checkpoint of the old format carries its digest inside
            digest_path(previous).unlink(missing_ok=True)
        os.replace(last, previous)
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
    payload = _framed_payload(path, data) if data.startswith(MAGIC) else _checked(path, data)
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


def _first_line(path: Path) -> str:
    """The first line of the digest file ``path``, with its newline."""
    return path.read_text().partition("\n")[0] + "\n"


def _parse(line: bytes, where: str) -> tuple[int, str, int]:
    """``(version, sha256, size)`` of a digest line; ``where`` names its file in the error."""
    fields = line.split(b" ")
    try:
        if len(fields) != 4 or fields[0] != MAGIC:
            raise ValueError
        return (int(fields[1]), fields[2].removeprefix(b"sha256=").decode(),
                int(fields[3].removeprefix(b"size=")))
    except ValueError:
        raise CheckpointError(f"{where} has a damaged digest line: {line[:120]!r}") from None


def _verify(path: Path, payload: bytes, recorded: list[tuple[int, str, int]], where: str) -> None:
    """Raise unless ``payload`` (the contents of ``path``) has the size and digest of one of
    the ``recorded`` lines read from ``where``."""
    if any((len(payload), hashlib.sha256(payload).hexdigest()) == (size, digest) for _, digest, size in recorded):
        return
    size = recorded[0][2]
    if len(payload) < size:
        raise CheckpointError(f"{path} is truncated: it holds {len(payload)} of its {size} bytes")
    raise CheckpointError(f"{path} is corrupt: its contents do not match the digest {where} records")


def _checked(path: Path, data: bytes) -> bytes:
    """The bytes of a plain ``torch.save`` checkpoint, checked against its digest file."""
    digest = digest_path(path)
    if not digest.is_file():
        raise CheckpointError(f"{path} is not a modmeta checkpoint (no digest file {digest.name} beside it)")
    lines = digest.read_bytes().splitlines()
    recorded = [_parse(line, str(digest)) for line in lines]
    if not recorded or any(version != VERSION for version, _, _ in recorded):
        raise CheckpointError(f"{digest} is not a version {VERSION} digest file: {lines[:1]!r}")
    _verify(path, data, recorded, digest.name)
    return data


def _framed_payload(path: Path, data: bytes) -> bytes:
    """The ``torch.save`` bytes of a checkpoint of the old format (version 1: a header line
    with the digest, then the bytes, in one file), checked against its header."""
    header, newline, payload = data.partition(b"\n")
    if not newline:
        raise CheckpointError(f"{path} is truncated: it ends inside its header")
    version, digest, size = _parse(header, str(path))
    if version != 1:
        raise CheckpointError(f"{path} is a version {version} checkpoint with a header; this modmeta reads "
                              f"version 1 headers and version {VERSION} digest files")
    _verify(path, payload, [(version, digest, size)], "its header")
    return payload


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
    """Rename the damaged checkpoint ``path`` and its digest file out of the rotation
    (``best.pt`` to ``best.pt.damaged``), kept for inspection; returns the new path."""
    path = Path(path)
    aside = path.with_name(path.name + DAMAGED)
    os.replace(path, aside)
    if digest_path(path).exists():
        os.replace(digest_path(path), digest_path(aside))
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
