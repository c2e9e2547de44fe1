"""Omniglot: archive checks, downloads, decoding, the on-disk cache, splits and episodes.

The archives are read from ``shared/data/omniglot`` beside the repository. Decoded arrays are
cached under pytest's cache folder (``.pytest_cache``), never in the read-only data folder, so
only the first session decodes the 32,460 PNGs.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modmeta.tasks import omniglot as om
from modmeta.tasks.download import CorruptArchiveError, DownloadError, digest_file, download_url
from modmeta.tasks.omniglot import Omniglot, OmniglotCharacters, load_omniglot, verify_omniglot

torch.set_num_threads(1)

BACKGROUND, EVALUATION = "images_background.zip", "images_evaluation.zip"
SHARED_SHA256 = {
    BACKGROUND: "5e40902b4b72dcec6d87732eb8e8c0862f2c92b579cf264e65fc7a0954e80d47",
    EVALUATION: "bcc0b44a73cc146a6739d98c0004e3fc70173968e567278fb429b3dd55342400",
}


@pytest.fixture(scope="session")
def root() -> Path:
    """The shared Omniglot archives; their absence is a failure, not a skip."""
    path = Path(__file__).resolve().parents[2] / "shared/data/omniglot"
    missing = [name for name in (BACKGROUND, EVALUATION) if not (path / name).is_file()]
    if missing:
        pytest.fail(
            f"the Omniglot archives {missing} are missing from {path}: these tests need the "
            f"shared data folder `shared/` beside the repository root (see shared/data/omniglot/README.md)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder that outlives the session (pytest's), or a temporary one without it."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("modmeta-omniglot") if cache is not None else tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def chars(root: Path, cache_dir: Path) -> OmniglotCharacters:
    return load_omniglot(root, cache=cache_dir)


@pytest.fixture(scope="session")
def family(root: Path, cache_dir: Path, chars: OmniglotCharacters) -> Omniglot:
    return Omniglot(root, cache=cache_dir)


@pytest.fixture(scope="session")
def drawing_index(chars: OmniglotCharacters) -> dict[bytes, set[int]]:
    """Every drawing's bytes -> the characters drawn so (a set, in case two drawings agree)."""
    index: dict[bytes, set[int]] = {}
    for c in range(len(chars)):
        for d in range(chars.images.shape[1]):
            index.setdefault(chars.images[c, d].tobytes(), set()).add(c)
    return index


def identify(img: torch.Tensor, index: dict[bytes, set[int]]) -> set[tuple[int, int]]:
    """The (character, quarter turns) a sampled float image can be; it must be an exact drawing."""
    raw = (img[0] * 255).round().to(torch.uint8)
    found = {
        (c, k) for k in range(4) for c in index.get(torch.rot90(raw, -k).contiguous().numpy().tobytes(), ())
    }
    assert found, "a sampled image is not a (rotated) drawing of the data set"
    return found


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server on 127.0.0.1 serving a temporary folder: (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback downloads must not be sent to a proxy set in the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


# --- the data ---------------------------------------------------------------------------


def test_counts_sizes_and_value_range(chars: OmniglotCharacters, family: Omniglot) -> None:
    assert int(chars.background.sum()) == 964 and int((~chars.background).sum()) == 659
    assert len(set(zip(chars.alphabets, chars.names, chars.background, strict=True))) == 1623
    assert len({a for a, b in zip(chars.alphabets, chars.background, strict=True) if b}) == 30
    assert len({a for a, b in zip(chars.alphabets, chars.background, strict=True) if not b}) == 20
    assert chars.images.shape == (1623, 20, 28, 28) and chars.images.dtype == np.uint8
    alphabet, name, drawings = chars.character(0)
    assert (alphabet, name, drawings.shape) == ("Alphabet_of_the_Magi", "character01", (20, 28, 28))
    x = family.x
    assert x.shape == (32460, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    # Strokes are bright on a dark page: most pixels are 0, the mean is low, the edges near empty.
    assert (x == 0).float().mean() > 0.6 and x.mean() < 0.2
    assert x[..., 0, :].mean() < 0.01 and x[..., :, 0].mean() < 0.01


def test_decoded_drawings_match_the_archives(root: Path, chars: OmniglotCharacters) -> None:
    """The (possibly cached) array holds each PNG, Lanczos-resized and inverted, in order."""
    checks = [(BACKGROUND, 0, "images_background/Alphabet_of_the_Magi/character01/0709_01.png", 0),
              (EVALUATION, 964, "images_evaluation/Angelic/character01/0965_01.png", 0),
              (EVALUATION, 1622, "images_evaluation/ULOG/character26/1623_20.png", 19)]
    for archive, character, entry, drawing in checks:
        with zipfile.ZipFile(root / archive) as z, Image.open(io.BytesIO(z.read(entry))) as im:
            assert im.mode == "1" and im.size == (105, 105)
            expected = 255 - np.asarray(im.convert("L").resize((28, 28), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(chars.images[character, drawing], expected)


def test_cached_load_reads_the_file_and_is_equal(
    root: Path, cache_dir: Path, chars: OmniglotCharacters, monkeypatch: pytest.MonkeyPatch
) -> None:
    (file,) = cache_dir.glob("omniglot-v*-28px-5e40902b4b72-bcc0b44a73cc.npz")
    monkeypatch.setattr(om, "_MEMO", {})
    monkeypatch.setattr(om, "_decode", lambda *a: pytest.fail("decoded although the cache file exists"))
    again = load_omniglot(root, cache=cache_dir)
    assert again is not chars
    np.testing.assert_array_equal(again.images, chars.images)
    assert again.alphabets == chars.alphabets and again.names == chars.names
    assert sorted(p.name for p in root.iterdir()) == ["LICENSE", "README.md", BACKGROUND, EVALUATION]
    assert not list(cache_dir.glob(".*.part")), "no temporary file is left behind"
    assert file.is_file()


def test_unusable_cache_file_is_rebuilt(
    root: Path, tmp_path: Path, chars: OmniglotCharacters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged cache file warns and is replaced; decoding is stood in for by the real array."""
    bg = chars.background
    parts = {
        BACKGROUND: OmniglotCharacters(chars.images[bg], chars.alphabets[:964], chars.names[:964], bg[bg]),
        EVALUATION: OmniglotCharacters(chars.images[~bg], chars.alphabets[964:], chars.names[964:], bg[~bg]),
    }
    monkeypatch.setattr(om, "_MEMO", {})
    monkeypatch.setattr(om, "_decode", lambda path, size: parts[path.name])
    bad = tmp_path / "omniglot-v1-28px-5e40902b4b72-bcc0b44a73cc.npz"
    bad.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="ignoring the unusable Omniglot cache"):
        rebuilt = load_omniglot(root, cache=tmp_path)
    np.testing.assert_array_equal(rebuilt.images, chars.images)
    with np.load(bad) as data:
        np.testing.assert_array_equal(data["images"], chars.images)


def test_objects_and_splits_share_the_decoded_array(root: Path, cache_dir: Path, family: Omniglot) -> None:
    other = Omniglot(root, split="test", ways=20, shots=5, queries=5, cache=cache_dir)
    assert other.x.data_ptr() == family.x.data_ptr()
    val = family.split("val")
    assert isinstance(val, Omniglot) and val.x is family.x and val.split_name == "val"
    assert (val.ways, val.shots, val.queries, val.rotations) == (5, 1, 15, 4)


# --- splits -----------------------------------------------------------------------------


def test_vinyals_split_sizes_and_disjointness(family: Omniglot) -> None:
    parts = {name: family.split(name) for name in ("train", "val", "test")}
    assert {n: f.num_characters for n, f in parts.items()} == {"train": 1100, "val": 100, "test": 423}
    assert {n: f.num_classes for n, f in parts.items()} == {"train": 4400, "val": 400, "test": 1692}
    sets = {n: set(f.labels) for n, f in parts.items()}
    assert sets["train"].isdisjoint(sets["val"]) and sets["train"].isdisjoint(sets["test"])
    assert sets["val"].isdisjoint(sets["test"])
    assert sets["train"] | sets["val"] | sets["test"] == set(range(1623))


def test_vinyals_split_is_pinned(family: Omniglot) -> None:
    """The split comes from a seeded torch permutation; if torch ever changes it, say so."""
    digests = {
        "val": "b87c7f57951afe4755dc667f46acc24a07ae8fdbb94ed518e7d58b28b73283c1",
        "test": "5d415ccd077bc7a586e7b8624721d17769d12b0f2adf74a80a5dc859f95e2776",
    }
    for name, digest in digests.items():
        names = family.split(name).character_names()
        assert hashlib.sha256("\n".join(names).encode()).hexdigest() == digest, (
            f"the vinyals {name} split changed (first characters now {names[:3]}): results are no "
            "longer comparable with earlier runs"
        )


def test_lake_split(root: Path, cache_dir: Path) -> None:
    train = Omniglot(root, protocol="lake", rotations=1, cache=cache_dir)
    val, test = train.split("val"), train.split("test")
    assert (train.num_characters, val.num_characters, test.num_characters) == (897, 67, 659)
    assert train.num_classes == 897
    bg = train.data.background
    assert all(bg[i] for i in train.labels + val.labels) and not any(bg[i] for i in test.labels)
    alphabets = {n: {train.data.alphabets[i] for i in f.labels} for n, f in [("train", train), ("val", val)]}
    assert alphabets["val"] == {"Grantha", "Greek"} and alphabets["train"].isdisjoint(alphabets["val"])


def test_bad_protocol_and_split_names(root: Path, cache_dir: Path, family: Omniglot) -> None:
    with pytest.raises(ValueError, match="unknown protocol 'lak'"):
        Omniglot(root, protocol="lak", cache=cache_dir)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="use 'train', 'val' or 'test'"):
        family.split("evaluation")


# --- episodes ---------------------------------------------------------------------------


def test_five_way_one_shot_batch(family: Omniglot, drawing_index: dict) -> None:
    tasks = 8
    batch = family.sample(tasks, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (tasks, 5, 1, 28, 28) and batch.x_query.shape == (tasks, 75, 1, 28, 28)
    assert batch.y_support.shape == (tasks, 5) and batch.y_query.shape == (tasks, 75)
    assert batch.y_support.dtype == torch.int64 and batch.x_support.dtype == torch.float32
    assert family.output_size == 5  # the int64 labels make it classification (modmeta.losses)
    train = set(family.labels)
    turns = set()
    for t in range(tasks):
        assert sorted(batch.y_support[t].tolist()) == [0, 1, 2, 3, 4]
        assert torch.bincount(batch.y_query[t], minlength=5).tolist() == [15] * 5
        classes = []
        for w in range(5):
            images = [batch.x_support[t, i] for i in torch.nonzero(batch.y_support[t] == w).flatten()]
            images += [batch.x_query[t, i] for i in torch.nonzero(batch.y_query[t] == w).flatten()]
            common = set.intersection(*(identify(img, drawing_index) for img in images))
            assert common, "support and query images of one label come from one (rotated) character"
            assert any(c in train for c, _ in common), "episodes of the train split use train characters"
            classes.append(common)
            turns |= {k for _, k in common}
        assert all(a.isdisjoint(b) for i, a in enumerate(classes) for b in classes[i + 1:])
    assert turns - {0}, "rotations=4 shows rotated characters"


def test_same_seed_same_batch(family: Omniglot) -> None:
    a = family.sample(4, torch.Generator().manual_seed(123))
    b = family.sample(4, torch.Generator().manual_seed(123))
    c = family.sample(4, torch.Generator().manual_seed(124))
    assert all(torch.equal(p, q) for p, q in zip(a.tensors(), b.tensors(), strict=True))
    assert not torch.equal(a.x_support, c.x_support)


def test_unrotated_episodes_show_upright_characters(root: Path, cache_dir: Path, drawing_index: dict) -> None:
    upright = Omniglot(root, split="test", rotations=1, cache=cache_dir)
    assert upright.num_classes == 423
    batch = upright.sample(4, torch.Generator().manual_seed(0))
    for img in batch.x_query.flatten(0, 1):
        assert any(k == 0 and c in set(upright.labels) for c, k in identify(img, drawing_index))


# --- verification -----------------------------------------------------------------------


def test_verification_accepts_the_shared_copies(root: Path) -> None:
    digests = verify_omniglot(root)
    assert {name: d.sha256 for name, d in digests.items()} == SHARED_SHA256
    assert digests[BACKGROUND].size == 8_556_666


def copy_pair(root: Path, dest: Path, broken: bytes) -> Path:
    """A folder with the evaluation archive intact and ``broken`` as the background one."""
    dest.mkdir(exist_ok=True)
    shutil.copyfile(root / EVALUATION, dest / EVALUATION)
    (dest / BACKGROUND).write_bytes(broken)
    return dest / BACKGROUND


def test_refuses_a_truncated_copy(root: Path, tmp_path: Path) -> None:
    data = (root / BACKGROUND).read_bytes()
    path = copy_pair(root, tmp_path, data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError) as e:
        verify_omniglot(tmp_path)
    message = str(e.value)
    assert e.value.problem.startswith("truncated") and str(path) in message
    assert "4,278,333 bytes of the expected 8,556,666" in message
    assert f"sha256 {SHARED_SHA256[BACKGROUND]}" in message and "MD5 68d2efa1b9178cc56df9314c21c6e718" in message
    assert f"Fetch {om.OMNIGLOT_URL}{BACKGROUND} and save it as {path}" in message
    assert "download=True" in message
    assert isinstance(e.value, ValueError)


def test_refuses_an_html_page_saved_as_zip(root: Path, tmp_path: Path) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Page not found</title></head><body>404</body></html>\n"
    path = copy_pair(root, tmp_path, page)
    with pytest.raises(CorruptArchiveError, match=r"an HTML page titled 'Page not found', not an archive") as e:
        verify_omniglot(tmp_path)
    assert str(path) in str(e.value) and f"{len(page):,} bytes" in str(e.value)


def test_refuses_a_foreign_zip_and_a_non_zip(root: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes/readme.txt", "not omniglot")
    copy_pair(root, tmp_path, buffer.getvalue())
    foreign = r"a zip archive of something else: a checksum mismatch.*'notes/readme.txt'"
    with pytest.raises(CorruptArchiveError, match=foreign):
        verify_omniglot(tmp_path)
    (tmp_path / BACKGROUND).write_bytes(b"\x1f\x8b\x08\x00 gzip, not zip")
    with pytest.raises(CorruptArchiveError, match=r"not a zip archive \(it starts with b'\\x1f\\x8b"):
        verify_omniglot(tmp_path)
    (tmp_path / BACKGROUND).write_bytes(b"")
    with pytest.raises(CorruptArchiveError, match=r"empty \(0 bytes\)"):
        verify_omniglot(tmp_path)


def test_missing_archive_says_what_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        Omniglot(tmp_path / "nowhere")
    message = str(e.value)
    assert f"{om.OMNIGLOT_URL}{BACKGROUND}" in message and str(tmp_path / "nowhere" / BACKGROUND) in message
    assert "pass download=True" in message


# --- downloads --------------------------------------------------------------------------


def test_download_from_a_file_url(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "data"
    digests = verify_omniglot(target, download=True, base_url=root.as_uri())
    assert {name: d.sha256 for name, d in digests.items()} == SHARED_SHA256
    assert sorted(p.name for p in target.iterdir()) == [BACKGROUND, EVALUATION]
    assert digest_file(target / BACKGROUND).sha256 == SHARED_SHA256[BACKGROUND]


def test_download_over_loopback_http(root: Path, tmp_path: Path, served: tuple[str, Path]) -> None:
    url, folder = served
    shutil.copyfile(root / EVALUATION, folder / EVALUATION)
    dest = tmp_path / "got" / EVALUATION
    seen = download_url(url + EVALUATION, dest, sha256=SHARED_SHA256[EVALUATION])
    assert seen.sha256 == SHARED_SHA256[EVALUATION] and dest.stat().st_size == 5_838_819
    shutil.copyfile(root / BACKGROUND, folder / BACKGROUND)
    digests = verify_omniglot(tmp_path / "got", download=True, base_url=url)
    assert digests[BACKGROUND].sha256 == SHARED_SHA256[BACKGROUND]
    assert sorted(p.name for p in dest.parent.iterdir()) == [BACKGROUND, EVALUATION]


def test_a_bad_download_is_refused_and_removed(root: Path, tmp_path: Path, served: tuple[str, Path]) -> None:
    url, folder = served
    (folder / BACKGROUND).write_bytes(b"<html><head><title>Rate limited</title></head></html>")
    shutil.copyfile(root / EVALUATION, folder / EVALUATION)
    target = tmp_path / "data"
    with pytest.raises(CorruptArchiveError, match=r"the download of .*HTML page titled 'Rate limited'") as e:
        verify_omniglot(target, download=True, base_url=url)
    assert f"Nothing was saved at {target / BACKGROUND}" in str(e.value)
    assert f"Fetch {url}{BACKGROUND} by hand" in str(e.value)
    assert list(target.iterdir()) == [], "neither the bad file nor a partial one is left"
    data = (root / BACKGROUND).read_bytes()
    (folder / BACKGROUND).write_bytes(data[:1000])
    with pytest.raises(CorruptArchiveError, match="truncated"):
        verify_omniglot(target, download=True, base_url=url)
    assert list(target.iterdir()) == []
    with pytest.raises(DownloadError, match=r"could not download .*missing.zip.*404"):
        download_url(url + "missing.zip", target / "missing.zip", sha256=SHARED_SHA256[BACKGROUND])
    assert list(target.iterdir()) == []


def test_a_cut_connection_is_refused_and_removed(tmp_path: Path) -> None:
    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04" + bytes(6))  # 10 of the promised 1,000 bytes
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{BACKGROUND}"
        with pytest.raises(CorruptArchiveError, match="truncated: 10 of 1,000 bytes arrived"):
            download_url(url, tmp_path / BACKGROUND, sha256=SHARED_SHA256[BACKGROUND])
    finally:
        server.shutdown()
        server.server_close()
    assert list(tmp_path.iterdir()) == []


def test_download_replaces_a_corrupt_archive(root: Path, tmp_path: Path) -> None:
    path = copy_pair(root, tmp_path, b"<html>moved</html>")
    verify_omniglot(tmp_path, download=True, base_url=root.as_uri())
    assert digest_file(path).sha256 == SHARED_SHA256[BACKGROUND]


def test_download_needs_a_checksum(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ValueError, match="every download is verified"):
        download_url((root / BACKGROUND).as_uri(), tmp_path / "x.zip")
    assert list(tmp_path.iterdir()) == []


def test_omniglot_episodes_never_hold_two_rotations_of_one_character(family: Omniglot) -> None:
    # The sampler's guarantee is tested in test_labelled.py; Omniglot asks for it.
    assert family.rotated_repeats is False and family.split("test").rotated_repeats is False
    assert family.num_classes == 4 * family.num_characters


def test_alphabet_groups_share_no_alphabet_and_keep_every_split(root: Path, cache_dir: Path) -> None:
    first = Omniglot(root, cache=cache_dir, alphabets="0/2")
    second = Omniglot(root, cache=cache_dir, alphabets="1/2")
    names = first.data.alphabets
    for split in ("train", "val", "test"):
        a, b = first.split(split), second.split(split)
        groups = {names[i] for i in a.labels}, {names[i] for i in b.labels}
        assert groups[0] and groups[1] and not groups[0] & groups[1]
    assert len({names[i] for i in first.labels} | {names[i] for i in second.labels}) == 50
    ten = sorted(set(names))[:10]
    chosen = Omniglot(root, cache=cache_dir, alphabets=ten, ways=2)  # few characters: a small val split
    assert {names[i] for i in chosen.labels} == set(ten)
    with pytest.raises(ValueError, match="unknown alphabets"):
        Omniglot(root, cache=cache_dir, alphabets=["Klingon"])
    with pytest.raises(ValueError, match="give 'K/N'"):
        Omniglot(root, cache=cache_dir, alphabets="2/2")
