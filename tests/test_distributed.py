"""Distributed meta-training (issue 14): 2 processes on loopback (gloo) equal 1 process.

One group of 2 processes is spawned once for the module (spawning is slow): it trains every
case below (MAML on sines and on a tiny conv net, Reptile, BounceGrad, Meta-PCGrad, ProtoNet,
learned inner rates, σ-iMAML's implicit gradients of a prior) for 20 iterations, resumes a run a single process started, and checks that a learner
computing its meta-gradient by itself is refused. The tests compare what it wrote with
single-process runs of the same configs, in float64 so the tolerance can be tight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import modmeta as mm
from modmeta import config, distributed
from modmeta.cli import main
from modmeta.train import checkpoint

ITERATIONS = 20
TRAIN = {"iterations": ITERATIONS, "meta_batch": 5, "optimizer": "adam", "lr": 0.01, "seed": 0, "val_every": 0,
         "checkpoint_every": 10, "log_every": 5}  # meta-batch 5: shares of 3 and 2 tasks
SGD = {**TRAIN, "optimizer": "sgd", "lr": 0.1}
SINUSOID = {"name": "sinusoid", "shots": 5, "queries": 5}
MLP = {"name": "mlp", "hidden": [16, 16]}


def cases(folder: Path) -> dict[str, dict[str, Any]]:
    """Each learner's config (plain data); the image cases read ``folder/images.npz``.

    The conv nets train with SGD, not Adam: a convolution's bias before a batch norm has a
    meta-gradient of zero up to rounding, which Adam's normalisation would turn into full
    steps whose signs depend on the summation order. They name their execution: under "auto"
    each run times vmap against the loop, and on these tiny nets the two are close enough that
    busy cores can make the two runs keep different ones (both exact, logged differently)."""
    images = {"name": "npz", "path": str(folder / "images.npz"), "ways": 3, "shots": 1, "queries": 2}
    conv = {"name": "conv4", "hidden": 4}
    return {
        "maml-sinusoid": {"tasks": SINUSOID, "model": MLP, "learner": {"name": "maml", "inner_lr": 0.01}},
        "maml-conv": {"tasks": images, "model": conv, "learner": {"name": "maml", "inner_lr": 0.4, "execution": "loop"},
                      "train": SGD},
        "reptile": {"tasks": SINUSOID, "model": MLP, "learner": {"name": "reptile", "inner_steps": 3}},
        "bouncegrad": {"tasks": {"name": "sines", "shots": 8, "queries": 8, "train_tasks": 12},
                       "model": {"name": "modular", "modules": [[3, [8]], [3, [8]]], "slots": 2},
                       "learner": {"name": "bouncegrad", "anneal_iterations": ITERATIONS}},
        "pcgrad": {"tasks": SINUSOID, "model": MLP,
                   "learner": {"name": "maml", "inner_lr": 0.01, "aggregate": {"name": "pcgrad"}}},
        "protonet": {"tasks": images, "model": {**conv, "out": None}, "learner": {"name": "protonet", "execution": "loop"},
                     "train": SGD},
        "lslr": {"tasks": SINUSOID, "model": MLP, "learner": {"name": "lslr", "inner_lr": 0.01, "inner_steps": 2}},
        "sigma-imaml": {"tasks": SINUSOID, "model": MLP,
                        "learner": {"name": "sigma-imaml", "inner_lr": 0.01, "inner_steps": 5, "cg_steps": 3}},
    }


def trainer(folder: Path, name: str, out: Path, in_group: bool = False) -> mm.Trainer:
    """A trainer of case ``name`` in float64, writing into ``out``."""
    cfg = config.parse({"train": TRAIN, **cases(folder)[name], "dtype": "float64"}, source=name)
    return config.trainer(config.build(cfg), out, progress=False, distributed=in_group)


class OwnBackward(mm.learners.MAML):
    """A learner whose meta-gradient bypasses modmeta.meta.aggregate.backward."""

    def meta_backward(self, batch: mm.tasks.TaskBatch) -> dict[str, float]:
        return {"loss": 0.0, "metric": 0.0}


def group(folder: Path) -> None:
    """One process of the spawned group: train every case, resume the single-process run in
    ``folder/resumed``, try a learner that cannot split; each rank saves what it ends with."""
    rank = distributed.environment().rank
    with distributed.joined(torch.device("cpu")):
        for name in cases(folder):
            fitted = trainer(folder, name, folder / name, in_group=True).fit(ITERATIONS)
            torch.save(fitted.learner.state_dict(), folder / f"{name}-{rank}.pt")
        resumed = trainer(folder, "maml-sinusoid", folder / "resumed", in_group=True).fit(ITERATIONS, resume=True)
        torch.save(resumed.learner.state_dict(), folder / f"resumed-{rank}.pt")
        tasks = mm.tasks.Sinusoid(shots=5, queries=5)
        try:
            mm.Trainer(OwnBackward(mm.models.MLP(1, 1, hidden=(4,))), tasks, meta_batch=4, progress=False,
                       distributed=True).fit(1)
        except TypeError as e:
            (folder / f"refused-{rank}.txt").write_text(str(e))


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the 2-process group's results (started once for the module)."""
    folder = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 4)  # 6 classes of 4 16x16 images, each class a bright row
    x = rng.integers(0, 80, size=(24, 1, 16, 16), dtype=np.uint8)
    x[np.arange(24), 0, 2 * y + 2] = 255
    np.savez(folder / "images.npz", x=x, y=y)
    trainer(folder, "maml-sinusoid", folder / "resumed").fit(ITERATIONS // 2)  # the first half, one process
    distributed.launch(group, 2, folder)
    return folder


def assert_same_state(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-12, msg=key)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", list(cases(Path("."))))
def test_two_processes_train_as_one(spawned: Path, name: str, tmp_path: Path) -> None:
    one = trainer(spawned, name, tmp_path / name).fit(ITERATIONS)
    want = one.learner.state_dict()
    first, second = torch.load(spawned / f"{name}-0.pt"), torch.load(spawned / f"{name}-1.pt")
    for key in want:  # the ranks hold the same parameters, bit for bit
        assert torch.equal(first[key], second[key]), key
    assert_same_state(first, want)
    moved = trainer(spawned, name, None).learner.state_dict()
    assert any(not torch.equal(moved[k], want[k]) for k in want)  # the runs did train
    got, expected = records(spawned / name / "metrics.jsonl"), records(tmp_path / name / "metrics.jsonl")
    assert [r["iteration"] for r in got] == [r["iteration"] for r in expected] == [5, 10, 15, 20]
    for a, b in zip(got, expected):  # logged over the whole meta-batch, not rank 0's share
        assert a.keys() == b.keys()
        for key, value in b.items():
            assert a[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key
    assert_same_state(checkpoint.load(spawned / name / "last.pt")["learner"],
                      checkpoint.load(tmp_path / name / "last.pt")["learner"])


def test_run_started_with_one_process_resumes_with_two(spawned: Path, tmp_path: Path) -> None:
    whole = trainer(spawned, "maml-sinusoid", tmp_path / "whole").fit(ITERATIONS)
    assert_same_state(torch.load(spawned / "resumed-1.pt"), whole.learner.state_dict())
    assert_same_state(checkpoint.load(spawned / "resumed" / "last.pt")["learner"], whole.learner.state_dict())
    assert (spawned / "resumed" / "metrics.jsonl").read_text().count("\n") == 4


def test_a_learner_that_cannot_split_its_meta_gradient_is_refused(spawned: Path) -> None:
    for rank in (0, 1):
        message = (spawned / f"refused-{rank}.txt").read_text()
        assert message.startswith("OwnBackward computes its meta-gradient outside modmeta.meta.aggregate.backward")


def test_shares_are_contiguous_and_differ_by_at_most_one() -> None:
    for world in (1, 2, 3, 4):
        for tasks in range(world, 12):
            bounds = [distributed.Split(r, world).bounds(tasks) for r in range(world)]
            assert [b[0] for b in bounds] == [0] + [b[1] for b in bounds[:-1]] and bounds[-1][1] == tasks
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_distributed_needs_a_process_group_and_a_task_per_process() -> None:
    learner, tasks = mm.learners.MAML(mm.models.MLP(1, 1, hidden=(4,))), mm.tasks.Sinusoid()
    with pytest.raises(ValueError, match="distributed=True needs torch.distributed's default process group"):
        mm.Trainer(learner, tasks, distributed=True)
    config_file = Path(__file__).parents[1] / "configs" / "sinusoid-maml.yaml"
    assert main(["train", str(config_file), "--out", "unused", "--nproc", "0"]) == 1


def leave_or_fail(failing_rank: int) -> None:
    """A spawned process: join the group, all-reduce once, and leave; ``failing_rank`` raises
    inside the group instead (-1: none does)."""
    with distributed.joined(torch.device("cpu")):
        torch.distributed.all_reduce(torch.ones(3))
        if distributed.environment().rank == failing_rank:
            raise RuntimeError("rank gave up")


@pytest.mark.parametrize("failing", [0, 1])
def test_the_error_a_rank_raises_inside_the_group_is_reported_not_the_closed_connection_after_it(failing: int) -> None:
    started = time.monotonic()
    with pytest.raises(distributed.WorkerFailed, match=f"process {failing} of 2 failed: RuntimeError: rank gave up"):
        distributed.launch(leave_or_fail, 2, failing)  # the other rank waits at the barrier for it, then fails
    assert time.monotonic() - started < 30


def test_the_report_prefers_an_outside_signal_then_the_first_error_then_an_abort(tmp_path: Path) -> None:
    def ended(*codes: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(exitcode=c) for c in codes]

    (tmp_path / "0").write_text("20 RuntimeError: Connection closed by peer")
    (tmp_path / "2").write_text("10 RuntimeError: rank gave up")
    cause = distributed._failure(ended(1, -int(signal.SIGABRT), 1), tmp_path)  # gloo aborted rank 1 after 2 left
    assert cause == "process 2 of 3 failed: RuntimeError: rank gave up; the others were stopped"
    cause = distributed._failure(ended(1, -int(signal.SIGKILL), 1), tmp_path)
    assert cause == "process 1 of 3 was killed by SIGKILL; the others were stopped"
    assert distributed._failure(ended(0, -int(signal.SIGABRT)), tmp_path / "none").startswith(
        "process 1 of 2 was killed by SIGABRT")


def test_ranks_leave_the_group_together() -> None:
    distributed.launch(leave_or_fail, 2, -1)


def test_killed_process_stops_the_run_which_resumes_with_one_process(tmp_path: Path) -> None:
    cfg = {"tasks": {"name": "sinusoid", "shots": 10, "queries": 10}, "model": {"name": "mlp", "hidden": [8]},
           "learner": {"name": "maml", "inner_lr": 0.01}, "dtype": "float64",
           "train": {**TRAIN, "iterations": 200, "meta_batch": 10, "checkpoint_every": 10, "log_every": 20}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    command = [sys.executable, "-m", "modmeta.cli", "train", str(tmp_path / "run.yaml"), "--quiet", "--out"]
    victim = subprocess.Popen([*command, str(tmp_path / "killed"), "--nproc", "2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / "last.pt").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = [pid for pid in _children(victim.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2, "the run ended before a process could be killed"
    os.kill(max(workers), signal.SIGKILL)  # the later started: rank 1
    killed_at = time.monotonic()
    assert victim.wait(timeout=60) == 1
    assert time.monotonic() - killed_at < 30
    said = [line for line in victim.stderr.read().splitlines() if line.startswith("modmeta")]
    assert said == ["modmeta: error: process 1 of 2 was killed by SIGKILL; the others were stopped"]
    stopped_at = checkpoint.load(tmp_path / "killed" / "last.pt")["iteration"]
    assert 10 <= stopped_at < 200
    assert main([*command[3:], str(tmp_path / "killed"), "--resume"]) == 0
    assert main([*command[3:], str(tmp_path / "whole")]) == 0
    whole, again = checkpoint.load(tmp_path / "whole" / "last.pt"), checkpoint.load(tmp_path / "killed" / "last.pt")
    assert whole["iteration"] == again["iteration"] == 200
    assert_same_state(again["learner"], whole["learner"])
    got, want = records(tmp_path / "killed" / "metrics.jsonl"), records(tmp_path / "whole" / "metrics.jsonl")
    assert [r["iteration"] for r in got] == [r["iteration"] for r in want]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-9)


def _children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found
