"""The runtime checks ML101-ML108: their definitions and docs, and each one's triggering
script and healthy twin run end to end on the CPU under ``--verify``.

A fixture marks the lines where a runtime finding must land with ``# runtime: ML10x``;
every other line must stay silent, and the healthy setups report no runtime finding."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from mllint.cli import rules_table
from mllint.registry import all_checks, all_rules, rule_by_code

RUNTIME = ROOT / "fixtures" / "runtime"
_MARK = re.compile(r"#\s*runtime:\s*(?P<codes>ML\d{3}(?:\s*,\s*ML\d{3})*)")
CODES = [f"ML10{i}" for i in range(1, 9)]


def marked(path: Path) -> set[tuple[str, int]]:
    out = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _MARK.search(line)
        if m:
            out |= {(c.strip(), n) for c in m.group("codes").split(",")}
    return out


# -- definitions and docs ---------------------------------------------------------------------


def test_every_check_is_discovered_and_well_defined():
    assert [c.code for c in all_checks()] == CODES
    for check in all_checks():
        assert check.validate_definition() == []
        assert rule_by_code(check.code) is check and rule_by_code(check.name) is check
    assert not {c.code for c in all_checks()} & {r.code for r in all_rules()}


@pytest.mark.parametrize("code", CODES)
def test_mllint_rule_prints_the_checks_docs_with_its_threshold(code):
    proc = subprocess.run([sys.executable, "-m", "mllint", "rule", code],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    check = rule_by_code(code)
    assert proc.stdout.startswith(f"# {code} {check.name} (runtime check, `--verify`)\n")
    for heading in ("What it does", "Why is this bad?", "Threshold", "How --verify measures it"):
        assert f"\n## {heading}\n" in proc.stdout


def test_rules_listing_and_readme_table_know_the_checks():
    listing = subprocess.run([sys.executable, "-m", "mllint", "rules"], capture_output=True,
                             text=True, timeout=60).stdout
    for check in all_checks():
        assert re.search(rf"^{check.code}\s+{check.name}\s", listing, re.M)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- checks-table:start[^\n]*-->\n(.*?)<!-- checks-table:end -->", text, re.S)
    assert m, "README lost its runtime-check table markers"
    assert m.group(1) == rules_table(all_checks())


def test_select_and_ignore_name_rules_and_checks_alike():
    from mllint.manifest import rule_infos
    from mllint.registry import UnknownRuleError, select_rules_and_checks

    infos = rule_infos()
    codes = lambda chosen: [r.code for r in chosen]  # noqa: E731
    rules, checks = select_rules_and_checks(["ML1"], [], infos)
    assert (codes(rules), codes(checks)) == ([], CODES)
    rules, checks = select_rules_and_checks([], ["ML105", "dead-units"], infos)
    assert codes(rules) == [r.code for r in infos]
    assert codes(checks) == [c for c in CODES if c not in ("ML105", "ML107")]
    rules, checks = select_rules_and_checks(["ML001"], [], infos)
    assert (codes(rules), codes(checks)) == (["ML001"], [])
    with pytest.raises(UnknownRuleError):
        select_rules_and_checks(["ML199"], [], infos)


def test_every_check_has_a_triggering_script_and_a_healthy_twin():
    for code in CODES:
        names = sorted(p.name for p in (RUNTIME / code.lower()).glob("*.py"))
        bad = [n for n in names if n.startswith("bad_")]
        assert bad and all(f"good_{n[4:]}" in names for n in bad), code
        assert any(code in {c for c, _ in marked(RUNTIME / code.lower() / n)} for n in bad)


# -- end to end -------------------------------------------------------------------------------

def runtime_findings(script: Path, **options) -> set[tuple[str, int]]:
    pytest.importorskip("torch")
    from mllint.verify.harness import VerifyOptions, verify

    report = verify([], VerifyOptions(script=str(script), cwd=str(script.parent),
                                      timeout=240, **options))
    assert report.run.crashed is None, report.run.crashed
    assert not [n for n in report.run.notes if "failed" in n], report.run.notes
    return {(f.code, f.line) for f, _ in report.runtime_findings}


FIXTURES = sorted((RUNTIME / c.lower() / n.name)
                  for c in CODES for n in (RUNTIME / c.lower()).glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_runtime_findings_match_markers(path):
    options = {"overfit_batch": 30} if path.parent.name == "ml108" else {}
    assert runtime_findings(path, **options) == marked(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet_sgd.py", "transformer_adamw.py", "lstm_lm.py"])
def test_healthy_setups_report_no_runtime_finding(name):
    assert runtime_findings(RUNTIME / "healthy" / name) == set()


@pytest.mark.slow
def test_overfit_batch_passes_on_a_healthy_setup_and_is_opt_in():
    script = RUNTIME / "ml108" / "bad_normalised_over_features.py"
    assert ("ML108", 23) not in runtime_findings(script)  # not asked for: not performed
    assert runtime_findings(RUNTIME / "healthy" / "resnet_sgd.py", overfit_batch=30) == set()
