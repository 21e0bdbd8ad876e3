"""Near misses of the validation-pass rules (ML002, ML003, ML007): each case is a module
the rule must not flag, beside the smallest change that makes it report (on the line
given). The modules come from the conditions a validation pass needs: a callee that may
be a model, a sign of evaluation, the data a loop iterates."""

from __future__ import annotations

import textwrap

import pytest
from mllint.rules.ml002_eval_mode_missing import EvalModeMissing
from mllint.rules.ml003_no_grad_missing import NoGradMissing
from mllint.rules.ml007_validation_on_train_data import ValidationOnTrainData

from mllint.engine import lint_text
from mllint.prefilter import admitted

RULES = {"ML002": EvalModeMissing, "ML003": NoGradMissing, "ML007": ValidationOnTrainData}

# (rule, module the rule must not flag, its twin the rule flags, the twin's finding line)
CASES = {
    # A name is judged by an assignment only where ``origins`` finds one: here or in a
    # scope around, not in a sibling function.
    "assigned-in-another-function": ("ML003", """
        import torch
        from torch import nn

        def build():
            clf = nn.Linear(4, 2)
            return clf

        def check(val_loader):
            for x, y in val_loader:
                clf(x)

        check(val_loader)
        """, """
        import torch
        from torch import nn

        def check(val_loader):
            clf = nn.Linear(4, 2)

            def run():
                for x, y in val_loader:
                    clf(x)
            run()

        check(val_loader)
        """, 9),
    # A parameter is a model only by its name or by what the module's calls pass.
    "parameter-of-an-uncalled-function": ("ML003", """
        import torch

        def check(clf, val_loader):
            for x, y in val_loader:
                clf(x)
        """, """
        import torch
        from torch import nn

        def check(clf, val_loader):
            for x, y in val_loader:
                clf(x)

        clf = nn.Linear(4, 2)
        check(clf, val_loader)
        """, 6),
    # ``model.predict(x)`` runs a model only on an instance built here of the class that
    # defines ``predict``.
    "method-of-a-class-never-built": ("ML003", """
        import torch
        from torch import nn

        class Net(nn.Module):
            def predict(self, x):
                return self(x)

        def check(model, val_loader):
            for x, y in val_loader:
                model.predict(x)
        """, """
        import torch
        from torch import nn

        class Net(nn.Module):
            def predict(self, x):
                return self(x)

        model = Net()
        for x, y in val_loader:
            model.predict(x)
        """, 10),
    # A loop switched by a flag has an evaluation path only if the switch guards
    # training.
    "flag-that-guards-no-training": ("ML002", """
        import torch

        def run_epoch(clf, loader, train):
            for x, y in loader:
                out = clf(x)
                if train:
                    print(out)

        net = torch.nn.Linear(4, 2)
        run_epoch(net, loader, False)
        """, """
        import torch

        def run_epoch(clf, loader, train):
            for x, y in loader:
                out = clf(x)
                if train:
                    out.sum().backward()
                    opt.step()

        net = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
        run_epoch(net, train_loader, True)
        run_epoch(net, test_loader, False)
        """, 5),
    # ... and a parameter handed on makes a switch only when handed to a function of
    # the module (a switched batch function), not to ``getattr``.
    "parameter-handed-to-an-outside-function": ("ML002", """
        import torch

        def call(hook, name, loader):
            for batch in loader:
                method = getattr(hook, name)
                method(batch)

        model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
        model(x).sum().backward()
        call(hook, "on_batch", loader)
        """, """
        import torch

        def run_batch(model, optimizer, x, y, train):
            loss = model(x).sum()
            if train:
                loss.backward()
                optimizer.step()

        def run_epoch(model, optimizer, loader, train):
            for x, y in loader:
                run_batch(model, optimizer, x, y, train)

        model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
        run_epoch(model, opt, train_loader, True)
        run_epoch(model, opt, test_loader, False)
        """, 4),
    # The mode (or autograd) switched off is a sign only around a loop over batches, as
    # the loop's line shows (``for x, y in loader:``).
    "eval-mode-around-a-loop-over-no-batches": ("ML003", """
        import torch
        from torch import nn

        clf = nn.Linear(4, 2)
        clf.eval()
        for i in range(10):
            clf(x)
        """, """
        import torch
        from torch import nn

        clf = nn.Linear(4, 2)
        clf.eval()
        for x, y in loader:
            clf(x)
        """, 7),
    # ML007's no_grad loop under a held-out guard need not be over batches, but it must
    # iterate what a training loop iterates: something in the module must train.
    "guarded-no-grad-loop-where-nothing-trains": ("ML007", """
        import torch

        def fit(net, data, val_data=None):
            if val_data is not None:
                with torch.no_grad():
                    for x, y in data:
                        net(x, y)
        """, """
        import torch

        def fit(net, optimizer, data, val_data=None):
            for x, y in data:
                optimizer.zero_grad()
                net(x, y).backward()
                optimizer.step()
            if val_data is not None:
                with torch.no_grad():
                    for x, y in data:
                        net(x, y)
        """, 10),
    # A forward in a helper belongs to the loop that calls it only if the helper
    # returns its output.
    "helper-that-returns-no-output": ("ML003", """
        import torch
        from torch import nn

        def apply(fn, x):
            fn(x)

        clf = nn.Linear(4, 2)
        for x, y in val_loader:
            apply(clf, x)
        """, """
        import torch
        from torch import nn

        def apply(fn, x):
            return fn(x)

        clf = nn.Linear(4, 2)
        for x, y in val_loader:
            apply(clf, x)
        """, 5),
    # String constants in the iterated expression count only if they may name held-out
    # data.
    "loop-over-plain-strings": ("ML003", """
        import torch
        from torch import nn

        clf = nn.Linear(4, 2)
        for name in ("alpha", "beta"):
            clf(name)
        """, """
        import torch
        from torch import nn

        clf = nn.Linear(4, 2)
        for name in ("val", "test"):
            clf(name)
        """, 6),
    # An evaluation helper defined elsewhere is reported only on data that may be
    # training data: by its name, an assignment, or a training loop in the module.
    "external-evaluation-of-unknown-data": ("ML007", """
        from lib import evaluate

        def main(cfg, net):
            evaluate(net, cfg)
        """, """
        from lib import evaluate

        def main(net, train_loader):
            evaluate(net, train_loader)
        """, 4),
    # ... and only when it is defined elsewhere: ``self.evaluate`` of the class itself is
    # looked into instead.
    "evaluation-method-of-the-class": ("ML007", """
        class Trainer:
            def evaluate(self, loader):
                return len(loader)

            def fit(self, net, train_loader, opt):
                for x, y in train_loader:
                    net(x).sum().backward()
                    opt.step()
                self.evaluate(train_loader)
        """, """
        class Trainer:
            def fit(self, net, train_loader, opt):
                for x, y in train_loader:
                    net(x).sum().backward()
                    opt.step()
                self.evaluate(train_loader)
        """, 6),
}


def _text(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_near_miss_is_not_flagged(case):
    code, rejected, _, _ = CASES[case]
    text = _text(rejected)
    assert lint_text("case.py", text, [RULES[code]], prefilter=False).findings == ()
    assert lint_text("case.py", text, [RULES[code]]).findings == ()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_twin_is_flagged_on_its_line(case):
    code, _, twin, line = CASES[case]
    text = _text(twin)
    found = lint_text("case.py", text, [RULES[code]], prefilter=False).findings
    assert [(f.code, f.line) for f in found] == [(code, line)]
    assert admitted([RULES[code]], text) == [RULES[code]]
