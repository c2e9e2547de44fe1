"""Backbones. Any ``torch.nn.Module`` works as a backbone; these are the standard ones."""

from modmeta.models.batchnorm import BatchNorm, replace_batchnorm
from modmeta.models.conv4 import Conv4
from modmeta.models.mlp import MLP

__all__ = ["BatchNorm", "Conv4", "MLP", "replace_batchnorm"]
