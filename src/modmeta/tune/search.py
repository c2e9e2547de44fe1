"""Searches that learn from earlier ones: warm starts, learned defaults, importance, transfer.

Every function works on a :class:`~modmeta.tune.store.Store`. A warm start tries the best
configurations of the ``k`` stored data sets nearest by meta-features first (queued with
``study.enqueue_trial``), then lets the sampler (TPE) continue. Learned defaults are the
configurations with the best average rank across the stored data sets; importance is fANOVA's,
averaged over them. The :class:`TransferSampler` weights each stored study's surrogate model by
how well it ranks the new data set's trials so far (surrogate-model transfer, as in
Feurer, Letham, Bakshy, "Scalable Meta-Learning for Bayesian Optimization", 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from scipy.stats import rankdata

from modmeta.tune.store import Store

COMPLETE = optuna.trial.TrialState.COMPLETE


def tune(objective: Callable[[optuna.Trial], float], store: Store, name: str, features: Mapping[str, float],
         trials: int, warm_start: int = 0, sampler: optuna.samplers.BaseSampler | None = None,
         direction: str = "maximize", seed: int = 0) -> optuna.Study:
    """Search ``objective`` on data set ``name`` until its study holds ``trials`` finished
    (completed or pruned) trials, and keep the study (with ``features``) in ``store``.

    A new study with ``warm_start=k`` first tries the best configurations of the ``k`` stored
    data sets nearest to ``features``; the sampler (default: TPE seeded with ``seed``) chooses
    the rest. A study that exists already (an earlier or killed run) continues where it stopped.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    study = store.study(name, features, direction, sampler or optuna.samplers.TPESampler(seed=seed))
    if warm_start and not study.trials:
        for params in warm_configurations(store, features, warm_start, exclude=[name]):
            study.enqueue_trial(params)
    done = sum(t.state in (COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    if done < trials:
        study.optimize(objective, n_trials=trials - done)
    return study


def warm_configurations(store: Store, features: Mapping[str, float], k: int,
                        exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The best configurations of the ``k`` stored data sets nearest to ``features`` (those
    with a completed trial), nearest first, each once."""
    configs: list[dict[str, Any]] = []
    finished = [n for n in store.names() if n not in exclude and _completed(store.load(n))]
    for name, _ in store.nearest(features, k, exclude=set(store.names()) - set(finished)):
        params = store.best_params(name)
        if params not in configs:
            configs.append(params)
    return configs


def learned_defaults(store: Store, names: Sequence[str] | None = None, n: int = 1) -> list[dict[str, Any]]:
    """The ``n`` configurations with the best average rank over the stored data sets ``names``
    (default: all with meta-features), best first.

    The candidates are every configuration tried on any of them; one that a data set's study
    did not try is scored there by that study's k-nearest-neighbour surrogate."""
    studies = _studies(store, names)
    space = _space(studies)
    candidates = list({_key(t.params): t.params for study in studies for t in _completed(study)}.values())
    ranks = np.zeros(len(candidates))
    for study in studies:
        model = Surrogate(_completed(study), space)
        ranks += _ranks(model.predict(candidates, exact=True), study.direction)
    return [candidates[i] for i in np.argsort(ranks, kind="stable")[:n]]


def importance(store: Store, names: Sequence[str] | None = None, seed: int = 0) -> dict[str, float]:
    """Each hyperparameter's fANOVA importance (Hutter, Hoos, Leyton-Brown 2014), by Optuna's
    ``FanovaImportanceEvaluator`` on each stored study ``names`` (default: all with
    meta-features and two or more completed trials), averaged over them; largest first."""
    studies = [s for s in _studies(store, names) if len(_completed(s)) >= 2]
    if not studies:
        raise ValueError("importance needs stored studies with at least two completed trials each")
    total: dict[str, float] = {}
    for study in studies:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        for param, value in optuna.importance.get_param_importances(study, evaluator=evaluator).items():
            total[param] = total.get(param, 0.0) + float(value) / len(studies)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


class Surrogate:
    """A study's score as a function of the configuration: the distance-weighted mean score of
    the ``neighbours`` nearest of its completed ``trials``, configurations encoded in ``[0, 1]``
    per number (log-scaled where the distribution is) and one-hot per categorical value."""

    def __init__(self, trials: Sequence[optuna.trial.FrozenTrial], space: Mapping[str, BaseDistribution],
                 neighbours: int = 5) -> None:
        if not trials:
            raise ValueError("a surrogate needs at least one completed trial to model")
        self.space, self.neighbours = dict(space), neighbours
        self.params = [t.params for t in trials]
        self.x = encode(self.params, self.space)
        self.y = np.array([t.value for t in trials])

    def predict(self, configs: Sequence[Mapping[str, Any]], exact: bool = False) -> np.ndarray:
        """Predicted scores of ``configs``; with ``exact``, a configuration the study tried gets its score."""
        prediction = self.predict_encoded(encode(configs, self.space))
        if exact:
            seen = {_key(p): v for p, v in zip(self.params, self.y)}
            prediction = np.array([seen.get(_key(c), p) for c, p in zip(configs, prediction)])
        return prediction

    def predict_encoded(self, z: np.ndarray) -> np.ndarray:
        """Predicted scores of configurations already encoded by :func:`encode` over this space."""
        return self._weighted(np.sqrt(((z[:, None, :] - self.x[None]) ** 2).sum(-1)))

    def leave_one_out(self) -> np.ndarray:
        """Each trial's score as predicted from the other trials (needs two or more)."""
        d = np.sqrt(((self.x[:, None, :] - self.x[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        return self._weighted(d, len(self.y) - 1)

    def _weighted(self, d: np.ndarray, most: int | None = None) -> np.ndarray:
        """The inverse-distance-weighted mean score of the nearest trials, given distances ``d [M, trials]``."""
        k = min(self.neighbours, most or len(self.y))
        near = np.argpartition(d, k - 1, axis=1)[:, :k]  # the k nearest, in no particular order
        w = 1.0 / (np.take_along_axis(d, near, 1) + 1e-9)
        return (w * self.y[near]).sum(1) / w.sum(1)


class TransferSampler(optuna.samplers.BaseSampler):
    """Surrogate-model transfer: propose the configuration that the stored studies' surrogates,
    weighted by how well each ranks this study's trials so far, predict to score best.

    Each stored study ``names`` (default: all with meta-features) gets a :class:`Surrogate`. At
    every trial, ``candidates`` random configurations plus the stored studies' best ones (less
    those tried) are scored by the weighted sum of the surrogates' standardised predictions,
    the new study's own surrogate among them (as in the ranking-weighted ensemble of Feurer et
    al.): a surrogate's weight is its Kendall τ with this study's scores (0 when negative; see
    :meth:`weights`). When no surrogate ranks the trials positively, ``fallback`` (default: TPE
    seeded with ``seed``) samples instead.
    """

    def __init__(self, store: Store, names: Sequence[str] | None = None, candidates: int = 256, seed: int = 0,
                 fallback: optuna.samplers.BaseSampler | None = None) -> None:
        studies = _studies(store, names)
        self.space = _space(studies)
        self.models = [Surrogate(_completed(s), self.space) for s in studies]
        self.bests = [s.best_params for s in studies]
        self.candidates = candidates
        self.rng = np.random.default_rng(seed)
        self.fallback = fallback or optuna.samplers.TPESampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, BaseDistribution]:
        """The stored studies' search space."""
        return dict(self.space)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The candidate with the best weighted prediction, or ``{}`` to let the fallback sample."""
        done = _completed(study)
        weights = self.weights(done, study.direction)
        if not weights.any():
            return {}
        tried = {_key(t.params) for t in done}
        drawn = self.bests + [sample(self.space, self.rng) for _ in range(self.candidates)]
        pool = list({_key(c): c for c in drawn if _key(c) not in tried}.values())
        if not pool:
            return {}
        z = encode(pool, self.space)
        models = self.models + ([Surrogate(done, self.space)] if weights[-1] > 0 else [])
        score = sum(w * _standardised(m.predict_encoded(z), study.direction)
                    for w, m in zip(weights, models) if w > 0)
        return dict(pool[int(np.argmax(score))])

    def weights(self, trials: Sequence[optuna.trial.FrozenTrial], direction: optuna.study.StudyDirection) -> np.ndarray:
        """The weight of each stored study's surrogate, then of the new study's own, given its
        completed ``trials``: each its Kendall τ with the trials' scores (sign-flipped when
        minimising; the own surrogate's by leave-one-out, from three trials on), 0 when
        negative, normalised to sum 1 unless all are 0; before two trials, the stored ones equal."""
        if len(trials) < 2:
            return np.append(np.full(len(self.models), 1.0 / len(self.models)), 0.0)
        sign = 1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        values = np.array([t.value for t in trials])
        z = encode([t.params for t in trials], self.space)
        taus = [kendall_tau(m.predict_encoded(z), values) for m in self.models]
        own = kendall_tau(Surrogate(trials, self.space).leave_one_out(), values) if len(trials) >= 3 else 0.0
        taus = np.maximum(np.array(taus + [own]) * sign, 0.0)
        return taus / taus.sum() if taus.sum() > 0 else taus

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """A parameter outside the stored search space, or every one when transfer abstains: the fallback's."""
        return self.fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.fallback.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Sequence[float] | None) -> None:
        self.fallback.after_trial(study, trial, state, values)


def encode(configs: Sequence[Mapping[str, Any]], space: Mapping[str, BaseDistribution]) -> np.ndarray:
    """Configurations as rows of numbers in ``[0, 1]``: a number scaled (on a log scale for a
    log distribution) from its low to its high end, a categorical value one-hot; a parameter a
    configuration lacks is 0.5 (numbers) or all zeros (categories)."""
    columns = []
    for name, dist in space.items():
        values = [c.get(name) for c in configs]
        if isinstance(dist, CategoricalDistribution):
            columns += [[float(v == choice) for v in values] for choice in dist.choices]
            continue
        scale = math.log if dist.log else float
        low, high = scale(dist.low), scale(dist.high)
        columns.append([0.5 if v is None or high == low else (scale(v) - low) / (high - low) for v in values])
    return np.array(columns, dtype=float).T.reshape(len(configs), -1)


def sample(space: Mapping[str, BaseDistribution], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn uniformly from ``space`` (log-uniformly for log distributions)."""
    config = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            config[name] = dist.choices[int(rng.integers(len(dist.choices)))]
            continue
        if dist.log:
            value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        else:
            value = rng.uniform(dist.low, dist.high)
        step = getattr(dist, "step", None)
        if step is not None:
            value = dist.low + round((value - dist.low) / step) * step
        config[name] = int(round(value)) if isinstance(dist, optuna.distributions.IntDistribution) else float(value)
    return config


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b rank correlation of ``a`` and ``b`` (as ``scipy.stats.kendalltau``, without
    its per-call overhead, which dominated the sampler); 0 when either is constant."""
    upper = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[:, None] - a[None])[upper], np.sign(b[:, None] - b[None])[upper]
    ties = np.count_nonzero(da) * np.count_nonzero(db)
    return float((da * db).sum() / math.sqrt(ties)) if ties else 0.0


def _studies(store: Store, names: Sequence[str] | None) -> list[optuna.Study]:
    """The stored studies ``names`` (default: all with meta-features) that have a completed trial."""
    studies = [store.load(n) for n in (store.names() if names is None else names)]
    studies = [s for s in studies if _completed(s)]
    if not studies:
        raise ValueError("the store holds no study with a completed trial: tune some data sets first")
    return studies


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(COMPLETE,))


def _space(studies: Sequence[optuna.Study]) -> dict[str, BaseDistribution]:
    """The union of the studies' search spaces (a parameter's first distribution seen)."""
    space: dict[str, BaseDistribution] = {}
    for study in studies:
        for trial in _completed(study):
            for name, dist in trial.distributions.items():
                space.setdefault(name, dist)
    return dict(sorted(space.items()))


def _key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _ranks(values: np.ndarray, direction: optuna.study.StudyDirection) -> np.ndarray:
    """Rank of each value, 0 the best (ties share their mean rank)."""
    best_first = -values if direction == optuna.study.StudyDirection.MAXIMIZE else values
    return rankdata(best_first) - 1


def _standardised(values: np.ndarray, direction: optuna.study.StudyDirection) -> np.ndarray:
    """``values`` with mean 0 and standard deviation 1 (0 if constant), larger meaning better."""
    sign = 1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    sd = values.std()
    return sign * (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)
