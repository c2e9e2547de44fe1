"""modmeta's commands keep freed activations in their process (modmeta.train.memory, issue 12)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

import modmeta.cli
from modmeta.train import memory

def memory_is_glibcs() -> bool:
    return Path("/proc/self/statm").exists() and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


FREED = """
import torch
from modmeta.train import keep_freed_memory

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

kept = keep_freed_memory() if {keep} else None
x = torch.ones(6 * 2**20)  # 24 MiB, above glibc's default mmap threshold
before = resident_mib()
del x
print(kept, round(before - resident_mib()))
"""


@pytest.mark.skipif(not memory_is_glibcs(), reason="glibc's malloc and /proc (Linux) only")
@pytest.mark.parametrize("keep", [True, False])
def test_a_freed_activation_stays_in_the_process_only_when_asked(keep: bool):
    # its own process: the setting is process-wide and must not leak into the test run's
    out = subprocess.run([sys.executable, "-c", FREED.format(keep=keep)], capture_output=True, text=True, check=True)
    kept, returned_mib = out.stdout.split()
    assert kept == ("True" if keep else "None")
    assert abs(int(returned_mib)) <= 2 if keep else int(returned_mib) >= 20, out.stdout


def test_nothing_changes_where_malloc_is_not_glibcs(monkeypatch: pytest.MonkeyPatch):
    class NotGlibc:
        def mallopt(self, *args: int) -> int:
            raise AssertionError("mallopt called on a libc that is not glibc")

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NotGlibc())
    assert memory.keep_freed_memory() is False


@pytest.mark.parametrize("setting, calls", [(None, 1), ("keep", 1), ("system", 0)])
def test_the_commands_keep_freed_memory_unless_told_not_to(monkeypatch: pytest.MonkeyPatch, capsys, setting, calls):
    called: list[None] = []
    monkeypatch.setattr(modmeta.cli, "keep_freed_memory", lambda: called.append(None) or True)
    if setting is None:
        monkeypatch.delenv("MODMETA_MALLOC", raising=False)
    else:
        monkeypatch.setenv("MODMETA_MALLOC", setting)
    assert modmeta.cli.main(["list"]) == 0
    assert len(called) == calls
