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


# -- the experience store and the searches on it ----------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import optuna  # noqa: E402

from modmeta.tune import Store, Surrogate, TransferSampler, importance, learned_defaults, tune  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SRC = Path(__file__).resolve().parents[1] / "src"


def _data_set(seed: int, classes: int, features: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian blob per class: sizes, spread and separation set by the arguments."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(0, 3, (classes, features))
    return centres[y] + rng.normal(0, 1 + seed % 3, (n, features)), y


def test_a_near_copy_of_a_data_set_is_its_nearest_stored_neighbour(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'tune.db'}")
    shapes = {"a": (0, 2, 3), "b": (1, 5, 8), "c": (2, 3, 20), "d": (3, 8, 4), "e": (4, 2, 12)}
    sets = {name: _data_set(*shape) for name, shape in shapes.items()}
    for name, (x, y) in sets.items():
        store.study(name, meta_features(x, y))
    again = Store(f"sqlite:///{tmp_path / 'tune.db'}")  # read back from the file
    for name, (x, y) in sets.items():
        copy = x + np.random.default_rng(9).normal(0, 1e-3, x.shape)
        found = again.nearest(meta_features(copy, y), k=2)
        assert found[0][0] == name and found[0][1] < found[1][1], (name, found)
    assert [n for n, _ in again.nearest(meta_features(*sets["a"]), k=5, exclude=["a"])].count("a") == 0


def _bowl(centre: float):
    """An objective with its maximum 0 at x = centre."""
    return lambda trial: -(trial.suggest_float("x", 0.0, 1.0) - centre) ** 2


def test_a_warm_started_study_first_tries_its_neighbours_best_configurations():
    store = Store(None)
    for seed, (name, centre) in enumerate((("near", 0.3), ("nearer", 0.6), ("far", 0.9))):
        tune(_bowl(centre), store, name, {"size": centre * 10, "balance": centre}, trials=8, seed=seed)
    bests = {n: store.best_params(n) for n in ("near", "nearer", "far")}
    assert len({b["x"] for b in bests.values()}) == 3
    study = tune(_bowl(0.5), store, "new", {"size": 5.5, "balance": 0.55}, trials=4, warm_start=2)
    assert [t.params for t in study.trials[:2]] == [bests["nearer"], bests["near"]]
    assert study.trials[2].params not in bests.values()  # then TPE continues
    cold = tune(_bowl(0.5), store, "cold", {"size": 5.5, "balance": 0.55}, trials=2)
    assert not any(t.params in bests.values() for t in cold.trials)


KILLED = """
import os, sqlite3, sys, time
import optuna
sys.path.insert(0, {src!r})
from modmeta.tune import Store, tune

def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == 3:
        # Optuna's heartbeat thread writes the trial's first heartbeat a moment after the trial
        # starts; a process killed before that leaves a trial no heartbeat can call stale.
        db = sqlite3.connect({path!r})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not db.execute(
                "SELECT count(*) FROM trial_heartbeats WHERE trial_id = ?", (trial._trial_id,)).fetchone()[0]:
            time.sleep(0.05)
        os._exit(9)  # killed mid-trial: no clean-up runs
    return -(x - 0.5) ** 2

tune(objective, Store({url!r}, heartbeat=1), "killed", {{"size": 1.0}}, trials=6)
"""


def test_a_study_killed_mid_way_resumes_from_the_store_with_its_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED.format(src=str(SRC), url=url, path=str(tmp_path / "tune.db")))])
    assert run.returncode == 9
    store = Store(url, heartbeat=1)
    before = store.load("killed").trials
    assert [t.state.name for t in before] == ["COMPLETE"] * 3 + ["RUNNING"]
    # The killed trial's heartbeat goes stale after the 2 s grace period; SQLite's clock
    # (CURRENT_TIMESTAMP) counts whole seconds, so 2.5 s could read as 2 and not be stale.
    time.sleep(3.5)
    study = tune(lambda t: -(t.suggest_float("x", 0.0, 1.0) - 0.5) ** 2, store, "killed", {"size": 1.0}, trials=6)
    after = study.trials
    assert [t.params for t in after[:3]] == [t.params for t in before[:3]]
    assert after[3].state.name == "FAIL" and after[4].params == before[3].params  # the killed one, retried
    assert sum(t.state.name == "COMPLETE" for t in after) == 6


def test_learned_defaults_have_the_best_average_rank_across_data_sets():
    store = Store(None)
    scores = {"s1": {"a": 3, "b": 2, "c": 1}, "s2": {"a": 1, "b": 3, "c": 2}, "s3": {"a": 2, "b": 3, "c": 1}}
    for name, table in scores.items():  # ranks a: 0+2+1, b: 1+0+0, c: 2+1+2
        study = store.study(name, {"size": float(len(name))})
        for config in table:
            study.enqueue_trial({"k": config})
        study.optimize(lambda t, table=table: table[t.suggest_categorical("k", ["a", "b", "c"])], n_trials=3)
    assert learned_defaults(store, n=3) == [{"k": "b"}, {"k": "a"}, {"k": "c"}]


def test_a_surrogate_interpolates_by_inverse_distance_and_knows_what_it_tried():
    study = optuna.create_study(direction="maximize")
    for x in (0.0, 1.0):
        study.enqueue_trial({"x": x})
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)  # score = x
    model = Surrogate(study.trials, {"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    # x = 0.25: weights 1/0.25 and 1/0.75 on scores 0 and 1, so (4 * 0 + 4/3 * 1) / (16/3) = 0.25
    assert model.predict([{"x": 0.25}, {"x": 1.0}], exact=True) == pytest.approx([0.25, 1.0])
    assert model.leave_one_out() == pytest.approx([1.0, 0.0])  # each trial predicted by the other


def test_importance_across_data_sets_finds_the_hyperparameter_that_matters():
    store = Store(None)
    for i in range(2):
        objective = lambda t, i=i: -(t.suggest_float("matters", 0, 1) - 0.3 * i) ** 2 + 1e-3 * t.suggest_float("noise", 0, 1)  # noqa: E731
        tune(objective, store, f"d{i}", {"i": float(i)}, trials=20, sampler=optuna.samplers.RandomSampler(seed=i))
    found = importance(store)
    assert list(found) == ["matters", "noise"] and found["matters"] > 0.8


def test_the_transfer_sampler_trusts_the_stored_studies_that_rank_the_new_trials_well():
    store = Store(None)
    for name, centre in (("like-a", 0.2), ("like-b", 0.25), ("unlike", 0.9)):
        tune(_bowl(centre), store, name, {"c": centre}, trials=15, sampler=optuna.samplers.RandomSampler(seed=3))
    sampler = TransferSampler(store, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_bowl(0.2), n_trials=8)
    done = study.trials
    weights = dict(zip([*store.names(), "own"], sampler.weights(done, study.direction)))
    assert weights["unlike"] == 0 and weights["like-a"] > 0.2 and sum(weights.values()) == pytest.approx(1), weights
    assert abs(study.best_params["x"] - 0.2) < 0.05
    assert all(abs(t.params["x"] - 0.2) < 0.05 for t in done[-4:])  # once the weights are known, it stays there


# -- the two uses: a classifier on a data set, a learner on a task family ----------------------

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from modmeta import config  # noqa: E402
from modmeta.cli import main  # noqa: E402
from modmeta.evaluate import evaluate  # noqa: E402
from modmeta.tune import classifier_objective, family_features, learner_objective  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_tuning_a_classifier_scores_each_configuration_by_cross_validated_accuracy():
    x, y = load_iris(return_X_y=True)
    study = tune(classifier_objective(x, y, seed=0), Store(None), "iris", meta_features(x, y), trials=4)
    best = study.best_params
    svm = make_pipeline(StandardScaler(), SVC(C=best["svc__C"], gamma=best["svc__gamma"]))
    expected = cross_val_score(svm, x, y, cv=StratifiedKFold(3, shuffle=True, random_state=0)).mean()
    assert study.best_value == pytest.approx(expected) and 0.3 < expected <= 1


def test_tuning_a_learner_scores_a_short_run_on_the_validation_split(tmp_path):
    path = tmp_path / "maml.yaml"
    path.write_text("tasks: {name: sinusoid, shots: 5, queries: 5}\nmodel: {name: mlp, hidden: [8]}\n"
                    "learner: {name: maml, inner_lr: 0.01}\ntrain: {iterations: 1000, meta_batch: 4}\n")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"learner.inner_lr": 0.05, "train.lr": 0.003})
    study.optimize(learner_objective(path, iterations=3, episodes=5), n_trials=1)
    assert study.trials[0].params == {"learner.inner_lr": 0.05, "train.lr": 0.003}  # no inner_steps: not in the config
    run = config.build(config.load(path, ["learner.inner_lr=0.05", "train.lr=0.003"]))
    config.trainer(run, None, progress=False).fit(3)
    mse = evaluate(run.learner, run.tasks.split("val"), episodes=5, seed=run.config.train.val_seed).mean
    assert study.trials[0].value == pytest.approx(-mse)


def test_a_learner_configuration_that_diverges_is_pruned_and_counts_as_a_trial(tmp_path):
    path = tmp_path / "maml.yaml"
    path.write_text("tasks: {name: sinusoid, shots: 5, queries: 5}\nmodel: {name: mlp, hidden: [8]}\n"
                    "learner: {name: maml, inner_lr: 0.01}\ntrain: {iterations: 1000, meta_batch: 4}\n")
    wild = {"learner.inner_lr": optuna.distributions.FloatDistribution(1e10, 1e12, log=True)}
    study = tune(learner_objective(path, iterations=3, episodes=5, space=wild), Store(None), "wild", {"a": 1.0}, trials=2)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]


def test_modmeta_tune_stores_each_task_family_and_warm_starts_from_the_nearest(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    short = ["--iterations", "2", "--episodes", "4", "--set", "train.meta_batch=2"]
    assert main(["tune", str(CONFIGS / "sinusoid-maml.yaml"), "--trials", "2", "--store", url, *short]) == 0
    assert main(["tune", str(CONFIGS / "sinusoid-fomaml.yaml"), "--trials", "2", "--store", url, "--warm-start", "1",
                 *short]) == 0
    assert "sinusoid-fomaml: best score" in capsys.readouterr().out
    store = Store(url)
    assert store.load("sinusoid-fomaml").trials[0].params == store.best_params("sinusoid-maml")
    assert store.features()["sinusoid-maml"] == pytest.approx(family_features(config.build(
        config.load(CONFIGS / "sinusoid-maml.yaml")).tasks))
    assert main(["tune", str(CONFIGS / "sinusoid-maml.yaml"), "--trials", "0", "--store", url]) == 1


def test_family_features_average_the_meta_features_of_sampled_tasks():
    import modmeta as mm

    x = torch.cat([torch.zeros(4, 2), torch.ones(4, 2)])  # class 0 all zeros, class 1 all ones
    family = mm.tasks.ClassificationFamily(x, [0] * 4 + [1] * 4, ways=2, shots=1, queries=3)
    f = family_features(family, episodes=3)
    # every task: 8 examples, 2 balanced classes, features half zeros half ones (mean 0.5, std 0.5)
    assert f == pytest.approx({"examples": 8, "features": 2, "classes": 2, "class_entropy": math.log(2),
                               "class_balance": 1, "minority_fraction": 0.5, "feature_mean": 0.5,
                               "feature_std": 0.5, "feature_skewness": 0, "feature_kurtosis": -2})
    sines = family_features(mm.tasks.Sinusoid(shots=10, queries=10), episodes=2)
    assert sines["examples"] == 20 and sines["features"] == 1 and "classes" not in sines


def test_kendall_tau_matches_scipy_with_and_without_ties():
    from scipy.stats import kendalltau

    from modmeta.tune.search import kendall_tau

    rng = np.random.default_rng(0)
    for a, b in ((rng.random(12), rng.random(12)), (rng.integers(0, 3, 15).astype(float), rng.integers(0, 4, 15) * 1.0)):
        assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert kendall_tau(np.ones(4), np.arange(4.0)) == 0.0


def test_the_store_refuses_a_path_for_a_url_and_names_what_it_holds():
    with pytest.raises(ValueError, match="write sqlite:///tune.db"):
        Store("tune.db")
    store = Store(None)
    store.study("a", {"size": 1.0})
    with pytest.raises(KeyError, match=r"no study 'b' in the store; it holds \['a'\]"):
        store.load("b")
    with pytest.raises(ValueError, match="no completed trial yet"):
        store.best_params("a")
