"""The run folder survives every kill, a second writer and files that are not its own (issue 17)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import modmeta as mm
from modmeta import cli
from modmeta.train import Diverged, checkpoint, files

KILLER = Path(__file__).parent / "scripts" / "kill_at_write.py"
SHORT = {
    "tasks": {"name": "sinusoid", "shots": 3, "queries": 3},
    "model": {"name": "mlp", "hidden": [4]},
    "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
    "train": {"iterations": 4, "meta_batch": 2, "lr": 0.003, "seed": 5, "val_every": 2,
              "val_episodes": 2, "checkpoint_every": 2, "log_every": 1},
    "eval": {"episodes": 4, "steps": 1},
}


def write_config(tmp_path: Path, data: dict = SHORT, name: str = "short.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def killed_at(n: int, config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``modmeta train CONFIG --out OUT`` killed at its ``n``-th write (0: not killed)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(KILLER), str(n), "train", str(config), "--out", str(out),
                           "--quiet", *extra], capture_output=True, text=True, env=env, timeout=120)


def run_files(folder: Path) -> tuple[dict[str, torch.Tensor], str, str]:
    return (checkpoint.load(folder / checkpoint.LAST)["learner"], (folder / "metrics.jsonl").read_text(),
            (folder / "config.yaml").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    (params_a, log_a, config_a), (params_b, log_b, config_b) = run_files(a), run_files(b)
    assert params_a.keys() == params_b.keys()
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    assert log_a == log_b
    assert config_a == config_b
    assert not list(b.glob(files.TEMPORARY)), "temporary files of killed writes were left behind"


def test_a_kill_at_every_write_of_a_run_then_resume_ends_as_the_uninterrupted_run(tmp_path):
    config = write_config(tmp_path)
    whole = killed_at(0, config, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    writes = int(whole.stdout.split()[-1])
    assert writes >= 9  # config.yaml, 6 log lines, 2 last.pt, and best.pt
    for n in range(1, writes + 1):
        out = tmp_path / f"killed-{n}"
        victim = killed_at(n, config, out)
        assert victim.returncode == -signal.SIGKILL, f"write {n}: {victim.stderr}"
        assert cli.main(["train", str(config), "--out", str(out), "--resume", "--quiet"]) == 0, f"write {n}"
        assert_same_run(tmp_path / "whole", out)


def test_a_kill_at_each_write_of_a_resume_then_resume_again_ends_as_the_uninterrupted_run(tmp_path):
    config = write_config(tmp_path)
    assert cli.main(["train", str(config), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    for n in range(1, 4):  # the resume's first writes: metrics.jsonl cut back, then its first lines
        out = tmp_path / f"killed-{n}"
        assert killed_at(7, config, out).returncode == -signal.SIGKILL  # after the first checkpoint
        victim = killed_at(n, config, out, "--resume")
        assert victim.returncode == -signal.SIGKILL, f"write {n}: {victim.stderr}"
        assert cli.main(["train", str(config), "--out", str(out), "--resume", "--quiet"]) == 0
        assert_same_run(tmp_path / "whole", out)


def test_a_second_train_into_a_running_folder_fails_at_once_and_the_first_ends_intact(tmp_path, capsys):
    long = SHORT | {"train": SHORT["train"] | {"iterations": 400, "val_every": 0, "checkpoint_every": 100}}
    config = write_config(tmp_path, long)
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "modmeta.cli", "train", str(config), "--out", str(out), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 1
    assert cli.main(["train", str(config), "--out", str(out), "--resume", "--quiet"]) == 1
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"modmeta: error: {out} is in use by modmeta process {first.pid}: wait for it to end, "
                   f"or use another folder"] * 2
    assert first.wait(timeout=300) == 0, first.stderr.read()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, 401))
    assert checkpoint.load(out / checkpoint.LAST)["iteration"] == 400
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["iterations"] == 400


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom modmeta.train import files\n"
                               f"with files.lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(files.FolderInUse, match=f"modmeta process {holder.pid}"), files.lock(out):
        pass
    holder.kill()
    holder.wait()
    with files.lock(out), files.lock(out):  # free again, and re-entrant
        files.claim(out)
    assert (out / files.MARKER).exists()


def test_a_fresh_run_into_a_folder_of_the_users_own_files_is_refused_and_they_are_kept(tmp_path, capsys):
    config = write_config(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my notes\n")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == (f"modmeta: error: {out} holds files modmeta did not write "
                                               f"(config.yaml, metrics.jsonl): train into a new or empty folder")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.jsonl"]
    assert (out / "config.yaml").read_text() == "my notes\n"
    assert (out / "metrics.jsonl").read_text() == '{"mine": 1}\n'


def test_a_run_killed_before_its_first_checkpoint_can_be_trained_again_from_scratch(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert killed_at(3, config, out).returncode == -signal.SIGKILL
    assert not checkpoint.holds_run(out)
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    assert cli.main(["train", str(config), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    assert_same_run(tmp_path / "whole", out)


def test_a_checkpoint_of_another_run_is_refused_by_eval_and_resume(tmp_path, capsys):
    config = write_config(tmp_path)
    other = write_config(tmp_path, SHORT | {"learner": SHORT["learner"] | {"name": "fomaml"}}, "other.yaml")
    assert cli.main(["train", str(config), "--out", str(tmp_path / "maml"), "--quiet"]) == 0
    assert cli.main(["train", str(other), "--out", str(tmp_path / "fomaml"), "--quiet"]) == 0
    capsys.readouterr()
    for file in ("best.pt", "best.pt.sha256"):  # a checkpoint and its digest file
        shutil.copy(tmp_path / "fomaml" / file, tmp_path / "maml" / file)
    assert cli.main(["eval", str(tmp_path / "maml")]) == 1
    err = capsys.readouterr().err
    assert "best.pt was written by another run: its config differs from" in err
    assert "learner.name: 'fomaml' -> 'maml'" in err and len(err.strip().splitlines()) == 1
    for file in ("last.pt", "last.pt.sha256"):  # a checkpoint and its digest file
        shutil.copy(tmp_path / "fomaml" / file, tmp_path / "maml" / file)
    assert cli.main(["train", str(config), "--out", str(tmp_path / "maml"), "--resume", "--quiet"]) == 1
    assert "last.pt was written by another run" in capsys.readouterr().err


def test_eval_falls_back_to_the_newest_good_checkpoint_when_best_is_damaged(tmp_path, capsys):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    best = out / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["checkpoint"] == str(out / "last.pt")
    assert "modmeta: warning:" in captured.err and "best.pt is truncated" in captured.err
    assert "using the newest good checkpoint instead" in captured.err
    # resuming the finished run sets the damaged file aside, and eval then says nothing
    assert cli.main(["train", str(config), "--out", str(out), "--resume", "--quiet"]) == 0
    assert not best.exists() and (out / "best.pt.damaged").exists()
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--json"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_temporary_files_of_killed_writes_are_removed_on_the_next_start(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert killed_at(6, config, out).returncode == -signal.SIGKILL
    (out / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    (out / ".metrics.jsonl.a1b2c3.tmp").write_text('{"iteration": 1')
    assert len(list(out.glob(files.TEMPORARY))) >= 2
    assert cli.main(["train", str(config), "--out", str(out), "--resume", "--quiet"]) == 0
    assert not list(out.glob(files.TEMPORARY))


def test_a_full_disk_is_reported_with_the_file_it_could_not_write(tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        files.write_atomic(tmp_path / "config.yaml", "a: 1\n")
    assert str(e.value) == f"[Errno 28] No space left on device: '{tmp_path / 'config.yaml'}'"
    assert list(tmp_path.iterdir()) == []


class Growing(mm.learners.MAML):
    """MAML whose reported loss grows tenfold every iteration after the fourth."""

    calls = 0

    def meta_backward(self, batch):
        self.calls += 1
        stats = super().meta_backward(batch)
        return stats | {"loss": stats["loss"] * 10.0 ** max(self.calls - 4, 0)}


def growing_trainer(**kw) -> mm.Trainer:
    torch.manual_seed(0)
    learner = Growing(mm.models.MLP(1, 1, (8,)), inner_lr=0.01)
    return mm.Trainer(learner, mm.tasks.Sinusoid(5, 5), meta_batch=2, log_every=1, progress=False, **kw)


def test_a_loss_that_grows_without_bound_but_stays_finite_stops_the_run():
    with pytest.raises(Diverged, match=r"the loss grew to \S+, over 1000 times the lowest logged loss") as e:
        growing_trainer(max_loss_growth=1e3).fit(50)
    assert "at iteration 7 " in str(e.value)  # the first loss a thousand times the lowest
    with pytest.raises(Diverged, match=r"past train.max_loss=100 at iteration"):
        growing_trainer(max_loss=100).fit(50)
    assert growing_trainer(max_loss_growth=None).fit(12).iteration == 12
    with pytest.raises(ValueError, match="max_loss must be > 0"):
        growing_trainer(max_loss=0)


def test_a_divergence_caused_by_non_finite_data_names_the_data():
    tasks = mm.tasks.Sinusoid(5, 5)
    sample = tasks.sample

    def poisoned(n, generator):
        batch = sample(n, generator)
        x = batch.x_query.clone()
        x[0, 0] = float("nan")
        return mm.tasks.TaskBatch(batch.x_support, batch.y_support, x, batch.y_query)

    tasks.sample = poisoned
    learner = mm.learners.MAML(mm.models.MLP(1, 1, (8,)), inner_lr=0.01)
    with pytest.raises(Diverged) as e:
        mm.Trainer(learner, tasks, meta_batch=2, progress=False).fit(3)
    assert str(e.value).startswith("the loss is not finite because the task data are not: x_query holds 1 "
                                   "non-finite values")
    assert "learning rate" not in str(e.value)


def test_resuming_to_fewer_iterations_than_the_run_has_is_refused(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    trainer = mm.Trainer(mm.learners.MAML(mm.models.MLP(1, 1, (4,)), inner_lr=0.01), mm.tasks.Sinusoid(3, 3),
                         meta_batch=2, out=out, progress=False)
    with pytest.raises(ValueError, match="already at iteration 4, past the 2 asked for"):
        trainer.fit(2, resume=True)
