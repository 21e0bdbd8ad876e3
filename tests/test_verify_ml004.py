"""ML004's probe on real runs: the buggy fixtures are confirmed with their growing graphs;
the twins (and tensors summed under no_grad) come out refuted when pointed at."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from helpers import FIXTURES
from mllint.engine import lint_path
from mllint.rules.ml004_loss_tensor_accumulated import LossTensorAccumulated
from mllint.types import Finding, Position, Span, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
DIR = FIXTURES / "ml004"


def run(name: str, tmp_path, findings: list[Finding] | None = None):
    script = tmp_path / name
    shutil.copy(DIR / name, script)
    if findings is None:
        findings = list(lint_path(str(script), [LossTensorAccumulated]).findings)
    report = verify(findings, VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=90))
    return findings, report


def pointed_at(name: str, tmp_path, statement: str, accumulator: str) -> Finding:
    lines = (DIR / name).read_text().splitlines()
    line = next(n for n, t in enumerate(lines, 1) if t.strip() == statement)
    return Finding(
        path=str(tmp_path / name), code="ML004", name="loss-tensor-accumulated", message="",
        span=Span(Position(line, 1), Position(line, 80)),
        data={"kind": "training", "accumulator": accumulator, "loss": "loss"},
    )


@pytest.mark.parametrize("name,line,grad_fn", [
    ("bad_loss_accumulated.py", 24, "AddBackward0"),
    ("bad_trainer_history.py", 20, "MseLossBackward0"),
])
def test_bad_fixture_is_confirmed_with_a_growing_graph(name, line, grad_fn, tmp_path):
    findings, report = run(name, tmp_path)
    assert [f.line for f in findings] == [line]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["steps"] >= 2
    assert verdict.figures["grad_fn"] == grad_fn
    assert verdict.figures["graph_nodes"] > verdict.figures["graph_nodes_first"] > 0
    assert "every step's graph stays alive" in verdict.evidence


@pytest.mark.parametrize("name,statement,accumulator", [
    ("good_loss_item.py", "epoch_loss += loss.item()", "epoch_loss"),
    ("good_trainer_history.py", "self.history.append(loss.item())", "self.history"),
    ("ok_no_grad_accumulation.py", "running += loss", "running"),
    ("ok_detach.py", "detached.append(loss.detach())", "detached"),
])
def test_correct_code_refutes_the_bug(name, statement, accumulator, tmp_path):
    assert lint_path(str(DIR / name), [LossTensorAccumulated]).findings == ()
    _, report = run(name, tmp_path, [pointed_at(name, tmp_path, statement, accumulator)])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["runs"] >= 2


def test_meter_summing_loss_tensors_is_confirmed(tmp_path):
    findings, report = run("bad_meter_update.py", tmp_path)
    assert [(f.line, f.data["accumulator"], f.data.get("meter")) for f in findings] == [
        (38, "losses", True)]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["steps"] >= 2
    assert verdict.figures["graph_nodes"] > verdict.figures["graph_nodes_first"]
