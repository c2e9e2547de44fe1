"""Seconds per meta-iteration of Conv4 MAML on Omniglot, split over processes or threads.

The setting of ``configs/omniglot-maml-5w1s.yaml`` (5-way 1-shot, 15 queries, meta-batch 32,
one inner step, second order, Conv4 with 64 filters), on the real archives at the config's
``tasks.root``, measured three ways with the same meta-batches:

- ``2x1``: ``modmeta.distributed`` with 2 processes of 1 thread each (gloo on loopback);
- ``1x2``: one process with 2 threads (torch's intra-op parallelism);
- ``1x1``: one process with 1 thread, the baseline.

Each measurement runs in fresh processes: the run is built from the config, one iteration
warms up, then ``--iterations`` iterations are timed by the wall clock (processes run in
parallel, so CPU time would not show the gain); the settings alternate over ``--rounds`` rounds
and the medians are reported, with the scaling efficiency ``t(1x1) / (2 · t(2x1))`` (1 is
perfect) and the same for threads. The load average before each measurement is recorded:
other work on the machine slows the two-worker settings most.

    python benchmarks/distributed.py --rounds 2 --iterations 3 --out benchmarks/results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import modmeta as mm
from modmeta import config, distributed
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "omniglot-maml-5w1s.yaml"
CASES = ["2x1", "1x2", "1x1"]


def seconds_per_iteration(iterations: int, in_group: bool) -> float:
    """Build the config's run (no run folder, no validation), warm up one iteration, then time
    ``iterations`` more; wall seconds per iteration (as seen by rank 0 in a group)."""
    cfg = config.load(CONFIG, [f"tasks.root={ROOT.parent / 'shared/data/omniglot'}", "train.val_every=0",
                               "device=cpu"])
    trainer = config.trainer(config.build(cfg), None, progress=False, distributed=in_group)
    trainer.fit(1)
    start = time.perf_counter()
    trainer.fit(1 + iterations)
    return (time.perf_counter() - start) / iterations


def group_worker(iterations: int, out: str) -> None:
    """One process of the ``2x1`` setting; rank 0 writes the time to ``out``."""
    with distributed.joined(torch.device("cpu")):
        seconds = seconds_per_iteration(iterations, in_group=True)
        if distributed.environment().rank == 0:
            Path(out).write_text(json.dumps(seconds))


def run_case(case: str, iterations: int, out: str) -> None:
    """Measure ``case`` in this process (and its workers); the seconds go to ``out``."""
    if case == "2x1":
        distributed.launch(group_worker, 2, iterations, out)
    else:
        torch.set_num_threads(int(case[2:]))
        Path(out).write_text(json.dumps(seconds_per_iteration(iterations, in_group=False)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one measurement (internal)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args.case, args.iterations, args.result)
        return
    times: dict[str, list[float]] = {c: [] for c in CASES}
    load: dict[str, list[float]] = {c: [] for c in CASES}
    result = Path(args.out).with_suffix(".part")
    for r in range(args.rounds):
        for case in CASES:
            load[case].append(os.getloadavg()[0])
            env = os.environ | {"OMP_NUM_THREADS": "1" if case == "2x1" else case[2:]}
            subprocess.run([sys.executable, __file__, "--case", case, "--iterations", str(args.iterations),
                            "--result", str(result)], check=True, env=env)
            times[case].append(json.loads(result.read_text()))
            print(f"round {r + 1} {case}: {times[case][-1]:.3f} s/iteration", file=sys.stderr, flush=True)
    result.unlink()
    median = {c: statistics.median(t) for c, t in times.items()}
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, modmeta {mm.__version__}",
        "command": "python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
        "setting": "Conv4 MAML, Omniglot 5-way 1-shot, 15 queries, meta-batch 32, 1 inner step, second order",
        "seconds_per_iteration": {"median": median, "each_round": times},
        "load_average_before": load,
        "speedup": {"2 processes x 1 thread": median["1x1"] / median["2x1"],
                    "1 process x 2 threads": median["1x1"] / median["1x2"]},
        "scaling_efficiency": {"2 processes x 1 thread": median["1x1"] / (2 * median["2x1"]),
                               "1 process x 2 threads": median["1x1"] / (2 * median["1x2"])},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
