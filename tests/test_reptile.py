"""Reptile as its paper (issue 11, item 2): inner mini-batches, the batch-norm modes and the
inner Adam whose state runs on across tasks."""

from __future__ import annotations

import random

import pytest
import torch

import modmeta as mm
from helpers import DT, linear_batch
from modmeta.adapt.minibatch import minibatches
from modmeta.learners import Reptile


def linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1).to(DT)


def test_the_steps_pass_through_every_row_once_per_epoch_and_never_twice_in_a_step() -> None:
    rows = minibatches(50, 10, 7)
    assert len(rows) == 7 and all(len(r) == len(set(r.tolist())) == 10 for r in rows)
    assert sorted(torch.cat(rows[:5]).tolist()) == list(range(50))  # the first epoch: every row once
    assert torch.equal(rows[5], rows[0]) and torch.equal(rows[6], rows[1])  # then the next epoch
    wrapping = minibatches(5, 3, 3)  # 3 rows per step from 5: the second step wraps around
    assert all(len(set(r.tolist())) == 3 for r in wrapping)
    assert sorted(torch.cat(wrapping[:2]).tolist()[:5]) == list(range(5))


def test_a_mini_batch_no_smaller_than_the_support_set_is_all_of_it() -> None:
    assert minibatches(5, None, 3) is None and minibatches(5, 5, 3) is None and minibatches(5, 10, 3) is None


@pytest.mark.parametrize("size", [0, -2])
def test_a_mini_batch_below_one_row_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="inner_batch must be >= 1"):
        Reptile(linear_model(), inner_batch=size)


def test_the_global_rng_is_left_alone() -> None:
    torch.manual_seed(3)
    random.seed(3)
    before, python_before = torch.get_rng_state(), random.getstate()
    minibatches(50, 10, 5)
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == python_before


def test_each_inner_step_descends_its_own_mini_batch() -> None:
    # SGD steps written out by hand, each on the rows minibatches() names.
    batch = linear_batch(tasks=1, shots=10)
    xs, ys = batch.x_support[0], batch.y_support[0]
    learner = Reptile(linear_model(), inner_lr=0.1, inner_steps=3, inner_batch=4)
    w, b = (p.detach().clone() for p in learner.model.parameters())
    for r in minibatches(10, 4, 3):
        w_, b_ = w.clone().requires_grad_(), b.clone().requires_grad_()
        loss = torch.nn.functional.mse_loss(xs[r] @ w_.T + b_, ys[r])
        gw, gb = torch.autograd.grad(loss, (w_, b_))
        w, b = w - 0.1 * gw, b - 0.1 * gb
    theta = learner.adapt(xs, ys)
    torch.testing.assert_close(theta["weight"], w)
    torch.testing.assert_close(theta["bias"], b)
    whole = Reptile(linear_model(), inner_lr=0.1, inner_steps=3).adapt(xs, ys)
    assert not torch.allclose(whole["weight"], w)  # the whole support set would give another answer


def test_without_mini_batches_nothing_changes() -> None:
    batch = linear_batch(tasks=3, shots=6)
    results = []
    for inner_batch in (None, 6, 100):  # all rows, as before the option existed
        learner = Reptile(linear_model(), inner_lr=0.1, inner_steps=3, inner_batch=inner_batch)
        learner.zero_grad()
        learner.meta_backward(batch)
        results.append([p.grad.clone() for p in learner.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_mini_batches_agree_in_the_loop_and_under_vmap() -> None:
    batch = linear_batch(tasks=3, shots=10)
    grads = []
    for execution in ("loop", "vmap"):
        learner = Reptile(linear_model(), inner_lr=0.1, inner_steps=4, inner_batch=3, execution=execution)
        learner.zero_grad()
        learner.meta_backward(batch)
        grads.append([p.grad.clone() for p in learner.parameters()])
        assert learner.curve(batch, 6).shape == (3, 7)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("batchnorm", ["transductive", "support"])
def test_reptile_takes_the_batch_norm_mode(batchnorm: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(),
                              torch.nn.Linear(4, 2)).to(DT)
    learner = Reptile(net, inner_lr=0.1, inner_steps=2, batchnorm=batchnorm)
    g = torch.Generator().manual_seed(0)
    xs, xq = torch.randn(4, 3, generator=g, dtype=DT), 3 + torch.randn(6, 3, generator=g, dtype=DT)
    theta = learner.adapt(xs, torch.tensor([0, 1, 0, 1]))
    together = learner.predict(theta, xq, support=xs)
    alone = learner.predict(theta, xq[:2], support=xs)
    # with the support set's statistics a query's prediction does not depend on the other queries
    assert torch.allclose(alone, together[:2]) == (batchnorm == "support")
    assert mm.registry.LEARNERS["reptile"].build(net, batchnorm=batchnorm, inner_batch=2).batchnorm == batchnorm


# -- the carried inner Adam ----------------------------------------------------------------


def torch_adam_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                     steps: int) -> dict[str, torch.Tensor]:
    """``steps`` of ``opt`` on the mean squared error of ``model`` on ``(x, y)``."""
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("execution", ["loop", "vmap"])
def test_a_carried_adam_runs_on_across_tasks_as_one_torch_adam(execution: str) -> None:
    """One task per meta-batch: the carried state is that task's final Adam state, so training on
    task A then adapting to task B is one torch.optim.Adam stepping through A and then B, each
    from the same starting parameters (Reptile's authors restore the weights, not Adam's
    moments). Adapting only reads the carried state."""
    batch = linear_batch(tasks=2, shots=6)
    task = [mm.tasks.TaskBatch(*(t[i:i + 1] for t in batch.tensors())) for i in range(2)]
    learner = Reptile(linear_model(), inner=mm.adapt.adam(0.05, beta1=0.0, beta2=0.9, eps=1e-6, carry=True),
                      inner_steps=3, execution=execution)
    reference = linear_model()
    start = {n: p.detach().clone() for n, p in reference.named_parameters()}
    opt = torch.optim.Adam(reference.parameters(), lr=0.05, betas=(0.0, 0.9), eps=1e-6)

    learner.meta_backward(task[0])
    torch_adam_steps(reference, opt, batch.x_support[0], batch.y_support[0], 3)
    carried = [b.clone() for b in learner.carried.buffers()]
    torch.testing.assert_close(carried[-1], torch.tensor(3.0, dtype=DT))  # Adam's step count
    with torch.no_grad():
        for n, p in reference.named_parameters():
            p.copy_(start[n])
    expected = torch_adam_steps(reference, opt, batch.x_support[1], batch.y_support[1], 3)
    adapted = learner.adapt(batch.x_support[1], batch.y_support[1])
    for n in expected:
        torch.testing.assert_close(adapted[n], expected[n], rtol=1e-10, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(carried, learner.carried.buffers()))  # read, not written
    fresh = Reptile(linear_model(), inner=mm.adapt.adam(0.05, beta1=0.0, beta2=0.9, eps=1e-6), inner_steps=3)
    assert not torch.allclose(fresh.adapt(batch.x_support[1], batch.y_support[1])["weight"], expected["weight"])


def test_a_meta_batch_carries_the_mean_of_its_tasks_final_states_in_the_loop_and_under_vmap() -> None:
    batch = linear_batch(tasks=3, shots=6)
    ends = []
    for execution in ("loop", "vmap"):
        learner = Reptile(linear_model(), inner=mm.adapt.adam(0.05, beta1=0.5, carry=True), inner_steps=2,
                          execution=execution)
        learner.meta_backward(batch)
        ends.append([b.clone() for b in learner.carried.buffers()])
    singles = []
    for i in range(3):
        learner = Reptile(linear_model(), inner=mm.adapt.adam(0.05, beta1=0.5, carry=True), inner_steps=2)
        learner.meta_backward(mm.tasks.TaskBatch(*(t[i:i + 1] for t in batch.tensors())))
        singles.append([b.clone() for b in learner.carried.buffers()])
    for looped, vmapped, *each in zip(*ends, *singles):
        torch.testing.assert_close(looped, vmapped)
        torch.testing.assert_close(looped, torch.stack(each).mean(0))


def test_a_sequential_carry_adapts_a_meta_batch_task_after_task_as_one_torch_adam() -> None:
    """carry='sequential' (the authors' code): the tasks of one meta-batch adapt one after
    another, each from the state the one before it ended in, the weights back at φ for each;
    the carried state is then the last task's, and each task's adapted weights are the same
    torch.optim.Adam's after that task, so the meta-gradient is their mean difference to φ."""
    batch = linear_batch(tasks=3, shots=6)
    learner = Reptile(linear_model(), inner=mm.adapt.adam(0.05, beta1=0.5, beta2=0.9, eps=1e-6, carry="sequential"),
                      inner_steps=2)
    assert learner.execution in ("loop", "channels_last")
    reference = linear_model()
    start = {n: p.detach().clone() for n, p in reference.named_parameters()}
    opt = torch.optim.Adam(reference.parameters(), lr=0.05, betas=(0.5, 0.9), eps=1e-6)
    adapted = []
    for i in range(3):
        with torch.no_grad():
            for n, p in reference.named_parameters():
                p.copy_(start[n])
        adapted.append(torch_adam_steps(reference, opt, batch.x_support[i], batch.y_support[i], 2))
    learner.meta_backward(batch)
    carried = list(learner.carried.buffers())
    torch.testing.assert_close(carried[-1], torch.tensor(6.0, dtype=DT))  # three tasks of two steps
    for n, p in learner.model.named_parameters():
        moved = torch.stack([a[n] for a in adapted]).mean(0) - start[n]
        torch.testing.assert_close(-p.grad, moved, rtol=1e-10, atol=1e-12)
    m, v = carried[0], carried[2]  # the weight's first and second moments (m and v of weight, bias)
    torch.testing.assert_close(m, opt.state[reference.weight]["exp_avg"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v, opt.state[reference.weight]["exp_avg_sq"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("execution", ["vmap", "threads"])
def test_a_sequential_carry_refuses_the_executions_that_run_tasks_side_by_side(execution: str) -> None:
    with pytest.raises(ValueError, match="one after another"):
        Reptile(linear_model(), inner=mm.adapt.adam(0.05, carry="sequential"), execution=execution)
    with pytest.raises(ValueError, match="carry must be"):
        mm.adapt.adam(0.05, carry="sideways")
    assert "carry='sequential'" in mm.adapt.adam(carry="sequential").describe()


def test_carrying_needs_a_state_and_a_learner_that_carries_it() -> None:
    with pytest.raises(ValueError, match="plain gradient descent has none"):
        mm.adapt.sgd(0.1, carry=True)
    assert mm.adapt.sgd(0.1, momentum=0.9, carry=True).carry
    assert "carry=True" in mm.adapt.adam(carry=True).describe()
    net = mm.models.ModularNet(2, 1, modules=((2, (4,)),))
    with pytest.raises(ValueError, match="starts every adaptation afresh"):
        mm.learners.BounceGrad(net, inner=mm.adapt.adam(carry=True))
