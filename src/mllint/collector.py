"""Pausing Python's cyclic garbage collector around the work on one file (stdlib only:
the prefilter uses it in processes that never import libcst)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


#: The collector's thresholds in a process that lints many files (``batch_thresholds``).
BATCH_THRESHOLDS = (5000, 10, 100)


def batch_thresholds() -> None:
    """Python's thresholds, (700, 10, 10), suit a program whose objects mostly die young.
    A lint worker keeps hundreds of thousands of objects alive (the project model's
    summaries and their trees), and each full collection walks all of them, to free
    little: on the benchmark tree, 21 full passes took 6 s of a 16 s run. Young
    collections every 5,000 allocations instead of 700, and a full one after 100 middle
    ones instead of 10, bring that to none on the same tree; what a file leaves in
    cycles is still collected, later. Set once per worker process, never on import (a
    notebook or editor that imports mllint keeps its own)."""
    gc.set_threshold(*BATCH_THRESHOLDS)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector, paused while one file is parsed and judged.

    Parsing (``ast`` for the gates, libcst for the rules) and the analyses allocate
    hundreds of thousands of objects per file, which set off full collections that walk
    the whole heap, the live tree included, and find almost nothing: a tree holds no
    cycles, and what does (scopes, visitors, a tree's cached index) lives until the file
    is done. Paused, the file's garbage is collected in one pass after it (the
    collector's counts keep running), instead of in thousands of passes during.
    """
    if not gc.isenabled():  # paused already, e.g. by a caller: leave it so
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
