"""Names the config files and the command line use for learners, models and task families.

Each entry maps a name to the class (or factory) and a one-line description; ``modmeta list``
prints these. A new learner, model or task family registers itself by adding a line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modmeta import learners, models, tasks


@dataclass(frozen=True)
class Entry:
    """A registered component: what builds it and one line on what it is."""

    build: Callable[..., Any]
    summary: str


LEARNERS: dict[str, Entry] = {
    "maml": Entry(learners.MAML, "MAML, second order (Finn et al. 2017)"),
    "fomaml": Entry(learners.FOMAML, "first-order MAML (Finn et al. 2017)"),
    "reptile": Entry(learners.Reptile, "Reptile (Nichol et al. 2018)"),
    "metasgd": Entry(learners.MetaSGD, "Meta-SGD, learned per-parameter inner rates (Li et al. 2017)"),
    "anil": Entry(learners.ANIL, "ANIL, only the head adapts (Raghu et al. 2020)"),
    "lslr": Entry(learners.LSLR, "MAML with learned per-layer per-step inner rates (MAML++ LSLR, Antoniou et al. 2019)"),
    "pretrained": Entry(learners.Pretrained, "baseline: joint pretraining on all tasks, then fine-tuning"),
}

MODELS: dict[str, Entry] = {
    "mlp": Entry(models.MLP, "fully connected ReLU network (MAML's regression network)"),
    "conv4": Entry(models.Conv4, "4 x [conv3x3, BatchNorm, ReLU, max-pool or stride 2] + linear head"),
}

TASKS: dict[str, Entry] = {
    "sinusoid": Entry(tasks.Sinusoid, "sine regression of MAML: A in [0.1, 5], phase in [0, pi], x in [-5, 5]"),
    "omniglot": Entry(tasks.Omniglot, "Omniglot N-way K-shot from the official archives (Lake et al. 2015)"),
    "npz": Entry(tasks.ClassificationFamily.from_npz, "N-way K-shot episodes from your own .npz of labelled arrays"),
}
