"""Meta-gradients of the gradient-based learners against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import modmeta as mm
from helpers import DT, assert_matches_finite_differences, meta_grads, sine_batch, tiny_mlp
from modmeta.learners import ANIL, FOMAML, LSLR, MAML, MetaSGD, Reptile


def image_batch(tasks: int = 3, seed: int = 0, size: int = 16) -> mm.tasks.TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 1, size, size, generator=g, dtype=DT)
    y = torch.arange(40) % 4
    return mm.tasks.ClassificationFamily(x, y, ways=3, shots=2, queries=3).sample(tasks, g)


def tiny_conv() -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.Conv4(3, hidden=4, image_size=16).to(DT)


def meta_loss(learner: mm.learners.GradientLearner, batch: mm.tasks.TaskBatch) -> torch.Tensor:
    """The mean query loss after adaptation, task by task (no vmap)."""
    total = 0.0
    for t in range(len(batch)):
        xs, ys, xq, yq = (v[t] for v in batch.tensors())
        total = total + learner.task_loss(xs, ys, xq, yq)[0]
    return total / len(batch)


def autograd_maml_grad(model: torch.nn.Module, batch: mm.tasks.TaskBatch, lr: float, steps: int
                       ) -> dict[str, torch.Tensor]:
    """MAML written with plain autograd (``create_graph=True``), no torch.func: the reference."""
    names, params = zip(*model.named_parameters())
    loss_fn = F.cross_entropy if not batch.y_query.is_floating_point() else F.mse_loss
    total = 0.0
    for t in range(len(batch)):
        xs, ys, xq, yq = (v[t] for v in batch.tensors())
        fast = list(params)
        for _ in range(steps):
            out = functional_call(model, dict(zip(names, fast)), (xs,))
            g = torch.autograd.grad(loss_fn(out, ys), fast, create_graph=True)
            fast = [p - lr * gi for p, gi in zip(fast, g)]
        total = total + loss_fn(functional_call(model, dict(zip(names, fast)), (xq,)), yq)
    grads = torch.autograd.grad(total / len(batch), params)
    return {"model." + n: g for n, g in zip(names, grads)}


def test_maml_meta_gradient_matches_finite_differences_on_mlp():
    learner = MAML(tiny_mlp(), inner_lr=0.05, inner_steps=2, execution="vmap")
    batch = sine_batch()
    grads = meta_grads(learner, batch)
    assert_matches_finite_differences(dict(learner.named_parameters()), grads,
                                      lambda: meta_loss(learner, batch).item(), seed=1, directions=5, abs=1e-8)


def test_maml_meta_gradient_matches_finite_differences_on_conv4_with_batchnorm():
    learner = MAML(tiny_conv(), inner_lr=0.3, inner_steps=1, execution="vmap")
    batch = image_batch()
    grads = meta_grads(learner, batch)
    assert_matches_finite_differences(dict(learner.named_parameters()), grads,
                                      lambda: meta_loss(learner, batch).item(), seed=2, directions=3, abs=1e-8)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_maml_conv4_meta_gradient_equals_plain_autograd_reference(execution):
    model = tiny_conv()
    batch = image_batch()
    learner = MAML(model, inner_lr=0.3, inner_steps=2, execution=execution)
    ours = meta_grads(learner, batch)
    reference = autograd_maml_grad(learner.model, batch, lr=0.3, steps=2)
    for n, g in reference.items():
        torch.testing.assert_close(ours[n], g, rtol=1e-10, atol=1e-12)
    assert max(g.abs().max().item() for g in reference.values()) > 1e-3  # not a vacuous match


def test_batchnorm_forward_matches_torch_in_training_mode():
    x = torch.randn(6, 4, 5, 5, dtype=DT)
    ours = mm.models.BatchNorm(4).to(DT)
    theirs = torch.nn.BatchNorm2d(4).to(DT).train()
    with torch.no_grad():
        ours.weight.uniform_()
        ours.bias.uniform_()
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
    torch.testing.assert_close(ours(x), theirs(x))


def test_user_batchnorm_is_replaced_and_weights_kept():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                              torch.nn.LazyLinear(3))
    net(torch.zeros(2, 1, 5, 5))
    with torch.no_grad():
        net[1].weight.fill_(0.7)
    learner = MAML(net)
    assert isinstance(learner.model[1], mm.models.BatchNorm)
    assert torch.all(learner.model[1].weight == 0.7)


ALL = [
    lambda m: MAML(m, inner_lr=0.05, inner_steps=2, execution=EXE),
    lambda m: FOMAML(m, inner_lr=0.05, inner_steps=2, execution=EXE),
    lambda m: Reptile(m, inner_lr=0.05, inner_steps=3, execution=EXE),
    lambda m: MetaSGD(m, inner_lr=0.05, inner_steps=2, execution=EXE),
    lambda m: ANIL(m, inner_lr=0.05, inner_steps=2, execution=EXE),
    lambda m: LSLR(m, inner_lr=0.05, inner_steps=2, execution=EXE),
]
NAMES = ["MAML", "FOMAML", "Reptile", "MetaSGD", "ANIL", "LSLR"]
EXE = "vmap"


@pytest.mark.parametrize("make", ALL, ids=NAMES)
@pytest.mark.parametrize("data", ["sine", "conv"])
def test_vmapped_equals_looped(make, data):
    global EXE
    model, batch = (tiny_mlp(), sine_batch()) if data == "sine" else (tiny_conv(), image_batch())
    results = {}
    others = ("vmap", "channels_last") if data == "conv" else ("vmap",)
    for EXE in ("loop", *others):
        learner = make(model)
        assert learner.execution == EXE
        grads = meta_grads(learner, batch)
        results[EXE] = (grads, learner.curve(batch, steps=4))
    for exe in others:
        for n, g in results["loop"][0].items():
            torch.testing.assert_close(results[exe][0][n], g, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(results[exe][1], results["loop"][1], rtol=1e-9, atol=1e-12)
    assert results["vmap"][1].shape == (len(batch), 5)


def test_first_order_maml_is_query_gradient_at_adapted_parameters():
    batch = sine_batch()
    learner = FOMAML(tiny_mlp(), inner_lr=0.05, inner_steps=3)
    ours = meta_grads(learner, batch)
    names, params = zip(*learner.model.named_parameters())
    expected = [torch.zeros_like(p) for p in params]
    for t in range(len(batch)):
        xs, ys, xq, yq = (v[t] for v in batch.tensors())
        fast = [p.detach().clone().requires_grad_() for p in params]
        for _ in range(3):
            g = torch.autograd.grad(F.mse_loss(functional_call(learner.model, dict(zip(names, fast)), (xs,)), ys), fast)
            fast = [(p - 0.05 * gi).detach().requires_grad_() for p, gi in zip(fast, g)]
        gq = torch.autograd.grad(F.mse_loss(functional_call(learner.model, dict(zip(names, fast)), (xq,)), yq), fast)
        expected = [e + gi / len(batch) for e, gi in zip(expected, gq)]
    for n, e in zip(names, expected):
        torch.testing.assert_close(ours["model." + n], e, rtol=1e-10, atol=1e-12)
    second = meta_grads(MAML(learner.model, inner_lr=0.05, inner_steps=3), batch)
    assert any((second[k] - ours[k]).abs().max() > 1e-6 for k in ours)  # the orders differ


def test_reptile_update_equals_its_definition():
    batch = sine_batch(tasks=5)
    learner = Reptile(tiny_mlp(), inner_lr=0.02, inner_steps=4)
    phi = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    epsilon = 0.3
    opt = torch.optim.SGD(learner.parameters(), lr=epsilon)
    opt.zero_grad()
    learner.meta_backward(batch)
    opt.step()
    adapted = []
    for t in range(len(batch)):
        xs, ys = batch.x_support[t], batch.y_support[t]
        net = tiny_mlp()
        net.load_state_dict({k: v.clone() for k, v in phi.items()})
        inner = torch.optim.SGD(net.parameters(), lr=0.02)
        for _ in range(4):
            inner.zero_grad()
            F.mse_loss(net(xs), ys).backward()
            inner.step()
        adapted.append({n: p.detach() for n, p in net.named_parameters()})
    for n, p in learner.model.named_parameters():
        mean_adapted = torch.stack([a[n] for a in adapted]).mean(0)
        torch.testing.assert_close(p.detach(), phi[n] + epsilon * (mean_adapted - phi[n]),
                                   rtol=1e-10, atol=1e-12)


def test_fixed_seed_gives_identical_losses_twice():
    def run() -> list[float]:
        torch.manual_seed(0)
        learner = MAML(mm.models.MLP(1, 1), inner_lr=0.01)
        opt = torch.optim.Adam(learner.parameters(), 1e-3)
        g = torch.Generator().manual_seed(123)
        out = []
        for _ in range(5):
            opt.zero_grad()
            out.append(learner.meta_backward(mm.tasks.Sinusoid().sample(25, g))["loss"])
            opt.step()
        return out

    first, second = run(), run()
    assert first == second
    assert len(set(first)) > 1


def test_anil_adapts_only_the_head():
    learner = ANIL(tiny_mlp(), inner_lr=0.1, inner_steps=2)
    b = sine_batch()
    adapted = learner.adapt(b.x_support[0], b.y_support[0])
    for n, p in learner.model.named_parameters():
        moved = not torch.equal(adapted[n], p)
        assert moved == n.startswith("head."), n
    with pytest.raises(ValueError, match="matches no parameter"):
        ANIL(tiny_mlp(), head=("classifier",))


def test_learned_rates_get_meta_gradients_and_extend_past_training_steps():
    for cls in (MetaSGD, LSLR):
        learner = cls(tiny_mlp(), inner_lr=0.05, inner_steps=2)
        grads = meta_grads(learner, sine_batch())
        rate_grads = [g for n, g in grads.items() if n.startswith("rates.")]
        assert rate_grads and all(g.abs().sum() > 0 for g in rate_grads)
    lslr = LSLR(tiny_mlp(), inner_lr=0.05, inner_steps=2)
    alpha = next(iter(lslr.rates.alpha.values()))
    assert alpha.shape == (2,)
    with torch.no_grad():
        alpha[1] = 0.7
    assert lslr.rates(next(iter(dict(lslr.model.named_parameters()))), 9).item() == pytest.approx(0.7)


def test_more_test_time_steps_than_training_steps():
    learner = MAML(tiny_mlp(), inner_lr=0.05, inner_steps=1)
    b = sine_batch()
    assert len(learner.trajectory(b.x_support[0], b.y_support[0], steps=10)) == 11
    assert learner.curve(b, steps=10).shape == (len(b), 11)
