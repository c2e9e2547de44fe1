"""The experience store: every tuning study, with its data set's meta-features, in one Optuna storage.

A study is named after its data set and keeps the data set's name and meta-features as study
user attributes (``modmeta.dataset``, ``modmeta.meta_features``); its trials and scores are
Optuna's own. Any storage Optuna takes works: SQLite by default, a PostgreSQL or MySQL URL so
experience accumulates across machines, or an in-memory one. A process killed mid-study leaves
its trials in the database; reopening the study by name resumes it, and with an RDB URL the
trial that was running when the process died is marked failed after ``2 * heartbeat``
seconds and its configuration queued again (Optuna's heartbeat and ``RetryHeartbeatStaleTrialCallback``).
A trial killed in the moment before its first heartbeat is written has none to go stale and
stays running in the store; it does not block the study, which runs its other trials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import warnings
from typing import Any

import numpy as np
import optuna

DATASET, FEATURES = "modmeta.dataset", "modmeta.meta_features"
"""The study user attributes that hold a study's data set name and meta-features."""

DEFAULT_URL = "sqlite:///modmeta-tune.db"


class Store:
    """Tuning studies and their data sets' meta-features in an Optuna storage.

    ``storage`` is a database URL (``sqlite:///path.db``, ``postgresql://...``), an Optuna
    storage object, or ``None`` for one in this process's memory. ``heartbeat`` (seconds, RDB
    URLs only; ``None`` for none) is how often a running trial says it is alive.
    """

    def __init__(self, storage: str | optuna.storages.BaseStorage | None = DEFAULT_URL, heartbeat: int | None = 60) -> None:
        if isinstance(storage, str):
            if "://" not in storage:
                raise ValueError(f"storage {storage!r} is not a database URL: write sqlite:///{storage} for a SQLite file")
            with warnings.catch_warnings():  # Optuna calls its heartbeat experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1) if heartbeat else None
                storage = optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat,
                                                     grace_period=2 * heartbeat if heartbeat else None,
                                                     heartbeat_stale_trial_callback=retry)
        self.storage = storage if storage is not None else optuna.storages.InMemoryStorage()

    def study(self, name: str, features: Mapping[str, float] | None = None, direction: str = "maximize",
              sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        """The study of data set ``name``: created, or reopened with its trials when it exists.
        ``features`` (the data set's meta-features) are stored with it, so later searches find it."""
        study = optuna.create_study(storage=self.storage, study_name=name, direction=direction,
                                    sampler=sampler, load_if_exists=True)
        if features is not None:
            study.set_user_attr(DATASET, name)
            study.set_user_attr(FEATURES, {k: float(v) for k, v in features.items()})
        return study

    def load(self, name: str) -> optuna.Study:
        """The stored study of data set ``name`` (a ``KeyError`` naming the stored ones if none)."""
        if name not in self.names(with_features=False):
            raise KeyError(f"no study {name!r} in the store; it holds {self.names(with_features=False)}")
        return optuna.load_study(study_name=name, storage=self.storage)

    def names(self, with_features: bool = True) -> list[str]:
        """The stored studies' names (only those with meta-features, unless ``with_features=False``)."""
        return [s.study_name for s in self.storage.get_all_studies() if not with_features or FEATURES in s.user_attrs]

    def features(self) -> dict[str, dict[str, float]]:
        """The meta-features of every stored data set that has them, by study name."""
        return {s.study_name: s.user_attrs[FEATURES] for s in self.storage.get_all_studies() if FEATURES in s.user_attrs}

    def nearest(self, features: Mapping[str, float], k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` stored data sets most similar to one with meta-features ``features``, nearest
        first, as ``(name, distance)``; those named in ``exclude`` are left out.

        The distance is Euclidean over the meta-features every data set has, each divided by its
        standard deviation over the stored data sets (so sizes in thousands do not drown
        accuracies in [0, 1]); a meta-feature equal on all of them is ignored."""
        if k < 1:
            raise ValueError(f"k must be >= 1 neighbours, got {k}")
        skip = set(exclude)
        stored = {name: f for name, f in self.features().items() if name not in skip}
        if not stored:
            return []
        return nearest(features, stored, k)

    def best_params(self, name: str) -> dict[str, Any]:
        """The best configuration found so far on data set ``name``."""
        study = self.load(name)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            raise ValueError(f"the study {name!r} has no completed trial yet, so no best configuration")
        return study.best_params


def nearest(features: Mapping[str, float], stored: Mapping[str, Mapping[str, float]], k: int) -> list[tuple[str, float]]:
    """The ``k`` entries of ``stored`` (name to meta-features) nearest to ``features`` by
    standardised Euclidean distance (see :meth:`Store.nearest`)."""
    keys = sorted(set(features).intersection(*stored.values()))
    if not keys:
        raise ValueError(f"the meta-features {sorted(features)} share no name with the stored data sets' "
                         f"(e.g. {sorted(next(iter(stored.values())))}): compute them with the same kinds")
    table = np.array([[f[key] for key in keys] for f in stored.values()])
    scale = table.std(0)
    varied = scale > 0
    query = np.array([features[key] for key in keys])
    distance = np.sqrt((((table - query)[:, varied] / scale[varied]) ** 2).sum(1))
    order = np.argsort(distance, kind="stable")[:k]
    names = list(stored)
    return [(names[i], float(distance[i])) for i in order]
