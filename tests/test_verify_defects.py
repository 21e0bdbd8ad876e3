"""``--verify`` end to end through the CLI: verdicts in every format, exit codes, the run
summary, budgets for runs without optimizer steps, and the probes' fixed false verdicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from helpers import ROOT
from mllint.engine import lint_path
from mllint.registry import all_rules
from mllint.types import Finding, VerdictStatus
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
VERIFY = ROOT / "fixtures" / "verify"


def mllint(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mllint", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=240,
                          env={**os.environ, "NO_COLOR": "1", "MLLINT_NO_CACHE": "1"})


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copy(VERIFY / name, target)
    return target


# -- refuted findings are notes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def refuted_run(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """functional_dropout.py with p=0: ML002 (line 42) is refuted; every format once."""
    tmp = tmp_path_factory.mktemp("refuted")
    script = copy("functional_dropout.py", tmp)
    return {fmt: mllint("--verify", "--select", "ML002", "--format", fmt, script.name,
                        "--", "--p", "0", cwd=tmp)
            for fmt in ("full", "json", "github", "sarif")}


def test_refuted_finding_is_not_a_problem_in_full_format(refuted_run):
    proc = refuted_run["full"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "functional_dropout.py:42:29: ML002" in proc.stdout
    assert "--verify: refuted:" in proc.stdout
    assert "No problems found (1 finding refuted by the run)" in proc.stdout


def test_refuted_finding_is_a_notice_in_github_and_a_note_in_sarif(refuted_run):
    github = refuted_run["github"].stdout.splitlines()
    (annotation,) = [line for line in github if "ML002" in line]
    assert annotation.startswith("::notice file=functional_dropout.py,line=42,")
    assert not any(line.startswith("::error") for line in github)
    sarif = json.loads(refuted_run["sarif"].stdout)
    (result,) = sarif["runs"][0]["results"]
    assert (result["ruleId"], result["level"]) == ("ML002", "note")
    assert result["properties"]["verification"]["status"] == "refuted"
    assert refuted_run["sarif"].returncode == 0


def test_json_carries_the_run_summary_with_its_stop_reason(refuted_run):
    doc = json.loads(refuted_run["json"].stdout)
    (item,) = doc["diagnostics"]
    assert (item["code"], item["line"], item["verification"]["status"]) == (
        "ML002", 42, "refuted")
    run = doc["verify"]
    assert run["stop_reason"] == "settled" and run["steps"] >= 1
    assert run["crashed"] is None and run["timed_out"] is False


# -- crashes, fatal errors and exit codes ----------------------------------------------------


def test_crash_without_confirmed_findings_exits_2_with_full_message_and_output(tmp_path):
    script = copy("crash_with_colons.py", tmp_path)
    full = mllint("--verify", script.name, cwd=tmp_path)
    assert full.returncode == 2, full.stdout + full.stderr
    message = "ValueError: bad config: key 'lr': expected float: got str (at crash_with_colons.py:21)"
    assert f"the script crashed: {message}" in full.stdout
    assert "last lines of the script's output:" in full.stdout
    assert "training line 2" in full.stdout
    assert "No problems found, but the --verify run did not finish" in full.stdout
    doc = json.loads(mllint("--verify", "--format", "json", script.name, cwd=tmp_path).stdout)
    # Exit 2 holds only while nothing is confirmed: a runtime finding here would be the
    # reason for an exit 1, so it is named.
    assert doc["diagnostics"] == [], doc["diagnostics"]
    assert doc["verify"]["stop_reason"] == "crashed"
    assert doc["verify"]["crashed"] == message
    concise = mllint("--verify", "--format", "concise", script.name, cwd=tmp_path)
    assert concise.returncode == 2
    assert concise.stdout.strip().endswith(f"the script crashed: {message}.")


def test_show_output_passes_the_scripts_output_through(tmp_path):
    script = copy("crash_with_colons.py", tmp_path)
    proc = mllint("--verify", "--show-output", "--format", "concise", script.name, cwd=tmp_path)
    assert "training line 0\ntraining line 1\ntraining line 2\n" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fatal_verify_error_exits_2_and_keeps_the_static_findings(tmp_path):
    script = copy("several_findings.py", tmp_path)
    proc = mllint("--verify", "--device", "cuda", "--format", "json", script.name, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--verify: --device cuda, but torch.cuda.is_available() is False" in proc.stderr
    items = json.loads(proc.stdout)
    assert {(d["code"], d["line"]) for d in items} == {
        ("ML001", 28), ("ML002", 32), ("ML003", 32)}
    assert all("verification" not in d for d in items)


# -- budgets ---------------------------------------------------------------------------------


def test_not_reached_suggests_a_larger_step_budget(tmp_path):
    script = copy("several_findings.py", tmp_path)
    doc = json.loads(mllint("--verify", "--max-steps", "2", "--select", "ML002",
                            "--format", "json", script.name, cwd=tmp_path).stdout)
    (item,) = doc["diagnostics"]
    assert item["verification"]["status"] == "not-reached"
    assert "e.g. --max-steps 10" in item["verification"]["evidence"]
    assert doc["verify"]["stop_reason"] == "steps"


@pytest.mark.parametrize("name,reason", [("manual_sgd.py", "steps"),
                                         ("evaluate_forever.py", "batches")])
def test_runs_without_optimizer_steps_are_bounded(name, reason, tmp_path):
    script = copy(name, tmp_path)
    proc = mllint("--verify", "--timeout", "120", "--format", "json", script.name, cwd=tmp_path)
    run = json.loads(proc.stdout)["verify"]
    assert run["stop_reason"] == reason, run
    assert run["seconds"] < 100


# -- probes that gave wrong or no verdicts --------------------------------------------------


def _verify_fixture(name: str, tmp_path: Path, *args: str, select: str | None = None):
    script = copy(name, tmp_path)
    rules = [r for r in all_rules() if select is None or r.code == select]
    findings = list(lint_path(str(script), rules).findings)
    return findings, verify(findings, VerifyOptions(script=str(script), script_args=args,
                                                    cwd=str(tmp_path), timeout=120))


@pytest.mark.parametrize("p,status", [("0", VerdictStatus.REFUTED),
                                      ("0.5", VerdictStatus.CONFIRMED)])
def test_ml002_is_confirmed_only_when_train_and_eval_mode_compute_differently(p, status, tmp_path):
    findings, report = _verify_fixture("functional_dropout.py", tmp_path, "--p", p,
                                       select="ML002")
    assert [(f.code, f.line) for f in findings] == [("ML002", 42)]
    (verdict,) = report.verdicts
    assert verdict.status is status, verdict.evidence
    assert verdict.figures["compared_with_eval"] == 3
    assert (verdict.figures["differed_from_eval"] > 0) == (status is VerdictStatus.CONFIRMED)


def test_ml003_probe_handles_a_sparse_parameter(tmp_path):
    findings, report = _verify_fixture("sparse_validation.py", tmp_path, select="ML003")
    assert [(f.code, f.line) for f in findings] == [("ML003", 34)]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert verdict.figures["saved_bytes"] > 0


def test_ml001_lbfgs_closure_is_judged_inside_step(tmp_path):
    findings, report = _verify_fixture("lbfgs_closure.py", tmp_path, select="ML001")
    assert [(f.code, f.line) for f in findings] == [("ML001", 19)]
    (verdict,) = report.verdicts
    assert verdict.status is VerdictStatus.CONFIRMED, verdict.evidence
    assert "closure's backward" in verdict.evidence
    # The healthy twin (zero_grad() first thing in the closure), same finding: refuted.
    healthy = tmp_path / "lbfgs_healthy.py"
    healthy.write_text((VERIFY / "lbfgs_closure.py").read_text().replace(
        "            loss = nn.functional", "            optimizer.zero_grad()\n"
        "            loss = nn.functional"))
    moved = Finding.from_dict({**findings[0].to_dict(), "path": str(healthy),
                               "line": 20, "end_line": 20})
    (verdict,) = verify([moved], VerifyOptions(script=str(healthy), cwd=str(tmp_path),
                                               timeout=120)).verdicts
    assert verdict.status is VerdictStatus.REFUTED, verdict.evidence
    assert verdict.figures["closure_evaluations"] > 1
