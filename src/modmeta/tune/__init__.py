"""Meta-learning for hyperparameter search, built on Optuna (``pip install modmeta[tune]``).

Describe a data set by its meta-features (:func:`meta_features`), keep every tuning study in an
Optuna storage with its data set's meta-features (:class:`Store`), and start a new search from
what worked on the most similar stored data sets (:func:`tune` with ``warm_start=k``, the
:class:`TransferSampler`), or from the configuration that ranks best across all of them
(:func:`learned_defaults`); :func:`importance` says which hyperparameters mattered (fANOVA).
Optuna and scikit-learn are imported only when a function needs them.
"""

from modmeta.tune.features import meta_features

__all__ = ["meta_features"]
