"""``analysis.pyast.index.ModuleIndex``: the module index the ``ast`` rules (ML001, ML004)
ask where a node sits, which names it may denote and where a value comes from."""

from __future__ import annotations

import ast
import textwrap

from mllint.analysis.pyast.index import GradMode, ModuleIndex


def index(code: str, star_imports: bool = False) -> tuple[ModuleIndex, ast.Module]:
    text = textwrap.dedent(code).lstrip("\n")
    tree = ast.parse(text)
    return ModuleIndex(tree, text, star_imports=star_imports), tree


def call_named(tree: ast.Module, name: str) -> ast.Call:
    """The first call whose callee is written ``name`` (a name or the last attribute)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if getattr(func, "id", None) == name or getattr(func, "attr", None) == name:
                return node
    raise AssertionError(name)


def test_a_decorator_or_default_of_a_def_is_outside_its_body():
    ix, tree = index("""
        def outer():
            @deco()
            def inner(x=default()):
                body()
    """)
    outer, inner = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert ix.function_of(call_named(tree, "body")) is inner
    assert ix.function_of(call_named(tree, "deco")) is outer
    assert ix.function_of(call_named(tree, "default")) is outer
    assert ix.function_of(inner) is outer and ix.function_of(outer) is None


def test_loops_hold_their_body_only_and_stop_at_the_function():
    ix, tree = index("""
        for a in range(3):
            def f():
                for b in head():
                    step()
                else:
                    after()
    """)
    inner = next(n for n in ast.walk(tree) if isinstance(n, ast.For) and n.target.id == "b")
    assert ix.loops_of(call_named(tree, "step")) == [inner]
    assert ix.loops_of(call_named(tree, "head")) == []  # the iterable is read once
    assert ix.loops_of(call_named(tree, "after")) == []  # ``else`` runs once
    assert ix.in_body(call_named(tree, "step"), inner)
    assert not ix.in_body(call_named(tree, "after"), inner)


def test_loop_chains_continue_through_same_module_callers():
    ix, tree = index("""
        def train_step(x):
            if x:
                opt.step()

        for x in loader:
            train_step(x)
    """)
    [chain] = ix.loop_chains(call_named(tree, "step"))
    assert [loop.lineno for loop in chain.loops] == [5] and chain.guarded


def test_qualified_names_as_libcst_gives_them():
    ix, tree = index("""
        import torch.nn.functional as F
        from torch.optim import AdamW as Opt

        class FocalLoss:
            pass

        def train():
            criterion = FocalLoss()
            F.softmax(x)
            Opt(params)
            range(3)
            criterion(x)
    """)
    assert ix.qualified(call_named(tree, "softmax").func) == {"torch.nn.functional.softmax"}
    assert ix.qualified(call_named(tree, "Opt").func) == {"torch.optim.AdamW"}
    assert ix.qualified(call_named(tree, "FocalLoss").func) == {"FocalLoss"}
    assert ix.qualified(call_named(tree, "range").func) == {"builtins.range"}
    assert ix.qualified(call_named(tree, "criterion").func) == {"train.<locals>.criterion"}


def test_torch_from_a_star_import_only_when_nothing_binds_it():
    code = """
        from helpers import *
        torch.no_grad()
    """
    ix, tree = index(code, star_imports=True)
    assert ix.qualified(call_named(tree, "no_grad").func) == {"torch.no_grad"}
    ix, tree = index(code, star_imports=False)
    assert ix.qualified(call_named(tree, "no_grad").func) == set()


def test_origins_follow_names_attributes_unpacking_and_callers():
    ix, tree = index("""
        import torch

        def fit(opt):
            opt.step()

        class Trainer:
            def __init__(self, model):
                self.opt = torch.optim.SGD(model.parameters(), lr=0.1)

            def run(self):
                self.opt.step()

        model, sgd = build(), torch.optim.Adam(params)
        fit(sgd)
    """)
    steps = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "step"]
    by_line = {s.lineno: s for s in steps}
    param_origins = ix.origins(by_line[4].func.value)
    assert [o.param.arg for o in param_origins if o.param is not None] == ["opt"]
    assert [ast.unparse(o.expr.func) for o in param_origins if o.expr is not None] == ["torch.optim.Adam"]
    [attr] = ix.origins(by_line[11].func.value)
    assert ast.unparse(attr.expr.func) == "torch.optim.SGD"


def test_grad_mode_from_with_blocks_and_decorators():
    ix, tree = index("""
        import torch

        @torch.no_grad()
        def evaluate():
            a()

        def train(flag):
            with torch.set_grad_enabled(flag):
                b()
            with torch.enable_grad():
                c()
            with smart_inference_mode():
                d()
            e()
    """)
    modes = {name: ix.grad_mode(call_named(tree, name)) for name in "abcde"}
    assert modes == {"a": GradMode.DISABLED, "b": GradMode.MAYBE_DISABLED, "c": GradMode.ENABLED,
                     "d": GradMode.DISABLED, "e": GradMode.INHERITED}


def test_source_counts_characters_and_joins_lines():
    ix, tree = index("""
        x = "é"; loss = crit(out,
                             y)
    """)
    assert ix.source(call_named(tree, "crit")) == "crit(out, y)"
    made = ast.List(elts=[], ctx=ast.Load())  # built by a rule, never parsed
    assert ix.source(made) == "[]"
