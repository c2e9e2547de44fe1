"""Run ``modmeta ARGS...`` and SIGKILL this process at its N-th write into a run folder.

``python kill_at_write.py N ARGS...``: every whole-file write (``files.write_atomic``) and every
appended log line (``files.append_line``) counts as one write. The N-th is interrupted the way
a kill interrupts it: a whole-file write after its temporary file holds half the data, before
the rename; a log line after half of it reached the file. ``N = 0`` kills nothing and prints
the number of writes on the last line of standard output.
"""

from __future__ import annotations

import os
import signal
import sys

from modmeta import cli
from modmeta.train import files

target = int(sys.argv[1])
count = 0
write_atomic, append_line = files.write_atomic, files.append_line


def due() -> bool:
    global count
    count += 1
    return count == target


def killing_write_atomic(path, data):
    if due():
        raw = data.encode() if isinstance(data, str) else data
        with open(os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.kill.tmp"), "wb") as f:
            f.write(raw[: len(raw) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    write_atomic(path, data)


def killing_append_line(handle, line):
    if due():
        handle.write(line[: len(line) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    append_line(handle, line)


files.write_atomic, files.append_line = killing_write_atomic, killing_append_line
rc = cli.main(sys.argv[2:])
if target == 0:
    print(count)
sys.exit(rc)
