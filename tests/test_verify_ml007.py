"""ML007's probe on real runs: validation on the training data is confirmed (same loader,
same dataset, overlapping samples); a held-out split is refuted."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from mllint.rules.ml007_validation_on_train_data import ValidationOnTrainData
from validation_probe_support import run, run_moved

from mllint.types import VerdictStatus

pytestmark = pytest.mark.slow
RULES = [ValidationOnTrainData]


def test_val_loader_built_from_the_training_set_is_confirmed(tmp_path):
    findings, report = run("ml007", "bad_val_loader_from_train_set.py", tmp_path, rules=RULES)
    assert [f.line for f in findings] == [17]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["same_loader"] is False
    assert verdict.figures["same_dataset"] is True
    assert verdict.figures["shared_samples"] > 0
    assert 0 < verdict.figures["shared_fraction"] <= 1
    assert "same TensorDataset" in verdict.evidence


def test_evaluation_of_the_training_loader_is_confirmed(tmp_path):
    findings, report = run("ml007", "bad_evaluate_on_train_loader.py", tmp_path, rules=RULES)
    assert [f.line for f in findings] == [31]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["same_loader"] is True
    assert "very DataLoader" in verdict.evidence


@pytest.mark.parametrize("bad,good", [
    ("bad_val_loader_from_train_set.py", "good_val_loader_from_val_set.py"),
    ("bad_evaluate_on_train_loader.py", "good_evaluate_on_val_loader.py"),
])
def test_good_twin_is_refuted(bad, good, tmp_path):
    _, report = run_moved("ml007", bad, good, tmp_path, RULES)
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["same_loader"] is False
    assert verdict.figures["same_dataset"] is False
    assert verdict.figures["shared_samples"] == 0
