"""Shared by the gates: one walk of Python's ``ast`` per file, and import-based name
resolution.

``nodes(tree)`` buckets every node by type in a single walk, cached on the tree, so the
gates of several rules on one file walk it once between them.

A coarse over-approximation of what libcst's ``QualifiedNameProvider`` answers: every
import anywhere in the module (top level, in functions, under ``try``) binds its alias
for the whole module, and no local assignment shadows it. So for any expression the
libcst analysis resolves to ``torch.save``, ``qualified`` includes ``torch.save`` too;
it may include names libcst would not give (a gate then admits the file, which is safe).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TypeVar

N = TypeVar("N", bound=ast.AST)

# Fields that never hold a node a gate asks about: contexts (``Load()`` on every name),
# operators, identifiers and other strings, numbers, and the import aliases (read off
# their ``Import`` nodes). Skipping them makes a walk about twice as fast as
# ``ast.iter_child_nodes``; the order of the rest is the same.
_SKIPPED_FIELDS = frozenset(
    {"ctx", "op", "ops", "id", "attr", "arg", "name", "names", "module", "level",
     "type_comment", "kind", "conversion", "is_async", "type_ignores", "simple"}
)
_FIELDS: dict[type, tuple[str, ...]] = {ast.Constant: ()}


def child_fields(kind: type) -> tuple[str, ...]:
    """The fields of nodes of type ``kind`` that may hold nodes worth visiting."""
    fields = _FIELDS.get(kind)
    if fields is None:
        fields = _FIELDS[kind] = tuple(f for f in kind._fields if f not in _SKIPPED_FIELDS)
    return fields


def children(node: ast.AST) -> list[ast.AST]:
    """``ast.iter_child_nodes(node)`` less what ``_SKIPPED_FIELDS`` holds, as a list."""
    out: list[ast.AST] = []
    for name in child_fields(type(node)):
        value = getattr(node, name)
        if type(value) is list:
            out.extend(c for c in value if isinstance(c, ast.AST))
        elif isinstance(value, ast.AST):
            out.append(value)
    return out


def nodes(tree: ast.AST) -> dict[type, list[ast.AST]]:
    """Every node under ``tree`` (itself included), by type; computed once per tree, in
    the same walk as each node's parent (``parents``). A child's parent is recorded as it
    is pushed, so the walk makes no pair per node."""
    cached = getattr(tree, "_mllint_nodes", None)
    if cached is not None:
        return cached
    by_type: dict[type, list[ast.AST]] = defaultdict(list)
    parent_of: dict[ast.AST, ast.AST] = {}
    stack: list[ast.AST] = [tree]
    pop, push = stack.pop, stack.append
    node_type = ast.AST
    while stack:
        node = pop()
        kind = type(node)
        by_type[kind].append(node)
        for name in child_fields(kind):
            value = getattr(node, name)
            if type(value) is list:
                for v in value:
                    if isinstance(v, node_type):
                        parent_of[v] = node
                        push(v)
            elif isinstance(value, node_type):
                parent_of[value] = node
                push(value)
    tree._mllint_nodes = by_type  # type: ignore[attr-defined]
    tree._mllint_parents = parent_of  # type: ignore[attr-defined]
    return by_type


def drop_caches(tree: ast.AST) -> None:
    """Forget what the walks above (and the analyses, ``_mllint_scopes``...) keep on
    ``tree``. Those caches hold the tree itself, a cycle: dropped, the tree goes as soon
    as nothing refers to it, instead of waiting for a full pass of the cycle collector
    that also walks every object still alive (on a large run, most of its time)."""
    kept = getattr(tree, "__dict__", None)
    if kept:
        for name in [n for n in kept if n.startswith("_mllint_")]:
            del kept[name]


def parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    """Each node's parent under ``tree`` (what ``children`` skips left out)."""
    nodes(tree)
    return tree._mllint_parents  # type: ignore[attr-defined]


def enclosing(node: ast.AST, tree: ast.AST) -> list[ast.AST]:
    """The nodes around ``node``, innermost first, up to its function or lambda (included)
    or the module (left out)."""
    up = parents(tree)
    out: list[ast.AST] = []
    while node in up:
        node = up[node]
        if isinstance(node, ast.Module):
            break
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            break
    return out


def returns_of(tree: ast.AST, func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Return]:
    """The ``return`` statements of ``func`` itself (not of functions nested in it), in
    the order of the walk; grouped by function when first asked."""
    returns = getattr(tree, "_mllint_returns", None)
    if returns is None:
        up = parents(tree)
        returns = defaultdict(list)
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        for ret in nodes(tree).get(ast.Return, ()):
            owner = up.get(ret)
            while owner is not None and not isinstance(owner, functions):
                owner = up.get(owner)
            if owner is not None:
                returns[owner].append(ret)
        tree._mllint_returns = returns  # type: ignore[attr-defined]
    return returns.get(func, [])


def of_type(tree: ast.AST, *types: type[N]) -> list[N]:
    """The nodes under ``tree`` of exactly these types (``ast`` has no subclassing
    between concrete node types, so exact types are all types)."""
    index = nodes(tree)
    out: list = []
    for kind in types:
        out.extend(index.get(kind, ()))
    return out


def dotted(expr: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names and attributes, else ``None``."""
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return None


@dataclass
class Imports:
    #: local name -> the qualified names it may stand for
    aliases: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, tree: ast.Module) -> "Imports":
        cached = getattr(tree, "_mllint_imports", None)
        if cached is not None:
            return cached
        out = cls()
        for node in of_type(tree, ast.Import, ast.ImportFrom):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        out.aliases[alias.asname].add(alias.name)
                    else:
                        # ``import a.b.c`` binds ``a``; ``a.b.c.f`` then resolves in full.
                        head = alias.name.split(".", 1)[0]
                        out.aliases[head].add(head)
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    full = f"{base}.{alias.name}" if base and not base.endswith(".") else base + alias.name
                    out.aliases[alias.asname or alias.name].add(full)
        tree._mllint_imports = out  # type: ignore[attr-defined]
        return out

    def qualified(self, expr: ast.expr) -> set[str]:
        """The imported qualified names ``expr`` may denote (empty if none)."""
        name = dotted(expr)
        if name is None:
            return set()
        head, _, rest = name.partition(".")
        found = self.aliases.get(head)
        if not found:
            return set()
        return {f"{q}.{rest}" if rest else q for q in found}

    def resolves_to(self, expr: ast.expr, targets: frozenset[str] | set[str]) -> bool:
        return bool(self.qualified(expr) & targets)
