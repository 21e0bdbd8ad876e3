"""Finding the user's code on the stack, and reading its variables without running any.

Like ``torch/profiler/_pattern_matcher.py``, the user's line is the first frame, walking
outwards, that is not in torch, not in mllint and not in the standard library. Third-party
packages in site-packages count as user code: a Trainer from a library is where the
user's model is driven, and probes tie findings to files by path anyway.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import sysconfig
import types
from types import FrameType
from typing import Any, Iterable

from mllint.types import Finding


class FileKinds:
    """Decides, once per file name, whether a code object is the user's."""

    def __init__(self, library_dirs: Iterable[str]) -> None:
        paths = sysconfig.get_paths()
        self._libs = tuple(_as_dir(d) for d in library_dirs)
        self._stdlib = tuple(
            _as_dir(paths[k]) for k in ("stdlib", "platstdlib") if k in paths
        )
        # site-packages usually lies inside the stdlib directory but is not stdlib.
        site = {paths[k] for k in ("purelib", "platlib") if k in paths}
        site |= {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
        self._site = tuple(_as_dir(d) for d in site)
        self._files: set[str] = set()
        self._cache: dict[str, bool] = {}
        self._real: dict[str, str] = {}

    def exclude_file(self, filename: str) -> None:
        """A probe's own module is never the user's code, wherever it lives."""
        self._files.add(os.path.realpath(filename))
        self._cache.clear()

    def realpath(self, filename: str) -> str:
        real = self._real.get(filename)
        if real is None:
            real = self._real[filename] = (
                filename if filename.startswith("<") else os.path.realpath(filename)
            )
        return real

    def is_user(self, filename: str) -> bool:
        known = self._cache.get(filename)
        if known is None:
            real = self.realpath(filename)
            if real.startswith("<") or real.startswith(self._libs) or real in self._files:
                known = False
            elif real.startswith(self._site):
                known = True
            else:
                known = not real.startswith(self._stdlib)
            self._cache[filename] = known
        return known


def _as_dir(path: str) -> str:
    return os.path.realpath(path).rstrip(os.sep) + os.sep


def user_frame(kinds: FileKinds, start: FrameType | None) -> FrameType | None:
    frame = start
    while frame is not None:
        if kinds.is_user(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


def stack_in(kinds: FileKinds, finding: Finding, start: FrameType | None) -> FrameType | None:
    lines = finding.region or finding.span
    frame = start
    while frame is not None:
        if kinds.realpath(frame.f_code.co_filename) == finding.path and lines.contains_line(
            frame.f_lineno
        ):
            return frame
        frame = frame.f_back
    return None


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.\w+)*$")


def object_of(frame: FrameType, expr: str) -> Any:
    """Evaluate ``name``, ``a.b.c`` or ``a["key"]`` / ``a[0]`` in ``frame`` without calling
    anything the user defined: attributes come from instance dictionaries, ``nn.Module``
    parameter/buffer/submodule tables and plain class attributes; properties and
    ``__getattr__`` are never run; subscripts only index built-in dicts, lists and tuples
    with literal keys. ``model.0.weight`` (torch's qualified names) works too."""
    text = expr.strip()
    if _DOTTED.match(text):
        head, *rest = text.split(".")
        value = _resolve(frame, ast.Name(id=head), expr)
        for attr in rest:
            value = _attribute(value, attr, expr)
        return value
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise LookupError(f"not a dotted name: {expr!r}") from None
    return _resolve(frame, node, expr)


def _resolve(frame: FrameType, node: ast.AST, expr: str) -> Any:
    if isinstance(node, ast.Name):
        for scope in (frame.f_locals, frame.f_globals):
            if node.id in scope:
                return scope[node.id]
        builtins = frame.f_globals.get("__builtins__", {})
        table = builtins if isinstance(builtins, dict) else vars(builtins)
        if node.id in table:
            return table[node.id]
        raise LookupError(f"{node.id!r} is not defined where {expr!r} was looked up")
    if isinstance(node, ast.Attribute):
        return _attribute(_resolve(frame, node.value, expr), node.attr, expr)
    if isinstance(node, ast.Subscript):
        container = _resolve(frame, node.value, expr)
        try:
            key = ast.literal_eval(node.slice)
        except ValueError:
            raise LookupError(f"only literal subscripts are read: {expr!r}") from None
        if type(container) in (dict, list, tuple):
            try:
                return container[key]
            except (KeyError, IndexError, TypeError):
                raise LookupError(f"{expr!r}: no item {key!r}") from None
        raise LookupError(f"{expr!r}: will not index a {type(container).__name__}")
    raise LookupError(f"not a dotted name: {expr!r}")


def _attribute(obj: Any, attr: str, expr: str) -> Any:
    try:
        instance_dict = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        instance_dict = None
    if instance_dict is not None:
        if attr in instance_dict:
            return instance_dict[attr]
        # nn.Module keeps parameters, buffers and submodules in tables of its own.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = instance_dict.get(table)
            if isinstance(entries, dict) and attr in entries:
                return entries[attr]
    for klass in type(obj).__mro__:
        if attr not in vars(klass):
            continue
        found = vars(klass)[attr]
        if isinstance(found, (staticmethod, classmethod, types.FunctionType)) or type(
            found
        ).__name__ in ("member_descriptor", "getset_descriptor"):
            # Binding a method or reading a slot / C-level attribute runs no user code.
            return getattr(obj, attr)
        if hasattr(type(found), "__get__"):
            raise LookupError(f"{expr!r}: {attr!r} is a property; it is not evaluated")
        return found
    raise LookupError(f"{expr!r}: no attribute {attr!r} on {type(obj).__name__}")
