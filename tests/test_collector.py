"""The cycle collector in a lint run: ``engine.lint.lint_text`` and the prefilter's gates
pause it for one file only; a file's tree is let go with its caches once the file is
done; only lint workers change the collector's thresholds."""

from __future__ import annotations

import ast
import gc
import subprocess
import sys

import pytest

from mllint import prefilter
from mllint.collector import BATCH_THRESHOLDS, batch_thresholds
from mllint.engine import lint, lint_text
from mllint.gates.resolve import drop_caches, nodes, parents, returns_of
from mllint.registry import all_rules

ML001 = next(r for r in all_rules() if r.code == "ML001")
CODE = ML001.INVALID[0].code  # a file with an ML001 finding
ML006 = next(r for r in all_rules() if r.code == "ML006")
GATED = ML006.INVALID[0].code  # ML006 has an ast gate; ML001 decides on ast itself


def test_paused_while_a_file_is_linted_and_resumed_after(monkeypatch):
    seen = []
    real = lint._lint_text

    def spy(*args):
        seen.append(gc.isenabled())
        return real(*args)

    monkeypatch.setattr(lint, "_lint_text", spy)
    assert gc.isenabled()
    result = lint.lint_text("train.py", CODE, all_rules())
    assert seen == [False]
    assert gc.isenabled()
    assert "ML001" in {f.code for f in result.findings}


def test_resumed_when_linting_raises(monkeypatch):
    def crash(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(lint, "_lint_text", crash)
    with pytest.raises(RuntimeError, match="boom"):
        lint.lint_text("train.py", CODE, all_rules())
    assert gc.isenabled()


def test_a_caller_that_paused_it_keeps_it_paused():
    gc.disable()
    try:
        lint.lint_text("train.py", CODE, all_rules())
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_paused_while_the_gates_judge_a_file_and_resumed_after(monkeypatch):
    seen = []
    real_parse, real_gate = prefilter.python_tree, prefilter._gate_admits

    def parse(text):
        seen.append(("parse", gc.isenabled()))
        return real_parse(text)

    def gate(spec, tree, project):
        seen.append((spec.rpartition(":")[2], gc.isenabled()))
        return real_gate(spec, tree, project)

    monkeypatch.setattr(prefilter, "python_tree", parse)
    monkeypatch.setattr(prefilter, "_gate_admits", gate)
    assert gc.isenabled()
    passed = prefilter.admitted(all_rules(), GATED)
    assert ("parse", False) in seen and ("checkpoint_may_flag", False) in seen
    assert all(enabled is False for _, enabled in seen)
    assert gc.isenabled()
    assert "ML006" in {r.code for r in passed}


def test_resumed_when_a_gate_raises_past_its_guard(monkeypatch):
    def crash(spec, tree, project):
        raise KeyboardInterrupt

    monkeypatch.setattr(prefilter, "_gate_admits", crash)
    with pytest.raises(KeyboardInterrupt):
        prefilter.admitted(all_rules(), GATED)
    assert gc.isenabled()


TRAIN = """\
import torch

def train(model, loader, optimizer):
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return loss
"""


def test_a_linted_file_leaves_no_tree_behind():
    lint_text("train.py", TRAIN, all_rules())
    assert prefilter._LAST == [None, None]


def test_forgetting_the_last_tree_drops_its_caches():
    tree = prefilter.python_tree(TRAIN)
    nodes(tree)
    func = tree.body[1]
    assert returns_of(tree, func) and parents(tree)
    assert any(name.startswith("_mllint_") for name in vars(tree))
    prefilter.forget_last()
    assert not any(name.startswith("_mllint_") for name in vars(tree))
    assert prefilter._LAST == [None, None]
    # What was cached is made again when asked.
    assert [type(r) for r in returns_of(tree, func)] == [ast.Return]


def test_drop_caches_leaves_other_attributes():
    tree = ast.parse("x = 1\n")
    tree.note = "kept"
    nodes(tree)
    drop_caches(tree)
    assert vars(tree) == {"body": tree.body, "type_ignores": [], "note": "kept"}


def test_batch_thresholds_are_set_only_when_asked():
    before = gc.get_threshold()
    try:
        batch_thresholds()
        assert gc.get_threshold() == BATCH_THRESHOLDS
    finally:
        gc.set_threshold(*before)
    # Importing mllint (a notebook, an editor) leaves the host's collector alone: the
    # thresholds after the import are those of a bare interpreter.
    def thresholds(imports: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", f"import gc{imports}; print(gc.get_threshold())"],
            capture_output=True, text=True, check=True).stdout.strip()

    bare = thresholds("")
    assert bare != str(BATCH_THRESHOLDS)
    assert thresholds(", mllint.cli, mllint.engine, mllint.runner, mllint.workers") == bare
