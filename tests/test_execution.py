"""execution="auto": chosen by timing both executions on the first meta-iterations (issue 12)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest
import torch

import modmeta as mm
from modmeta.meta.execution import Choice


def fake_step(slow: str, calls: list[str], seconds: float = 0.1):
    """A meta-iteration that records its execution and takes ``seconds`` longer with ``slow``
    (negative: every other execution takes ``-seconds`` longer)."""

    def step(execution: str) -> str:
        calls.append(execution)
        if (execution == slow) == (seconds > 0):
            time.sleep(abs(seconds))
        return execution

    return step


CANDIDATES = [(mm.models.MLP(1, 1, (4,)), ["vmap", "loop"]),
              (mm.models.Conv4(2, hidden=2, image_size=16), ["channels_last", "loop"])]


@pytest.mark.parametrize("model, order, fast", [(m, o, f) for m, o in CANDIDATES for f in o])
def test_auto_times_every_candidate_after_a_warm_up_and_keeps_the_fastest(model, order, fast):
    choice, calls = Choice("auto", model), []
    step = fake_step(fast, calls, -0.1)  # every execution but ``fast`` takes 0.1 s longer
    for _ in range(len(order) + 3):
        choice.run(step)
    assert calls == [order[0], *order[1:], order[0], fast, fast]
    assert choice.current == fast
    assert all(choice.seconds[e] > choice.seconds[fast] + 0.09 for e in order if e != fast)


def test_auto_does_not_time_a_lone_candidate_or_vmap_for_convolutions():
    choice, calls = Choice("auto", torch.nn.Conv1d(1, 1, 3)), []  # convolutions: vmap's grouped kernels lose
    for _ in range(4):
        choice.run(fake_step("vmap", calls))
    assert calls == ["loop"] * 4 and not choice.seconds and not choice.state()["plan"]


def test_auto_keeps_its_guess_unless_the_other_is_clearly_faster_on_a_long_enough_iteration():
    model = mm.models.MLP(1, 1, (4,))  # guess: vmap
    for slow, seconds, chosen in [("vmap", 0.02, "vmap"),  # too short an iteration to tell
                                  ("vmap", 0.1, "loop")]:
        choice = Choice("auto", model)
        for _ in range(3):
            choice.run(fake_step(slow, [], seconds))
        assert choice.current == chosen, (slow, seconds, choice.seconds)


@pytest.mark.parametrize("execution", ["vmap", "loop", "channels_last"])
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


def conv_batch(seed: int = 0) -> mm.tasks.TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(24, 1, 16, 16, generator=g), torch.arange(24) % 3
    return mm.tasks.ClassificationFamily(x, y, ways=3, shots=1, queries=2).sample(2, g)


def test_channels_last_reaches_every_convolution_and_leaves_the_users_tensors_alone():
    torch.manual_seed(0)
    learner = mm.learners.MAML(mm.models.Conv4(3, hidden=4, image_size=16), inner_lr=0.1, execution="channels_last")
    inputs: list[tuple[int, ...]] = []
    for conv in (m for m in learner.model.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda module, args, out: inputs.append((args[0].stride(1), out.stride(1))))
    batch = conv_batch()
    strides = [t.stride() for t in batch.tensors()]
    learner.meta_backward(batch)
    inputs.clear()  # the first call also checked the model once on the user's tensors
    learner.meta_backward(batch)
    learner.curve(batch)
    # 4 convolutions x 2 tasks x (support and query passes, then the curve's support pass and
    # its queries before and after the step); a channel stride of 1 is NHWC, for one channel too
    assert len(inputs) == 4 * 2 * (2 + 3) and all(s == (1, 1) for s in inputs)
    assert [t.stride() for t in batch.tensors()] == strides


class Viewing(torch.nn.Module):
    """A convolution whose feature map is flattened by ``.view``, which NHWC strides refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Linear(2 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head(h.view(h.shape[0], -1))


def twins(make: type[torch.nn.Module]) -> tuple[mm.learners.MAML, mm.learners.MAML]:
    """MAML on ``make()`` with ``execution="auto"``, and the same learner with the NCHW loop."""
    torch.manual_seed(0)
    learner = mm.learners.MAML(make(), inner_lr=0.1)
    reference = mm.learners.MAML(make(), inner_lr=0.1, execution="loop")
    reference.load_state_dict(learner.state_dict())
    return learner, reference


def assert_same_gradients(learner: mm.learners.Learner, reference: mm.learners.Learner) -> None:
    for (n, p), q in zip(learner.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_auto_drops_channels_last_for_a_model_that_views_its_feature_maps():
    learner, reference = twins(Viewing)
    batch = conv_batch()
    with pytest.raises(RuntimeError, match="view"):
        mm.learners.MAML(Viewing(), inner_lr=0.1, execution="channels_last").meta_backward(batch)
    with pytest.warns(UserWarning, match="execution 'auto': channels_last cannot run this model"):
        learner.meta_backward(batch)
    reference.meta_backward(batch)
    assert learner.execution == "loop"
    assert_same_gradients(learner, reference)
    with warnings.catch_warnings():  # channels_last trying again would warn again: an error here
        warnings.simplefilter("error")
        for _ in range(3):  # the loop is the one candidate left: nothing to time
            learner.meta_backward(batch)
    assert not learner.choice.seconds and not learner.choice.state()["plan"]


class FailsLate(torch.nn.Module):
    """A convolution that refuses channels-last input from its third call with it on: by then
    the loop has backpropagated the first task into ``.grad``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Linear(2, 3)
        self.channels_last_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and x.stride(1) == 1:
            self.channels_last_calls += 1
            if self.channels_last_calls >= 3:
                raise RuntimeError("no channels-last here")
        return self.head(self.conv(x).mean((2, 3)))


def test_a_candidate_failing_after_some_tasks_leaves_no_gradient_behind():
    learner, reference = twins(FailsLate)
    batch = conv_batch()
    for p in [*learner.parameters(), *reference.parameters()]:  # gradients accumulate onto these
        p.grad = torch.ones_like(p)
    with pytest.warns(UserWarning, match="channels_last cannot run this model"):
        learner.meta_backward(batch)
    reference.meta_backward(batch)
    assert learner.model.channels_last_calls == 3 and learner.execution == "loop"
    assert_same_gradients(learner, reference)
