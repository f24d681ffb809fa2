"""Progress of long loops: a tqdm bar on a terminal, plain lines where output goes to a log file.

A training's stderr is usually a file (a cluster job, ``nohup``): there tqdm's carriage-return bars
become one long unreadable line. :func:`progress` then writes through ``log`` (nnU-Net's
``print_to_log_file`` inside a trainer) at most every ``every_seconds`` and at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

_T = TypeVar("_T")


def progress(items: Iterable[_T], desc: str, log: Callable[[str], None] = print, *, every_seconds: float = 60.0,
             terminal: bool | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator[_T]:
    """Iterate over ``items`` showing progress: tqdm when stderr is a terminal (``terminal`` overrides),
    else "desc: i/n (elapsed, left)" lines through ``log``."""
    terminal = sys.stderr.isatty() if terminal is None else terminal
    if terminal:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc)
        return
    items = list(items)
    n, start = len(items), clock()
    last = start
    for i, item in enumerate(items, start=1):
        yield item
        now = clock()
        if i == n or now - last >= every_seconds:
            elapsed = now - start
            left = elapsed / i * (n - i)
            log(f"{desc}: {i}/{n} ({elapsed:.0f} s, about {left:.0f} s left)")
            last = now
