"""Modular meta-learning: module libraries, schemes, simulated annealing, BounceGrad and MoMA,
and the task families whose truth is modular."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import modmeta as mm
from helpers import DT, assert_matches_finite_differences
from modmeta import config
from modmeta.adapt.structure import adapt_temperature, anneal, metropolis, target_rate, update_rate
from modmeta.learners import BounceGrad, MoMA
from modmeta.models import ModularNet
from modmeta.structures import component_match, figures, usage
from modmeta.tasks.modular import FUNCTIONS, POOL, Compositions, FunctionSums, PairFamily, Sines

ROOT = Path(__file__).resolve().parents[1]


def net(scheme: str = "sum", slots: int = 2, seed: int = 0) -> ModularNet:
    torch.manual_seed(seed)
    return ModularNet(1, 1, modules=((3, (5, 4)), (4, (6,))), scheme=scheme, slots=slots).to(DT)


def sums_batch(tasks: int = 6, seed: int = 0, shots: int = 5) -> mm.tasks.TaskBatch:
    return FunctionSums(shots=shots, queries=7).sample(tasks, torch.Generator().manual_seed(seed)).to("cpu", DT)


def explicit_module(model: ModularNet, k: int, x: torch.Tensor) -> torch.Tensor:
    """Module ``k`` of the library run as a plain MLP built from its slice of the stacked weights."""
    for stack, start in zip(model.library.types, model.library.starts):
        if start <= k < start + stack.count:
            i = k - start
            h = x
            for layer, (w, b) in enumerate(zip(stack.weights, stack.biases)):
                h = F.linear(h, w[i], b[i])
                if layer < len(stack.weights) - 1:
                    h = torch.relu(h)
            return h
    raise IndexError(k)


# -- module libraries and schemes ----------------------------------------------------------


@pytest.mark.parametrize("structure", [[0, 5], [6, 6], [2, 3, 4]])
def test_sum_structure_is_the_sum_of_its_modules(structure):
    model = net(slots=len(structure))
    x = torch.linspace(-1, 1, 9, dtype=DT)[:, None]
    s = torch.tensor(structure)
    expected = sum(explicit_module(model, k, x) for k in structure)
    torch.testing.assert_close(model(s, x), expected)


def test_composition_structure_is_the_composition_of_its_modules():
    model = net(scheme="composition", slots=3)
    x = torch.linspace(-1, 1, 9, dtype=DT)[:, None]
    s = torch.tensor([1, 4, 6])  # f_6(f_4(f_1(x))): slot 1 first, types mixed
    expected = explicit_module(model, 6, explicit_module(model, 4, explicit_module(model, 1, x)))
    torch.testing.assert_close(model(s, x), expected)
    assert model.scheme.describe(s) == "m6 ∘ m4 ∘ m1"


def test_structures_run_for_many_tasks_at_once_under_vmap():
    model = net()
    structures = torch.tensor([[0, 1], [5, 6], [3, 3]])
    x = torch.rand(3, 8, 1, dtype=DT)
    batched = torch.func.vmap(model)(structures, x)
    looped = torch.stack([model(s, xi) for s, xi in zip(structures, x)])
    torch.testing.assert_close(batched, looped)


def test_proposal_changes_exactly_one_slot_to_another_module():
    scheme = net(slots=3).scheme
    g = torch.Generator().manual_seed(0)
    s = scheme.initial(500, 7, g)
    p = scheme.propose(s, 7, g)
    assert ((p != s).sum(1) == 1).all()
    assert p.min() >= 0 and p.max() < 7
    changed_slot = (p != s).float().argmax(1)
    assert set(changed_slot.tolist()) == {0, 1, 2}  # every slot gets proposed
    same = [scheme.propose(s, 7, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(same[0], same[1])  # the generator alone decides


def test_unknown_scheme_and_wrong_model_are_refused():
    with pytest.raises(ValueError, match="unknown composition scheme 'graph'"):
        ModularNet(1, 1, scheme="graph")
    with pytest.raises(ValueError, match="needs a modmeta.models.ModularNet"):
        BounceGrad(mm.models.MLP(1, 1))


# -- simulated annealing -------------------------------------------------------------------


def test_metropolis_accepts_and_rejects_as_defined():
    current = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=DT)
    proposed = torch.tensor([0.5, 1.0, 1.1, 1.5, 3.0, float("nan")], dtype=DT)
    tau = 0.5
    accept = metropolis(current, proposed, tau, torch.Generator().manual_seed(3))
    u = torch.rand(6, generator=torch.Generator().manual_seed(3), dtype=DT)
    probability = torch.exp((current - proposed) / tau).clamp(max=1)
    expected = u < probability
    assert torch.equal(accept, expected)
    assert accept[0] and accept[1]  # better and equal: always
    assert not accept[5]  # NaN: never
    # The frequency of accepting a worse proposal is exp(-Δ/τ).
    many = metropolis(torch.zeros(20000, dtype=DT), torch.full((20000,), 0.3, dtype=DT), 0.5,
                      torch.Generator().manual_seed(0))
    assert many.double().mean().item() == pytest.approx(math.exp(-0.6), abs=0.015)


def test_temperature_rises_when_too_few_worse_moves_are_accepted_and_falls_otherwise():
    tau = torch.tensor([1.0, 1.0], dtype=DT)
    rate = torch.tensor([0.01, 0.5], dtype=DT)
    new = adapt_temperature(tau, rate, target=0.1)
    assert new[0] > 1.0 and new[1] < 1.0
    # The running rate moves towards the observed fraction, and stays without worse proposals.
    r = update_rate(torch.tensor(0.5, dtype=DT), torch.tensor(0.0, dtype=DT), torch.tensor(4.0, dtype=DT))
    assert r.item() == pytest.approx(0.45)
    r = update_rate(torch.tensor(0.5, dtype=DT), torch.tensor(0.0, dtype=DT), torch.tensor(0.0, dtype=DT))
    assert r.item() == 0.5
    # The target decays geometrically from start to end, then stays.
    assert target_rate(0, 0.5, 0.005, 100) == pytest.approx(0.5)
    assert target_rate(50, 0.5, 0.005, 100) == pytest.approx(0.05)
    assert target_rate(100, 0.5, 0.005, 100) == target_rate(500, 0.5, 0.005, 100) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="0 < end <= start <= 1"):
        target_rate(0, 0.01, 0.1, 10)


def test_learner_heats_up_when_it_rejects_worse_proposals_and_cools_when_it_accepts_them():
    batch = sums_batch(tasks=16)
    cold = BounceGrad(net(), temperature=1e-6, accept_start=0.5)
    cold.meta_backward(batch)
    assert cold.temperature.item() > 1e-6
    hot = BounceGrad(net(), temperature=1e6, accept_start=0.5, accept_end=0.4)
    hot.accept_rate.fill_(1.0)
    hot.meta_backward(batch)
    assert hot.temperature.item() < 1e6


def test_anneal_finds_the_minimum_of_a_known_score_and_keeps_the_best():
    target = torch.tensor([[3, 1], [0, 4]])

    def score(s: torch.Tensor) -> torch.Tensor:  # [T, P, 2] -> [T, P]: distance to the target
        return (s - target[:, None]).abs().sum(-1).to(DT)

    scheme = net().scheme
    g = torch.Generator().manual_seed(0)
    best, loss = anneal(score, scheme.initial(2, 5, g), lambda s: scheme.propose(s, 5, g), 300, 1.0, 0.5, 0.005, g)
    assert torch.equal(best, target) and (loss == 0).all()


# -- BounceGrad ----------------------------------------------------------------------------


@pytest.mark.parametrize("learner_class", [BounceGrad, MoMA])
def test_vectorised_proposal_scoring_equals_a_loop(learner_class):
    learner = learner_class(net(), inner_lr=0.05, **({"inner_steps": 2} if learner_class is MoMA else {}))
    batch = sums_batch(tasks=4)
    g = torch.Generator().manual_seed(1)
    structures = torch.randint(learner.model.num_modules, (4, 3, 2), generator=g)
    vectorised = learner.score(structures, batch.x_support, batch.y_support)
    params = dict(learner.model.named_parameters())
    for t in range(4):
        xs, ys = batch.x_support[t], batch.y_support[t]
        for p in range(3):
            s = structures[t, p]
            weights = list(params.values())
            for _ in range(learner.train_steps):  # MoMA: plain autograd SGD on the library weights
                out = torch.func.functional_call(learner.model, dict(zip(params, weights)), (s, xs))
                grads = torch.autograd.grad(F.mse_loss(out, ys), weights, allow_unused=True)
                weights = [w if gr is None else w - 0.05 * gr for w, gr in zip(weights, grads)]
            out = torch.func.functional_call(learner.model, dict(zip(params, weights)), (s, xs))
            assert vectorised[t, p].item() == pytest.approx(F.mse_loss(out, ys).item(), rel=1e-10)


def test_bouncegrad_step_updates_only_the_batch_structures_and_needs_task_ids():
    learner = BounceGrad(net())
    fam = FunctionSums(shots=5, queries=7)
    g = torch.Generator().manual_seed(0)
    first = fam.sample(30, g).to("cpu", DT)
    learner.meta_backward(first)
    before = learner.structures.clone()
    batch = fam.sample(8, g).to("cpu", DT)
    learner.zero_grad()
    stats = learner.meta_backward(batch)
    assert set(stats) >= {"loss", "metric"}
    others = torch.ones(len(learner.structures), dtype=torch.bool)
    others[batch.task_ids] = False
    others[len(before):] = False
    assert torch.equal(learner.structures[: len(before)][others[: len(before)]], before[others[: len(before)]])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())
    no_ids = mm.tasks.TaskBatch(*batch.tensors())
    with pytest.raises(ValueError, match="task_ids"):
        learner.meta_backward(no_ids)


def test_bouncegrad_meta_gradient_is_the_validation_loss_gradient_under_the_chosen_structures():
    learner = BounceGrad(net())
    batch = sums_batch(tasks=5)
    learner.meta_backward(batch)
    grads = {n: p.grad.clone() for n, p in learner.named_parameters()}
    chosen = learner.structures[batch.task_ids]
    learner.zero_grad()
    total = sum(F.mse_loss(learner.model(chosen[t], batch.x_query[t]), batch.y_query[t]) for t in range(5)) / 5
    total.backward()
    for n, p in learner.named_parameters():
        torch.testing.assert_close(grads[n], p.grad)


def test_moma_meta_gradient_matches_finite_differences():
    learner = MoMA(net(), inner_lr=0.1, inner_steps=2)
    batch = sums_batch(tasks=3)
    learner.meta_backward(batch)
    grads = {n: p.grad.clone() for n, p in learner.named_parameters()}
    chosen = learner.structures[batch.task_ids]

    def meta_loss() -> float:
        return sum(learner._val_loss(chosen[t], *(v[t] for v in batch.tensors()))[0].item() for t in range(3)) / 3

    params = dict(learner.named_parameters())
    assert_matches_finite_differences(params, grads, meta_loss, seed=2, directions=3)


def test_resumed_bouncegrad_continues_exactly():
    fam = FunctionSums(shots=5, queries=7)

    def run(learner: BounceGrad, steps: int, g: torch.Generator) -> None:
        opt = torch.optim.SGD(learner.parameters(), lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            learner.meta_backward(fam.sample(8, g).to("cpu", DT))
            opt.step()

    g = torch.Generator().manual_seed(0)
    straight = BounceGrad(net())
    run(straight, 5, g)
    g = torch.Generator().manual_seed(0)
    first = BounceGrad(net())
    run(first, 3, g)
    saved = {k: v.clone() for k, v in first.state_dict().items()}
    resumed = BounceGrad(net(seed=9))  # other weights and no structures until loaded
    resumed.load_state_dict(saved)
    run(resumed, 2, g)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_search_finds_the_true_pair_when_the_modules_are_the_true_functions():
    # Five piecewise-linear functions, each exactly a 1-2-1 ReLU network, and five distractors.
    pieces = {  # name: (w1, b1, w2, b2) of w2 · relu(w1 x + b1) + b2
        "abs": ([1.0, -1.0], [0.0, 0.0], [1.0, 1.0], 0.0),
        "id": ([1.0, -1.0], [0.0, 0.0], [1.0, -1.0], 0.0),
        "hinge": ([1.0, 0.0], [-0.5, 0.0], [2.0, 0.0], 0.0),
        "ramp": ([-1.0, 0.0], [-0.3, 0.0], [-1.5, 0.0], 0.0),
        "const": ([0.0, 0.0], [0.0, 0.0], [0.0, 0.0], 0.7),
    }

    def piece(w1, b1, w2, b2):
        return lambda x: sum(c * torch.relu(a * x + b) for a, b, c in zip(w1, b1, w2)) + b2

    class TinySums(PairFamily):
        def __init__(self):
            super().__init__({n: piece(*p) for n, p in pieces.items()}, torch.combinations(torch.arange(5), 2),
                             shots=12, queries=10, test_pairs=3, val_pairs=0, split_seed=0, standardise=False)

        def function(self, x, params):
            v = self.values(x)
            return (self.pick(v, params[:, 0]) + self.pick(v, params[:, 1])) / 2

    family = TinySums()
    torch.manual_seed(0)
    model = ModularNet(1, 1, modules=((10, (2,)),), scheme=mm.models.Sum(2, mean=True)).to(DT)
    stack = model.library.types[0]
    with torch.no_grad():
        for k, (w1, b1, w2, b2) in enumerate(pieces.values()):
            stack.weights[0][k] = torch.tensor(w1, dtype=DT)[:, None]
            stack.biases[0][k] = torch.tensor(b1, dtype=DT)
            stack.weights[1][k] = torch.tensor(w2, dtype=DT)[None]
            stack.biases[1][k] = b2
    learner = BounceGrad(model, search_steps=300, temperature=0.1)
    tasks = family.split("test").sample(3, torch.Generator().manual_seed(0)).to("cpu", DT)
    found = learner.search(tasks.x_support, tasks.y_support)
    truth = family.split("test").components(tasks.task_ids)
    assert [sorted(s) for s in found.tolist()] == [sorted(p) for p in truth.tolist()]
    assert learner.curve(tasks).max().item() < 1e-12  # exact functions: no query error
    match = component_match(found, truth, family.names, 10)
    assert match.explained == 1.0 and match.mean_share == 1.0


def test_bouncegrad_learns_function_sums_and_beats_predicting_the_mean():
    torch.manual_seed(0)
    fam = FunctionSums(shots=16, queries=32)
    learner = BounceGrad(ModularNet(1, 1, modules=((6, (16,)),)), search_steps=60, anneal_iterations=200)
    opt = torch.optim.Adam(learner.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        opt.zero_grad()
        learner.meta_backward(fam.sample(16, g))
        opt.step()
    result = mm.evaluate(learner, fam.split("test"), episodes=50, seed=0, batch=50)
    assert result.mean < 0.6  # predicting 0 (the standardised mean) scores about 1


# -- task families -------------------------------------------------------------------------


def test_function_sums_are_the_papers_functions_and_hold_out_new_combinations():
    assert list(FUNCTIONS) == sorted(FUNCTIONS) and len(FUNCTIONS) == 16
    x = np.linspace(-1, 1, 401, endpoint=False)
    reference = {
        "abs": np.abs(x), "arcsinh": np.arcsinh(4 * x) / np.arcsinh(4), "arctan": np.arctan(4 * x) / np.arctan(4),
        "cbrt": np.cbrt(x), "ceil": np.ceil(x), "cos": np.cos(4 * np.pi * x), "cosh": np.cosh(4 * x) / np.cosh(4),
        "exp2": np.exp2(4 * x) / np.exp2(4), "floor": np.floor(x), "id": x, "rint": np.rint(x),
        "sign": np.sign(x), "sin": np.sin(4 * np.pi * x), "sinc": np.sinc(4 * np.pi * x), "square": np.square(x),
        "tanh": np.tanh(x),
    }
    for name, f in FUNCTIONS.items():
        np.testing.assert_allclose(f(torch.tensor(x)).numpy(), reference[name], atol=1e-12, err_msg=name)
    fam = FunctionSums()
    train, test = fam.split("train"), fam.split("test")
    assert train.num_tasks == 108 and test.num_tasks == 12
    pairs = {tuple(p) for p in train.tasks.tolist()} | {tuple(p) for p in test.tasks.tolist()}
    assert len(pairs) == 120 and not {tuple(p) for p in train.tasks.tolist()} & {tuple(p) for p in test.tasks.tolist()}
    assert set(test.tasks.flatten().tolist()) <= set(train.tasks.flatten().tolist())  # known parts only
    b = test.sample(5, torch.Generator().manual_seed(0))
    pair = test.components(b.task_ids)
    x = b.x_query.double()
    raw = torch.stack([FUNCTIONS[fam.names[i]](x[t]) + FUNCTIONS[fam.names[j]](x[t])
                       for t, (i, j) in enumerate(pair.tolist())]) / 2
    torch.testing.assert_close(b.y_query.double(), (raw - fam.y_mean) / fam.y_std, atol=1e-6, rtol=1e-6)
    assert b.x_support.shape == (5, 16, 1) and b.y_query.shape == (5, 64, 1)
    assert (b.x_support >= -1).all() and (b.x_support < 1).all()
    y = train.sample(108, torch.Generator().manual_seed(1)).y_query
    assert abs(y.mean().item()) < 0.1 and abs(y.std().item() - 1) < 0.1  # standardised on meta-training
    assert len(set(train.sample(32, torch.Generator().manual_seed(2)).task_ids.tolist())) == 32
    assert torch.equal(fam.split("val").tasks, train.tasks)  # no validation pairs: the training pairs
    assert FunctionSums(val_pairs=6).split("val").num_tasks == 6


def test_sines_and_compositions():
    sines = Sines(shots=4, queries=6, train_tasks=50, standardise=False)
    b = sines.sample(3, torch.Generator().manual_seed(0))
    f, phase = sines.tasks[b.task_ids].T
    expected = torch.sin(math.pi * (f[:, None, None] * b.x_support + phase[:, None, None]))
    torch.testing.assert_close(b.y_support, expected)
    assert ((0.1 <= sines.tasks[:, 0]) & (sines.tasks[:, 0] <= 5) & (sines.tasks[:, 1] <= math.pi)).all()
    assert sines.split("test").sample(3, torch.Generator().manual_seed(0)).task_ids is None
    assert sines.components(b.task_ids) is None
    comp = Compositions(standardise=False)
    assert comp.num_tasks == 26 and comp.split("test").num_tasks == 4
    b = comp.sample(4, torch.Generator().manual_seed(0))
    names = list(POOL)
    for t, (a, c) in enumerate(comp.components(b.task_ids).tolist()):
        expected = POOL[names[c]](POOL[names[a]](b.x_support[t].double()))
        torch.testing.assert_close(b.y_support[t].double(), expected, atol=1e-6, rtol=1e-6)


def test_task_ids_travel_with_the_batch():
    b = sums_batch(tasks=4)
    assert torch.equal(b.to("cpu", torch.float32).task_ids, b.task_ids)
    assert torch.equal(b.task(2).task_ids, b.task_ids[2:3])
    with pytest.raises(ValueError, match="one id per task"):
        mm.tasks.TaskBatch(*b.tensors(), task_ids=torch.arange(3))


# -- seeing the modules, configs, docs -----------------------------------------------------


def test_component_match_counts_how_true_functions_map_to_modules():
    structures = torch.tensor([[4, 7], [7, 4], [4, 2], [9, 2], [4, 5]])
    components = torch.tensor([[0, 1], [0, 1], [0, 2], [3, 2], [0, 1]])
    match = component_match(structures, components, ["a", "b", "c", "d"], 10)
    assert match.tasks == [4, 3, 2, 1]
    # a and b: module 4 is in all their tasks; c: module 2; d: modules 9 and 2 once each, 9 is d's own.
    assert match.module == [4, 4, 2, 9]
    assert match.share == [1.0, 1.0, 1.0, 1.0]
    assert match.distinct == 3
    assert match.explained == pytest.approx(2 / 5)  # [4, 2] and [9, 2] use exactly their functions' modules
    assert usage(structures, 10)[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0]


def test_modular_figures_and_report(tmp_path):
    fam = FunctionSums(shots=8, queries=8)
    learner = BounceGrad(ModularNet(1, 1, modules=((4, (8,)),)), search_steps=10)
    learner.meta_backward(fam.sample(20, torch.Generator().manual_seed(0)))
    written = figures(learner, fam, tmp_path, episodes=12)
    assert {p.name for p in written} == {"module_usage.png", "test_module_usage.png", "test_structures.png",
                                         "test_function_modules.png", "structures.json"}
    assert all(p.stat().st_size > 0 for p in written)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("function-sums-*.yaml"))
                         + sorted((ROOT / "configs").glob("sines-*.yaml")))
def test_benchmark_configs_build(path):
    run = config.build(config.load(path))
    assert run.learner is not None and run.tasks.num_tasks


def test_the_docs_scheme_example_runs():
    text = (ROOT / "docs" / "modular.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(code, scope)  # defines a scheme, builds a learner
    learner = scope["learner"]
    batch = FunctionSums(shots=5, queries=5).sample(4, torch.Generator().manual_seed(0))
    learner.meta_backward(batch)
    assert learner.curve(batch, 0).shape == (4, 1)
