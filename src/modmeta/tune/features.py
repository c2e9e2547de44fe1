"""Meta-features of a classification data set: numbers that say which stored data sets it resembles.

Four kinds (Vanschoren, "Meta-Learning: A Survey", 2018, section 3): ``"simple"`` sizes and
class balance, ``"statistical"`` summaries of the features' moments, ``"landmarkers"`` the
cross-validated accuracy of three cheap models (1-nearest neighbour, Gaussian naive Bayes, a
decision stump), and ``"learned"``: the mean embedding of the examples by a given network
(for instance a meta-trained modmeta model's feature extractor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

KINDS = ("simple", "statistical", "landmarkers", "learned")
"""Every kind of meta-feature :func:`meta_features` computes."""


def meta_features(x: Any, y: Any, kinds: Sequence[str] = ("simple", "statistical", "landmarkers"),
                  embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  folds: int = 3, seed: int = 0) -> dict[str, float]:
    """The meta-features of the data set ``x`` (``[N, ...]``, flattened to ``[N, D]``) with
    integer class labels ``y`` (``[N]``), by name, for the ``kinds`` asked for.

    ``"landmarkers"`` scores each cheap model by stratified ``folds``-fold cross-validation
    (shuffled with ``seed``; fewer folds when the smallest class is smaller) and needs
    scikit-learn. ``"learned"`` needs ``embed``, a callable (a torch module) from the float
    tensor ``x`` to ``[N, E]`` embeddings; it is called without gradients, in evaluation mode
    for a module, whose mode is restored afterwards.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown meta-feature kinds {unknown}: choose from {list(KINDS)}")
    if "learned" in kinds and embed is None:
        raise ValueError("the 'learned' meta-features need embed=, a network from x to embeddings [N, E]")
    flat, labels = _as_arrays(x, y)
    parts = {"simple": lambda: _simple(flat, labels), "statistical": lambda: _statistical(flat),
             "landmarkers": lambda: _landmarkers(flat, labels, folds, seed),
             "learned": lambda: _learned(x, embed)}
    features: dict[str, float] = {}
    for kind in kinds:
        features |= parts[kind]()
    return features


def _as_arrays(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as float64 ``[N, D]`` and ``y`` as int64 ``[N]``, checked."""
    flat = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    labels = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if flat.ndim < 2 or len(flat) < 2:
        raise ValueError(f"x must be [N, ...] with N >= 2 examples, got shape {flat.shape}")
    if labels.shape != (len(flat),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must hold one integer class label per example of x ({len(flat)}), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if not np.isfinite(flat).all():
        raise ValueError("x holds NaN or infinite values: drop or impute them before computing meta-features")
    return flat.reshape(len(flat), -1), labels.astype(np.int64)


def _simple(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Sizes and class balance: the entropy of the class frequencies (nats) and that entropy
    over its largest possible value, log(classes) (1 for balanced classes)."""
    _, counts = np.unique(y, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    return {"examples": float(len(x)), "features": float(x.shape[1]), "classes": float(len(counts)),
            "class_entropy": entropy, "class_balance": float(entropy / np.log(len(counts))) if len(counts) > 1 else 1.0,
            "minority_fraction": float(p.min())}


def _statistical(x: np.ndarray) -> dict[str, float]:
    """The mean over features of each feature's mean, standard deviation, skewness and
    excess kurtosis (population moments; skewness and kurtosis over non-constant features only,
    0 when every feature is constant)."""
    mean, std = x.mean(0), x.std(0)
    varied = std > 0
    z = (x[:, varied] - mean[varied]) / std[varied]
    skew = (z**3).mean(0) if varied.any() else np.zeros(1)
    kurt = (z**4).mean(0) - 3 if varied.any() else np.zeros(1)
    return {"feature_mean": float(mean.mean()), "feature_std": float(std.mean()),
            "feature_skewness": float(skew.mean()), "feature_kurtosis": float(kurt.mean())}


def _landmarkers(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict[str, float]:
    """Cross-validated accuracy of 1-nearest neighbour, Gaussian naive Bayes and a depth-1 tree."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    smallest = int(np.unique(y, return_counts=True)[1].min())
    if min(folds, smallest) < 2:
        raise ValueError(f"landmarkers cross-validate, so every class needs >= 2 examples and folds >= 2 "
                         f"(smallest class {smallest}, folds={folds}); leave 'landmarkers' out of kinds")
    split = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    models = {"landmark_1nn": KNeighborsClassifier(n_neighbors=1), "landmark_naive_bayes": GaussianNB(),
              "landmark_stump": DecisionTreeClassifier(max_depth=1, random_state=seed)}
    return {name: float(cross_val_score(model, x, y, cv=split).mean()) for name, model in models.items()}


def _learned(x: Any, embed: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """The mean embedding, ``embedding_0 .. embedding_{E-1}``."""
    module = embed if isinstance(embed, torch.nn.Module) else None
    parameter = next(module.parameters(), None) if module is not None else None
    inputs = torch.as_tensor(x, dtype=parameter.dtype if parameter is not None else torch.float32)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            z = embed(inputs.to(parameter.device) if parameter is not None else inputs)
    finally:
        if module is not None:
            module.train(was_training)
    if z.ndim != 2 or len(z) != len(inputs):
        raise ValueError(f"embed must map x of {len(inputs)} examples to embeddings [N, E], got shape {tuple(z.shape)}")
    return {f"embedding_{i}": float(v) for i, v in enumerate(z.double().mean(0).tolist())}


def family_features(family: Any, episodes: int = 10, seed: int = 0,
                    kinds: Sequence[str] = ("simple", "statistical")) -> dict[str, float]:
    """The meta-features of a task family: those of ``episodes`` sampled tasks (support and
    query sets together), averaged over the tasks.

    A regression family's targets are not classes: its tasks are described by the
    ``"statistical"`` meta-features of the inputs and targets side by side, plus their sizes.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    x_support, y_support, x_query, y_query = family.sample(episodes, torch.Generator().manual_seed(seed)).tensors()
    total: dict[str, float] = {}
    for i in range(episodes):
        x = torch.cat([x_support[i], x_query[i]]).flatten(1)
        y = torch.cat([y_support[i], y_query[i]])
        if y.is_floating_point():
            features = meta_features(torch.cat([x, y.flatten(1)], 1), torch.zeros(len(y), dtype=torch.int64),
                                     kinds=("statistical",))
            features |= {"examples": float(len(x)), "features": float(x.shape[1])}
        else:
            features = meta_features(x, y, kinds=kinds)
        for name, value in features.items():
            total[name] = total.get(name, 0.0) + value / episodes
    return total
