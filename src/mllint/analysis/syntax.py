"""Name resolution helpers shared by rules.

Names are resolved with libcst's ``QualifiedNameProvider``, checking the whole set of
candidate names, so ``import torch.nn.functional as F; F.softmax`` and
``from torch.optim import AdamW as Opt; Opt(...)`` both resolve. Never match by suffix.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import libcst as cst
from libcst.metadata import QualifiedNameProvider

from mllint.engine import traversal
from mllint.engine.traversal import children

# Re-exported: the analyses import it from here, the ast gates from ``optimizer_names``.
from mllint.optimizer_names import is_optimizer_constructor  # noqa: F401


def qualified_names(visitor: cst.MetadataDependent, node: cst.CSTNode) -> set[str]:
    """Fully qualified names ``node`` may refer to (empty when unresolvable)."""
    try:
        names = visitor.get_metadata(QualifiedNameProvider, node, set())
    except KeyError:
        return set()
    return {q.name for q in names} if names else star_imported(visitor, node)


N = TypeVar("N", bound=cst.CSTNode)

#: Roots a star import brings in so commonly that an unbound one means that module:
#: ``from utils import *`` where utils does ``import torch``.
_STAR_ROOTS = frozenset({"torch"})


def star_imported(visitor: cst.MetadataDependent, node: cst.CSTNode) -> set[str]:
    """``{"torch.no_grad"}`` for ``torch.no_grad`` when nothing in the module binds
    ``torch`` (no qualified name resolves) and the module star-imports: the name can only
    have come from the star import, and ``torch`` is torch."""
    dotted = dotted_name(node) if isinstance(node, (cst.Name, cst.Attribute)) else None
    if dotted is None or dotted.partition(".")[0] not in _STAR_ROOTS:
        return set()
    context = getattr(visitor, "context", None)
    return {dotted} if context is not None and getattr(context, "star_imports", False) else set()


def resolves_to(visitor: cst.MetadataDependent, node: cst.CSTNode, targets: Iterable[str]) -> bool:
    wanted = set(targets)
    return bool(qualified_names(visitor, node) & wanted)


def dotted_name(expr: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a chain of Names/Attributes, else ``None``."""
    parts: list[str] = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if isinstance(expr, cst.Name):
        parts.append(expr.value)
        return ".".join(reversed(parts))
    return None


def method_call(node: cst.CSTNode, *methods: str) -> cst.BaseExpression | None:
    """The receiver of ``recv.method(...)`` when ``node`` is such a call, else ``None``."""
    if (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value in methods
    ):
        return node.func.value
    return None


def receiver_name(node: cst.CSTNode, *methods: str) -> str | None:
    recv = method_call(node, *methods)
    return None if recv is None else dotted_name(recv)


def keyword_arg(call: cst.Call, name: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


def positional_arg(call: cst.Call, index: int) -> cst.Arg | None:
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return positional[index] if index < len(positional) else None


def names_in(expr: cst.CSTNode) -> set[str]:
    """Dotted names (``loss``, ``self.total``) read anywhere in a small expression."""
    names = _Names()
    traversal.visit(expr, names)
    return names.found


class _Names(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        dotted = dotted_name(node)
        if dotted is not None:
            self.found.add(dotted)
            return False
        return True

    def visit_Name(self, node: cst.Name) -> None:
        self.found.add(node.value)


def nodes_of(tree: cst.CSTNode, kind: type[N]) -> Iterator[N]:
    """Every node of type ``kind`` in ``tree`` (``tree`` included), outermost first.
    (``libcst.matchers.findall`` does this too, but importing the matchers costs a
    pre-commit run about a fifth of its time.)"""
    stack = [tree]
    while stack:
        cur = stack.pop()
        if isinstance(cur, kind):
            yield cur
        stack.extend(reversed(children(cur)))


def contains(tree: cst.CSTNode, node: cst.CSTNode) -> bool:
    """Whether ``node`` is ``tree`` or lies anywhere inside it."""
    stack = [tree]
    while stack:
        cur = stack.pop()
        if cur is node:
            return True
        stack.extend(children(cur))
    return False
