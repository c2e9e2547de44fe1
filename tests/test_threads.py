"""execution="threads": tasks shared among worker threads, each running its own copies of the
modules (issue 12). The meta-gradient is the loop's up to rounding, the same in every run."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator

import pytest
import torch

import modmeta as mm
import modmeta.plot
from modmeta.meta.execution import Choice, candidates, in_threads, worker, worker_shares
from modmeta.models.functional import local, replicas


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Two intra-op threads for the test (conftest holds one): "threads" runs two workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def conv_batch(dtype: torch.dtype = torch.float64) -> mm.tasks.TaskBatch:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 16, 16, generator=g), torch.arange(40) % 4
    return mm.tasks.ClassificationFamily(x, y, ways=4, shots=2, queries=3).sample(5, g).to("cpu", dtype)


def conv(out: int | None = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.Conv4(out, hidden=4, image_size=16).double()


LEARNERS = {
    "maml": lambda e: mm.learners.MAML(conv(), inner_lr=0.1, inner_steps=2, execution=e),
    "maml, support statistics": lambda e: mm.learners.MAML(conv(), inner_lr=0.1, execution=e, batchnorm="support"),
    "maml, pcgrad": lambda e: mm.learners.MAML(conv(), inner_lr=0.1, execution=e, aggregate=mm.meta.aggregate.pcgrad()),
    "meta-sgd": lambda e: mm.learners.MetaSGD(conv(), execution=e),
    "protonet, support statistics": lambda e: mm.learners.ProtoNet(conv(None), execution=e, batchnorm="support"),
    "matching": lambda e: mm.learners.MatchingNet(conv(None), execution=e),
    "reptile, carried adam, mini-batches": lambda e: mm.learners.Reptile(
        conv(), inner=mm.adapt.adam(1e-3, beta1=0.0, carry=True), inner_steps=3, inner_batch=4, execution=e),
    "imaml": lambda e: mm.learners.IMAML(conv(), inner_lr=0.05, inner_steps=3, cg_steps=2, execution=e),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_threads_give_the_loops_meta_gradient_and_numbers(name, two_threads):
    batch = conv_batch()
    found = {}
    for execution in ("loop", "threads"):
        learner = LEARNERS[name](execution)
        metrics = learner.meta_backward(batch)
        curve = learner.curve(batch)
        found[execution] = (metrics, curve, [p.grad for p in learner.parameters()])
    (m_loop, c_loop, g_loop), (m_threads, c_threads, g_threads) = found["loop"], found["threads"]
    assert m_threads == pytest.approx(m_loop, rel=1e-10)
    torch.testing.assert_close(c_threads, c_loop)
    assert not c_threads.requires_grad  # the workers ran in the caller's no_grad
    for a, b in zip(g_threads, g_loop):  # float64: rounding only (a conv bias before a batch norm has ~1e-11)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_threads_are_reproducible_and_leave_the_thread_count_as_it_was(two_threads):
    grads = []
    for _ in range(2):
        learner = LEARNERS["maml"]("threads")
        learner.to(torch.float32).meta_backward(conv_batch(torch.float32))
        grads.append([p.grad for p in learner.parameters()])
        assert torch.get_num_threads() == 2
    assert all(torch.equal(a, b) for a, b in zip(*grads))  # the workers' sums are added in worker order


def test_auto_guesses_threads_with_several_intra_op_threads_only(two_threads):
    assert candidates(conv()) == ["threads", "channels_last", "loop"]
    assert candidates(mm.models.MLP(1, 1, (4,))) == ["vmap", "loop"]
    torch.set_num_threads(1)
    assert candidates(conv()) == ["channels_last", "loop"]


def test_workers_split_the_tasks_in_order(two_threads):
    assert worker_shares(5) == [(0, 2), (2, 5)] and worker_shares(1) == [(0, 1)]
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def job(i: int):
        def run() -> int:
            with lock:
                seen.append((i, worker()))
            assert torch.get_num_threads() == 1  # each worker on one intra-op thread
            return 10 * i
        return run

    assert in_threads([job(0), job(1), job(2)]) == [0, 10, 20]
    assert sorted(seen) == [(0, 0), (1, 1), (2, 2)] and worker() == 0 and torch.get_num_threads() == 2


def test_a_workers_exception_reaches_the_caller(two_threads):
    def fails() -> None:
        raise KeyError("in a worker")

    with pytest.raises(KeyError, match="in a worker"):
        in_threads([lambda: 1, fails])
    assert torch.get_num_threads() == 2


def test_each_thread_runs_its_own_copy_of_a_module_sharing_its_tensors():
    model = mm.models.Conv4(2, hidden=2, image_size=16)
    assert local(model) is model  # outside replicas(): the module itself
    with replicas():
        copy = local(model)
        assert copy is not model and local(model) is copy
        assert all(a is b for a, b in zip(copy.parameters(), model.parameters()))
        copy.features[1].rows = 3  # what normalised() sets while it runs
    assert model.features[1].rows is None


class Noisy(torch.nn.Module):
    """A convolution whose output gets noise from torch's global generator (as dropout would)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head((h + 0.1 * torch.randn_like(h)).mean((2, 3)))


def test_auto_drops_threads_for_tasks_that_draw_random_numbers(two_threads):
    batch = conv_batch(torch.float32)
    torch.manual_seed(0)
    learner = mm.learners.MAML(Noisy(), inner_lr=0.1)
    reference = mm.learners.MAML(Noisy(), inner_lr=0.1, execution="channels_last")
    reference.load_state_dict(learner.state_dict())
    assert learner.execution == "threads"
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="threads cannot run this model.*random numbers"):
        learner.meta_backward(batch)
    torch.manual_seed(1)
    reference.meta_backward(batch)
    assert learner.execution == "channels_last"
    for p, q in zip(learner.parameters(), reference.parameters()):  # the draws were put back: the same numbers
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):  # channels_last then the loop are timed; threads never again
            learner.meta_backward(batch)
    assert set(learner.choice.seconds) == {"channels_last", "loop"}


def test_a_threads_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path, two_threads):
    g = torch.Generator().manual_seed(0)
    images = mm.tasks.ClassificationFamily(torch.randn(40, 1, 16, 16, generator=g), torch.arange(40) % 4,
                                           ways=4, shots=1, queries=2)

    def trainer(out):
        torch.manual_seed(0)  # the same initial weights
        learner = mm.learners.MAML(mm.models.Conv4(4, hidden=4, image_size=16), inner_lr=0.1, execution="threads")
        return mm.Trainer(learner, images, meta_batch=4, out=out, checkpoint_every=2, log_every=1, progress=False)

    whole = trainer(tmp_path / "whole").fit(4)
    trainer(tmp_path / "cut").fit(2)
    resumed = trainer(tmp_path / "cut").fit(4, resume=True)
    for (n, a), (_, b) in zip(whole.learner.named_parameters(), resumed.learner.named_parameters()):
        assert torch.equal(a, b), n
    records = mm.plot.read_metrics(tmp_path / "whole")
    assert records == mm.plot.read_metrics(tmp_path / "cut")
    assert {r["execution"] for r in records if r["split"] == "train"} == {"threads"}


def test_modular_learners_run_in_threads_as_in_the_loop(two_threads):
    family = mm.tasks.modular.FunctionSums(shots=5, queries=7)
    batch = family.sample(6, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    grads = {}
    for execution in ("loop", "threads"):
        torch.manual_seed(0)
        model = mm.models.ModularNet(1, 1, modules=((3, (5, 4)), (4, (6,))), scheme="sum", slots=2).double()
        learner = mm.learners.MoMA(model, inner_steps=2, search_steps=20, execution=execution)
        learner.meta_backward(batch)
        grads[execution] = [p.grad for p in learner.parameters() if p.grad is not None]
    assert grads["loop"]
    for a, b in zip(grads["loop"], grads["threads"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
