"""The ast gate of ML001 (``mllint.gates.grads``): sound and useful."""

from __future__ import annotations

import ast
import textwrap

import pytest

from mllint.engine import lint_text
from mllint.gates import grads as gate
from mllint.rules.ml001_missing_zero_grad import MissingZeroGrad as RULE


def _flags(code: str) -> list[int]:
    return [f.line for f in lint_text("t.py", code, [RULE], prefilter=False).findings]


LOOP = """
def fit(model, loader, {param}):
    for x in loader:
        model(x).sum().backward()
        {opt}.step()
"""

FLAGGED = [
    # Each way a receiver becomes an optimizer, with nothing else in the module.
    ("import torch\n" + LOOP.format(param="opt: torch.optim.Optimizer", opt="opt"), 6),
    ("from torch.optim import Optimizer as Base\n"
     + LOOP.format(param="opt: Base", opt="opt"), 6),
    (LOOP.format(param="opt_g", opt="opt_g") + "\ndef reset(opt_g):\n    opt_g.zero_grad()\n", 5),
    ("from torch.distributed.optim import ZeroRedundancyOptimizer as Z\n"
     "def run(model, loader):\n    o = Z(model.parameters(), optimizer_class=None)\n"
     "    for x in loader:\n        model(x).sum().backward()\n        o.step()\n", 6),
    ("import torch\nclass Lion(torch.optim.Optimizer):\n    pass\n"
     "def make(p):\n    return Lion(p)\n"
     "def run(model, loader):\n    o = make(model.parameters())\n"
     "    for x in loader:\n        model(x).sum().backward()\n        o.step()\n", 10),
]


@pytest.mark.parametrize("code, line", FLAGGED)
def test_gate_admits_what_ml001_flags(code, line):
    assert _flags(code) == [line]
    assert RULE.may_match(code)
    assert gate.may_flag(ast.parse(code))


REJECTED = [
    # A scheduler steps and a gradient check back-propagates: no optimizer anywhere.
    """
    import torch
    def check(f, x, sched):
        y = f(x)
        y.backward()
        sched.step()
    """,
    # A parameter named like an optimizer the module never clears by that name.
    """
    def run(model, loader, optimizer):
        for x in loader:
            model(x).sum().backward()
            optimizer.step()
    """,
]


@pytest.mark.parametrize("code", REJECTED)
def test_gate_turns_away_what_ml001_cannot_flag(code):
    code = textwrap.dedent(code).strip() + "\n"
    assert _flags(code) == []
    assert not gate.may_flag(ast.parse(code))


def test_project_evidence_admits_optimizers_from_other_modules(tmp_path):
    import ast

    from mllint.gates.grads import may_flag
    from mllint.project import project_for

    (tmp_path / "pyproject.toml").write_text("")
    engine = "def train(model, loader, optimizer):\n    for x in loader:\n" \
             "        model(x).sum().backward()\n        optimizer.step()\n"
    (tmp_path / "engine.py").write_text(engine)
    (tmp_path / "factory.py").write_text(
        "import torch\ndef make(model):\n    return torch.optim.Adam(model.parameters())\n")
    (tmp_path / "main.py").write_text(
        "import torch\nfrom engine import train\nfrom factory import make\n"
        "train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))\n")
    script = "from factory import make\nopt = make(model)\nloss.backward()\nopt.step()\n"
    (tmp_path / "script.py").write_text(script)
    tree = ast.parse(engine)
    # Alone, nothing says `optimizer` is one; main.py's call hands it an SGD.
    assert not may_flag(tree)
    assert may_flag(tree, project_for(tmp_path / "engine.py"))
    # A factory of another module returning an optimizer.
    assert not may_flag(ast.parse(script))
    assert may_flag(ast.parse(script), project_for(tmp_path / "script.py"))
