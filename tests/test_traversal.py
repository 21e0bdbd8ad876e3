"""The read-only batched traversal (``mllint.engine.traversal``) matches libcst's own."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper

from mllint.engine import traversal
from mllint.registry import all_rules

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "fixtures").rglob("*.py")) + sorted((ROOT / "tests").glob("test_*.py"))
SNIPPETS = [e.code for r in all_rules() for e in (*r.VALID, *r.INVALID)] + [
    "@d(1)\nasync def f(*, a: int = 1, **k) -> None:\n    async with x as (y, z):\n"
    "        async for i in g(): yield i\n",
    "x = [a for b in c if d for a in b]\ny = {k: v for k, v in z}\nf'{a!r:>{w}}' 'b'\n",
    "match p:\n    case {'k': [1, *rest]} | Point(x=0) as q if q: pass\n",
    "try:\n    pass\nexcept* (A, B) as e:\n    raise\nelse:\n    pass\nfinally:\n    del a[1:2:3], b\n",
    "lambda a, /, b=1, *c, d, **e: (a if b else c)\nglobal g\nnonlocal_ = not -a ** ~b\n",
    "class C(B, metaclass=M):\n    x: int = (yield)\n    def m(self): return await self.n\n",
]


def _nodes(module: cst.Module):
    todo = [module]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(node.children)


def _all_modules():
    for path in SOURCES:
        yield path.name, cst.parse_module(path.read_text(encoding="utf-8"))
    for i, code in enumerate(SNIPPETS):
        yield f"snippet-{i}", cst.parse_module(code)


@pytest.mark.parametrize("name, module", list(_all_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_children_in_libcst_order(name, module):
    for node in _nodes(module):
        assert traversal.children(node) == list(node.children), type(node).__name__


class _Recorder(cst.BatchableCSTVisitor):
    """Records every visit and leave of every node type that is not layout."""

    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log

    def on_visit_any(self, node: cst.CSTNode) -> None:
        self.log.append(("visit", type(node).__name__, id(node)))

    def on_leave_any(self, node: cst.CSTNode) -> None:
        self.log.append(("leave", type(node).__name__, id(node)))


def _recorder_class() -> type:
    names = {c.__name__ for c in _node_classes()} - {t.__name__ for t in traversal.TRIVIA}
    attrs = {}
    for name in names:
        def visit(self, node):
            self.on_visit_any(node)

        def leave(self, node):
            self.on_leave_any(node)

        # libcst finds visitor methods by their ``__name__``.
        visit.__name__, leave.__name__ = f"visit_{name}", f"leave_{name}"
        attrs[visit.__name__], attrs[leave.__name__] = visit, leave
    return type("Recorder", (_Recorder,), attrs)


def _node_classes():
    seen, todo = set(), [cst.CSTNode]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return seen


RECORDER = _recorder_class()


@pytest.mark.parametrize("name, module", list(_all_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_same_visits_in_the_same_order(name, module):
    theirs: list = []
    ours: list = []
    MetadataWrapper(module, unsafe_skip_copy=True).visit_batched([RECORDER(theirs)])
    traversal.visit_batched(MetadataWrapper(module, unsafe_skip_copy=True), [RECORDER(ours)])
    assert ours == theirs
    assert ours  # not vacuous: every module has a Module node at least


def _single_recorder(base: type, skip: frozenset[str] = frozenset(), trivia: bool = False) -> type:
    """A ``CSTVisitor`` logging every visit and leave; its visits of ``skip`` types
    return ``False``; with ``trivia`` it also asks about layout nodes."""
    names = {c.__name__ for c in _node_classes()}
    if not trivia:
        names -= {t.__name__ for t in traversal.TRIVIA}
    attrs = {}
    for name in names:
        def visit(self, node, _skip=name in skip):
            self.log.append(("visit", type(node).__name__, id(node)))
            return False if _skip else None

        def leave(self, node):
            self.log.append(("leave", type(node).__name__, id(node)))

        visit.__name__, leave.__name__ = f"visit_{name}", f"leave_{name}"
        attrs[visit.__name__], attrs[leave.__name__] = visit, leave
    attrs["__init__"] = lambda self, log: setattr(self, "log", log)
    return type("SingleRecorder", (base,), attrs)


class _AttributeHook(cst.CSTVisitor):
    """Asks about a field: only libcst's own walk makes that call."""

    def __init__(self, log: list) -> None:
        self.log = log

    def visit_Call_func(self, node: cst.Call) -> None:
        self.log.append(("func", id(node)))

    def visit_Name(self, node: cst.Name) -> None:
        self.log.append(("name", node.value))


SINGLE_VISITORS = {
    "plain": _single_recorder(cst.CSTVisitor),
    "pruning": _single_recorder(cst.CSTVisitor, frozenset({"FunctionDef", "Attribute", "Arg"})),
    "with-trivia": _single_recorder(cst.CSTVisitor, frozenset({"Lambda"}), trivia=True),
    "attribute-hook": _AttributeHook,
}


@pytest.mark.parametrize("kind", sorted(SINGLE_VISITORS))
@pytest.mark.parametrize("name, module", list(_all_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_one_visitor_makes_the_same_calls_as_libcst(name, module, kind):
    visitor = SINGLE_VISITORS[kind]
    for root in (module, *module.body[:3]):
        theirs: list = []
        ours: list = []
        root.visit(visitor(theirs))
        traversal.visit(root, visitor(ours))
        assert ours == theirs
        assert ours or kind == "attribute-hook"


def test_a_visitor_class_defined_in_a_function_is_not_kept():
    import gc

    def names(code: str) -> list[str]:
        class Names(cst.CSTVisitor):
            def __init__(self) -> None:
                self.found: list[str] = []

            def visit_Name(self, node: cst.Name) -> None:
                self.found.append(node.value)

        v = Names()
        traversal.visit(cst.parse_module(code), v)
        return v.found

    assert names("a = b(c)\n") == ["a", "b", "c"]
    before = len(traversal._PLANS)
    for _ in range(5):
        names("x\n")
    gc.collect()
    assert len(traversal._PLANS) <= before
