"""``engine.lint.lint_text`` pauses the cyclic garbage collector for one file only."""

from __future__ import annotations

import gc

import pytest

from mllint.engine import lint
from mllint.registry import all_rules

ML001 = next(r for r in all_rules() if r.code == "ML001")
CODE = ML001.INVALID[0].code  # a file with an ML001 finding


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
