"""Linting many files: prefilter and cache in the parent, parsing on all cores.

A file is read and decoded once in the parent and tested against every rule's textual
prefilter; only files that some rule could flag are parsed, in worker processes that
re-read them (so no file text is held by the parent beyond one file at a time).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Sequence

from mllint.cache import Cache
from mllint.config import Settings
from mllint.files import Target
from mllint.manifest import RuleInfo
from mllint.source import decode, read_bytes
from mllint.types import FileError, FileResult


@dataclass(frozen=True)
class RunOptions:
    #: The rules to run, as the manifest describes them: libcst and the rule classes are
    #: imported only once some file passes a prefilter and is not in the cache.
    rules: tuple[RuleInfo, ...]
    settings: Settings
    jobs: int = 0  # 0: all cores
    cache: Cache | None = None
    prefilter: bool = True


def _lint_one(path: str, rule_codes: tuple[str, ...], max_bytes: int,
              cache: Cache | None) -> FileResult:
    """Worker: read, decode, parse and lint one file with the given rules."""
    from mllint.engine import lint_text
    from mllint.registry import all_rules

    by_code = {r.code: r for r in all_rules()}
    rules = [by_code[c] for c in rule_codes]
    data = read_bytes(path, max_bytes)
    if isinstance(data, FileError):
        return FileResult(path, errors=(data,))
    text = decode(path, data)
    if isinstance(text, FileError):
        return FileResult(path, errors=(text,))
    result = lint_text(path, text, rules, prefilter=False)
    if cache is not None:
        cache.put(cache.key(path, data), result)
    return result


def _prepare(target: Target, opts: RunOptions) -> FileResult | tuple[str, ...]:
    """In the parent: a final result for the file, or the codes of rules to run on it."""
    data = read_bytes(target.path, opts.settings.max_file_size)
    if isinstance(data, FileError):
        return FileResult(target.path, errors=(data,))
    text = decode(target.path, data)
    if isinstance(text, FileError):
        return FileResult(target.path, errors=(text,))
    rules = [r for r in opts.rules if r.may_match(text)] if opts.prefilter else list(opts.rules)
    if not rules:
        return FileResult(target.path)
    if opts.cache is not None:
        cached = opts.cache.get(opts.cache.key(target.path, data))
        if cached is not None:
            return cached
    return tuple(r.code for r in rules)


def _apply_per_file_ignores(result: FileResult, settings: Settings) -> FileResult:
    if not result.findings or not settings.per_file_ignores:
        return result
    ignored = settings.ignored_codes(result.path)
    if not ignored:
        return result
    kept = tuple(f for f in result.findings if not any(f.code.startswith(i) for i in ignored))
    return replace(result, findings=kept)


def lint_targets(targets: Iterable[Target | FileError], opts: RunOptions) -> Iterator[FileResult]:
    pending: list[tuple[str, tuple[str, ...]]] = []
    for target in targets:
        if isinstance(target, FileError):
            yield FileResult(target.path, errors=(target,))
            continue
        prepared = _prepare(target, opts)
        if isinstance(prepared, FileResult):
            yield _apply_per_file_ignores(prepared, opts.settings)
        else:
            pending.append((target.path, prepared))
    for result in _parse_all(pending, opts):
        yield _apply_per_file_ignores(result, opts.settings)


def _parse_all(pending: Sequence[tuple[str, tuple[str, ...]]], opts: RunOptions) -> Iterator[FileResult]:
    jobs = opts.jobs or os.cpu_count() or 1
    jobs = min(jobs, len(pending))
    max_bytes = opts.settings.max_file_size
    if jobs <= 1:
        for path, codes in pending:
            yield _lint_one(path, codes, max_bytes, opts.cache)
        return
    import mllint.engine  # noqa: F401 - imported once here, inherited by forked workers
    from mllint.registry import all_rules

    all_rules()
    methods = multiprocessing.get_all_start_methods()
    # fork reuses the parent's imported rules and libcst: workers start in milliseconds.
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        # Largest files first so one big file does not finish the run alone.
        order = sorted(pending, key=lambda p: _size(p[0]), reverse=True)
        yield from pool.map(
            _lint_one,
            [p for p, _ in order],
            [c for _, c in order],
            [max_bytes] * len(order),
            [opts.cache] * len(order),
            chunksize=max(1, min(16, len(order) // (jobs * 8) or 1)),
        )


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
