"""Linting many files on all cores.

Each worker takes whole files: it reads and decodes one, looks it up in the cache, tests
every rule's prefilters (``mllint.prefilter``), and parses it with libcst only when some
rule could flag it and no result is cached. The parent holds paths and results, never file text.
Workers are separate processes even for one file (``mllint.workers``): a file that crashes
libcst's native parser or runs past its time budget is reported, and the run goes on. Only
cache hits are answered in the parent (a read, a hash and a lookup: nothing that can crash).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

from mllint.cache import Cache
from mllint.config import Settings
from mllint.files import Target
from mllint.manifest import RuleInfo
from mllint.notebook import is_notebook, map_result, read_notebook
from mllint.prefilter import admitted
from mllint.source import decode, read_bytes
from mllint.types import FileError, FileResult
from mllint.workers import WorkerPool, clock_starts


@dataclass(frozen=True)
class RunOptions:
    #: The rules to run, as the manifest describes them: libcst and the rule classes are
    #: imported only once some file passes a prefilter and is not in the cache.
    rules: tuple[RuleInfo, ...]
    settings: Settings
    jobs: int = 0  # 0: all cores
    cache: Cache | None = None
    prefilter: bool = True
    #: The run's rule codes when unused ``# noqa`` directives are to be reported.
    unused_noqa: tuple[str, ...] = ()


def _check_file(path: str, opts: RunOptions) -> FileResult:
    """Everything for one file, in whichever process runs it: read and decode it, test the
    prefilters, look it up in the cache, and only then parse and lint it."""
    data = read_bytes(path, opts.settings.max_file_size)
    if isinstance(data, FileError):
        return FileResult(path, errors=(data,))
    return check_bytes(path, data, opts)


def check_bytes(path: str, data: bytes, opts: RunOptions) -> FileResult:
    """One file's content, linted as the file at ``path`` (``--stdin-filename``)."""
    text = decode(path, data)
    if isinstance(text, FileError):
        return FileResult(path, errors=(text,))
    if is_notebook(path):
        return _check_notebook(path, data, text, opts)
    return _check_text(path, data, text, opts)


def _check_notebook(path: str, data: bytes, raw: str, opts: RunOptions) -> FileResult:
    """A notebook's code cells, linted as one module, every position mapped to its cell.
    The cache keys on the notebook's bytes and stores the mapped result."""
    if opts.cache is not None:  # before the JSON parse, as for a Python file's prefilters
        cached = _from_cache(opts.cache.key(path, data), path, opts)
        if cached is not None:
            return cached
    nb = read_notebook(path, raw)
    if isinstance(nb, FileError):
        return FileResult(path, errors=(nb,))
    return _check_text(path, data, nb.text, opts, lambda result: map_result(result, nb))


def _check_text(path, data, text, opts, mapped=lambda result: result) -> FileResult:
    key = None
    if opts.cache is not None:
        # Looked up before the prefilters: on an unchanged tree even the regexes are spared.
        key = opts.cache.key(path, data)
        cached = _from_cache(key, path, opts)
        if cached is not None:
            return cached
    infos = admitted(opts.rules, text, path) if opts.prefilter else list(opts.rules)
    if not infos:
        result = FileResult(path)
        if "noqa" in text.lower():  # directives are checked in every file
            from mllint import noqa
            result = noqa.apply(result, text, noqa.known_rules(), opts.unused_noqa)
        result = mapped(result)
        if opts.cache is not None and key is not None:
            opts.cache.put(key, result)
        return result
    # Only now are libcst and the rule classes needed.
    from mllint.engine import lint_text
    from mllint.registry import rule_classes

    rules = rule_classes(infos)
    clock_starts()
    result = mapped(lint_text(path, text, rules, prefilter=False,
                              file=path, unused_noqa=opts.unused_noqa))
    if opts.cache is not None and key is not None:
        opts.cache.put(key, result)
    return _apply_per_file_ignores(result, opts.settings)


def _apply_per_file_ignores(result: FileResult, settings: Settings) -> FileResult:
    if not result.findings or not settings.per_file_ignores:
        return result
    ignored = settings.ignored_codes(result.path)
    if not ignored:
        return result
    kept = tuple(f for f in result.findings if not any(f.code.startswith(i) for i in ignored))
    return replace(result, findings=kept)


def lint_targets(targets: Iterable[Target | FileError], opts: RunOptions,
                 while_waiting: Callable[[], object] | None = None,
                 warm_up: bool = True) -> Iterator[FileResult]:
    """Results of every target. ``while_waiting`` is called once, the first time this
    process has nothing to do but wait for workers (the CLI imports its reporter then).
    ``warm_up=False`` when the targets are files named on the command line (pre-commit):
    they reach the first worker at once, and most need no libcst at all."""
    pool = WorkerPool(_check_file, opts, 1, opts.settings.file_timeout)
    # One worker starts now, importing libcst and the engine (``warm_up``) while this
    # process walks the tree and answers cache hits (on one changed file, that import is
    # most of a warm run).
    pool.prestart(_warm_up if warm_up else None)
    try:
        # A warm run is mostly hits: answered here as the walk finds them, without a round
        # trip to a worker each. The first misses go to the prestarted worker at once, so
        # that a changed file is linted while the rest of the tree is walked and answered.
        paths: list[str] = []
        for target in targets:
            if isinstance(target, FileError):
                yield FileResult(target.path, errors=(target,))
                continue
            hit = _cached(target.path, opts) if opts.cache is not None else None
            if hit is not None:
                yield hit
            elif opts.cache is None or not pool.submit_early(target.path):
                paths.append(target.path)
        if not paths and not pool.early:
            return
        pool.jobs = max(1, min(opts.jobs or os.cpu_count() or 1, len(paths)))
        # Largest files first so that one big file does not finish the run alone.
        paths.sort(key=_size, reverse=True)
        yield from pool.run(paths, while_waiting)
    finally:
        pool.close()


def _warm_up() -> None:
    """What a worker needs for any file that passes a prefilter: libcst and the engine,
    imported in a prestarted worker before any file is known. (The rule modules are not:
    each file imports only those it needs, see ``registry.rule_classes``.)"""
    from mllint.engine import lint  # noqa: F401


def _cached(path: str, opts: RunOptions) -> FileResult | None:
    """The cached result of the file at ``path``, looked up as ``_check_text`` and
    ``_check_notebook`` look it up (by path and bytes); ``None`` when there is none."""
    assert opts.cache is not None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # a FIFO or device could block a read: the worker's business
    known = opts.cache.known_key(path, st)
    if known is not None and known[1]:
        return FileResult(path)  # unchanged, and its stored result is empty
    if known is not None:
        key = known[0]
    else:
        data = read_bytes(path, opts.settings.max_file_size)
        if isinstance(data, FileError):
            return None  # the worker reports it
        key = opts.cache.key(path, data)
    stored = opts.cache.get(key, path)
    if stored is None:
        return None
    opts.cache.remember_key(path, st, key, stored)
    return _apply_per_file_ignores(stored, opts.settings)


def _from_cache(key: str, path: str, opts: RunOptions) -> FileResult | None:
    """The stored result under ``key``, with this run's per-file ignores applied."""
    assert opts.cache is not None
    cached = opts.cache.get(key, path)
    return None if cached is None else _apply_per_file_ignores(cached, opts.settings)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
