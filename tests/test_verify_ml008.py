"""ML008's probe: a fault injected into the flagged try is swallowed (confirmed) or not."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from helpers import FIXTURES
from mllint.engine import lint_path
from mllint.rules.ml008_swallowed_training_error import SwallowedTrainingError
from mllint.types import Finding, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
DIR = FIXTURES / "ml008"


def run(name: str, tmp_path, findings: list[Finding] | None = None):
    script = tmp_path / name
    shutil.copy(DIR / name, script)
    if findings is None:
        findings = list(lint_path(str(script), [SwallowedTrainingError]).findings)
    report = verify(findings, VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=60))
    return findings, report


def test_skipped_step_is_confirmed_by_further_steps(tmp_path):
    findings, report = run("bad_skip_failed_step.py", tmp_path)
    assert len(findings) == 1
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["injected_at_step"] == 0
    assert verdict.figures["steps_after"] >= 1
    assert verdict.figures["handler_ran"] is True
    assert "training went on" in verdict.evidence
    assert report.fault_run is not None and report.fault_run.crashed is None


def test_whole_training_swallowed_is_confirmed_by_code_after_the_try(tmp_path):
    findings, report = run("bad_bare_except_around_training.py", tmp_path)
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["steps_after"] == 0
    assert verdict.figures["after_line"] == 30
    assert "carried on after the try" in verdict.evidence


@pytest.mark.parametrize("name", ["good_skip_failed_step.py", "good_bare_except_around_training.py"])
def test_good_twin_is_not_flagged_and_the_fault_propagates(name, tmp_path):
    assert lint_path(str(DIR / name), [SwallowedTrainingError]).findings == ()
    (bad,) = lint_path(str(DIR / name.replace("good_", "bad_")), [SwallowedTrainingError]).findings
    # The twins have the same lines; point the bad twin's finding at the good script.
    moved = Finding.from_dict({**bad.to_dict(), "path": str(tmp_path / name)})
    _, report = run(name, tmp_path, [moved])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert report.fault_run is not None
    assert report.fault_run.crashed.startswith("InjectedFault")


def test_skipped_forward_is_confirmed_by_further_steps(tmp_path):
    findings, report = run("bad_skip_failed_forward.py", tmp_path)
    assert [(f.line, f.data["skipped_step_line"]) for f in findings] == [(21, 26)]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["injected_line"] == 19
    assert verdict.figures["steps_after"] >= 1
    assert verdict.figures["handler_ran"] is True
    assert "training went on" in verdict.evidence
