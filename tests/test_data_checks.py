"""User data is checked on load: arrays given to ClassificationFamily, .npz files, the Omniglot cache.

Every refusal is one line naming how many values are wrong and the first example holding one
(or the file). The Omniglot tests read the archives in ``shared/data/omniglot`` beside the
repository (their absence is a failure, not a skip) and share test_omniglot's cache folder.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from modmeta.tasks import omniglot as om
from modmeta.tasks.labelled import ClassificationFamily, split_classes
from modmeta.tasks.omniglot import OmniglotCharacters, load_omniglot

torch.set_num_threads(1)


def data(examples: int = 12, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``examples`` rows of 4 features, labels ``0 .. classes-1`` in turn."""
    x = np.arange(examples * 4, dtype=np.float32).reshape(examples, 4)
    return x, np.arange(examples) % classes


def refusal(x: object, y: object) -> str:
    """The one-line ``ValueError`` message ClassificationFamily gives for ``(x, y)``."""
    with pytest.raises(ValueError) as info:
        ClassificationFamily(x, y, ways=2, shots=1, queries=1)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- examples x ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_give_the_count_and_first_example(bad: float) -> None:
    x, y = data()
    x[3, 1] = x[3, 2] = x[7, 0] = bad
    assert refusal(x, y) == "x holds 3 non-finite values (NaN or inf); the first at example 3"
    one = torch.as_tensor(data()[0]).reshape(12, 1, 2, 2)  # images: the index is along the first axis
    one[5, 0, 1, 1] = bad
    assert refusal(one, y) == "x holds 1 non-finite value (NaN or inf); the first at example 5"


def test_x_needs_examples_by_features() -> None:
    x, y = data()
    assert refusal(x[:, 0], y).startswith("x must have at least 2 dimensions (examples × features), got shape (12,)")
    assert refusal(np.float32(1.0), y[:1]).startswith("x must have at least 2 dimensions")
    assert refusal(x[:0], y[:0]) == "the data set is empty: x of shape (0, 4) has no examples"
    assert refusal(x[:, :0], y) == "x of shape (12, 0) holds no values in its examples"
    assert refusal(x.astype("U4"), y) == "x must hold real numbers, got an array of dtype <U4"
    assert refusal(x.astype(np.complex64), y) == "x must hold real numbers, got an array of dtype complex64"


# --- labels y -----------------------------------------------------------------------------


def test_labels_must_be_one_dimensional_and_one_per_example() -> None:
    x, y = data()
    assert refusal(x, y[:, None]) == "labels y must be 1-D (one class id per example), got shape (12, 1)"
    assert refusal(x, y[:11]) == "y has 11 labels but x has 12 examples: give one per example"
    assert refusal(x, y[:1]) == "y has 1 label but x has 12 examples: give one per example"


def test_fractional_and_non_finite_labels_give_the_count_and_first_example() -> None:
    x, y = data()
    y = y.astype(np.float64)
    y[4], y[6], y[9] = 1.5, np.nan, 2.25
    assert refusal(x, y) == (
        "labels y must be integer class ids: y holds 3 non-integer labels (fractions, NaN or inf); "
        "the first at example 4 (1.5)"
    )


def test_whole_number_float_labels_are_refused_with_the_conversion() -> None:
    x, y = data()
    message = refusal(x, y.astype(np.float32))
    assert message.startswith("labels y must have an integer dtype, got torch.float32; its values are whole numbers")
    assert "y.astype(np.int64)" in message
    assert ClassificationFamily(x, y.astype(np.float32).astype(np.int64), 2, 1, 1).num_classes == 3


def test_negative_labels_give_the_count_and_first_example() -> None:
    x, y = data()
    y[[2, 5, 8, 11]] = -1  # "unlabelled" marks
    assert refusal(x, y) == "class ids must be >= 0: y holds 4 negative labels; the first at example 2 (-1)"


def test_labels_of_other_dtypes_are_refused() -> None:
    x, y = data()
    assert refusal(x, y.astype(bool)) == "labels y must be integer class ids, got dtype torch.bool"
    assert refusal(x, [str(c) for c in y]) == "y must hold real numbers, got an array of dtype <U1"
    assert refusal(x, [0, None] * 6) == "y must hold real numbers, got an array of dtype object"


def test_valid_labels_of_any_integer_dtype_or_a_list_are_accepted() -> None:
    x, y = data()
    for labels in (y.astype(np.uint8), y.astype(np.int32), torch.as_tensor(y), y.tolist()):
        family = ClassificationFamily(x, labels, ways=2, shots=1, queries=1)
        assert family.labels == [0, 1, 2] and family.num_classes == 3


def test_split_classes_checks_the_labels_too() -> None:
    with pytest.raises(ValueError, match=r"^labels y must be integer class ids: y holds 1 non-integer label .* "
                                         r"the first at example 2 \(0\.5\)$"):
        split_classes([0.0, 1.0, 0.5, 2.0])
    with pytest.raises(ValueError, match=r"^class ids must be >= 0: y holds 1 negative label; the first at example 1"):
        split_classes([3, -2, 1, 0])


# --- .npz files ---------------------------------------------------------------------------


def npz_refusal(path: Path, **keys: str) -> str:
    with pytest.raises(ValueError) as info:
        ClassificationFamily.from_npz(path, 2, 1, 1, **keys)
    message = str(info.value)
    assert "\n" not in message and "allow_pickle" not in message
    shown = None if info.value.__suppress_context__ else info.value.__context__
    assert shown is None, "numpy's advice to unpickle must not be shown as the cause"
    return message


def not_an_npz(path: Path, x_key: str = "x", y_key: str = "y") -> str:
    return (
        f"{path} is not an .npz archive (numpy cannot read it as one); "
        f"save the arrays with numpy.savez(path, {x_key}=examples, {y_key}=labels)"
    )


def test_a_file_that_is_not_an_npz_names_the_file_and_how_to_save_one(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("x,y\n1,0\n2,1\n")
    assert npz_refusal(text) == not_an_npz(text)
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    assert npz_refusal(noise) == not_an_npz(noise)
    assert npz_refusal(noise, x_key="images", y_key="targets") == not_an_npz(noise, "images", "targets")
    empty = tmp_path / "empty.npz"
    empty.touch()
    assert npz_refusal(empty) == not_an_npz(empty)
    good = tmp_path / "good.npz"
    np.savez(good, x=data()[0], y=data()[1])
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert npz_refusal(cut) == not_an_npz(cut)


def test_a_lone_npy_array_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with path.open("wb") as f:
        np.save(f, data()[0])
    assert npz_refusal(path) == (
        f"{path} holds a single .npy array, not an .npz archive of named arrays; "
        "save the arrays with numpy.savez(path, x=examples, y=labels)"
    )


def test_unreadable_arrays_in_an_npz_name_the_file_and_the_array(tmp_path: Path) -> None:
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([[1.0], None], dtype=object), y=np.arange(2))
    assert npz_refusal(objects).startswith(f"{objects}: array 'x' cannot be read: it holds Python objects")
    good = tmp_path / "good.npz"
    np.savez(good, x=data()[0], y=data()[1])
    damaged = tmp_path / "damaged.npz"
    raw = bytearray(good.read_bytes())
    raw[200] ^= 0xFF  # inside x's data: the zip's CRC no longer matches
    damaged.write_bytes(bytes(raw))
    assert npz_refusal(damaged).startswith(f"{damaged}: array 'x' is damaged (Bad CRC-32")
    foreign = tmp_path / "foreign.npz"
    with zipfile.ZipFile(foreign, "w") as z:  # a zip whose members are not .npy arrays
        z.writestr("x", "1,2,3")
        z.writestr("y", "0,1,2")
    assert npz_refusal(foreign).startswith(f"{foreign}: 'x' is not a numpy array (not in .npy format)")


def test_a_missing_array_names_the_arrays_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, images=data()[0], labels=data()[1])
    with pytest.raises(KeyError, match=re.escape(f"{path} has no array named 'x'; it holds ['images', 'labels']")):
        ClassificationFamily.from_npz(path, 2, 1, 1)
    with pytest.raises(KeyError, match=re.escape(f"{path} has no array named 'y'; it holds ['images', 'labels']")):
        ClassificationFamily.from_npz(path, 2, 1, 1, x_key="images")


def test_the_arrays_of_an_npz_are_checked_on_load(tmp_path: Path) -> None:
    x, y = data(examples=40, classes=10)
    x[17, 2] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(ValueError, match=r"^x holds 1 non-finite value \(NaN or inf\); the first at example 17$"):
        ClassificationFamily.from_npz(path, 2, 1, 1)
    x, y = data(examples=40, classes=10)
    y = y.astype(np.float64)
    y[23] = 0.5
    np.savez(path, x=x, y=y)
    with pytest.raises(ValueError, match=r"1 non-integer label .* the first at example 23 \(0\.5\)$"):
        ClassificationFamily.from_npz(path, 2, 1, 1, val=0.2)  # checked before the classes are split


# --- the Omniglot cache -------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> Path:
    """The shared Omniglot archives; their absence is a failure, not a skip."""
    path = Path(__file__).resolve().parents[2] / "shared/data/omniglot"
    missing = [name for name in om.OMNIGLOT_ARCHIVES if not (path / name).is_file()]
    if missing:
        pytest.fail(f"the Omniglot archives {missing} are missing from {path}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def decoded(root: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> OmniglotCharacters:
    """The characters, through test_omniglot's cache folder (decoded once across sessions)."""
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("modmeta-omniglot") if cache is not None else tmp_path_factory.mktemp("omniglot-cache")
    return load_omniglot(root, cache=folder)


@pytest.fixture()
def decodes(decoded: OmniglotCharacters, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand in for decoding with the decoded arrays (seconds saved); the archives it was asked for."""
    bg = decoded.background
    parts = {
        "images_background.zip": OmniglotCharacters(
            decoded.images[bg].copy(), decoded.alphabets[:964], decoded.names[:964], bg[bg]),
        "images_evaluation.zip": OmniglotCharacters(
            decoded.images[~bg].copy(), decoded.alphabets[964:], decoded.names[964:], bg[~bg]),
    }
    calls: list[str] = []

    def decode(path: Path, image_size: int) -> OmniglotCharacters:
        assert image_size == 28
        calls.append(path.name)
        return parts[path.name]

    monkeypatch.setattr(om, "_MEMO", {})
    monkeypatch.setattr(om, "_decode", decode)
    return calls


def cache_file(folder: Path) -> Path:
    return folder / f"omniglot-v{om._CACHE_FORMAT}-28px-5e40902b4b72-bcc0b44a73cc.npz"


def test_the_cache_file_holds_a_digest_of_its_arrays(
    root: Path, tmp_path: Path, decoded: OmniglotCharacters, decodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_omniglot(root, cache=tmp_path)
    with np.load(cache_file(tmp_path), allow_pickle=False) as f:
        assert sorted(f.files) == ["alphabets", "background", "digest", "images", "names"]
        assert re.fullmatch(r"[0-9a-f]{64}", str(f["digest"]))
    monkeypatch.setattr(om, "_MEMO", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_omniglot(root, cache=tmp_path)  # an intact file is read without a warning
    assert len(decodes) == 2, "the second load reads the cache instead of decoding"
    np.testing.assert_array_equal(again.images, decoded.images)


def test_a_zeroed_cache_is_noticed_and_rebuilt(
    root: Path, tmp_path: Path, decoded: OmniglotCharacters, decodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = cache_file(tmp_path)
    load_omniglot(root, cache=tmp_path)
    assert file.is_file() and len(decodes) == 2
    with np.load(file, allow_pickle=False) as f:  # a valid .npz, digest kept, every image blank
        arrays = {name: f[name] for name in f.files}
    arrays["images"] = np.zeros_like(arrays["images"])
    np.savez(file, **arrays)
    monkeypatch.setattr(om, "_MEMO", {})
    with pytest.warns(UserWarning, match=re.escape(
        f"ignoring the unusable Omniglot cache {file} (its arrays do not match the sha256 digest stored with them)"
    )):
        loaded = load_omniglot(root, cache=tmp_path)
    assert len(decodes) == 4, "the archives are decoded afresh"
    np.testing.assert_array_equal(loaded.images, decoded.images)
    assert loaded.images.any()
    with np.load(file, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["images"], decoded.images)  # the cache was rewritten
    monkeypatch.setattr(om, "_MEMO", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_omniglot(root, cache=tmp_path).images, decoded.images)
    assert len(decodes) == 4, "the rewritten cache is read"


def test_a_cache_without_a_digest_is_rebuilt(
    root: Path, tmp_path: Path, decoded: OmniglotCharacters, decodes: list[str]
) -> None:
    file = cache_file(tmp_path)
    np.savez(  # what an older modmeta wrote
        file, images=decoded.images, alphabets=np.array(decoded.alphabets),
        names=np.array(decoded.names), background=decoded.background,
    )
    with pytest.warns(UserWarning, match=re.escape(
        f"ignoring the unusable Omniglot cache {file} (it holds no digest of its arrays, so an older modmeta wrote it)"
    )):
        loaded = load_omniglot(root, cache=tmp_path)
    assert len(decodes) == 2
    np.testing.assert_array_equal(loaded.images, decoded.images)
    with np.load(file, allow_pickle=False) as f:
        assert "digest" in f.files

