"""Prefilters of the validation-pass rules (ML002, ML003, ML007): the literal-led sign
patterns match what the old ``\\b``-led ones matched, and the ast gate admits every file
where a rule reports, including adversarial shapes."""

from __future__ import annotations

import re
import textwrap

import pytest
from mllint.rules.ml002_eval_mode_missing import EvalModeMissing
from mllint.rules.ml003_no_grad_missing import NoGradMissing
from mllint.rules.ml007_validation_on_train_data import ValidationOnTrainData

from mllint.analysis.validation import names as N
from mllint.engine import lint_text
from mllint.prefilter import admitted

RULES = {"ML002": EvalModeMissing, "ML003": NoGradMissing, "ML007": ValidationOnTrainData}

# The analysis' line patterns as they were written before (``\b``-led): the literal-led
# rewrites must answer the same on every line, from every column.
_OLD = {
    "FOR_VAL": rf"\bfor\s+[\w\s,()\[\]*]+?\s+in\b[^\n]*?{N.VAL_WORD}",
    "WHILE_VAL": rf"\bwhile\b[^\n]*?{N.VAL_WORD}",
    "DEF_VAL": rf"\bdef\s+{N.EVAL_FUNCTION}\s*\(",
    "ARG_VAL": rf"\([ \t]*\**[\w.]*?{N.VAL_WORD}[\w.]*[ \t]*[,)]",
    "FOR_DATA": r"\bfor\s+[\w\s,()\[\]*.]+?\s+in\b[^\n]*?(?i:loader|_dl\b|batches)",
    "WITH_NO_GRAD": rf"\bwith\b[^\n]*?(?:{N.NO_GRAD_WORD})",
}
_OLD_CALL_VAL = rf"(?<![\w]){N.EVAL_FUNCTION}{N.CALL_LAYOUT}\((?!\s*\))"

LINES = [
    "for x, y in val_loader:", "    for x,y in tqdm(test_loader):", "before_for x in val_loader",
    "xfor x in val_loader", "preds = [model(x)for x in val_loader]", "for\tx in loaders['val']:",
    "async for batch in valid_dl:", "for i in range(10):  # test", "while step < len(val_loader):",
    "nowhile x < val_ds", "def evaluate(model, loader):", "def run_validation (", "undef test(x):",
    "def test_vit(", "out = model(X_test)", "out = model( *x_val, )", "f(train_x)", "f(a, X_val)",
    "with torch.no_grad():", "with torch.inference_mode(), autocast():", "withhold no_grad",
    "  with torch.set_grad_enabled(False):", "for batch in train_dataloader:", "for b in my_dl :",
    "forx in loader", "for é in val_loader:", "é_for x in val_loader", "σfor x in val_loader",
]


@pytest.mark.parametrize("name", sorted(_OLD))
def test_line_patterns_are_unchanged(name):
    old, new = re.compile(_OLD[name]), getattr(N, f"{name}_RE", None) or re.compile(getattr(N, name))
    for line in LINES:
        for col in range(len(line) + 1):
            assert (old.search(line, col) is None) == (new.search(line, col) is None), (line, col)


@pytest.mark.parametrize(
    "text",
    ["evaluate(model, x)", "_evaluate(m, x)", "__run_eval(m, x)", "do_validation_epoch(m, l)",
     "EVALuate(m, x)", "Test(m)", "TESTING_all(m)", "self.val_step(b)", "x=test (m)",
     "compute_val_loss(m, l)", "perform_Test_batch(m)", "\nvalidate(\n  m)", "evaluate (m)",
     "(r.evaluate\n  (m))", "(r\n .evaluate  # on the test split\n (m))", "evaluate \\\n (m)"],
)
def test_call_val_admits_what_the_old_pattern_did(text):
    old = re.search(_OLD_CALL_VAL, text) is not None
    new = re.search(N.CALL_VAL, text) is not None
    assert new or not old
    assert new == old  # and, on these, no more


@pytest.mark.parametrize(
    "text", ["evaluate()", "retest(m)", "xval(m)", "my_eval(m)", "evaluate x(m)", "testx(m)",
             "evaluate  # no call\n"]
)
def test_call_val_rejects(text):
    assert re.search(N.CALL_VAL, text) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("with torch.no_grad():\n    pass\nfor x in loader:\n    pass\n", True),
        ("for x in loader:\n    pass\nwith torch.no_grad():\n    pass\n", True),
        # overlapping: the loop is inside the with statement's own line
        ("with ctx([m(b) for b in loader]), torch.no_grad():\n    pass\n", True),
        ("with torch.no_grad():\n    m(x)\n", False),
        ("for x in loader:\n    m(x)\n", False),
    ],
)
def test_no_grad_sign_is_order_free(text, expected):
    assert (re.search(N.NO_GRAD_SIGN, text) is not None) is expected
    old = r"(?s:\A(?=.*?" + _OLD["WITH_NO_GRAD"] + r")(?=.*?" + _OLD["FOR_DATA"] + r"))"
    assert (re.search(old, text) is not None) is expected


# -- adversarial shapes: the rule reports, and both prefilter stages admit ---------------

CASES = [
    ("ML003", """
        import torch
        from torch import nn

        model = nn.Linear(4, 2)
        preds = [model(x)for x in val_loader]
        """, (5,)),
    ("ML002", """
        import torch
        from torch import nn

        model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        with torch.no_grad(): preds = [model(x) for x in loader]
        """, (5,)),
    ("ML002", """
        import torch
        from torch import nn
        from torch import no_grad as ng

        model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        with ng():  # no_grad
            for x in loader:
                out = model(x)
        """, (8,)),
    ("ML003", """
        import torch
        from torch import nn

        class Runner:
            def __init__(self):
                self.clf = nn.Linear(4, 2)

            def fit(self, loader):
                for x, y in loader:
                    self.clf(x).sum().backward()

            def validate(self, loader):
                self.clf.eval()
                return [self.clf(x) for x, _ in loader]
        """, (14,)),
    ("ML003", """
        import torch

        net = build()
        for x, y in loaders["val"]:
            out = net(x)
        """, (5,)),
    ("ML007", """
        import torch
        from torch.utils.data import DataLoader
        from helpers import Evaluate_Model

        train_loader = DataLoader(train_ds, batch_size=8)
        for x, y in train_loader:
            loss = net(x).sum()
            loss.backward()
            opt.step()
        Evaluate_Model(net, train_loader)
        """, (10,)),
    # The callee split over lines before its ``(`` (this once crashed the analysis).
    ("ML007", """
        def main(model, train_loader, opt, runner):
            for x, y in train_loader:
                model(x).sum().backward()
                opt.step()
            acc = (runner.tools
                   .evaluate  # on the training data
                   (model, train_loader))
        """, (5,)),
]


@pytest.mark.parametrize("code, source, lines", CASES)
def test_prefilter_admits_adversarial_shapes(code, source, lines):
    text = textwrap.dedent(source).lstrip("\n")
    rule = RULES[code]
    found = lint_text("case.py", text, [rule], prefilter=False).findings
    assert tuple(f.line for f in found if f.code == code) == lines
    assert admitted([rule], text) == [rule]


def test_library_shapes_are_not_flagged():
    # A model-named call in a plain function, a val-named argument to an imported
    # function, a loop over training data: no sign of a validation pass.
    text = textwrap.dedent("""
        import unittest
        from lib import check

        class T(unittest.TestCase):
            def helper(self, test_case):
                check(test_case)

        def forward(model, x):
            return model(x)

        for x, y in train_loader:
            model(x)
        """)
    for code in ("ML002", "ML003", "ML007"):
        assert lint_text("case.py", text, [RULES[code]], prefilter=False).findings == ()


def test_framework_hooks_and_training_loops_are_not_flagged():
    text = textwrap.dedent("""
        class M(L.LightningModule):
            def validation_step(self, batch, idx):
                return model(batch)

        for x, y in val_loader:
            model(x).sum().backward()
        """)
    for code in ("ML002", "ML003", "ML007"):
        assert lint_text("case.py", text, [RULES[code]], prefilter=False).findings == ()


def test_deep_nesting_is_analysed():
    # Generated code nests deeper than Python recurses: the walk is iterative.
    text = "x = " + " + ".join(["a"] * 2000) + "\nfor b in val_loader:\n    model(b)\n"
    result = lint_text("case.py", text, [RULES["ML003"]], prefilter=False)
    assert result.errors == ()
    assert [(f.code, f.line) for f in result.findings] == [("ML003", 3)]
