"""CPU seconds per meta-iteration of each shipped Omniglot config under each execution.

Each config is built twice by ``modmeta.config`` (``learner.execution`` set to each of
``--executions``); the same meta-batches of real Omniglot, drawn from seed 0, alternate between
the builds, the first one a warm-up, and the median process CPU time of ``meta_backward`` is
reported (wall-clock time with ``--clock wall``: what several threads save shows there only),
with the speed-up of each execution over the first. One process, ``--threads`` threads::

    python benchmarks/executions.py --out benchmarks/results/executions.json
    python benchmarks/executions.py --threads 2 --clock wall --executions channels_last threads \
        --out benchmarks/results/executions-threads.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from modmeta import config
from machine import cpu_name

CONFIGS = ["protonet", "matchingnet", "relationnet", "fomaml", "linearhead", "reptile", "imaml"]


def seconds(path: str, executions: list[str], batches: int, clock: str = "cpu") -> dict[str, float]:
    """Median seconds (process CPU or wall clock) of one meta-iteration of the config at
    ``path`` under each execution."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    runs = {e: config.build(config.load(path, [f"learner.execution={e}"])) for e in executions}
    first = runs[executions[0]]
    meta_batch = first.config.train.meta_batch
    generator = torch.Generator().manual_seed(0)
    data = [first.learner.draw(first.tasks, meta_batch, generator) for _ in range(batches + 1)]
    times: dict[str, list[float]] = {e: [] for e in executions}
    for i, batch in enumerate(data):
        for e, run in runs.items():
            run.learner.zero_grad()
            start = now()
            run.learner.meta_backward(batch)
            if i:  # the first batch warms up
                times[e].append(now() - start)
    return {e: statistics.median(t) for e, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", nargs="+", default=["loop", "channels_last"])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--batches", type=int, default=3, help="timed meta-batches per config")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--out", default="benchmarks/results/executions.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name in args.configs:
        path = f"configs/omniglot-{name}-5w1s.yaml"
        s = seconds(path, args.executions, args.batches, args.clock)
        rows[path] = {"seconds": s, "speed_up": {e: s[args.executions[0]] / s[e] for e in args.executions[1:]}}
        print(path, rows[path], flush=True)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}", "clock": args.clock,
              "command": " ".join(["python", "benchmarks/executions.py", *sys.argv[1:]]), "configs": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
