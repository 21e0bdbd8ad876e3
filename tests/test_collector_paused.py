"""``engine.lint.lint_text`` and the prefilter's gates pause the cyclic garbage collector
for one file only."""

from __future__ import annotations

import gc

import pytest

from mllint import prefilter
from mllint.engine import lint
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
