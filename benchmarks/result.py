"""The last line of every benchmark: ``RESULT {json}``, with the wall time of the whole script."""

from __future__ import annotations

import json
import os
import time

_IMPORTED = time.perf_counter()


def process_seconds() -> float:
    """Seconds since this process started (Linux's /proc; elsewhere since this module was imported)."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def print_result(summary: dict, **dumps_options) -> None:
    """Print ``RESULT {json}`` of ``summary`` plus ``wall_seconds``, the script's own wall time."""
    print("RESULT " + json.dumps({**summary, "wall_seconds": round(process_seconds(), 1)}, **dumps_options),
          flush=True)
