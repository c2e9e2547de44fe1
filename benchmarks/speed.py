"""Seconds per meta-iteration of MAML, vectorised (vmap) and looped, against "the limit".

Two settings of the foundation issue, measured in one run so that only ratios are compared:

- sinusoid MAML: MLP 1-40-40-1, K=10, meta-batch 25, 1 inner step, second order;
- Omniglot-shaped Conv4 MAML: 5-way 1-shot, 15 queries, meta-batch 32, 1 step, second order.

"The limit" is one plain forward and backward pass of the same images (support and query of
all tasks, 2,560 for Conv4) through the same network with shared weights: what a meta-iteration
would cost if per-task weights were free. Each measurement runs in its own process, so its peak
resident memory (``ru_maxrss``) is its own; the settings alternate over ``--rounds`` rounds and
the medians are reported. Time is the process's CPU time (``time.process_time``) with
``--threads`` threads (default 1): on a machine whose cores are shared with other work, CPU
time of a single-threaded process is what it would take alone, where wall time is not.

    python benchmarks/speed.py --rounds 3 --out benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import date

import torch
import torch.nn.functional as F

import modmeta as mm
from machine import cpu_name

CASES = ["sine-vmap", "sine-loop", "conv-limit", "conv-limit-cl", "conv-channels_last", "conv-loop", "conv-vmap"]


def batch(case: str) -> mm.tasks.TaskBatch:
    g = torch.Generator().manual_seed(0)
    if case.startswith("sine"):
        return mm.tasks.Sinusoid(10, 10).sample(25, g)
    x = torch.rand(20 * 20, 1, 28, 28, generator=g)
    y = torch.arange(20 * 20) % 20
    return mm.tasks.ClassificationFamily(x, y, ways=5, shots=1, queries=15).sample(32, g)


def measure(case: str, repeats: int) -> dict:
    """Median seconds per iteration and peak RSS of one case, in this process."""
    torch.manual_seed(0)
    b = batch(case)
    if case.startswith("sine"):
        learner = mm.learners.MAML(mm.models.MLP(1, 1, (40, 40)), inner_lr=0.01, execution=case[5:])
    elif case.startswith("conv-limit"):
        net = mm.models.Conv4(5)
        x = torch.cat([b.x_support.flatten(0, 1), b.x_query.flatten(0, 1)])
        y = torch.cat([b.y_support.flatten(), b.y_query.flatten()])
        if case.endswith("-cl"):
            net = net.to(memory_format=torch.channels_last)
            # a 1-channel image is contiguous in both layouts, so .contiguous(channels_last) (or a
            # permute and .contiguous()) leaves its strides as they are and the first convolution
            # answers in NCHW: give it channels-last strides explicitly
            x = mm.meta.execution.channels_last(x)
    else:
        learner = mm.learners.MAML(mm.models.Conv4(5), inner_lr=0.4, execution=case[5:])

    def step() -> None:
        if case.startswith("conv-limit"):
            net.zero_grad()
            F.cross_entropy(net(x), y).backward()
        else:
            learner.zero_grad()
            learner.meta_backward(b)

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.process_time()
        step()
        times.append(time.process_time() - t)
    return {"seconds": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/speed.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: measure one case
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(measure(args.case, 50 if args.case.startswith("sine") else 3)))
        return
    runs: dict[str, list[dict]] = {c: [] for c in CASES}
    for r in range(args.rounds):
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "--case", case, "--threads", str(args.threads)], check=True,
                                 capture_output=True, text=True).stdout
            runs[case].append(json.loads(out))
            print(f"round {r + 1} {case}: {runs[case][-1]}", flush=True)
    med = {c: {k: statistics.median(x[k] for x in v) for k in v[0]} for c, v in runs.items()}
    s = {c: med[c]["seconds"] for c in CASES}
    result = {
        "date": date.today().isoformat(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]]),
        "median": med,
        "ratios": {
            "sinusoid loop / vmap (target >= 7)": s["sine-loop"] / s["sine-vmap"],
            "omniglot auto (channels_last) / limit (target <= 1.3)": s["conv-channels_last"] / s["conv-limit"],
            "omniglot auto (channels_last) / limit channels_last": s["conv-channels_last"] / s["conv-limit-cl"],
            "omniglot loop / channels_last": s["conv-loop"] / s["conv-channels_last"],
            "omniglot vmap / loop": s["conv-vmap"] / s["conv-loop"],
            "omniglot peak memory vmap / loop": med["conv-vmap"]["peak_rss_mb"] / med["conv-loop"]["peak_rss_mb"],
            "omniglot peak memory loop / limit": med["conv-loop"]["peak_rss_mb"] / med["conv-limit"]["peak_rss_mb"],
            "omniglot peak memory channels_last / loop": (med["conv-channels_last"]["peak_rss_mb"]
                                                          / med["conv-loop"]["peak_rss_mb"]),
        },
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
