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


# -- every step cleared -------------------------------------------------------------------
# Modules that build an optimizer and step it, where each step clears the same optimizer in
# the same loop before its backward: no ML001 finding is possible, and the gate says so.
CLEARED = {
    "the usual step": """
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            opt.zero_grad()
            loss = model(x).sum()
            loss.backward()
            opt.step()
        """,
    "a scheduler and a scaler": """
        import torch
        opt = torch.optim.AdamW(model.parameters())
        sched = torch.optim.lr_scheduler.StepLR(opt, 10)
        scaler = torch.cuda.amp.GradScaler()
        for epoch in range(3):
            for x in loader:
                opt.zero_grad(set_to_none=True)
                scaler.scale(model(x).sum()).backward()
                scaler.step(opt)
                scaler.update()
            sched.step()
        """,
    "a trainer method clearing after the step": """
        import torch
        class Trainer:
            def __init__(self, model):
                self.optimizer = torch.optim.Adam(model.parameters())
            def fit(self, loader):
                for x in loader:
                    self.model(x).sum().backward()
                    self.optimizer.step()
                    self.optimizer.zero_grad()
        """,
}

# Each of ML001's ways of reporting, with a `zero_grad()` of the stepped optimizer in the
# module all the same: the gate must keep every one (the line is the rule's finding).
STILL_FLAGGED = {
    "cleared once, before the loop": ("""
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        opt.zero_grad()
        for x in loader:
            model(x).sum().backward()
            opt.step()
        """, 6),
    "cleared between backward and step": ("""
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in loader:
            model(x).sum().backward()
            opt.zero_grad()
            opt.step()
        """, 6),
    "cleared between backward and step, out of a with block": ("""
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in loader:
            model(x).sum().backward()
            opt.zero_grad()
            with torch.no_grad():
                opt.step()
        """, 7),
    "cleared on every micro-batch": ("""
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i, x in enumerate(loader):
            opt.zero_grad()
            model(x).sum().backward()
            if (i + 1) % 4 == 0:
                opt.step()
        """, 7),
    "a closure clearing after its backward": ("""
        import torch
        opt = torch.optim.LBFGS(model.parameters())
        for x in loader:
            opt.zero_grad()
            def closure():
                loss = model(x).sum()
                loss.backward()
                opt.zero_grad()
                return loss
            opt.step(closure)
        """, 10),
    "a closure given by keyword": ("""
        import torch
        opt = torch.optim.LBFGS(model.parameters())
        for x in loader:
            opt.zero_grad()
            def closure():
                loss = model(x).sum()
                loss.backward()
                opt.zero_grad()
                return loss
            opt.step(closure=closure)
        """, 10),
    "the other optimizer cleared (a GAN)": ("""
        import torch
        opt_g = torch.optim.Adam(gen.parameters())
        opt_d = torch.optim.Adam(disc.parameters())
        for x in loader:
            opt_d.zero_grad()
            disc(x).mean().backward()
            opt_d.step()
            gen(x).mean().backward()
            opt_g.step()
        """, 9),
    "cleared in another function": ("""
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        def reset():
            opt.zero_grad()
        reset_later = reset
        for x in loader:
            model(x).sum().backward()
            opt.step()
        """, 8),
    "a scheduler-named optimizer": ("""
        import torch
        sched = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in loader:
            model(x).sum().backward()
            sched.step()
        """, 5),
}


@pytest.mark.parametrize("name", sorted(CLEARED))
def test_gate_turns_away_modules_whose_steps_all_clear(name):
    code = textwrap.dedent(CLEARED[name]).strip() + "\n"
    assert _flags(code) == []
    assert not gate.may_flag(ast.parse(code))


@pytest.mark.parametrize("name", sorted(STILL_FLAGGED))
def test_gate_keeps_every_way_ml001_reports_despite_a_clear(name):
    code, line = STILL_FLAGGED[name]
    code = textwrap.dedent(code).strip() + "\n"
    assert _flags(code) == [line]
    assert gate.may_flag(ast.parse(code))
