"""Shrinkage (Chen et al. 2020): modules, σ-MAML, σ-iMAML, σ-Reptile against independent references."""

from __future__ import annotations

import pytest
import torch

import modmeta as mm
from helpers import DT, assert_matches_finite_differences, linear_batch, meta_grads, sine_batch, tiny_mlp
from modmeta.adapt.proximal import proximal
from modmeta.adapt.shrinkage import Shrinkage, group_modules
from modmeta.learners import MAML, Reptile
from modmeta.learners.shrinkage import SigmaIMAML, SigmaMAML, SigmaReptile
from modmeta.registry import LEARNERS


# -- modules and σ ------------------------------------------------------------------------

NAMES = ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "head.weight", "head.bias"]


def test_modules_default_to_layers_and_follow_prefixes_or_a_function():
    assert group_modules(NAMES) == {"body.0": NAMES[0:2], "body.2": NAMES[2:4], "head": NAMES[4:6]}
    assert group_modules(NAMES, ["body"]) == {"body": NAMES[0:4], "head": NAMES[4:6]}
    assert group_modules(NAMES, lambda n: n.split(".")[-1]) == {"weight": NAMES[0::2], "bias": NAMES[1::2]}


def test_shrinkage_precision_is_one_over_sigma_squared_above_the_floor():
    params = dict(tiny_mlp().named_parameters())
    s = Shrinkage(params, sigma=2.0, min_sigma=0.5)
    assert s.names == ["body.0", "body.2", "head"]
    assert s.sigmas() == pytest.approx({"body.0": 2.0, "body.2": 2.0, "head": 2.0})
    with torch.no_grad():
        s.rho[2] = -30.0  # σ → its floor
    lam = s.precision()
    assert set(lam) == set(NAMES)
    assert lam["body.0.weight"].item() == pytest.approx(0.25)
    assert lam["head.bias"].item() == pytest.approx(1 / 0.5**2)
    assert [n for n, _ in s.named_parameters()] == ["rho"]
    assert [n for n, _ in Shrinkage(params, learn=False).named_parameters()] == []
    with pytest.raises(ValueError, match="sigma > min_sigma"):
        Shrinkage(params, sigma=0.1, min_sigma=0.2)


def test_proximal_objective_is_the_loss_plus_the_prior_term():
    theta = {"a": torch.tensor([1.0, 2.0], dtype=DT), "b": torch.tensor(3.0, dtype=DT)}
    phi = {"a": torch.tensor([0.0, 0.0], dtype=DT), "b": torch.tensor(1.0, dtype=DT)}
    f = proximal(lambda p: p["b"] ** 2, phi, {"a": 2.0, "b": 0.5})
    assert f(theta).item() == pytest.approx(9 + 2.0 / 2 * 5 + 0.5 / 2 * 4)


# -- meta-gradients against closed forms ------------------------------------------------

RHO = torch.tensor([0.3, -0.4], dtype=DT)  # log-scale of the weight module and the bias module
INNER_LR, FLOOR = 0.1, 0.2


def closed_form(phi: torch.Tensor, rho: torch.Tensor, batch: mm.tasks.TaskBatch
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact MAP solution of linear regression, its mean query loss, and that loss's
    gradients in ``φ = [w, b]`` and ``ρ`` (autograd through a linear solve)."""
    phi = phi.clone().requires_grad_()
    rho = rho.clone().requires_grad_()
    lam_m = 1 / (FLOOR**2 + torch.exp(2 * rho))
    lam = torch.diag(torch.cat([lam_m[0].expand(len(phi) - 1), lam_m[1:]]))
    total, thetas = 0.0, []
    for xs, ys, xq, yq in zip(*batch.tensors()):
        z = torch.cat([xs, torch.ones(len(xs), 1, dtype=DT)], 1)
        zq = torch.cat([xq, torch.ones(len(xq), 1, dtype=DT)], 1)
        theta = torch.linalg.solve(2 * z.T @ z / len(z) + lam, 2 * z.T @ ys[:, 0] / len(z) + lam @ phi)
        thetas.append(theta.detach())
        total = total + (zq @ theta - yq[:, 0]).pow(2).mean()
    g_phi, g_rho = torch.autograd.grad(total / len(batch), (phi, rho))
    return torch.stack(thetas), g_phi, g_rho


def linear_learner(cls: type, **kwargs) -> mm.learners.ShrinkageLearner:
    torch.manual_seed(0)
    learner = cls(torch.nn.Linear(3, 1).to(DT), inner_lr=INNER_LR, inner_steps=400,
                  modules=lambda n: n, min_sigma=FLOOR, **kwargs)  # weight and bias: one module each
    with torch.no_grad():
        learner.shrinkage.rho.copy_(RHO)
    return learner


def flat_phi(learner: mm.learners.ShrinkageLearner, grad: bool = False) -> torch.Tensor:
    w, b = learner.model.weight, learner.model.bias
    return torch.cat([w.grad[0], b.grad]) if grad else torch.cat([w.detach()[0], b.detach()])


@pytest.mark.parametrize("cls", [SigmaIMAML, SigmaMAML], ids=["sigma-imaml", "sigma-maml"])
def test_meta_gradient_of_phi_and_sigma_equals_closed_form(cls):
    batch = linear_batch()
    learner = linear_learner(cls, cg_steps=8) if cls is SigmaIMAML else linear_learner(cls)
    learner.meta_backward(batch)
    _, g_phi, g_rho = closed_form(flat_phi(learner), RHO, batch)
    torch.testing.assert_close(flat_phi(learner, grad=True), g_phi, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(learner.shrinkage.rho.grad, g_rho, rtol=1e-8, atol=1e-10)
    assert g_rho.abs().min() > 1e-3  # not a vacuous match


def test_sigma_reptile_moves_phi_by_reptile_and_sigma_by_the_closed_form_gradient():
    batch = linear_batch()
    learner = linear_learner(SigmaReptile, cg_steps=8)
    learner.meta_backward(batch)
    thetas, _, g_rho = closed_form(flat_phi(learner), RHO, batch)
    torch.testing.assert_close(flat_phi(learner, grad=True), flat_phi(learner) - thetas.mean(0),
                               rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(learner.shrinkage.rho.grad, g_rho, rtol=1e-8, atol=1e-10)


def test_sigma_maml_meta_gradient_matches_finite_differences():
    batch = sine_batch()
    learner = SigmaMAML(tiny_mlp(), inner_lr=0.05, inner_steps=3, sigma=0.7)
    with torch.no_grad():
        learner.shrinkage.rho.copy_(torch.tensor([-0.5, 0.0, 0.4], dtype=DT))
    grads = meta_grads(learner, batch)
    params = dict(learner.named_parameters())

    def loss() -> float:
        return sum(learner.task_loss(*(t[i] for t in batch.tensors()))[0].item()
                   for i in range(len(batch))) / len(batch)

    assert_matches_finite_differences(params, grads, loss, seed=1, directions=3)
    assert grads["shrinkage.rho"].abs().min() > 1e-4


# -- special cases --------------------------------------------------------------------------

def test_sigma_to_infinity_gives_reptile_and_maml():
    batch = sine_batch()
    huge = dict(sigma=1e8, learn_sigma=False, min_sigma=0.0)
    reptile = meta_grads(Reptile(tiny_mlp(), inner_lr=0.05, inner_steps=4), batch)
    sigma_reptile = meta_grads(SigmaReptile(tiny_mlp(), inner_lr=0.05, inner_steps=4, **huge), batch)
    maml = meta_grads(MAML(tiny_mlp(), inner_lr=0.05, inner_steps=2), batch)
    sigma_maml = meta_grads(SigmaMAML(tiny_mlp(), inner_lr=0.05, inner_steps=2, **huge), batch)
    for ours, theirs in ((sigma_reptile, reptile), (sigma_maml, maml)):
        assert set(ours) == set(theirs)
        for n, g in theirs.items():
            torch.testing.assert_close(ours[n], g, rtol=1e-10, atol=1e-12)


LEARNER_CLASSES = [SigmaMAML, SigmaIMAML, SigmaReptile, mm.learners.IMAML]


@pytest.mark.parametrize("cls", LEARNER_CLASSES, ids=lambda c: c.__name__)
def test_vmapped_equals_looped(cls):
    batch = sine_batch()
    results = {}
    for execution in ("vmap", "loop"):
        learner = cls(tiny_mlp(), inner_lr=0.05, inner_steps=3, execution=execution)
        results[execution] = (meta_grads(learner, batch), learner.curve(batch, steps=6))
    for n, g in results["loop"][0].items():
        torch.testing.assert_close(results["vmap"][0][n], g, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(results["vmap"][1], results["loop"][1], rtol=1e-9, atol=1e-12)
    assert results["vmap"][1].shape == (len(batch), 7)


def test_registered_and_report_sigma_per_module():
    for name in ("imaml", "sigma-maml", "sigma-imaml", "sigma-reptile"):
        learner = LEARNERS[name].build(tiny_mlp())
        assert learner.meta_backward(sine_batch())["loss"] > 0
    learner = LEARNERS["sigma-imaml"].build(tiny_mlp(), sigma=0.8, modules=["body"])
    assert learner.sigmas() == pytest.approx({"body": 0.8, "head": 0.8})
    assert LEARNERS["imaml"].build(tiny_mlp(), lam=4.0).sigmas() == pytest.approx({"all": 0.5})


# -- the task family whose truth is known --------------------------------------------------

def test_sigma_imaml_finds_the_one_layer_that_differs_across_tasks():
    """Only the teacher's last layer varies; after brief meta-training from a random start its
    σ is the largest. Ten noisy points per task and 100 inner steps: adapting the shared layer
    too fits the noise, so the validation loss shrinks it (benchmarks/SHRINKAGE.md runs all
    three estimators, and the case where the first layer varies)."""
    family = mm.tasks.TeacherFamily(layer=-1, hidden=(8,), x_dim=4, shots=10, queries=20, spread=1.0,
                                    low=-1.0, high=1.0, noise=0.1)
    torch.manual_seed(0)
    learner = SigmaIMAML(mm.models.MLP(4, 1, (8,)), inner_lr=0.1, inner_steps=100, sigma=1.0)
    optimizer = torch.optim.Adam([{"params": learner.model.parameters()},
                                  {"params": learner.shrinkage.parameters(), "lr": 3e-2}], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        optimizer.zero_grad()
        learner.meta_backward(family.sample(8, generator))
        optimizer.step()
    sigma = learner.sigmas()
    ratio = sigma["head"] / sigma["body.0"]
    print(f"σ per module {sigma}; head / body.0 = {ratio:.2f}")
    assert ratio > 3.0  # 8.33 when written


def test_teacher_family_is_its_teacher_network_when_nothing_varies():
    family = mm.tasks.TeacherFamily(layer=1, hidden=(6, 5), x_dim=3, shots=4, queries=2, spread=0.0)
    batch = family.sample(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(family.teacher()(batch.x_support), batch.y_support)
    varied = mm.tasks.TeacherFamily(layer=1, hidden=(6, 5), x_dim=3, spread=1.0).sample(2, torch.Generator())
    assert not torch.allclose(varied.y_support[0], family.teacher()(varied.x_support[0]).detach())
    noisy = mm.tasks.TeacherFamily(layer=1, hidden=(6, 5), x_dim=3, shots=400, queries=2, spread=0.0, noise=0.3)
    batch = noisy.sample(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        residual = batch.y_support - noisy.teacher()(batch.x_support)
    assert residual.std().item() == pytest.approx(0.3, rel=0.05) and abs(residual.mean().item()) < 0.03
    with pytest.raises(ValueError, match="layer must be in"):
        mm.tasks.TeacherFamily(layer=3, hidden=(6, 5))


@pytest.mark.parametrize("first_order", [False, True])
def test_the_inner_loop_adds_the_proximal_pull_in_closed_form_and_gets_autograds_steps_and_gradients(first_order):
    # descend differentiates a Proximal objective's loss only and adds Λ_n (θ_n − φ_n) itself; the
    # steps and the gradients into φ and Λ must be those of autograd through the whole objective.
    torch.manual_seed(0)
    net = tiny_mlp()
    x, y = torch.randn(6, 1, dtype=DT), torch.randn(6, 1, dtype=DT)
    phi = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    lam = {n: torch.tensor(0.5 + i, dtype=DT, requires_grad=True) for i, n in enumerate(list(phi)[:-1])}  # the last tensor free

    def loss(theta):
        return torch.func.functional_call(net, theta, (x,)).sub(y).pow(2).mean()

    def run(objective):
        theta = mm.adapt.optim.descend(objective, dict(phi), mm.adapt.sgd(0.3), 4, first_order=first_order)[-1]
        out = loss(theta)
        return [t.detach() for t in theta.values()], torch.autograd.grad(out, [*phi.values(), *lam.values()])

    prox = proximal(loss, phi, lam)
    closed, autograd = run(prox), run(lambda theta: prox(theta))
    for a, b in zip([*closed[0], *closed[1]], [*autograd[0], *autograd[1]]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert any(g.abs().sum() > 0 for g in closed[1][len(phi):])  # Λ does reach the meta-gradient
