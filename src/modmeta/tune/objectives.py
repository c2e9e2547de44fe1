"""The two things modmeta tunes, as Optuna objectives for :func:`modmeta.tune.tune`.

:func:`classifier_objective` scores a scikit-learn classifier's configuration on a data set
(tabular, or images flattened) by cross-validated accuracy; :func:`learner_objective` scores a
modmeta learner's configuration (inner rate, inner steps, outer rate) on a task family by a
short training run from a config, then :func:`modmeta.evaluate` on the validation split.
Both are maximised: a regression family's score is minus its MSE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

CLASSIFIER_SPACE: Mapping[str, BaseDistribution] = {
    "svc__C": FloatDistribution(1e-2, 1e3, log=True),
    "svc__gamma": FloatDistribution(1e-4, 10.0, log=True),
}
"""The default classifier's search space: an RBF support vector machine's C and gamma."""

LEARNER_SPACE: Mapping[str, BaseDistribution] = {
    "learner.inner_lr": FloatDistribution(1e-3, 1.0, log=True),
    "learner.inner_steps": IntDistribution(1, 5),
    "train.lr": FloatDistribution(1e-4, 1e-2, log=True),
}
"""The default learner search space, as config keys: inner rate, inner steps, outer rate."""


def suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """A value for every parameter of ``space``, suggested by ``trial``."""
    values = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return values


def classifier_objective(x: Any, y: Any, estimator: Any = None, space: Mapping[str, BaseDistribution] | None = None,
                         folds: int = 3, seed: int = 0) -> Callable[[optuna.Trial], float]:
    """An objective scoring ``estimator`` (default: standardisation then an RBF SVM, tuned over
    :data:`CLASSIFIER_SPACE`) with the suggested ``space`` parameters set, by its stratified
    ``folds``-fold cross-validated accuracy on ``x`` (``[N, ...]``, flattened) and labels ``y``."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if estimator is None:
        estimator, space = make_pipeline(StandardScaler(), SVC()), space or CLASSIFIER_SPACE
    if not space:
        raise ValueError("give the space of the estimator's parameters to tune, e.g. {'C': FloatDistribution(0.01, 100, log=True)}")
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    labels = np.asarray(y)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)

    def objective(trial: optuna.Trial) -> float:
        model = clone(estimator).set_params(**suggest(trial, space))
        return float(cross_val_score(model, flat, labels, cv=split).mean())

    return objective


def learner_objective(path: str | Path, iterations: int, episodes: int = 100, overrides: Sequence[str] = (),
                      space: Mapping[str, BaseDistribution] | None = None) -> Callable[[optuna.Trial], float]:
    """An objective that trains the config at ``path`` (with ``overrides``, ``"key=value"``)
    for ``iterations`` with the suggested values of ``space`` (config keys; default
    :data:`LEARNER_SPACE`, less the ``learner.*`` keys the config's learner section does not
    set, such as a metric learner's inner rate) and returns its validation score over
    ``episodes`` episodes: the accuracy, or minus the MSE. A run that diverges (a loss gone
    NaN, infinite or exploding, in training or in the validation's adaptation) is pruned,
    which Optuna's samplers count as worse than any score. Nothing is written to disk."""
    from modmeta import config
    from modmeta.evaluate import evaluate
    from modmeta.train import Diverged

    cfg = config.load(path, list(overrides))
    space = dict(space or LEARNER_SPACE)
    space = {k: d for k, d in space.items() if not k.startswith("learner.") or k.split(".", 1)[1] in cfg.learner.kwargs}
    if not space:
        raise ValueError(f"nothing to tune in {path}: its learner sets none of the space's learner.* keys "
                         f"and the space has no other key")

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        tried = config.load(path, [*overrides, "train.val_every=0", *(f"{k}={v}" for k, v in values.items())])
        run = config.build(tried)
        try:
            config.trainer(run, None, progress=False).fit(iterations)
        except Diverged as e:  # a configuration too unstable to train: the worst kind, not an error
            raise optuna.TrialPruned(f"diverged: {e}") from None
        result = evaluate(run.learner, config.evaluation_tasks(run).split("val"), episodes=episodes,
                          steps=tried.eval.steps, seed=tried.train.val_seed)
        if not math.isfinite(result.mean):  # trained, but adapting at evaluation blows up
            raise optuna.TrialPruned(f"the validation {result.metric} is {result.mean}")
        return result.mean if result.metric == "accuracy" else -result.mean

    return objective

