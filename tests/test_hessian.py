"""Hessian regularisation (seed 004): Hutchinson's estimate of ‖H‖_F² and its meta-gradient."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import modmeta as mm
from helpers import DT, assert_matches_finite_differences, meta_grads, sine_batch, tiny_mlp
from modmeta import config
from modmeta.meta import hessian_norm


def support_objective(model: torch.nn.Module, batch: mm.tasks.TaskBatch):
    def f(theta):
        return torch.nn.functional.mse_loss(functional_call(model, theta, (batch.x_support[0],)), batch.y_support[0])
    return f


def exact_frobenius(f, theta) -> float:
    names = list(theta)
    shapes = [theta[n].shape for n in names]
    sizes = [theta[n].numel() for n in names]

    def flat_f(v):
        return f({n: t.view(s) for n, t, s in zip(names, v.split(sizes), shapes)})

    h = torch.autograd.functional.hessian(flat_f, torch.cat([theta[n].flatten() for n in names]))
    return h.pow(2).sum().item()


def test_hutchinson_estimate_converges_to_the_exact_frobenius_norm_of_the_hessian():
    model, batch = tiny_mlp(), sine_batch()
    theta = {n: p.detach() for n, p in model.named_parameters()}
    f = support_objective(model, batch)
    exact = exact_frobenius(f, theta)
    g = torch.Generator().manual_seed(0)
    one = hessian_norm(f, theta, probes=1, generator=g).item()
    many = hessian_norm(f, theta, probes=3000, generator=g).item()
    assert many == pytest.approx(exact, rel=0.03)
    assert one != pytest.approx(exact, rel=1e-3)  # a single probe is only an estimate


def test_hutchinson_estimate_is_exact_for_a_diagonal_hessian():
    d = torch.tensor([1.0, -2.0, 3.0], dtype=DT)

    def f(theta):
        return 0.5 * (d * theta["w"] ** 2).sum()

    theta = {"w": torch.randn(3, dtype=DT)}
    assert hessian_norm(f, theta, probes=2, generator=torch.Generator().manual_seed(1)).item() == pytest.approx(14.0)


def test_meta_gradient_with_the_hessian_penalty_matches_finite_differences():
    batch = sine_batch(tasks=2)
    learner = mm.learners.GradientLearner(
        tiny_mlp(), inner=mm.adapt.sgd(0.1), inner_steps=1,
        outer=mm.meta.hessian_penalty(coefficient=0.5, probes=2), execution="loop").to(DT)
    torch.manual_seed(5)
    grads = meta_grads(learner, batch)

    def objective() -> float:
        torch.manual_seed(5)  # the same probes as the meta-gradient's
        total = 0.0
        for i in range(len(batch)):
            task = learner.task(*(t[i] for t in batch.tensors()))
            total = total + learner.outer(task).surrogate.item()
        return total / len(batch)

    assert_matches_finite_differences(dict(learner.named_parameters()), grads, objective, seed=2, abs=1e-8)


def test_a_zero_coefficient_is_the_plain_outer_update():
    batch = sine_batch()
    plain = meta_grads(mm.learners.MAML(tiny_mlp(), inner_lr=0.1).to(DT), batch)
    zero = meta_grads(mm.learners.GradientLearner(tiny_mlp(), inner=mm.adapt.sgd(0.1),
                                                  outer=mm.meta.hessian_penalty(coefficient=0.0)).to(DT), batch)
    for n in plain:
        torch.testing.assert_close(zero[n], plain[n], rtol=1e-12, atol=1e-15)


def test_the_hessian_penalty_is_a_few_keys_of_yaml():
    run = config.build(config.parse({
        "tasks": {"name": "sinusoid", "shots": 5, "queries": 5}, "model": {"name": "mlp", "hidden": [8]},
        "learner": {"name": "gradient", "inner": {"name": "sgd", "lr": 0.01},
                    "outer": {"name": "hessian_penalty", "outer": "first_order", "coefficient": 0.01, "probes": 2}},
        "train": {"iterations": 1}}))
    assert isinstance(run.learner.outer.outer, mm.meta.outer.Unrolled) and run.learner.outer.outer.first_order
    stats = run.learner.meta_backward(run.tasks.sample(3, torch.Generator().manual_seed(0)))
    assert all(torch.isfinite(p.grad).all() for p in run.learner.parameters()) and stats["loss"] > 0
