"""ML006 model-only-checkpoint: fixtures, when a save is a training checkpoint, payloads."""

from __future__ import annotations

import textwrap

import pytest
from helpers import FIXTURES, expected
from mllint.rules.ml006_model_only_checkpoint import ModelOnlyCheckpoint

from mllint.engine import lint_path, lint_text

FIXTURE_FILES = sorted((FIXTURES / "ml006").glob("*.py"))

LOOP = """
import torch
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for epoch in range(3):
    for x, y in loader:
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
"""


def lint(code: str):
    result = lint_text("t.py", textwrap.dedent(code).lstrip("\n"), [ModelOnlyCheckpoint])
    assert result.errors == ()
    return result.findings


def lines(code: str) -> list[int]:
    return [f.line for f in lint(code)]


def in_loop(*saves: str, after: str = "") -> str:
    """The LOOP script with ``saves`` at the end of the epoch body and ``after`` after it."""
    body = "".join(f"    {s}\n" for s in saves)
    return LOOP.lstrip("\n") + body + after


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_markers(path):
    got = {(f.code, f.line) for f in lint_path(str(path), [ModelOnlyCheckpoint]).findings}
    assert got == {m for m in expected(path) if m[0] == "ML006"}


def test_finding_data_names_model_and_optimizer():
    (finding,) = lint_path(str(FIXTURES / "ml006" / "bad_weights_only_checkpoint.py"),
                           [ModelOnlyCheckpoint]).findings
    assert finding.line == 27
    assert finding.data == {"model": "model", "optimizer": "optimizer",
                            "evidence": "it is written periodically under a checkpoint name"}
    assert "`optimizer`" in finding.message and "`model`" in finding.message
    assert "an `Adam`: its first and second moments" in finding.message


@pytest.mark.parametrize("save, evidence", [
    ('torch.save(model.state_dict(), f"checkpoints/epoch_{epoch}.pt")', "checkpoint name"),
    ('torch.save(model, "latest.pth")', "checkpoint name"),
    ('torch.save({"model": model.state_dict(), "epoch": epoch}, "weights.pt")', "`epoch`"),
    ('torch.save(dict(state_dict=model.state_dict(), epoch=epoch), "w.pt")', "`epoch`"),
    ('torch.save({"model": model.state_dict(), "scheduler": sched.state_dict()}, "w.pt")',
     "`scheduler`"),
])
def test_weights_only_saves_meant_for_resuming_are_flagged(save, evidence):
    (finding,) = lint(in_loop(save))
    assert finding.line == 9 and evidence in finding.data["evidence"]


@pytest.mark.parametrize("save", [
    # periodic snapshots nothing says are for resuming
    'torch.save(model.state_dict(), f"epoch_{epoch}.pt")',
    'torch.save(model, "model.pt")',
    # best-model exports, by path or under a metric-improvement test
    'torch.save(model.state_dict(), "checkpoints/best.pt")',
    'if val_loss < best_loss:\n        torch.save(model.state_dict(), "ckpt.pt")',
    'if is_best:\n        torch.save({"model": model.state_dict(), "epoch": epoch}, "c.pt")',
    # the final export, written in the loop's last round
    'if epoch == args.epochs - 1:\n        torch.save(model.state_dict(), "checkpoint.pt")',
    # a path nobody can resume from
    'torch.save(model.state_dict(), f"ckpt/{uuid.uuid4()}.pt")',
])
def test_exports_without_resume_evidence_are_not_flagged(save):
    assert lint(in_loop(save)) == ()


@pytest.mark.parametrize("saves", [
    ['torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, "c.pt")'],
    ['torch.save({"model": model.state_dict(), "opt": optimizer}, "c.pt")'],
    ['state = {"model": model.state_dict()}', 'state["optimizer"] = optimizer.state_dict()',
     'torch.save(state, "c.pt")'],
    ['state = {"model": model.state_dict()}', 'state["opt"] = get_state()',
     'torch.save(state, "c.pt")'],
    ['state = {"model": model.state_dict()}', 'state.update(optimizer=optimizer.state_dict())',
     'torch.save(state, "c.pt")'],
    # a best-weights export beside a full checkpoint
    ['torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "l.pt")',
     'torch.save(model.state_dict(), "best.pt")'],
    # payload from an unknown helper
    ['torch.save(make_checkpoint(model, optimizer), "last.pt")'],
    ['torch.save(get_state(), "last.pt")'],
])
def test_full_or_unknown_checkpoints_are_not_flagged(saves):
    assert lint(in_loop(*saves)) == ()


def test_final_exports_after_the_loop_are_not_flagged():
    assert lint(in_loop(after='torch.save(model.state_dict(), "checkpoints/model.pt")\n'
                              'torch.save(model, "final.pt")\n')) == ()


def test_no_optimizer_no_finding():
    assert lint("""
        import torch
        model = torch.nn.Linear(2, 2)
        for epoch in range(3):
            torch.save(model.state_dict(), f"ckpt_{epoch}.pt")
        """) == ()


def test_trainer_class_method_called_from_the_epoch_loop():
    assert lines("""
        import torch
        class Trainer:
            def __init__(self, model):
                self.model = model
                self.optimizer = torch.optim.AdamW(model.parameters())
            def _save(self, epoch):
                torch.save({"epoch": epoch, "model": self.model.state_dict()}, "e.pt")
            def fit(self, loader, epochs):
                for epoch in range(epochs):
                    for batch in loader:
                        self.optimizer.zero_grad()
                        self.model(batch).mean().backward()
                        self.optimizer.step()
                    self._save(epoch)
        """) == [7]


def test_resume_named_path_in_a_callback_is_a_checkpoint():
    code = """
        import torch
        class SaveCallback:
            def on_epoch_end(self, model, opt):
                torch.save(model.state_dict(), "checkpoints/last.pt")
        def fit(model, batches, callbacks):
            opt = torch.optim.Adam(model.parameters())
            for batch in batches:
                opt.zero_grad()
                model(batch).sum().backward()
                opt.step()
        """
    found = lint(code)
    assert [f.line for f in found] == [4]
    assert found[0].data == {"model": "model", "optimizer": "opt",
                             "evidence": "it is written periodically under a checkpoint name"}
    # Without any training in the module, a file named "last.pt" is no training checkpoint.
    no_training = code.split("        def fit")[0] + (
        "        def build(model):\n            return torch.optim.Adam(model.parameters())\n")
    assert lint(no_training) == ()


def test_framework_checkpoints_make_weight_saves_exports():
    assert lint(in_loop("accelerator.save_state('ckpt')",
                        'torch.save(model.state_dict(), f"w{epoch}.pt")')) == ()


def test_scheduler_and_scaler_state_is_not_the_model():
    assert lint(in_loop('torch.save(scheduler.state_dict(), "sched.pt")')) == ()


def test_prefilter():
    may = ModelOnlyCheckpoint.may_match
    assert may("torch.save(m, p); torch.optim.SGD(ps)")
    assert may("from torch import save\nfrom transformers import AdamW as A\nsave(m, p)")
    assert may("from torch import save as keep\nopt = A()\nkeep(m, p)")
    assert may("utils.save_checkpoint \\\n (m, opt)")  # a helper call, in any layout
    # The word alone is no save: an import never called, activation checkpointing flags.
    assert not may("from torch import save\nfrom transformers import AdamW as A")
    assert not may("self.gradient_checkpointing = True\noptimizer = None")
    assert not may("torch.load(p); torch.optim.SGD(ps)")
    assert not may("torch.save(model.state_dict(), p)")  # no optimizer: nothing to lose
    for path in FIXTURE_FILES:
        text = path.read_text()
        assert lint_text(str(path), text, [ModelOnlyCheckpoint]).findings == lint_text(
            str(path), text, [ModelOnlyCheckpoint], prefilter=False).findings


@pytest.mark.parametrize("name", [
    "torch.optim.SGD", "torch.optim.adamw.AdamW", "transformers.AdamW",
    "transformers.optimization.Adafactor", "timm.optim.create_optimizer_v2",
    "bitsandbytes.optim.Adam8bit", "apex.optimizers.FusedAdam", "torch_optimizer.Lamb",
])
def test_prefilter_admits_every_optimizer_the_rule_recognises(name):
    from mllint.analysis.syntax import is_optimizer_constructor

    assert is_optimizer_constructor({name})
    # The import that makes ``name`` resolvable always spells this much of it.
    assert ModelOnlyCheckpoint.may_match(f"torch.save(x, p)\n{name}")


@pytest.mark.parametrize("sgd, flagged, state", [
    ("torch.optim.SGD(model.parameters(), lr=0.1)", False, None),
    ("torch.optim.SGD(model.parameters(), 0.1)", False, None),
    ("torch.optim.SGD(model.parameters(), lr=0.1, momentum=0)", False, None),
    ("torch.optim.SGD(model.parameters(), 0.1, 0.0, weight_decay=5e-4)", False, None),
    ("torch.optim.SGD(model.parameters(), 0.1, 0.9)", True, "(a `SGD`: its momentum buffers)"),
    ("torch.optim.SGD(model.parameters(), lr=0.1, momentum=args.momentum)", True,
     "(a `SGD`: its momentum buffers, if momentum is non-zero)"),
    ("torch.optim.SGD(model.parameters(), **cfg)", True, "if momentum is non-zero"),
])
def test_sgd_without_momentum_keeps_no_state(sgd, flagged, state):
    code = in_loop('torch.save(model.state_dict(), f"ckpt/epoch_{epoch}.pt")').replace(
        "torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)", sgd)
    findings = lint(code)
    assert [f.line for f in findings] == ([9] if flagged else [])
    if flagged:
        assert state in findings[0].message


def test_a_stateful_optimizer_beside_a_plain_sgd_is_still_lost():
    code = in_loop('torch.save(model.state_dict(), f"ckpt/epoch_{epoch}.pt")',
                   ).replace("for epoch", "critic_opt = torch.optim.Adam(model.parameters())\nfor epoch")
    code = code.replace("lr=0.1, momentum=0.9", "lr=0.1")
    (finding,) = lint(code)
    assert finding.line == 10 and finding.data["optimizer"] == "critic_opt"
    assert "momentum buffers" not in finding.message


def lint_script(tmp_path, code: str):
    """Lint ``code`` as train.py of a project of its own (the project model reads it)."""
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(code).lstrip("\n"))
    result = lint_path(str(path), [ModelOnlyCheckpoint])
    assert result.errors == ()
    return result.findings


GAN = """
import torch
netG = torch.nn.Linear(4, 4)
optimizerG = torch.optim.Adam(netG.parameters())
{load}
for epoch in range(3):
    for x in loader:
        optimizerG.zero_grad()
        netG(x).sum().backward()
        optimizerG.step()
    {save}
"""


@pytest.mark.parametrize("load, save, evidence", [
    # the same file, loaded before training to go on from it
    ('if opt.epoch != 0:\n    netG.load_state_dict(torch.load("saved/netG_%d.pth" % opt.epoch))',
     'torch.save(netG.state_dict(), "saved/netG_%d.pth" % epoch)',
     "the project loads it back to resume training (train.py:5)"),
    # weights loaded from an option into the model before training; saved per epoch
    ("if opt.netG:\n    netG.load_state_dict(torch.load(opt.netG))",
     "torch.save(netG.state_dict(), '%s/netG_epoch_%d.pth' % (opt.outf, epoch))",
     "the script loads `netG`'s weights back before training (line 5)"),
])
def test_saves_the_script_loads_back_before_training_are_flagged(tmp_path, load, save, evidence):
    (finding,) = lint_script(tmp_path, GAN.format(load=load, save=save))
    assert finding.line == 11 and finding.data["evidence"] == evidence


@pytest.mark.parametrize("load, save", [
    # a best-model export, even though some file is loaded into the model first
    ("netG.load_state_dict(torch.load(opt.netG))",
     "if loss < best:\n        torch.save(netG.state_dict(), opt.out)"),
    # pretrained weights of another file loaded into the model
    ('netG.load_state_dict(torch.load("pretrained/imagenet.pth"))',
     'torch.save(netG.state_dict(), f"netG_{epoch}.pth")'),
    # loaded after training, to test the best model: no resume
    ("", 'torch.save(netG.state_dict(), opt.save)\n'
         'netG.load_state_dict(torch.load(opt.save))\ntest(netG)'),
    # pretrained weights named by an option
    ("netG.load_state_dict(torch.load(args.pretrain))",
     'torch.save(netG.state_dict(), f"netG_{epoch}.pth")'),
    # two files built by one path method: the method's name is no file's name
    ('if opt.resume:\n    netG.load_state_dict(torch.load(paths.file_for("other")))',
     'torch.save(netG.state_dict(), paths.file_for("netG"))'),
])
def test_loads_that_do_not_resume_give_no_evidence(tmp_path, load, save):
    assert lint_script(tmp_path, GAN.format(load=load, save=save)) == ()


def test_a_file_named_where_the_script_decides_to_resume_is_loaded_back(tmp_path):
    code = GAN.format(
        load='if cfg.start_epoch > 0:\n    cfg.weights = "{}/netG_epoch_{}.pth".format(d, n)\n'
             'netG = build(cfg.weights)',
        save='torch.save(netG.state_dict(), "{}/netG_epoch_{}.pth".format(d, epoch))')
    (finding,) = lint_script(tmp_path, code)
    assert finding.line == 12
    assert finding.data["evidence"] == "the project loads it back to resume training (train.py:4)"


def test_a_checkpoint_helper_of_another_module_with_an_is_best_flag(tmp_path):
    # ``save_checkpoint(state, is_best, fpath)`` writes ``fpath`` every epoch and copies it
    # to a best-model file when ``is_best``: the flag does not make the checkpoint an export.
    (tmp_path / "serialization.py").write_text(textwrap.dedent("""
        import shutil
        import torch

        def save_checkpoint(state, is_best, fpath="checkpoint.pth.tar"):
            torch.save(state, fpath)
            if is_best:
                shutil.copy(fpath, "model_best.pth.tar")
    """))
    code = """
        import torch
        from serialization import save_checkpoint
        model = torch.nn.Linear(4, 4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        best_top1 = 0
        for epoch in range(3):
            for x in loader:
                optimizer.zero_grad()
                model(x).sum().backward()
                optimizer.step()
            top1 = evaluate(model)
            is_best = top1 > best_top1
            best_top1 = max(top1, best_top1)
            save_checkpoint({"state_dict": model.state_dict(), "epoch": epoch + 1},
                            is_best, fpath="logs/checkpoint.pth.tar")
    """
    (finding,) = lint_script(tmp_path, code)
    assert finding.line == 14
    assert finding.data["evidence"] == "its payload carries `epoch` for resuming"


def test_the_message_names_the_optimizer_over_the_saved_models_parameters():
    # The pretraining optimizer comes first; the saved model's parameters reach only the
    # second, through a helper named like ``parameters``.
    code = """
        import torch
        pretrain_opt = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9)
        optimizer = torch.optim.Adam(classifier.get_parameters() + head.get_parameters())
        for epoch in range(10):
            for x, y in loader:
                optimizer.zero_grad()
                classifier(x).sum().backward()
                optimizer.step()
            torch.save(classifier.state_dict(), "latest.pth")
    """
    (finding,) = lint(code)
    assert finding.line == 9 and finding.data["optimizer"] == "optimizer"
    assert "an `Adam`" in finding.message


SKIP_OR_TRAIN = """
import os
import torch

def main(net, loader, path):
    optimizer = torch.optim.Adam(net.parameters())
    if os.path.isfile(path):
        net.load_state_dict(torch.load(path))
{train}
"""
_TRAIN = """\
for epoch in range(10):
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    torch.save(net.state_dict(), path)
"""


def test_a_load_that_skips_training_is_no_resume(tmp_path):
    # ``if trained: load, else: train`` - the loaded weights are never trained further,
    # so the per-epoch save of the same file is not a checkpoint resumed from.
    skip = "    else:\n" + textwrap.indent(_TRAIN, " " * 8)
    assert lint_script(tmp_path, SKIP_OR_TRAIN.format(train=skip)) == ()


def test_a_load_followed_by_training_resumes(tmp_path):
    (finding,) = lint_script(tmp_path, SKIP_OR_TRAIN.format(train=textwrap.indent(_TRAIN, " " * 4)))
    assert finding.line == 13
    assert finding.data["evidence"] == "the script loads `net`'s weights back before training (line 7)"


HELPER_SAVE = """
import torch

def save_model(model):
    torch.save(model.state_dict(), "output/vit_checkpoint.bin")

def train(model, loader, valid):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    best_acc = 0.0
    for step, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step % 100 == 0:
            acc = valid(model)
            {call}
"""


def test_a_helper_called_only_when_the_metric_improves_saves_the_best_model(tmp_path):
    best = "if best_acc < acc:\n                save_model(model)\n                best_acc = acc"
    assert lint_script(tmp_path, HELPER_SAVE.format(call=best)) == ()
    (finding,) = lint_script(tmp_path, HELPER_SAVE.format(call="save_model(model)"))
    assert finding.line == 4
    assert finding.data["evidence"] == "it is written periodically under a checkpoint name"


KEYED = """
import torch

def main(args, model, loader, validate):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start_epoch, best = 0, float("inf")
    if args.resume:
        checkpoint = torch.load(args.resume)
        model.load_state_dict(checkpoint["state_dict"])
        start_epoch = checkpoint["epoch"]
        best = checkpoint["bce_best"]
    for epoch in range(start_epoch, 100):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        val_loss = validate(model)
        {save}
"""


def test_keys_shared_with_the_resume_code_point_at_the_last_file_not_the_best(tmp_path):
    # Both files carry the keys the --resume code reads; the one written every epoch is
    # the one to resume from, the one under the improvement test the best-model export.
    state = '{"epoch": epoch, "state_dict": model.state_dict(), "bce_best": best}'
    both = (f'if val_loss < best:\n            best = val_loss\n'
            f'            torch.save({state}, "weights/model_best_dice")\n'
            f'        torch.save({state}, "weights/model_last")')
    (finding,) = lint_script(tmp_path, KEYED.format(save=both))
    assert finding.line == 20
    assert finding.data["evidence"] == "the project loads it back to resume training (train.py:7)"


def test_a_best_checkpoint_the_resume_code_reads_is_resumed_from(tmp_path):
    # The only checkpoint, saved when the metric improves, is what --resume reads back.
    state = '{"epoch": epoch, "state_dict": model.state_dict(), "bce_best": best}'
    best = f'if val_loss < best:\n            best = val_loss\n            torch.save({state}, "weights/model_best")'
    (finding,) = lint_script(tmp_path, KEYED.format(save=best))
    assert finding.line == 19
    assert finding.data["evidence"] == "the project loads it back to resume training (train.py:7)"


AGENT = """
import torch

class Agent:
    def __init__(self):
        self.actor = torch.nn.Linear(4, 2)
        self.actor_target = torch.nn.Linear(4, 2)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters())

    def update(self, batch):
        loss = self.actor(batch).pow(2).mean()
        self.actor_optimizer.zero_grad()
        loss.backward()
        self.actor_optimizer.step()

    def save(self):
        torch.save(self.actor.state_dict(), "model/actor.pth")
        torch.save(self.actor_target.state_dict(), "model/actor_target.pth")

    def load(self):
        self.actor.load_state_dict(torch.load("model/actor.pth"))
        self.actor_target.load_state_dict(torch.load("model/actor_target.pth"))

def main(args, batches):
    agent = Agent()
    if args.mode == "test":
        agent.load()
        evaluate(agent)
    elif args.mode == "train":
        {resume}
        for i, batch in enumerate(batches):
            agent.update(batch)
            if i % 100 == 0:
                agent.save()
"""


def test_an_agent_saved_by_its_method_and_loaded_back_before_training_resumes(tmp_path):
    # ``if args.load: agent.load()`` then ``agent.update()`` in the loop: the agent's
    # load method is a resume, and its save method writes the weights without Adam's
    # state. The target network follows the actor; no optimizer concerns it.
    (finding,) = lint_script(tmp_path, AGENT.format(resume="if args.load:\n            agent.load()"))
    assert finding.line == 16 and finding.data["model"] == "self.actor"
    assert finding.data["evidence"] == "the project loads it back to resume training (train.py:30)"
    # Loaded only in test mode, the other branch of the mode switch: no resume (the same
    # file edited in place: the project model sees the change).
    assert lint_script(tmp_path, AGENT.format(resume="pass")) == ()


TWO_LOADS = """
import torch

net = torch.nn.Linear(4, 2)
net.load_state_dict(torch.load(args.model))
optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
start_epoch = 0
if args.resume:
    checkpoint = torch.load(args.checkpoint)
    net.load_state_dict(checkpoint["net"])
    start_epoch = checkpoint["epoch"]
for epoch in range(start_epoch, 100):
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    torch.save({"net": net.state_dict(), "epoch": epoch}, args.checkpoint)
"""


def test_the_evidence_names_the_load_that_reads_the_checkpoint_back(tmp_path):
    # torchcv: the initial weights' load (line 4) reads none of the keys; the resume
    # load (line 8) reads the checkpoint's "net" and "epoch".
    (finding,) = lint_script(tmp_path, TWO_LOADS)
    assert finding.line == 16
    assert finding.data["evidence"] == "the project loads it back to resume training (train.py:8)"


def test_the_message_cites_the_saving_scripts_own_resume(tmp_path):
    """Two scripts each resume a checkpoint of the same keys: each finding names the load
    of its own script, not the first one the project lists."""
    (tmp_path / "a_train.py").write_text(TWO_LOADS.lstrip("\n"))
    (finding,) = lint_script(tmp_path, TWO_LOADS)
    assert finding.data["evidence"] == "the project loads it back to resume training (train.py:8)"
    (finding,) = lint_path(str(tmp_path / "a_train.py"), [ModelOnlyCheckpoint]).findings
    assert finding.data["evidence"] == "the project loads it back to resume training (a_train.py:8)"
