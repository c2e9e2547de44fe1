"""Simulated annealing over structures: the task adaptation of modular learners.

Alet, Lozano-Pérez and Kaelbling, "Modular meta-learning", CoRL 2018, section 4 (BounceGrad).
A task is fitted by searching the discrete space of structures ``S`` with the module weights
``Θ`` fixed. One step, for every task at once:

1. propose a neighbour ``S'`` of the current ``S`` (a local move of the composition scheme);
2. accept it by the Metropolis rule at temperature ``τ``:
   ``P(accept) = min(1, exp((L(S) − L(S')) / τ))``, where ``L`` is the task's training loss;
   a better or equal ``S'`` is always accepted.

The temperature adapts (the paper's code): a running rate ``r`` of *worse* proposals that
were accepted is compared with a target ``r*`` that decays geometrically over the run, and
``τ ← τ · 1.1`` when ``r < r*`` (too few accepted: heat up), ``τ ← τ / 1.1`` otherwise. The
paper decays ``r*`` from ``1`` to ``e^{-5}`` over training.

Every random draw comes from an explicit ``torch.Generator`` (on the CPU; results move to the
losses' device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Score = Callable[[torch.Tensor], torch.Tensor]  # structures [T, P, slots] -> losses [T, P]
Propose = Callable[[torch.Tensor], torch.Tensor]  # structures [T, slots] -> neighbours [T, slots]

HEAT = 1.1  # the temperature's factor per step
SMOOTHING = 0.1  # weight of the newest observation in the running acceptance rate


def metropolis(current: torch.Tensor, proposed: torch.Tensor, temperature: torch.Tensor | float,
               generator: torch.Generator) -> torch.Tensor:
    """Accept each proposal with probability ``min(1, exp((current − proposed) / τ))``.

    ``current`` and ``proposed`` are losses of the same shape; ``temperature`` broadcasts to
    it. One uniform ``u`` per entry is drawn (always, so the stream does not depend on the
    losses) and the proposal is accepted when ``u < exp((current − proposed) / τ)``: always
    when it is no worse, since ``u < 1``; never when its loss is NaN.
    """
    u = torch.rand(current.shape, generator=generator, dtype=current.dtype).to(current.device)
    return u < torch.exp((current - proposed) / temperature)


def target_rate(step: int, start: float, end: float, steps: int) -> float:
    """``r*(step) = start · (end / start)^{min(step / steps, 1)}``: geometric decay, then flat."""
    if not 0 < end <= start <= 1:
        raise ValueError(f"acceptance targets need 0 < end <= start <= 1, got start={start}, end={end}")
    return start * (end / start) ** min(step / max(steps, 1), 1.0)


def update_rate(rate: torch.Tensor, accepted: torch.Tensor, worse: torch.Tensor,
                smoothing: float = SMOOTHING) -> torch.Tensor:
    """The running rate of accepted worse proposals: ``r ← (1 − β) r + β · accepted / worse``.

    ``worse`` counts the proposals that were worse than the current structure and ``accepted``
    those of them accepted (tensors broadcasting with ``rate``); where ``worse`` is 0 there is
    nothing to learn and ``r`` stays.
    """
    fraction = accepted / worse.clamp(min=1)
    return torch.where(worse > 0, (1 - smoothing) * rate + smoothing * fraction, rate)


def adapt_temperature(temperature: torch.Tensor, rate: torch.Tensor, target: float,
                      factor: float = HEAT) -> torch.Tensor:
    """``τ · factor`` where ``rate < target`` (accept more worse moves), else ``τ / factor``."""
    return torch.where(rate < target, temperature * factor, temperature / factor)


@dataclass(frozen=True)
class Annealing:
    """The annealing state: the temperature ``τ`` and the running rate ``r`` of accepted worse
    proposals, one of each per task (``[T]``) or one shared by all tasks (0-dimensional)."""

    temperature: torch.Tensor
    rate: torch.Tensor


def anneal_step(structures: torch.Tensor, loss: torch.Tensor | None, state: Annealing, score: Score,
                propose: Propose, target: float, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, Annealing, torch.Tensor]:
    """One step of simulated annealing for ``T`` tasks, as a pure function.

    Proposes a neighbour of each structure (``[T, slots]``), scores it (``loss`` are the
    current structures' losses ``[T]``; ``None`` scores them with the proposals, in the same
    call of ``score``), accepts by :func:`metropolis`, and adapts the temperature towards the
    ``target`` rate of accepted worse proposals. A shared temperature pools the counts over the
    tasks. Returns the new structures, their losses, the new state and which were accepted.
    Draws from ``generator`` only (the proposals first, then one uniform per task).
    """
    proposed = propose(structures)
    if loss is None:
        both = score(torch.stack([structures, proposed], 1))
        loss, new_loss = both[:, 0], both[:, 1]
    else:
        new_loss = score(proposed[:, None])[:, 0]
    accept = metropolis(loss, new_loss, state.temperature, generator)
    worse = new_loss > loss
    accepted, counted = (accept & worse).to(state.rate.dtype), worse.to(state.rate.dtype)
    if state.temperature.dim() == 0:
        accepted, counted = accepted.sum(), counted.sum()
    rate = update_rate(state.rate, accepted, counted)
    temperature = adapt_temperature(state.temperature, rate, target)
    structures = torch.where(accept[:, None], proposed, structures)
    return structures, torch.where(accept, new_loss, loss), Annealing(temperature, rate), accept


def anneal(score: Score, structures: torch.Tensor, propose: Propose, steps: int, temperature: float,
           accept_start: float, accept_end: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated annealing from ``structures`` (``[T, slots]``) for ``steps`` steps, per task.

    Each task has its own temperature, starting at ``temperature`` and adapted by
    :func:`adapt_temperature` towards a target acceptance rate of worse proposals falling from
    ``accept_start`` to ``accept_end`` over the search (:func:`anneal_step`). The proposals of
    all tasks are scored in one call of ``score`` (``[T, 1, slots]`` in, ``[T, 1]`` losses
    out). Returns the best structure each task visited and its loss.
    """
    loss = score(structures[:, None])[:, 0]
    state = Annealing(torch.full_like(loss, temperature), torch.full_like(loss, accept_start))
    best, best_loss = structures.clone(), loss.clone()
    for k in range(steps):
        target = target_rate(k + 1, accept_start, accept_end, steps)
        structures, loss, state, _ = anneal_step(structures, loss, state, score, propose, target, generator)
        better = loss < best_loss
        best = torch.where(better[:, None], structures, best)
        best_loss = torch.where(better, loss, best_loss)
    return best, best_loss
