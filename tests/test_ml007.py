"""ML007 validation-on-train-data: loaders followed to datasets, helpers to callers."""

from __future__ import annotations

import textwrap

import pytest

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


# -- a held-out evaluation elsewhere does not excuse a per-epoch one on training data ------

EPOCHS = TRAIN + """
def main(args, model, train_loader, val_loader, opt):
    if args.evaluate:
        evaluate(model, val_loader)
        return
    best = 0.0
    for epoch in range(args.epochs):
        fit(model, train_loader, opt)
        acc = evaluate(model, train_loader)
        if acc > best:
            best = acc
"""


def test_held_out_evaluation_only_on_another_branch():
    code = textwrap.dedent(EPOCHS).lstrip("\n")
    result = lint_text("train.py", code, RULE)
    (f,) = result.findings
    assert f.line == 23
    assert "the held-out evaluation (line 18) runs only on another branch" in f.message
    # The same evaluation in an ``else`` branch of the ``if`` that holds the loop.
    other = EPOCHS.replace("""    if args.evaluate:
        evaluate(model, val_loader)
        return
    best = 0.0
    for epoch""", """    best = 0.0
    if args.evaluate:
        evaluate(model, val_loader)
    else:
      for epoch""")
    assert lines(other) == [23]


def test_held_out_evaluation_alongside_excuses():
    beside = EPOCHS.replace("        if acc > best:", "        evaluate(model, val_loader)\n"
                            "        if acc > best:")
    assert lines(beside) == []
    # ...also through a same-module helper the loop calls.
    helper = EPOCHS.replace("        if acc > best:", "        check(model, val_loader)\n"
                            "        if acc > best:") + """
def check(model, loader):
    return evaluate(model, loader)
"""
    assert lines(helper) == []
    # A branch that does not leave runs before training, another stage: the per-epoch
    # number still selects the model.
    baseline = EPOCHS.replace("        return\n", "")
    assert lines(baseline) == [22]


def test_held_out_evaluation_at_another_stage_only_for_model_selection():
    final = TRAIN + """
def main(model, train_loader, test_loader, opt, epochs):
    best = 0.0
    for epoch in range(epochs):
        fit(model, train_loader, opt)
        acc = evaluate(model, train_loader)
        if acc > best:
            best = acc
    print("test", evaluate(model, test_loader))
"""
    assert lines(final) == [20]
    # Training accuracy logged per epoch, a final test: a training-accuracy monitor.
    logged = final.replace("        acc = evaluate(model, train_loader)\n        if acc > best:\n"
                           "            best = acc\n",
                           "        train_acc = evaluate(model, train_loader)\n"
                           "        print(train_acc)\n")
    assert lines(logged) == []
    named = final.replace("acc = evaluate", "val_acc = evaluate").replace(
        "        if acc > best:\n            best = acc\n", "")
    assert lines(named) == [20]


LOOP = """
    for epoch in range(3):
        model.train()
        for x, y in {train}:
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, y in {val}:
                print(model(x).argmax(1).eq(y).float().mean())
"""


def _script(setup: str, train: str = "train_loader", val: str = "val_loader") -> str:
    return ("import torch\nfrom torch.utils.data import DataLoader, SubsetRandomSampler\n\n"
            "def main(model, optimizer, dataset, train_ds, val_ds, train_idx, val_idx):\n"
            + textwrap.indent(textwrap.dedent(setup).strip("\n"), "    ") + "\n"
            + LOOP.format(train=train, val=val))


def test_val_loader_built_with_the_training_sampler():
    code = _script("""
        train_sampler = SubsetRandomSampler(train_idx)
        valid_sampler = SubsetRandomSampler(val_idx)
        train_loader = DataLoader(dataset, batch_size=32, sampler=train_sampler)
        val_loader = DataLoader(dataset, batch_size=32, sampler=train_sampler)
        """)
    result = lint_text("train.py", code, RULE)
    (f,) = result.findings
    assert f.line == 8
    assert "built with `train_sampler`, the training sampler" in f.message
    assert lines(code.replace("val_loader = DataLoader(dataset, batch_size=32, sampler=train_sampler)",
                              "val_loader = DataLoader(dataset, batch_size=32, sampler=valid_sampler)")) == []
    # The training sampler's object under a plain name, and a held-out dataset with it.
    plain = code.replace("train_sampler", "sampler")
    assert lines(plain) == [8]
    assert lines(plain.replace("val_loader = DataLoader(dataset,", "val_loader = DataLoader(val_ds,")) == []


def test_loaders_returned_from_helpers():
    code = textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader

        def get_loaders(train_ds, val_ds):
            train_loader = DataLoader(train_ds, batch_size=64, shuffle=True)
            val_loader = DataLoader(train_ds, batch_size=256)
            return train_loader, val_loader

        def make_loader(ds, shuffle=False):
            return DataLoader(ds, batch_size=64, shuffle=shuffle)

        def main(model, optimizer, train_ds, val_ds):
            train_loader, val_loader = get_loaders(train_ds, val_ds)
            eval_loader = make_loader(train_ds)
        """).lstrip("\n") + textwrap.indent(LOOP.format(train="train_loader", val="val_loader")
                                           + LOOP.format(train="train_loader", val="eval_loader"), "")
    assert lines(code) == [6, 14]
    fixed = code.replace("val_loader = DataLoader(train_ds, batch_size=256)",
                         "val_loader = DataLoader(val_ds, batch_size=256)").replace(
        "eval_loader = make_loader(train_ds)", "eval_loader = make_loader(val_ds)")
    assert lines(fixed) == []


def test_accelerator_prepare_rebinding():
    setup = """
        train_dataloader = DataLoader(train_ds, shuffle=True, batch_size=8)
        val_dataloader = DataLoader({data}, batch_size=8)
        model, optimizer, train_dataloader, val_dataloader = accelerator.prepare(
            model, optimizer, train_dataloader, val_dataloader)
        """
    code = _script(setup.format(data="train_ds"), "train_dataloader", "val_dataloader")
    assert lines(code) == [6]
    assert lines(_script(setup.format(data="val_ds"), "train_dataloader", "val_dataloader")) == []
    # Handing the training loader itself to prepare in the held-out place.
    swapped = _script("""
        train_dataloader = DataLoader(train_ds, shuffle=True, batch_size=8)
        val_dataloader = DataLoader(val_ds, batch_size=8)
        train_dataloader, val_dataloader = accelerator.prepare(train_dataloader, train_dataloader)
        """, "train_dataloader", "val_dataloader")
    assert lines(swapped) == [7]


def test_torchtext_iterators_and_dunder_iter():
    code = _script("""
        train_iter = data.BucketIterator(train_ds, batch_size=32, shuffle=True)
        valid_iter = data.BucketIterator(train_ds, batch_size=32)
        """, "train_iter", "valid_iter")
    assert lines(code) == [6]
    assert lines(code.replace("data.BucketIterator(train_ds, batch_size=32)\n",
                              "data.BucketIterator(val_ds, batch_size=32)\n")) == []
    dunder = _script("""
        train_loader = DataLoader(train_ds, shuffle=True)
        val_loader = DataLoader(train_ds)
        """, "train_loader.__iter__()", "val_loader.__iter__()")
    assert lines(dunder) == [6]
    wrapped = _script("""
        train_loader = DataLoader(train_ds, shuffle=True)
        val_batches = iter(DataLoader(train_ds))
        """, "train_loader", "val_batches")
    assert lines(wrapped) == [6]


DRAWN = """
import torch

class Trainer:
    def __init__(self, model, optimizer, train_loader, test_loader):
        self.model = model
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.test_loader = test_loader

    def fit(self, epochs):
        for epoch in range(epochs):
            self.model.train()
            self.train_epoch()
            print(self.evaluate(epoch))

    def train_epoch(self):
        batches = iter(self.train_loader)
        for _ in range(len(self.train_loader)):
            x, y = {draw_train}
            self.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()

    @torch.no_grad()
    def evaluate(self, epoch):
        self.model.eval()
        batches = {evaluated}
        hits = 0
        for _ in range(len(self.test_loader)):
            x, y = {draw}
            hits += (self.model(x).argmax(1) == y).sum().item()
        return hits
"""


@pytest.mark.parametrize("draw", ["next(batches)", "batches.next()", "batches.__next__()"])
def test_batches_drawn_with_next_keep_the_loaders_identity(draw):
    # The evaluation sizes its loop by the test set but draws from the training loader.
    code = DRAWN.format(draw_train="next(batches)", draw=draw,
                        evaluated="self.train_loader.__iter__()")
    assert lines(code) == [29]
    fixed = code.replace("batches = self.train_loader.__iter__()",
                         "batches = self.test_loader.__iter__()")
    assert lines(fixed) == []
    assert lines(code.replace("self.train_loader.__iter__()", "iter(self.train_loader)")) == [29]


GUARDED = """
import torch
from torch.utils.data import DataLoader

def fit(net, train_data, val_data=None, epochs=3):
    data = DataLoader(train_data, shuffle=True)
    held_out = DataLoader(val_data) if val_data is not None else None
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    history = []
    for epoch in range(epochs):
        net.train()
        for images, targets in data:
            losses = net(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        if {guard}:
            total = 0.0
            with torch.no_grad():
                for images, targets in {evaluated}:
                    losses = net(images, targets)
                    total += sum(losses.values()).item()
            history.append(total / len(held_out))
    return history
"""


def test_loss_on_the_training_data_under_a_held_out_guard():
    # ``if val_data is not None:`` says the loop stands for the validation loss, but it
    # iterates ``data``, which the training loop iterates.
    code = GUARDED.format(guard="val_data is not None", evaluated="data")
    assert lines(code) == [19]
    assert lines(GUARDED.format(guard="val_data is not None", evaluated="held_out")) == []
    # Without a guard naming held-out data, a no_grad loop over ``data`` (no name of a
    # loader) is no sign of evaluation: nothing to report.
    assert lines(GUARDED.format(guard="epoch % 2 == 0", evaluated="data")) == []
    assert lines(GUARDED.format(guard="val_data is not None and train_data", evaluated="data")) == []


EXTERNAL = """
import torch
from utils.tools import test

model = torch.nn.Linear(4, 1)
optimizer = torch.optim.Adam(model.parameters())
for epoch in range(10):
    for x, y in train_loader:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    vali_loss = test(model, {args})
"""


def test_an_evaluation_elsewhere_given_another_loader_too_is_no_training_accuracy():
    # Forecasting's protocol: the training series give each window's history, the
    # held-out loader the horizon scored; only the training loader handed in is a bug.
    assert lines(EXTERNAL.format(args="train_loader, vali_loader, criterion")) == []
    assert lines(EXTERNAL.format(args="train_loader, criterion")) == [11]
