"""Inner loops (task adaptation): how one task is fitted from its support set."""

from modmeta.adapt.metric import class_sums, cosine, count_ways, logistic_regression, prototypes, squared_euclidean
from modmeta.adapt.proximal import proximal
from modmeta.adapt.rates import InnerRates
from modmeta.adapt.sgd import sgd
from modmeta.adapt.shrinkage import Shrinkage, group_modules
from modmeta.adapt.structure import adapt_temperature, anneal, metropolis, target_rate, update_rate

__all__ = ["InnerRates", "sgd"]
__all__ += ["class_sums", "cosine", "count_ways", "logistic_regression", "prototypes", "squared_euclidean"]
__all__ += ["adapt_temperature", "anneal", "metropolis", "target_rate", "update_rate"]
__all__ += ["Shrinkage", "group_modules", "proximal"]
