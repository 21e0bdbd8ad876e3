"""Linting one file: prefilter, one parse, one batched traversal, suppressions.

The engine knows rules only through the ``Rule`` interface; it never names one.
"""

from __future__ import annotations

import ast
import re
import traceback
from typing import Iterable, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper

from mllint import fast_positions, fast_scope, traversal
from mllint.notebook import is_notebook, map_result, read_notebook
from mllint.prefilter import admitted, python_syntax_error
from mllint.rule import FileContext, Rule
from mllint.source import DEFAULT_MAX_BYTES, decode, read_bytes
from mllint.types import ErrorKind, FileError, FileResult, Finding, Position

_NOQA_RE = re.compile(
    r"#\s*noqa(?::[\s]*(?P<codes>[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*))?", re.IGNORECASE
)


def noqa_map(lines: Sequence[str]) -> dict[int, frozenset[str] | None]:
    """Line -> codes suppressed there (``None`` means a blanket ``# noqa``)."""
    out: dict[int, frozenset[str] | None] = {}
    for i, line in enumerate(lines, start=1):
        if "noqa" not in line.lower():
            continue
        m = _NOQA_RE.search(line)
        if m:
            codes = m.group("codes")
            out[i] = None if codes is None else frozenset(
                c.upper() for c in re.split(r"[\s,]+", codes) if c
            )
    return out


def is_suppressed(finding: Finding, noqa: dict[int, frozenset[str] | None]) -> bool:
    for line in {finding.span.start.line, finding.span.end.line}:
        if line in noqa:
            codes = noqa[line]
            if codes is None or finding.code in codes:
                return True
    return False


def applicable_rules(text: str, rules: Iterable[type[Rule]]) -> list[type[Rule]]:
    return admitted(list(rules), text)


def _seed_metadata(wrapper: MetadataWrapper, visitors: list[Rule]) -> None:
    """Resolve the costliest providers more cheaply, with identical results.

    Metadata resolution dominates lint time. Seeding the wrapper's store is how libcst
    itself caches a resolved provider, so every dependant sees the seeded mapping.
    ``test_engine`` checks that seeded and plain metadata give the same findings.
    """
    wanted: set = set()
    for v in visitors:
        wanted |= set(v.get_inherited_dependencies())
    fast_scope.seed(wrapper, wanted)
    # With the text, a statement's position is found by placing its code in the source
    # instead of generating every statement before it.
    fast_positions.seed(wrapper, wanted, visitors[0].context.source if visitors else None)


def _run(wrapper: MetadataWrapper, visitors: list[Rule]) -> None:
    for v in visitors:
        v.context.shared.clear()
    _seed_metadata(wrapper, visitors)
    # libcst's own ``wrapper.visit_batched`` rebuilds every node; this walk does not.
    traversal.visit_batched(wrapper, visitors)


def _python_error(path: str, py: SyntaxError | RecursionError | MemoryError) -> FileError:
    if not isinstance(py, SyntaxError):
        msg = "cannot parse: nested too deeply for Python's own parser (Python cannot run it)"
        return FileError(path, ErrorKind.SYNTAX, msg)
    pos = Position(py.lineno or 1, py.offset or 1)
    return FileError(path, ErrorKind.SYNTAX, f"cannot parse: {py.msg}", pos)


def _syntax_error(path: str, text: str, exc: cst.ParserSyntaxError) -> FileError:
    """Where the file is broken. Python's own parser pinpoints it better than libcst's
    (which reports where it gave up), so ask it, only for this one failing file."""
    try:
        ast.parse(text, filename=path)
    except SyntaxError as py:
        return _python_error(path, py)
    except (ValueError, RecursionError, MemoryError):
        pass
    # Python accepts it but libcst does not (e.g. syntax newer than libcst knows).
    pos = Position(exc.raw_line, exc.raw_column + 1)  # raw_column is 0-based
    return FileError(path, ErrorKind.SYNTAX, f"libcst cannot parse this file: {exc.message}", pos)


def lint_text(
    path: str, text: str, rules: Sequence[type[Rule]], *, prefilter: bool = True
) -> FileResult:
    active = applicable_rules(text, rules) if prefilter else list(rules)
    if not active:
        return FileResult(path)
    invalid = python_syntax_error(text)
    if invalid is not None:
        # Not Python at all: say so in Python's words, and never hand libcst input its
        # native parser may not survive (2,000 nested brackets crash it outright).
        return FileResult(path, errors=(_python_error(path, invalid),))
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        return FileResult(path, errors=(_syntax_error(path, text, exc),))
    except RecursionError:
        msg = "cannot parse: expression nested too deeply"
        return FileResult(path, errors=(FileError(path, ErrorKind.SYNTAX, msg),))
    context = FileContext(path, text)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    visitors = [rule(context) for rule in active]
    errors: list[FileError] = []
    try:
        _run(wrapper, visitors)
    except Exception:
        # Find the rule(s) at fault by running each alone; the others keep their findings.
        visitors = []
        for rule in active:
            visitor = rule(context)
            try:
                _run(wrapper, [visitor])
                visitors.append(visitor)
            except Exception as exc:  # noqa: BLE001 - reported as an internal error below
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                errors.append(
                    FileError(
                        path,
                        ErrorKind.INTERNAL,
                        f"rule {rule.code} crashed: {type(exc).__name__}: {exc} "
                        f"(at {tb.filename}:{tb.lineno}); please report this",
                        rule=rule.code,
                    )
                )
    noqa = noqa_map(context.lines)
    findings = sorted(
        (f for v in visitors for f in v.findings if not is_suppressed(f, noqa)),
        key=Finding.sort_key,
    )
    return FileResult(path, tuple(findings), tuple(errors))


def lint_path(
    path: str,
    rules: Sequence[type[Rule]],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    prefilter: bool = True,
    display_path: str | None = None,
) -> FileResult:
    shown = display_path or path
    data = read_bytes(path, max_bytes)
    if isinstance(data, FileError):
        return FileResult(shown, errors=(_rename(data, shown),))
    text = decode(path, data)
    if isinstance(text, FileError):
        return FileResult(shown, errors=(_rename(text, shown),))
    if is_notebook(path):
        nb = read_notebook(shown, text)
        if isinstance(nb, FileError):
            return FileResult(shown, errors=(nb,))
        return map_result(lint_text(shown, nb.text, rules, prefilter=prefilter), nb)
    return lint_text(shown, text, rules, prefilter=prefilter)


def _rename(error: FileError, path: str) -> FileError:
    return FileError(path, error.kind, error.message, error.position, error.rule, error.cell)
