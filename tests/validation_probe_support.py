"""Shared by the ML002/ML003/ML007 probe tests: run a fixture under ``--verify``, and
move a bad twin's finding onto its corrected twin (which lints clean) to show that the
probe refutes it there."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import FIXTURES

from mllint.engine import lint_path
from mllint.types import Finding
from mllint.verify.harness import VerifyOptions, verify


def run(code_dir: str, name: str, tmp_path: Path, findings=None, rules=()):
    script = tmp_path / name
    shutil.copy(FIXTURES / code_dir / name, script)
    if findings is None:
        findings = list(lint_path(str(script), list(rules)).findings)
    report = verify(findings, VerifyOptions(script=str(script), cwd=str(tmp_path), timeout=90))
    return findings, report


def moved(finding: Finding, bad: Path, good: Path, target: Path) -> Finding:
    """``finding`` (on ``bad``) placed on the same code in ``good``, saved as ``target``.

    The twins differ only in the fix, so the watched pass (the region's first line) is
    found by its code and everything moves by the same number of lines."""
    anchor = finding.region.start.line if finding.region else finding.line
    code = bad.read_text().splitlines()[anchor - 1].split("#")[0].strip()
    good_lines = good.read_text().splitlines()
    found = next(n for n, text in enumerate(good_lines, 1) if text.split("#")[0].strip() == code)
    delta = found - anchor
    line = finding.line + delta
    d = finding.to_dict()
    d.update(path=str(target), line=line, end_line=d["end_line"] + delta)
    if d["region"]:
        d["region"] = [d["region"][0] + delta, d["region"][1] + delta]
    for key in ("loop_line", "forward_line"):
        if d["data"].get(key):
            d["data"] = {**d["data"], key: d["data"][key] + delta}
    return Finding.from_dict(d)


def run_moved(code_dir: str, bad_name: str, good_name: str, tmp_path: Path, rules):
    bad = FIXTURES / code_dir / bad_name
    good = FIXTURES / code_dir / good_name
    assert lint_path(str(good), list(rules)).findings == ()
    (finding,) = lint_path(str(bad), list(rules)).findings
    target = tmp_path / good_name
    return run(code_dir, good_name, tmp_path, [moved(finding, bad, good, target)])
