"""``fast_scope`` answers every scope question exactly as libcst's providers do.

The comparison is structural and total: for every node of a module, the same scope (kind,
defining node, qualified-name prefix); for every scope, the same assignments (name, node,
order) and accesses (node, referents); for every assignment, the same references; and for
every node, the same qualified names with the same sources.
"""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest
from helpers import all_fixtures
from libcst.metadata import MetadataWrapper, ParentNodeProvider, ScopeProvider
from libcst.metadata.scope_provider import Assignment, BuiltinAssignment

from mllint.engine import scope as fast_scope
from mllint.registry import all_rules


def _canon(module: cst.Module, scopes) -> dict:
    """Everything the analyses can observe through scope metadata, keyed by node ids."""

    def sid(scope) -> tuple:
        if scope is None:
            return ("none",)
        node = getattr(scope, "node", None)
        return (type(scope).__name__, id(node), scope._name_prefix)

    def aid(a) -> tuple:
        if isinstance(a, BuiltinAssignment):
            return ("builtin", a.name)
        assert isinstance(a, Assignment)
        return (type(a).__name__, a.name, id(a.node), sid(a.scope), a._index)

    out_nodes = {}
    seen_scopes = {}
    stack = [module]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        scope = scopes.get(node)
        qn = scope.get_qualified_names_for(node) if scope is not None else set()
        out_nodes[id(node)] = (sid(scope), frozenset(qn))
        if scope is not None:
            seen_scopes[sid(scope)] = scope
    # Parents of visible scopes too (a class scope may hold only its statements' scopes).
    for scope in list(seen_scopes.values()):
        s = scope
        while s.parent is not s:
            seen_scopes.setdefault(sid(s.parent), s.parent)
            s = s.parent
    out_scopes = {}
    for key, scope in seen_scopes.items():
        assigns = {}
        for a in scope.assignments:
            assigns.setdefault(a.name, set()).add(
                (aid(a), frozenset(id(r.node) for r in a.references))
            )
        accesses = {}
        for acc in scope.accesses:
            accesses.setdefault(id(acc.node), set()).add(
                (acc._index, frozenset(aid(r) for r in acc.referents))
            )
        lookups = {
            name: frozenset(aid(a) for a in scope[name])
            for name in set(assigns) | {"print", "torch", "self", "x"}
        }
        out_scopes[key] = (sid(scope.parent), assigns, accesses, lookups)
    return {"nodes": out_nodes, "scopes": out_scopes}


def _check(code: str) -> None:
    module = cst.parse_module(code)
    built = fast_scope.build(module)
    assert built is not None, "unexpected fallback"
    fast, parents = built
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    real = wrapper.resolve(ScopeProvider)
    expected = _canon(module, real)
    got = _canon(module, fast)
    assert got["nodes"] == expected["nodes"]
    assert got["scopes"] == expected["scopes"]
    real_parents = wrapper.resolve(ParentNodeProvider)
    assert set(map(id, parents)) == set(map(id, real_parents))
    assert all(parents[node] is parent for node, parent in real_parents.items())


def _examples():
    for rule in all_rules():
        for kind in ("VALID", "INVALID"):
            for i, ex in enumerate(getattr(rule, kind)):
                yield pytest.param(ex.code, id=f"{rule.code}-{kind.lower()}-{i}")


TRICKY = {
    "imports": """
        import os, torch.nn.functional as F
        import a.b.c
        from . import sib
        from ..pkg.mod import thing as other, more
        from torch.optim import *
        a.b.c.d()
        a.b.x
        F.softmax(os.path.join(sib.x, other, more))
    """,
    "dotted_imports_in_chains": """
        import os.path
        import torch.nn.functional
        import a.b.c as abc
        os.path.join(os.sep).upper
        os.path.x[os.path].y
        torch.nn.functional.relu(torch.nn.Linear(1, 1)(torch.ones(1))).sum().item
        (torch.nn).functional
        def f(os):
            return os.path.join, torch.nn.functional.softmax, abc.d
        class K:
            import os.environ
            v = os.environ.get
            def m(self):
                return os.environ, [os.path for os in ()]
    """,
    "class_body_hidden_from_methods": """
        x = 1
        class A:
            x = 2
            y = x
            def f(self, z=x):
                return x, y
            g = lambda q: x
            h = [x for _ in range(3)]
    """,
    "global_nonlocal": """
        counter = 0
        def bump():
            global counter
            counter += 1
            def inner():
                nonlocal local
                local = 3
            local = 1
            inner()
            return counter, local
    """,
    "comprehensions": """
        rows = [[1, 2], [3]]
        flat = [y for x in rows for y in x if y]
        d = {k: v for k, v in zip(rows, rows)}
        g = (x * 2 for x in flat)
        s = {x for x in rows[0]}
        nested = [[c for c in r] for r in rows]
        [z for z in (w := rows)]
    """,
    "order_and_redefinition": """
        def f():
            v = 1
            v = v + 1
            for i in range(v):
                v += i
            else:
                w = v
            with open(v) as fh, ctx() as (a, b):
                pass
            try:
                pass
            except ValueError as err:
                print(err)
            del v
            return w
        f = f()
    """,
    "annotations": """
        from typing import Optional, List, cast, TypeVar, Literal, NewType
        import typing as t
        T = TypeVar("T", bound="Model")
        UserId = NewType("UserId", "int")
        class Model:
            def clone(self, other: "Model", x: Optional["Model"] = None) -> "Model":
                y: List["torch.Tensor"] = cast("Model", other)
                z: Literal["train", "eval"] = "train"
                w: t.Optional["Model"] = None
                return cast(Model, other)
        def g(a: "Optional[Model]", b: "nn.Module", c: "bad syntax(") -> 'typing.List["int"]':
            return a
    """,
    "typing_aliases": """
        from typing import cast as as_type, TypeVar as TV, Optional
        import typing.cast
        import typing as tp
        M = TV("M", bound="Model")
        a = as_type("Model", None)
        b = tp.cast("Optional[Model]", a)
        c = typing.cast("Model", b)
        def f():
            from typing import NewType as NT
            return NT("Id", "int"), as_type("Model", 1)(2)
        class Model: pass
    """,
    "decorators_and_defaults": """
        import functools, torch
        def deco(f): return f
        @deco
        @functools.wraps(deco)
        def h(a, b=torch.zeros(1), *args, c: int = 3, **kw) -> torch.Tensor:
            return lambda x, y=a: x + y + b
        class B(torch.nn.Module, metaclass=type):
            @property
            def p(self):
                return super().p
    """,
    "attributes_and_calls": """
        import torch
        model = torch.nn.Linear(2, 2)
        model.weight.data.zero_()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        x = model(torch.randn(1, 2))[0].sum().item()
        (torch).nn
        print(len([model]))
        self = None
        self.x.y = 3
        a = b = c = model
        a.attr, (b, *c) = 1, (2, 3)
    """,
    "match_and_walrus": """
        def f(cmd):
            match cmd:
                case ["go", where]:
                    return where
                case {"k": v, **rest}:
                    return v, rest
                case Point(x=0) as p:
                    return p
                case _:
                    pass
            if (n := len(cmd)) > 1:
                return n
    """,
    "strings_and_fstrings": """
        name = "x"
        print(f"{name!r:>{10}} {name.upper()}")
        s = "a" "b"
        def k(v: "a" "b", w: f"{name}"):
            return v
    """,
    "fstring_format_spec_after_plain": """
        width = 3
        print(f"{width}")
        print(f"{width:>{width}} {width:,} {width!r:.2f}")
    """,
    "async": """
        import asyncio
        async def run(xs):
            async for x in xs:
                await asyncio.sleep(x)
            async with lock as l:
                pass
            return [y async for y in xs]
    """,
}


@pytest.mark.parametrize("code", [pytest.param(v, id=k) for k, v in TRICKY.items()])
def test_tricky_snippets(code):
    _check(textwrap.dedent(code))


@pytest.mark.parametrize("path", all_fixtures(), ids=lambda p: p.name)
def test_fixtures(path):
    _check(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("code", list(_examples()))
def test_rule_examples(code):
    _check(code)


def test_fast_children_equal_libcst_children():
    for path in all_fixtures()[:12]:
        module = cst.parse_module(path.read_text(encoding="utf-8"))
        stack = [module]
        while stack:
            node = stack.pop()
            kids = node.children
            assert fast_scope.children(node) == list(kids)
            stack.extend(kids)


def test_parent_map_equals_libcst_parent_provider():
    module = cst.parse_module(textwrap.dedent(TRICKY["decorators_and_defaults"]))
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(ParentNodeProvider)
    got = fast_scope.parent_map(module)
    assert set(got) == set(expected)
    assert all(got[node] is parent for node, parent in expected.items())


@pytest.mark.parametrize("code", [
    "type Alias = list[int]\n",
    "def f[T](x: T) -> T:\n    return x\n",
    "nonlocal x\n",
])
def test_unmirrored_constructs_fall_back_to_libcst(code):
    module = cst.parse_module(code)
    assert fast_scope.build_scopes(module) is None


def test_seeding_skips_expression_contexts_but_computes_them_on_demand():
    from libcst.metadata import ExpressionContextProvider, QualifiedNameProvider

    code = "import torch\nx = torch.zeros(1)\n"
    module = cst.parse_module(code)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    fast_scope.seed(wrapper, {QualifiedNameProvider})
    ours = wrapper._metadata[ExpressionContextProvider]
    assert ours._mapping is None  # nothing computed yet
    real = MetadataWrapper(module, unsafe_skip_copy=True).resolve(ExpressionContextProvider)
    assert dict(ours) == dict(real)
    call = module.body[1].body[0].value
    assert {q.name for q in wrapper.resolve(QualifiedNameProvider)[call.func]} == {"torch.zeros"}


def test_field_lists_do_not_depend_on_the_first_node_seen(monkeypatch):
    """libcst visits an f-string expression's ``format_spec`` only when it has one; the
    learned field list must still include it when the first one seen has none."""
    monkeypatch.setattr(fast_scope, "_FIELDS", {})
    monkeypatch.setattr(fast_scope, "_LEAVES", set())
    _check(textwrap.dedent(TRICKY["fstring_format_spec_after_plain"]))
