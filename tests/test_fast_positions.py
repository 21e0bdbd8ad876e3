"""The lazy position mapping gives libcst's ``PositionProvider`` answer for every node."""

from __future__ import annotations

import random
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from mllint.engine import positions as fast_positions
from mllint.engine.positions import LazyPositions
from mllint.registry import all_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").rglob("*.py"))

# Snippets where positions are easy to get wrong: (id, source).
TRICKY = [
    ("empty", ""),
    ("only-newline", "\n"),
    ("only-comments", "# a\n\n# b\n"),
    ("comment-no-newline", "x = 1\n# end"),
    ("no-trailing-newline", "x = 1\nx = 1"),
    ("no-trailing-newline-block", "def f():\n    return 1"),
    ("no-trailing-newline-footer", "def f():\n    return 1\n    # tail"),
    ("crlf", "import os\r\n\r\ndef f(a,\r\n      b):\r\n    return a + b\r\n"),
    ("crlf-no-trailing", "x = 1\r\nif x:\r\n    y = 2"),
    ("cr-only", "x = 1\ry = 2\rif x:\r    z = 3\r"),
    ("cr-last", "x = 1\ny = 2\r"),
    ("cr-last-repeated", "y = 2\ra\na\na\ny = 2\r"),
    ("crlf-then-cr", "x = 1\r\n\r"),
    ("lf-then-cr", "x = 1\n\r"),
    ("trailing-spaces-at-eof", "x = 1\n   "),
    ("trailing-tab-at-eof", "if x:\n    y = 1\n\t"),
    ("form-feed-at-eof", "x = 1\n\x0c"),
    ("mixed-newlines", "x = 1\r\ny = 2\nif x:\r\n    z = 3\n"),
    ("tabs", "class A:\n\tdef f(self):\n\t\tif self:\n\t\t\treturn 1\n\t\treturn 2\n"),
    ("two-space-default", "def f():\n  if x:\n    y = 1\n  return y\n"),
    ("mixed-indents", "def f():\n    if x:\n      y = 1\n    return y\nclass C:\n  a = 1\n"),
    ("continuation", "x = 1 + \\\n    2\nif (a and\n        b):\n    pass\ny = [\n  1,\n  2,\n]\n"),
    ("backslash-header", "if a and \\\n   b:\n    x = 1\n"),
    ("semicolons", "a = 1; b = 2; c = a + b\nif a: b = 1; c = 2\n"),
    (
        "decorators",
        "import functools\n\n# lead\n@functools.wraps(\n    f,\n)\n\n@staticmethod\n"
        "def g(x):  # trailing\n    '''doc\n    more'''\n    return x\n",
    ),
    (
        "class-decorators",
        "class A:\n    @property\n    def x(self):\n        return 1\n\n    @x.setter\n"
        "    def x(self, v):\n        pass\n",
    ),
    (
        "strings",
        'a = """one\ntwo\n   three"""\nb = f"{a!r:>{10}} {a + \'x\'}" f\'\'\'\n{a}\n\'\'\'\n'
        "c = rb'\\x00' b'implicit' b\"concat\"\nd = u'x' 'y'\n",
    ),
    ("nested-fstring", 'x = f"{f\'{1 + 2}\'}"\ny = f"{x=}"\n'),
    (
        "block-footers",
        "def f():\n    x = 1\n    # indented footer\n\n# dedented comment\n\ndef g():\n"
        "    if x:\n        pass\n        # deep footer\n    # mid footer\n",
    ),
    (
        "compound",
        "for i in range(3):\n    if i:\n        continue\n    elif i > 1:\n        break\n"
        "    else:\n        pass\nelse:\n    pass\nwhile x:\n    x -= 1\nelse:\n    y = 0\n"
        "try:\n    a()\nexcept (A, B) as e:\n    raise\ntry:\n    b()\nexcept* C:\n    pass\n",
    ),
    (
        "try-else-finally",
        "try:\n    a()\nexcept Exception:\n    b()\nelse:\n    c()\nfinally:\n    d()\n",
    ),
    (
        "async-with-match",
        "async def f(xs):\n    async with a as b, c:\n        async for x in xs:\n"
        "            await x\n    match xs:\n        case [1, *rest]:\n            pass\n"
        "        case {'k': v} if v:\n            return v\n        case _:\n            pass\n",
    ),
    (
        "expressions",
        "y = lambda a, *b, c=1, **d: (a, b)\nz = [i for i in y if i] + {k: v for k, v in z}\n"
        "w = (yield_ := 3)\nv = a if b else c\nu = x[1:2, ::3]\nt = not -x ** 2\n"
        "def g(a, /, b, *, c: int = 1) -> None:\n    global w\n    nonlocal_ = 1\n"
        "    del w\n    assert a, 'm'\n    return (yield)\n",
    ),
    ("suites", "if x: pass\nclass C: x = 1\ndef f(): return 1\nwhile x: x -= 1\n"),
    ("duplicates", "x = 1\nx = 1\nif x:\n    x = 1\n    x = 1\nif x:\n    x = 1\n    x = 1\n"),
    ("identical-functions", "def f():\n    return 1\n\ndef f():\n    return 1\n"),
    ("unicode", "s = 'héllo 𝔘'; t = s\ndef ƒ(ä):\n    return 'ü' + ä  # ñ\n"),
    ("form-feed", "x = 1\n\x0c\ndef f():\n    pass\n"),
    ("blank-lines-with-spaces", "def f():\n    x = 1\n        \n    \n    return x\n"),
    ("header-comments", "#!/usr/bin/env python\n# coding: utf-8\n\n'''doc'''\nimport os\n"),
    ("deep-nesting", "class A:\n  class B:\n    def f(self):\n      with x:\n        for y in z:\n"
     "          if y:\n            return [\n              y,\n            ]\n"),
    ("parens", "x = ((a))\ny = (a,)\nz = (\n    a  # c\n    + b\n)\ncall(a)(b)[c].d\n"),
    ("imports", "from . import (a,\n    b as c)\nimport x.y as z, w\nfrom ..m import *\n"),
]


def _examples():
    for rule in all_rules():
        for kind in ("VALID", "INVALID"):
            for i, example in enumerate(getattr(rule, kind)):
                yield pytest.param(example.code, id=f"{rule.code}-{kind.lower()}-{i}")


def _cases():
    for path in FIXTURES:
        yield pytest.param(path.read_text(encoding="utf-8"), id=str(path.relative_to(ROOT)))
    yield from _examples()
    for name, source in TRICKY:
        yield pytest.param(source, id=f"tricky-{name}")


def _reference(module: cst.Module) -> dict:
    return dict(MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider))


def _reference_parents(module: cst.Module) -> dict:
    return dict(MetadataWrapper(module, unsafe_skip_copy=True).resolve(ParentNodeProvider))


def _lazy(module: cst.Module, text: str | None, parents=None) -> LazyPositions:
    """A fresh mapping; ``parents`` stands for a seeded ``ParentNodeProvider``."""
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    if parents is not None:
        wrapper._metadata[ParentNodeProvider] = parents
    fast_positions.seed(wrapper, {PositionProvider}, text)
    mapping = wrapper._metadata[PositionProvider]
    assert isinstance(mapping, LazyPositions)
    return mapping


@pytest.mark.parametrize("source", list(_cases()))
def test_every_node_matches_libcst(source):
    module = cst.parse_module(source)
    # What the lazy mapping relies on: the text is libcst's token stream, up to its end.
    if module.body:  # (without statements, nothing is placed in the text)
        assert _lazy(module, source)._source() == _lazy(module, None)._source()
    ref = _reference(module)
    others = [n for n in ref if n is not module]
    orders = {
        "document": others,
        "reverse": others[::-1],
        "shuffled": random.Random(len(source)).sample(others, len(others)),
    }
    parents = _reference_parents(module)
    for name, nodes in orders.items():
        # With the text and a seeded parent map statements are placed one by one;
        # otherwise the module is generated in order up to the node asked for.
        for text, seeded in ((source, parents), (None, parents), (source, None)):
            lazy = _lazy(module, text, seeded)
            for node in nodes:
                assert lazy[node] == ref[node], (name, type(node).__name__)
            if nodes:
                assert lazy._in_order is (text is None or seeded is None)
            assert lazy[module] == ref[module]
    # Statement by statement, each on a fresh mapping: each unit placed on its own.
    for node in others:
        if isinstance(node, cst.BaseStatement):
            lazy = _lazy(module, source, parents)
            assert lazy[node] == ref[node]
            assert lazy.stats["full"] == 0 or lazy.stats["ambiguous"] > 0


@pytest.mark.parametrize("name,source", TRICKY, ids=[t[0] for t in TRICKY])
def test_mapping_protocol(name, source):
    module = cst.parse_module(source)
    ref = _reference(module)
    lazy = _lazy(module, source)
    assert len(lazy) == len(ref)
    assert set(lazy) == set(ref)
    assert all(node in lazy for node in ref)
    stranger = cst.Name("stranger")
    assert stranger not in lazy
    assert lazy.get(stranger) is None
    with pytest.raises(KeyError):
        lazy[stranger]


def test_statements_are_placed_without_generating_the_module():
    source = "import a\n\ndef f(x):\n    y = x + 1\n    return y\n\nz = f(2)\n"
    module = cst.parse_module(source)
    ref = _reference(module)
    lazy = _lazy(module, source, _reference_parents(module))
    ret = module.body[1].body.body[1]
    assert lazy[ret] == ref[ret]
    assert lazy.stats["full"] == 0
    assert lazy.stats["units"] == 1
    # Only that statement was generated.
    assert id(module.body[0]) not in lazy._raw
    # Its neighbour is placed next to it, without a search.
    assign = module.body[1].body.body[0]
    assert lazy[assign] == ref[assign]
    assert lazy.stats["anchored"] == 1


def test_ambiguous_statement_is_placed_through_its_parent():
    source = "def f():\n    x = 1\n\ndef g():\n    x = 1\n"
    module = cst.parse_module(source)
    ref = _reference(module)
    lazy = _lazy(module, source, _reference_parents(module))
    second = module.body[1].body.body[0]
    assert lazy[second] == ref[second]
    assert lazy.stats["ambiguous"] == 1
    assert lazy.stats["full"] == 0


def test_without_parents_statements_are_generated_in_order_up_to_the_node():
    source = "import a\n\ndef f(x):\n    return x\n\nz = f(2)\nw = z\n"
    module = cst.parse_module(source)
    ref = _reference(module)
    lazy = _lazy(module, source)
    ret = module.body[1].body.body[0]
    assert lazy[ret] == ref[ret]
    assert lazy.stats["units"] == 2  # ``import a`` and ``def f``
    assert id(module.body[2]) not in lazy._raw
    assert lazy[module.body[3]] == ref[module.body[3]]
    assert lazy.stats["units"] == 4 and lazy.stats["full"] == 0
    assert lazy[module] == ref[module]


def test_seed_only_when_wanted_and_not_resolved():
    module = cst.parse_module("x = 1\n")
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    fast_positions.seed(wrapper, set())
    assert PositionProvider not in wrapper._metadata
    resolved = wrapper.resolve(PositionProvider)
    fast_positions.seed(wrapper, {PositionProvider})
    assert wrapper._metadata[PositionProvider] is resolved


def test_visitor_reads_seeded_positions():
    source = "def f():\n    return g(1)\n"
    module = cst.parse_module(source)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    fast_positions.seed(wrapper, {PositionProvider}, source)

    class Calls(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, int, int, int]] = []

        def visit_Call(self, node: cst.Call) -> None:
            r = self.get_metadata(PositionProvider, node)
            self.seen.append((r.start.line, r.start.column, r.end.line, r.end.column))

    visitor = Calls()
    wrapper.visit(visitor)
    assert visitor.seen == [(2, 11, 2, 15)]
    assert isinstance(wrapper._metadata[PositionProvider], LazyPositions)
