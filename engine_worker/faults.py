"""Fault injection for crash tests: `BOURSE_FAULT=<point>` makes the process SIGKILL itself there.

Points: `engine.after_dequeue`, `engine.after_enqueue`, `engine.after_publish`,
`db.before_commit`, `db.after_commit`. `BOURSE_FAULT_AFTER=N` lets the point pass N times
first, so a test can kill a process in the middle of a flow rather than at its first step.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    if os.environ.get("BOURSE_FAULT") != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] > int(os.environ.get("BOURSE_FAULT_AFTER", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
