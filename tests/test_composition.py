"""Learners composed from values: inner optimizers, outer updates, priors and aggregations."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

import modmeta as mm
import reference
from helpers import DT, assert_matches_finite_differences, meta_grads, sine_batch, tiny_mlp
from modmeta import config
from modmeta.adapt import optim
from modmeta.cli import main
from modmeta.learners import GradientLearner

RECORDED = torch.load(reference.FILE, weights_only=True)


# -- nothing changed: every learner's meta-gradient as recorded before the redesign --------


@pytest.mark.parametrize("case", [*reference.CASES, "linearhead"])
def test_every_learner_gives_the_meta_gradient_recorded_before_the_redesign(case):
    got = reference.linear_head_gradient() if case == "linearhead" else reference.meta_gradient(*reference.build(case))
    expected = RECORDED[case]
    assert [shape for shape, _ in got] == [shape for shape, _ in expected]
    for (_, g), (_, e) in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-14)


# -- inner optimizers ------------------------------------------------------------------------


def run_optimizer(opt: optim.InnerOptimizer, grads: list[torch.Tensor], start: torch.Tensor) -> list[torch.Tensor]:
    """The parameters after feeding ``opt`` the gradients ``grads`` one step at a time."""
    params = {"w": start.clone()}
    opt.bind(params, len(grads))
    state = opt.init(params)
    out = []
    for g in grads:
        params, state = opt.update({"w": g}, state, params)
        out.append(params["w"])
    return out


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_adam_steps_equal_torch_optim_adam(beta1):
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=g, dtype=DT) for _ in range(6)]
    grads[2][1] = 0.0  # a zero gradient coordinate
    start = torch.randn(5, generator=g, dtype=DT)
    ours = run_optimizer(mm.adapt.adam(lr=0.01, beta1=beta1, beta2=0.99, eps=1e-6), grads, start)
    w = start.clone().requires_grad_()
    reference_opt = torch.optim.Adam([w], lr=0.01, betas=(beta1, 0.99), eps=1e-6)
    for gk, ok in zip(grads, ours):
        w.grad = gk.clone()
        reference_opt.step()
        torch.testing.assert_close(ok, w.detach(), rtol=1e-12, atol=1e-14)


def test_adam_without_autograd_updates_all_tensors_at_once_with_the_same_arithmetic(monkeypatch):
    """Under no_grad Adam runs torch._foreach_* kernels on all tensors at once; the result is
    the per-tensor form's, bit for bit, and the per-tensor form is what vmap and autograd see.
    (An annealed rate: at a fixed one the whole step is one fused kernel, the next test.)"""
    g = torch.Generator().manual_seed(2)
    shapes = [(4, 3), (3,), (2, 2, 3)]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(4)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads[1][0][0, 0] = 0.0
    assert not optim._plain([torch.ones(2)])  # grad mode is on here
    with torch.no_grad():
        assert optim._plain([torch.ones(2)])
        assert not torch.func.vmap(lambda x: torch.tensor(optim._plain([x])))(torch.ones(3, 2)).any()

    def run() -> list[dict[str, torch.Tensor]]:
        return steps_without_autograd(mm.adapt.adam(lr=0.01, beta1=0.5, beta2=0.9, anneal_to=0.5), start, grads)

    calls = counted(monkeypatch, optim.ScaleByAdam, "_update_together")
    fast = run()
    assert len(calls) == 4
    monkeypatch.setattr(optim, "_plain", lambda *groups: False)
    for a, b in zip(fast, run()):
        assert all(torch.equal(a[n], b[n]) for n in a)


def steps_without_autograd(opt: optim.InnerOptimizer, start: list[torch.Tensor], grads: list[list[torch.Tensor]],
                           state: optim.State | None = None) -> list[dict[str, torch.Tensor]]:
    """The parameters after each step of ``opt`` from ``start`` (named "0", "1", ...) on
    ``grads``, under ``torch.no_grad``, from ``state`` or a fresh one."""
    params = {str(i): p for i, p in enumerate(start)}
    opt.bind(params, len(grads))
    state, out = opt.init(params) if state is None else state, []
    with torch.no_grad():
        for step in grads:
            params, state = opt.update({str(i): x for i, x in enumerate(step)}, state, params)
            out.append(params)
    return out


def counted(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[int]:
    """A list that grows by one at each call of ``owner.name`` (patched for the test)."""
    calls, original = [], getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adam_at_a_fixed_rate_without_autograd_is_one_fused_kernel_with_the_same_numbers(monkeypatch, dtype):
    """Reptile's inner Adam (fixed rate, nothing differentiated) steps with torch._fused_adam_:
    the per-tensor form's numbers to rounding, whatever the layouts of the parameters (a
    channels-last convolution weight), their gradients and the carried moments; the parameters
    keep their layout, and the caller's tensors are not written."""
    g = torch.Generator().manual_seed(3)
    shapes = [(6, 3, 3, 3), (6,), (4, 6)]
    start = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    start[0] = start[0].contiguous(memory_format=torch.channels_last)
    grads = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(4)]  # NCHW: not the weight's
    grads[1][1][2] = 0.0
    grads[2][0] = grads[2][0].contiguous(memory_format=torch.channels_last)
    _, (fresh, *others) = mm.adapt.adam(beta1=0.0).init({str(i): p.contiguous() for i, p in enumerate(start)})
    moments = [{n: torch.rand(x.shape, generator=g, dtype=dtype) for n, x in fresh[k].items()} for k in (0, 1)]
    carried = (3, ((*moments, torch.tensor(3.0, dtype=fresh[2].dtype)), *others))  # contiguous moments
    given = [*start, *moments[0].values(), *moments[1].values()]
    kept = [t.clone() for t in given]

    def run() -> list[dict[str, torch.Tensor]]:
        return steps_without_autograd(mm.adapt.adam(lr=0.01, beta1=0.0, beta2=0.99), start, grads, carried)

    calls = counted(monkeypatch, optim.ScaleByAdam, "step_fused")
    fast = run()
    assert len(calls) == 4
    assert fast[-1]["0"].is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a, b) for a, b in zip(kept, given))
    monkeypatch.setattr(optim, "_plain", lambda *groups: False)
    tolerance = {"rtol": 1e-12, "atol": 1e-15} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    for a, b in zip(fast, run()):
        for n in a:
            torch.testing.assert_close(a[n], b[n], **tolerance)


def test_an_inner_gradient_without_autograd_is_torch_func_grads_to_the_bit_and_unused_tensors_get_zeros():
    """Outside autograd and torch.func (Reptile's inner loop, evaluation) the inner gradient is one
    torch.autograd.grad call; inside vmap or an outer differentiation it stays torch.func.grad."""
    torch.manual_seed(0)
    params = {"w": torch.randn(3, 2), "b": torch.randn(2), "unused": torch.randn(4)}
    x = torch.randn(5, 3)

    def f(p):
        return torch.tanh(x @ p["w"] + p["b"]).pow(2).sum()

    with torch.no_grad():
        plain = optim.gradient(f, params)
    functional = torch.func.grad(f)(params)
    assert all(torch.equal(plain[n], functional[n]) for n in params)
    assert torch.equal(plain["unused"], torch.zeros(4)) and not plain["w"].requires_grad
    with torch.no_grad():
        batched = torch.func.vmap(lambda s: optim.gradient(lambda p: s * f(p), params)["w"])(torch.tensor([1.0, 2.0]))
    assert torch.allclose(batched[1], 2 * functional["w"])
    leaf = {n: p.clone().requires_grad_() for n, p in params.items()}
    second = torch.autograd.grad(optim.gradient(f, leaf)["b"].sum(), leaf["b"])[0]
    assert second.abs().sum() > 0  # differentiable where autograd records


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_steps_equal_torch_optim_sgd(nesterov):
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(4, generator=g, dtype=DT) for _ in range(5)]
    start = torch.randn(4, generator=g, dtype=DT)
    ours = run_optimizer(mm.adapt.sgd(lr=0.1, momentum=0.8, nesterov=nesterov), grads, start)
    w = start.clone().requires_grad_()
    reference_opt = torch.optim.SGD([w], lr=0.1, momentum=0.8, nesterov=nesterov)
    for gk, ok in zip(grads, ours):
        w.grad = gk.clone()
        reference_opt.step()
        torch.testing.assert_close(ok, w.detach(), rtol=1e-12, atol=1e-14)


def test_an_annealed_rate_falls_on_a_half_cosine_to_its_final_fraction_and_stays_there():
    # Each step is c_k * lr * g with c_k = final + (1 - final)(1 + cos(pi k / (K - 1)))/2 over
    # the K bound steps, then `final`: the steps' updates are read back from the parameters.
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(3, generator=g, dtype=DT) for _ in range(7)]
    start = torch.randn(3, generator=g, dtype=DT)
    opt = mm.adapt.sgd(lr=0.1, anneal_to=0.2).bind({"w": start}, 5)  # 5 steps bound, 7 taken
    params, state, ours = {"w": start}, opt.init({"w": start}), []
    for gk in grads:
        params, state = opt.update({"w": gk}, state, params)
        ours.append(params["w"])
    factors = [0.2 + 0.8 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)] + [0.2, 0.2]
    before = [start, *ours[:-1]]
    for f, gk, b, a in zip(factors, grads, before, ours):
        torch.testing.assert_close(b - a, f * 0.1 * gk, rtol=1e-12, atol=1e-14)
    assert factors[0] == 1 and factors[4] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"final fraction must be in \(0, 1\]"):
        mm.adapt.adam(anneal_to=0.0)
    assert str(mm.adapt.sgd(0.1, anneal_to=0.05)) == "sgd(lr=0.1, anneal_to=0.05)"


def test_an_annealed_inner_loop_settles_where_a_fixed_rate_bounces():
    # One coordinate of curvature a with a * lr = 1.9: gradient descent at the fixed rate
    # shrinks the distance to the minimum by |1 - 1.9| = 0.9 a step, bouncing across it; the
    # annealed rate's last steps contract by far more.
    a, steps = 19.0, 16
    def objective(p):
        return 0.5 * a * (p["w"] ** 2).sum()
    ends = {}
    for name, opt in {"fixed": mm.adapt.sgd(0.1), "annealed": mm.adapt.sgd(0.1, anneal_to=0.05)}.items():
        opt.bind({"w": torch.ones(1, dtype=DT)}, steps)
        ends[name] = mm.adapt.descend(objective, {"w": torch.ones(1, dtype=DT)}, opt, steps)[-1]["w"].abs().item()
    assert ends["fixed"] == pytest.approx(0.9**steps)
    assert ends["annealed"] < 1e-3 * ends["fixed"]


def bn_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                               torch.nn.Linear(6, 1)).to(DT)


def mean_task_loss(learner: GradientLearner, batch: mm.tasks.TaskBatch) -> float:
    return sum(learner.task_loss(*(t[i] for t in batch.tensors()))[0].item() for i in range(len(batch))) / len(batch)


@pytest.mark.parametrize("rates", ["fixed", "per_layer_per_step"])
def test_meta_gradient_through_three_adam_inner_steps_equals_finite_differences(rates):
    learner = GradientLearner(bn_mlp(), inner=mm.adapt.adam(lr=0.05, beta1=0.5, rates=rates), inner_steps=3,
                              outer=mm.meta.exact(), execution="loop").to(DT)
    batch = sine_batch()
    grads = meta_grads(learner, batch)
    params = dict(learner.named_parameters())
    assert any(n.startswith("model.1.") for n in params)  # the BatchNorm's scale and shift are in the check
    assert_matches_finite_differences(params, grads, lambda: mean_task_loss(learner, batch), seed=3)


def dead_unit_mlp() -> torch.nn.Module:
    """An MLP whose first hidden unit is never active on inputs in [-5, 5]: the support loss's
    gradient in its weights is exactly zero."""
    net = tiny_mlp()
    with torch.no_grad():
        net.body[0].weight[0] = 0.0
        net.body[0].bias[0] = -1.0
    return net


def test_second_order_through_adam_is_finite_where_a_gradient_is_exactly_zero(monkeypatch):
    batch = sine_batch()

    def meta_gradient() -> dict[str, torch.Tensor]:
        learner = GradientLearner(dead_unit_mlp(), inner=mm.adapt.adam(lr=0.01, beta1=0.0), inner_steps=2,
                                  outer=mm.meta.exact()).to(DT)
        return meta_grads(learner, batch)

    grads = meta_gradient()
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert (grads["model.body.2.weight"][:, 0] == 0).all()  # the dead unit's outgoing weights get none either
    monkeypatch.setattr(optim, "_sqrt", torch.sqrt)  # the plain square root: its derivative at 0 is infinite
    assert not all(torch.isfinite(g).all() for g in meta_gradient().values())


# -- composed learners: vmapped equals looped --------------------------------------------------

COMPOSED = {
    "reptile+adam": lambda m, ex: mm.learners.Reptile(m, inner=mm.adapt.adam(1e-2, beta1=0.0), inner_steps=3,
                                                      execution=ex),
    "reptile+learned-rates": lambda m, ex: mm.learners.Reptile(
        m, inner=mm.adapt.sgd(0.05, rates="per_layer_per_step"), inner_steps=2, execution=ex),
    "fomaml+adam": lambda m, ex: mm.learners.FOMAML(m, inner=mm.adapt.adam(1e-2), inner_steps=2, execution=ex),
    # Second order through Adam scales by up to 1/eps where a gradient is near 0 (the prior's
    # is, after the first step): eps=1e-8 would amplify vmap's and the loop's rounding to 1e-4.
    "sigma-maml+adam": lambda m, ex: mm.learners.SigmaMAML(m, inner=mm.adapt.adam(1e-2, eps=1e-3), inner_steps=2,
                                                           sigma=0.5, execution=ex),
    "momentum+per-parameter": lambda m, ex: GradientLearner(
        m, inner=mm.adapt.sgd(0.05, momentum=0.9, rates="per_parameter"), inner_steps=2, execution=ex),
    "imaml+damping": lambda m, ex: mm.learners.IMAML(m, inner_lr=0.05, inner_steps=4, lam=2.0, cg_steps=3,
                                                     damping=0.5, execution=ex),
    "sigma-reptile+adam": lambda m, ex: mm.learners.SigmaReptile(m, inner=mm.adapt.adam(1e-2), inner_steps=3,
                                                                 cg_steps=3, execution=ex),
    "anil+adam": lambda m, ex: mm.learners.ANIL(m, inner=mm.adapt.adam(1e-2), inner_steps=2, execution=ex),
}


@pytest.mark.parametrize("name", COMPOSED)
def test_every_composed_learner_gives_the_same_meta_gradient_vmapped_and_looped(name):
    batch = sine_batch()
    vmapped = meta_grads(COMPOSED[name](tiny_mlp(), "vmap").to(DT), batch)
    looped = meta_grads(COMPOSED[name](tiny_mlp(), "loop").to(DT), batch)
    assert vmapped.keys() == looped.keys()
    for n in vmapped:
        torch.testing.assert_close(vmapped[n], looped[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["bouncegrad", "moma", "protonet"])
def test_modular_and_metric_learners_honour_execution(name):
    registry_name, model, kwargs, batch = reference.CASES[name]
    grads = {}
    for execution in ("vmap", "loop"):
        extra = {"execution": execution}
        learner = mm.registry.LEARNERS[registry_name].build(model(), **kwargs, **extra).to(DT)
        grads[execution] = meta_grads(learner, batch())
    for n in grads["vmap"]:
        torch.testing.assert_close(grads["vmap"][n], grads["loop"][n], rtol=1e-9, atol=1e-12)


def test_reptile_with_learned_rates_moves_its_rates_and_keeps_reptiles_difference():
    batch = sine_batch()
    learner = COMPOSED["reptile+learned-rates"](tiny_mlp(), "loop").to(DT)
    grads = meta_grads(learner, batch)
    rate_grads = [g for n, g in grads.items() if n.startswith("rates.")]
    assert rate_grads and all(g.abs().sum() > 0 for g in rate_grads)
    with torch.no_grad():
        adapted = [learner.adapt(*(t[i] for t in batch.tensors()[:2])) for i in range(len(batch))]
    for n, p in learner.model.named_parameters():
        mean = torch.stack([a[n] for a in adapted]).mean(0)
        torch.testing.assert_close(grads["model." + n], p.detach() - mean, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_an_aggregation_of_per_task_gradients_sees_each_task_and_equals_the_mean_when_it_averages(execution):
    batch = sine_batch()
    seen = {}

    def by_hand(per_task: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.update(per_task)
        return {n: g.mean(0) for n, g in per_task.items()}

    custom = mm.meta.Aggregation("by hand", combine=by_hand)
    mean = meta_grads(mm.learners.MAML(tiny_mlp(), inner_lr=0.1, inner_steps=2, execution=execution).to(DT), batch)
    combined = meta_grads(mm.learners.MAML(tiny_mlp(), inner_lr=0.1, inner_steps=2, aggregate=custom,
                                           execution=execution).to(DT), batch)
    for n in mean:
        torch.testing.assert_close(combined[n], mean[n], rtol=1e-9, atol=1e-12)
    first = meta_grads(mm.learners.MAML(tiny_mlp(), inner_lr=0.1, inner_steps=2).to(DT), batch.task(0))
    for n in mean:  # the per-task gradients are each task's own meta-gradient
        assert seen[n].shape == (len(batch), *mean[n].shape)
        torch.testing.assert_close(seen[n][0], first[n], rtol=1e-9, atol=1e-12)


# -- values stay the user's; learners report what they learn --------------------------------


def test_a_value_builds_many_learners_and_is_never_changed():
    inner = mm.adapt.sgd(0.1, rates="per_layer_per_step")
    a = mm.learners.MAML(tiny_mlp(), inner=inner, inner_steps=2)
    b = mm.learners.MAML(tiny_mlp(), inner=inner, inner_steps=3)
    assert len(inner.rates.alpha) == 0  # unbound: each learner bound its own copy
    assert a.rates is not b.rates and next(iter(b.rates.alpha.values())).shape == (3,)


def test_building_and_training_leave_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run = config.build(config.parse({**TINY, "learner": {"name": "maml", "inner_lr": 0.01}}))
    config.trainer(run, tmp_path / "run", progress=False).fit(3)
    assert torch.equal(torch.get_rng_state(), before)


def test_learners_report_what_they_learn_beyond_their_weights():
    assert mm.learners.MAML(tiny_mlp()).report() == {}
    rates = mm.learners.LSLR(tiny_mlp(), inner_lr=0.3, inner_steps=2).report()["inner_rates"]
    assert rates["body.0.weight"] == pytest.approx([0.3, 0.3])
    assert mm.learners.SigmaMAML(tiny_mlp(), sigma=0.7).report()["sigma"] == pytest.approx(
        {"body.0": 0.7, "body.2": 0.7, "head": 0.7})
    learner, batch = reference.build("bouncegrad")
    learner.meta_backward(batch)
    report = learner.report()
    assert len(report["structures"]) == int(batch.task_ids.max()) + 1 and report["modules"] == 7


def test_the_command_line_and_plotting_import_no_pyplot_and_no_learner_class():
    code = ("import sys, inspect, modmeta.cli, modmeta.plot, modmeta.structures; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'; "
            "src = inspect.getsource(modmeta.cli) + inspect.getsource(modmeta.structures); "
            "assert 'modmeta.learners' not in src, 'a learner class is imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a combination no paper named, from YAML -------------------------------------------------

TINY = {
    "tasks": {"name": "sinusoid", "shots": 5, "queries": 5},
    "model": {"name": "mlp", "hidden": [16]},
    "learner": {"name": "reptile", "inner": {"name": "adam", "lr": 0.01, "beta1": 0}, "inner_steps": 3},
    "train": {"iterations": 60, "meta_batch": 5, "lr": 0.01, "val_every": 0, "log_every": 20,
              "checkpoint_every": 30},
    "eval": {"episodes": 20, "steps": 3},
}


def test_reptile_with_an_adam_inner_loop_trains_from_a_yaml_config(tmp_path, capsys):
    path = tmp_path / "reptile-adam.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    records = [r for r in mm.plot.read_metrics(tmp_path / "run") if r["split"] == "train"]
    assert len(records) == 3 and records[-1]["loss"] < records[0]["loss"]
    run = config.restore(tmp_path / "run")
    inner = run.learner.inner
    assert inner.name == "adam" and inner.transforms[0].beta1 == 0 and run.learner.inner_steps == 3
    assert isinstance(run.learner.outer, mm.meta.outer.Reptile)
    assert main(["eval", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("learner", [
    {"name": "fomaml", "inner": {"name": "adam", "lr": 0.001}},
    {"name": "sigma-maml", "inner": "adam", "inner_steps": 2},
    {"name": "reptile", "inner": {"name": "sgd", "lr": 0.1, "rates": "per_layer_per_step"}},
    {"name": "imaml", "inner": {"name": "sgd", "lr": 0.05, "anneal_to": 0.1}, "inner_steps": 3},
    {"name": "gradient", "inner": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "inner_steps": 2,
     "outer": {"name": "reptile", "others": {"name": "implicit", "cg_steps": 3, "damping": 0.1}},
     "prior": {"name": "shrinkage", "sigma": 0.5}},
])
def test_combinations_are_a_few_keys_of_yaml(learner):
    run = config.build(config.parse({**TINY, "learner": learner}))
    run.learner.meta_backward(run.tasks.sample(3, torch.Generator().manual_seed(0)))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in run.learner.parameters())


@pytest.mark.parametrize("learner, message", [
    ({"name": "reptile", "inner": {"name": "adamw"}}, "learner.inner.name: unknown learner.inner 'adamw'; did you mean adam?"),
    ({"name": "maml", "inner": {"name": "adam", "betas": 0.9}}, "learner.inner.betas: unknown argument"),
    ({"name": "gradient", "outer": {"name": "reptile", "others": {"name": "implicit", "cg": 3}}},
     "learner.outer.others.cg: unknown argument"),
    ({"name": "maml", "inner": 3}, "learner.inner: give a name from `modmeta list`"),
])
def test_a_wrong_composed_value_is_refused_with_its_path(learner, message):
    with pytest.raises(config.ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        config.parse({**TINY, "learner": learner})


def test_eval_and_plot_show_whatever_a_learner_reports(tmp_path, capsys):
    cfg = {**TINY, "learner": {"name": "lslr", "inner_lr": 0.05, "inner_steps": 2},
           "train": {**TINY["train"], "iterations": 4, "checkpoint_every": 4}}
    path = tmp_path / "lslr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--quiet"]) == 0
    assert main(["eval", str(run), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(record["inner_rates"]) == {"body.0.weight", "body.0.bias", "head.weight", "head.bias"}
    assert all(len(rates) == 2 for rates in record["inner_rates"].values())
    assert main(["plot", str(run)]) == 0
    assert "learned inner rates" in capsys.readouterr().out and (run / "inner_rates.png").stat().st_size > 0
