"""ML003's probe on real runs: autograd on during validation is confirmed with the graph
it kept; no_grad and frozen models are refuted."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from helpers import FIXTURES
from validation_probe_support import run, run_moved

from mllint.engine import lint_path
from mllint.rules.ml003_no_grad_missing import NoGradMissing
from mllint.types import Finding, Position, Span, VerdictStatus

pytestmark = pytest.mark.slow
RULES = [NoGradMissing]


def test_bad_fixture_is_confirmed(tmp_path):
    findings, report = run("ml003", "bad_validation_with_autograd.py", tmp_path, rules=RULES)
    assert [f.line for f in findings] == [22]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["grad_enabled_forwards"] == verdict.figures["forwards"] >= 1
    # 3 Linear + 2 ReLU layers: addmm, t and relu nodes, plus the parameter leaves.
    assert verdict.figures["graph_nodes"] >= 5
    # The batch's inputs and the two hidden activations (32x16 + 2 x 32x64 floats).
    assert verdict.figures["saved_bytes"] >= 4 * (32 * 16 + 2 * 32 * 64)
    assert "autograd node" in verdict.evidence


def test_good_twin_is_refuted(tmp_path):
    (finding,), report = run_moved("ml003", "bad_validation_with_autograd.py",
                                   "good_validation_under_no_grad.py", tmp_path, RULES)
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["grad_enabled_forwards"] == 0
    assert "autograd was off" in verdict.evidence


def test_frozen_model_is_refuted(tmp_path):
    source = FIXTURES / "ml003" / "ok_frozen_teacher.py"
    assert lint_path(str(source), RULES).findings == ()
    # Point a finding at the teacher's forward: the run shows no graph is recorded.
    script = tmp_path / "ok_frozen_teacher.py"
    line = next(n for n, t in enumerate(source.read_text().splitlines(), 1) if "teacher(x)" in t)
    finding = Finding(str(script), "ML003", "no-grad-missing", "m", Span.lines(line, line),
                      region=Span(Position(line - 1, 1), Position(line, 1)),
                      data={"model": "teacher"})
    _, report = run("ml003", "ok_frozen_teacher.py", tmp_path, findings=[finding])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["grad_enabled_forwards"] >= 1
    assert verdict.figures["graph_forwards"] == 0
    assert "no output required grad" in verdict.evidence
