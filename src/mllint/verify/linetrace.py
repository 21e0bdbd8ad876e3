"""Line callbacks through ``sys.settrace``: the fallback of ``linerewrite``.

Used only for watched files that were already imported before their lines were watched
(``linerewrite`` compiles the call into every other watched file, at no cost elsewhere).

Why this shape: a global trace function is called for every new frame in the process,
so it must decide in one dictionary lookup per code object whether the frame is worth a
local tracer. Only code objects of watched files that contain a watched statement get
one; every other frame (torch, the stdlib, the rest of the user's code) runs untraced.

Lines are handled as *statements*: ``on_line(path, 7)`` fires once each time the
statement that covers line 7 starts, even when it spans several lines (CPython emits a
line event every time the line number changes inside a multi-line call), and
``after_line`` fires once that statement has finished (at the next statement of the same
frame, or when the frame returns), so a callback can read what the statement assigned.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
import threading
import tokenize
from types import CodeType, FrameType
from typing import Callable

LineCallback = Callable[[FrameType], None]

# Code objects that belong to the statement that contains them: tracing them too would
# fire the statement's callbacks again for every element of a comprehension.
_INLINE_CODE = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<lambda>"})


class StatementMap:
    """Line -> first line of the statement that line belongs to.

    Compound statements own only their header lines (``for x in loader:``); their bodies
    are statements of their own. Lines outside any statement map to themselves.
    """

    def __init__(self, source: str | None) -> None:
        self._start: dict[int, int] = {}
        if source is None:
            return
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return
        for node in ast.walk(tree):
            if isinstance(node, (ast.stmt, ast.ExceptHandler)):
                first = node.lineno
                last = _header_end(node)
                for line in range(first, last + 1):
                    self._start.setdefault(line, first)

    def start(self, line: int) -> int:
        return self._start.get(line, line)


def _header_end(node: ast.AST) -> int:
    body = getattr(node, "body", None)
    end = getattr(node, "end_lineno", None) or node.lineno
    if isinstance(body, list) and body and isinstance(body[0], ast.AST):
        # A compound statement: its header ends before its first body statement.
        return max(node.lineno, body[0].lineno - 1)
    return end


@functools.lru_cache(maxsize=256)
def statement_map(path: str) -> StatementMap:
    try:
        with tokenize.open(path) as fh:
            return StatementMap(fh.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return StatementMap(None)


class _FileWatch:
    """The callbacks of one watched file, keyed by statement start line."""

    def __init__(self, path: str) -> None:
        self.statements = statement_map(path)
        self.before: dict[int, list[LineCallback]] = {}
        self.after: dict[int, list[LineCallback]] = {}

    def lines(self) -> set[int]:
        return set(self.before) | set(self.after)


class LineTracer:
    """Owns the process-wide trace function while any line is watched."""

    def __init__(self) -> None:
        self._files: dict[str, _FileWatch] = {}
        self._realpaths: dict[str, str] = {}
        self._code_watch: dict[CodeType, _FileWatch | None] = {}
        self._active = False
        self._previous: tuple = (None, None)
        #: Set when a callback let an exception escape through the trace function, which
        #: makes CPython switch tracing off for that thread (see ``resume``).
        self.suspended = False

    # -- registration ------------------------------------------------------------------

    def add(self, path: str, line: int, fn: LineCallback, *, after: bool) -> None:
        path = os.path.realpath(path)
        watch = self._files.get(path)
        if watch is None:
            watch = self._files[path] = _FileWatch(path)
        table = watch.after if after else watch.before
        table.setdefault(watch.statements.start(line), []).append(fn)
        self._code_watch.clear()
        if self._active:
            self._attach_to_stack(sys._getframe(1))

    @property
    def watching(self) -> bool:
        return bool(self._files)

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._active or not self._files:
            return
        self._previous = (sys.gettrace(), threading.gettrace())
        self._active = True
        sys.settrace(self._global)
        threading.settrace(self._global)
        self._attach_to_stack(sys._getframe(1))

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False
        sys.settrace(self._previous[0])
        threading.settrace(self._previous[1])  # type: ignore[arg-type]

    def resume(self, frame: FrameType | None) -> None:
        """Switch tracing back on after a callback raised through the trace function."""
        if not (self._active and self.suspended):
            return
        self.suspended = False
        sys.settrace(self._global)
        self._attach_to_stack(frame)

    # -- tracing -----------------------------------------------------------------------

    def _watch_of(self, code: CodeType) -> _FileWatch | None:
        try:
            return self._code_watch[code]
        except KeyError:
            pass
        watch = None
        filename = code.co_filename
        real = self._realpaths.get(filename)
        if real is None:
            real = self._realpaths[filename] = (
                filename if filename.startswith("<") else os.path.realpath(filename)
            )
        candidate = self._files.get(real)
        if candidate is not None and code.co_name not in _INLINE_CODE:
            wanted = candidate.lines()
            starts = candidate.statements.start
            if any(starts(ln) in wanted for _, _, ln in code.co_lines() if ln):
                watch = candidate
        self._code_watch[code] = watch
        return watch

    def _global(self, frame: FrameType, event: str, arg: object):
        watch = self._watch_of(frame.f_code)
        if watch is None:
            return None
        return self._local_for(watch)

    def _attach_to_stack(self, frame: FrameType | None) -> None:
        """Give frames already running (the script's module frame, the training loop
        that called a hook) the local tracer they would have had from their call event."""
        while frame is not None:
            if frame.f_trace is None:
                watch = self._watch_of(frame.f_code)
                if watch is not None:
                    frame.f_trace = self._local_for(watch)
            frame = frame.f_back

    def _local_for(self, watch: _FileWatch):
        starts = watch.statements.start
        before = watch.before
        after = watch.after
        last_stmt = -1
        last_lasti = -1
        pending: list[LineCallback] | None = None
        tracer = self

        def local(frame: FrameType, event: str, arg: object):
            nonlocal last_stmt, last_lasti, pending
            if event == "line":
                stmt = starts(frame.f_lineno)
                lasti = frame.f_lasti
                # Same statement at a lower offset means a jump back: a new execution.
                fresh = stmt != last_stmt or lasti <= last_lasti
                last_lasti = lasti
                if fresh:
                    last_stmt = stmt
                    if pending is not None:
                        fns, pending = pending, None
                        tracer._fire(fns, frame)
                    fns = before.get(stmt)
                    if fns:
                        tracer._fire(fns, frame)
                    pending = after.get(stmt)
            elif event == "return":
                if pending is not None:
                    fns, pending = pending, None
                    tracer._fire(fns, frame)
            elif event == "exception":
                pending = None  # the statement did not finish
            return local

        return local

    def _fire(self, fns: list[LineCallback], frame: FrameType) -> None:
        try:
            for fn in list(fns):
                fn(frame)
        except BaseException:
            # CPython unsets tracing for this thread when the trace function raises
            # (an injected fault or the run's stop signal); ``resume`` re-arms it.
            self.suspended = True
            raise
