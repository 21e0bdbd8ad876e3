"""ML005's probe on real runs: the buggy fixtures are confirmed, the twins stay silent."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from helpers import FIXTURES
from mllint.engine import lint_path
from mllint.rules.ml005_double_softmax import DoubleSoftmax
from mllint.types import Finding, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
DIR = FIXTURES / "ml005"


def run(name: str, tmp_path, findings: list[Finding] | None = None):
    script = tmp_path / name
    shutil.copy(DIR / name, script)
    if findings is None:
        findings = list(lint_path(str(script), [DoubleSoftmax]).findings)
    report = verify(findings, VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=60))
    return findings, report


@pytest.mark.parametrize("name", [
    "bad_softmax_last_layer.py", "bad_trainer_softmax_probs.py", "bad_forward_returns_softmax.py",
])
def test_bad_fixture_is_confirmed(name, tmp_path):
    findings, report = run(name, tmp_path)
    assert len(findings) == 1
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["calls"] >= 1
    assert verdict.figures["distribution_calls"] == verdict.figures["calls"]
    assert verdict.figures["min_value"] >= 0
    assert verdict.figures["max_row_sum_error"] <= 1e-4
    assert "probability distribution" in verdict.evidence


def test_confirmed_figures_give_the_batch_shape(tmp_path):
    _, report = run("bad_softmax_last_layer.py", tmp_path)
    assert report.verdicts[0].figures["batch_shape"] == "32x3"


@pytest.mark.parametrize("name", [
    "good_softmax_last_layer.py", "good_trainer_softmax_probs.py",
    "good_forward_returns_softmax.py",
])
def test_good_twin_is_not_flagged_and_its_logits_refute_the_bug(name, tmp_path):
    assert lint_path(str(DIR / name), [DoubleSoftmax]).findings == ()
    # Point the bad twin's finding at the good twin's (identical) loss line: the run
    # shows logits there, so the probe refutes it.
    bad_path = DIR / name.replace("good_", "bad_")
    (bad,) = lint_path(str(bad_path), [DoubleSoftmax]).findings
    bad_code = bad_path.read_text().splitlines()[bad.line - 1].split("#")[0].strip()
    good_lines = (DIR / name).read_text().splitlines()
    line = next(n for n, text in enumerate(good_lines, 1)
                if text.strip() == bad_code.replace("probs, targets", "logits, targets"))
    moved = [Finding.from_dict({**bad.to_dict(), "path": str(tmp_path / name),
                                "line": line, "end_line": line})]
    _, report = run(name, tmp_path, moved)
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["distribution_calls"] == 0
