"""Named kill points for the crash harness (issue "never lose an annotation").

``FMABS_CRASH_AT=<point>[:<n>]`` makes the process kill itself with SIGKILL the n-th time (default
first) it passes ``<point>``: no cleanup, no ``finally``, exactly like a power cut or an OOM kill.
Unset, a kill point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}

KILL_POINTS = (
    "after_query",  # the round's scans are recorded, the expert has not answered
    "after_answer",  # the pool holds the new labels, nothing else has happened
    "pseudo_label_case",  # inside a pseudo-label round, after a scan's Y_f is written
    "before_pseudo_label_commit",  # every Y_f of the round written, the round not committed
    "mid_epoch",  # between two iterations
    "checkpoint_write",  # while a checkpoint's temporary file is written
)


def kill_point(name: str) -> None:
    spec = os.environ.get("FMABS_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
