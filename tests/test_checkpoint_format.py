"""Checkpoints are plain ``torch.save`` files with a digest file beside them: any PyTorch user
opens them, a kill at any write leaves a readable pair, and checkpoints of the earlier format
(a header line inside the file) still load."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch

import modmeta as mm
from modmeta.train import CheckpointError, checkpoint, files


def tiny_trainer(out: Path) -> mm.Trainer:
    torch.manual_seed(0)
    tasks = mm.tasks.Sinusoid(3, 3)
    learner = mm.learners.MAML(mm.models.MLP(1, 1, (4,)), inner_lr=0.01)
    return mm.Trainer(learner, tasks, meta_batch=2, val_tasks=tasks.split("val"), val_every=2, val_episodes=2,
                      out=out, checkpoint_every=2, progress=False)


def test_a_run_checkpoint_opens_with_torch_load_weights_only(tmp_path: Path) -> None:
    tiny_trainer(tmp_path).fit(4)
    for name in ("last.pt", "previous.pt"):
        state = torch.load(tmp_path / name, weights_only=True)
        checked = checkpoint.load(tmp_path / name)
        assert state["iteration"] == checked["iteration"] == (4 if name == "last.pt" else 2)
        assert all(torch.equal(state["learner"][k], checked["learner"][k]) for k in checked["learner"])
    assert torch.equal(state["learner"]["model.head.weight"], torch.load(tmp_path / "previous.pt")["learner"]
                       ["model.head.weight"])
    assert (tmp_path / "last.pt.sha256").read_text().startswith("MODMETA-CHECKPOINT 2 sha256=")


def old_format(state: dict, path: Path) -> None:
    """``state`` written as modmeta wrote checkpoints before the digest file: one header line
    with the SHA-256 and size of the ``torch.save`` bytes that follow it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = f"MODMETA-CHECKPOINT 1 sha256={hashlib.sha256(payload).hexdigest()} size={len(payload)}\n"
    path.write_bytes(header.encode() + payload)


def test_checkpoints_of_the_earlier_format_load_rotate_and_are_checked(tmp_path: Path) -> None:
    old_format({"iteration": 7, "x": torch.arange(3)}, tmp_path / "last.pt")
    assert checkpoint.load(tmp_path / "last.pt")["iteration"] == 7
    checkpoint.save_rotating({"iteration": 8}, tmp_path)  # an old run resumed: its last.pt becomes previous.pt
    assert checkpoint.load(tmp_path / "previous.pt")["iteration"] == 7
    assert not (tmp_path / "previous.pt.sha256").exists()
    assert checkpoint.latest(tmp_path)[1]["iteration"] == 8
    data = (tmp_path / "previous.pt").read_bytes()
    (tmp_path / "previous.pt").write_bytes(data[:-20])
    with pytest.raises(CheckpointError, match=r"previous.pt is truncated: it holds \d+ of its \d+ bytes"):
        checkpoint.load(tmp_path / "previous.pt")
    (tmp_path / "previous.pt").write_bytes(data[:-1] + b"x")
    with pytest.raises(CheckpointError, match="previous.pt is corrupt: its contents do not match the digest its header"):
        checkpoint.load(tmp_path / "previous.pt")


def test_a_run_of_the_earlier_format_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    whole = tiny_trainer(tmp_path / "whole").fit(6)
    tiny_trainer(tmp_path / "old").fit(4)
    for name in ("last.pt", "previous.pt", "best.pt"):  # rewrite the run as the earlier modmeta wrote it
        path = tmp_path / "old" / name
        old_format(checkpoint.load(path), path)
        checkpoint.digest_path(path).unlink()
    resumed = tiny_trainer(tmp_path / "old").fit(6, resume=True)
    assert all(torch.equal(v, resumed.learner.state_dict()[k]) for k, v in whole.learner.state_dict().items())
    assert torch.load(tmp_path / "old" / "last.pt", weights_only=True)["iteration"] == 6
    assert checkpoint.load(tmp_path / "old" / "previous.pt")["iteration"] == 4
    assert (tmp_path / "old" / "previous.pt").read_bytes().startswith(b"MODMETA-CHECKPOINT 1 ")  # rotated as it was


def test_a_damaged_digest_file_is_reported_by_name(tmp_path: Path) -> None:
    checkpoint.save({"iteration": 1}, tmp_path / "best.pt")
    (tmp_path / "best.pt.sha256").write_text("sha256 of nothing\n")
    with pytest.raises(CheckpointError, match=r"best.pt.sha256 has a damaged digest line"):
        checkpoint.load(tmp_path / "best.pt")


class Killed(Exception):
    """Stands for a kill: raised in place of the n-th whole-file write."""


def interrupted(monkeypatch: pytest.MonkeyPatch, n: int, write: callable) -> bool:
    """Run ``write()`` with its ``n``-th ``files.write_atomic`` cut off (the file is then left
    as it was, as a kill leaves it); False when ``write`` made fewer than ``n`` writes."""
    calls = 0
    real = files.write_atomic

    def cut(path, data):
        nonlocal calls
        calls += 1
        if calls == n:
            raise Killed
        real(path, data)

    monkeypatch.setattr(files, "write_atomic", cut)
    try:
        write()
    except Killed:
        return True
    finally:
        monkeypatch.setattr(files, "write_atomic", real)
    return False


def test_a_kill_between_any_two_writes_leaves_the_old_or_the_new_checkpoint(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    n = 1
    while True:
        folder = tmp_path / str(n)
        folder.mkdir()
        checkpoint.save_rotating({"iteration": 1}, folder)
        checkpoint.save_rotating({"iteration": 2}, folder)
        checkpoint.save({"iteration": 2}, folder / "best.pt")
        cut_rotation = interrupted(monkeypatch, n, lambda: checkpoint.save_rotating({"iteration": 3}, folder))
        newest = checkpoint.latest(folder)[1]["iteration"]
        assert newest == (2 if cut_rotation else 3), f"write {n}"
        if (folder / "last.pt").exists():  # what latest() did not take is whole or absent, never taken silently
            assert checkpoint.load(folder / "last.pt")["iteration"] == newest
        cut_best = interrupted(monkeypatch, n, lambda: checkpoint.save({"iteration": 3}, folder / "best.pt"))
        # the third write of a save only drops the old digest line: the new file is in place
        assert checkpoint.load(folder / "best.pt")["iteration"] == (2 if cut_best and n < 3 else 3), f"write {n}"
        if not (cut_rotation or cut_best):
            break
        n += 1
    assert n == 4  # the rotation makes 3 writes, the best 3
