"""The run folder's files: written atomically, by one process at a time, into folders of modmeta's own.

- :func:`write_atomic` writes a whole file through a temporary file in the same folder, flushed
  to disk and renamed over the target, so a kill at any instant leaves the old file or the new
  one. :func:`append_line` adds one line to ``metrics.jsonl``; a kill can cut only that line
  short, and a resumed run cuts the log back to its checkpoint anyway.
- :func:`lock` holds an OS lock (``fcntl.flock``) on the folder's ``.modmeta`` file for as long
  as the process works in the folder; the kernel releases it when the process ends, killed or
  not, so a second writer is refused at once and a killed run never leaves a stale lock.
- :func:`claim` refuses to start a run in a folder holding files modmeta did not write: the
  ``.modmeta`` file marks a folder as a run folder, and it is kept only once a run is claimed.
  It also removes the temporary files a killed write left behind.

A write that fails (a full disk, say) raises :class:`OSError` naming the file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected from a second writer
    fcntl = None  # type: ignore[assignment]

MARKER = ".modmeta"
TEMPORARY = ".*.tmp"  # the pattern of write_atomic's temporary files


class FolderInUse(RuntimeError):
    """Another process holds the run folder's lock."""


class ForeignFolder(FileExistsError):
    """A fresh run was asked for in a folder that holds files modmeta did not write."""


class _Held:
    """A lock this process holds: its open marker file, how many ``with lock`` hold it, and
    whether the folder is a claimed run folder (else the marker goes when the lock does)."""

    def __init__(self, handle: IO[str], owned: bool) -> None:
        self.handle, self.count, self.owned = handle, 0, owned


_held: dict[Path, _Held] = {}


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either the old one or the new one, whole."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def append_line(handle: IO[str], line: str) -> None:
    """Append ``line`` and a newline to the open text file ``handle`` and flush it."""
    try:
        handle.write(line + "\n")
        handle.flush()
    except OSError as e:
        raise _naming(e, handle.name) from None


@contextmanager
def lock(folder: str | Path) -> Iterator[Path]:
    """Hold the lock of run folder ``folder`` (made if missing) for the ``with`` block.

    Re-entrant within a process. Raises :class:`FolderInUse`, naming the process that holds
    the lock, when another process does.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    held = _held.get(key)
    if held is None:
        marker = folder / MARKER
        owned = marker.exists() or not any(folder.iterdir())
        handle = open(marker, "a+")  # noqa: SIM115  (held open for the lock's life)
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise FolderInUse(f"{folder} is in use by {holder}: wait for it to end, "
                                  f"or use another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"modmeta process {os.getpid()}\n")
        handle.flush()
        held = _held[key] = _Held(handle, owned)
    held.count += 1
    try:
        yield folder
    finally:
        held.count -= 1
        if held.count == 0:
            del _held[key]
            if not held.owned:
                (folder / MARKER).unlink(missing_ok=True)
            held.handle.close()


def claim(folder: str | Path, existing_run: bool = False) -> None:
    """Mark ``folder`` (whose :func:`lock` this process holds) as a run folder of modmeta's.

    A folder is claimed when it was new or empty, or already marked; ``existing_run=True``
    also accepts an unmarked folder holding an earlier modmeta version's run (to resume it).
    Otherwise :class:`ForeignFolder` names what the folder holds. Temporary files of writes
    that a kill interrupted are removed.
    """
    folder = Path(folder)
    held = _held.get(folder.resolve())
    if held is None:
        raise RuntimeError(f"claim({folder}) needs the folder's lock: call it inside `with lock(folder)`")
    if not held.owned and not existing_run:
        names = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ForeignFolder(f"{folder} holds files modmeta did not write ({shown}): "
                            f"train into a new or empty folder")
    held.owned = True
    for stale in folder.glob(TEMPORARY):
        stale.unlink(missing_ok=True)


def _naming(error: OSError, path: str | Path) -> OSError:
    """``error`` as an :class:`OSError` that names ``path`` (``[Errno 28] No space left on device: 'path'``)."""
    return OSError(error.errno, error.strerror or str(error), str(path))


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
