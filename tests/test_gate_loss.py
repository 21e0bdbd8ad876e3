"""The ast gate of ML004 (``mllint.gates.loss``): sound and useful."""

from __future__ import annotations

import ast
import textwrap

import pytest
from mllint.rules.ml004_loss_tensor_accumulated import LossTensorAccumulated as RULE

from mllint.analysis import loss as analysis_loss
from mllint.engine import lint_text
from mllint.gates import loss as gate


def _flags(code: str) -> list[int]:
    return [f.line for f in lint_text("t.py", code, [RULE], prefilter=False).findings]


def test_gate_follows_every_function_the_oracle_follows():
    lasts = {n.rsplit(".", 1)[-1] for n in analysis_loss.GRAPH_KEEPING_FUNCTIONS}
    assert lasts <= gate.KEEPING_FUNCTION_LASTS


FLAGGED = [
    # A loss module handed to a parameter whose name says nothing.
    ("""
     import torch
     def fit(model, loader, opt, fn):
         total = 0
         for x, y in loader:
             opt.zero_grad()
             l = fn(model(x), y)
             l.backward()
             opt.step()
             total += l
         return total
     def main(model, loader, opt):
         return fit(model, loader, opt, torch.nn.MSELoss())
     """, [9]),
    # A same-module function returning an F loss, its result appended in a train loop.
    ("""
     import torch.nn.functional as F
     def objective(out, y):
         return F.smooth_l1_loss(out, y)
     def train(net, batches, optim):
         history = []
         for x, y in batches:
             optim.zero_grad()
             value = objective(net(x), y)
             value.backward()
             optim.step()
             history.append(value)
     """, [11]),
    # ``outputs.loss`` of a model call, summed with ``t = t + x``.
    ("""
     def train(model, loader, optimizer):
         running = 0.0
         for batch in loader:
             outputs = model(**batch)
             outputs.loss.backward()
             optimizer.step()
             optimizer.zero_grad()
             running = running + outputs.loss
     """, [8]),
    # A well-known meter from elsewhere, the only accumulation in the file.
    ("""
     from utils import AverageMeter
     def train(model, loader, optimizer, criterion):
         meter = AverageMeter()
         for x, y in loader:
             loss = criterion(model(x), y)
             loss.backward()
             optimizer.step()
             meter.update(loss)
     """, [8]),
    # A same-module meter whose method has any name, given the loss by keyword.
    ("""
     class History:
         def __init__(self):
             self.seen = []
         def record(self, step, value=None):
             self.seen.append((step, value))
     def train(model, loader, optimizer, criterion, history):
         for i, (x, y) in enumerate(loader):
             loss = criterion(model(x), y)
             loss.backward()
             optimizer.step()
             history.record(i, value=loss)
     def main(model, loader, optimizer, criterion):
         train(model, loader, optimizer, criterion, History())
     """, [11]),
    # ``t = a * t + x``: the target in a term, as the rule finds it.
    ("""
     import torch
     def fit(model, loader, opt, criterion):
         ema = 0
         for x, y in loader:
             loss = criterion(model(x), y)
             loss.backward()
             opt.step()
             ema = 0.9 * ema + loss
         return ema
     """, [8]),
    # A sum under ``no_grad`` that ``enable_grad`` turns back on.
    ("""
     import torch
     def probe(model, loader, criterion):
         total = 0
         with torch.no_grad():
             for x, y in loader:
                 with torch.enable_grad():
                     loss = criterion(model(x), y)
                     total += loss
         return total
     if __name__ == "__main__":
         probe(model, loader, torch.nn.MSELoss())
     """, [8]),
]


@pytest.mark.parametrize("code, lines", FLAGGED)
def test_gate_admits_what_ml004_flags(code, lines):
    code = textwrap.dedent(code).strip() + "\n"
    assert _flags(code) == lines
    assert RULE.may_match(code)
    assert gate.accumulation_may_flag(ast.parse(code))


REJECTED = [
    # A transformer encoder: tuples of hidden states accumulated, a loss computed once.
    """
    import torch.nn as nn
    class Encoder(nn.Module):
        def forward(self, hidden, labels=None):
            all_hidden = ()
            for layer in self.layers:
                all_hidden = all_hidden + (hidden,)
                hidden = layer(hidden)
            loss = None
            if labels is not None:
                loss_fct = nn.CrossEntropyLoss()
                loss = loss_fct(hidden.view(-1, 2), labels.view(-1))
            return loss, all_hidden
    """,
    # Item-ised losses only.
    """
    def train(model, loader, opt, criterion):
        seen = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            seen.append(loss.item())
    """,
    # Logged through a dict, a progress bar and a logger from elsewhere; a meter fed numbers.
    """
    from utils import AverageMeter, MetricLogger
    def train(model, loader, opt, criterion, bar):
        logs, logger, meter = {}, MetricLogger(), AverageMeter()
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            logs.update(loss=loss.item())
            bar.set_postfix(loss=loss.item())
            logger.update(loss=loss.item())
            meter.update(loss.item(), x.size(0))
    """,
    # Fresh sums of losses (each step's total), nothing added to itself.
    """
    import torch
    adversarial_loss = torch.nn.BCELoss()
    pixelwise_loss = torch.nn.L1Loss()
    def train(model, loader, opt):
        for x, y in loader:
            g_loss = 0.001 * adversarial_loss(model(x), y) + 0.999 * pixelwise_loss(model(x), y)
            g_loss.backward()
            opt.step()
    """,
    # Losses summed under no_grad: each sum is a new tensor without a graph.
    """
    import torch
    def evaluate(model, loader, criterion):
        total = 0
        with torch.no_grad():
            for x, y in loader:
                total += criterion(model(x), y)
                total = total + criterion(model(x), y)
        return total
    if __name__ == "__main__":
        evaluate(model, loader, torch.nn.MSELoss())
    """,
]


@pytest.mark.parametrize("code", REJECTED)
def test_gate_turns_away_what_ml004_cannot_flag(code):
    code = textwrap.dedent(code).strip() + "\n"
    assert _flags(code) == []
    assert not gate.accumulation_may_flag(ast.parse(code))


def test_project_losses_admit_unpacked_parts_of_another_modules_loss_function(tmp_path):
    """The rule reads ``a, b = helpers.compute(...)`` as losses when the project says so;
    the gate must admit the file then, also through an alias, and only with the project."""
    from mllint.project import project_for

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "helpers.py").write_text(
        "import torch.nn.functional as F\n"
        "def compute(out, y):\n"
        "    a = F.mse_loss(out, y)\n"
        "    return a, a.item()\n")
    script = tmp_path / "train.py"
    for call in ("helpers.compute", "run"):
        script.write_text(
            "import helpers\n"
            "run = helpers.compute\n"
            "total = 0\n"
            "for x, y in loader:\n"
            f"    part, number = {call}(model(x), y)\n"
            "    total += part\n")
        tree = ast.parse(script.read_text())
        assert gate.accumulation_may_flag(tree, project_for(script)), call
        assert not gate.accumulation_may_flag(tree), call  # nothing in the file says "loss"
