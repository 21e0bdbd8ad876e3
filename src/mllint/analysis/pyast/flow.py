"""Following a name back to what was assigned to it, within one module, on Python's ``ast``.

``Flow(tree, text)`` answers "what may this expression hold?" for a rule that decides on
Python's own syntax tree: from the module's scopes (``scopes``), from the call sites of
same-module functions (a parameter holds what its callers pass), and from
``self.attr = ...`` assignments in the methods of the enclosing class. It never guesses
from variable names. Everything is computed on demand and cached on the tree, which the
prefilter parsed already, so a rule on ``ast`` costs no parse of its own.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, TypeVar

from mllint.analysis.pyast.scopes import (
    Binding,
    PlainImports,
    Scopes,
    default_of,
    positional_params,
)
from mllint.analysis.pyast.index import Tree, head_and_rest
from mllint.gates.resolve import dotted, returns_of

FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Definition:
    """One place that gives a name its value: ``target`` is the binding's node (see
    ``scopes.Binding``); ``value`` the assigned expression for a plain ``name = value``
    (or ``name: T = value``, ``(name := value)``), else ``None``."""

    target: ast.AST
    value: ast.expr | None


class Flow(Tree):
    """Answers "what may this expression hold?" questions about one module."""

    def __init__(self, tree: ast.Module, text: str) -> None:
        super().__init__(tree)
        self.text = text
        self._class_attrs: dict[ast.ClassDef, dict[str, list[ast.expr]]] = {}
        self._function_of: dict[ast.AST, ast.AST | None] = {}

    @property
    def scopes(self) -> Scopes:
        """The module's scopes, placed on the first question that needs them."""
        return Scopes.of(self.tree)

    # -- tree ----------------------------------------------------------------------------

    def enclosing(self, node: ast.AST, kind: type | tuple[type, ...]) -> ast.AST | None:
        for anc in self.ancestors(node):
            if isinstance(anc, kind):
                return anc
        return None

    def function_of(self, node: ast.AST) -> ast.AST | None:
        """The innermost ``def`` around ``node`` (``enclosing(node, FUNCTIONS)``), found
        from the statement holding it, whose answer is kept."""
        stmt = self._parents.get(node)
        while stmt is not None and not isinstance(stmt, ast.stmt):
            stmt = self._parents.get(stmt)
        if stmt is None:
            return None
        if isinstance(stmt, FUNCTIONS):
            return stmt
        known = self._function_of.get(stmt, False)
        if known is False:
            known = self._function_of[stmt] = self.enclosing(stmt, FUNCTIONS)
        return known

    @staticmethod
    def line(node: ast.AST) -> int:
        return node.lineno  # type: ignore[attr-defined]

    def returns(self, func: ast.AST) -> list[ast.Return]:
        """The ``return`` statements of ``func`` itself, in source order."""
        found = returns_of(self.tree, func)  # type: ignore[arg-type]
        return sorted(found, key=lambda r: (r.lineno, r.col_offset))

    # -- names ---------------------------------------------------------------------------

    def imported_names(self, expr: ast.AST) -> set[str]:
        """Qualified names ``expr`` (a name or a dotted chain) may denote through the
        module's imports; names that only local values bind give nothing."""
        split = head_and_rest(expr)
        if split is None:
            return set()
        head, rest = split
        plain = PlainImports.of(self.tree)
        if head.id not in plain.imported:  # type: ignore[attr-defined]
            return set()  # no import anywhere binds it
        target = plain.target.get(head.id)  # type: ignore[attr-defined]
        if target is not None:  # bound by one import only: no scope needs placing
            return {f"{target}.{rest}" if rest else target}
        _, bindings = self.scopes.bindings(head)  # type: ignore[arg-type]
        return {f"{b.imported}.{rest}" if rest else b.imported
                for b in bindings if b.imported is not None}

    def names_one_of(self, expr: ast.AST, wanted: frozenset[str]) -> set[str]:
        """``imported_names(expr) & wanted``, without placing scopes when no import of
        the module could make ``expr`` name any of ``wanted``."""
        if not self.may_name(expr, wanted):
            return set()
        return self.imported_names(expr) & wanted

    def may_name(self, expr: ast.AST, wanted: frozenset[str]) -> bool:
        """Whether some import of the module could make ``expr`` name one of ``wanted``
        (a name or dotted chain whose head an import binds to a fitting target): what
        ``names_one_of`` needs to find anything, told from the imports alone, without
        placing scopes."""
        # Rules ask this of every call in a module, and almost none is wanted: a chain
        # ``a.b.c`` can only name ``<target>.b.c``, so unless ``c`` ends a wanted name
        # the answer is no, known before its dotted name is built.
        if isinstance(expr, ast.Attribute) and expr.attr not in _last_parts(wanted):
            return False
        name = dotted(expr) if isinstance(expr, (ast.Name, ast.Attribute)) else None
        if name is None:
            return False
        head, _, rest = name.partition(".")
        targets = PlainImports.of(self.tree).all_targets.get(head)
        return bool(targets) and any((f"{t}.{rest}" if rest else t) in wanted for t in targets)

    def definitions(self, name: ast.Name) -> list[Definition]:
        """The definitions of ``name`` that may reach this use of it.

        Within the same scope, the last definition whose statement ends before the use
        (falling back to all of them, e.g. for a use at the top of a loop); from an
        enclosing scope (a global read in a function), all of them, since the function
        may run after any of them.
        """
        here, bindings = self.scopes.bindings(name)
        local = [b for b in bindings if b.scope is here]
        chosen: list[Binding] = bindings
        if local:
            use = (name.lineno, name.col_offset)
            before = []
            for b in local:
                stmt = self._statement_of(b.node)
                if stmt is None:
                    continue
                if (stmt.end_lineno, stmt.end_col_offset) <= use:  # type: ignore[attr-defined]
                    before.append(((stmt.lineno, stmt.col_offset), b))  # type: ignore[attr-defined]
            if before:
                before.sort(key=lambda t: t[0])
                chosen = [before[-1][1]]
            else:
                chosen = local
        return [Definition(b.node, self._value_of(b.node)) for b in chosen]

    def _statement_of(self, target: ast.AST) -> ast.AST | None:
        """The statement (or parameter, ``def``, ``:=``) that binds ``target``."""
        if isinstance(target, (ast.arg, ast.stmt)):
            return target
        for anc in self.ancestors(target):
            if isinstance(anc, (ast.stmt, ast.NamedExpr)):
                return anc
        return None

    def _value_of(self, target: ast.AST) -> ast.expr | None:
        parent = self._parents.get(target)
        if isinstance(parent, ast.Assign) and any(t is target for t in parent.targets):
            return parent.value
        if isinstance(parent, (ast.AnnAssign, ast.NamedExpr)) and parent.target is target:
            return parent.value
        return None

    def values(self, expr: ast.expr) -> list[ast.expr]:
        """The expressions ``expr`` may stand for, one assignment step back.

        A ``Name`` gives the values assigned to it (and, for a parameter, the arguments its
        same-module callers pass, and its default); ``self.attr`` gives the values the
        class's methods assign to it. Anything else stands for itself.
        """
        if isinstance(expr, ast.Name):
            out: list[ast.expr] = []
            for d in self.definitions(expr):
                if d.value is not None:
                    out.append(d.value)
                elif isinstance(d.target, ast.arg):
                    out.extend(self.call_site_arguments(d.target))
                    func = self._parents.get(self._parents.get(d.target))  # type: ignore[arg-type]
                    default = default_of(func, d.target) if func is not None else None
                    if default is not None:
                        out.append(default)
            return out
        if isinstance(expr, ast.Attribute) and self.is_self(expr.value):
            cls = self.enclosing(expr, ast.ClassDef)
            if isinstance(cls, ast.ClassDef):
                return list(self.class_attributes(cls).get(expr.attr, ()))
            return []
        return [expr]

    def unpacked_values(self, name: ast.Name) -> list[tuple[ast.expr, int]]:
        """For a name bound by tuple unpacking (``validity, label = disc(x)``), the
        unpacked expression and the name's position in it: ``[(disc(x), 1)]``. Starred
        targets (``a, *rest = ...``) make positions unknowable and give nothing."""
        out = []
        for d in self.definitions(name):
            if d.value is not None:
                continue
            seq = self._parents.get(d.target)
            if not isinstance(seq, (ast.Tuple, ast.List)):
                continue
            assign = self._parents.get(seq)
            if not isinstance(assign, ast.Assign) or not any(t is seq for t in assign.targets):
                continue
            if any(isinstance(e, ast.Starred) for e in seq.elts):
                continue
            index = next(i for i, e in enumerate(seq.elts) if e is d.target)
            out.append((assign.value, index))
        return out

    def resolve(self, expr: ast.expr, depth: int = 4) -> list[ast.expr]:
        """Follow ``values`` transitively (at most ``depth`` steps) to non-name expressions.

        Names and ``self.attr`` with no known value are dropped: the caller learns only
        what the module itself shows.
        """
        return follow(expr, self.values, lambda e: isinstance(e, ast.Name) or (
            isinstance(e, ast.Attribute) and self.is_self(e.value)), depth)

    # -- functions -----------------------------------------------------------------------

    def call_site_arguments(self, param: ast.arg) -> list[ast.expr]:
        """What same-module calls ``f(...)`` pass for ``param`` of ``def f``."""
        func = self._parents.get(self._parents.get(param))  # type: ignore[arg-type]
        if not isinstance(func, FUNCTIONS):
            return []  # a lambda's: not called by name
        positional = positional_params(func)
        index = next((i for i, p in enumerate(positional) if p is param), None)
        out = []
        for call in self.calls_of(func):
            arg = _bind(call, param.arg, index)
            if arg is not None:
                out.append(arg)
        return out

    def calls_of(self, func: ast.AST) -> list[ast.Call]:
        """Same-module calls ``f(...)`` of the plain function ``func`` (not methods)."""
        name = getattr(func, "name", None)
        if name is None:
            return []
        # Bound where it is defined, or in the module under ``global``.
        scope = next((s for s in (self.scopes.scope_of(func), self.scopes.module)
                      if any(b.node is func for b in s.bindings.get(name, ()))), None)
        if scope is None:
            return []
        calls = []
        for use in self.scopes.uses(scope, name):
            parent = self._parents.get(use)
            if isinstance(parent, ast.Call) and parent.func is use:
                calls.append(parent)
        return calls

    # -- classes -------------------------------------------------------------------------

    def is_self(self, expr: ast.AST) -> bool:
        """``expr`` is the first parameter of the enclosing method (``self``)."""
        if not isinstance(expr, ast.Name):
            return False
        func = self.function_of(expr)
        if func is None or not isinstance(self._parents.get(func), ast.ClassDef):
            return False
        params = positional_params(func)
        return bool(params) and params[0].arg == expr.id

    def class_attributes(self, cls: ast.ClassDef) -> dict[str, list[ast.expr]]:
        """``attr -> values`` for every ``self.attr = value`` in the methods of ``cls``,
        in source order."""
        cached = self._class_attrs.get(cls)
        if cached is not None:
            return cached
        attrs: dict[str, list[ast.expr]] = {}
        for stmt in cls.body:
            if not isinstance(stmt, FUNCTIONS):
                continue
            params = positional_params(stmt)
            if not params:
                continue
            for name, value in _self_assignments(stmt.body, params[0].arg):
                attrs.setdefault(name, []).append(value)
        self._class_attrs[cls] = attrs
        return attrs

    @staticmethod
    def method(cls: ast.ClassDef, name: str) -> ast.AST | None:
        for stmt in cls.body:
            if isinstance(stmt, FUNCTIONS) and stmt.name == name:
                return stmt
        return None

    def class_of(self, expr: ast.AST) -> ast.ClassDef | None:
        """The same-module class ``expr`` names (``Net`` in ``Net(...)``), if any."""
        if not isinstance(expr, ast.Name):
            return None
        for d in self.definitions(expr):
            if isinstance(d.target, ast.ClassDef):
                return d.target
        return None

    # -- text ----------------------------------------------------------------------------

    def source_of(self, node: ast.AST) -> str:
        """The code of ``node`` on one line, for messages."""
        code = ast.get_source_segment(self.text, node) or ast.unparse(node)
        return " ".join(code.split())


@lru_cache(maxsize=64)
def _last_parts(wanted: frozenset[str]) -> frozenset[str]:
    """The last component of each qualified name in ``wanted`` (``cross_entropy``);
    kept per set, which rules pass as module constants."""
    return frozenset(w.rpartition(".")[2] for w in wanted)


T = TypeVar("T")


def follow(expr: T, values: Callable[[T], list[T]], is_reference: Callable[[T], bool],
           depth: int) -> list[T]:
    """The expressions ``expr`` stands for, following ``values`` from every reference
    (a name, ``self.attr``) at most ``depth`` steps, breadth first; references with no
    known value are dropped. Shared by the ``ast`` flow and the libcst one
    (``analysis.flow``), whose trees differ but whose question is the same."""
    out: list[T] = []
    seen: set[int] = set()
    frontier = [expr]
    for _ in range(depth + 1):
        nxt: list[T] = []
        for e in frontier:
            if id(e) in seen:
                continue
            seen.add(id(e))
            if is_reference(e):
                nxt.extend(values(e))
            else:
                out.append(e)
        frontier = nxt
        if not frontier:
            break
    return out


def _bind(call: ast.Call, name: str, index: int | None) -> ast.expr | None:
    """The argument of ``call`` bound to parameter ``name`` at position ``index``."""
    items: list[ast.AST] = [*call.args, *call.keywords]
    items.sort(key=lambda a: (a.lineno, a.col_offset))  # type: ignore[attr-defined]
    positional = []
    for item in items:
        if isinstance(item, ast.Starred) or (isinstance(item, ast.keyword) and item.arg is None):
            return None  # *args / **kwargs: cannot tell which parameter it fills
        if isinstance(item, ast.keyword):
            if item.arg == name:
                return item.value
        else:
            positional.append(item)
    if index is not None and index < len(positional):
        return positional[index]  # type: ignore[return-value]
    return None


def _self_assignments(body: list[ast.stmt], self_name: str) -> list[tuple[str, ast.expr]]:
    """``self.attr = value`` statements in one method body (nested defs and classes
    excluded), in source order."""
    found: list[tuple[str, ast.expr]] = []

    def target(t: ast.expr, value: ast.expr | None) -> None:
        if (value is not None and isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name) and t.value.id == self_name):
            found.append((t.attr, value))

    # Assignments are statements: only statement lists are walked, never expressions.
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is ast.Assign:
            for t in node.targets:  # type: ignore[attr-defined]
                target(t, node.value)  # type: ignore[attr-defined]
        elif kind is ast.AnnAssign:
            target(node.target, node.value)  # type: ignore[attr-defined]
        elif kind not in _SCOPES:
            inner: list[ast.AST] = []
            for field in _BLOCK_FIELDS:
                block = getattr(node, field, None)
                if type(block) is list:
                    inner.extend(block)
            stack.extend(reversed(inner))
    return found


_SCOPES = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})
#: The fields that hold statements (or handlers and match cases, which hold them).
_BLOCK_FIELDS = ("body", "handlers", "orelse", "finalbody", "cases")  # source order
