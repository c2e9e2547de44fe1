"""The Trainer and its checkpoints: exact resume (even after SIGKILL), safe and checked loading,
atomic writes, divergence reports."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import modmeta as mm
from modmeta.train import CheckpointError, Diverged, checkpoint

TINY = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [8]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "train": {"iterations": 400, "meta_batch": 4, "lr": 0.003, "seed": 3, "val_every": 100,
              "val_episodes": 10, "checkpoint_every": 20, "log_every": 10},
    "eval": {"episodes": 20, "steps": 2},
}


def tiny_trainer(out: Path | None, learner_cls: type = mm.learners.MAML, **kw) -> mm.Trainer:
    torch.manual_seed(0)
    learner = learner_cls(mm.models.MLP(1, 1, (8,)), inner_lr=0.01, inner_steps=1)
    tasks = mm.tasks.Sinusoid(5, 5)
    settings = dict(meta_batch=4, lr=3e-3, seed=1, val_tasks=tasks.split("val"), val_every=5,
                    val_episodes=10, out=out, checkpoint_every=4, log_every=2, progress=False)
    return mm.Trainer(learner, tasks, **(settings | kw))


def params(learner: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Stopped(mm.learners.MAML):
    """MAML interrupted (Ctrl-C) in its 11th meta-batch."""

    calls = 0

    def meta_backward(self, batch):
        self.calls += 1
        if self.calls == 11:
            raise KeyboardInterrupt
        return super().meta_backward(batch)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    whole = tiny_trainer(tmp_path / "whole", schedule="linear").fit(18)
    with pytest.raises(KeyboardInterrupt):  # stops in iteration 11, after the checkpoint at 8 ...
        tiny_trainer(tmp_path / "cut", Stopped, schedule="linear").fit(18)
    with (tmp_path / "cut" / "metrics.jsonl").open("a") as log:
        log.write('{"iteration": 11, "split": "tra')  # ... and was killed mid-line
    resumed = tiny_trainer(tmp_path / "cut", schedule="linear").fit(18, resume=True)
    assert resumed.iteration == whole.iteration == 18
    assert_same(params(whole.learner), params(resumed.learner))
    assert_same(whole.optimizer.state_dict()["state"][0], resumed.optimizer.state_dict()["state"][0])
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "cut" / "metrics.jsonl").read_text()
    assert whole.best == resumed.best
    assert_same(checkpoint.load(tmp_path / "whole" / "best.pt")["learner"],
                checkpoint.load(tmp_path / "cut" / "best.pt")["learner"])


def carrying_reptile(model: torch.nn.Module, inner_lr: float, inner_steps: int) -> mm.learners.Reptile:
    return mm.learners.Reptile(model, inner=mm.adapt.adam(inner_lr, beta1=0.0, carry=True), inner_steps=inner_steps)


def test_a_carried_inner_state_is_checkpointed_and_resumes_exactly(tmp_path):
    whole = tiny_trainer(tmp_path / "whole", carrying_reptile).fit(12)
    tiny_trainer(tmp_path / "cut", carrying_reptile).fit(8)
    resumed = tiny_trainer(tmp_path / "cut", carrying_reptile).fit(12, resume=True)
    moments, squares, count = whole.learner.carried.state()[0]  # Adam's
    assert count.item() == 12  # one inner step per iteration
    assert any(k.startswith("carried.") for k in params(whole.learner))
    assert_same(params(whole.learner), params(resumed.learner))


def test_run_killed_with_sigkill_and_resumed_equals_uninterrupted_run(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = os.environ | {"OMP_NUM_THREADS": "1"}

    def train(out: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "modmeta.cli", "train", str(tmp_path / "tiny.yaml"),
                                 "--out", str(tmp_path / out), "--quiet", *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert train("whole").wait(timeout=120) == 0
    victim = train("killed")
    log = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while victim.poll() is None and time.monotonic() < deadline:
        lines = log.read_text().split("\n")[:-1] if log.exists() else []  # whole lines only
        if lines and json.loads(lines[-1])["iteration"] >= 130:  # past the checkpoint at 120
            os.kill(victim.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert victim.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    stopped_at = checkpoint.load(tmp_path / "killed" / "last.pt")["iteration"]
    assert 120 <= stopped_at < 400
    resumed = train("killed", "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()

    whole = checkpoint.load(tmp_path / "whole" / "last.pt")
    again = checkpoint.load(tmp_path / "killed" / "last.pt")
    assert whole["iteration"] == again["iteration"] == 400
    assert_same(whole["learner"], again["learner"])
    for name in ("metrics.jsonl", "config.yaml"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "killed" / name).read_text()
    assert_same(checkpoint.load(tmp_path / "whole" / "best.pt")["learner"],
                checkpoint.load(tmp_path / "killed" / "best.pt")["learner"])


class Payload:
    """An object whose unpickling would create a file: a stand-in for code a file could run."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path):
    target = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"learner": Payload(target)}, buffer)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(buffer.getvalue())
    checkpoint.digest_path(evil).write_text(checkpoint.digest_line(buffer.getvalue()))  # a valid digest
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        checkpoint.load(evil)
    framed = tmp_path / "framed.pt"  # the same in the earlier format: a header line with the digest
    framed.write_bytes(checkpoint.digest_line(buffer.getvalue()).replace(" 2 ", " 1 ").encode() + buffer.getvalue())
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        checkpoint.load(framed)
    bare = tmp_path / "bare.pt"
    bare.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="not a modmeta checkpoint"):
        checkpoint.load(bare)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(target), protocol=2))
    checkpoint.digest_path(raw).write_text(checkpoint.digest_line(raw.read_bytes()))
    with pytest.raises(CheckpointError):
        checkpoint.load(raw)
    assert not target.exists()


def test_truncated_or_corrupt_checkpoint_is_reported_and_the_previous_one_resumes(tmp_path, capsys):
    trainer = tiny_trainer(tmp_path).fit(8)  # checkpoints at 4 (previous.pt) and 8 (last.pt)
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last.pt is truncated: it holds \d+ of its \d+ bytes"):
        checkpoint.load(last)
    last.write_bytes(data[:-3] + bytes(b ^ 0xFF for b in data[-3:]))
    with pytest.raises(CheckpointError, match="last.pt is corrupt"):
        checkpoint.load(last)
    assert checkpoint.load(tmp_path / "previous.pt")["iteration"] == 4

    with pytest.warns(UserWarning, match="last.pt is corrupt"):  # modmeta warns through `warnings` alone
        resumed = tiny_trainer(tmp_path).fit(8, resume=True)
    assert_same(params(trainer.learner), params(resumed.learner))
    assert (tmp_path / "last.pt.damaged").exists()  # set aside, not rotated into previous.pt
    assert checkpoint.load(tmp_path / "previous.pt")["iteration"] == 4
    assert checkpoint.load(tmp_path / "last.pt")["iteration"] == 8


def test_a_crash_while_writing_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"iteration": 1, "x": torch.ones(3)}, path)

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        checkpoint.save({"iteration": 2, "x": torch.zeros(3)}, path)
    assert checkpoint.load(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]  # no temporary file left


class Exploding(mm.learners.MAML):
    """MAML whose loss turns NaN at its 7th meta-batch."""

    calls = 0

    def meta_backward(self, batch):
        self.calls += 1
        stats = super().meta_backward(batch)
        return {"loss": math.nan, "metric": math.nan} if self.calls == 7 else stats


def test_nan_loss_stops_with_the_iteration_the_cause_and_a_usable_checkpoint(tmp_path):
    trainer = tiny_trainer(tmp_path, learner_cls=Exploding)
    with pytest.raises(Diverged) as e:
        trainer.fit(20)
    message = str(e.value)
    assert "loss became nan at iteration 7" in message
    assert f"last good checkpoint: {tmp_path / 'last.pt'} at iteration 4" in message
    assert "inner_lr=0.01" in message and "lr=0.003" in message and "\n" not in message
    state = checkpoint.load(tmp_path / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["learner"].values())
    learner = mm.learners.MAML(mm.models.MLP(1, 1, (8,)), inner_lr=0.01)
    learner.load_state_dict(state["learner"])
    assert math.isfinite(mm.evaluate(learner, mm.tasks.Sinusoid(5, 5), episodes=5).mean)


def test_best_checkpoint_is_the_best_validation(tmp_path):
    trainer = tiny_trainer(tmp_path, val_every=3).fit(12)
    vals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["split"] == "val"]
    best = min(vals, key=lambda r: r["mse"])
    assert trainer.best["iteration"] == best["iteration"]
    assert checkpoint.load(tmp_path / "best.pt")["iteration"] == best["iteration"]


def test_training_into_a_used_folder_without_resume_is_refused(tmp_path):
    tiny_trainer(tmp_path).fit(4)
    with pytest.raises(FileExistsError, match="already holds a run"):
        tiny_trainer(tmp_path).fit(4)
