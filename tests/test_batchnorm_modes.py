"""Each batch-norm mode normalises with the statistics it claims (issue 11, item 1):
``"transductive"`` by the query batch's own, ``"support"`` by the support set's, in the loop
and under vmap, for the gradient learners and the metric learners alike."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modmeta as mm
from helpers import DT
from modmeta.learners import MAML, ProtoNet
from modmeta.models.batchnorm import statistics_from_first


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(DT)


def task(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    xs, xq = torch.randn(4, 3, generator=g, dtype=DT), 3 + 2 * torch.randn(6, 3, generator=g, dtype=DT)
    return xs, torch.tensor([0, 1, 0, 1]), xq, torch.tensor([0, 1, 0, 1, 0, 1])


def by_hand(learner: MAML, theta: dict, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The net's output on ``x`` with its batch norm using ``reference``'s statistics."""
    def hidden(inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ theta["0.weight"].T + theta["0.bias"]
    h, r = hidden(x), hidden(reference)
    h = (h - r.mean(0)) / torch.sqrt(r.var(0, unbiased=False) + 1e-5) * theta["1.weight"] + theta["1.bias"]
    return torch.tanh(h) @ theta["3.weight"].T + theta["3.bias"]


def test_the_first_rows_give_the_statistics_of_the_whole_batch() -> None:
    layer = mm.models.BatchNorm(3).to(DT)
    x = torch.randn(7, 3, 5, 5, dtype=DT)
    with statistics_from_first(layer, 2):
        out = layer(x)
    mean = x[:2].mean((0, 2, 3), keepdim=True)
    var = x[:2].var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + 1e-5))
    assert layer.rows is None  # restored on exit
    torch.testing.assert_close(layer(x), torch.nn.functional.batch_norm(x, None, None, training=True))


@pytest.mark.parametrize("batchnorm", ["transductive", "support"])
def test_queries_are_normalised_by_the_statistics_the_mode_names(batchnorm: str) -> None:
    learner = MAML(net(), inner_lr=0.1, inner_steps=2, batchnorm=batchnorm)
    xs, ys, xq, _ = task()
    theta = learner.adapt(xs, ys)
    pred = learner.predict(theta, xq, support=xs)
    reference = xq if batchnorm == "transductive" else xs
    torch.testing.assert_close(pred, by_hand(learner, theta, xq, reference))
    # non-transductive: two queries alone are predicted as in the whole batch; transductive: not
    alone = learner.predict(theta, xq[:2], support=xs)
    assert torch.allclose(alone, pred[:2]) == (batchnorm == "support")


def test_support_mode_without_the_support_set_is_refused() -> None:
    learner = MAML(net(), batchnorm="support")
    xs, ys, xq, _ = task()
    with pytest.raises(ValueError, match="support=x_support"):
        learner.predict(learner.adapt(xs, ys), xq)


def test_an_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="'transductive', 'support'"):
        MAML(net(), batchnorm="running")


@pytest.mark.parametrize("batchnorm", ["transductive", "support"])
def test_the_meta_gradient_and_curve_agree_in_the_loop_and_under_vmap(batchnorm: str) -> None:
    tasks = [task(seed) for seed in range(3)]
    batch = mm.tasks.TaskBatch(*(torch.stack(parts) for parts in zip(*tasks)))
    results = []
    for execution in ("loop", "vmap"):
        learner = MAML(net(), inner_lr=0.1, inner_steps=2, execution=execution, batchnorm=batchnorm)
        learner.meta_backward(batch)
        results.append(([p.grad.clone() for p in learner.parameters()], learner.curve(batch, steps=3)))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[0][1], results[1][1])


def test_the_support_mode_meta_gradient_is_that_of_the_query_loss_under_support_statistics() -> None:
    xs, ys, xq, yq = task()
    learner = MAML(net(), inner_lr=0.1, inner_steps=1, execution="loop", batchnorm="support")
    learner.meta_backward(mm.tasks.TaskBatch(xs[None], ys[None], xq[None], yq[None]))
    phi = dict(learner.model.named_parameters())

    def loss(params: dict) -> torch.Tensor:  # one SGD step by hand, then the query loss
        support = nn.functional.cross_entropy(by_hand(learner, params, xs, xs), ys)
        grads = torch.autograd.grad(support, list(params.values()), create_graph=True)
        theta = {n: p - 0.1 * g for (n, p), g in zip(params.items(), grads)}
        return nn.functional.cross_entropy(by_hand(learner, theta, xq, xs), yq)

    expected = torch.autograd.grad(loss(phi), list(phi.values()))
    for p, e in zip(phi.values(), expected):
        torch.testing.assert_close(p.grad, e)


def embedding_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).to(DT)


@pytest.mark.parametrize("batchnorm", ["transductive", "support"])
def test_metric_learners_embed_queries_with_the_statistics_the_mode_names(batchnorm: str) -> None:
    learner = ProtoNet(embedding_net(), batchnorm=batchnorm)
    xs, ys, xq, _ = task()
    theta = dict(learner.model.named_parameters())
    reference = xq if batchnorm == "transductive" else xs
    torch.testing.assert_close(learner.embed(xq, xs), by_hand(learner, theta, xq, reference))
    prototypes = learner.adapt(xs, ys)  # the support set is embedded with its own statistics
    torch.testing.assert_close(prototypes[1], by_hand(learner, theta, xs[ys == 1], xs).mean(0))
    logits = learner.predict(prototypes, xq, support=xs)
    alone = learner.predict(prototypes, xq[:2], support=xs)
    assert torch.allclose(alone, logits[:2]) == (batchnorm == "support")


def test_metric_learners_agree_in_the_loop_and_under_vmap_with_support_statistics() -> None:
    tasks = [task(seed) for seed in range(3)]
    batch = mm.tasks.TaskBatch(*(torch.stack(parts) for parts in zip(*tasks)))
    grads, curves = [], []
    for execution in ("loop", "vmap"):
        learner = ProtoNet(embedding_net(), execution=execution, batchnorm="support")
        learner.meta_backward(batch)
        grads.append([p.grad.clone() for p in learner.parameters()])
        curves.append(learner.curve(batch))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(curves[0], curves[1])


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "lslr", "reptile", "imaml", "sigma-maml",
                                  "sigma-imaml", "sigma-reptile"])
def test_every_gradient_learner_takes_the_support_statistics(name: str) -> None:
    learner = mm.registry.LEARNERS[name].build(net(), batchnorm="support")
    xs, ys, xq, _ = task()
    theta = learner.adapt(xs, ys)
    # each query is predicted from the support set and itself alone
    torch.testing.assert_close(learner.predict(theta, xq[:2], support=xs), learner.predict(theta, xq, support=xs)[:2])
    transductive = mm.registry.LEARNERS[name].build(net())
    assert transductive.batchnorm == "transductive"


def test_the_linear_head_fits_and_scores_with_support_statistics() -> None:
    # Its support set is embedded with its own statistics in either mode; with "support" the
    # queries are too, so the fast curve equals predicting each query alone.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh())
    model.head = nn.Linear(4, 6)
    learner = mm.learners.LinearHead(model.to(DT), fit_steps=5, batchnorm="support")
    tasks = [task(seed) for seed in range(2)]
    batch = mm.tasks.TaskBatch(*(torch.stack(parts) for parts in zip(*tasks)))
    curve = learner.curve(batch)
    for t, (xs, ys, xq, yq) in enumerate(tasks):
        state = learner.adapt(xs, ys)
        one_by_one = torch.cat([learner.predict(state, xq[i:i + 1], support=xs) for i in range(len(xq))])
        assert curve[t, 0] == mm.losses.metric(one_by_one, yq)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_fused_kernel_gives_the_same_values_and_derivatives_in_either_layout(layout) -> None:
    """A channels-last batch goes through torch's kernel as a 2-D view (issue 12): its output
    keeps the input's layout, and the output, gradient and second-order gradient are those of
    the layer from mean and variance."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=DT).contiguous(memory_format=layout).requires_grad_()
    layer = mm.models.BatchNorm(4).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(4, generator=g, dtype=DT) + 0.5)
        layer.bias.copy_(torch.randn(4, generator=g, dtype=DT))

    def by_primitives(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((0, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean((0, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + layer.eps) * layer.weight.view(1, 4, 1, 1) + layer.bias.view(1, 4, 1, 1)

    results = []
    for f in (layer, by_primitives):
        y = f(x)
        results.append(y)
        first = torch.autograd.grad((y.sin() * y).sum(), [x, layer.weight], create_graph=True)
        results += first
        results += torch.autograd.grad(sum((d.cos() * d).sum() for d in first), [x, layer.weight])
    assert layer(x).is_contiguous(memory_format=layout)
    half = len(results) // 2
    for ours, theirs in zip(results[:half], results[half:]):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
