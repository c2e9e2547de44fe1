"""The outer loop: meta-batches, the outer optimizer, validation, checkpoints, a progress bar.

One iteration is ``zero_grad; learner.meta_backward(learner.draw(tasks, meta_batch,
generator)); step``: the Trainer knows the :class:`~modmeta.learners.Learner` contract alone.
Every random draw comes from the trainer's task generator, and any draw the learner makes from
torch's default RNG (dropout, say) from a state the trainer keeps for it (the user's global
RNG is set aside during the step and restored after it, never reseeded). Both are seeded from
``seed`` and stored in each checkpoint with the learner, the optimizer and the running log, so
a run resumed from any checkpoint continues exactly as if it had never stopped: same
parameters, same logged numbers, bit for bit.

With ``out`` set, the run folder holds ``metrics.jsonl`` (one JSON object per logged step: the
training loss and metric averaged since the last log line, and each validation), ``last.pt``
and ``previous.pt`` (the two newest checkpoints), ``best.pt`` (the checkpoint with the best
validation metric: highest accuracy or lowest MSE) and, when the ``tensorboard`` package is
installed, TensorBoard event files under ``tensorboard/`` (the scalars of each record, and the
run's config as hyperparameters of TensorBoard's HParams tab).

Callbacks plug other tools in (MLflow, Weights & Biases, a custom TensorBoard writer): any
object with some of ``on_log(trainer, record)`` (each training record, as written to
``metrics.jsonl``), ``on_validate(trainer, record)`` (each validation record) and
``on_checkpoint(trainer, path)`` (each checkpoint written).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from tqdm import tqdm

from modmeta import losses
from modmeta.distributed import broadcast_state, rank_and_world, splitting
from modmeta.evaluate import Evaluation, evaluate
from modmeta.learners.base import Learner
from modmeta.tasks.base import TaskFamily
from modmeta.train import checkpoint, files
from modmeta.train.optimizers import OptimizerSpec, SchedulerSpec, make_optimizer, make_scheduler

Schedule = Literal["constant", "linear"]
METRICS = "metrics.jsonl"
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}
CALLBACKS = ("on_log", "on_validate", "on_checkpoint")


class Diverged(RuntimeError):
    """The loss or the meta-gradient stopped being finite."""


class Trainer:
    """Meta-trains ``learner`` on tasks of ``tasks``.

    - ``meta_batch`` tasks per iteration; the outer ``optimizer`` at rate ``lr``: any
      :mod:`torch.optim` class by name (``"adam"``, ``"sgd"``, ``"AdamW"``), with arguments
      as ``{"name": "AdamW", "weight_decay": 0.01}``, or an optimizer class, or a callable
      taking the parameters (see :mod:`modmeta.train.optimizers`). The rate is constant or
      decayed linearly to zero over the run (``schedule``), or follows ``scheduler``: a
      :mod:`torch.optim.lr_scheduler` class named the same ways (``{"name":
      "CosineAnnealingLR", "T_max": 1000}``) or a callable taking the optimizer, stepped once
      per iteration. ``clip_grad_norm`` rescales the meta-gradient to at most that norm
      before each step (the norm before clipping is logged as ``meta_grad_norm``).
    - ``autocast`` (``"bfloat16"`` or ``"float16"``) runs each meta-batch's forward and
      backward passes under :func:`torch.autocast` on the learner's device; the parameters
      and the optimizer stay in their own precision. float16 has no loss scaling here
      (the learner runs its own backward), so small gradients can underflow: prefer bfloat16.
    - Every ``val_every`` iterations (and at the last one), :func:`modmeta.evaluate` on
      ``val_episodes`` episodes of ``val_tasks`` drawn with ``val_seed``; 0 turns it off.
    - Every ``log_every`` iterations a line of ``metrics.jsonl``; every ``checkpoint_every``
      iterations (and at the last one) a checkpoint in ``out``. Without ``out`` nothing is
      written.
    - ``progress``: a progress bar on a terminal; when standard error is not one (a log
      file), one summary line per log step instead.
    - ``config`` (plain data) is stored in every checkpoint, so a run records its choices;
      resuming from a checkpoint written under another config is refused.
    - The run stops with :class:`Diverged` when the loss or the meta-gradient is not finite,
      when a training loss exceeds ``max_loss`` (off by default), or when it exceeds
      ``max_loss_growth`` times the lowest logged training loss (a loss that grows without
      bound but stays finite); ``None`` turns either guard off.
    - ``distributed``: this process is one rank of :mod:`torch.distributed`'s default process
      group (``modmeta train --nproc N``, or ``torchrun`` and
      :func:`modmeta.distributed.joined`): every rank draws the same meta-batch and
      computes the meta-gradient of its share of the tasks, the ranks combine them (see
      :mod:`modmeta.distributed`) and step identically; all ranks start from rank 0's
      state, and only rank 0 logs, validates, writes the run folder and calls the callbacks.

    ``seed`` seeds the task generator and the learner's own RNG state. ``callbacks`` are
    objects with any of ``on_log(trainer, record)``, ``on_validate(trainer, record)`` and
    ``on_checkpoint(trainer, path)``, called after each training record, validation record
    and checkpoint written.
    """

    def __init__(
        self,
        learner: Learner,
        tasks: TaskFamily,
        meta_batch: int = 25,
        optimizer: OptimizerSpec = "adam",
        lr: float = 1e-3,
        seed: int = 0,
        schedule: Schedule = "constant",
        val_tasks: TaskFamily | None = None,
        val_every: int = 0,
        val_episodes: int = 100,
        val_seed: int = 1,
        out: str | Path | None = None,
        checkpoint_every: int = 1000,
        log_every: int = 100,
        progress: bool = True,
        config: dict[str, Any] | None = None,
        max_loss: float | None = None,
        max_loss_growth: float | None = 1e6,
        scheduler: SchedulerSpec | None = None,
        clip_grad_norm: float | None = None,
        autocast: Literal["bfloat16", "float16"] | None = None,
        callbacks: Sequence[Any] = (),
        distributed: bool = False,
    ) -> None:
        for name, value in (("meta_batch", meta_batch), ("log_every", log_every),
                            ("checkpoint_every", checkpoint_every), ("val_episodes", val_episodes)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if val_every < 0:
            raise ValueError(f"val_every must be >= 0 (0: no validation), got {val_every}")
        for name, value in (("max_loss", max_loss), ("max_loss_growth", max_loss_growth)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None: no limit), got {value}")
        if schedule not in ("constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
        if schedule == "linear" and scheduler is not None:
            raise ValueError("give either schedule='linear' or a scheduler, not both: both set the rate")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 (or None: no clipping), got {clip_grad_norm}")
        if autocast is not None and autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {', '.join(AUTOCAST)} (or None: off), got {autocast!r}")
        if distributed and not dist.is_initialized():
            raise ValueError("distributed=True needs torch.distributed's default process group: run under torchrun "
                             "(or modmeta train --nproc N) and train inside modmeta.distributed.joined(device)")
        self._rank, self._world = rank_and_world() if distributed else (0, 1)
        if meta_batch < self._world:
            raise ValueError(f"meta_batch ({meta_batch}) must be at least the number of processes ({self._world}): "
                             f"each process needs a task; use fewer processes or a larger meta-batch")
        for callback in callbacks:
            if not any(hasattr(callback, name) for name in CALLBACKS):
                raise TypeError(f"callback {callback!r} has none of the methods {', '.join(CALLBACKS)}")
        self.learner = learner
        self.tasks = tasks
        self.meta_batch = meta_batch
        self.lr = lr
        self.schedule = schedule
        self.optimizer = make_optimizer(optimizer, learner.parameters(), lr)
        self.scheduler = make_scheduler(scheduler, self.optimizer)
        self.clip_grad_norm = clip_grad_norm
        self.autocast = AUTOCAST.get(autocast)
        self.callbacks = list(callbacks)
        self.val_tasks = val_tasks
        self.val_every = val_every if val_tasks is not None else 0
        self.val_episodes = val_episodes
        self.val_seed = val_seed
        self.out = Path(out) if out is not None else None
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.progress = progress
        self.config = config
        self.max_loss = max_loss
        self.max_loss_growth = max_loss_growth
        self._lowest_loss: float | None = None  # the lowest logged training loss, for max_loss_growth
        self.generator = torch.Generator().manual_seed(seed)
        self._rng = torch.Generator().manual_seed(seed).get_state()  # torch's default RNG during steps
        self.iteration = 0
        self.best: dict[str, Any] | None = None  # {"iteration", "metric", "mean", "ci95"}
        self.last_checkpoint: tuple[Path, int] | None = None
        self._window: dict[str, float] = {}  # each statistic's sum since the last log line, and "steps"
        self._metric_name: str | None = None
        self._val: Evaluation | None = None
        self._loss = math.nan  # the last logged training loss, for the progress bar
        self._lr = lr  # the rate of the last step, as logged

    # -- the loop --------------------------------------------------------------------------

    def fit(self, iterations: int, resume: bool = False) -> Trainer:
        """Train until ``iterations`` iterations in all have run.

        ``resume=True`` first restores the newest checkpoint in ``out`` (if there is one) and
        cuts ``metrics.jsonl`` back to it, so the run goes on exactly where it stopped.
        Raises :class:`Diverged` when the loss or meta-gradient is not finite.
        """
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        for name, length in self.learner.schedules().items():
            if length > iterations:
                warnings.warn(f"the learner's {name} ({length}) exceeds the run's iterations ({iterations}): its "
                              f"schedule would stop part-way; set {name} to at most {iterations}, or train longer",
                              stacklevel=2)
        if self.out is None and resume:
            raise ValueError("resume needs a run folder (out=...)")
        if self.out is None or self._rank != 0:  # only rank 0 touches the run folder
            self._share_state()
            return self._fit(iterations)
        with files.lock(self.out):
            files.claim(self.out, existing_run=resume and checkpoint.holds_run(self.out))
            if resume:
                self._resume()
            elif checkpoint.holds_run(self.out):
                raise FileExistsError(f"{self.out} already holds a run: continue it with fit(..., resume=True), "
                                      f"or train into another folder")
            self._share_state()
            _truncate_log(self.out / METRICS, self.iteration)
            return self._fit(iterations)

    def _share_state(self) -> None:
        """In a distributed run, every rank takes rank 0's state (its weights, or the checkpoint
        it resumed from), so all ranks start identical; nothing in a single process."""
        if self._world > 1:
            state = broadcast_state(self.state() if self._rank == 0 else None)
            if self._rank != 0:
                self.load_state(state)

    def _resume(self) -> None:
        """Restore the newest checkpoint of ``out``, after checking it was written by this run;
        set a damaged ``last.pt`` or ``best.pt`` aside (with a warning for the best)."""
        found = checkpoint.latest(self.out)
        if found is not None:
            checkpoint.check_config(found[1], self.config, found[0], "this run's config")
            self.load_state(found[1])
            self.last_checkpoint = (found[0], self.iteration)
            last = self.out / checkpoint.LAST
            if found[0] != last and last.exists():  # keep it out of the rotation
                checkpoint.set_aside(last)
        best = self.out / checkpoint.BEST
        if best.exists():
            try:
                state = checkpoint.load(best)
            except checkpoint.CheckpointError as e:
                aside = checkpoint.set_aside(best)
                warnings.warn(f"{e}; set it aside as {aside.name}: the next better validation writes a new one, "
                              f"and until then `modmeta eval` uses the newest checkpoint", stacklevel=3)
            else:
                checkpoint.check_config(state, self.config, best, "this run's config")

    def _fit(self, iterations: int) -> Trainer:
        """The loop of :meth:`fit`, in a folder already locked and prepared."""
        if self.iteration > iterations:
            raise ValueError(f"the run is already at iteration {self.iteration}, past the {iterations} asked for")
        lead = self._rank == 0  # the one process that logs, validates and writes
        log = open(self.out / METRICS, "a") if self.out is not None and lead else None  # noqa: SIM115
        board = _tensorboard(self.out, self.iteration) if lead else None
        if board is not None and self.iteration == 0 and self.config is not None:
            _write_hparams(board, self.config, self._metric(), validating=bool(self.val_every))
        terminal = self.progress and lead and sys.stderr.isatty()  # else one summary line per log step, not a bar
        bar = tqdm(total=iterations, initial=self.iteration, disable=not terminal, unit="it",
                   dynamic_ncols=True, file=sys.stderr)
        try:
            while self.iteration < iterations:
                stats = self._step(iterations)
                self.iteration += 1
                i = self.iteration
                final = i == iterations
                for k, v in {**stats, "steps": 1}.items():
                    self._window[k] = self._window.get(k, 0.0) + float(v)
                records = []
                if i % self.log_every == 0 or final:
                    records.append(self._train_record())
                if self.val_every and lead and (i % self.val_every == 0 or final):
                    records.append(self._validate())
                for r in records:
                    if log is not None:
                        files.append_line(log, json.dumps(r))
                    if board is not None:
                        for k, v in r.items():
                            if isinstance(v, float):
                                board.add_scalar(f"{r['split']}/{k}", v, i)
                    if lead:
                        self._notify("on_log" if r["split"] == "train" else "on_validate", r)
                if log is not None and (i % self.checkpoint_every == 0 or final):
                    self.save(checkpoint_name=None)
                bar.update(1)
                if records:
                    bar.set_postfix(self._postfix(), refresh=False)
                    if self.progress and lead and not terminal:
                        print(self._summary(records, iterations), file=sys.stderr, flush=True)
        finally:
            bar.close()
            if log is not None:
                log.close()
            if board is not None:
                board.close()
        return self

    def _step(self, iterations: int) -> dict[str, float]:
        """One outer iteration; raises :class:`Diverged` before a non-finite update is applied."""
        param = next(self.learner.parameters())
        self._metric()
        if self.schedule == "linear":
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * (1 - self.iteration / iterations)
        self.learner.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng)
            data = self.learner.draw(self.tasks, self.meta_batch, self.generator).to(param.device, param.dtype)
            split = splitting(type(self.learner).__name__) if self._world > 1 else contextlib.nullcontext()
            with self._precision(param.device), split:
                stats = self.learner.meta_backward(data)
            self._rng = torch.get_rng_state()
        loss = stats["loss"]
        if not math.isfinite(loss):
            raise Diverged(_data_problem(data) or self._divergence(f"the loss became {loss}"))
        if self.max_loss is not None and loss > self.max_loss:
            raise Diverged(self._divergence(f"the loss grew to {loss:.4g}, past train.max_loss={self.max_loss:g}"))
        if self.max_loss_growth is not None and self._lowest_loss and loss > self.max_loss_growth * self._lowest_loss:
            raise Diverged(self._divergence(f"the loss grew to {loss:.4g}, over {self.max_loss_growth:g} times "
                                            f"the lowest logged loss {self._lowest_loss:.4g}"))
        for name, p in self.learner.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise Diverged(self._divergence(f"the meta-gradient of {name} became non-finite"))
        if self.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.learner.parameters(), self.clip_grad_norm)
            stats = {**stats, "meta_grad_norm": float(norm)}
        self._lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return stats

    def _metric(self) -> str:
        """The name of the task family's metric ("accuracy", "mse"), read off one episode."""
        if self._metric_name is None:
            probe = self.tasks.sample(1, torch.Generator().manual_seed(0))
            self._metric_name = losses.metric_name(probe.y_query)
        return self._metric_name

    def _precision(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """:func:`torch.autocast` to the chosen precision on ``device``, or nothing when off."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)

    def _notify(self, event: str, *args: Any) -> None:
        """Call ``event`` (``on_log``, ...) on each callback that has it."""
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    def _divergence(self, what: str) -> str:
        """The one-line report of a divergence at the iteration being run."""
        where = (f"last good checkpoint: {self.last_checkpoint[0]} at iteration {self.last_checkpoint[1]}"
                 if self.last_checkpoint else "no checkpoint was written before it")
        hint = self.learner.divergence_hint()
        inner = f"{hint} or " if hint else ""
        return (f"{what} at iteration {self.iteration + 1} ({where}); the likely cause is a "
                f"learning rate too high, {inner}the outer one (lr={self.lr:g}): lower it and train again")

    def _train_record(self) -> dict[str, Any]:
        """The training statistics averaged since the last log line: the loss, the metric under
        its name, whatever else the learner reports (gradient conflicts, acceptance rates), and
        the execution the learner batches its tasks with ("vmap", "loop", "channels_last" or "threads",
        the one ``"auto"`` chose by timing after its first iterations)."""
        window, self._window = self._window, {}
        n = window.pop("steps")
        mean = {k: v / n for k, v in window.items()}
        self._loss = mean["loss"]
        if self._loss > 0:
            self._lowest_loss = min(self._loss, self._lowest_loss or math.inf)
        execution = {} if self.learner.execution is None else {"execution": self.learner.execution}
        return {"iteration": self.iteration, "split": "train", "loss": mean.pop("loss"),
                self._metric_name: mean.pop("metric"), "lr": self._lr, **mean, **execution}

    def _validate(self) -> dict[str, Any]:
        """Evaluate on the validation tasks; write ``best.pt`` when the metric improves."""
        e = evaluate(self.learner, self.val_tasks, episodes=self.val_episodes, seed=self.val_seed)
        self._val = e
        better = (self.best is None or
                  (e.mean > self.best["mean"] if e.metric == "accuracy" else e.mean < self.best["mean"]))
        if better:
            self.best = {"iteration": self.iteration, "metric": e.metric, "mean": e.mean, "ci95": e.ci95}
            if self.out is not None:
                self.save(checkpoint_name=checkpoint.BEST)
        return {"iteration": self.iteration, "split": "val", e.metric: e.mean, "ci95": e.ci95,
                "episodes": e.episodes, "steps": e.steps, "curve": e.curve}

    def _summary(self, records: list[dict[str, Any]], iterations: int) -> str:
        """A log step's records as one line, ``iteration 100/1000  loss 0.41  mse 0.41  val mse 0.39``:
        the progress report when standard error is not a terminal."""
        parts = [f"iteration {self.iteration}/{iterations}"]
        for r in records:
            prefix = "val " if r["split"] == "val" else ""
            parts += [f"{prefix}{k} {r[k]:.4g}" for k in ("loss", self._metric_name) if k in r]
        return "  ".join(parts)

    def _postfix(self) -> dict[str, str]:
        post = {"loss": f"{self._loss:.4g}"}
        if self._val is not None:
            post[f"val {self._val.metric}"] = f"{self._val.mean:.4g}"
        if self.best is not None:
            post["best"] = f"{self.best['mean']:.4g}@{self.best['iteration']}"
        return post

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs: tensors and plain data only."""
        return {
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {"tasks": self.generator.get_state(), "torch": self._rng,
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
            "best": self.best,
            "window": dict(self._window),
            "metric_name": self._metric_name,
            "lowest_loss": self._lowest_loss,
            "execution": None if self.learner.choice is None else self.learner.choice.state(),
            "config": self.config,
            "config_digest": checkpoint.config_digest(self.config),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state` (from a checkpoint) into this trainer and its learner."""
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state.get("scheduler") is None:
                raise checkpoint.CheckpointError("this checkpoint was written without a scheduler; resume it without one")
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["rng"]["tasks"])
        self._rng = state["rng"]["torch"]
        if state["rng"]["cuda"] and torch.cuda.is_available():  # absent when resumed on another device
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.iteration = state["iteration"]
        self.best = state["best"]
        window = state["window"]
        if isinstance(window, list):  # checkpoints before 0.2: [loss sum, metric sum, steps]
            window = dict(zip(("loss", "metric", "steps"), window)) if window[2] else {}
        self._window = dict(window)
        self._metric_name = state["metric_name"]
        self._lowest_loss = state.get("lowest_loss")  # absent from checkpoints before 0.3
        if state.get("execution") and self.learner.choice is not None:  # absent before issue 12: "auto" times again
            self.learner.choice.load_state(state["execution"])

    def save(self, checkpoint_name: str | None) -> Path:
        """Write a checkpoint into ``out``: ``last.pt`` (rotating) or the given file name."""
        if self.out is None:
            raise ValueError("this trainer has no run folder (out=...) to save into")
        if checkpoint_name is None:
            path = checkpoint.save_rotating(self.state(), self.out)
            self.last_checkpoint = (path, self.iteration)
        else:
            path = self.out / checkpoint_name
            checkpoint.save(self.state(), path)
        self._notify("on_checkpoint", path)
        return path


def _data_problem(data: Any) -> str | None:
    """The sentence naming a non-finite tensor of a meta-batch, or ``None`` when all are finite."""
    for name, value in vars(data).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            return (f"the loss is not finite because the task data are not: {name} holds {count} non-finite "
                    f"values (NaN or inf); check the data set (x and y arrays, or the task family's arguments)")
    return None


def _truncate_log(path: Path, iteration: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to ``iteration``: what the checkpoint has seen."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by a kill: nothing after it was written
        if record["iteration"] > iteration:
            break
        keep.append(line + "\n")
    files.write_atomic(path, "".join(keep))


def _tensorboard(out: Path | None, iteration: int) -> Any:
    """A TensorBoard writer into ``out/tensorboard`` if the package is installed, else ``None``.

    ``purge_step`` drops events a killed run wrote after the checkpoint it resumes from.
    """
    if out is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=iteration + 1)


def hparams(config: dict[str, Any]) -> dict[str, int | float | str]:
    """A run's config as TensorBoard hyperparameters: one entry per leaf, named by its key
    path (``train.lr``); lists, mappings and ``None`` as their JSON text."""
    flat: dict[str, int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= {f"{key}.{k}": v for k, v in hparams(value).items()}
        else:
            flat[key] = value if isinstance(value, int | float | str) else json.dumps(value)
    return flat


def _write_hparams(board: Any, config: dict[str, Any], metric: str, validating: bool) -> None:
    """The run's config in TensorBoard's HParams tab, tied to the scalars the run writes."""
    from torch.utils.tensorboard.summary import hparams as summaries

    tags = ["train/loss", f"train/{metric}"] + ([f"val/{metric}"] if validating else [])
    experiment, start, _ = summaries(hparams(config), dict.fromkeys(tags, 0.0))
    board.file_writer.add_summary(experiment)
    board.file_writer.add_summary(start)
