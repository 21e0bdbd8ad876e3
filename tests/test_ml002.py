"""ML002 eval-mode-missing: where the model's mode comes from, and what is not a pass."""

from __future__ import annotations

import textwrap

import pytest
from helpers import FIXTURES
from mllint.rules.ml002_eval_mode_missing import EvalModeMissing

from mllint.engine import lint_path, lint_text

RULE = [EvalModeMissing]


def lines(code: str, path: str = "train.py") -> list[int]:
    result = lint_text(path, textwrap.dedent(code).lstrip("\n"), RULE)
    assert result.errors == ()
    assert all(f.code == "ML002" for f in result.findings)
    return [f.line for f in result.findings]


HEADER = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.fc(self.drop(x))
"""


def test_fixture_twins():
    bad = lint_path(str(FIXTURES / "ml002" / "bad_validation_in_train_mode.py"), RULE)
    good = lint_path(str(FIXTURES / "ml002" / "good_validation_in_eval_mode.py"), RULE)
    assert [(f.code, f.line) for f in bad.findings] == [("ML002", 43)]
    assert bad.findings[0].data["model"] == "model"
    assert bad.findings[0].data["loop_line"] == 42
    assert bad.findings[0].region is not None and bad.findings[0].region.start.line == 42
    assert good.findings == ()


def test_fresh_model_is_in_training_mode():
    code = HEADER + """
model = Net().to("cpu")
with torch.no_grad():
    for x, y in val_loader:
        print(model(x).argmax(1))
"""
    assert lines(code) == [16]


def test_model_without_mode_dependent_layers_is_not_reported():
    code = """
    import torch
    from torch import nn

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return torch.relu(self.fc(x))

    model = Plain()
    with torch.no_grad():
        for x, y in val_loader:
            print(model(x).argmax(1))
    """
    assert lines(code) == []


@pytest.mark.parametrize(
    "switch,expected",
    [("net.eval()", []), ("net.train(False)", []), ("net.train(mode=False)", []),
     ("net.train()", [15]), ("pass", [15])],
)
def test_mode_switch_before_the_call_of_a_helper(switch, expected):
    code = HEADER + f"""
def evaluate(model, loader):
    for x, y in loader:
        yield (model(x).argmax(1) == y).float().mean().item()

def run(net, val_loader):
    net.train()
    {switch}
    with torch.no_grad():
        return list(evaluate(net, val_loader))
"""
    assert lines(code) == expected


def test_every_caller_must_set_eval():
    code = HEADER + """
def evaluate(model, loader):
    with torch.no_grad():
        for x, y in loader:
            model(x)

def main(train_loader, val_loader, test_loader):
    net = Net()
    net.eval()
    evaluate(net, val_loader)
    net.train()
    evaluate(net, test_loader)
"""
    assert lines(code) == [16]


def test_helper_without_callers_needs_a_file_that_trains():
    helper = HEADER + """
@torch.no_grad()
def validate(model, loader):
    return [model(x) for x, _ in loader]
"""
    assert lines(helper) == []
    trains = helper + """
def train_one_epoch(model, loader, opt):
    model.train()
    for x, y in loader:
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
"""
    assert lines(trains) == [15]


def test_pretrained_and_loaded_models():
    code = """
    import torch
    from transformers import AutoModelForSequenceClassification

    clf_model = AutoModelForSequenceClassification.from_pretrained("bert-base-uncased")
    with torch.no_grad():
        for batch in eval_dataloader:
            print(clf_model(**batch).logits.argmax(-1))
    """
    assert lines(code) == []


def test_trainer_class_attribute():
    code = HEADER + """
class Trainer:
    def __init__(self, loaders):
        self.model = Net()
        self.loaders = loaders
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def train_epoch(self):
        self.model.train()
        for x, y in self.loaders["train"]:
            self.opt.zero_grad()
            self.model(x).sum().backward()
            self.opt.step()

    @torch.no_grad()
    def validate(self):
        return [self.model(x) for x, _ in self.loaders["val"]]

    def fit(self):
        for epoch in range(3):
            self.train_epoch()
            self.validate()
"""
    assert lines(code) == [28]
    fixed = code.replace("    def validate(self):\n", "    def validate(self):\n        self.model.eval()\n")
    assert lines(fixed) == []


def test_submodules_of_a_module_and_pytest_tests_are_not_passes():
    code = HEADER + """
class TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def test(self, batches):
        return [self.net(b) for b in batches]

    def forward(self, x):
        return self.net(x)
"""
    assert lines(code) == []
    test_file = HEADER + """
def test_forward_shapes():
    model = Net()
    with torch.no_grad():
        for x in [torch.randn(2, 4)]:
            assert model(x).shape == (2, 2)
"""
    assert lines(test_file, "tests/test_net.py") == []


def test_deliberate_train_mode_without_training_in_between():
    code = HEADER + """
model = Net()
model.train()  # Monte-Carlo dropout: several stochastic passes
with torch.no_grad():
    samples = [model(x) for x in test_batches]
    for x in test_batches:
        print(model(x).std())
"""
    assert lines(code) == []


def test_prefilter_rejects_files_without_any_sign_of_evaluation():
    assert not EvalModeMissing.may_match("for x, y in loader:\n    model(x)\n")
    assert EvalModeMissing.may_match("for x, y in valLoader:\n    model(x)\n")
    assert EvalModeMissing.may_match("with torch.no_grad():\n    for x in loader:\n        model(x)\n")
    assert not EvalModeMissing.may_match("with torch.no_grad():\n    model(x)\n")
    assert not EvalModeMissing.may_match("interval = retrieval(device)\n")


def test_a_demo_function_is_no_evaluation():
    code = HEADER + """
def test():
    net = Net()
    word = encode("hello")
    for step in range(3):
        print(net(word).size())

test()
"""
    assert lines(code) == []
    # Given its data, the same function is an evaluation.
    assert lines(code.replace("def test():", "def test(word):")
                 .replace('    word = encode("hello")\n', "")
                 .replace("test()", "test(encode('hello'))")) == [16]


def test_training_mode_of_another_functions_local_is_another_model():
    code = HEADER + """
def train(train_loader):
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.save(model.state_dict(), "model.pt")

@torch.no_grad()
def evaluate(model, val_loader):
    for x, y in val_loader:
        print(model(x).argmax(1))
"""
    assert lines(code) == []
    # A parameter of the training function may be the very model evaluate() gets.
    passed = code.replace("def train(train_loader):\n    model = Net()\n",
                          "def train(model, train_loader):\n")
    assert lines(passed) == [25]


@pytest.mark.parametrize(
    "built,expected",
    [("Net().eval()", []), ("Net().to('cpu').eval()", []), ("Net().train(False)", []),
     ("Net()", [16]), ("Net().eval().to('cpu')", [])],
)
def test_mode_chained_on_construction(built, expected):
    code = HEADER + f"""
model = {built}
with torch.no_grad():
    for x, y in test_loader:
        print(model(x).argmax(1))
"""
    assert lines(code) == expected


AGENT = """
import torch
from torch import nn

class Agent:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.1), nn.Linear(64, 3))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=3e-4)

    def evaluate(self, states, actions):
        out = self.model(states)
        dist = torch.distributions.Categorical(logits=out[:, :2])
        return dist.log_prob(actions), out[:, 2]

    def update(self, states, actions, returns, old_logprobs):
        self.model.train()
        for _ in range(4):
            logprobs, values = self.evaluate(states, actions)
            ratio = torch.exp(logprobs - old_logprobs)
            loss = -(ratio * (returns - values.detach())).mean() + (values - returns).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
"""


def test_an_evaluate_helper_whose_outputs_the_caller_backpropagates_is_no_pass():
    # Actor-critic: evaluate() scores the actions taken; update() trains on the result.
    assert lines(AGENT) == []
    # Called only to report the scores, the same helper is a pass in training mode.
    reporting = AGENT.replace("            loss.backward()\n", "            print(loss.item())\n")
    assert lines(reporting) == [10]


SHARED = HEADER + """
def run(model, loader, optimizer, {param}):
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        {test}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
with torch.no_grad():
    run(model, loader, optimizer{call})
"""


@pytest.mark.parametrize(
    "param,test,call,expected",
    [
        ("train", "if train:", ", train=False", [15]),
        ("train", "if train:", ", False", [15]),
        ("train", "if train:", ", True", []),
        ("train=True", "if train:", "", []),
        ("train=False", "if train:", "", [15]),
        ("cross_valid=False", "if not cross_valid:", ", cross_valid=True", [15]),
        ("phase", 'if phase == "train":', ', phase="val"', [15]),
        ("phase", 'if phase == "train":', ', phase="train"', []),
        ("phase", 'if phase != "val":', ', "val"', [15]),
        ("train", "if train:", ", train=flag", []),  # decided at run time
        ("train", "if train and x.numel():", ", train=False", []),  # not a plain flag test
    ],
)
def test_shared_loop_is_checked_on_its_evaluation_path(param, test, call, expected):
    code = SHARED.format(param=param, test=test, call=call)
    assert lines(code) == expected


def test_shared_loop_sets_the_mode_on_its_evaluation_path():
    code = SHARED.format(param="train", test="if train:", call=", train=False")
    evals = code.replace("    for x, y in loader:\n",
                         "    if not train:\n        model.eval()\n    for x, y in loader:\n")
    assert lines(evals) == []
    trains_only = code.replace("    for x, y in loader:\n",
                               "    if train:\n        model.eval()\n    for x, y in loader:\n")
    assert lines(trains_only) == [17]


def test_methods_of_the_models_own_class_are_forwards():
    code = HEADER + """
    def predict(self, x):
        return self.forward(x).argmax(1)

model = Net()
with torch.no_grad():
    for x, y in val_loader:
        print((model.{method}(x) == y).sum())
"""
    assert lines(code.format(method="predict")) == [19]
    # A method the class does not define is nothing the analysis can follow.
    assert lines(code.format(method="score")) == []


def test_methods_of_other_objects_are_no_forwards():
    code = """
    import torch
    from sklearn.ensemble import RandomForestClassifier
    from transformers import AutoModelForCausalLM

    model = RandomForestClassifier()
    model.fit(X_train, y_train)
    print((model.predict(X_test) == y_test).mean())
    lm = AutoModelForCausalLM.from_pretrained("gpt2")
    lm.train()
    for batch in test_loader:
        print(lm.generate(batch["input_ids"]))
    """
    assert lines(code) == []


TRAINER = HEADER + """
class Trainer:
    def __init__(self, train_loader, val_loader):
        self.model = Net()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.train_loader, self.val_loader = train_loader, val_loader

    def _forward_pass(self, x, y):
        out = self.model(x)
        return nn.functional.cross_entropy(out, y)

    def fit(self):
        self.model.train()
        for x, y in self.train_loader:
            loss = self._forward_pass(x, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        {switch}
        for x, y in self.val_loader:
            print(self._forward_pass(x, y).item())
"""


@pytest.mark.parametrize(
    "switch,expected", [("pass", [20]), ("self.model.eval()", [])],
)
def test_a_helper_that_runs_the_model_is_checked_along_the_validation_loop(switch, expected):
    assert lines(TRAINER.format(switch=switch)) == expected


TWO_LEVELS = HEADER + """
class Trainer:
    def __init__(self, train_loader, test_loader=None):
        self.model = Net()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.train_loader = train_loader
        self.test_loader = test_loader

    def _run_batch(self, x, y, train=True):
        with torch.set_grad_enabled(train):
            loss = nn.functional.cross_entropy(self.model(x), y)
        if train:
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.item()

    def _run_epoch(self, loader, train=True):
        {switch}
        for x, y in loader:
            self._run_batch(x, y, {flag})

    def fit(self, epochs):
        for epoch in range(epochs):
            self.model.train()
            self._run_epoch(self.train_loader, train=True)
            if self.test_loader is not None:
                self._run_epoch(self.test_loader, train=False)
"""


@pytest.mark.parametrize(
    "switch,flag,expected",
    [
        # The flag reaches the batch function through the epoch function.
        ("pass", "train", [22]),
        ("pass", "train=train", [22]),
        ("self.model.train(train)", "train", []),
        ("if not train:\n            self.model.eval()", "train", []),
        ("if train:\n            self.model.train()\n        else:\n            self.model.eval()",
         "train", []),
        # The epoch function always trains: no evaluation path.
        ("pass", "True", []),
    ],
)
def test_shared_loop_switched_through_two_levels(switch, flag, expected):
    assert lines(TWO_LEVELS.format(switch=switch, flag=flag)) == expected


PARAM_ALIAS = """
import torch

crnn = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Dropout(0.1))
optimizer = torch.optim.Adam(crnn.parameters())

def val(net, loader):
    net.eval()
    with torch.no_grad():
        for x, y in loader:
            score = (crnn(x).argmax(1) == y).float().mean()

for epoch in range(10):
    crnn.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(crnn(x), y).backward()
        optimizer.step()
    val({passed}, val_loader)
"""


def test_eval_mode_set_through_the_parameter_the_model_is_passed_on():
    # crnn.pytorch: ``val(net, ...)`` switches ``net`` to eval mode and runs the global
    # ``crnn``; its only call passes ``crnn`` itself.
    assert lines(PARAM_ALIAS.format(passed="crnn")) == []
    # Another module passed for ``net``: the global ``crnn`` stays in training mode.
    assert lines(PARAM_ALIAS.format(passed="torch.nn.Linear(8, 4)")) == [10]
