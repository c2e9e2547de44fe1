"""Meta-learning for hyperparameter search, built on Optuna (``pip install modmeta[tune]``).

Describe a data set by its meta-features (:func:`meta_features`), keep every tuning study in an
Optuna storage with its data set's meta-features (:class:`Store`), and start a new search from
what worked on the most similar stored data sets (:func:`tune` with ``warm_start=k``, the
:class:`TransferSampler`), or from the configurations that rank best across all of them
(:func:`learned_defaults`); :func:`importance` says which hyperparameters mattered (fANOVA).
Optuna and scikit-learn are imported only when a name that needs them is first used.
"""

from importlib import import_module
from typing import Any

from modmeta.tune.features import family_features, meta_features

_LAZY = {"Store": "store", "tune": "search", "warm_configurations": "search", "learned_defaults": "search",
         "importance": "search", "Surrogate": "search", "TransferSampler": "search",
         "classifier_objective": "objectives", "learner_objective": "objectives"}

__all__ = ["meta_features", "family_features", *_LAZY]


def __getattr__(name: str) -> Any:
    """The names that need Optuna, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'modmeta.tune' has no attribute {name!r}")
    try:
        module = import_module(f"modmeta.tune.{_LAZY[name]}")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"modmeta.tune.{name} needs {e.name}: pip install 'modmeta[tune]'") from None
    return getattr(module, name)
