"""Every fixture is linted with every rule; findings must equal its ``# expect:`` markers.

A marker is a trailing comment on the line where a finding is expected, e.g.
``optimizer.step()  # expect: ML001``. Unmarked lines must stay silent, so these
fixtures are the precision suite as much as the recall suite.
"""

from __future__ import annotations

import pytest

from helpers import ROOT, all_fixtures, expected
from mllint.engine import lint_path
from mllint.registry import all_rules

FIXTURES = all_fixtures()


def test_there_are_fixtures_for_every_rule():
    dirs = {p.parent.name for p in FIXTURES}
    for rule in all_rules():
        code = rule.code.lower()
        assert code in dirs, f"no fixtures/{code}/"
        names = [p.name for p in FIXTURES if p.parent.name == code]
        assert any(n.startswith("bad_") for n in names), f"{code}: no bad_ fixture"
        assert any(n.startswith("good_") for n in names), f"{code}: no good_ fixture"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_fixture_findings_match_markers(path):
    result = lint_path(str(path), all_rules())
    assert result.errors == ()
    got = {(f.code, f.line) for f in result.findings}
    assert got == expected(path)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_prefilter_changes_no_result(path):
    with_filter = lint_path(str(path), all_rules(), prefilter=True)
    without = lint_path(str(path), all_rules(), prefilter=False)
    assert with_filter.findings == without.findings
