"""Which binding each name of a module may refer to, from Python's ``ast``.

Python's own scoping, flow-insensitive as libcst's ``ScopeProvider`` is: a name bound
anywhere in a function is local to all of that function; a function sees the names of
the functions around it and of the module, never those of a class body around it;
``global`` and ``nonlocal`` move a binding to the scope they name; a comprehension is a
scope of its own (its first ``iter`` is read outside it), and ``:=`` in it binds in the
scope around it; defaults, annotations, decorators and base classes are read in the
scope around the ``def`` or ``class``.

Nothing is walked for it: the bindings come from the module's node index
(``gates.resolve.nodes``, one walk shared with the prefilter's gates), each placed in its
scope by climbing its parents; a use of a name is resolved only when asked about.
``Scopes.of(tree)`` is cached on the tree.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass

from mllint.gates.resolve import nodes, parents

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_SCOPE_KINDS = {
    ast.FunctionDef: "function", ast.AsyncFunctionDef: "function", ast.Lambda: "function",
    ast.ClassDef: "class", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.GeneratorExp: "comprehension", ast.DictComp: "comprehension",
}


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
    __slots__ = ("kind", "node", "parent", "bindings", "declared_global", "declared_nonlocal")

    def __init__(self, kind: str, node: ast.AST, parent: "Scope | None") -> None:
        self.kind = kind  # "module", "function", "class" or "comprehension"
        self.node = node
        self.parent = parent
        #: Each name's bindings, in source order.
        self.bindings: dict[str, list[Binding]] = defaultdict(list)
        self.declared_global: set[str] = set()
        self.declared_nonlocal: set[str] = set()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Scope {self.kind} {getattr(self.node, 'name', '')}>"


class Scopes:
    """The scopes of one module."""

    def __init__(self, tree: ast.Module) -> None:
        self._index = nodes(tree)
        self._parents = parents(tree)
        self.module = Scope("module", tree, None)
        self._scopes: dict[ast.AST, Scope] = {tree: self.module}
        self._loads: dict[str, list[ast.Name]] | None = None
        self._stmt_owner: dict[ast.AST, ast.AST] = {}
        self._bind_all()

    @classmethod
    def of(cls, tree: ast.Module) -> "Scopes":
        return _cached(tree, "_mllint_scopes", cls)

    # -- where a node is -----------------------------------------------------------------

    def scope_of(self, node: ast.AST) -> Scope:
        """The scope ``node`` is read or bound in: for a ``def`` or ``class``, the scope
        its name is bound in; for a parameter (``ast.arg``), its function's."""
        return self._scope(self._scope_node(node))

    def _scope(self, owner: ast.AST) -> Scope:
        scope = self._scopes.get(owner)
        if scope is None:
            parent = self._scope(self._scope_node(owner))
            scope = self._scopes[owner] = Scope(_SCOPE_KINDS[type(owner)], owner, parent)
        return scope

    def _scope_node(self, node: ast.AST) -> ast.AST:
        """The node owning the scope ``node`` is evaluated in (the module, a function, a
        lambda, a class or a comprehension)."""
        up = self._parents
        below: ast.AST | None = None
        path = node
        while True:
            if path is not node and isinstance(path, ast.stmt):
                # What holds for a statement holds for everything in it that no scope
                # of its own claimed on the way up.
                known = self._stmt_owner.get(path)
                if known is None:
                    known = self._stmt_owner[path] = self._scope_node(path)
                return known
            owner = up.get(path)
            if owner is None:
                return path  # the module
            kind = type(owner)
            if kind in _FUNCTIONS or kind is ast.Lambda:
                if path is owner.args:  # type: ignore[attr-defined]
                    # A parameter itself is the function's; its default and annotation
                    # are read around the ``def``.
                    if below is node and type(node) is ast.arg:
                        return owner
                elif kind is ast.Lambda or not (
                        path is owner.returns  # type: ignore[attr-defined]
                        or any(path is d for d in owner.decorator_list)):  # type: ignore[attr-defined]
                    return owner
            elif kind is ast.ClassDef:
                if not (any(path is b for b in owner.bases)  # type: ignore[attr-defined]
                        or any(path is k for k in owner.keywords)  # type: ignore[attr-defined]
                        or any(path is d for d in owner.decorator_list)):  # type: ignore[attr-defined]
                    return owner
            elif kind in _COMPREHENSIONS:
                first = owner.generators[0]  # type: ignore[attr-defined]
                if not (path is first and below is first.iter):
                    return owner
            below, path = path, owner

    # -- bindings ------------------------------------------------------------------------

    def _bind_all(self) -> None:
        index = self._index
        found: list[tuple[tuple[int, int], Scope, str, ast.AST, str | None]] = []
        for stmt in index.get(ast.Global, ()):
            self.scope_of(stmt).declared_global.update(stmt.names)  # type: ignore[attr-defined]
        for stmt in index.get(ast.Nonlocal, ()):
            self.scope_of(stmt).declared_nonlocal.update(stmt.names)  # type: ignore[attr-defined]

        def add(node: ast.AST, scope: Scope, name: str, imported: str | None = None) -> None:
            found.append(((node.lineno, node.col_offset), scope, name, node, imported))  # type: ignore[attr-defined]

        walrus_targets = {id(n.target) for n in index.get(ast.NamedExpr, ())}  # type: ignore[attr-defined]
        self._stored = self._stored_names()
        for name in self._stored:
            scope = self.scope_of(name)
            if id(name) in walrus_targets:
                while scope.kind == "comprehension" and scope.parent is not None:
                    scope = scope.parent
            add(name, scope, name.id)  # type: ignore[attr-defined]
        for arg in index.get(ast.arg, ()):
            add(arg, self._scope(self._parents[self._parents[arg]]), arg.arg)  # type: ignore[attr-defined]
        for kind in (*_FUNCTIONS, ast.ClassDef):
            for d in index.get(kind, ()):
                add(d, self.scope_of(d), d.name)  # type: ignore[attr-defined]
        for imp in index.get(ast.Import, ()):
            scope = self.scope_of(imp)
            for alias in imp.names:  # type: ignore[attr-defined]
                if alias.asname:
                    add(imp, scope, alias.asname, alias.name)
                else:
                    head = alias.name.split(".", 1)[0]
                    add(imp, scope, head, head)
        for imp in index.get(ast.ImportFrom, ()):
            scope = self.scope_of(imp)
            base = "." * imp.level + (imp.module or "")  # type: ignore[attr-defined]
            for alias in imp.names:  # type: ignore[attr-defined]
                if alias.name == "*":
                    continue
                full = f"{base}.{alias.name}" if base and not base.endswith(".") else base + alias.name
                add(imp, scope, alias.asname or alias.name, full)
        for handler in index.get(ast.ExceptHandler, ()):
            if handler.name:  # type: ignore[attr-defined]
                add(handler, self.scope_of(handler), handler.name)  # type: ignore[attr-defined]
        for kind in (ast.MatchAs, ast.MatchStar):
            for pattern in index.get(kind, ()):
                if pattern.name:  # type: ignore[attr-defined]
                    add(pattern, self.scope_of(pattern), pattern.name)  # type: ignore[attr-defined]
        for pattern in index.get(ast.MatchMapping, ()):
            if pattern.rest:  # type: ignore[attr-defined]
                add(pattern, self.scope_of(pattern), pattern.rest)  # type: ignore[attr-defined]
        found.sort(key=lambda f: f[0])
        #: The names some import of the module binds, in any scope.
        self.imported = frozenset(f[2] for f in found if f[4] is not None)
        for _, scope, name, node, imported in found:
            target = self._binding_scope(scope, name)
            target.bindings[name].append(Binding(node, target, imported))

    def _stored_names(self) -> list[ast.Name]:
        """Every ``Name`` the module assigns to, read off the targets of the statements
        and expressions that bind (far fewer nodes than every name)."""
        index = self._index
        targets: list[ast.AST] = []
        for kind in (ast.Assign,):
            for node in index.get(kind, ()):
                targets.extend(node.targets)  # type: ignore[attr-defined]
        for kind in (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr,
                     ast.comprehension):
            targets.extend(node.target for node in index.get(kind, ()))  # type: ignore[attr-defined]
        targets.extend(item.optional_vars for item in index.get(ast.withitem, ())  # type: ignore[attr-defined]
                       if item.optional_vars is not None)  # type: ignore[attr-defined]
        out: list[ast.Name] = []
        while targets:
            t = targets.pop()
            kind = type(t)
            if kind is ast.Name:
                out.append(t)  # type: ignore[arg-type]
            elif kind is ast.Tuple or kind is ast.List:
                targets.extend(t.elts)  # type: ignore[attr-defined]
            elif kind is ast.Starred:
                targets.append(t.value)  # type: ignore[attr-defined]
        return out

    def _binding_scope(self, scope: Scope, name: str) -> Scope:
        """Where a binding of ``name`` in ``scope`` lands (``global``/``nonlocal``)."""
        if name in scope.declared_global:
            return self.module
        if name in scope.declared_nonlocal:
            up = scope.parent
            while up is not None and up.kind != "module":
                if up.kind == "function" and (name in up.bindings or self._binds(up, name)):
                    return up
                up = up.parent
        return scope

    def _binds(self, scope: Scope, name: str) -> bool:
        """``scope`` has a binding of ``name`` not yet placed (bindings are placed in
        source order, and a ``nonlocal`` may come before the enclosing assignment)."""
        for n in self._stored:
            if n.id == name and self.scope_of(n) is scope:
                return True
        return any(a.arg == name and self.scope_of(a) is scope  # type: ignore[attr-defined]
                   for a in self._index.get(ast.arg, ()))

    # -- uses ----------------------------------------------------------------------------

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

    def bindings(self, name: ast.Name) -> tuple[Scope, list[Binding]]:
        """The scope ``name`` is used in, and the bindings the use may see."""
        here = self.scope_of(name)
        target = self.lookup(here, name.id)
        return here, ([] if target is None else list(target.bindings[name.id]))

    def uses(self, scope: Scope, name: str) -> list[ast.Name]:
        """The loads of ``name`` that resolve to ``scope``'s bindings, in source order."""
        if self._loads is None:
            loads: dict[str, list[ast.Name]] = defaultdict(list)
            for n in self._index.get(ast.Name, ()):
                if isinstance(n.ctx, ast.Load):  # type: ignore[attr-defined]
                    loads[n.id].append(n)  # type: ignore[attr-defined, arg-type]
            self._loads = loads
        out = [n for n in self._loads.get(name, ()) if self.lookup(self.scope_of(n), name) is scope]
        out.sort(key=lambda n: (n.lineno, n.col_offset))
        return out


class PlainImports:
    """The names the module binds only by imports, all to one qualified name and at least
    once at module level (``F`` for ``import torch.nn.functional as F``): every use of
    such a name resolves to that import, so its qualified name is known without placing
    any scope (``Scopes``). Cached on the tree."""

    def __init__(self, tree: ast.Module) -> None:
        index = nodes(tree)
        up = parents(tree)
        targets: dict[str, set[str]] = defaultdict(set)
        at_module: set[str] = set()
        for imp in [*index.get(ast.Import, ()), *index.get(ast.ImportFrom, ())]:
            top = _module_level(imp, up)
            base = "." * imp.level + (imp.module or "") if isinstance(imp, ast.ImportFrom) else ""
            for alias in imp.names:  # type: ignore[attr-defined]
                if isinstance(imp, ast.Import):
                    name = alias.asname or alias.name.split(".", 1)[0]
                    target = alias.name if alias.asname else name
                elif alias.name == "*":
                    continue
                else:
                    name = alias.asname or alias.name
                    target = f"{base}.{alias.name}" if base and not base.endswith(".") \
                        else base + alias.name
                targets[name].add(target)
                if top:
                    at_module.add(name)
        bound: set[str] = set()
        for n in index.get(ast.Name, ()):
            if not isinstance(n.ctx, ast.Load):  # type: ignore[attr-defined]
                bound.add(n.id)  # type: ignore[attr-defined]
        bound |= {a.arg for a in index.get(ast.arg, ())}  # type: ignore[attr-defined]
        for kind in (*_FUNCTIONS, ast.ClassDef, ast.ExceptHandler, ast.MatchAs, ast.MatchStar):
            bound |= {n.name for n in index.get(kind, ()) if getattr(n, "name", None)}  # type: ignore[attr-defined]
        bound |= {n.rest for n in index.get(ast.MatchMapping, ()) if n.rest}  # type: ignore[attr-defined]
        self.target = {name: next(iter(t)) for name, t in targets.items()
                       if len(t) == 1 and name in at_module and name not in bound}
        #: Every name some import binds, with every qualified name it is bound to.
        self.imported = frozenset(targets)
        self.all_targets = {name: frozenset(t) for name, t in targets.items()}

    @classmethod
    def of(cls, tree: ast.Module) -> "PlainImports":
        return _cached(tree, "_mllint_plain_imports", cls)


def _cached(tree: ast.Module, attr: str, build):
    """``build(tree)``, made once per tree and kept on it."""
    found = getattr(tree, attr, None)
    if found is None:
        found = build(tree)
        setattr(tree, attr, found)
    return found


def _module_level(node: ast.AST, up: dict[ast.AST, ast.AST]) -> bool:
    cur = up.get(node)
    while cur is not None:
        if isinstance(cur, (*_FUNCTIONS, ast.Lambda, ast.ClassDef)):
            return False
        cur = up.get(cur)
    return True


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
