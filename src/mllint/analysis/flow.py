"""Following a name back to what was assigned to it, within one module.

Rules that must know what a variable holds ("is ``probs`` the output of a softmax?", "is
``state`` a dict holding the optimizer's state?") use ``Flow``: it answers from libcst's
``ScopeProvider`` (plain names, parameters, globals), from the call sites of same-module
functions (a parameter holds what its callers pass), and from ``self.attr = ...``
assignments in the methods of the enclosing class. It never guesses from variable names.

A rule that uses ``Flow`` must declare ``FLOW_METADATA`` among its dependencies.
Everything is computed on demand from metadata the engine resolved once, and cached per
rule instance (one instance per file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import libcst as cst
from libcst.metadata import (
    CodeRange,
    ParentNodeProvider,
    PositionProvider,
    QualifiedNameProvider,
    Scope,
    ScopeProvider,
)

from mllint.analysis.pyast.flow import follow
from mllint.engine import traversal

FLOW_METADATA = (PositionProvider, ParentNodeProvider, ScopeProvider, QualifiedNameProvider)


@dataclass(frozen=True)
class Definition:
    """One place that gives a name its value.

    ``target`` is the node the scope analysis recorded (a ``Name`` target, a ``Param``, a
    ``FunctionDef``/``ClassDef``, an import alias...); ``value`` is the assigned
    expression when the definition is a plain ``name = value`` (or ``name: T = value``,
    ``(name := value)``), else ``None``.
    """

    target: cst.CSTNode
    value: cst.BaseExpression | None


class Flow:
    """Answers "what may this expression hold?" questions for one rule on one file."""

    def __init__(self, visitor: cst.MetadataDependent) -> None:
        self.v = visitor
        self._class_attrs: dict[cst.ClassDef, dict[str, list[cst.BaseExpression]]] = {}

    # -- metadata shortcuts --------------------------------------------------------------

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        try:
            return self.v.get_metadata(ParentNodeProvider, node)
        except KeyError:
            return None

    def ancestors(self, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
        cur = self.parent(node)
        while cur is not None:
            yield cur
            cur = self.parent(cur)

    def enclosing(self, node: cst.CSTNode, kind: type) -> cst.CSTNode | None:
        for anc in self.ancestors(node):
            if isinstance(anc, kind):
                return anc
        return None

    def range(self, node: cst.CSTNode) -> CodeRange:
        return self.v.get_metadata(PositionProvider, node)

    def line(self, node: cst.CSTNode) -> int:
        return self.range(node).start.line

    def scope(self, node: cst.CSTNode) -> Scope | None:
        try:
            return self.v.get_metadata(ScopeProvider, node)
        except KeyError:
            return None

    def imported_names(self, node: cst.CSTNode) -> set[str]:
        """Qualified names of ``node`` that come from an import (not local variables)."""
        try:
            names = self.v.get_metadata(QualifiedNameProvider, node, set())
        except KeyError:
            return set()
        return {q.name for q in names if q.source.name in ("IMPORT", "BUILTIN")}

    # -- names ---------------------------------------------------------------------------

    def definitions(self, name: cst.Name) -> list[Definition]:
        """The definitions of ``name`` that may reach this use of it.

        Within the same scope, the last definition whose statement ends before the use
        (falling back to all of them, e.g. for a use at the top of a loop); from an
        enclosing scope (a global read in a function), all of them, since the function
        may run after any of them.
        """
        scope = self.scope(name)
        if scope is None:
            return []
        assignments = list(scope[name.value])
        local = [a for a in assignments if getattr(a, "scope", None) is scope]
        chosen = assignments
        if local:
            use = self.range(name).start
            before = []
            for a in local:
                node = getattr(a, "node", None)
                stmt = self._statement_of(node) if node is not None else None
                if stmt is None:
                    continue
                end = self.range(stmt).end
                if (end.line, end.column) <= (use.line, use.column):
                    before.append((self.range(stmt).start, a))
            if before:
                before.sort(key=lambda t: (t[0].line, t[0].column))
                chosen = [before[-1][1]]
            else:
                chosen = local
        out = []
        for a in chosen:
            node = getattr(a, "node", None)
            if node is not None:
                out.append(Definition(node, self._value_of(node)))
        return out

    def _statement_of(self, target: cst.CSTNode) -> cst.CSTNode | None:
        """The statement (or parameter / def) that binds ``target``."""
        if isinstance(target, (cst.Param, cst.FunctionDef, cst.ClassDef)):
            return target
        for anc in self.ancestors(target):
            if isinstance(anc, (cst.BaseSmallStatement, cst.BaseCompoundStatement, cst.NamedExpr)):
                return anc
        return None

    def _value_of(self, target: cst.CSTNode) -> cst.BaseExpression | None:
        parent = self.parent(target)
        if isinstance(parent, cst.AssignTarget):
            assign = self.parent(parent)
            if isinstance(assign, cst.Assign) and parent.target is target:
                return assign.value
        if isinstance(parent, cst.AnnAssign) and parent.target is target:
            return parent.value
        if isinstance(parent, cst.NamedExpr) and parent.target is target:
            return parent.value
        return None

    def values(self, expr: cst.BaseExpression, depth: int = 0) -> list[cst.BaseExpression]:
        """The expressions ``expr`` may stand for, one assignment step back.

        A ``Name`` gives the values assigned to it (and, for a parameter, the arguments its
        same-module callers pass); ``self.attr`` gives the values the class's methods
        assign to it. Anything else stands for itself.
        """
        if isinstance(expr, cst.Name):
            out: list[cst.BaseExpression] = []
            for d in self.definitions(expr):
                if d.value is not None:
                    out.append(d.value)
                elif isinstance(d.target, cst.Param):
                    out.extend(self.call_site_arguments(d.target))
                    if d.target.default is not None:
                        out.append(d.target.default)
            return out
        if isinstance(expr, cst.Attribute) and self.is_self(expr.value):
            cls = self.enclosing(expr, cst.ClassDef)
            if isinstance(cls, cst.ClassDef):
                return list(self.class_attributes(cls).get(expr.attr.value, ()))
            return []
        return [expr]

    def unpacked_values(self, name: cst.Name) -> list[tuple[cst.BaseExpression, int]]:
        """For a name bound by tuple unpacking (``validity, label = disc(x)``), the
        unpacked expression and the name's position in it: ``[(disc(x), 1)]``. Starred
        targets (``a, *rest = ...``) make positions unknowable and give nothing."""
        out = []
        for d in self.definitions(name):
            if d.value is not None:
                continue
            element = self.parent(d.target)
            seq = self.parent(element) if isinstance(element, cst.Element) else None
            if not isinstance(seq, (cst.Tuple, cst.List)):
                continue
            holder = self.parent(seq)
            if not (isinstance(holder, cst.AssignTarget) and holder.target is seq):
                continue
            assign = self.parent(holder)
            if not isinstance(assign, cst.Assign) or any(
                isinstance(e, cst.StarredElement) for e in seq.elements
            ):
                continue
            index = next(i for i, e in enumerate(seq.elements) if e is element)
            out.append((assign.value, index))
        return out

    def resolve(self, expr: cst.BaseExpression, depth: int = 4) -> list[cst.BaseExpression]:
        """Follow ``values`` transitively (at most ``depth`` steps) to non-name expressions.

        Names and ``self.attr`` with no known value are dropped: the caller learns only
        what the module itself shows.
        """
        return follow(expr, self.values, lambda e: isinstance(e, cst.Name) or (
            isinstance(e, cst.Attribute) and self.is_self(e.value)), depth)

    # -- functions -----------------------------------------------------------------------

    def call_site_arguments(self, param: cst.Param) -> list[cst.BaseExpression]:
        """What same-module calls ``f(...)`` pass for ``param`` of ``def f``."""
        func = self.enclosing(param, cst.FunctionDef)
        if not isinstance(func, cst.FunctionDef):
            return []
        positional = [*func.params.posonly_params, *func.params.params]
        index = next((i for i, p in enumerate(positional) if p is param), None)
        out = []
        for call in self.calls_of(func):
            arg = _bind(call, param.name.value, index)
            if arg is not None:
                out.append(arg)
        return out

    def calls_of(self, func: cst.FunctionDef) -> list[cst.Call]:
        """Same-module calls ``f(...)`` of the plain function ``func`` (not methods)."""
        scope = self.scope(func)
        if scope is None:
            return []
        calls = []
        for a in scope.assignments[func.name.value]:
            if getattr(a, "node", None) is not func:
                continue
            for ref in a.references:
                parent = self.parent(ref.node)
                if isinstance(parent, cst.Call) and parent.func is ref.node:
                    calls.append(parent)
        return calls

    # -- classes -------------------------------------------------------------------------

    def is_self(self, expr: cst.BaseExpression) -> bool:
        """``expr`` is the first parameter of the enclosing method (``self``)."""
        if not isinstance(expr, cst.Name):
            return False
        func = self.enclosing(expr, cst.FunctionDef)
        if not isinstance(func, cst.FunctionDef):
            return False
        if not isinstance(self.parent(self.parent(func) or func), cst.ClassDef):
            return False
        params = [*func.params.posonly_params, *func.params.params]
        return bool(params) and params[0].name.value == expr.value

    def class_attributes(self, cls: cst.ClassDef) -> dict[str, list[cst.BaseExpression]]:
        """``attr -> values`` for every ``self.attr = value`` in the methods of ``cls``."""
        cached = self._class_attrs.get(cls)
        if cached is not None:
            return cached
        attrs: dict[str, list[cst.BaseExpression]] = {}
        for stmt in cls.body.body:
            if not isinstance(stmt, cst.FunctionDef):
                continue
            params = [*stmt.params.posonly_params, *stmt.params.params]
            if not params:
                continue
            collector = _SelfAssignments(params[0].name.value)
            traversal.visit(stmt.body, collector)
            for name, value in collector.found:
                attrs.setdefault(name, []).append(value)
        self._class_attrs[cls] = attrs
        return attrs

    def method(self, cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
        for stmt in cls.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == name:
                return stmt
        return None

    def class_of(self, expr: cst.BaseExpression) -> cst.ClassDef | None:
        """The same-module class ``expr`` names (``Net`` in ``Net(...)``), if any."""
        if not isinstance(expr, cst.Name):
            return None
        for d in self.definitions(expr):
            if isinstance(d.target, cst.ClassDef):
                return d.target
        return None


def _bind(call: cst.Call, name: str, index: int | None) -> cst.BaseExpression | None:
    """The argument of ``call`` bound to parameter ``name`` at position ``index``."""
    positional = []
    for arg in call.args:
        if arg.star:
            return None  # *args / **kwargs: cannot tell which parameter it fills
        if arg.keyword is None:
            positional.append(arg.value)
        elif arg.keyword.value == name:
            return arg.value
    if index is not None and index < len(positional):
        return positional[index]
    return None


class _SelfAssignments(cst.CSTVisitor):
    """``self.attr = value`` statements in one method body (nested defs excluded)."""

    def __init__(self, self_name: str) -> None:
        self.self_name = self_name
        self.found: list[tuple[str, cst.BaseExpression]] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def _target(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if (
            value is not None
            and isinstance(target, cst.Attribute)
            and isinstance(target.value, cst.Name)
            and target.value.value == self.self_name
        ):
            self.found.append((target.attr.value, value))

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._target(t.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._target(node.target, node.value)


def source_of(node: cst.CSTNode) -> str:
    """The code of ``node`` on one line, for messages."""
    code = cst.Module(body=[]).code_for_node(node)
    return " ".join(code.split())
