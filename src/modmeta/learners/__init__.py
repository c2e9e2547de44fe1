"""The named meta-learning algorithms, each a short composition of shared parts."""

from modmeta.learners.anil import ANIL
from modmeta.learners.base import Learner
from modmeta.learners.gradient import GradientLearner
from modmeta.learners.imaml import IMAML
from modmeta.learners.linear_head import LinearHead
from modmeta.learners.lslr import LSLR
from modmeta.learners.maml import FOMAML, MAML
from modmeta.learners.matching import MatchingNet
from modmeta.learners.metasgd import MetaSGD
from modmeta.learners.metric import MetricLearner
from modmeta.learners.pretrained import Pretrained
from modmeta.learners.protonet import ProtoNet
from modmeta.learners.relation import RelationNet
from modmeta.learners.reptile import Reptile
from modmeta.learners.shrinkage import ShrinkageLearner, SigmaIMAML, SigmaMAML, SigmaReptile
from modmeta.learners.bouncegrad import BounceGrad, ModularState
from modmeta.learners.moma import MoMA

__all__ = ["ANIL", "FOMAML", "GradientLearner", "LSLR", "Learner", "MAML", "MetaSGD", "Pretrained", "Reptile"]
__all__ += ["LinearHead", "MatchingNet", "MetricLearner", "ProtoNet", "RelationNet"]
__all__ += ["BounceGrad", "MoMA", "ModularState"]
__all__ += ["IMAML", "ShrinkageLearner", "SigmaIMAML", "SigmaMAML", "SigmaReptile"]
