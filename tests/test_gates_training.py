"""The ast gates of ML006 and ML008 (``mllint.gates.training``): sound and useful.

Sound: every snippet the libcst rule flags, written each way the rule recognises, is
admitted by its gate. Useful: the library code the gates exist for is turned away.
"""

from __future__ import annotations

import ast
import textwrap

import pytest

from mllint.engine import lint_text
from mllint.gates import training as gates
from mllint.rules.ml006_model_only_checkpoint import ModelOnlyCheckpoint
from mllint.rules.ml008_swallowed_training_error import SwallowedTrainingError


def _flags(rule, code: str) -> list[int]:
    return [f.line for f in lint_text("t.py", code, [rule], prefilter=False).findings]


def _tree(code: str) -> ast.Module:
    return ast.parse(code)


_CKPT_LOOP = """
{imports}

def train(model, loader):
    opt = {optimizer}(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for x, y in loader:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        {save}(model.state_dict(), "checkpoints/last.pt")
"""

CHECKPOINT_FLAGGED = [
    ("import torch", "torch.optim.Adam", "torch.save", 11),
    ("import torch\nfrom torch import optim", "optim.AdamW", "torch.save", 12),
    ("from torch import save as torch_save\nimport torch.optim as O", "O.Adam", "torch_save", 12),
    ("import torch.serialization\nfrom torch.optim import RMSprop as R", "R",
     "torch.serialization.save", 12),
    ("import torch as T\nfrom transformers import AdamW", "AdamW", "T.save", 12),
]


@pytest.mark.parametrize("imports, optimizer, save, line", CHECKPOINT_FLAGGED)
def test_checkpoint_gate_admits_what_ml006_flags(imports, optimizer, save, line):
    code = textwrap.dedent(_CKPT_LOOP).format(imports=imports, optimizer=optimizer, save=save)
    assert _flags(ModelOnlyCheckpoint, code) == [line]
    assert ModelOnlyCheckpoint.may_match(code)
    assert gates.checkpoint_may_flag(_tree(code))


@pytest.mark.parametrize("code", [
    # Saves, but builds no optimizer: ML006 has no optimizer state to miss.
    "import torch\ndef export(m):\n    torch.save(m.state_dict(), 'm.pt')\n",
    # Builds an optimizer, writes with something that neither is torch.save nor is
    # named like a checkpoint helper.
    "import torch, pickle\ndef f(m, tok, fh):\n    o = torch.optim.Adam(m.parameters())\n"
    "    tok.push_to_hub('out')\n    pickle.dump(m, fh)\n",
    # Calls a helper named like saving, but nothing is or may be an optimizer.
    "import torch\ndef f(m, tok):\n    tok.save_pretrained('out')\n    m.save('x')\n",
])
def test_checkpoint_gate_turns_away_what_ml006_cannot_flag(code):
    assert _flags(ModelOnlyCheckpoint, code) == []
    assert not gates.checkpoint_may_flag(_tree(code))


_SWALLOW = [
    # A same-module helper that trains, called in the try body.
    ("""
     import torch
     def step(model, opt, x):
         opt.zero_grad()
         model(x).sum().backward()
         opt.step()
     def run(model, opt, loader):
         for x in loader:
             try:
                 step(model, opt, x)
             except Exception:
                 continue
     """, 10),
    # A tuple with BaseException, the error logged, not raised.
    ("""
     def fit(net, opt_d, batches, log):
         for b in batches:
             opt_d.zero_grad()
             try:
                 net(b).mean().backward()
                 opt_d.step()
             except (ValueError, BaseException) as err:
                 log(err)
     """, 7),
    # torch.autograd.backward under an alias, bare except; the optimizer named oddly but
    # built by a constructor.
    ("""
     import torch
     from torch.autograd import backward as bw
     def train(model, data):
         w = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
         for x in data:
             w.zero_grad()
             try:
                 bw(model(x).sum())
             except:
                 pass
             w.step()
     """, 9),
    # A method of the same class, and a raise that only a nested function would run.
    ("""
     class Trainer:
         def train_step(self, batch):
             self.optimizer.zero_grad()
             self.model(batch).sum().backward()
             self.optimizer.step()
         def fit(self, loader):
             for batch in loader:
                 try:
                     self.train_step(batch)
                 except Exception:
                     def later():
                         raise
                     self.failed = later
     """, 10),
]


@pytest.mark.parametrize("code, line", _SWALLOW)
def test_swallow_gate_admits_what_ml008_flags(code, line):
    code = textwrap.dedent(code).strip() + "\n"
    assert _flags(SwallowedTrainingError, code) == [line]
    assert SwallowedTrainingError.may_match(code)
    assert gates.swallow_may_flag(_tree(code))


@pytest.mark.parametrize("code", [
    # Trains, but the broad handler guards an optional import only.
    "import torch\ntry:\n    import wandb\nexcept Exception:\n    wandb = None\n"
    "def f(m, opt):\n    m(1).backward()\n    opt.step()\n",
    # A broad handler around a step that re-raises.
    "def f(m, opt):\n    try:\n        m(1).backward()\n        opt.step()\n"
    "    except Exception:\n        print('x')\n        raise\n",
    # Steps only a scheduler: nothing in the module trains.
    "def f(sched, load):\n    try:\n        load()\n        sched.step()\n"
    "    except Exception:\n        pass\n",
])
def test_swallow_gate_turns_away_what_ml008_cannot_flag(code):
    assert _flags(SwallowedTrainingError, code) == []
    assert not gates.swallow_may_flag(_tree(code))


def test_gates_never_import_libcst():
    import subprocess
    import sys

    probe = ("import sys, mllint.gates.training, mllint.gates.resolve; "
             "print('libcst' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
