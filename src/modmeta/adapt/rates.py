"""Inner-loop learning rates: fixed, or meta-learned.

One inner step is ``θ_n ← θ_n − α_{n,k} ⊙ ∇_{θ_n} L`` for each parameter tensor ``n`` at
step ``k``. The three choices of ``α``:

- ``"fixed"``: one scalar for everything (MAML, Finn et al. 2017).
- ``"per_parameter"``: a learned tensor of each parameter's shape, the same at every step
  (Meta-SGD, Li et al. 2017).
- ``"per_layer_per_step"``: a learned scalar per parameter tensor and per step (the LSLR of
  MAML++, Antoniou et al. 2019). Steps past the number trained with reuse the last step's rate,
  so a learner can adapt for longer at test time.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Mode = Literal["fixed", "per_parameter", "per_layer_per_step"]


def _key(name: str) -> str:
    # Parameter names hold dots; nn.ParameterDict keys may not.
    return name.replace(".", ":")


class InnerRates(nn.Module):
    """The rates ``α_{n,k}``; learned ones are ``nn.Parameter``\\ s of this module."""

    def __init__(self, mode: Mode, init: float, params: dict[str, torch.Tensor] | None = None,
                 steps: int = 1) -> None:
        super().__init__()
        if mode not in ("fixed", "per_parameter", "per_layer_per_step"):
            raise ValueError(
                f"unknown inner-rate mode {mode!r}: use 'fixed', 'per_parameter' or 'per_layer_per_step'"
            )
        if mode != "fixed" and not params:
            raise ValueError(f"inner-rate mode {mode!r} needs the parameters it applies to")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.mode = mode
        self.init = float(init)
        self.alpha = nn.ParameterDict()
        if mode == "per_parameter":
            for n, p in params.items():
                self.alpha[_key(n)] = nn.Parameter(torch.full_like(p.detach(), self.init))
        elif mode == "per_layer_per_step":
            for n, p in params.items():
                self.alpha[_key(n)] = nn.Parameter(
                    torch.full((steps,), self.init, dtype=p.dtype, device=p.device)
                )

    def forward(self, name: str, step: int) -> torch.Tensor | float:
        """``α`` for parameter ``name`` at inner step ``step`` (0-based)."""
        if self.mode == "fixed":
            return self.init
        a = self.alpha[_key(name)]
        if self.mode == "per_parameter":
            return a
        return a[min(step, a.shape[0] - 1)]

    def extra_repr(self) -> str:
        return f"mode={self.mode}, init={self.init}"
