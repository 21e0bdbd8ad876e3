"""Rules that decide on Python's ``ast`` (``rule.AstRule``): the scopes and value flow they
read (``mllint.analysis.pyast``), and how the engine runs them (no libcst parse when no
other rule needs one, positions in characters, a crash reported as an internal error)."""

from __future__ import annotations

import ast
import textwrap

import pytest

from mllint.analysis.pyast.flow import Flow
from mllint.analysis.pyast.scopes import Scopes
from mllint.engine import lint
from mllint.engine import lint_text
from mllint.rules.ml001_missing_zero_grad import MissingZeroGrad
from mllint.rules.ml005_double_softmax import DoubleSoftmax
from mllint.types import ErrorKind


def parse(code: str) -> tuple[ast.Module, str]:
    text = textwrap.dedent(code).lstrip("\n")
    return ast.parse(text), text


def names(tree: ast.Module, ident: str, ctx: type = ast.Load) -> list[ast.Name]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == ident
            and isinstance(n.ctx, ctx)]


def binding_lines(tree: ast.Module, use: ast.Name) -> list[int]:
    _, found = Scopes.of(tree).bindings(use)
    return sorted(b.node.lineno for b in found)


# -- scopes ----------------------------------------------------------------------------


def test_a_name_bound_anywhere_in_a_function_is_local_to_all_of_it():
    tree, _ = parse("""
        x = 1
        def f():
            print(x)
            x = 2
        """)
    (use,) = names(tree, "x")
    assert binding_lines(tree, use) == [4]


def test_methods_do_not_see_the_class_body_but_see_the_module():
    tree, _ = parse("""
        y = 0
        class C:
            y = 1
            z = y
            def m(self):
                return y
        """)
    in_class, in_method = names(tree, "y")
    assert binding_lines(tree, in_class) == [3]
    assert binding_lines(tree, in_method) == [1]


def test_global_and_nonlocal_move_the_binding():
    tree, _ = parse("""
        def outer():
            n = 0
            def inner():
                nonlocal n
                n = 1
            def other():
                global g
                g = 2
            return n
        def reader():
            return g
        """)
    n_use = names(tree, "n")[0]
    g_use = names(tree, "g")[0]
    assert binding_lines(tree, n_use) == [2, 5]
    assert binding_lines(tree, g_use) == [8]


def test_comprehension_targets_stay_inside_but_walrus_binds_outside():
    tree, _ = parse("""
        i = 'outer'
        squares = [i * i for i in range(3) if (last := i)]
        print(i, last)
        """)
    inside = next(n for n in names(tree, "i") if n.lineno == 2)
    outside = next(n for n in names(tree, "i") if n.lineno == 3)
    assert binding_lines(tree, inside) == [2]
    assert binding_lines(tree, outside) == [1]
    assert binding_lines(tree, names(tree, "last")[0]) == [2]


def test_calls_of_a_function_skip_a_shadowing_local():
    tree, text = parse("""
        def step(x):
            return x
        step(1)
        def g(step):
            step(2)
        """)
    flow = Flow(tree, text)
    func = tree.body[0]
    assert [c.lineno for c in flow.calls_of(func)] == [3]


def test_the_last_definition_before_the_use_reaches_it_and_parameters_take_call_sites():
    tree, text = parse("""
        def f(a, b=3):
            a = a + 1
            c = a
            return b
        f(10, b=20)
        """)
    flow = Flow(tree, text)
    c_value = next(n for n in names(tree, "a") if n.lineno == 3)
    assert [ast.unparse(v) for v in flow.values(c_value)] == ["a + 1"]
    b_use = names(tree, "b")[0]
    assert [ast.unparse(v) for v in flow.values(b_use)] == ["20", "3"]


def test_imported_names_follow_aliases_and_not_local_values():
    tree, text = parse("""
        import torch.nn.functional as F
        from torch import nn
        def f(x):
            F.softmax(x, 1)
            nn.Softmax()
            torch = object()
            torch.softmax(x)
        """)
    flow = Flow(tree, text)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    got = {ast.unparse(c.func): flow.imported_names(c.func) for c in calls}
    assert got == {"F.softmax": {"torch.nn.functional.softmax"}, "nn.Softmax": {"torch.nn.Softmax"},
                   "torch.softmax": set(), "object": set()}


# -- the engine ------------------------------------------------------------------------

SOFTMAX_INTO_CE = textwrap.dedent("""
    import torch
    import torch.nn.functional as F

    def step(model, x, y):
        s = "ééé"; loss = F.cross_entropy(F.softmax(model(x), dim=1), y)
        return loss
    """).lstrip("\n")


def test_a_file_only_ast_rules_check_is_never_parsed_with_libcst(monkeypatch):
    def no_libcst(text):
        raise AssertionError("libcst parse")

    monkeypatch.setattr(lint, "parse_module", no_libcst)
    result = lint_text("t.py", SOFTMAX_INTO_CE, [DoubleSoftmax])
    assert result.errors == ()
    # Columns count characters, not the UTF-8 bytes ``ast`` counts: the three ``é``s
    # before the call would shift it by three.
    assert [(f.code, f.line, f.span.start.column, f.span.end.column) for f in result.findings] \
        == [("ML005", 5, 23, 69)]
    assert SOFTMAX_INTO_CE.splitlines()[4][22:68] == \
        "F.cross_entropy(F.softmax(model(x), dim=1), y)"


def test_a_crashing_ast_rule_is_an_internal_error_and_other_rules_still_report(monkeypatch):
    code = SOFTMAX_INTO_CE + textwrap.dedent("""
        def train(model, loader):
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in loader:
                loss = model(x).sum()
                loss.backward()
                opt.step()
        """)

    def broken(self, tree):
        raise ValueError("boom")

    monkeypatch.setattr(DoubleSoftmax, "check", broken)
    result = lint_text("t.py", code, [DoubleSoftmax, MissingZeroGrad], prefilter=False)
    assert [(e.kind, e.rule) for e in result.errors] == [(ErrorKind.INTERNAL, "ML005")]
    assert "ValueError: boom" in result.errors[0].message
    assert [(f.code, f.line) for f in result.findings] == [("ML001", 13)]


@pytest.mark.parametrize("code", [
    "def f(:\n    pass\n",  # not Python
])
def test_a_syntax_error_is_reported_once_with_only_ast_rules(code):
    result = lint_text("t.py", code, [DoubleSoftmax], prefilter=False)
    assert [e.kind for e in result.errors] == [ErrorKind.SYNTAX]
    assert result.findings == ()
