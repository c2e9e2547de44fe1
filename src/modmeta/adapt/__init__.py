"""Inner loops (task adaptation): how one task is fitted from its support set."""

from modmeta.adapt.rates import InnerRates
from modmeta.adapt.sgd import sgd

__all__ = ["InnerRates", "sgd"]
