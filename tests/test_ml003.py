"""ML003 no-grad-missing: where autograd is switched off, and what re-enables it."""

from __future__ import annotations

import textwrap

import pytest
from helpers import FIXTURES
from mllint.rules.ml003_no_grad_missing import NoGradMissing

from mllint.engine import lint_path, lint_text

RULE = [NoGradMissing]


def lines(code: str) -> list[int]:
    result = lint_text("train.py", textwrap.dedent(code).lstrip("\n"), RULE)
    assert result.errors == ()
    assert all(f.code == "ML003" for f in result.findings)
    return [f.line for f in result.findings]


def test_fixture_twins():
    bad = lint_path(str(FIXTURES / "ml003" / "bad_validation_with_autograd.py"), RULE)
    good = lint_path(str(FIXTURES / "ml003" / "good_validation_under_no_grad.py"), RULE)
    assert [(f.code, f.line) for f in bad.findings] == [("ML003", 22)]
    assert bad.findings[0].data == {
        "model": "model", "loop_line": 21, "forward_line": 22,
        "evidence": ["EVAL_MODE", "FUNCTION_NAME"],
    }
    assert good.findings == ()


LOOP = """
import torch
from torch import nn
{imports}
model = nn.Linear(4, 2)
model.eval()
{before}
{context}
    for x, y in val_loader:
        print(model(x).argmax(1))
"""


@pytest.mark.parametrize(
    "imports,before,context,expected",
    [
        ("", "", "if True:", [9]),
        ("", "", "with torch.no_grad():", []),
        ("", "", "with torch.inference_mode():", []),
        ("from torch import no_grad as ng", "", "with ng():", []),
        ("import torch.autograd as ag", "", "with ag.no_grad():", []),
        ("", "torch.set_grad_enabled(False)", "if True:", []),
        ("", "", "with torch.set_grad_enabled(False):", []),
        ("", "", "with torch.no_grad(), torch.enable_grad():", [9]),
        ("", "model.requires_grad_(False)", "if True:", []),
        ("", "", "with torch.autocast('cpu'):", [9]),
    ],
)
def test_autograd_contexts(imports, before, context, expected):
    code = LOOP.format(imports=imports, before=before, context=context)
    assert lines(code) == expected


def test_enable_grad_inside_no_grad_turns_autograd_back_on():
    code = """
    import torch

    @torch.no_grad()
    def evaluate(model, val_loader):
        model.eval()
        with torch.enable_grad():
            for x, y in val_loader:
                print(model(x).sum().item())
    """
    assert lines(code) == [8]


def test_callers_decide_for_a_helper():
    code = """
    import torch

    def validate(net, loader):
        net.eval()
        for x, y in loader:
            print((net(x).argmax(1) == y).sum().item())

    def main(net, val_loader, test_loader):
        with torch.no_grad():
            validate(net, val_loader)
        validate(net, test_loader)
    """
    assert lines(code) == [6]
    assert lines(code.replace("    validate(net, test_loader)", "    pass")) == []


@pytest.mark.parametrize("decorator", ["@torch.no_grad()", "@torch.no_grad", "@torch.inference_mode()"])
def test_decorated_caller(decorator):
    code = f"""
    import torch

    def validate(net, loader):
        net.eval()
        for x, y in loader:
            print((net(x).argmax(1) == y).sum().item())

    {decorator}
    def main(net, val_loader):
        validate(net, val_loader)
    """
    assert lines(code) == []


def test_lightning_and_training_loops_are_not_passes():
    code = """
    import lightning.pytorch as pl
    import torch

    class Lit(pl.LightningModule):
        def validation_step(self, batch, batch_idx):
            for x in batch:
                self.log("v", self.model(x).mean())

    def train(model, train_loader, opt):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            out = model(x)
            acc = (out.argmax(1) == y).float().mean()
            torch.nn.functional.cross_entropy(out, y).backward()
            opt.step()
    """
    assert lines(code) == []


def test_prefilter():
    assert NoGradMissing.may_match("for x in test_loader:\n    net(x)\n")
    assert not NoGradMissing.may_match("with torch.no_grad():\n    for x in loader:\n        net(x)\n")


def test_adversarial_evaluation_needs_autograd():
    code = """
    import torch

    def robustness(model, test_loader, adversary):
        model.eval()
        for x, y in test_loader:
            clean = model(x).argmax(1)
            adv = model(adversary.perturb(x, y)).argmax(1)
            print((clean == y).sum().item(), (adv == y).sum().item())

    robustness(net, test_loader, attacker)
    """
    assert lines(code) == []
    assert lines(code.replace("adversary.perturb(x, y)", "x.flip(0)")) == [6]


SHARED = """
import torch
from torch import nn

def run_epoch(model, loader, optimizer, train):
    model.train(train)
    for x, y in loader:
        with {ctx}:
            loss = nn.functional.cross_entropy(model(x), y)
        if train:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

def main(model, train_loader, val_loader, optimizer):
    for epoch in range(3):
        run_epoch(model, train_loader, optimizer, train=True)
        {val}
"""


@pytest.mark.parametrize(
    "ctx,val,expected",
    [
        ("torch.autocast('cpu')", "run_epoch(model, val_loader, optimizer, train=False)", [8]),
        ("torch.set_grad_enabled(train)", "run_epoch(model, val_loader, optimizer, train=False)", []),
        ("torch.set_grad_enabled(not train)", "run_epoch(model, val_loader, optimizer, False)", [8]),
        ("torch.autocast('cpu')",
         "with torch.no_grad(): run_epoch(model, val_loader, optimizer, train=False)", []),
        ("torch.autocast('cpu')", "run_epoch(model, val_loader, optimizer, train=True)", []),
    ],
)
def test_shared_loop_autograd_on_its_evaluation_path(ctx, val, expected):
    assert lines(SHARED.format(ctx=ctx, val=val)) == expected


def test_a_model_handed_in_on_an_argument_namespace():
    code = """
    import torch

    class Trainer:
        def __init__(self, args):
            self.model = args.model.to(args.device)
            self.loader = args.loader

        def evaluate(self, epoch):
            it = self.loader.__iter__()
            for step in range(len(self.loader)):
                print(epoch, self.model(next(it)).mean().item())

        def train_epoch(self, optimizer):
            for x in self.loader:
                optimizer.zero_grad()
                self.model(x).sum().backward()
                optimizer.step()
    """
    assert lines(code) == [11]
    # Moved to a device but not named like a model: nothing says what it is.
    assert lines(code.replace("args.model.to", "args.thing.to")
                 .replace("self.model", "self.thing")) == []


def test_a_none_placeholder_does_not_hide_the_model_assigned_later():
    # ``self.unet = None`` in ``__init__``, the network built afterwards (inline or by a
    # ``build_model()`` the constructor calls): the placeholder says nothing about the role.
    code = """
    import torch
    from torch import nn

    class Solver:
        def __init__(self, train_loader, valid_loader, kind):
            self.train_loader, self.valid_loader = train_loader, valid_loader
            self.unet = None
            self.build_model(kind)

        def build_model(self, kind):
            if kind == "plain":
                self.unet = nn.Sequential(nn.Conv2d(3, 1, 3), nn.BatchNorm2d(1))
            else:
                self.unet = nn.Sequential(nn.Conv2d(3, 1, 5), nn.BatchNorm2d(1))
            self.optimizer = torch.optim.Adam(self.unet.parameters(), 1e-3)

        def train(self):
            for epoch in range(10):
                self.unet.train(True)
                for images, gt in self.train_loader:
                    loss = nn.functional.binary_cross_entropy_with_logits(self.unet(images), gt)
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                self.unet.eval()
                for images, gt in self.valid_loader:
                    score = torch.sigmoid(self.unet(images)).mean()
    """
    assert lines(code) == [27]


def test_a_model_class_of_another_module_is_a_model_whatever_its_name(tmp_path):
    # ``self.G`` says nothing by its name; ``G = model34()`` of ``model/nets.py`` is an
    # ``nn.Module`` subclass there, so its forwards over the validation loader are passes.
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("")
    (tmp_path / "model" / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        class Base(nn.Module):
            pass

        class model34(Base):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(3, 1, 3), nn.BatchNorm2d(1))

        def make_mask(x):
            return x > 0
    """))
    solver = textwrap.dedent("""
        import torch
        from model.nets import model34, make_mask

        class Solver:
            def __init__(self):
                self.G = {built}
                self.opt = torch.optim.SGD(self.G.parameters(), lr=0.1, momentum=0.9)

            def fit(self, train_loader, val_loader):
                for epoch in range(10):
                    self.G.train()
                    for x, y in train_loader:
                        self.opt.zero_grad()
                        torch.nn.functional.mse_loss(self.G(x), y).backward()
                        self.opt.step()
                    self.G.eval()
                    for x, y in val_loader:
                        score = (self.G(x) - y).abs().mean()
    """).lstrip("\n")
    path = tmp_path / "solver.py"
    path.write_text(solver.format(built="model34()"))
    result = lint_path(str(path), RULE)
    assert [(f.code, f.line) for f in result.findings] == [("ML003", 18)]
    path.write_text(solver.format(built="make_mask"))  # a function of the project: no model
    assert lint_path(str(path), RULE).findings == ()


FROZEN = """
import torch

crnn = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Dropout(0.1))
optimizer = torch.optim.Adam(crnn.parameters())

def val(net, loader):
    for p in crnn.parameters():
        p.requires_grad = {state}
    net.eval()
    for x, y in loader:
        score = (crnn(x).argmax(1) == y).float().mean()

for epoch in range(10):
    for p in crnn.parameters():
        p.requires_grad = True
    crnn.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(crnn(x), y).backward()
        optimizer.step()
    val(crnn, val_loader)
"""


def test_a_pass_over_frozen_parameters_records_no_graph():
    # crnn.pytorch: every parameter's requires_grad is switched off before validating.
    assert lines(FROZEN.format(state="False")) == []
    assert lines(FROZEN.format(state="True")) == [11]


def test_a_frozen_backbone_leaves_the_graph_of_the_head():
    # Transfer learning: only ``vgg16.features`` (or the parameters a test selects) are
    # frozen; the new classifier still records its graph in the test loop.
    part = FROZEN.replace("for p in crnn.parameters():\n        p.requires_grad = {state}",
                          "for p in crnn.features.parameters():\n        p.requires_grad = False")
    assert lines(part) == [11]
    some = FROZEN.replace("for p in crnn.parameters():\n        p.requires_grad = {state}",
                          "for n, p in crnn.named_parameters():\n"
                          "        if not n.startswith('1'):\n"
                          "            p.requires_grad = False")
    assert lines(some) == [12]


def test_a_model_method_that_evaluates_itself_is_left_alone():
    """The ML002 example of a model whose ``generate`` switches to eval mode and turns
    autograd off itself: ML003 flags only the ``sample`` loop (line 49), whose method
    does neither."""
    from mllint.rules.ml002_eval_mode_missing import EvalModeMissing

    [example] = [e for e in EvalModeMissing.INVALID if "def generate(self, mels)" in e.code]
    found = lint_text("t.py", example.code, [NoGradMissing]).findings
    assert [(f.code, f.line) for f in found] == [("ML003", 49)]
