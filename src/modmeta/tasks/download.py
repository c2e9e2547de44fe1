"""Downloads that are verified before they are used, and errors that say what to do.

A data set link that breaks often still answers, with an HTML page or a cut-off file, and
the user then meets a cryptic unpickling or unzipping error far from the cause. Here every
file is checked against the digests of the versions known to be good before it is used; a
file that fails is described (empty, truncated, an HTML page, not a zip archive, a zip
archive of something else) together with the sizes and digests seen and expected, and the
message ends with exactly what to fetch and where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


class CorruptArchiveError(ValueError):
    """A file is present but is not any accepted version of what it should be.

    ``path`` is the file (or the URL that was downloaded) and ``problem`` the diagnosis
    alone; the message adds the digests seen and expected and what to do.
    """

    def __init__(self, path: str | Path, problem: str, message: str) -> None:
        super().__init__(message)
        self.path = str(path)
        self.problem = problem


class DownloadError(OSError):
    """A download could not be made (network, HTTP or file-system failure)."""


@dataclass(frozen=True)
class FileDigest:
    """What a file's bytes are: its size and its MD5 and sha256 digests (lower-case hex)."""

    size: int
    md5: str
    sha256: str

    def describe(self) -> str:
        """``"N bytes, MD5 …, sha256 …"``, for messages."""
        return f"{self.size:,} bytes, MD5 {self.md5}, sha256 {self.sha256}"


@dataclass(frozen=True)
class Checksum:
    """One accepted version of a file, known by its MD5 and/or sha256 digest.

    ``size`` (optional) is checked too and helps messages tell a truncated copy from a
    different one; ``label`` names the version in messages (``"official archive"``).
    """

    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.md5 is None and self.sha256 is None:
            raise ValueError("a Checksum needs an md5 or a sha256 digest")
        for name, length in (("md5", 32), ("sha256", 64)):
            value = getattr(self, name)
            if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value):
                raise ValueError(f"{name} must be {length} hex digits, got {value!r}")

    def matches(self, seen: FileDigest) -> bool:
        """Whether ``seen`` agrees with every digest (and size) this version gives."""
        return (
            (self.md5 is None or self.md5.lower() == seen.md5)
            and (self.sha256 is None or self.sha256.lower() == seen.sha256)
            and (self.size is None or self.size == seen.size)
        )

    def describe(self) -> str:
        """The label, size and digests, for messages."""
        parts = [f"{self.size:,} bytes"] if self.size is not None else []
        parts += [f"MD5 {self.md5.lower()}"] if self.md5 is not None else []
        parts += [f"sha256 {self.sha256.lower()}"] if self.sha256 is not None else []
        return f"{self.label} ({', '.join(parts)})" if self.label else ", ".join(parts)


def digest_file(path: str | Path) -> FileDigest:
    """Size, MD5 and sha256 of a file, read in 1 MiB chunks (memory stays flat)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return FileDigest(size, md5.hexdigest(), sha256.hexdigest())


def check_file(
    path: str | Path, accepted: Sequence[Checksum], advice: str, shown_as: str | None = None
) -> FileDigest:
    """Return the file's digests if it matches one of the ``accepted`` versions; raise otherwise.

    A missing file raises ``FileNotFoundError`` and any other file ``CorruptArchiveError``;
    both messages end with ``advice`` (what to fetch and where to put it). ``shown_as``
    replaces the path in messages (a download names its URL, not its temporary file).
    """
    if not accepted:
        raise ValueError("check_file needs at least one accepted Checksum")
    path = Path(path)
    name = shown_as or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} does not exist. {advice}")
    seen = digest_file(path)
    if any(c.matches(seen) for c in accepted):
        return seen
    problem = diagnose(path, seen.size, [c.size for c in accepted if c.size is not None])
    expected = " or ".join(c.describe() for c in accepted)
    raise CorruptArchiveError(
        name, problem, f"{name} is {problem}. Seen: {seen.describe()}. Expected: {expected}. {advice}"
    )


def diagnose(path: str | Path, size: int, expected_sizes: Sequence[int] = ()) -> str:
    """Say what is wrong with a file that failed its checksum, as a phrase.

    ``"empty"``, ``"an HTML page, not an archive"`` (with the page title), ``"not a zip
    archive"``, ``"truncated"`` (a zip whose end is missing) or, for a well-formed file that
    is simply another file, ``"a checksum mismatch"``. Zip checks apply to ``.zip`` names.
    """
    if size == 0:
        return "empty (0 bytes): a failed or interrupted download"
    with open(path, "rb") as f:
        head = f.read(2048)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        title = re.search(rb"<title[^>]*>(.*?)</title>", head, re.I | re.S)
        shown = f" titled {title.group(1).decode('utf-8', 'replace').strip()[:80]!r}" if title else ""
        return (
            f"an HTML page{shown}, not an archive (a web page, such as an error, login or "
            "redirect page, was saved in place of the file)"
        )
    short = [s for s in expected_sizes if size < s]
    if Path(path).suffix.lower() == ".zip":
        if not head.startswith(b"PK"):
            return f"not a zip archive (it starts with {head[:8]!r}, a zip starts with b'PK')"
        if not zipfile.is_zipfile(path):
            expected = f" of the expected {' or '.join(f'{s:,}' for s in short)}" if short else ""
            return (
                f"truncated: a zip archive whose end (its central directory) is missing, "
                f"{size:,} bytes{expected}"
            )
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        first = f", the first is {names[0]!r}" if names else ""
        return f"a zip archive of something else: a checksum mismatch ({len(names):,} entries{first})"
    return "a checksum mismatch"


def download_url(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    sha256: str | None = None,
    *,
    accepted: Sequence[Checksum] = (),
    advice: str | None = None,
    timeout: float = 60.0,
) -> FileDigest:
    """Download ``url`` to ``dest`` and verify it; return its digests.

    The file must match ``md5``/``sha256`` (every one given) or one of the ``accepted``
    versions; at least one digest is required, since an unverified download is exactly how
    an HTML error page ends up where an archive should be. The bytes go to a temporary file
    beside ``dest`` that is renamed onto ``dest`` only once verified, so ``dest`` never holds
    a partial or bad file: a failed download is deleted and raises ``DownloadError`` (could
    not fetch) or ``CorruptArchiveError`` (fetched, but wrong). ``advice`` ends the error
    messages; by default it says to fetch ``url`` by hand and save it as ``dest``.
    """
    dest = Path(dest)
    versions = list(accepted)
    if md5 is not None or sha256 is not None:
        versions.append(Checksum(md5=md5, sha256=sha256))
    if not versions:
        raise ValueError(f"download_url({url!r}) needs md5, sha256 or accepted: every download is verified")
    advice = advice or f"Fetch {url} by hand and save it as {dest}."
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The suffix keeps dest's extension, so the diagnosis knows a zip is expected.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{dest.suffix}", dir=dest.parent)
    except OSError as e:
        raise DownloadError(f"cannot write into {dest.parent} to download {url}: {e}. {advice}") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    shutil.copyfileobj(response, out, _CHUNK)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                raise DownloadError(f"could not download {url}: {e}. {advice}") from e
        received = tmp.stat().st_size
        if length is not None and length.isdigit() and received < int(length):
            raise CorruptArchiveError(
                url, "truncated",
                f"{url} was truncated: {received:,} of {int(length):,} bytes arrived (the connection "
                f"was cut); nothing was saved at {dest}. Try again, or: {advice}",
            )
        seen = check_file(
            tmp, versions, f"Nothing was saved at {dest}. {advice}", shown_as=f"the download of {url}"
        )
        tmp.chmod(0o644)  # mkstemp makes it private; an archive is for everyone who can read dest's folder
        os.replace(tmp, dest)
        return seen
    finally:
        tmp.unlink(missing_ok=True)


def fetch_file(path: str | Path, url: str, accepted: Sequence[Checksum], download: bool = False) -> FileDigest:
    """Check the file at ``path`` against the ``accepted`` versions and return its digests.

    With ``download``, a file that is missing or fails its check is fetched from ``url``
    (see ``download_url``: verified, then moved into place), with a warning when a bad file
    is replaced; otherwise a missing file raises ``FileNotFoundError`` and a bad one
    ``CorruptArchiveError``, saying what to fetch and where to save it.
    """
    path = Path(path)
    if not download:
        return check_file(path, accepted, f"Fetch {url} and save it as {path}, or pass download=True to fetch it.")
    try:
        return check_file(path, accepted, "")
    except CorruptArchiveError as e:
        warnings.warn(f"replacing {path}: it is {e.problem}", stacklevel=3)
    except FileNotFoundError:
        pass
    log.info("downloading %s to %s", url, path)
    return download_url(url, path, accepted=accepted, advice=f"Fetch {url} by hand and save it as {path}.")


def default_cache_dir() -> Path:
    """Where modmeta keeps files it derives from data sets (decoded arrays).

    ``$MODMETA_CACHE`` if set, else ``$XDG_CACHE_HOME/modmeta``, else ``~/.cache/modmeta``.
    Never the data folder itself: that may be read-only or shared with other users.
    """
    if os.environ.get("MODMETA_CACHE"):
        return Path(os.environ["MODMETA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "modmeta"
