"""ML001's probe on real runs: the buggy fixtures are confirmed; correct code (the twins,
gradient accumulation, a GAN) comes out refuted when the probe is pointed at it."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from helpers import FIXTURES
from mllint.engine import lint_path
from mllint.rules.ml001_missing_zero_grad import MissingZeroGrad
from mllint.types import Finding, Position, Span, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
DIR = FIXTURES / "ml001"


def run(name: str, tmp_path, findings: list[Finding] | None = None):
    script = tmp_path / name
    shutil.copy(DIR / name, script)
    if findings is None:
        findings = list(lint_path(str(script), [MissingZeroGrad]).findings)
    report = verify(findings, VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=90))
    return findings, report


def line_of(name: str, text: str, after: int = 0) -> int:
    lines = (DIR / name).read_text().splitlines()
    return next(n for n, t in enumerate(lines, 1) if n > after and t.strip() == text)


def pointed_at(name: str, tmp_path, step: str, loop: str, kind: str, optimizer: str) -> Finding:
    """A finding like the rule's, on ``step`` inside ``loop`` of a fixture it leaves alone."""
    start = line_of(name, loop)
    line = line_of(name, step, after=start)
    return Finding(
        path=str(tmp_path / name), code="ML001", name="missing-zero-grad", message="",
        span=Span(Position(line, 1), Position(line, 80)), region=Span.lines(start, line + 1),
        data={"kind": kind, "optimizer": optimizer},
    )


def test_never_cleared_is_confirmed_with_the_leftover_gradients(tmp_path):
    findings, report = run("bad_no_zero_grad.py", tmp_path)
    assert [f.line for f in findings] == [20]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["optimizer_class"] == "SGD"
    assert verdict.figures["step"] == 2
    assert verdict.figures["leftover_grad_norm"] > 0
    assert verdict.figures["params_with_grad"] == verdict.figures["params"] == 4
    assert "left over from step 1" in verdict.evidence


def test_cleared_before_step_is_confirmed_with_all_zero_gradients(tmp_path):
    findings, report = run("bad_zero_grad_between_backward_and_step.py", tmp_path)
    assert [f.line for f in findings] == [23]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["optimizer_class"] == "Adam"
    assert verdict.figures["params_with_grad"] == 0
    assert "all-zero gradients" in verdict.evidence


def test_good_twin_is_not_flagged_and_refutes_the_bug(tmp_path):
    name = "good_no_zero_grad.py"
    assert lint_path(str(DIR / name), [MissingZeroGrad]).findings == ()
    finding = pointed_at(name, tmp_path, "optimizer.step()", "for x, y in loader:",
                         "never-cleared", "optimizer")
    _, report = run(name, tmp_path, [finding])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["clean_checks"] >= 2


def test_good_between_twin_refutes_the_bug(tmp_path):
    name = "good_zero_grad_between_backward_and_step.py"
    assert lint_path(str(DIR / name), [MissingZeroGrad]).findings == ()
    finding = pointed_at(name, tmp_path, "optimizer.step()", "for x, y in loader:",
                         "cleared-before-step", "optimizer")
    _, report = run(name, tmp_path, [finding])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert "non-zero gradients" in verdict.evidence


def test_gradient_accumulation_is_refuted(tmp_path):
    name = "ok_grad_accumulation.py"
    finding = pointed_at(name, tmp_path, "optimizer.step()",
                         "for i, (x, y) in enumerate(batches):", "never-cleared", "optimizer")
    _, report = run(name, tmp_path, [finding])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence


def test_gan_whose_generator_pass_fills_the_discriminator_grads_is_refuted(tmp_path):
    # loss_g.backward() runs through the discriminator after opt_d.step(), so its grads
    # are non-zero at the first backward after that step; discriminator.zero_grad()
    # clears them before opt_d steps again.
    name = "ok_gan_two_optimizers.py"
    finding = pointed_at(name, tmp_path, "opt_d.step()", "for _ in range(steps):",
                         "never-cleared", "opt_d")
    _, report = run(name, tmp_path, [finding])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["optimizer_class"] == "Adam"


def test_cleared_every_micro_batch_is_confirmed_by_the_discarded_gradients(tmp_path):
    findings, report = run("bad_zero_grad_every_micro_batch.py", tmp_path)
    assert [(f.line, f.data["kind"], f.data["clear_line"]) for f in findings] == [
        (21, "cleared-each-micro-batch", 17)]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["micro_batches"] == 4
    assert "last micro-batch's gradient alone" in verdict.evidence


def test_accumulation_cleared_after_the_step_refutes_the_micro_batch_bug(tmp_path):
    name = "good_zero_grad_every_micro_batch.py"
    finding = pointed_at(name, tmp_path, "optimizer.step()",
                         "for i, (x, y) in enumerate(batches):",
                         "cleared-each-micro-batch", "optimizer")
    _, report = run(name, tmp_path, [finding])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert "accumulated over all of them" in verdict.evidence
