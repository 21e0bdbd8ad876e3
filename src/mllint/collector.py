"""Pausing Python's cyclic garbage collector around the work on one file (stdlib only:
the prefilter uses it in processes that never import libcst)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


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
