"""Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets, 20 drawings each.

The images are read straight from the two official archives, ``images_background.zip``
(30 alphabets, 964 characters) and ``images_evaluation.zip`` (20 alphabets, 659
characters), after checking them against known digests. Decoding 32,460 PNGs takes
seconds, so the decoded arrays are cached on disk (keyed by the archives' sha256 and the
image size, and stored with a sha256 of the arrays that is checked on every read) and shared
within a process.
"""

from __future__ import annotations

import io
import logging
import re
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from modmeta.tasks.cache import read_cache, write_cache
from modmeta.tasks.download import Checksum, FileDigest, default_cache_dir, fetch_file
from modmeta.tasks.labelled import ClassificationFamily

log = logging.getLogger(__name__)

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
"""Where ``download=True`` fetches the archives from (``base_url`` overrides it)."""

OMNIGLOT_ARCHIVES: Mapping[str, tuple[Checksum, ...]] = {
    "images_background.zip": (
        Checksum(md5="68d2efa1b9178cc56df9314c21c6e718", label="the official archive"),
        Checksum(
            sha256="5e40902b4b72dcec6d87732eb8e8c0862f2c92b579cf264e65fc7a0954e80d47", size=8_556_666,
            label="the rebuilt stored-zip copy",
        ),
    ),
    "images_evaluation.zip": (
        Checksum(md5="6b91aef0f799c5bb55b94e3f2daec811", label="the official archive"),
        Checksum(
            sha256="bcc0b44a73cc146a6739d98c0004e3fc70173968e567278fb429b3dd55342400", size=5_838_819,
            label="the rebuilt stored-zip copy",
        ),
    ),
}
"""The accepted versions of each archive: the official one (MD5, as torchvision checks it)
and the rebuilt copy with identical PNGs (sha256, see ``shared/data/omniglot/README.md``)."""

DRAWINGS = 20
"""Drawings of every character (one by each of 20 people)."""

SPLIT_SEED = 0
"""Seed of the ``torch.Generator`` that permutes the 1,623 characters for the "vinyals" split."""

VINYALS_TRAIN, VINYALS_VAL = 1100, 100
"""Characters of the "vinyals" train and val splits; test is the remaining 423."""

LAKE_VAL_ALPHABETS = ("Grantha", "Greek")
"""Background alphabets held out as the "lake" val split (43 + 24 = 67 characters).

Whole alphabets, so validation, like the test split, asks for new alphabets. They were the
first two of ``torch.randperm(30, generator=torch.Generator().manual_seed(0))`` over the
sorted background alphabets, and are fixed here by name.
"""

SplitProtocol = Literal["vinyals", "lake"]
_CACHE_FORMAT = 1  # bump when the decoding changes, so old cache files are not reused
_ENTRY = re.compile(r"(images_background|images_evaluation)/([^/]+)/([^/]+)/[^/]+\.png")
_MEMO: dict[tuple[str, str, int], OmniglotCharacters] = {}


@dataclass(frozen=True, eq=False)
class OmniglotCharacters:
    """Every Omniglot character with its 20 drawings, in a fixed order.

    Background characters come first, then evaluation ones, each sorted by alphabet and
    character folder. ``images`` is ``uint8 [C, 20, S, S]`` with ink 255 and paper 0;
    ``alphabets[i]`` and ``names[i]`` (``"character07"``) name character ``i`` and
    ``background[i]`` says which archive it came from.
    """

    images: np.ndarray
    alphabets: tuple[str, ...]
    names: tuple[str, ...]
    background: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]

    def character(self, i: int) -> tuple[str, str, np.ndarray]:
        """``(alphabet, character name, drawings uint8 [20, S, S])`` of character ``i``."""
        return self.alphabets[i], self.names[i], self.images[i]

    @cached_property
    def x(self) -> torch.Tensor:
        """All drawings as ``float32 [C * 20, 1, S, S]`` in ``[0, 1]``, strokes 1 and paper 0."""
        c, d, s, _ = self.images.shape
        return torch.from_numpy(self.images).reshape(c * d, 1, s, s).to(torch.float32).div_(255)

    @cached_property
    def y(self) -> torch.Tensor:
        """The character index of each row of ``x``."""
        return torch.arange(len(self)).repeat_interleave(self.images.shape[1])


def verify_omniglot(
    root: str | Path, download: bool = False, base_url: str = OMNIGLOT_URL
) -> dict[str, FileDigest]:
    """Check both archives in ``root`` and return their digests; with ``download``, fetch them.

    ``download=True`` fetches an archive that is missing or fails its check from
    ``base_url`` (verified, then moved into place); otherwise a missing archive raises
    ``FileNotFoundError`` and a bad one ``CorruptArchiveError``, saying what to fetch and where.
    """
    root = Path(root).expanduser()
    digests = {}
    for name, accepted in OMNIGLOT_ARCHIVES.items():
        digests[name] = fetch_file(root / name, base_url.rstrip("/") + "/" + name, accepted, download)
    return digests


def load_omniglot(
    root: str | Path,
    image_size: int = 28,
    download: bool = False,
    cache: bool | str | Path = True,
    base_url: str = OMNIGLOT_URL,
) -> OmniglotCharacters:
    """All 1,623 characters, decoded from the archives in ``root`` and resized to ``image_size``.

    The archives are verified first (see ``verify_omniglot``). Each drawing is converted to
    grayscale, resized with Lanczos filtering and inverted so strokes are bright. The result is
    kept in this process and, when ``cache`` is true, in a ``.npz`` file in
    ``default_cache_dir()`` (or in the folder ``cache`` names) keyed by the archives' sha256,
    so a later load reads one file instead of decoding 32,460 PNGs. The file also holds a
    sha256 of its arrays; a cache file that fails that check (damaged, edited, or written
    before the digest was stored) or cannot be read is reported with a warning, and the
    archives are decoded again and the file rewritten.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    root = Path(root).expanduser()
    digests = verify_omniglot(root, download, base_url)
    bg, ev = (digests[name].sha256 for name in OMNIGLOT_ARCHIVES)
    key = (bg, ev, image_size)
    if key in _MEMO:
        return _MEMO[key]
    file = None
    if cache:
        folder = default_cache_dir() if cache is True else Path(cache).expanduser()
        file = folder / f"omniglot-v{_CACHE_FORMAT}-{image_size}px-{bg[:12]}-{ev[:12]}.npz"
    chars = _read_cache(file, image_size) if file is not None and file.is_file() else None
    if chars is None:
        start = time.perf_counter()
        parts = [_decode(root / name, image_size) for name in OMNIGLOT_ARCHIVES]
        chars = OmniglotCharacters(
            images=np.concatenate([p.images for p in parts]),
            alphabets=parts[0].alphabets + parts[1].alphabets,
            names=parts[0].names + parts[1].names,
            background=np.concatenate([p.background for p in parts]),
        )
        log.info("decoded %d Omniglot drawings in %.1f s", len(chars) * DRAWINGS, time.perf_counter() - start)
        if file is not None:
            _write_cache(file, chars)
    _MEMO[key] = chars
    return chars


def _alphabet_group(chars: OmniglotCharacters, alphabets: Sequence[str] | str) -> list[str]:
    """The alphabet names ``alphabets`` stands for: a list of names, or ``"K/N"``."""
    names = sorted(set(chars.alphabets))
    if isinstance(alphabets, str):
        k, slash, n = alphabets.partition("/")
        if not (slash and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n) <= len(names)):
            raise ValueError(f"alphabets={alphabets!r}: give 'K/N' with 0 <= K < N <= {len(names)}, or a list of names")
        k, n = int(k), int(n)
        return names[k * len(names) // n:(k + 1) * len(names) // n]
    unknown = sorted(set(alphabets) - set(names))
    if unknown:
        raise ValueError(f"unknown alphabets {unknown}: Omniglot's are {', '.join(names)}")
    return list(alphabets)


def omniglot_splits(chars: OmniglotCharacters, protocol: SplitProtocol = "vinyals") -> dict[str, list[int]]:
    """Character indices of the train, val and test splits of ``protocol``.

    ``"vinyals"`` (Vinyals et al. 2016, as in MAML): all 1,623 characters pooled, permuted
    with ``SPLIT_SEED``; the first 1,100 train, the next 100 val, the last 423 test.
    ``"lake"`` (Lake et al. 2015): the background set trains except the alphabets in
    ``LAKE_VAL_ALPHABETS`` (897 train, 67 val), the 659 evaluation characters test.
    """
    n = len(chars)
    if protocol == "vinyals":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        a, b = VINYALS_TRAIN, VINYALS_TRAIN + VINYALS_VAL
        return {"train": sorted(order[:a]), "val": sorted(order[a:b]), "test": sorted(order[b:])}
    if protocol == "lake":
        held = [bool(chars.background[i]) and chars.alphabets[i] in LAKE_VAL_ALPHABETS for i in range(n)]
        return {
            "train": [i for i in range(n) if chars.background[i] and not held[i]],
            "val": [i for i in range(n) if held[i]],
            "test": [i for i in range(n) if not chars.background[i]],
        }
    raise ValueError(f"unknown protocol {protocol!r}: use 'vinyals' or 'lake'")


class Omniglot(ClassificationFamily):
    """N-way K-shot Omniglot episodes, the benchmark of matching networks, MAML and their kin.

    Classes are characters, split class-disjointly by ``protocol`` (see ``omniglot_splits``);
    with ``rotations=4`` each character rotated by 90°, 180° and 270° counts as three more
    classes (Santoro et al. 2016), so the "vinyals" train split has 4,400 classes; an episode
    never holds the same character twice (two of its rotations), as in the papers. Images are
    ``[1, image_size, image_size]`` floats in ``[0, 1]``, strokes 1. ``split(name)`` gives the
    same configuration on another split and shares the decoded images.
    ``alphabets`` keeps only the characters of some alphabets in every split: a list of
    alphabet names, or ``"K/N"`` for the ``K``-th (from 0) of ``N`` groups of the sorted
    alphabet names (two families on ``"0/2"`` and ``"1/2"`` share no alphabet: the pair of
    seed 004's forgetting experiment).
    See ``load_omniglot`` for ``root``, ``download``, ``image_size``, ``cache`` and ``base_url``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        protocol: SplitProtocol = "vinyals",
        rotations: int = 4,
        download: bool = False,
        image_size: int = 28,
        cache: bool | str | Path = True,
        alphabets: Sequence[str] | str | None = None,
        *,
        base_url: str = OMNIGLOT_URL,
    ) -> None:
        if protocol not in ("vinyals", "lake"):
            raise ValueError(f"unknown protocol {protocol!r}: use 'vinyals' or 'lake'")
        self.data = load_omniglot(root, image_size, download, cache, base_url)
        self.protocol = protocol
        splits = omniglot_splits(self.data, protocol)
        if alphabets is not None:
            keep = set(_alphabet_group(self.data, alphabets))
            splits = {k: [i for i in v if self.data.alphabets[i] in keep] for k, v in splits.items()}
        super().__init__(
            self.data.x, self.data.y, ways, shots, queries, rotations,
            splits=splits, split=split, rotated_repeats=False,
        )

    @property
    def num_characters(self) -> int:
        """Characters of this split (``num_classes`` counts their rotations too)."""
        return len(self.labels)

    def character_names(self) -> list[str]:
        """``"Alphabet/characterNN"`` of each character of this split, in label order."""
        return [f"{self.data.alphabets[i]}/{self.data.names[i]}" for i in self.labels]


def _decode(path: Path, image_size: int) -> OmniglotCharacters:
    """Decode one archive: its characters sorted by alphabet and folder, drawings by file name."""
    with zipfile.ZipFile(path) as z:
        groups: dict[tuple[str, str], list[str]] = {}
        for entry in z.namelist():
            m = _ENTRY.fullmatch(entry)
            if m and m.group(1) == path.stem:
                groups.setdefault((m.group(2), m.group(3)), []).append(entry)
        keys = sorted(groups)
        images = np.empty((len(keys), DRAWINGS, image_size, image_size), dtype=np.uint8)
        for i, key in enumerate(keys):
            for j, entry in enumerate(sorted(groups[key])):
                with Image.open(io.BytesIO(z.read(entry))) as im:
                    gray = im.convert("L")  # mode "1" would make resize fall back to nearest
                if gray.size != (image_size, image_size):
                    gray = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
                images[i, j] = 255 - np.asarray(gray)
    return OmniglotCharacters(
        images=images,
        alphabets=tuple(a for a, _ in keys),
        names=tuple(c for _, c in keys),
        background=np.full(len(keys), path.stem == "images_background"),
    )


def _cache_arrays(chars: OmniglotCharacters) -> dict[str, np.ndarray]:
    """The arrays a cache file holds for ``chars``, by name (its digest aside)."""
    return {
        "images": chars.images, "alphabets": np.array(chars.alphabets),
        "names": np.array(chars.names), "background": chars.background,
    }


def _read_cache(file: Path, image_size: int) -> OmniglotCharacters | None:
    """The arrays cached in ``file``, or ``None`` (with a warning) if it cannot be used.

    Unusable means unreadable, of the wrong shapes, without the sha256 digest of its arrays
    (a file written before the digest was stored) or with arrays that do not match it, as
    when images were zeroed or the file damaged: a zip's own CRCs do not catch a file that
    was rewritten, and training on blank images would otherwise go unnoticed.
    """
    arrays = read_cache(file, ("images", "alphabets", "names", "background"), "Omniglot", _check_cached(image_size))
    if arrays is None:
        return None
    return OmniglotCharacters(
        images=arrays["images"],
        alphabets=tuple(arrays["alphabets"].tolist()),
        names=tuple(arrays["names"].tolist()),
        background=arrays["background"],
    )


def _check_cached(image_size: int) -> Callable[[dict[str, np.ndarray]], None]:
    """A check that cached arrays have the shapes and dtype of ``image_size`` characters."""

    def check(arrays: dict[str, np.ndarray]) -> None:
        images, n = arrays["images"], len(arrays["alphabets"])
        if images.shape != (n, DRAWINGS, image_size, image_size) or images.dtype != np.uint8:
            raise ValueError(f"images of shape {images.shape} and dtype {images.dtype}")
        if len(arrays["names"]) != n or arrays["background"].shape != (n,):
            raise ValueError("the name and archive lists do not match the images")

    return check


def _write_cache(file: Path, chars: OmniglotCharacters) -> None:
    """Save ``chars`` and its digest to ``file`` atomically; warn if impossible."""
    write_cache(file, _cache_arrays(chars), "Omniglot")
