"""ML007 validation-on-train-data: loaders followed to datasets, helpers to callers."""

from __future__ import annotations

import textwrap

from helpers import FIXTURES
from mllint.rules.ml007_validation_on_train_data import ValidationOnTrainData

from mllint.engine import lint_path, lint_text

RULE = [ValidationOnTrainData]


def lines(code: str) -> list[int]:
    result = lint_text("train.py", textwrap.dedent(code).lstrip("\n"), RULE)
    assert result.errors == ()
    assert all(f.code == "ML007" for f in result.findings)
    return [f.line for f in result.findings]


TRAIN = """
import torch
from torch.utils.data import DataLoader

def fit(model, train_loader, opt):
    model.train()
    for x, y in train_loader:
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    return [(model(x).argmax(1) == y).float().mean().item() for x, y in loader]
"""


def test_fixture_twins():
    for name, expected in [("bad_val_loader_from_train_set.py", [17]),
                           ("bad_evaluate_on_train_loader.py", [31])]:
        result = lint_path(str(FIXTURES / "ml007" / name), RULE)
        assert [f.line for f in result.findings] == expected, name
    bad = lint_path(str(FIXTURES / "ml007" / "bad_val_loader_from_train_set.py"), RULE)
    assert bad.findings[0].data == {"loader": "val_loader", "train_loader": "train_set", "loop_line": 31}
    assert bad.findings[0].region is not None and bad.findings[0].region.start.line == 31
    for name in ("good_val_loader_from_val_set.py", "good_evaluate_on_val_loader.py"):
        assert lint_path(str(FIXTURES / "ml007" / name), RULE).findings == ()


def test_training_accuracy_alone_vs_in_addition():
    alone = TRAIN + """
def main(model, train_loader, opt):
    for epoch in range(3):
        fit(model, train_loader, opt)
        print(evaluate(model, train_loader))
"""
    assert lines(alone) == [19]
    both = alone.replace("print(evaluate(model, train_loader))",
                         "print(evaluate(model, train_loader), evaluate(model, val_loader))")
    assert lines(both.replace("def main(model, train_loader, opt)",
                              "def main(model, train_loader, val_loader, opt)")) == []


def test_validation_loader_built_from_the_training_dataset():
    code = TRAIN + """
train_ds = make_dataset("train")
val_ds = make_dataset("val")
train_loader = DataLoader(train_ds, shuffle=True)
val_loader = DataLoader(dataset=train_ds)
fit(model, train_loader, opt)
evaluate(model, val_loader)
"""
    assert lines(code) == [19]
    assert lines(code.replace("DataLoader(dataset=train_ds)", "DataLoader(dataset=val_ds)")) == []


def test_same_unnamed_dataset_used_for_both_loaders():
    code = TRAIN + """
ds = make_dataset()
loader = DataLoader(ds, shuffle=True)
valid_loader = DataLoader(ds, batch_size=128)
fit(model, loader, opt)
evaluate(model, valid_loader)
"""
    assert lines(code) == [18]


def test_split_keywords_of_dataset_builders():
    code = """
    import torch
    from datasets import load_dataset

    validation = load_dataset("imdb", split="train")
    with torch.no_grad():
        for batch in validation:
            print(model(batch))
    """
    assert lines(code) == [4]
    assert lines(code.replace('split="train"', 'split="test"')) == []
    assert lines(code.replace('split="train"', 'split="train[90%:]"')) == []


def test_imported_evaluation_helper_fed_the_training_loader():
    code = """
    from utils import evaluate

    def main(model, train_loader, opt):
        for x, y in train_loader:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        print(evaluate(model, train_loader))
    """
    assert lines(code) == [8]
    assert lines(code.replace("print(evaluate(model, train_loader))",
                              "print(evaluate(model, train_loader), evaluate(model, test_loader))")) == []


def test_subsets_and_samplers_are_held_out():
    code = TRAIN + """
from torch.utils.data import Subset, SubsetRandomSampler
full = make_dataset()
train_loader = DataLoader(full, sampler=SubsetRandomSampler(train_idx))
val_loader = DataLoader(full, sampler=SubsetRandomSampler(val_idx))
test_loader = DataLoader(Subset(full, test_idx))
fit(model, train_loader, opt)
evaluate(model, val_loader)
evaluate(model, test_loader)
"""
    assert lines(code) == []


def test_prefilter():
    assert ValidationOnTrainData.may_match("val_loader = DataLoader(train_ds)\nfor x in val_loader: m(x)\n")
    assert ValidationOnTrainData.may_match("print(evaluate(model, train_loader))\n")
    assert not ValidationOnTrainData.may_match("val_loader = DataLoader(train_ds)\n")
    assert not ValidationOnTrainData.may_match("for x in loader:\n    model(x)\n")


def test_the_slip_is_reported_where_the_data_goes_wrong():
    code = """
    import torch
    from torchvision import datasets
    from torch.utils.data import DataLoader

    def test(model, loader):
        model.eval()
        with torch.no_grad():
            for data, target in loader:
                print(model(data).argmax(1).eq(target).sum().item())

    dataset1 = datasets.MNIST("data", train=True)
    dataset2 = datasets.MNIST("data", train=True)
    train_loader = DataLoader(dataset1)
    test_loader = DataLoader(dataset2)
    test(model, test_loader)
    """
    # ``dataset2`` is no training set by name, but is built from the training split.
    assert lines(code) == [12]
    assert lines(code.replace("dataset2 = datasets.MNIST(\"data\", train=True)",
                              "dataset2 = datasets.MNIST(\"data\", train=False)")) == []


def test_trainer_class_validating_on_its_own_training_loader():
    code = """
    import torch
    from torch.utils.data import DataLoader

    class Trainer:
        def __init__(self, model, data, opt):
            self.model = model
            self.opt = opt
            self.train_loader = DataLoader(data, shuffle=True)

        def train_epoch(self):
            self.model.train()
            for x, y in self.train_loader:
                self.opt.zero_grad()
                self.model(x).sum().backward()
                self.opt.step()

        @torch.no_grad()
        def validate(self):
            self.model.eval()
            for x, y in self.train_loader:
                print(self.model(x).argmax(1).eq(y).float().mean().item())
    """
    assert lines(code) == [20]


def test_callee_split_over_lines_before_its_parenthesis():
    # Regression: the layout between ``.evaluate`` and ``(`` is a ParenthesizedWhitespace
    # (line breaks, a comment), which the analysis once read as one-line whitespace and
    # crashed on (AttributeError: no attribute 'value').
    code = """
import torch

def main(model, train_loader, opt, runner):
    for epoch in range(3):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        model.eval()
        acc = (runner.tools
               .evaluate  # accuracy
               (model, train_loader))
        spaced = runner.evaluate (model, train_loader)
"""
    assert lines(code) == [11, 14]
    held_out = code.replace("(model, train_loader))", "(model, val_loader))")
    assert lines(held_out) == []
