"""ML004 loss-tensor-accumulated: exact lines on real-world shapes of training code."""

from __future__ import annotations

import re
import textwrap

import pytest

from mllint.analysis.pyast.loss import LOSS_CALLEE, LOSS_FUNCTIONS, LOSS_TEXT
from mllint.engine import lint_path, lint_text
from mllint.registry import rule_by_code

RULE = rule_by_code("ML004")


def findings(code: str):
    result = lint_text("train.py", textwrap.dedent(code).lstrip("\n"), [RULE])
    assert result.errors == ()
    return result.findings


def lines(code: str) -> list[int]:
    return [f.line for f in findings(code)]


FLAGGED = {
    "nanogpt_style_tuple_output": (
        """
        losses = []
        while iter_num < max_iters:
            for micro_step in range(accum):
                logits, loss = model(X, Y)
                loss = loss / accum
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
        """,
        [10],
    ),
    "hf_outputs_loss_in_meters": (
        """
        meters = {"loss": 0.0}
        for batch in loader:
            outputs = model(**batch)
            loss = outputs.loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            meters["loss"] += loss
        """,
        [8],
    ),
    "extend_and_list_concatenation": (
        """
        import torch.nn.functional as F

        history = []
        for x, y in loader:
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            history.extend([loss])
            history = history + [loss.mean()]
        """,
        [9, 10],
    ),
    "self_criterion_in_trainer_epoch_total": (
        """
        from torch import nn

        class Trainer:
            def __init__(self, model):
                self.model = model
                self.criterion = nn.BCEWithLogitsLoss()

            def train_epoch(self, loader):
                total = 0
                for x, y in loader:
                    self.optimizer.zero_grad()
                    loss = self.criterion(self.model(x), y)
                    loss.backward()
                    self.optimizer.step()
                    total += loss * x.size(0)
                return total / len(loader.dataset)
        """,
        [15],
    ),
    "loss_from_same_module_helper": (
        """
        import torch.nn.functional as F

        def compute(model, batch):
            x, y = batch
            return F.cross_entropy(model(x), y)

        epoch_loss = 0
        for batch in loader:
            loss = compute(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            epoch_loss = epoch_loss + loss
        """,
        [13],
    ),
    "direct_criterion_call_appended": (
        """
        from torch.nn import MSELoss as Mse

        crit = Mse()
        seen = []
        for x, y in loader:
            out = model(x)
            seen.append(crit(out, y))
            crit(out, y).backward()
            opt.step()
            opt.zero_grad()
        """,
        [7],
    ),
    "append_under_no_grad_still_keeps_the_graph": (
        """
        import torch

        kept = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                kept.append(loss)
        """,
        [10],
    ),
    "attribute_accumulator_across_calls": (
        """
        class Runner:
            def step(self, x, y):
                loss = self.loss_fn(self.model(x), y)
                loss.backward()
                self.opt.step()
                self.opt.zero_grad()
                self.running += loss

            def run(self, loader):
                self.running = 0.0
                for x, y in loader:
                    self.step(x, y)
        """,
        [7],
    ),
    "train_step_method_without_a_loop_here": (
        """
        import torch

        class Agent:
            def __init__(self, model):
                self.model = model
                self.loss_function = torch.nn.MSELoss()
                self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
                self.running_loss = 0

            def train(self, data, target):
                self.model.zero_grad()
                loss = self.loss_function(self.model(data), target)
                loss.backward()
                self.running_loss += loss
                self.optimizer.step()
        """,
        [14],
    ),
    "evaluation_with_autograd_on": (
        """
        import torch.nn.functional as F

        def evaluate(model, loader):
            total = 0
            for x, y in loader:
                total += F.cross_entropy(model(x), y)
            return total

        def main():
            evaluate(model, val_loader)

        if __name__ == "__main__":
            main()
        """,
        [6],
    ),
}


@pytest.mark.parametrize("name", FLAGGED)
def test_flagged(name):
    code, expected = FLAGGED[name]
    assert lines(code) == expected


NOT_FLAGGED = {
    "item_and_float_and_numpy": """
        total, values = 0.0, []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            total += loss.item() * x.size(0)
            total = total + float(loss)
            values.append(loss.detach().cpu().numpy())
            values.append(loss.data)
        """,
    "loss_rebound_to_a_number": """
        total = 0.0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            loss = loss.item()
            total += loss
        """,
    "reset_every_iteration": """
        for x, y in loader:
            parts = []
            parts.append(criterion(model(x), y))
            opt.step()
        """,
    "evaluation_called_under_no_grad": """
        import torch
        import torch.nn.functional as F

        def evaluate(model, loader):
            total = 0
            for x, y in loader:
                total += F.cross_entropy(model(x), y)
            return total

        def main():
            with torch.no_grad():
                evaluate(model, val_loader)
        """,
    "evaluation_caller_never_called": """
        import torch.nn.functional as F

        def evaluate(model, loader):
            total = 0
            for x, y in loader:
                total += F.cross_entropy(model(x), y)
            return total

        def main():
            evaluate(model, val_loader)
        """,
    "evaluation_never_called_here": """
        import torch.nn.functional as F

        def evaluate(model, loader):
            total = 0
            for x, y in loader:
                total += F.cross_entropy(model(x), y)
            return total
        """,
    "inference_mode_decorator": """
        import torch

        @torch.inference_mode()
        def evaluate(model, loader):
            losses = []
            for x, y in loader:
                losses.append(criterion(model(x), y))
            return losses

        evaluate(model, loader)
        """,
    "set_grad_enabled_by_phase": """
        import torch

        for phase in ["train", "val"]:
            running = 0.0
            for x, y in loaders[phase]:
                with torch.set_grad_enabled(phase == "train"):
                    loss = criterion(model(x), y)
                    if phase == "train":
                        loss.backward()
                        opt.step()
                running += loss
        """,
    "micro_batch_backward_total_reset_per_step": """
        for batch in loader:
            total = 0
            for chunk in batch.split(4):
                loss = criterion(model(chunk), target)
                loss.backward()
                total += loss
            opt.step()
            opt.zero_grad()
        """,
    "summed_micro_losses_backpropagated": """
        for step in range(steps):
            total_loss = 0.0
            for micro in range(accum):
                total_loss += criterion(model(x[micro]), y[micro]) / accum
            total_loss.backward()
            opt.step()
            opt.zero_grad()
        """,
    "losses_list_feeds_the_backward": """
        import torch

        for x, y in loader:
            losses = []
            for head in heads:
                losses.append(criterion(head(x), y))
            loss = torch.stack(losses).sum()
            loss.backward()
            opt.step()
        """,
    "outputs_computed_under_no_grad": """
        import torch

        losses = []
        for batch in eval_loader:
            with torch.no_grad():
                outputs = model(**batch)
            loss = outputs.loss
            losses.append(loss)
            losses.append(outputs["loss"])
        """,
    "reset_with_the_step_of_an_accumulating_method": """
        class Recipe:
            def run(self, batch):
                loss = self._loss_fn(self._model(batch), batch) / self._accum
                self._running_loss += loss
                loss.backward()
                if (self._step + 1) % self._accum == 0:
                    self._optimizer.step()
                    self._optimizer.zero_grad(set_to_none=True)
                    print(self._running_loss.item())
                    self._running_loss = 0
                self._step += 1
        """,
    "reset_with_the_step_in_a_loop": """
        running = 0
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y) / 4
            loss.backward()
            running += loss
            if (i + 1) % 4 == 0:
                opt.step()
                opt.zero_grad()
                running = 0
        """,
    "logged_dicts_from_a_training_generator": """
        def train_batches(loader, net, optimizer, criterion):
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(net(x), y)
                loss.backward()
                optimizer.step()
                yield {"loss": loss.data}

        def train_epoch(loader, net, optimizer, criterion):
            running_loss = 0.0
            for stats in train_batches(loader, net, optimizer, criterion):
                loss = stats["loss"]
                running_loss += loss
            return running_loss
        """,
    "not_a_loss": """
        total, outs = 0, []
        for x, y in loader:
            out = model(x)
            total += out.sum()
            outs.append(out)
        """,
    "accumulated_outside_any_loop": """
        def log_once(loss):
            summary = []
            summary.append(loss)
            return summary
        """,
    "lightning_training_step": """
        import lightning as L
        import torch.nn.functional as F

        class Model(L.LightningModule):
            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                self.log("train_loss", loss)
                return loss
        """,
}


@pytest.mark.parametrize("name", NOT_FLAGGED)
def test_not_flagged(name):
    assert lines(NOT_FLAGGED[name]) == []


def test_data_for_the_probe():
    (f,) = findings(FLAGGED["hf_outputs_loss_in_meters"][0])
    assert f.data == {
        "kind": "training",
        "accumulator": "meters",
        "accumulator_expr": 'meters["loss"]',
        "loss": "loss",
    }
    assert (f.region.start.line, f.region.end.line) == (2, 8)
    assert "`meters` lives across optimizer steps" in f.message
    assert "`loss.item()`" in f.message


def test_evaluation_kind_says_so():
    (f,) = findings(FLAGGED["evaluation_with_autograd_on"][0])
    assert f.data["kind"] == "evaluation"
    assert "torch.no_grad()" in f.message


def test_attribute_accumulator_region_is_the_callers_loop():
    (f,) = findings(FLAGGED["attribute_accumulator_across_calls"][0])
    assert f.data["accumulator"] == "self.running"
    assert (f.region.start.line, f.region.end.line) == (11, 12)


def test_prefilter_covers_every_way_a_loss_is_recognised():
    text = re.compile(LOSS_TEXT)
    for name in LOSS_FUNCTIONS:
        assert text.search(name.rsplit(".", 1)[-1]), name
    for callee in ("criterion", "crit", "loss_fn", "compute_loss", "dice_loss", "loss"):
        assert LOSS_CALLEE.match(callee) and text.search(callee)
    assert not RULE.may_match("total += out\nouts.append(out)\nopt.step()")
    assert RULE.may_match("total += x\ny = nn.KLDivLoss()\nloss.backward()")


@pytest.mark.parametrize(
    "entry",
    [
        'if __name__ == "__main__":\n    main()\n',
        "main()\n",
        "for epoch in range(3):\n    main()\n",
    ],
)
def test_evaluation_needs_a_visible_script_entry(entry):
    code = textwrap.dedent(
        """
        import torch.nn.functional as F

        def main():
            total = 0
            for x, y in loader:
                total += F.cross_entropy(model(x), y)
        """
    ).lstrip("\n") + entry
    assert RULE.may_match(code)
    assert lines(code) == [6]


def test_library_code_without_an_entry_is_not_parsed():
    code = """
        class Model(nn.Module):
            def forward(self, x, labels):
                loss = 0
                for head in self.heads:
                    loss += F.cross_entropy(head(x), labels)
                return loss
        result = evaluate(model, loader)
    """
    assert not RULE.may_match(textwrap.dedent(code))


EVAL_PASS = """
import torch
import torch.nn.functional as F
{imports}

{decorator}
def run(model, loader):
    total = 0
    for x, y in loader:
        {with_line}
            total += F.cross_entropy(model(x), y)
    return total

if __name__ == "__main__":
    run(model, loader)
"""


@pytest.mark.parametrize("imports, decorator, with_line, flagged", [
    ("", "", "if True:", True),
    ("", "@torch.no_grad()", "if True:", False),
    ("from utils.torch_utils import smart_inference_mode", "@smart_inference_mode()", "if True:", False),
    ("from helpers import torch_no_grad", "@torch_no_grad", "if True:", False),
    ("import helpers", "@helpers.no_grad_decorator", "if True:", False),
    ("from helpers import nograd", "", "with nograd():", False),
    # a decorator whose name says nothing about autograd changes nothing
    ("from helpers import timed", "@timed()", "if True:", True),
])
def test_wrappers_named_for_no_grad_disable_autograd(imports, decorator, with_line, flagged):
    code = EVAL_PASS.format(imports=imports, decorator=decorator, with_line=with_line)
    assert lines(code) == ([10] if flagged else [])


LOSS_METHOD = """
total = 0
for x, y in loader:
    loss = criterion(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    total += {value}
"""


@pytest.mark.parametrize("value, flagged", [
    ("loss", True),
    ("loss.float()", True),  # a dtype cast keeps the graph
    ("loss.mean() * 2", True),
    ("loss.clamp(0, 10)", True),
    ("loss.get_loss()", False),  # a custom loss object's accessor
    ("criterion.get_loss()", False),
    ("loss.item()", False),
    ("loss.detach()", False),
])
def test_methods_on_a_loss_keep_the_graph_only_when_known_to(value, flagged):
    assert lines(LOSS_METHOD.format(value=value)) == ([7] if flagged else [])


def test_detached_element_of_a_same_module_helpers_tuple():
    code = """
        import torch
        import torch.nn.functional as F

        def compute_loss(p, t):
            box = F.mse_loss(p, t)
            obj = F.l1_loss(p, t)
            return (box + obj) * p.shape[0], torch.cat((box[None], obj[None])).detach()

        def evaluate(model, loader):
            loss = torch.zeros(2)
            for x, t in loader:
                loss += compute_loss(model(x), t)[1]
                whole = compute_loss(model(x), t)[0]
                kept.append(whole)
            return loss

        if __name__ == "__main__":
            evaluate(model, loader)
        """
    assert lines(code) == [14]


METER = """
import torch
import torch.nn.functional as F
from collections import defaultdict
from utils import AverageMeter

class Meter:
    def __init__(self):
        self.reset()

    def reset(self):
        self.sum, self.count = 0, 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n

class Trainer:
    def __init__(self):
        self.meters = {"loss": Meter(), "aux": AverageMeter()}
        self.by_name = defaultdict(AverageMeter)

    def fit(self, model, loader, optimizer):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.meters["loss"].update(loss, x.size(0))
            self.meters["aux"].update(val=loss)
            self.by_name["loss"].add(loss)
"""


def test_meters_in_containers_and_attributes():
    found = findings(METER)
    assert [f.line for f in found] == [29, 30, 31]
    assert found[0].data == {"kind": "training", "accumulator": "self.meters",
                             "accumulator_expr": 'self.meters["loss"]', "loss": "loss",
                             "meter": True}
    assert "(`Meter.update` adds it to `self.sum`)" in found[0].message
    assert "(`AverageMeter` sums the values it is given)" in found[1].message


@pytest.mark.parametrize("change", [
    # the values are numbers
    ("update(loss, x.size(0))", "update(loss.item(), x.size(0))"),
    # the meter converts what it is given
    ("        self.val = val\n", "        val = float(val)\n"),
])
def test_meter_fed_or_keeping_numbers_is_not_flagged(change):
    code = METER.replace(*change)
    assert 29 not in lines(code)


def test_meter_reset_or_rebuilt_every_step_is_not_flagged():
    code = """
        import torch.nn.functional as F
        from utils import AverageMeter
        meter = AverageMeter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            meter.update(loss)
            print(meter.avg)
            meter.reset()
        for x, y in loader:
            fresh = AverageMeter()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            fresh.update(loss)
        """
    assert lines(code) == []
    assert lines(code.replace("            meter.reset()\n", "")) == [8]


def test_meters_whose_update_keeps_no_graph_are_not_flagged():
    code = """
        import torch
        import torch.nn.functional as F
        import torchmetrics

        class LossMean(torchmetrics.Metric):
            def update(self, value):
                self.total += value

        class Last:
            def update(self, value):
                self.value = value

        mean, last = LossMean(), Last()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            mean.update(loss)
            last.update(loss)
            with torch.no_grad():
                mean_of_eval = F.cross_entropy(model(x), y)
        """
    assert lines(code) == []
    # A plain class summing the same way is a leak.
    assert lines(code.replace("class LossMean(torchmetrics.Metric):", "class LossMean:")) == [18]


def test_meter_in_an_evaluation_with_autograd_on():
    code = """
        import torch.nn.functional as F
        from meters import AverageMeter

        def validate(model, loader):
            meter = AverageMeter()
            for x, y in loader:
                meter.update(F.cross_entropy(model(x), y), x.size(0))
            return meter.avg

        if __name__ == "__main__":
            validate(model, loader)
        """
    (f,) = findings(code)
    assert (f.line, f.data["kind"]) == (7, "evaluation")
    # The meter only sums: under no_grad the sums have no graph.
    assert lines(code.replace("import torch.nn.functional as F",
                              "import torch\n        import torch.nn.functional as F")
                 .replace("def validate", "@torch.no_grad()\n        def validate")) == []


LOSS_MODULE = """
    import torch.nn as nn
    import torch.nn.functional as F


    def combined_loss(classes, boxes, target_classes, target_boxes):
        mse = nn.MSELoss()
        box_loss = mse(boxes, target_boxes)
        ce = F.cross_entropy(classes, target_classes)
        loss = 0.5 * ce + 0.5 * box_loss
        return loss, box_loss, ce.item()
"""

TRAIN_SCRIPT = """
    import torch

    from losses import combined_loss

    loss_fn = combined_loss
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for epoch in range(10):
        total_box = 0.0
        total_ce = 0.0
        for images, classes, boxes in loader:
            optimizer.zero_grad()
            out_classes, out_boxes = net(images)
            loss, box_loss, ce = loss_fn(out_classes, out_boxes, classes, boxes)
            loss.backward()
            optimizer.step()
            total_box += box_loss
            total_ce += ce
"""


def test_loss_parts_returned_by_a_loss_function_of_another_module(tmp_path):
    """``loss, box_loss, ce = loss_fn(...)``: the project model knows which positions of
    what ``combined_loss`` returns are loss tensors (the second), and which are numbers
    (``ce.item()``), also through the module-level alias ``loss_fn``."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "losses.py").write_text(textwrap.dedent(LOSS_MODULE))
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))
    result = lint_path(str(script), [rule_by_code("ML004")])
    assert [(f.code, f.line) for f in result.findings] == [("ML004", 17)]
    assert "`total_box += box_loss`" in result.findings[0].message
    assert str(tmp_path / "losses.py") in result.depends_on


def test_loss_parts_of_an_unknown_function_are_not_guessed(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))  # losses.py is not in the project
    assert lint_path(str(script), [rule_by_code("ML004")]).findings == ()


LOGGED = """
from collections import OrderedDict
import torch

def train(model, loader, optimizer, meter):
    for x, y in loader:
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        meter.update(loss.item(), x.size(0))
    return {returned}

def main(model, loader, optimizer, meter):
    log = {{"loss": []}}
    for epoch in range(10):
        train_log = train(model, loader, optimizer, meter)
        log["loss"].append(train_log["loss"])
"""


def test_what_a_helper_returns_under_loss_is_judged_by_its_value():
    # nested-unet: ``train()`` returns the meter's float average under "loss".
    assert lines(LOGGED.format(returned='OrderedDict([("loss", meter.avg), ("n", 1)])')) == []
    assert lines(LOGGED.format(returned='dict(loss=meter.avg)')) == []
    # The last batch's loss tensor itself, kept every epoch with its graph.
    assert lines(LOGGED.format(returned='{"loss": loss, "n": 1}')) == [17]
