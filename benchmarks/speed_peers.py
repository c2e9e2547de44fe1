"""Milliseconds per MAML meta-iteration: modmeta side by side with TorchOpt and higher (issue 12).

Settings, all measured in one run:

- sinusoid: MLP 1-40-40-1, K=10, meta-batch 25, one inner step at rate 0.01;
- Conv4 in both variants (``maxpool``: the standard block; ``stride``: MAML's stride-2
  Omniglot network), 28x28 images, 5-way 1-shot, 15 queries, meta-batch 32, one inner step at
  rate 0.4;

each in second order (``exact``) and first order, at 1 and 2 threads. The peers run the same
weights on the same tasks the way their own MAML examples do: TorchOpt's functional API (an
``autograd.grad`` of the support loss, ``torchopt.sgd`` and ``apply_updates``, the network
called with ``torch.func.functional_call``, tasks in a loop) and higher's ``innerloop_ctx``;
their networks use ``nn.BatchNorm2d`` without running statistics (the same normalisation).
modmeta runs with the execution its ``"auto"`` guesses (vmap for the MLP; for Conv4
``channels_last`` at one thread and ``threads`` at two), so that auto's timing iterations are
not among those measured.
"limit" is one plain forward and backward of the same images (support and query of all tasks)
through the network with shared weights: what a meta-iteration would cost if per-task weights
were free.

Every measurement runs in a fresh process (``--case``), so its peak resident memory
(``ru_maxrss``, or ``torch.cuda.max_memory_allocated`` on a GPU) is its own; every process
imports ``torch._dynamo`` first (what torch.func and torch.optim load on their first call, about
80 MiB once per process), so peaks differ by what the iterations need; rounds alternate
over all cases, so slow phases of a shared machine hit every library alike. The time is wall
clock (two threads run in parallel) per meta-iteration after one warm-up; medians and minima
over all rounds' iterations. The peers are an optional extra (``pip install modmeta[peers]``,
with torch held at the installed version). The run also compares the meta-gradients of modmeta
and TorchOpt on the same weights and data (largest absolute difference).

    python benchmarks/speed_peers.py --rounds 2 --out benchmarks/results/speed-peers.json

``--malloc keep`` makes every case process, whichever library it measures, keep freed memory
for reuse first (:func:`modmeta.train.keep_freed_memory`, what ``modmeta``'s own commands do
for their process), ``--malloc thp`` puts torch's large blocks on huge pages in every case
process; ``--models`` restricts the run to some networks, ``--execution`` makes modmeta run one
execution on every network instead of auto's guess.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from torch import nn

import modmeta as mm
from machine import cpu_name

LIBRARIES = ["modmeta", "torchopt", "higher"]
MODELS = ["sine", "conv-maxpool", "conv-stride"]
ORDERS = ["second", "first"]
INNER_LR = {"sine": 0.01, "conv-maxpool": 0.4, "conv-stride": 0.4}


def tasks(model: str, device: str) -> mm.tasks.TaskBatch:
    """The benchmark's meta-batch for ``model``, the same in every process."""
    g = torch.Generator().manual_seed(0)
    if model == "sine":
        b = mm.tasks.Sinusoid(10, 10).sample(25, g)
    else:
        x = torch.rand(20 * 20, 1, 28, 28, generator=g)
        y = torch.arange(20 * 20) % 20
        b = mm.tasks.ClassificationFamily(x, y, ways=5, shots=1, queries=15).sample(32, g)
    return b.to(device)


def network(model: str) -> nn.Module:
    """modmeta's network for ``model``, initialised from seed 0."""
    torch.manual_seed(0)
    if model == "sine":
        return mm.models.MLP(1, 1, (40, 40))
    return mm.models.Conv4(5, downsample=model.split("-")[1])


def peer_network(model: str) -> nn.Module:
    """The same network with the same weights, written with ``nn.BatchNorm2d`` (batch statistics)."""
    net = network(model)
    for block in net.modules():
        for name, child in block.named_children():
            if isinstance(child, mm.models.BatchNorm):
                bn = nn.BatchNorm2d(child.num_features, track_running_stats=False)
                bn.load_state_dict(child.state_dict())
                setattr(block, name, bn)
    return net


def torchopt_step(net: nn.Module, batch: mm.tasks.TaskBatch, lr: float, first_order: bool) -> None:
    """TorchOpt's functional MAML: the meta-gradient of the mean query loss into ``.grad``."""
    import torchopt

    names = [n for n, _ in net.named_parameters()]
    inner = torchopt.sgd(lr)
    n = batch.x_support.shape[0]
    for xs, ys, xq, yq in zip(*batch.tensors()):
        params = tuple(net.parameters())
        state = inner.init(params)
        support = mm.losses.loss(torch.func.functional_call(net, dict(zip(names, params)), (xs,)), ys)
        grads = torch.autograd.grad(support, params, create_graph=not first_order)
        updates, state = inner.update(grads, state, inplace=False)
        adapted = torchopt.apply_updates(params, updates, inplace=False)
        query = mm.losses.loss(torch.func.functional_call(net, dict(zip(names, adapted)), (xq,)), yq)
        (query / n).backward()


def higher_step(net: nn.Module, batch: mm.tasks.TaskBatch, lr: float, first_order: bool) -> None:
    """higher's MAML: ``innerloop_ctx``; first order takes the query gradient at the adapted
    weights and adds it to the initial weights' ``.grad`` (higher's first-order recipe)."""
    import higher

    opt = torch.optim.SGD(net.parameters(), lr=lr)
    n = batch.x_support.shape[0]
    for xs, ys, xq, yq in zip(*batch.tensors()):
        with higher.innerloop_ctx(net, opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fnet, diffopt):
            diffopt.step(mm.losses.loss(fnet(xs), ys))
            query = mm.losses.loss(fnet(xq), yq) / n
            if not first_order:
                query.backward()
                continue
            for p, g in zip(net.parameters(), torch.autograd.grad(query, fnet.parameters())):
                p.grad = g if p.grad is None else p.grad + g


def stepper(library: str, model: str, order: str, device: str,
            execution: str = "auto") -> tuple[Callable[[], None], nn.Module]:
    """One meta-iteration of ``library`` (or the limit) as a function, and the module it trains;
    modmeta runs ``execution`` ("auto": the execution auto guesses for the network)."""
    batch = tasks(model, device)
    first_order = order == "first"
    if library == "limit":
        net = network(model).to(device)
        x = torch.cat([batch.x_support.flatten(0, 1), batch.x_query.flatten(0, 1)])
        y = torch.cat([batch.y_support.flatten(0, 1), batch.y_query.flatten(0, 1)])
        return lambda: mm.losses.loss(net(x), y).backward(), net
    if library == "modmeta":
        outer = mm.meta.outer.first_order() if first_order else mm.meta.outer.exact()
        net = network(model)
        # "auto" runs its guess for this network at this thread count (its timing iterations,
        # which keep it or another candidate, are not among those measured)
        execution = mm.meta.execution.resolve(execution, net)
        learner = mm.learners.GradientLearner(net, inner=mm.adapt.sgd(INNER_LR[model]),
                                              outer=outer, execution=execution).to(device)
        return lambda: learner.meta_backward(batch), learner
    net = (network(model) if model == "sine" else peer_network(model)).to(device)
    run = torchopt_step if library == "torchopt" else higher_step
    return lambda: run(net, batch, INNER_LR[model], first_order), net


def measure(case: dict, device: str, execution: str = "auto") -> dict:
    """Wall-clock ms per iteration (after a warm-up) and peak memory of one case, in this process."""
    repeats = 20 if case["model"] == "sine" else 2
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # torch.func's and torch.optim's first call imports torch._dynamo (and sympy): about 80 MiB of
    # resident memory, once per process. TorchOpt's functional loop calls neither, so without this
    # import its peak would be lower by that fixed amount rather than by what an iteration needs.
    # Every case imports it first; a real training run pays it anyway (torch.optim).
    import torch._dynamo  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step, module = stepper(case["library"], case["model"], case["order"], device, execution)
    ms = []
    for i in range(repeats + 1):
        module.zero_grad()
        sync()
        t = time.perf_counter()
        step()
        sync()
        if i:  # the first iteration is the warm-up
            ms.append(1000 * (time.perf_counter() - t))
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"ms": ms, "peak_mb": peak, "peak_delta_mb": peak - (0 if device == "cuda" else before)}


def gradient_difference(model: str, order: str, execution: str = "auto") -> dict:
    """The largest absolute difference between modmeta's and TorchOpt's meta-gradients on the
    same weights and tasks, in float32 (what the timed runs compute) and float64 (where rounding
    no longer hides a difference in the computation), and the largest absolute component."""
    found = {}
    for name, dtype in [("float32", torch.float32), ("float64", torch.float64)]:
        batch = tasks(model, "cpu").to("cpu", dtype)
        learner = stepper("modmeta", model, order, "cpu", execution)[1].to(dtype)
        learner.meta_backward(batch)
        peer = (network(model) if model == "sine" else peer_network(model)).to(dtype)
        torchopt_step(peer, batch, INNER_LR[model], order == "first")
        ours = dict(learner.model.named_parameters())
        found[f"max_abs_difference_{name}"] = max((ours[n].grad - p.grad).abs().max().item()
                                                  for n, p in peer.named_parameters())
        found["max_abs_component"] = max(p.grad.abs().max().item() for p in peer.parameters())
    return found


def cases(models: list[str]) -> list[dict]:
    """Every measurement of one round, at one thread count."""
    out = [{"library": lib, "model": m, "order": o} for m in models for o in ORDERS for lib in LIBRARIES]
    return out + [{"library": "limit", "model": m, "order": "-"} for m in models]


def key(case: dict, threads: int) -> str:
    return f"{case['model']}/{case['order']}/{case['library']}/{threads}t"


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Median and minimum ms and the median peak memory of each case over its rounds."""
    out = {}
    for k, rs in runs.items():
        ms = [t for r in rs for t in r["ms"]]
        out[k] = {"median_ms": statistics.median(ms), "min_ms": min(ms),
                  "peak_mb": statistics.median(r["peak_mb"] for r in rs),
                  "peak_delta_mb": statistics.median(r["peak_delta_mb"] for r in rs), "iterations": len(ms)}
    return out


def ratios(med: dict, threads: list[int], models: list[str]) -> dict:
    """The issue's targets as ratios of medians measured in this run."""
    out = {}
    for t in threads:
        def ms(model: str, order: str, lib: str) -> float:
            return med[f"{model}/{order}/{lib}/{t}t"]["median_ms"]

        for m in (m for m in models if m != "sine"):
            out[f"{m} second order: torchopt / modmeta, {t}t (target >= 1.5)"] = \
                ms(m, "second", "torchopt") / ms(m, "second", "modmeta")
            out[f"{m} peak memory: modmeta / torchopt, {t}t (target <= 1)"] = \
                med[f"{m}/second/modmeta/{t}t"]["peak_mb"] / med[f"{m}/second/torchopt/{t}t"]["peak_mb"]
            out[f"{m}: modmeta second / first order, {t}t (target >= 1.3)"] = \
                ms(m, "second", "modmeta") / ms(m, "first", "modmeta")
            out[f"{m}: modmeta second order / limit, {t}t"] = ms(m, "second", "modmeta") / med[f"{m}/-/limit/{t}t"]["median_ms"]
        if "sine" in models:
            out[f"sine second order: torchopt / modmeta, {t}t (target >= 7)"] = \
                ms("sine", "second", "torchopt") / ms("sine", "second", "modmeta")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default="benchmarks/results/speed-peers.json")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--malloc", choices=["system", "keep", "thp"], default="system",
                        help="keep: every case process (every library alike) first calls "
                             "modmeta.train.keep_freed_memory, as modmeta's own commands do; thp: every "
                             "case process runs with THP_MEM_ALLOC_ENABLE=1 (torch puts blocks of 2 MB "
                             "and more on transparent huge pages, where the kernel allows it)")
    parser.add_argument("--execution", default="auto", choices=mm.meta.execution.EXECUTIONS,
                        help="modmeta's execution (default: the one auto guesses)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: measure one case (JSON)
    args = parser.parse_args()
    if args.case:
        if args.malloc == "keep":
            mm.train.keep_freed_memory()
        torch.set_num_threads(args.threads[0])
        print(json.dumps(measure(json.loads(args.case), args.device, args.execution)))
        return
    env = os.environ | ({"THP_MEM_ALLOC_ENABLE": "1"} if args.malloc == "thp" else {})
    started = datetime.now(timezone.utc)
    runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for t in args.threads:
            for case in cases(args.models):
                out = subprocess.run([sys.executable, __file__, "--case", json.dumps(case), "--threads", str(t),
                                      "--device", args.device, "--malloc", args.malloc, "--execution", args.execution],
                                     check=True, capture_output=True, text=True, env=env).stdout
                runs.setdefault(key(case, t), []).append(json.loads(out))
                print(f"round {r + 1} {key(case, t)}: {runs[key(case, t)][-1]}", flush=True)
    torch.set_num_threads(1)
    med = summarise(runs)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores (threads per case: "
                   f"{', '.join(map(str, args.threads))}), torch {torch.__version__}, device {args.device}",
        "command": " ".join(["python", "benchmarks/speed_peers.py", *sys.argv[1:]]),
        "minutes": (datetime.now(timezone.utc) - started).total_seconds() / 60,
        "malloc": args.malloc,
        "execution": args.execution,
        "ratios": ratios(med, args.threads, args.models),
        "gradients_modmeta_vs_torchopt": {f"{m}/{o}": gradient_difference(m, o, args.execution)
                                          for m in args.models for o in ORDERS},
        "cases": med,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
