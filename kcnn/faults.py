"""Named crash points for fault tests: the process kills itself with SIGKILL where a test says.

``KCNN_CRASH_AT=point`` (or ``point@N`` for the N-th time the point is reached, or several separated by
commas) makes :func:`crash_point` send SIGKILL to its own process there (``point@N:TERM``: SIGTERM, as a
preempted machine gets), so a test can kill a run or an
export exactly in the middle of a write instead of guessing with sleeps. Unset, it costs one
environment look-up.
"""

from __future__ import annotations

import collections
import os
import signal

ENVIRONMENT = "KCNN_CRASH_AT"
_reached: collections.Counter = collections.Counter()


def crash_point(name: str) -> None:
    """SIGKILL (or the signal the spec names) this process if ``KCNN_CRASH_AT`` names ``name`` (at its N-th arrival)."""
    spec = os.environ.get(ENVIRONMENT)
    if not spec:
        return
    _reached[name] += 1
    for item in spec.split(","):
        item, _, signal_name = item.strip().rpartition(":")
        if not (signal_name.isupper() and hasattr(signal, f"SIG{signal_name}")):  # a point named "replace:x.keras"
            item, signal_name = f"{item}:{signal_name}" if item else signal_name, ""
        point, _, count = item.partition("@")
        if point == name and _reached[name] == (int(count) if count else 1):
            os.kill(os.getpid(), getattr(signal, f"SIG{signal_name}") if signal_name else signal.SIGKILL)
