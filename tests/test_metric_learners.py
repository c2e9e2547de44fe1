"""Metric learners (ProtoNet, Matching Networks, Relation Networks, the linear-head baseline)
against hand computations and independent references, vmapped against looped, and trained
briefly on real Omniglot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import modmeta as mm
from helpers import DT
from modmeta import config
from modmeta.adapt.metric import count_ways, logistic_regression
from modmeta.learners import LinearHead, MatchingNet, ProtoNet, RelationNet
from modmeta.registry import LEARNERS

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared/data/omniglot"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def image_family(ways: int = 3, shots: int = 2, queries: int = 3, rotations: int = 1, size: int = 28
                 ) -> mm.tasks.ClassificationFamily:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(72, 1, size, size, generator=g, dtype=DT)
    return mm.tasks.ClassificationFamily(x, torch.arange(72) % 12, ways, shots, queries, rotations)


def image_batch(tasks: int = 3, **kwargs) -> mm.tasks.TaskBatch:
    return image_family(**kwargs).sample(tasks, torch.Generator().manual_seed(1))


def conv(out: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    return mm.models.Conv4(out, hidden=4).to(DT)


def relation_net(execution: str = "auto") -> RelationNet:
    torch.manual_seed(0)
    return RelationNet(mm.models.RelationEmbedding(hidden=4), channels=4, hidden=3, execution=execution).to(DT)


def test_protonet_logits_equal_a_hand_computation():
    # 2-D points as their own embedding; the labels are not in class-major order.
    learner = ProtoNet(torch.nn.Identity())
    xs = torch.tensor([[0.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 1.0]], dtype=DT)
    ys = torch.tensor([0, 1, 0, 1])
    xq = torch.tensor([[1.0, 1.0], [3.0, 0.0]], dtype=DT)
    protos = learner.adapt(xs, ys)  # class 0: mean of (0,0),(2,0) = (1,0); class 1: (0,2)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=DT))
    # (1,1): d0 = 0 + 1 = 1, d1 = 1 + 1 = 2;  (3,0): d0 = 4 + 0 = 4, d1 = 9 + 4 = 13
    expected = torch.tensor([[-1.0, -2.0], [-4.0, -13.0]], dtype=DT)
    torch.testing.assert_close(learner.predict(protos, xq), expected, rtol=0, atol=1e-12)
    batch = mm.tasks.TaskBatch(xs[None], ys[None], xq[None], torch.tensor([[1, 0]]))
    assert learner.curve(batch).tolist() == [[0.5]]  # one point per task: no adaptation steps


def test_ways_come_from_the_labels_so_training_can_use_more_ways_than_testing():
    learner = ProtoNet(conv())
    train = image_batch(ways=10, shots=1, queries=2)
    learner.meta_backward(train)
    test = image_batch(ways=5, shots=1, queries=2)
    xs, ys, xq, _ = (t[0] for t in test.tensors())
    assert learner.predict(learner.adapt(xs, ys), xq).shape == (10, 5)
    assert learner.curve(test, steps=3).shape == (3, 1)  # no adaptation steps: one point
    order = torch.randperm(len(ys), generator=torch.Generator().manual_seed(0))
    shuffled = learner.predict(learner.adapt(xs[order], ys[order]), xq)
    torch.testing.assert_close(shuffled, learner.predict(learner.adapt(xs, ys), xq))


def test_a_class_missing_from_a_support_set_is_a_clear_error():
    assert count_ways(torch.tensor([[0, 1, 2], [2, 1, 0]])) == 3
    with pytest.raises(ValueError, match="episode 1 has no support example of class 1"):
        count_ways(torch.tensor([[0, 1, 2], [0, 2, 2]]))
    with pytest.raises(ValueError, match="integer class indices"):
        count_ways(torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("fce", [False, True])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_matching_attention_is_the_cosine_softmax_and_predicts_its_class_sums(fce, scale):
    learner = MatchingNet(conv(), fce=fce, features=4, fce_steps=2, scale=scale).to(DT)
    xs, ys, xq, _ = (t[0] for t in image_batch().tensors())
    state = learner.adapt(xs, ys)
    a = learner.attention(state, xq)
    torch.testing.assert_close(a.sum(-1), torch.ones(len(xq), dtype=DT))
    g = state[0]
    f = learner.model(xq) if not fce else learner.query_context(learner.model(xq), g)
    cos = F.cosine_similarity(f[:, None, :], g[None, :, :], dim=-1)
    torch.testing.assert_close(a, torch.softmax(scale * cos, -1))
    per_class = torch.stack([a[:, ys == k].sum(-1) for k in range(3)], -1)
    torch.testing.assert_close(learner.predict(state, xq).exp(), per_class)


def test_matching_log_probabilities_stay_finite_at_a_scale_where_the_weights_underflow():
    learner = MatchingNet(conv(), features=4, scale=1e4).to(DT)
    xs, ys, xq, yq = (t[0] for t in image_batch().tensors())
    state = learner.adapt(xs, ys)
    assert (learner.attention(state, xq) == 0).any()  # log of the weighted sums would be -inf
    logp = learner.predict(state, xq)
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(len(xq), dtype=DT))


def test_fce_support_context_equals_torch_bidirectional_lstm():
    d = 4
    learner = MatchingNet(conv(), fce=True, features=d).to(DT)
    reference = torch.nn.LSTM(d, d, bidirectional=True).to(DT)
    with torch.no_grad():
        for cell, suffix in ((learner.forward_lstm, ""), (learner.backward_lstm, "_reverse")):
            getattr(reference, "weight_ih_l0" + suffix).copy_(cell.weight_ih)
            getattr(reference, "weight_hh_l0" + suffix).copy_(cell.weight_hh)
            getattr(reference, "bias_ih_l0" + suffix).copy_(cell.bias)
            getattr(reference, "bias_hh_l0" + suffix).zero_()
    g0 = torch.randn(6, d, dtype=DT)
    out, _ = reference(g0[:, None, :])  # [sequence, batch 1, 2d]
    expected = g0 + out[:, 0, :d] + out[:, 0, d:]
    torch.testing.assert_close(learner.support_context(g0), expected)
    with pytest.raises(ValueError, match="pass features=5"):
        learner.support_context(torch.randn(6, 5, dtype=DT))


def test_relation_scores_the_concatenated_class_sum_and_query_maps():
    learner = relation_net()
    xs, ys, xq, yq = (t[0] for t in image_batch(shots=2).tensors())
    state = learner.adapt(xs, ys)
    maps = learner.model(xs)
    torch.testing.assert_close(state[1], maps[ys == 1].sum(0))  # K-shot: the class maps' sum
    scores = learner.predict(state, xq)
    assert scores.shape == (len(xq), 3) and ((scores > 0) & (scores < 1)).all()
    # the relation module uses batch statistics over all pairs, so score them all at once
    pairs = torch.stack([torch.cat([state[k], learner.model(xq)[j]]) for j in range(len(xq)) for k in range(3)])
    torch.testing.assert_close(scores, learner.relation(pairs).view(len(xq), 3))
    expected = ((scores - F.one_hot(yq, 3).to(DT)) ** 2).mean()
    torch.testing.assert_close(learner.loss(scores, yq), expected)
    with pytest.raises(ValueError, match="feature maps"):
        RelationNet(conv()).adapt(xs, ys)


def test_logistic_regression_reaches_the_regularised_optimum():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(12, 5, generator=g, dtype=DT), dim=-1)
    y = torch.arange(12) % 3
    w, b = logistic_regression(z, y, 3, l2=0.1, steps=300)

    def objective(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z @ w.T + b, y) + 0.05 * w.pow(2).sum()

    w, b = w.requires_grad_(), b.requires_grad_()
    gw, gb = torch.autograd.grad(objective(w, b), (w, b))
    assert max(gw.abs().max(), gb.abs().max()) < 1e-6  # stationary: the unique minimum
    separable = torch.eye(3, dtype=DT).repeat(2, 1)
    w, b = logistic_regression(separable, torch.arange(6) % 3, 3, l2=0.01, steps=100)
    assert ((separable @ w.T + b).argmax(-1) == torch.arange(6) % 3).all()


def test_sample_flat_gives_global_class_ids_of_the_rotated_classes():
    family = image_family(rotations=4, size=6)
    x, y = family.sample_flat(50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 1, 6, 6) and y.min() >= 0 and y.max() < family.num_classes == 48
    for xi, yi in zip(x, y.tolist()):
        base, turns = divmod(yi, 4)
        upright = torch.rot90(xi, -turns, dims=(-2, -1))
        members = family.x[family._index[base]]
        assert any(torch.equal(upright, m) for m in members)
    assert len({xi.numpy().tobytes() for xi in x}) == 50  # without replacement
    with pytest.raises(ValueError, match="examples of split 'train'"):
        family.sample_flat(1000, torch.Generator())


def test_linear_head_trains_on_global_classes_and_not_on_episodes():
    family = image_family()
    learner = LinearHead(conv(family.num_classes), batch_size=16).to(DT)
    assert "classifier.weight" in dict(learner.named_parameters())
    assert learner.model(family.x[:2]).shape == (2, 4)  # the model now returns embeddings
    opt = torch.optim.Adam(learner.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        stats = learner.train_batch(family, g)
        first = stats["loss"] if first is None else first
        opt.step()
    assert stats["loss"] < first - 0.5
    with pytest.raises(NotImplementedError, match="train_batch"):
        learner.meta_backward(image_batch())
    with pytest.raises(ValueError, match="out=12"):
        LinearHead(conv(5)).train_batch(family, g)
    with pytest.raises(ValueError, match="nn.Linear named `head`"):
        LinearHead(conv(None))


MAKERS = {
    "ProtoNet": lambda exe: ProtoNet(conv(), execution=exe),
    "MatchingNet": lambda exe: MatchingNet(conv(), execution=exe),
    "MatchingNet-FCE": lambda exe: MatchingNet(conv(), fce=True, features=4, fce_steps=2, execution=exe).to(DT),
    "RelationNet": relation_net,
    "LinearHead": lambda exe: LinearHead(conv(12), fit_steps=20, execution=exe).to(DT),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_vmapped_equals_looped(name):
    batch = image_batch()
    results = {}
    for exe in ("vmap", "loop", "channels_last"):
        learner = MAKERS[name](exe)
        grads = {}
        if name != "LinearHead":  # it has no meta-gradient (see the test above)
            learner.meta_backward(batch)
            grads = {n: p.grad for n, p in learner.named_parameters()}
            assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
        results[exe] = grads, learner.curve(batch)
        for t in range(len(batch)):  # the batched curve is each task's adapt-then-predict
            xs, ys, xq, yq = (v[t] for v in batch.tensors())
            with torch.no_grad():
                alone = mm.losses.metric(learner.predict(learner.adapt(xs, ys), xq), yq)
            assert results[exe][1][t, 0] == alone
    for exe in ("vmap", "channels_last"):
        for n, g in results["loop"][0].items():
            torch.testing.assert_close(results[exe][0][n], g, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(results[exe][1], results["loop"][1], rtol=0, atol=0)
    assert results["vmap"][1].shape == (len(batch), 1)


def test_the_evaluation_protocol_and_the_registry_take_metric_learners_unchanged():
    result = mm.evaluate(ProtoNet(conv()), image_family(ways=5, shots=1), episodes=10, batch=4)
    assert result.steps == 0 and len(result.curve) == 1 and result.episodes == 10
    for name, cls in (("protonet", ProtoNet), ("matchingnet", MatchingNet), ("relationnet", RelationNet),
                      ("linearhead", LinearHead)):
        assert LEARNERS[name].build is cls


def test_training_with_more_ways_than_testing_is_a_config_choice(tmp_path):
    g = torch.Generator().manual_seed(0)
    np_path = tmp_path / "data.npz"
    np.savez(np_path, x=torch.rand(400, 1, 16, 16, generator=g).numpy(), y=np.arange(400) % 40)
    data = {
        "tasks": {"name": "npz", "path": str(np_path), "ways": 10, "shots": 1, "queries": 2, "val": 12, "test": 12},
        "model": {"name": "conv4", "out": None, "hidden": 4},
        "learner": {"name": "protonet"},
        "train": {"iterations": 1},
        "eval": {"episodes": 5, "tasks": {"ways": 5, "queries": 3}},
    }
    run = config.build(config.parse(data))
    assert isinstance(run.learner, ProtoNet) and run.tasks.ways == 10
    test = config.evaluation_tasks(run).split("test")
    assert (test.ways, test.queries) == (5, 3)
    run.learner.meta_backward(run.tasks.sample(2, g))
    assert mm.evaluate(run.learner, test, episodes=5).episodes == 5
    data["eval"]["tasks"] = {"wayz": 5}
    with pytest.raises(config.ConfigError, match="eval.tasks.wayz"):
        config.parse(data)


def test_benchmark_configs_are_valid():
    paths = [CONFIGS / f"omniglot-{learner}-{setting}.yaml" for learner in
             ("protonet", "matchingnet", "relationnet", "linearhead") for setting in ("5w1s", "5w5s", "20w1s")]
    for path in paths:
        cfg = config.load(path)
        assert cfg.eval.episodes == 600 and cfg.learner.name in LEARNERS
    assert config.load(CONFIGS / "omniglot-protonet-5w1s.yaml").tasks.kwargs["ways"] == 60


@pytest.fixture(scope="module")
def omniglot_subset(request: pytest.FixtureRequest) -> mm.tasks.ClassificationFamily:
    """5-way 1-shot episodes (5 queries) on 100 training characters of the "vinyals" split,
    tested on its 423 held-out test characters; no rotations."""
    from modmeta.tasks.omniglot import Omniglot

    assert OMNIGLOT.is_dir(), f"the Omniglot archives are missing: {OMNIGLOT} does not exist"
    cache = request.config.cache.mkdir("modmeta-omniglot") if request.config.cache else None
    full = Omniglot(OMNIGLOT, cache=cache if cache is not None else True)
    splits = {"train": full.splits["train"][:100], "test": full.splits["test"]}
    return mm.tasks.ClassificationFamily(full.data.x, full.data.y, 5, 1, 5, splits=splits)


OMNIGLOT_LEARNERS = {
    "ProtoNet": lambda family: ProtoNet(mm.models.Conv4(None, hidden=16)),
    "MatchingNet": lambda family: MatchingNet(mm.models.Conv4(None, hidden=16)),
    "RelationNet": lambda family: RelationNet(mm.models.RelationEmbedding(hidden=16), channels=16),
    "LinearHead": lambda family: LinearHead(mm.models.Conv4(family.num_classes, hidden=16)),
}


@pytest.mark.parametrize("name", list(OMNIGLOT_LEARNERS))
def test_each_learner_beats_chance_on_an_omniglot_subset_after_short_training(name, omniglot_subset):
    torch.manual_seed(0)
    learner = OMNIGLOT_LEARNERS[name](omniglot_subset)
    test = omniglot_subset.split("test")
    untrained = mm.evaluate(learner, test, episodes=100).mean
    opt = torch.optim.Adam(learner.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        opt.zero_grad()
        if isinstance(learner, LinearHead):
            learner.train_batch(omniglot_subset, g)
        else:
            learner.meta_backward(omniglot_subset.sample(2, g))
        opt.step()
    trained = mm.evaluate(learner, test, episodes=100).mean
    # chance is 20%; a random embedding already scores ~40%, so training must add to it
    assert trained > 0.5 and trained > untrained + 0.1, (untrained, trained)


def test_trainer_trains_the_linear_head_baseline_through_train_batch():
    torch.manual_seed(0)
    x = torch.randn(60, 6)
    y = torch.arange(60) % 6
    family = mm.tasks.ClassificationFamily(x, y, ways=3, shots=2, queries=3)
    learner = LinearHead(mm.models.MLP(6, family.num_classes, (8,)), batch_size=16)
    before = [p.detach().clone() for p in learner.parameters()]
    mm.Trainer(learner, family, optimizer="sgd", lr=0.1, progress=False).fit(5)
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.parameters()))
