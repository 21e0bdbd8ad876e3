"""The rules' single batched traversal, without rebuilding the tree.

libcst's ``visit_batched`` walks the tree through each node's
``_visit_and_replace_children``, which constructs (and validates) a fresh copy of every
node even for a read-only visitor: on real files that copying costs more than the rules
themselves. This walk calls the same ``visit_<Type>``/``leave_<Type>`` methods on the
same original nodes in the same order, visiting each node's children in the order its
``_visit_and_replace_children`` does (read once per node class from its source), and
skips whitespace, comments, parentheses and operator tokens, which no rule asks about
(unless one does: then they are walked like any other node).

``visit`` does the same for one ``CSTVisitor`` over a subtree (``node.visit(visitor)``,
which the analyses call on function bodies and arguments), and ``children`` stands in
for ``node.children``.

``tests/test_traversal.py`` checks the child order against libcst's ``children`` on
every node of the fixtures and the rules' examples, and that the visits are identical.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import weakref
from collections.abc import MutableMapping
from contextlib import ExitStack
from typing import Callable, Sequence

import libcst as cst
from libcst import BatchableCSTVisitor, CSTNode
from libcst._batched_visitor import _get_visitor_methods
from libcst.metadata import MetadataWrapper

from mllint.engine.libcst_support import fast_paths_enabled

_FIELDS: dict[type, tuple[str, ...]] = {}


def child_fields(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` that hold child nodes, in the order libcst visits them."""
    try:
        return _FIELDS[cls]
    except KeyError:
        pass
    method = None
    for klass in cls.__mro__:
        if "_visit_and_replace_children" in klass.__dict__:
            method = klass.__dict__["_visit_and_replace_children"]
            break
    fields: list[str] = []
    if method is not None:
        tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
        calls = [
            n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id.startswith("visit_") and len(n.args) >= 2
            and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str)
        ]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        # A field may appear twice (``names`` of ``ImportFrom``, visited one way or
        # another by a conditional): keep its first place.
        fields = list(dict.fromkeys(c.args[1].value for c in calls))
    _FIELDS[cls] = tuple(fields)
    return _FIELDS[cls]


def children(node: CSTNode) -> list[CSTNode]:
    """``node.children`` (same nodes, same order), without rebuilding ``node``."""
    if not fast_paths_enabled():
        return list(node.children)
    out: list[CSTNode] = []
    for name in child_fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, CSTNode):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(v for v in value if isinstance(v, CSTNode))
    return out


def _trivia() -> frozenset[type]:
    """Node classes that hold only layout: whitespace, comments, newlines, commas and
    other operator tokens, brackets. None of them contains anything else."""
    from libcst._nodes import op, whitespace

    out: set[type] = set()
    for module in (op, whitespace):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, CSTNode) and value.__module__ == module.__name__:
                out.add(value)
    out |= {cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket,
            cst.LeftCurlyBrace, cst.RightCurlyBrace}
    return frozenset(out)


TRIVIA = _trivia()


def _node_classes() -> frozenset[type]:
    seen: set[type] = set()
    todo: list[type] = [CSTNode]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return frozenset(seen)


#: ``type(x) in NODE_CLASSES`` instead of ``isinstance(x, CSTNode)``: CSTNode is an ABC,
#: and its ``isinstance`` costs a call into ``abc`` for every field of every node.
NODE_CLASSES = _node_classes()
_SEQUENCES = (list, tuple)

Method = Callable[[CSTNode], object]


def visit_batched(wrapper: MetadataWrapper, visitors: Sequence[BatchableCSTVisitor]) -> None:
    """``wrapper.visit_batched(visitors)``, read-only and cheaper (same calls, same order)."""
    methods = _get_visitor_methods(visitors)
    wanted = {name.split("_", 1)[1] for name in methods}
    skip = frozenset(t for t in TRIVIA if t.__name__ not in wanted)
    table: dict[type, tuple[tuple[Method, ...], tuple[Method, ...], tuple[str, ...]]] = {}
    with ExitStack() as stack:
        for v in visitors:
            stack.enter_context(v.resolve(wrapper))
        _walk(wrapper.module, methods, skip, table)


def _to_walk(node: CSTNode, fields: tuple[str, ...], skip: frozenset[type]) -> list[CSTNode]:
    """The children of ``node`` in ``fields`` whose type is not in ``skip``, last first
    (ready to go on a stack, so that they are entered in source order)."""
    kids: list[CSTNode] = []
    nodes = NODE_CLASSES
    for field in fields:
        value = getattr(node, field)
        kind = type(value)
        if kind in nodes:
            if kind not in skip:
                kids.append(value)
        elif kind in _SEQUENCES:
            for v in value:
                element = type(v)
                if element in nodes and element not in skip:
                    kids.append(v)
    kids.reverse()
    return kids


def _walk(root: CSTNode, methods, skip: frozenset[type], table: dict) -> None:
    # An explicit stack: no recursion limit on deeply nested code. An entry is a node to
    # enter, or (node, leave-methods) to leave.
    todo: list = [root]
    pop = todo.pop
    push = todo.append
    while todo:
        item = pop()
        if type(item) is tuple:
            node, leaves = item
            for fn in leaves:
                fn(node)
            continue
        node = item
        cls = type(node)
        entry = table.get(cls)
        if entry is None:
            name = cls.__name__
            entry = table[cls] = (
                tuple(methods.get(f"visit_{name}", ())),
                tuple(methods.get(f"leave_{name}", ())),
                child_fields(cls),
            )
        visits, leaves, fields = entry
        for fn in visits:
            fn(node)
        if leaves:
            push((node, leaves))
        todo.extend(_to_walk(node, fields, skip))


# -- one visitor over a subtree ------------------------------------------------------------

_NODE_NAMES = frozenset(c.__name__ for c in NODE_CLASSES)
_HOOKS = ("on_visit", "on_leave", "on_visit_attribute", "on_leave_attribute")
#: Per visitor class: the names of its own ``visit_``/``leave_`` methods (libcst's are
#: no-ops) and the trivia types to skip; ``None`` when only libcst's own walk gives the
#: same calls (a visitor with attribute hooks or its own ``on_*`` methods).
_PLANS: MutableMapping[type, tuple[frozenset[str], frozenset[type]] | None] = (
    weakref.WeakKeyDictionary())  # a visitor class defined in a function dies with it


def _plan(cls: type) -> tuple[frozenset[str], frozenset[type]] | None:
    try:
        return _PLANS[cls]
    except KeyError:
        pass
    own = frozenset(
        name for name in dir(cls) if name.startswith(("visit_", "leave_"))
        and getattr(cls, name) is not getattr(cst.CSTVisitor, name, None))
    types = {name.split("_", 1)[1] for name in own}
    plan = None
    if types <= _NODE_NAMES and all(
            getattr(cls, hook) is getattr(cst.CSTVisitor, hook) for hook in _HOOKS):
        # Trivia may hold other trivia (a comment inside whitespace): skip it only when
        # the visitor asks about none of it.
        wants_trivia = any(t.__name__ in types for t in TRIVIA)
        plan = own, frozenset() if wants_trivia else TRIVIA
    _PLANS[cls] = plan
    return plan


def visit(node: CSTNode, visitor: cst.CSTVisitor) -> None:
    """``node.visit(visitor)`` for a ``CSTVisitor``, without rebuilding ``node``: the same
    ``visit_<Type>``/``leave_<Type>`` calls in the same order, children skipped where a
    visit returns ``False``."""
    plan = _plan(type(visitor))
    if plan is None or not fast_paths_enabled():
        node.visit(visitor)
        return
    own, skip = plan
    table: dict[type, tuple[Method | None, Method | None, tuple[str, ...]]] = {}
    todo: list = [node]
    pop = todo.pop
    while todo:
        item = pop()
        if type(item) is tuple:
            item[1](item[0])
            continue
        cls = type(item)
        entry = table.get(cls)
        if entry is None:
            name = cls.__name__
            on_enter, on_leave = f"visit_{name}", f"leave_{name}"
            entry = table[cls] = (getattr(visitor, on_enter) if on_enter in own else None,
                                  getattr(visitor, on_leave) if on_leave in own else None,
                                  child_fields(cls))
        enter, leave, fields = entry
        if leave is not None:
            todo.append((item, leave))
        if enter is not None and enter(item) is False:
            continue
        todo.extend(_to_walk(item, fields, skip))
