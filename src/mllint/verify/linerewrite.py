"""Line callbacks without a trace function: watched statements get a call compiled in.

Why: on CPython up to 3.11 any ``sys.settrace`` function is called for *every* Python
frame in the process (torch's included), which costs a fifth of a small model's training
step. Instead, each file that holds a watched line is compiled from a rewritten AST in
which ``__mllint_line__(site)`` is called right before the watched statement and/or right
after it; nothing else in the process pays anything. Line numbers are unchanged (the
injected calls carry the statement's own position), so tracebacks, ``inspect`` and
``co_firstlineno`` look the same.

Semantics (the same as the trace-function fallback in ``linetrace``):
- *before* a statement fires each time it is about to run; for a loop header (``for`` /
  ``while``) that is before the loop and at the start of every iteration;
- *after* a statement fires when it has finished normally (for a compound statement,
  after the whole block); a statement that raises, returns or breaks has not finished.

Which files get rewritten: the user's script (compiled here instead of by ``runpy``) and
every watched module imported after the probes are installed (a meta-path finder hands
those to ``_RewritingLoader``). A watched file that was already imported, or a line
registered after its file was compiled, falls back to ``linetrace.LineTracer``.
"""

from __future__ import annotations

import ast
import builtins
import importlib.abc
import importlib.machinery
import os
import sys
import tokenize
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from mllint.verify.linetrace import statement_map

LineCallback = Callable[[FrameType], None]
HOOK_NAME = "__mllint_line__"

_LOOPS = (ast.For, ast.AsyncFor, ast.While)


class LineSites:
    """The callbacks behind every injected call, and which files were compiled with them."""

    def __init__(self) -> None:
        self._sites: list[list[LineCallback]] = []
        #: (realpath, statement line, "before"|"after") -> site number
        self._index: dict[tuple[str, int, str], int] = {}
        #: realpath -> the (line, kind) pairs its compiled code calls for
        self.compiled: dict[str, set[tuple[int, str]]] = {}
        self._wanted: dict[str, set[tuple[int, str]]] = {}

    def want(self, path: str, line: int, kind: str, fn: LineCallback) -> bool:
        """Register ``fn``; False when ``path`` is already compiled without that site
        (the caller then uses the trace-function fallback for it)."""
        line = statement_map(path).start(line)
        key = (path, line, kind)
        site = self._index.get(key)
        if site is None:
            site = self._index[key] = len(self._sites)
            self._sites.append([])
        self._sites[site].append(fn)
        self._wanted.setdefault(path, set()).add((line, kind))
        compiled = self.compiled.get(path)
        return compiled is None or (line, kind) in compiled

    def watched(self, path: str) -> bool:
        return path in self._wanted

    def paths(self) -> set[str]:
        return set(self._wanted)

    def uncompiled_sites(self, path: str) -> list[tuple[int, str, list[LineCallback]]]:
        """(line, kind, callbacks) of every site of ``path`` its compiled code (if any)
        does not call: what a fallback must fire for that file."""
        compiled = self.compiled.get(path, set())
        return [
            (line, kind, self._sites[site])
            for (p, line, kind), site in self._index.items()
            if p == path and (line, kind) not in compiled
        ]

    def hit(self, site: int) -> None:
        """The injected call. Exceptions from callbacks propagate into the user's code on
        purpose: only ``InjectedFault`` gets this far (see ``ProbeRuntime._guard``)."""
        frame = sys._getframe(1)
        for fn in self._sites[site]:
            fn(frame)

    # -- compiling -------------------------------------------------------------------

    def compile_file(self, path: str, source: bytes | str | None = None) -> CodeType:
        if source is None:
            with tokenize.open(path) as fh:
                source = fh.read()
        tree = ast.parse(source, filename=path)
        wanted = self._wanted.get(path, set())
        before = {line for line, kind in wanted if kind == "before"}
        after = {line for line, kind in wanted if kind == "after"}
        sites = {
            (line, kind): self._index[(path, line, kind)] for line, kind in wanted
        }
        tree.body = _Injector(before, after, sites).block(tree.body, module=True)
        ast.fix_missing_locations(tree)
        self.compiled[path] = set(wanted)
        return compile(tree, path, "exec", dont_inherit=True)


class _Injector:
    def __init__(self, before: set[int], after: set[int],
                 sites: dict[tuple[int, str], int]) -> None:
        self.before = before
        self.after = after
        self.sites = sites

    def call(self, stmt: ast.AST, line: int, kind: str) -> ast.stmt:
        node = ast.Expr(ast.Call(ast.Name(HOOK_NAME, ast.Load()),
                                 [ast.Constant(self.sites[(line, kind)])], []))
        return ast.copy_location(node, stmt)

    def block(self, body: list[ast.stmt], *, module: bool = False,
              function: bool = False, header: int | None = None) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for i, stmt in enumerate(body):
            self._descend(stmt)
            line = stmt.lineno
            # A body on its compound statement's own line (`if x: y()`) belongs to it.
            fixed = line == header or _must_stay_first(stmt, i, body,
                                                       module=module or function)
            if line in self.before and not fixed:
                out.append(self.call(stmt, line, "before"))
                if isinstance(stmt, _LOOPS):
                    stmt.body.insert(0, self.call(stmt, line, "before"))
            out.append(stmt)
            if line in self.after and not fixed:
                # Several statements on one line: "after" follows the last of them.
                if i + 1 == len(body) or body[i + 1].lineno != line:
                    out.append(self.call(stmt, line, "after"))
        return out

    def _descend(self, stmt: ast.stmt) -> None:
        function = isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for name in ("body", "orelse", "finalbody"):
            sub = getattr(stmt, name, None)
            if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                setattr(stmt, name, self.block(sub, function=function and name == "body",
                                               header=stmt.lineno))
        for handler in getattr(stmt, "handlers", ()) or ():
            handler.body = self.block(handler.body, header=handler.lineno)
            if handler.lineno in self.before:  # `except X:` runs as the handler starts
                handler.body.insert(0, self.call(handler, handler.lineno, "before"))
        for case in getattr(stmt, "cases", ()) or ():
            case.body = self.block(case.body, header=case.pattern.lineno)


def _must_stay_first(stmt: ast.stmt, i: int, body: list[ast.stmt], *, module: bool) -> bool:
    """Docstrings and ``from __future__`` imports lose their meaning if anything precedes
    them."""
    if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
        return True
    return (
        module and i == 0 and isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
    )


# -- getting rewritten code run -------------------------------------------------------


class RewritingFinder(importlib.abc.MetaPathFinder):
    """Hands watched modules to ``_RewritingLoader`` (only files of ``sites.paths()``)."""

    def __init__(self, sites: LineSites) -> None:
        self._sites = sites

    def find_spec(self, name: str, path: Any, target: Any = None):
        stems = {_module_stem(p) for p in self._sites.paths()}
        if name.rpartition(".")[2] not in stems:
            return None  # cheap: most imports are not of watched files
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if (
            spec is None or not spec.origin
            or not isinstance(spec.loader, importlib.machinery.SourceFileLoader)
            or not self._sites.watched(os.path.realpath(spec.origin))
        ):
            return None
        spec.loader = _RewritingLoader(spec.loader.name, spec.loader.path, self._sites)
        return spec


def _module_stem(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.basename(os.path.dirname(path)) if stem == "__init__" else stem


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, sites: LineSites) -> None:
        super().__init__(fullname, path)
        self._sites = sites

    def get_code(self, fullname: str) -> CodeType:
        # Never from __pycache__: cached bytecode would be the unrewritten code.
        return self._sites.compile_file(os.path.realpath(self.path), self.get_data(self.path))


def install_hook(sites: LineSites) -> Callable[[], None]:
    """Make ``__mllint_line__`` resolvable from any module; returns the undo."""
    setattr(builtins, HOOK_NAME, sites.hit)
    finder = RewritingFinder(sites)
    sys.meta_path.insert(0, finder)

    def undo() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        if getattr(builtins, HOOK_NAME, None) is not None:
            delattr(builtins, HOOK_NAME)

    return undo


def run_script(path: str, code: CodeType) -> None:
    """What ``runpy.run_path(path, run_name="__main__")`` does for a plain file, with
    code compiled here."""
    import types

    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=path, __cached__=None, __loader__=None,
                           __package__=None, __spec__=None, __builtins__=builtins)
    saved_main = sys.modules.get("__main__")
    saved_argv0 = sys.argv[0] if sys.argv else None
    sys.modules["__main__"] = module
    if sys.argv:
        sys.argv[0] = path
    try:
        exec(code, module.__dict__)
    finally:
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        if saved_argv0 is not None and sys.argv:
            sys.argv[0] = saved_argv0
