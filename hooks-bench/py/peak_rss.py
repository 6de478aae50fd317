"""Runs a command and prints, as one JSON line, its peak RSS in bytes, wall time and exit status.

    peak_rss.py COMMAND [ARG...]

Linux counts a process's peak RSS from before its `exec`, so a command started straight from a
large process (the benchmark, holding a model and hundreds of MB of tensors) would report at least
that process's size. This launcher is small and imports nothing heavy: it forks, the child execs
the command, and `wait4` returns the command's own `ru_maxrss`. The command's stdout is discarded
(stdout carries the JSON); its stderr passes through.
"""

import json
import os
import sys
import time

argv = sys.argv[1:]
if not argv:
    sys.exit(__doc__)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(
    json.dumps(
        {
            # ru_maxrss is in KiB on Linux.
            "peak_rss": usage.ru_maxrss * 1024,
            "seconds": time.perf_counter() - start,
            "status": os.waitstatus_to_exitcode(status),
        }
    )
)
