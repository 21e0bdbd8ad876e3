"""ML006's probe on real runs: weights-only checkpoints confirmed, full ones refuted."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")

from helpers import FIXTURES
from mllint.engine import lint_path
from mllint.rules.ml006_model_only_checkpoint import ModelOnlyCheckpoint
from mllint.types import Finding, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
DIR = FIXTURES / "ml006"


def run(name: str, tmp_path, findings: list[Finding] | None = None):
    script = tmp_path / name
    shutil.copy(DIR / name, script)
    if findings is None:
        findings = list(lint_path(str(script), [ModelOnlyCheckpoint]).findings)
    report = verify(findings, VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=60))
    return findings, report


def saved_files(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "checkpoints").glob("*")) if (
        tmp_path / "checkpoints").exists() else []


@pytest.mark.parametrize("name,optimizer", [
    ("bad_weights_only_checkpoint.py", "Adam"),
    ("bad_checkpoint_helper.py", "SGD"),
])
def test_bad_fixture_is_confirmed_and_nothing_is_written(name, optimizer, tmp_path):
    findings, report = run(name, tmp_path)
    assert len(findings) == 1
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["optimizer"] == optimizer
    assert verdict.figures["state_tensors"] > 0 and verdict.figures["state_bytes"] > 0
    assert optimizer in verdict.evidence
    assert saved_files(tmp_path) == []


@pytest.mark.parametrize("name", ["good_weights_only_checkpoint.py", "good_checkpoint_helper.py"])
def test_good_twin_is_not_flagged_and_its_payload_refutes_the_bug(name, tmp_path):
    assert lint_path(str(DIR / name), [ModelOnlyCheckpoint]).findings == ()
    bad_path = DIR / name.replace("good_", "bad_")
    (bad,) = lint_path(str(bad_path), [ModelOnlyCheckpoint]).findings
    good_lines = (DIR / name).read_text().splitlines()
    line = next(n for n, text in enumerate(good_lines, 1) if "torch.save(" in text)
    moved = Finding.from_dict({**bad.to_dict(), "path": str(tmp_path / name),
                               "line": line, "end_line": line})
    _, report = run(name, tmp_path, [moved])
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert "holds the optimizer's state" in verdict.evidence
    assert saved_files(tmp_path) == []


def test_stateless_optimizer_refutes(tmp_path):
    # Momentum the linter cannot read (a plain SGD is not flagged at all) that is 0 at
    # run time: SGD keeps no state, so the probe refutes.
    script = tmp_path / "plain_sgd.py"
    script.write_text(
        (DIR / "bad_weights_only_checkpoint.py").read_text().replace(
            "torch.optim.Adam(model.parameters(), lr=1e-2)",
            'torch.optim.SGD(model.parameters(), lr=1e-2, momentum=float("0"))'))
    (finding,) = lint_path(str(script), [ModelOnlyCheckpoint]).findings
    report = verify([finding], VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=60))
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert "`optimizer` (SGD) held no state to lose" in verdict.evidence


def test_evidence_names_the_optimizer_of_the_finding_not_the_largest(tmp_path):
    # Two optimizers; the checkpoint is the small one's model. The evidence must cite the
    # optimizer the finding names (`optimizer`, a momentum SGD over 4 parameters), not the
    # Adam over the large encoder that holds more state.
    script = tmp_path / "two_optimizers.py"
    text = (DIR / "bad_checkpoint_helper.py").read_text()
    script.write_text(text)
    (finding,) = lint_path(str(script), [ModelOnlyCheckpoint]).findings
    name = finding.data["optimizer"]
    marker = f"    {name} = "
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(marker))
    lines.insert(at + 1, "    big = torch.nn.Linear(256, 256)")
    lines.insert(at + 2, "    big_opt = torch.optim.Adam(big.parameters(), lr=1e-3)")
    lines.insert(at + 3, "    big(torch.randn(2, 256)).sum().backward(); big_opt.step()")
    script.write_text("\n".join(lines) + "\n")
    (finding,) = lint_path(str(script), [ModelOnlyCheckpoint]).findings
    report = verify([finding], VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=60))
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["optimizer"] == "SGD"
    assert f"`{name}` (SGD)" in verdict.evidence and "Adam" not in verdict.evidence
