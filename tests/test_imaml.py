"""iMAML and the implicit meta-gradient, against closed forms and the unrolled inner loop."""

from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import modmeta as mm
from helpers import DT, linear_batch, meta_grads, sine_batch, tiny_mlp
from modmeta.learners.imaml import IMAML
from modmeta.learners.shrinkage import SigmaIMAML, SigmaMAML
from modmeta.meta.implicit import conjugate_gradient, curvatures


def linear_model(dim: int = 3) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(dim, 1).to(DT)


def closed_form_imaml_grad(phi: torch.Tensor, lam: float, batch: mm.tasks.TaskBatch) -> torch.Tensor:
    """``d/dφ`` of the mean query loss at the exact proximal solution, by autograd through a
    linear solve. ``φ = [w, b]``; the support loss ``(1/N) ‖Zθ − y‖²`` with ``Z = [x, 1]``."""
    phi = phi.clone().requires_grad_()
    total = 0.0
    for xs, ys, xq, yq in zip(*batch.tensors()):
        z = torch.cat([xs, torch.ones(len(xs), 1, dtype=DT)], 1)
        zq = torch.cat([xq, torch.ones(len(xq), 1, dtype=DT)], 1)
        a = 2 * z.T @ z / len(z)
        theta = torch.linalg.solve(a + lam * torch.eye(len(phi), dtype=DT), 2 * z.T @ ys[:, 0] / len(z) + lam * phi)
        total = total + (zq @ theta - yq[:, 0]).pow(2).mean()
    return torch.autograd.grad(total / len(batch), phi)[0]


def test_conjugate_gradient_solves_a_positive_definite_system_and_runs_under_vmap():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 6, 6, generator=g, dtype=DT)
    a = m @ m.transpose(1, 2) + 0.5 * torch.eye(6, dtype=DT)
    b = torch.randn(3, 6, generator=g, dtype=DT)

    def solve(a1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
        return conjugate_gradient(lambda p: {"v": a1 @ p["v"]}, {"v": b1}, iterations=12)["v"]

    torch.testing.assert_close(torch.func.vmap(solve)(a, b), torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_conjugate_gradient_stops_at_negative_curvature():
    a = torch.diag(torch.tensor([2.0, -1.0], dtype=DT))

    def cg(b: list[float]) -> torch.Tensor:
        return conjugate_gradient(lambda p: {"v": a @ p["v"]}, {"v": torch.tensor(b, dtype=DT)}, 5)["v"]

    torch.testing.assert_close(cg([0.0, 1.0]), torch.zeros(2, dtype=DT))  # bᵀAb < 0: no step
    # b = [1, 1]: the first direction has bᵀAb = 1 > 0, its step is x = (bᵀb / bᵀAb) b = 2b;
    # the second direction has negative curvature, so CG stops there.
    torch.testing.assert_close(cg([1.0, 1.0]), torch.tensor([2.0, 2.0], dtype=DT))


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_imaml_gradient_equals_closed_form_on_linear_regression(execution):
    batch = linear_batch()
    learner = IMAML(linear_model(), inner_lr=0.1, inner_steps=400, lam=0.7, cg_steps=8, execution=execution)
    learner.meta_backward(batch)
    ours = torch.cat([learner.model.weight.grad[0], learner.model.bias.grad])
    phi = torch.cat([learner.model.weight.detach()[0], learner.model.bias.detach()])
    torch.testing.assert_close(ours, closed_form_imaml_grad(phi, 0.7, batch), rtol=1e-8, atol=1e-10)


def smooth_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 1)).to(DT)


def test_imaml_approaches_the_gradient_through_a_long_unrolled_inner_loop():
    # A smooth network: with ReLU and 5 support points, gradient descent can chatter across a
    # kink and never reach a stationary point, where no implicit gradient is exact.
    batch = sine_batch(tasks=3)
    lam = 5.0
    implicit = meta_grads(IMAML(smooth_net(), inner_lr=0.05, inner_steps=150, lam=lam, cg_steps=40), batch)
    unrolled = meta_grads(SigmaMAML(smooth_net(), inner_lr=0.05, inner_steps=150, sigma=lam**-0.5,
                                    modules=lambda n: "all", learn_sigma=False, min_sigma=0.0), batch)
    for n, g in implicit.items():
        torch.testing.assert_close(g, unrolled[n], rtol=1e-6, atol=1e-8)
    assert max(g.abs().max().item() for g in implicit.values()) > 1e-2  # not a vacuous match


def test_curvatures_are_the_ends_of_the_hessian_spectrum_and_leave_the_global_rng_alone():
    a = torch.diag(torch.tensor([3.0, -2.0, 1.0, 0.5], dtype=DT))
    state = torch.get_rng_state()
    low, high = curvatures(lambda p: 0.5 * p["w"] @ a @ p["w"], {"w": torch.ones(4, dtype=DT)}, iterations=200)
    assert (low, high) == (pytest.approx(-2.0, abs=1e-6), pytest.approx(3.0, abs=1e-6))
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        curvatures(lambda p: p["w"].sum(), {"w": torch.ones(2, dtype=DT)}, iterations=0)


def test_agreement_of_the_implicit_and_unrolled_gradients_tracks_how_stationary_the_inner_loop_ends():
    batch = sine_batch(tasks=3)
    converged = IMAML(smooth_net(), inner_lr=0.05, inner_steps=150, lam=5.0, cg_steps=40)
    check = converged.outer.agreement(converged.tasks(batch))
    assert check["cosine"] == pytest.approx(1.0, abs=1e-9) and check["norm_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert check["stationarity"] < 1e-8 and check["stationarity_ratio"] < 1e-8
    assert check["lowest_curvature"] > 0  # a minimum: the proximal term (λ = 5) convexifies it
    assert all(p.grad is None for p in converged.parameters())  # a check, not a training step
    # Two inner steps are far from the proximal problem's minimum: the implicit gradient
    # assumes one and disagrees with the gradient of the two steps actually taken.
    early = IMAML(smooth_net(), inner_lr=0.05, inner_steps=2, lam=5.0, cg_steps=40)
    rough = early.outer.agreement(early.tasks(batch))
    assert rough["stationarity_ratio"] > 0.1 and rough["cosine"] < 0.999 and abs(rough["norm_ratio"] - 1) > 0.05
    with pytest.raises(ValueError, match="at least one task"):
        early.outer.agreement([])


def test_sigma_imaml_with_equal_fixed_sigmas_is_imaml_with_lambda_one_over_sigma_squared():
    batch = sine_batch(tasks=3)
    sigma = 0.6
    ours = meta_grads(SigmaIMAML(tiny_mlp(), inner_lr=0.05, inner_steps=20, sigma=sigma, learn_sigma=False), batch)
    imaml = meta_grads(IMAML(tiny_mlp(), inner_lr=0.05, inner_steps=20, lam=1 / sigma**2), batch)
    assert set(ours) == set(imaml)  # fixed σ: no σ parameter to learn
    for n, g in imaml.items():
        torch.testing.assert_close(ours[n], g, rtol=1e-10, atol=1e-12)


def test_the_priors_pull_as_coupling_gives_the_implicit_gradient_of_the_whole_objective():
    # The implicit gradient's last step differentiates only the prior's pull Λ(θ − φ) in ψ;
    # without the task's coupling it differentiates all of ∇_θ F: the same gradients, φ and σ.
    learner = SigmaIMAML(tiny_mlp(), inner_lr=0.05, inner_steps=10, sigma=0.6, cg_steps=5, damping=0.5)
    for task in learner.tasks(sine_batch(tasks=2)):
        assert task.coupling is not None
        wrt = [p for p in task.psi.values() if p.requires_grad]
        assert any(n.startswith("shrinkage.") for n in task.psi)
        pulled, whole = (torch.autograd.grad(learner.outer(t).surrogate, wrt)
                         for t in (task, dataclasses.replace(task, coupling=None)))
        for a, b in zip(pulled, whole):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once while active: each storage an operation
    returns is counted until it is freed. Deterministic, unlike the process's RSS."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in self.seen:
                    self.seen.add(id(storage))
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, id(storage), storage.nbytes())
        return out

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.seen.discard(key)


def peak_meta_backward_bytes(learner: mm.learners.Learner, batch: mm.tasks.TaskBatch) -> int:
    learner.zero_grad()
    with PeakMemory() as memory:
        learner.meta_backward(batch)
    return memory.peak


def test_imaml_memory_does_not_grow_with_inner_steps():
    batch = mm.tasks.Sinusoid(200, 10).sample(2, torch.Generator().manual_seed(0)).to("cpu", DT)

    def peak(cls: type, steps: int) -> int:
        torch.manual_seed(0)
        model = mm.models.MLP(1, 1, (64, 64)).to(DT)
        return peak_meta_backward_bytes(cls(model, inner_lr=0.01, inner_steps=steps), batch)

    imaml_5, imaml_50 = peak(IMAML, 5), peak(IMAML, 50)
    maml_5, maml_50 = peak(SigmaMAML, 5), peak(SigmaMAML, 50)
    print(f"peak bytes: iMAML {imaml_5} (5 steps) {imaml_50} (50 steps); "
          f"σ-MAML {maml_5} (5 steps) {maml_50} (50 steps)")
    assert imaml_50 == imaml_5
    assert maml_50 > 5 * maml_5  # the measure sees an unrolled graph grow
