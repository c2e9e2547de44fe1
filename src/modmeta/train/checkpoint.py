"""Checkpoints that lose nothing and can never run code.

A checkpoint file is one header line, ``MODMETA-CHECKPOINT 1 sha256=<hex> size=<bytes>``,
followed by the bytes of ``torch.save`` of a dict of tensors and plain data. Reading checks
the size (a truncated file) and the digest (a corrupt one) before anything is unpickled, and
unpickles with ``torch.load(weights_only=True)``, which builds only tensors and plain
containers: a file crafted to run code is refused.

Writing goes to a temporary file in the same folder, which is flushed to disk and then
renamed over the target (``os.replace`` is atomic), so a process killed at any instant leaves
either the old file or the new one, never half of one. :func:`save_rotating` keeps the file it
replaces as ``previous.pt``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

MAGIC = b"MODMETA-CHECKPOINT"
VERSION = 1
LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"
DAMAGED = "last.pt.damaged"  # a damaged last.pt, set aside when a run resumes from previous.pt


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or holds something other than data."""


def encode(payload: bytes) -> bytes:
    """``payload`` behind its header line (digest and size)."""
    digest = hashlib.sha256(payload).hexdigest()
    return MAGIC + f" {VERSION} sha256={digest} size={len(payload)}\n".encode() + payload


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: the file is either the old one or the new one."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = encode(buffer.getvalue())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


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


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` already holds checkpoints of a run."""
    return any((Path(folder) / name).exists() for name in (LAST, PREVIOUS, BEST))


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry of a rename to disk (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
