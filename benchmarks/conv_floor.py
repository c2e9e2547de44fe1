"""How close a Conv4 MAML meta-iteration is to what its convolutions alone cost (issue 12).

For each network of ``speed_peers.py`` (max-pool and stride-2 Conv4, 5-way 1-shot, 15 queries,
meta-batch 32, one inner step) and each of modmeta and TorchOpt, second and first order, at one
thread, this measures one meta-iteration three ways:

- its floating-point operations, by kind (``torch.utils.flop_counter``: convolutions forward
  and backward, and the rest it counts);
- its CPU time (median of ``--repeats`` rounds after a warm-up round, the rounds alternating
  over all cases so that a slow phase of shared cores hits every case alike) and, in a profiled
  iteration, the share spent in convolution kernels (forward and backward) against everything
  else: batch norm, pooling, elementwise arithmetic, copies, dispatch;
- the rate the convolutions run at, against this core's rate on a large matrix product
  (float32, one thread): how much faster the convolutions themselves could still go.

From these it states the bound the issue's 1.5x target meets: if modmeta's convolution time
were all it spent, how many times faster than TorchOpt it would be, and how much of its
non-convolution time must go for 1.5x. Every case runs in this one process after
:func:`modmeta.train.keep_freed_memory` (every library alike), so freed activations are
reused rather than page-faulted in again.

    python benchmarks/conv_floor.py --out benchmarks/results/conv-floor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import torch
from torch import nn
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

import modmeta as mm
from machine import cpu_name
from speed_peers import stepper

CONV_KERNELS = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                "aten::_slow_conv2d_backward"}


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size``-square float32 matrix product: this core's practical peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    seconds = []
    for _ in range(repeats):
        t = time.process_time()
        a @ b
        seconds.append(time.process_time() - t)
    return 2 * size**3 / min(seconds) / 1e9


def cpu_seconds(step: Callable[[], None], module: nn.Module) -> float:
    """CPU seconds of one meta-iteration."""
    module.zero_grad()
    t = time.process_time()
    step()
    return time.process_time() - t


def analyse(step: Callable[[], None], module: nn.Module) -> dict:
    """FLOPs of one meta-iteration, and the convolution kernels' share of a profiled one."""
    module.zero_grad()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    conv_flops = sum(n for op, n in flops.items() if "convolution" in op)
    module.zero_grad()
    with profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_KERNELS) / 1e6
    return {"flops": flops, "conv_gflop": conv_flops / 1e9, "profiled_seconds": total,
            "conv_seconds_profiled": conv, "conv_share": conv / total, "conv_gflop_per_s": conv_flops / 1e9 / conv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["conv-maxpool", "conv-stride"])
    parser.add_argument("--out", default="benchmarks/results/conv-floor.json")
    args = parser.parse_args()
    mm.train.keep_freed_memory()
    torch.set_num_threads(1)
    started = datetime.now(timezone.utc)
    peak = matmul_rate()
    steps = {f"{model}/{order}/{library}": stepper(library, model, order, "cpu")
             for model in args.models for order in ("second", "first") for library in ("modmeta", "torchopt")}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.repeats + 1):  # round 0 warms every case up
        for name, (step, module) in steps.items():
            t = cpu_seconds(step, module)
            if r:
                times[name].append(t)
    cases: dict[str, dict] = {}
    for name, (step, module) in steps.items():
        cases[name] = found = {"seconds": statistics.median(times[name]), "seconds_all": times[name],
                               **analyse(step, module)}
        print(f"{name}: {found['seconds']:.3f} s, convolutions {100 * found['conv_share']:.0f}% at "
              f"{found['conv_gflop_per_s']:.0f} GFLOP/s ({found['conv_gflop']:.1f} GFLOP)", flush=True)
    bounds = {}
    for model in args.models:
        ours, theirs = cases[f"{model}/second/modmeta"], cases[f"{model}/second/torchopt"]
        conv = ours["conv_share"] * ours["seconds"]
        bounds[model] = {
            "torchopt_over_modmeta": theirs["seconds"] / ours["seconds"],
            "torchopt_over_modmeta_convolutions_alone": theirs["seconds"] / conv,
            "modmeta_non_convolution_seconds": ours["seconds"] - conv,
            "non_convolution_seconds_allowed_for_1.5x": theirs["seconds"] / 1.5 - conv,
        }
    result = {"date": started.isoformat(timespec="seconds"),
              "machine": f"{cpu_name()}, 1 thread, torch {torch.__version__}",
              "command": " ".join(["python", "benchmarks/conv_floor.py", *sys.argv[1:]]),
              "matmul_gflop_per_s": peak, "bounds_second_order": bounds, "cases": cases}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"matrix product: {peak:.0f} GFLOP/s")
    print(json.dumps(bounds, indent=2))


if __name__ == "__main__":
    main()
