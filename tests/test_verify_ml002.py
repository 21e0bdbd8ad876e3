"""ML002's probe on real runs: train-mode validation is confirmed with the layers it
affects and the batch-norm update; eval mode and mode-free models are refuted."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("torch")

from mllint.rules.ml002_eval_mode_missing import EvalModeMissing
from validation_probe_support import run, run_moved

from mllint.types import Finding, Position, Span, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
RULES = [EvalModeMissing]


def test_bad_fixture_is_confirmed(tmp_path):
    findings, report = run("ml002", "bad_validation_in_train_mode.py", tmp_path, rules=RULES)
    assert [f.line for f in findings] == [43]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["train_mode_forwards"] == verdict.figures["forwards"] >= 1
    assert verdict.figures["mode_dependent_layers"] == "body.1 (BatchNorm1d), body.3 (Dropout)"
    assert verdict.figures["batch_norm_updated"] is True
    assert verdict.figures["batch_norm_mean_shift"] > 0
    assert "Dropout" in verdict.evidence and "batch-norm running statistics" in verdict.evidence


def test_good_twin_is_refuted_in_eval_mode(tmp_path):
    (finding,), report = run_moved("ml002", "bad_validation_in_train_mode.py",
                                   "good_validation_in_eval_mode.py", tmp_path, RULES)
    assert finding.line == 41  # the same forward, in the twin
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["train_mode_forwards"] == 0
    assert "eval mode" in verdict.evidence


def test_model_without_mode_dependent_layers_is_refuted_with_that_reason(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
        for x, y in DataLoader(data, batch_size=8):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            for x, y in DataLoader(data, batch_size=8):
                print(net(x).argmax(1))
    """).lstrip())
    finding = Finding(str(script), "ML002", "eval-mode-missing", "m", Span.lines(14, 14),
                      region=Span(Position(13, 1), Position(14, 1)), data={"model": "net"})
    report = verify([finding], VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=90))
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["train_mode_forwards"] >= 1
    assert verdict.figures["mode_dependent_layers"] == ""
    assert "no dropout or batch-norm layers" in verdict.evidence
