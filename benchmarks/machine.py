"""The processor a benchmark ran on, for its results file.

A CPU-time budget buys different numbers of iterations on different processors (Reptile's
Omniglot config ran at 0.095 CPU seconds per iteration on one host and 0.149 on another), so
every result names the processor model, not only the architecture.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name, from ``/proc/cpuinfo`` where there is one (Linux), else what
    :mod:`platform` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
