"""The named meta-learning algorithms, each a short composition of shared parts."""

from modmeta.learners.anil import ANIL
from modmeta.learners.base import Learner
from modmeta.learners.gradient import GradientLearner
from modmeta.learners.lslr import LSLR
from modmeta.learners.maml import FOMAML, MAML
from modmeta.learners.metasgd import MetaSGD
from modmeta.learners.pretrained import Pretrained
from modmeta.learners.reptile import Reptile

__all__ = ["ANIL", "FOMAML", "GradientLearner", "LSLR", "Learner", "MAML", "MetaSGD", "Pretrained", "Reptile"]
