"""Decoded data set arrays kept on disk with a digest, so a damaged cache is noticed, not trained on.

Decoding an image archive takes seconds to minutes; the arrays it gives are saved once as an
``.npz`` file in ``default_cache_dir()`` and read back on the next load. Each file also holds
a sha256 of its arrays that is checked on every read: a zip's own CRCs do not catch a file
that was rewritten (images zeroed, say), and training on blank images would go unnoticed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np


def digest_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """Hex sha256 of ``arrays``: each one's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return h.hexdigest()


def read_cache(
    file: Path, names: Sequence[str], what: str, check: Callable[[dict[str, np.ndarray]], None] = lambda a: None
) -> dict[str, np.ndarray] | None:
    """Arrays ``names`` cached in ``file``, or ``None`` (with a warning) if the file cannot be used.

    Unusable means unreadable, without the sha256 digest of its arrays (a file written
    before the digest was stored), with arrays that do not match it, or refused by ``check``
    (which raises ``ValueError`` saying why, e.g. the wrong shapes). ``what`` names the data
    set in the warning.
    """
    try:
        with np.load(file, allow_pickle=False) as data:
            if "digest" not in data.files:
                raise ValueError("it holds no digest of its arrays, so an older modmeta wrote it")
            arrays = {name: data[name] for name in names}
            if str(data["digest"]) != digest_arrays(arrays):
                raise ValueError("its arrays do not match the sha256 digest stored with them")
        check(arrays)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring the unusable {what} cache {file} ({e}); decoding the archives again", stacklevel=3)
        return None
    return arrays


def write_cache(file: Path, arrays: Mapping[str, np.ndarray], what: str) -> None:
    """Save ``arrays`` and their digest to ``file`` atomically (temporary file, then rename); warn if impossible."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file.stem}.", suffix=".npz.part", dir=file.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays, digest=np.array(digest_arrays(arrays)))
            os.chmod(tmp, 0o644)
            os.replace(tmp, file)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(
            f"could not cache the decoded {what} arrays in {file} ({e}); every new process will "
            "decode the archives again. Set $MODMETA_CACHE or pass cache= a writable folder.",
            stacklevel=3,
        )
