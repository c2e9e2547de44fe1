"""Distributed meta-training on :mod:`torch.distributed`: one meta-batch split across processes.

Every process (rank) draws the same full meta-batch from the trainer's generator, then works
on its own share of the tasks: contiguous chunks whose sizes differ by at most one, so the
union of the shares is exactly the single-process meta-batch. Where the tasks' meta-gradients
are aggregated (:func:`modmeta.meta.aggregate.backward`):

- the mean: each rank backpropagates the mean over its ``n_r`` tasks, ``g_r``, and the ranks
  all-reduce ``Σ_r (n_r / N) g_r``, the mean over all ``N`` tasks up to float summation order;
- any other combination (Meta-PCGrad) needs every task's meta-gradient: the per-task
  gradients are all-gathered and combined over the whole meta-batch on every rank;
- the per-task numbers a step reports (losses, metrics) are all-gathered, so the logged means
  are the single-process ones.

Every rank then steps the same optimizer on the same gradient, so the parameters stay
identical on all ranks, and a checkpoint is the object a single-process run writes: a run
resumes with any number of processes. The splitting is active only inside
:func:`splitting` (the Trainer's step); elsewhere :func:`share`, :func:`gather` and
:func:`averaging` do nothing, so evaluation and single-process training are unchanged.

Processes are torch's own: under ``torchrun`` the environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``) says who is who and :func:`joined` (or :func:`init`)
joins the process group (gloo on CPUs, NCCL on GPUs, one GPU per process: ``LOCAL_RANK``); on one
machine :func:`launch` starts the processes itself with that same environment.
"""

from __future__ import annotations

import functools
import io
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# A collective waits this long for the other ranks (rank 0 validating and checkpointing
# meanwhile) before it fails; a rank that dies is noticed sooner, by its launcher.
TIMEOUT = timedelta(minutes=30)
GRACE = 5.0  # seconds :func:`launch` gives the other processes to end after one failed


class WorkerFailed(RuntimeError):
    """A process of a distributed run failed or was killed; the others were stopped."""


@dataclass(frozen=True)
class Environment:
    """This process's place in a distributed run, from torchrun's environment variables."""

    rank: int
    world: int
    local_rank: int


@dataclass
class Split:
    """The active split of a step's tasks over ``world`` ranks; ``used`` is set once a
    meta-gradient has been split (the Trainer checks that the learner's was)."""

    rank: int
    world: int
    used: bool = False

    def bounds(self, tasks: int, rank: int | None = None) -> tuple[int, int]:
        """``(start, stop)`` of ``rank``'s (default: this rank's) contiguous share of ``tasks``."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(tasks, self.world)
        start = rank * base + min(rank, extra)
        return start, start + base + (rank < extra)


_split: ContextVar[Split | None] = ContextVar("modmeta_split", default=None)


def environment() -> Environment | None:
    """This process's :class:`Environment` under torchrun (or :func:`launch`), else ``None``."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return Environment(rank, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank)))


def init(device: torch.device) -> None:
    """Join the process group of torchrun's environment: NCCL when ``device`` is a GPU (made
    this process's current one), else gloo; collectives time out after :data:`TIMEOUT`."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)


@contextmanager
def joined(device: torch.device) -> Iterator[None]:
    """Be one rank of torchrun's process group for the block: :func:`init` on entry, and on
    leaving the group destroyed. A block that ends normally first waits for every rank
    (a barrier), so no rank tears its connections down while another still uses them (gloo
    can then abort the other process); a block that raises leaves at once, since a barrier
    would wait for a rank that may be gone, and marks the error with when it was raised
    (``raised_ns``, for :func:`launch` to tell it from the errors it causes in the others)."""
    init(device)
    try:
        yield
    except BaseException as e:
        e.raised_ns = time.monotonic_ns()  # before leaving: the others' errors follow from the leaving
        dist.destroy_process_group()
        raise
    dist.barrier()
    dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when there is none."""
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _device() -> torch.device:
    """Where this process's collective buffers live: its GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- one step's split ------------------------------------------------------------------------


@contextmanager
def splitting(learner: str) -> Iterator[Split]:
    """Split the tasks of the steps inside the block over the default process group's ranks;
    raises ``TypeError`` when ``learner`` computed its meta-gradient without splitting it (its
    ranks would each step on the whole meta-batch, ``world`` times the work)."""
    rank, world = rank_and_world()
    split = Split(rank, world)
    token = _split.set(split)
    try:
        yield split
    finally:
        _split.reset(token)
    if not split.used:
        raise TypeError(f"{learner} computes its meta-gradient outside modmeta.meta.aggregate.backward, so it "
                        f"cannot split a meta-batch over processes: train it with one process")


def share(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous share of the tasks (the leading axis) of ``tensors``; all of
    them outside :func:`splitting`."""
    split = _split.get()
    if split is None:
        return tensors
    split.used = True
    start, stop = split.bounds(tensors[0].shape[0])
    return tuple(t[start:stop] for t in tensors)


def gather(tensors: Iterable[torch.Tensor], tasks: int) -> tuple[torch.Tensor, ...]:
    """All ranks' shares of ``tasks`` tasks, concatenated in task order on every rank, for each
    of ``tensors`` (this rank's, tasks on the leading axis; one all-gather for all of them);
    ``tensors`` themselves outside :func:`splitting`."""
    tensors = tuple(tensors)
    split = _split.get()
    if split is None:
        return tensors
    own = tensors[0].shape[0]
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    flat = torch.cat([t.reshape(own, -1).to(dtype) for t in tensors], 1)
    sizes = [stop - start for start, stop in (split.bounds(tasks, r) for r in range(split.world))]
    padded = flat.new_zeros(max(sizes), flat.shape[1])  # all_gather needs equal shapes
    padded[:own] = flat
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    full = torch.cat([part[:size] for part, size in zip(parts, sizes)])
    widths = [t[0].numel() for t in tensors]
    return tuple(column.reshape(tasks, *t.shape[1:]).to(t.dtype) for column, t in zip(full.split(widths, 1), tensors))


@contextmanager
def averaging(params: dict[str, torch.Tensor], tasks: int) -> Iterator[None]:
    """Inside :func:`splitting`: the gradients the block accumulates into ``params`` (the mean
    over this rank's share of ``tasks`` tasks) become the mean over all ranks' tasks, by an
    all-reduce of ``(n_r / N) g_r``; gradients already there are kept as they were. Outside
    :func:`splitting` it does nothing."""
    split = _split.get()
    if split is None:
        yield
        return
    live = [p for p in params.values() if p.requires_grad]
    before = [p.grad for p in live]
    for p in live:
        p.grad = None
    yield
    start, stop = split.bounds(tasks)
    # one all-reduce: the weighted gradients, then a 1 for each gradient this rank has (a
    # gradient on any rank is one on all; a parameter no task reached keeps None)
    grads = [(torch.zeros_like(p) if p.grad is None else p.grad).flatten() * ((stop - start) / tasks) for p in live]
    reached = torch.tensor([p.grad is not None for p in live], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([*grads, reached]).to(_device())
    dist.all_reduce(flat)
    *summed, reached = flat.split([*(p.numel() for p in live), len(live)])
    for p, g, r in zip(live, summed, reached.tolist()):
        p.grad = g.view_as(p).to(p.device, p.dtype) if r else None
    for p, old in zip(live, before):
        if old is not None:
            p.grad = old if p.grad is None else old + p.grad


# -- the run's state -------------------------------------------------------------------------


def broadcast_state(state: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0's ``state`` (a checkpoint's contents: tensors and plain data) on every rank,
    loaded onto the CPU; the other ranks pass ``None``. It goes as ``torch.save`` bytes."""
    device = _device()
    lead = dist.get_rank() == 0
    if lead:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(device)
        size = torch.tensor([data.numel()], device=device)
    else:
        size = torch.zeros(1, dtype=torch.int64, device=device)
    dist.broadcast(size, 0)
    if not lead:
        data = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(data, 0)
    if lead:
        return state
    return torch.load(io.BytesIO(data.cpu().numpy().tobytes()), map_location="cpu", weights_only=True)


# -- processes on one machine ----------------------------------------------------------------


def launch(worker: Callable[..., Any], nproc: int, *args: Any) -> None:
    """Run ``worker(*args)`` in ``nproc`` new processes forming one process group on this
    machine: torchrun's environment variables with a free loopback port, one thread each
    unless ``OMP_NUM_THREADS`` is set (as torchrun does). Returns when all have finished.

    The processes are started the way :mod:`torch.multiprocessing` does ("spawn": a fresh
    interpreter each, safe with threads and GPUs) and watched: when one fails or is killed,
    the others get :data:`GRACE` seconds to end (a rank waiting on a collective with the
    failed one fails at once), then are killed (no rank waits on a collective that cannot
    complete), and :class:`WorkerFailed` names the cause in one line: a process killed by a
    signal, else the error raised first (the others' errors, a closed connection or an abort,
    follow from it).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as errors:
        processes = [spawn.Process(target=_worker, args=(rank, nproc, port, errors, worker, args))
                     for rank in range(nproc)]
        for process in processes:
            process.start()
        try:
            while any(p.exitcode is None for p in processes):
                wait([p.sentinel for p in processes if p.exitcode is None], timeout=1.0)
                if any(p.exitcode for p in processes):
                    _wait_for_all(processes, GRACE)
                    raise WorkerFailed(_failure(processes, Path(errors)))
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                process.join()


def _wait_for_all(processes: list[Any], seconds: float) -> None:
    """Wait until every process has ended, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        wait([p.sentinel for p in processes if p.exitcode is None], timeout=deadline - time.monotonic())


def _worker(rank: int, nproc: int, port: int, errors: str, worker: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A process of :func:`launch`: torchrun's environment for ``rank``, then the worker; an
    error is written to ``errors/RANK`` for the launcher to report: when it was raised (the
    machine's monotonic clock, which every process shares) and the error in one line."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    try:
        worker(*args)
    except BaseException as e:  # noqa: BLE001  (reported by the launcher, as the CLI reports errors)
        raised = getattr(e, "raised_ns", time.monotonic_ns())  # stamped by joined() before it left the group
        Path(errors, str(rank)).write_text(f"{raised} " + " ".join(f"{type(e).__name__}: {e}".split()))
        sys.exit(1)


def _failure(processes: list[Any], errors: Path) -> str:
    """The sentence naming the failure's cause: a process killed by a signal from outside (it
    wrote no error), else the process whose error was raised first, else one that aborted or
    exited with an error status without writing one. An abort comes after the errors because
    gloo can abort a rank whose peer left the group (C++'s ``std::terminate``, "terminate called
    without an active exception"): there the peer's error is the cause."""
    n = len(processes)
    signals = {rank: signal.Signals(-p.exitcode) for rank, p in enumerate(processes)
               if p.exitcode is not None and p.exitcode < 0}
    for rank, sig in signals.items():
        if sig != signal.SIGABRT:
            return f"process {rank} of {n} was killed by {sig.name}; the others were stopped"
    written = {rank: errors.joinpath(str(rank)).read_text().split(" ", 1) for rank in range(n)
               if errors.joinpath(str(rank)).exists()}
    if written:
        rank = min(written, key=lambda r: int(written[r][0]))
        return f"process {rank} of {n} failed: {written[rank][1]}; the others were stopped"
    if signals:
        rank, sig = next(iter(signals.items()))
        return f"process {rank} of {n} was killed by {sig.name}; the others were stopped"
    for rank, process in enumerate(processes):
        if process.exitcode:
            return f"process {rank} of {n} exited with status {process.exitcode}; the others were stopped"
    raise AssertionError("no process failed")
