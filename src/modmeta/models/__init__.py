"""Backbones. Any ``torch.nn.Module`` works as a backbone; these are the standard ones."""

from modmeta.models.batchnorm import BatchNorm, replace_batchnorm
from modmeta.models.conv4 import Conv4
from modmeta.models.lstm import LSTMCell
from modmeta.models.mlp import MLP
from modmeta.models.relation import RelationEmbedding, RelationModule
from modmeta.models.modular import Composition, ModularNet, ModuleLibrary, Scheme, Sum

__all__ = ["BatchNorm", "Conv4", "MLP", "replace_batchnorm"]
__all__ += ["LSTMCell", "RelationEmbedding", "RelationModule"]
__all__ += ["Composition", "ModularNet", "ModuleLibrary", "Scheme", "Sum"]
