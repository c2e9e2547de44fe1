"""Names the config files and the command line use for learners, models and task families,
and for the values a learner is composed from (inner optimizers, outer updates, priors,
aggregations).

Each entry maps a name to the class (or factory) and a one-line description; ``modmeta list``
prints these. A new component registers itself by adding a line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modmeta import adapt, learners, meta, models, tasks


@dataclass(frozen=True)
class Entry:
    """A registered component: what builds it and one line on what it is."""

    build: Callable[..., Any]
    summary: str


LEARNERS: dict[str, Entry] = {
    "gradient": Entry(learners.GradientLearner, "compose your own: model + inner optimizer + steps + outer update (+ prior)"),
    "maml": Entry(learners.MAML, "MAML, second order (Finn et al. 2017)"),
    "fomaml": Entry(learners.FOMAML, "first-order MAML (Finn et al. 2017)"),
    "reptile": Entry(learners.Reptile, "Reptile (Nichol et al. 2018)"),
    "metasgd": Entry(learners.MetaSGD, "Meta-SGD, learned per-parameter inner rates (Li et al. 2017)"),
    "anil": Entry(learners.ANIL, "ANIL, only the head adapts (Raghu et al. 2020)"),
    "lslr": Entry(learners.LSLR, "MAML with learned per-layer per-step inner rates (MAML++ LSLR, Antoniou et al. 2019)"),
    "pretrained": Entry(learners.Pretrained, "baseline: joint pretraining on all tasks, then fine-tuning"),
    "imaml": Entry(learners.IMAML, "iMAML: proximal inner problem, implicit meta-gradient by conjugate gradient (Rajeswaran et al. 2019)"),
    "sigma-maml": Entry(learners.SigmaMAML, "σ-MAML: per-module shrinkage prior, meta-gradient through the unrolled MAP steps (Chen et al. 2020)"),
    "sigma-imaml": Entry(learners.SigmaIMAML, "σ-iMAML: per-module shrinkage prior, implicit meta-gradient of φ and σ (Chen et al. 2020)"),
    "sigma-reptile": Entry(learners.SigmaReptile, "σ-Reptile: per-module shrinkage prior, Reptile update of φ, implicit gradient of σ (Chen et al. 2020)"),
    "bouncegrad": Entry(learners.BounceGrad, "BounceGrad: simulated annealing on structures, SGD on module weights (Alet et al. 2018)"),
    "moma": Entry(learners.MoMA, "MoMA: BounceGrad with MAML-adapted module weights (Alet et al. 2018)"),
    "protonet": Entry(learners.ProtoNet, "Prototypical Networks: nearest class mean, squared Euclidean (Snell et al. 2017)"),
    "matchingnet": Entry(learners.MatchingNet, "Matching Networks: cosine attention over the support set, optional FCE (Vinyals et al. 2016)"),
    "relationnet": Entry(learners.RelationNet, "Relation Networks: learned relation module on feature-map pairs (Sung et al. 2018)"),
    "linearhead": Entry(learners.LinearHead, "baseline: supervised embedding + per-episode logistic regression (Tian et al. 2020)"),
}

MODELS: dict[str, Entry] = {
    "mlp": Entry(models.MLP, "fully connected ReLU network (MAML's regression network)"),
    "conv4": Entry(models.Conv4, "4 x [conv3x3, BatchNorm, ReLU, max-pool or stride 2] + linear head (none if out is null)"),
    "relationembedding": Entry(models.RelationEmbedding, "Relation Networks' embedding: 4 conv blocks keeping [64, 5, 5] maps"),
    "modular": Entry(models.ModularNet, "a library of MLP modules under a composition scheme (sum, composition)"),
}

TASKS: dict[str, Entry] = {
    "sinusoid": Entry(tasks.Sinusoid, "sine regression of MAML: A in [0.1, 5], phase in [0, pi], x in [-5, 5]"),
    "omniglot": Entry(tasks.Omniglot, "Omniglot N-way K-shot from the official archives (Lake et al. 2015)"),
    "npz": Entry(tasks.ClassificationFamily.from_npz, "N-way K-shot episodes from your own .npz of labelled arrays"),
    "miniimagenet": Entry(tasks.MiniImageNet, "mini-ImageNet N-way K-shot, 84x84, Ravi & Larochelle's 64/16/20 classes"),
    "cifarfs": Entry(tasks.CIFARFS, "CIFAR-FS N-way K-shot, 32x32, Bertinetto et al.'s 64/16/20 CIFAR-100 classes"),
    "cub": Entry(tasks.CUB, "CUB-200-2011 birds N-way K-shot, Chen et al.'s 100/50/50 classes"),
    "function-sums": Entry(tasks.FunctionSums, "(f_a + f_b)/2 for pairs of 16 functions, 12 pairs held out (Alet et al. 2018)"),
    "sines": Entry(tasks.Sines, "sin(pi(f x + phase)), f in [0.1, 5], phase in [0, pi], x in [-1, 1) (Alet et al. 2018)"),
    "compositions": Entry(tasks.Compositions, "g_b(g_a(x)) for ordered pairs of 6 functions, 4 pairs held out"),
    "teacher": Entry(tasks.TeacherFamily, "regression by a fixed random ReLU teacher in which one layer varies per task (truth for shrinkage)"),
}

INNER: dict[str, Entry] = {
    "sgd": Entry(adapt.sgd, "gradient descent at rate lr (momentum; rates fixed, per_parameter or per_layer_per_step; anneal_to; carry with momentum)"),
    "adam": Entry(adapt.adam, "Adam at rate lr (beta1, beta2, eps; beta1=0 is Reptile's; rates as sgd; carry: state runs on across tasks, true for a meta-batch's mean, sequential task after task)"),
}

OUTER: dict[str, Entry] = {
    "exact": Entry(meta.exact, "second order through the inner steps (MAML)"),
    "first_order": Entry(meta.first_order, "inner gradients held constant (first-order MAML)"),
    "reptile": Entry(meta.reptile, "phi - adapted for the initialisation; others: an outer update for the rest"),
    "implicit": Entry(meta.implicit, "implicit gradient at the inner solution by conjugate gradient (cg_steps, damping)"),
    "joint": Entry(meta.joint, "the unadapted loss on all of a task's data (pretrained baseline)"),
    "hessian_penalty": Entry(meta.hessian_penalty, "outer (default exact) + coefficient * ||H_support||_F^2 by Hutchinson probes"),
}

PRIORS: dict[str, Entry] = {
    "shrinkage": Entry(adapt.Shrinkage, "Gaussian prior N(phi_m, sigma_m^2) per module (sigma, modules, min_sigma, learn)"),
}

AGGREGATIONS: dict[str, Entry] = {
    "mean": Entry(meta.mean, "the mean of the tasks' meta-gradients (diagnostics: log how much they conflict)"),
    "pcgrad": Entry(meta.pcgrad, "Meta-PCGrad: conflicting components projected away, then the mean (reduction, group)"),
}

COMPOSED: dict[str, dict[str, Entry]] = {"inner": INNER, "outer": OUTER, "others": OUTER, "prior": PRIORS,
                                         "aggregate": AGGREGATIONS}
"""The learner (and outer update) arguments given as ``{name: ..., <arguments>}`` in a config,
and the table each name is looked up in."""
