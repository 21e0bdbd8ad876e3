"""The ML005 gate (``mllint.gates.ml005``) is a sound over-approximation of the rule.

For every place the rule reports, the gate's suspects include that line (so it admits
the file); for transformers-style modules (softmax in attention, logits into the loss)
and the rule's must-not-flag patterns it turns the file away.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pytest

from helpers import FIXTURES, expected
from mllint.engine import lint_text
from mllint.gates import ml005 as gate
from mllint.prefilter import admitted
from mllint.rules.ml005_double_softmax import DoubleSoftmax

# Each snippet exercises one kind of flow the rule follows; (code, lines it reports).
FIRES = {
"alias_function_imports": ("""
from torch.nn.functional import cross_entropy as ce, softmax as sm

def step(z, y):
    return ce(sm(z, dim=1), y)
""", [4]),
"module_alias_import": ("""
import torch
import torch.nn as tnn

crit = tnn.CrossEntropyLoss()

def step(z, y):
    return crit(torch.softmax(z, 1), y)
""", [7]),
"keyword_input_full_path": ("""
import torch

def step(z, y):
    return torch.nn.functional.cross_entropy(target=y, input=torch.special.softmax(z, 1))
""", [4]),
"import_inside_function": ("""
def step(z, y):
    import torch
    import torch.nn.functional as Fn
    from torch.nn.modules.loss import CrossEntropyLoss
    p = torch.Tensor.softmax(z, 1)
    return CrossEntropyLoss()(p, y) + Fn.cross_entropy(Fn.softmax(z, 1), y)
""", [6, 6]),
"parameter_positional_and_keyword": ("""
import torch.nn.functional as F

def loss_of(probs, y):
    return F.cross_entropy(probs, y)

def other(y, scores=None):
    return F.cross_entropy(scores, y)

def step(z, y):
    a = loss_of(F.softmax(z, dim=1), y)
    return a + other(y, scores=z.softmax(1))
""", [4, 7]),
"loss_module_as_parameter": ("""
import torch
from torch import nn

def evaluate(criterion, z, y):
    return criterion(torch.softmax(z, 1), y)

evaluate(nn.CrossEntropyLoss(), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
""", [5]),
"tuple_return_and_subscript": ("""
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        z = self.fc(x)
        return z, F.softmax(z, dim=1)

net = Net()
ce = nn.CrossEntropyLoss()
for x, y in loader:
    logits, probs = net(x)
    loss = ce(probs, y) + ce(net(x)[1], y)
""", [17, 17]),
"sequential_ordered_dict": ("""
from collections import OrderedDict
import torch.nn as nn
import torch.nn.functional as F

model = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 3)), ("act", nn.Softmax(dim=1))]))

def step(x, y):
    return F.cross_entropy(model(x), y)
""", [8]),
"self_attributes_in_trainer": ("""
import torch.nn as nn

class Trainer:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, x, y):
        out = self.model(x)
        return self.loss_fn(out, y)
""", [10]),
"passthrough_methods": ("""
import torch.nn as nn
import torch.nn.functional as F

model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)).to("cpu").train()

def step(x, y, z):
    probs = F.softmax(z, 1)
    a = F.cross_entropy(probs.view(-1, 3).float(), y)
    return a + F.cross_entropy(model.float()(x).contiguous(), y)
""", [8, 9]),
"softmax_module_instances": ("""
import torch.nn as nn

sm = nn.Softmax(dim=1)
ce = nn.CrossEntropyLoss()

def step(z, y):
    return ce(sm(z), y) + ce(nn.Softmax(1)(z), y)
""", [7, 7]),
"self_call_inside_class": ("""
import torch
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def forward(self, x):
        return torch.softmax(self.fc(x), -1)

    def loss(self, x, y):
        return F.cross_entropy(self(x), y)
""", [10]),
"walrus_annassign_reassignment": ("""
import torch
import torch.nn.functional as F

def step(z, y):
    if (p := torch.softmax(z, 1)) is not None:
        a = F.cross_entropy(p, y)
    q: torch.Tensor = F.softmax(z, 1)
    q = q.view(-1, 3)
    return a + F.cross_entropy(q, y)
""", [6, 9]),
"unpacked_literal_models": ("""
import torch.nn as nn
import torch.nn.functional as F

head, body = nn.Sequential(nn.Linear(3, 3), nn.Softmax(1)), nn.Linear(4, 3)

def step(x, y):
    return F.cross_entropy(head(body(x)), y)
""", [7]),
"recursive_helper_cycle": ("""
import torch.nn.functional as F

def loss_at(p, y, n):
    if n:
        return loss_at(p, y, n - 1)
    return F.cross_entropy(p, y)

def step(z, y):
    return loss_at(F.softmax(z, 1), y, 2)
""", [6]),
"forward_through_self_layer": ("""
import torch.nn as nn

class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(8, 4), nn.Softmax(dim=-1))

    def forward(self, x):
        h = x.flatten(1)
        return self.head(h)

clf = Classifier()
criterion = nn.CrossEntropyLoss()
loss = criterion(clf(x), y)
""", [14]),
"loss_module_moved_to_device": ("""
import torch
from torch import nn

crit = nn.CrossEntropyLoss(reduction="sum").to("cuda").float()
crit2 = nn.CrossEntropyLoss()
crit2 = crit2.cuda()

def step(z, y):
    p = torch.softmax(z, 1)
    return crit(p, y) + crit2(p, y) + nn.CrossEntropyLoss().cuda()(p, y)
""", [10, 10, 10]),
"softmax_reshaped_or_indexed": ("""
import torch
import torch.nn.functional as F

def step(z, y, k):
    a = F.cross_entropy(torch.squeeze(F.softmax(z, -1), 0), y)
    b = F.cross_entropy(z.softmax(-1).resize(4, 3), y)
    c = F.cross_entropy(F.softmax(z, -1)[..., :k], y)
    d = F.cross_entropy(F.softmax(z, -1)[0], y)
    e = F.cross_entropy(torch.reshape(input=z.softmax(1), shape=(-1, 3)), y)
    return a + b + c + d + e
""", [5, 6, 7, 8, 9]),
"wrapped_models": ("""
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

class Net(nn.Module):
    def forward(self, x):
        return torch.softmax(x, 1)

ddp = DistributedDataParallel(module=Net())
dp = nn.DataParallel(Net(), device_ids=[0])
net = Net()
net = torch.compile(net)
ce = nn.CrossEntropyLoss()
loss = ce(ddp(x), y) + ce(dp(x), y) + ce(net(x), y)
""", [14, 14, 14]),
}

# Modules where the rule cannot report and the gate must say so.
REJECTS = {
"wrapped_model_returning_logits": """
import torch
from torch import nn

class Net(nn.Module):
    def forward(self, x):
        return self.fc(x).view(-1, 4)

model = nn.DataParallel(Net()).cuda()
ce = nn.CrossEntropyLoss().cuda()
loss = ce(model(x), y)
confidence = torch.softmax(model(x), 1).view(-1)
""",
"transformers_like": """
import torch
from torch import nn
from torch.nn import CrossEntropyLoss


class Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, hidden_states, output_attentions=False):
        q, k, v = self.qkv(hidden_states).chunk(3, dim=-1)
        scores = torch.matmul(q, k.transpose(-1, -2))
        attn_weights = nn.functional.softmax(scores, dim=-1)
        attn_output = self.out(torch.matmul(attn_weights, v))
        outputs = (attn_output, attn_weights)
        return outputs


class Layer(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attention = Attention(dim)

    def forward(self, hidden_states):
        attention_outputs = self.attention(hidden_states)
        hidden_states = attention_outputs[0]
        return (hidden_states,) + attention_outputs[1:]


class Model(nn.Module):
    def __init__(self, dim, layers):
        super().__init__()
        self.layers = nn.ModuleList([Layer(dim) for _ in range(layers)])

    def forward(self, hidden_states):
        all_attentions = ()
        for layer in self.layers:
            layer_outputs = layer(hidden_states)
            hidden_states = layer_outputs[0]
            all_attentions = all_attentions + (layer_outputs[1],)
        return hidden_states, all_attentions


class ForCausalLM(nn.Module):
    def __init__(self, dim, vocab):
        super().__init__()
        self.model = Model(dim, 2)
        self.lm_head = nn.Linear(dim, vocab)

    def forward(self, hidden_states, labels=None):
        outputs = self.model(hidden_states)
        logits = self.lm_head(outputs[0])
        loss = None
        if labels is not None:
            loss_fct = CrossEntropyLoss()
            loss = loss_fct(logits.view(-1, logits.size(-1)), labels.view(-1))
        return loss, logits


class ForClassification(nn.Module):
    def __init__(self, dim, n):
        super().__init__()
        self.model = Model(dim, 2)
        self.classifier = nn.Linear(dim, n)

    def forward(self, hidden_states, labels):
        sequence_output, attentions = self.model(hidden_states)
        logits = self.classifier(sequence_output[:, 0])
        loss = nn.functional.cross_entropy(logits, labels)
        probs = logits.softmax(-1)
        return loss, probs
""",
"softmax_for_metrics_only": """
import torch.nn.functional as F

def step(model, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    probs = F.softmax(logits, dim=1)
    return loss, probs.argmax(1)
""",
"soft_targets_and_log_softmax": """
import torch.nn as nn
import torch.nn.functional as F

nll = nn.NLLLoss()
model = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))

def step(x, y, teacher_logits, logits):
    target = F.softmax(teacher_logits, dim=1)
    return F.cross_entropy(logits, target) + nll(model(x), y)
""",
"softmax_at_another_tuple_position": """
import torch.nn as nn
import torch.nn.functional as F

class Heads(nn.Module):
    def forward(self, x):
        logits = self.fc(x)
        return F.softmax(logits, dim=1), logits

heads = Heads()
ce = nn.CrossEntropyLoss()
probs, logits = heads(x)
loss = ce(logits, y) + F.cross_entropy(heads(x)[1], y)
""",
"softmax_on_only_one_return": """
import torch
import torch.nn.functional as F

class Net(torch.nn.Module):
    def forward(self, x, probs=False):
        z = self.fc(x)
        if probs:
            return torch.softmax(z, 1)
        return z

def step(net: Net, x, y):
    return F.cross_entropy(Net()(x), y)
""",
"model_defined_elsewhere": """
import torch.nn.functional as F
from mypkg.models import Classifier

model = Classifier()
sm = F.softmax(model(x), 1)

def step(x, y):
    return F.cross_entropy(model(x), y)
""",
"not_the_loss_module": """
import torch
import torch.nn as nn

crit = nn.MSELoss()
loss = crit(torch.softmax(z, 1), y) + torch.nn.functional.nll_loss(torch.softmax(z, 1), y)
""",
}


def _code(code: str) -> str:
    return textwrap.dedent(code).lstrip("\n")


def _rule_lines(code: str) -> list[int]:
    result = lint_text("t.py", code, [DoubleSoftmax], prefilter=False)
    assert result.errors == ()
    return [f.line for f in result.findings]


def _assert_covered(code: str) -> list[int]:
    """The rule's lines are among the gate's suspects, and the gate admits the module."""
    lines = _rule_lines(code)
    tree = ast.parse(code)
    assert set(lines) <= gate.suspect_lines(tree)
    if lines:
        assert gate.may_flag(tree)
        assert admitted([DoubleSoftmax], code) == [DoubleSoftmax]
    return lines


def test_the_rule_uses_this_gate():
    assert DoubleSoftmax.GATE == "mllint.gates.ml005:may_flag"


def test_gate_module_does_not_import_libcst():
    # The parent process runs gates without libcst (see mllint.prefilter).
    probe = "import sys, mllint.gates.ml005; sys.exit('libcst' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


@pytest.mark.parametrize("i", range(len(DoubleSoftmax.INVALID)))
def test_invalid_examples_lines_are_suspects(i):
    example = DoubleSoftmax.INVALID[i]
    assert _assert_covered(example.code) == list(example.lines)


@pytest.mark.parametrize("i", range(len(DoubleSoftmax.VALID)))
def test_valid_examples_are_turned_away(i):
    assert not gate.may_flag(ast.parse(DoubleSoftmax.VALID[i].code))


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.py")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixtures_with_ml005_markers_are_admitted(path):
    code = path.read_text(encoding="utf-8")
    marked = sorted(line for c, line in expected(path) if c == "ML005")
    tree = ast.parse(code)
    assert set(marked) <= gate.suspect_lines(tree)
    if marked:
        assert admitted([DoubleSoftmax], code) == [DoubleSoftmax]
    elif path.parent.name == "ml005":
        # The rule's own good_/ok_ fixtures: nothing for the libcst pass to do.
        assert not gate.may_flag(tree), path.name


@pytest.mark.parametrize("name", sorted(FIRES))
def test_rule_fires_and_gate_admits(name):
    code, lines = FIRES[name]
    assert _assert_covered(_code(code)) == lines


@pytest.mark.parametrize("name", sorted(REJECTS))
def test_gate_rejects_where_rule_is_silent(name):
    code = _code(REJECTS[name])
    assert _rule_lines(code) == []
    assert not gate.may_flag(ast.parse(code))
    assert admitted([DoubleSoftmax], code) == []


# ``a``'s answer is found while ``b`` (whose value is ``a``) is still open, so the first
# pass caches "no" for ``b``; only the second pass sees that ``b`` holds a softmax.
CYCLE = """
import torch.nn as nn
import torch.nn.functional as F

def g(z, y):
    b = a
    return F.cross_entropy(b, y)

class Net(nn.Module):
    def forward(self, x):
        if x:
            return self.fc(x)
        return a

a = F.softmax(z, 1)
a = b
loss = F.cross_entropy(Net()(x), y)
"""


def test_cycles_are_solved_to_a_fixed_point(monkeypatch):
    code = _code(CYCLE)
    passes = []
    start = gate._Solver.start_pass
    monkeypatch.setattr(gate._Solver, "start_pass", lambda self: (passes.append(1), start(self)))
    assert _assert_covered(code) == [6]
    assert len(passes) >= 2  # the second pass is what finds line 6


def test_chains_deeper_than_the_recursion_limit_admit():
    # Following 3000 names overflows Python's stack; the gate then admits, never guesses.
    chain = "\n".join(f"x{i} = x{i + 1}" for i in range(3000))
    code = f"import torch.nn.functional as F\n{chain}\nx3000 = F.softmax(z, 1)\nF.cross_entropy(x0, y)\n"
    assert gate.may_flag(ast.parse(code))
