"""Linting one file: prefilter, the rules on Python's ``ast``, then (if any rule still needs
it) one libcst parse and one batched traversal, suppressions.

The engine knows rules only through the ``Rule`` interface; it never names one.
"""

from __future__ import annotations

import ast
import sys
import threading
import traceback
from dataclasses import replace
from typing import Callable, Iterable, Sequence, TypeVar

import libcst as cst
from libcst.metadata import MetadataWrapper

from mllint import noqa
from mllint.collector import collector_paused
from mllint.engine.libcst_support import fast_paths_enabled, parse_module
from mllint.engine.reachability import in_spans, unreachable_spans
from mllint.notebook import is_notebook, map_result, read_notebook
from mllint.prefilter import admitted, forget_last, python_syntax_error, python_tree
from mllint.rule import AstRule, FileContext, Rule
from mllint.source import DEFAULT_MAX_BYTES, decode, read_bytes
from mllint.types import ErrorKind, FileError, FileResult, Position

T = TypeVar("T")


def noqa_map(lines: Sequence[str]) -> dict[int, frozenset[str] | None]:
    """Line -> codes suppressed there (``None`` means a blanket ``# noqa``)."""
    found = noqa.scan("\n".join(lines) + "\n", noqa.known_rules())
    return {line: d.codes for line, d in found.directives.items()}


def applicable_rules(text: str, rules: Iterable[type[Rule]],
                     file: str | None = None) -> list[type[Rule]]:
    return admitted(list(rules), text, file)


def _seed_metadata(wrapper: MetadataWrapper, visitors: list[Rule]) -> None:
    """Resolve the costliest providers more cheaply, with identical results.

    Metadata resolution dominates lint time. Seeding the wrapper's store is how libcst
    itself caches a resolved provider, so every dependant sees the seeded mapping.
    ``test_engine`` checks that seeded and plain metadata give the same findings.
    """
    if not fast_paths_enabled():
        return  # an untested libcst: its own providers (see mllint.engine.libcst_support)
    from mllint.engine import positions as fast_positions
    from mllint.engine import scope as fast_scope

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
    if not fast_paths_enabled():
        wrapper.visit_batched(visitors)
        return
    from mllint.engine import traversal

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


#: Deeply nested but valid code (a 1,000-term sum, 1,000 ``elif`` branches, an 8,000-term
#: ``and`` chain) needs far more stack than the main thread's 8 MB, both in libcst's native
#: parser (which segfaults when it runs out) and in the recursive walks of the metadata
#: providers and rules (RecursionError). Each file is therefore linted on a thread of its
#: own with this much stack (address space reserved, touched only as deep as it goes) and
#: a recursion limit to match.
STACK_BYTES = 1024 * 1024 * 1024
RECURSION_LIMIT = 100_000
_deep_lock = threading.Lock()


def on_deep_stack(fn: Callable[[], T]) -> T:
    """``fn()`` on a thread with ``STACK_BYTES`` of stack and ``RECURSION_LIMIT``."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome.append((False, exc))

    with _deep_lock:
        limit = sys.getrecursionlimit()
        try:
            old_size = threading.stack_size(STACK_BYTES)
        except (ValueError, RuntimeError):  # a platform without settable stacks
            return fn()
        thread = threading.Thread(target=target, name="mllint-lint", daemon=True)
        sys.setrecursionlimit(max(limit, RECURSION_LIMIT))
        try:
            try:
                thread.start()
            finally:
                threading.stack_size(old_size)
            thread.join()
        except RuntimeError:  # no room for such a stack (e.g. a low address-space limit)
            sys.setrecursionlimit(limit)
            return fn()
        finally:
            sys.setrecursionlimit(limit)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def lint_text(
    path: str, text: str, rules: Sequence[type[Rule]], *, prefilter: bool = True,
    file: str | None = None, unused_noqa: Sequence[str] = (),
) -> FileResult:
    """Lint ``text`` shown as ``path``; ``file`` is where it lies on disk, if anywhere
    (the project model then reads the modules around it). ``unused_noqa``: the codes of
    every rule of the run, to report ``# noqa`` directives that suppress none of them
    (empty: no such report)."""
    with collector_paused():
        try:
            return on_deep_stack(lambda: _lint_text(path, text, rules, prefilter, file, unused_noqa))
        finally:
            forget_last()  # the file's tree goes now, not at the next full collection


def _lint_text(path: str, text: str, rules: Sequence[type[Rule]], prefilter: bool,
               file: str | None, unused_noqa: Sequence[str]) -> FileResult:
    active = applicable_rules(text, rules, file) if prefilter else list(rules)
    known = noqa.known_rules(rules)
    if not active:
        return noqa.apply(FileResult(path), text, known, unused_noqa)
    invalid = python_syntax_error(text)
    if invalid is not None:
        # Not Python at all: say so in Python's words, and never hand libcst input its
        # native parser may not survive (2,000 nested brackets crash it outright).
        return FileResult(path, errors=(_python_error(path, invalid),))
    context = FileContext(path, text, file=file)
    errors: list[FileError] = []
    on_ast = [rule for rule in active if issubclass(rule, AstRule)]
    visitors: list[Rule] = _run_on_ast(path, text, on_ast, context, errors)
    on_cst = [rule for rule in active if not issubclass(rule, AstRule)]
    if on_cst:
        try:
            module = parse_module(text)
        except cst.ParserSyntaxError as exc:
            return FileResult(path, errors=(_syntax_error(path, text, exc),))
        except RecursionError:
            msg = "cannot parse: expression nested too deeply"
            return FileResult(path, errors=(FileError(path, ErrorKind.SYNTAX, msg),))
        visitors += _run_on_cst(path, module, on_cst, context, errors)
    found = [f for v in visitors for f in v.findings]
    if found:
        tree = python_tree(text)
        spans = unreachable_spans(tree) if tree is not None else []
        found = [f for f in found if not in_spans(f.line, spans)]
    result = noqa.apply(FileResult(path, (), tuple(errors)), text, known, unused_noqa, found)
    return replace(result, depends_on=context.depends_on)


def _run_on_ast(path: str, text: str, rules: list[type[Rule]], context: FileContext,
                errors: list[FileError]) -> list[Rule]:
    """The rules that decide on Python's ``ast``, each on the tree the prefilter parsed."""
    tree = python_tree(text) if rules else None
    done: list[Rule] = []
    for rule in rules:
        checker = rule(context)
        try:
            checker.check(tree)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - reported as an internal error
            errors.append(_crash(path, rule, exc))
            continue
        done.append(checker)
    return done


def _run_on_cst(path: str, module: cst.Module, rules: list[type[Rule]],
                context: FileContext, errors: list[FileError]) -> list[Rule]:
    """The libcst rules, batched in one traversal of ``module``."""
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    visitors = [rule(context) for rule in rules]
    try:
        _run(wrapper, visitors)
    except Exception:
        # Find the rule(s) at fault by running each alone; the others keep their findings.
        visitors = []
        for rule in rules:
            visitor = rule(context)
            try:
                _run(wrapper, [visitor])
                visitors.append(visitor)
            except Exception as exc:  # noqa: BLE001 - reported as an internal error below
                errors.append(_crash(path, rule, exc))
    return visitors


def _crash(path: str, rule: type[Rule], exc: Exception) -> FileError:
    tb = traceback.extract_tb(exc.__traceback__)[-1]
    return FileError(
        path,
        ErrorKind.INTERNAL,
        f"rule {rule.code} crashed: {type(exc).__name__}: {exc} "
        f"(at {tb.filename}:{tb.lineno}); please report this",
        rule=rule.code,
    )


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
    return lint_text(shown, text, rules, prefilter=prefilter, file=path)


def _rename(error: FileError, path: str) -> FileError:
    return replace(error, path=path)
