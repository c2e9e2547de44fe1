"""modmeta.tune: meta-features, the experience store, warm starts, learned defaults, transfer."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("optuna")
pytest.importorskip("sklearn")

from modmeta.tune import meta_features  # noqa: E402


def test_simple_and_statistical_meta_features_match_hand_computed_values():
    # Feature 0 is [0, 0, 0, 0, 0, 6]: mean 1, std sqrt(5), skewness 4/sqrt(5), excess kurtosis
    # 1.2; feature 1 is constant 7 (std 0), so it counts in the mean and std, not in the shape.
    x = np.array([[0, 7], [0, 7], [0, 7], [0, 7], [0, 7], [6, 7]], dtype=float)
    y = np.array([0, 0, 0, 0, 1, 1])
    f = meta_features(x, y, kinds=("simple", "statistical"))
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    expected = {"examples": 6, "features": 2, "classes": 2, "class_entropy": entropy,
                "class_balance": entropy / math.log(2), "minority_fraction": 1 / 3,
                "feature_mean": 4, "feature_std": math.sqrt(5) / 2, "feature_skewness": 4 / math.sqrt(5),
                "feature_kurtosis": 1.2}
    assert f.keys() == expected.keys()
    for name, value in expected.items():
        assert f[name] == pytest.approx(value), name


def test_landmarkers_score_a_separable_data_set_perfectly_and_noise_worse():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    x = np.stack([10.0 * y + rng.random(24), rng.random(24)], axis=1)  # feature 0 separates the classes
    f = meta_features(x, y, kinds=("landmarkers",))
    assert f == {"landmark_1nn": 1.0, "landmark_naive_bayes": 1.0, "landmark_stump": 1.0}
    noise = meta_features(x[:, 1:], y, kinds=("landmarkers",))
    assert all(noise[name] < 0.9 for name in f), noise


def test_learned_meta_features_are_the_mean_embedding_and_leave_the_network_as_it_was():
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]]))
        net.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])  # mean [2, 1, 2]: embedding [2.5, 0]
    f = meta_features(x, torch.tensor([0, 1]), kinds=("learned",), embed=net)
    assert f == pytest.approx({"embedding_0": 2.5, "embedding_1": 0.0})
    assert net.training and net.weight.grad is None


def test_meta_features_refuse_bad_input_with_the_fix():
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="unknown meta-feature kinds.*choose from"):
        meta_features(x, y, kinds=("simpel",))
    with pytest.raises(ValueError, match="need embed="):
        meta_features(x, y, kinds=("learned",))
    with pytest.raises(ValueError, match="one integer class label per example"):
        meta_features(x, np.array([0.5, 1, 0, 1]))
    with pytest.raises(ValueError, match="every class needs >= 2 examples"):
        meta_features(x, np.array([0, 1, 1, 1]), kinds=("landmarkers",))
