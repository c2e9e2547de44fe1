"""MoMA: modular structure with adapted module weights (Alet, Lozano-Pérez and Kaelbling,
"Modular meta-learning", CoRL 2018, section 4 and figure 1, right).

BounceGrad (:mod:`modmeta.learners.bouncegrad`) whose structures are scored, and whose module
weights are meta-learned, *after* MAML's inner loop on the selected modules. For a task with
structure ``S`` the modules it uses adapt by ``k`` SGD steps on its training set,

    ``Θ'(S) = Θ − α Σ_{steps} ∇_Θ L(D^train; S, Θ)``    (only the modules in ``S`` move),

so the score of a proposal is ``L(D^train; S', Θ'(S'))`` and the meta-update is
``Θ ← Θ − η ∇_Θ (1/|B|) Σ_j L(D_j^val; S_j, Θ'(S_j))``, differentiated through the inner
steps (second order; ``first_order=True`` drops the second-order terms as first-order MAML
does). At meta-test the search scores structures the same way, and the found structure's
modules are fine-tuned for ``inner_steps`` steps.
"""

from __future__ import annotations

from modmeta.adapt.optim import InnerOptimizer
from modmeta.learners.bouncegrad import BounceGrad
from modmeta.meta import outer
from modmeta.meta.aggregate import Aggregation
from modmeta.meta.execution import Execution
from modmeta.models.modular import ModularNet


class MoMA(BounceGrad):
    """BounceGrad with ``inner_steps`` SGD steps at ``inner_lr`` (or steps of ``inner``) on each
    task's selected modules; ``first_order`` makes the outer update ``first_order()``."""

    adapts_weights = True

    def __init__(self, model: ModularNet, inner_lr: float = 0.01, inner_steps: int = 5, first_order: bool = False,
                 search_steps: int = 200, temperature: float = 1.0, accept_start: float = 0.5,
                 accept_end: float = 0.005, anneal_iterations: int = 3000, seed: int = 0,
                 inner: InnerOptimizer | None = None, aggregate: Aggregation | None = None,
                 execution: Execution = "auto") -> None:
        if inner_steps < 1:
            raise ValueError(f"MoMA adapts the module weights: inner_steps must be >= 1, got {inner_steps} "
                             f"(with none it is BounceGrad)")
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps, search_steps=search_steps,
                         temperature=temperature, accept_start=accept_start, accept_end=accept_end,
                         anneal_iterations=anneal_iterations, seed=seed, inner=inner,
                         outer=outer.first_order() if first_order else outer.exact(), aggregate=aggregate,
                         execution=execution)
