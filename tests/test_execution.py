"""execution="auto": chosen by timing both executions on the first meta-iterations (issue 12)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import modmeta as mm
from modmeta.meta.execution import Choice


def fake_step(slow: str, calls: list[str], seconds: float = 0.1):
    """A meta-iteration that records its execution and takes ``seconds`` longer with ``slow``."""

    def step(execution: str) -> str:
        calls.append(execution)
        if execution == slow:
            time.sleep(seconds)
        return execution

    return step


@pytest.mark.parametrize("model, guess, other", [(mm.models.MLP(1, 1, (4,)), "vmap", "loop"),
                                                 (mm.models.Conv4(2, hidden=2, image_size=16), "loop", "vmap")])
@pytest.mark.parametrize("slow", ["vmap", "loop"])
def test_auto_times_both_after_a_warm_up_and_keeps_the_faster(model, guess, other, slow):
    choice, calls = Choice("auto", model), []
    step = fake_step(slow, calls)
    for _ in range(5):
        choice.run(step)
    fast = "loop" if slow == "vmap" else "vmap"
    assert calls == [guess, other, guess, fast, fast]
    assert choice.current == fast
    assert choice.seconds[slow] > choice.seconds[fast] + 0.09


def test_auto_keeps_its_guess_unless_the_other_is_clearly_faster_on_a_long_enough_iteration():
    model = mm.models.MLP(1, 1, (4,))  # guess: vmap
    for slow, seconds, chosen in [("vmap", 0.02, "vmap"),  # too short an iteration to tell
                                  ("vmap", 0.1, "loop")]:
        choice = Choice("auto", model)
        for _ in range(3):
            choice.run(fake_step(slow, [], seconds))
        assert choice.current == chosen, (slow, seconds, choice.seconds)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_a_fixed_execution_is_never_timed_or_changed(execution):
    choice, calls = Choice(execution, mm.models.MLP(1, 1, (4,))), []
    for _ in range(4):
        choice.run(fake_step(execution, calls))
    assert calls == [execution] * 4 and choice.current == execution and not choice.seconds


def test_the_choice_is_logged_and_survives_a_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    tasks = mm.tasks.Sinusoid(5, 5)

    def trainer(out: Path) -> mm.Trainer:
        learner = mm.learners.MAML(mm.models.MLP(1, 1, (8,)), inner_lr=0.01)
        return mm.Trainer(learner, tasks, meta_batch=4, lr=1e-3, seed=1, out=out, log_every=1,
                          checkpoint_every=2, progress=False)

    first = trainer(tmp_path / "run").fit(2)
    plan = first.learner.choice.state()
    assert plan["plan"] == [["vmap", True]]  # one timed iteration left
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["execution"] for r in records] == ["vmap", "vmap"]
    resumed = trainer(tmp_path / "run").fit(4, resume=True)  # resumes at iteration 2 with the plan of the first run
    assert not resumed.learner.choice.state()["plan"]
    assert set(resumed.learner.choice.seconds) == {"vmap", "loop"}


class DataDependent(torch.nn.Module):
    """A model vmap cannot batch (a boolean mask has a data-dependent shape) but the loop runs."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) + 0 * x[x > 1e9].sum()


def test_auto_keeps_the_loop_when_vmap_cannot_run_the_model():
    tasks = mm.tasks.Sinusoid(shots=4, queries=4)
    learner = mm.learners.MAML(DataDependent(), inner_lr=0.01)
    learner.choice.current = "loop"  # the guess for a model without convolutions is vmap; make it the loop
    generator = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="execution 'auto': vmap cannot run this model"):
        for _ in range(3):
            learner.zero_grad()
            learner.meta_backward(tasks.sample(2, generator))
    assert learner.execution == "loop" and learner.model.head.weight.grad is not None
