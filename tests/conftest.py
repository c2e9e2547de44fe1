"""Shared test helpers: small models and task batches in float64."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
