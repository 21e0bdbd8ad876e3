"""Which binding each name of a module may refer to, from Python's ``ast``.

Python's own scoping, flow-insensitive as libcst's ``ScopeProvider`` is: a name bound
anywhere in a function is local to all of that function; a function sees the names of
the functions around it and of the module, never those of a class body around it;
``global`` and ``nonlocal`` move a binding to the scope they name; a comprehension is a
scope of its own (its first ``iter`` is read outside it), and ``:=`` in it binds in the
scope around it.

``Scopes.of(tree)`` walks the module once and is cached on the tree. Each use of a name
(``Name`` in a load context) is resolved to the scope whose bindings it sees, and each
scope keeps the uses that resolve to it, so both "what may this name be?" and "where is
this function called?" are lookups.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@dataclass(frozen=True, eq=False)
class Binding:
    """One place that binds a name: ``node`` is the ``Name`` target, the parameter
    (``ast.arg``), the ``def``/``class``, the import statement, the ``except`` handler or
    the match pattern. ``imported`` is the qualified name an import binds it to
    (``torch.nn.functional`` for ``import torch.nn.functional as F``; ``torch`` for
    ``import torch.nn``, whose uses spell out the rest)."""

    node: ast.AST
    scope: "Scope"
    imported: str | None = None


class Scope:
    __slots__ = ("kind", "node", "parent", "bindings", "uses", "declared_global",
                 "declared_nonlocal")

    def __init__(self, kind: str, node: ast.AST, parent: "Scope | None") -> None:
        self.kind = kind  # "module", "function", "class" or "comprehension"
        self.node = node
        self.parent = parent
        self.bindings: dict[str, list[Binding]] = defaultdict(list)
        #: The loads of each name that resolve to this scope's bindings.
        self.uses: dict[str, list[ast.Name]] = defaultdict(list)
        self.declared_global: set[str] = set()
        self.declared_nonlocal: set[str] = set()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Scope {self.kind} {getattr(self.node, 'name', '')}>"


class Scopes:
    """The scopes of one module."""

    def __init__(self, tree: ast.Module) -> None:
        self.module = Scope("module", tree, None)
        #: The scope each ``Name`` (load or store), ``arg``, ``def`` and ``class`` is in:
        #: for a ``def``/``class``, the scope its name is bound in.
        self.scope_of: dict[ast.AST, Scope] = {}
        #: Each load of a name, resolved: the scope whose bindings it sees (absent when
        #: nothing in the module binds it: a builtin, a star import, a typo).
        self.resolved: dict[ast.Name, Scope] = {}
        self._loads: list[tuple[ast.Name, Scope]] = []
        _Builder(self).module(tree)
        self._move_nonlocals()
        for name, scope in self._loads:
            target = self.lookup(scope, name.id)
            if target is not None:
                self.resolved[name] = target
                target.uses[name.id].append(name)
        del self._loads

    @classmethod
    def of(cls, tree: ast.Module) -> "Scopes":
        cached = getattr(tree, "_mllint_scopes", None)
        if cached is None:
            cached = cls(tree)
            tree._mllint_scopes = cached  # type: ignore[attr-defined]
        return cached

    def lookup(self, scope: Scope, name: str) -> Scope | None:
        """The scope whose bindings a use of ``name`` in ``scope`` sees."""
        if name in scope.declared_global:
            return self.module if name in self.module.bindings else None
        if name in scope.bindings:
            return scope
        up = scope.parent
        while up is not None:
            if up.kind != "class" and name in up.bindings:
                return up
            up = up.parent
        return None

    def bindings(self, name: ast.Name) -> tuple[Scope | None, list[Binding]]:
        """The scope ``name`` is used in, and the bindings the use may see."""
        here = self.scope_of.get(name)
        if here is None:
            return None, []
        target = self.resolved.get(name) if isinstance(name.ctx, ast.Load) \
            else self.lookup(here, name.id)
        return here, ([] if target is None else list(target.bindings[name.id]))

    def _move_nonlocals(self) -> None:
        """A ``nonlocal`` name's bindings belong to the nearest enclosing function that
        binds it (known only once the whole module is read)."""
        for scope in self._all_scopes():
            for name in scope.declared_nonlocal:
                moved = scope.bindings.pop(name, [])
                up = scope.parent
                while up is not None and (up.kind == "class" or name not in up.bindings):
                    up = up.parent
                if up is not None and up.kind != "module":
                    up.bindings[name].extend(Binding(b.node, up, b.imported) for b in moved)
                elif moved:
                    scope.bindings[name] = moved  # not valid Python; keep it local

    def _all_scopes(self) -> list[Scope]:
        seen: dict[int, Scope] = {id(self.module): self.module}
        for scope in self.scope_of.values():
            seen.setdefault(id(scope), scope)
        return list(seen.values())


class _Builder:
    """One walk of the tree in source order, recording bindings and loads."""

    def __init__(self, scopes: Scopes) -> None:
        self.s = scopes

    def module(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            self.visit(stmt, self.s.module)

    # -- binding -------------------------------------------------------------------------

    def bind(self, scope: Scope, name: str, node: ast.AST, imported: str | None = None) -> None:
        target = self.s.module if name in scope.declared_global else scope
        target.bindings[name].append(Binding(node, target, imported))

    def visit_all(self, nodes: list, scope: Scope) -> None:
        for node in nodes:
            if isinstance(node, ast.AST):
                self.visit(node, scope)

    def visit(self, node: ast.AST, scope: Scope) -> None:
        kind = type(node)
        if kind is ast.Name:
            self.s.scope_of[node] = scope
            if isinstance(node.ctx, ast.Load):
                self.s._loads.append((node, scope))  # type: ignore[arg-type]
            elif isinstance(node.ctx, ast.Store):
                self.bind(scope, node.id, node)
            return
        method = _HANDLERS.get(kind)
        if method is not None:
            method(self, node, scope)
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child, scope)

    # -- definitions ---------------------------------------------------------------------

    def _function(self, node: ast.AST, scope: Scope) -> None:
        args: ast.arguments = node.args  # type: ignore[attr-defined]
        self.visit_all(getattr(node, "decorator_list", []), scope)
        self.visit_all(args.defaults, scope)
        self.visit_all([d for d in args.kw_defaults if d is not None], scope)
        for arg in _all_args(args):
            if arg.annotation is not None:
                self.visit(arg.annotation, scope)
        if getattr(node, "returns", None) is not None:
            self.visit(node.returns, scope)  # type: ignore[attr-defined]
        if not isinstance(node, ast.Lambda):
            self.s.scope_of[node] = scope
            self.bind(scope, node.name, node)  # type: ignore[attr-defined]
        inner = Scope("function", node, scope)
        for arg in _all_args(args):
            self.s.scope_of[arg] = inner
            inner.bindings[arg.arg].append(Binding(arg, inner))
        body = node.body  # type: ignore[attr-defined]
        if isinstance(body, list):
            # ``global``/``nonlocal`` precede every use they govern (Python requires it),
            # so reading them in order is enough.
            self.visit_all(body, inner)
        else:
            self.visit(body, inner)

    def _class(self, node: ast.ClassDef, scope: Scope) -> None:
        self.visit_all(node.decorator_list, scope)
        self.visit_all(node.bases, scope)
        self.visit_all(node.keywords, scope)
        self.s.scope_of[node] = scope
        self.bind(scope, node.name, node)
        inner = Scope("class", node, scope)
        self.visit_all(node.body, inner)

    def _comprehension(self, node: ast.AST, scope: Scope) -> None:
        generators: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        self.visit(generators[0].iter, scope)
        inner = Scope("comprehension", node, scope)
        for i, gen in enumerate(generators):
            if i:
                self.visit(gen.iter, inner)
            self.visit(gen.target, inner)
            self.visit_all(gen.ifs, inner)
        if isinstance(node, ast.DictComp):
            self.visit(node.key, inner)
            self.visit(node.value, inner)
        else:
            self.visit(node.elt, inner)  # type: ignore[attr-defined]

    def _named_expr(self, node: ast.NamedExpr, scope: Scope) -> None:
        self.visit(node.value, scope)
        target = scope
        while target.kind == "comprehension" and target.parent is not None:
            target = target.parent
        self.s.scope_of[node.target] = target
        self.bind(target, node.target.id, node.target)

    def _import(self, node: ast.Import, scope: Scope) -> None:
        for alias in node.names:
            if alias.asname:
                self.bind(scope, alias.asname, node, alias.name)
            else:
                head = alias.name.split(".", 1)[0]
                self.bind(scope, head, node, head)

    def _import_from(self, node: ast.ImportFrom, scope: Scope) -> None:
        base = "." * node.level + (node.module or "")
        for alias in node.names:
            if alias.name == "*":
                continue
            full = f"{base}.{alias.name}" if base and not base.endswith(".") else base + alias.name
            self.bind(scope, alias.asname or alias.name, node, full)

    def _global(self, node: ast.Global, scope: Scope) -> None:
        scope.declared_global.update(node.names)

    def _nonlocal(self, node: ast.Nonlocal, scope: Scope) -> None:
        scope.declared_nonlocal.update(node.names)

    def _except(self, node: ast.ExceptHandler, scope: Scope) -> None:
        if node.type is not None:
            self.visit(node.type, scope)
        if node.name:
            self.bind(scope, node.name, node)
        self.visit_all(node.body, scope)

    def _match_name(self, node: ast.AST, scope: Scope) -> None:
        name = getattr(node, "name", None) if not isinstance(node, ast.MatchMapping) \
            else node.rest
        if name:
            self.bind(scope, name, node)
        for child in ast.iter_child_nodes(node):
            self.visit(child, scope)


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = [*args.posonlyargs, *args.args]
    if args.vararg is not None:
        out.append(args.vararg)
    out.extend(args.kwonlyargs)
    if args.kwarg is not None:
        out.append(args.kwarg)
    return out


def positional_params(func: ast.AST) -> list[ast.arg]:
    """The parameters of ``func`` that calls may fill by position, in order."""
    args: ast.arguments = func.args  # type: ignore[attr-defined]
    return [*args.posonlyargs, *args.args]


def default_of(func: ast.AST, param: ast.arg) -> ast.expr | None:
    """The default value of ``param`` of ``func``, if it has one."""
    args: ast.arguments = func.args  # type: ignore[attr-defined]
    positional = [*args.posonlyargs, *args.args]
    if param in positional:
        offset = len(positional) - len(args.defaults)
        i = positional.index(param) - offset
        return args.defaults[i] if i >= 0 else None
    if param in args.kwonlyargs:
        return args.kw_defaults[args.kwonlyargs.index(param)]
    return None


_HANDLERS = {
    ast.FunctionDef: _Builder._function,
    ast.AsyncFunctionDef: _Builder._function,
    ast.Lambda: _Builder._function,
    ast.ClassDef: _Builder._class,
    ast.ListComp: _Builder._comprehension,
    ast.SetComp: _Builder._comprehension,
    ast.GeneratorExp: _Builder._comprehension,
    ast.DictComp: _Builder._comprehension,
    ast.NamedExpr: _Builder._named_expr,
    ast.Import: _Builder._import,
    ast.ImportFrom: _Builder._import_from,
    ast.Global: _Builder._global,
    ast.Nonlocal: _Builder._nonlocal,
    ast.ExceptHandler: _Builder._except,
    ast.MatchAs: _Builder._match_name,
    ast.MatchStar: _Builder._match_name,
    ast.MatchMapping: _Builder._match_name,
}
