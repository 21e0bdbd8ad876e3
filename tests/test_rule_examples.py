"""Every rule's VALID and INVALID examples are test cases; its docs are checked too."""

from __future__ import annotations

import pytest

from mllint.engine import lint_text
from mllint.prefilter import admitted
from mllint.registry import all_rules

RULES = all_rules()


def _cases(kind: str):
    for rule in RULES:
        for i, example in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, example, id=f"{rule.code}-{kind.lower()}-{i}")


def test_rules_are_discovered():
    codes = [r.code for r in RULES]
    assert codes == sorted(set(codes))
    assert {f"ML00{i}" for i in range(1, 9)} <= set(codes)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_rule_definition(rule):
    assert rule.validate_definition() == []


@pytest.mark.parametrize("rule,example", list(_cases("INVALID")))
def test_invalid_example_is_flagged_on_expected_lines(rule, example):
    result = lint_text("example.py", example.code, [rule])
    assert result.errors == ()
    assert [f.line for f in result.findings] == list(example.lines)
    assert all(f.code == rule.code for f in result.findings)


@pytest.mark.parametrize("rule,example", list(_cases("VALID")))
def test_valid_example_is_not_flagged(rule, example):
    result = lint_text("example.py", example.code, [rule])
    assert result.errors == ()
    assert result.findings == ()


@pytest.mark.parametrize("rule,example", list(_cases("INVALID")))
def test_prefilter_admits_every_invalid_example(rule, example):
    assert rule.may_match(example.code)
    assert admitted([rule], example.code) == [rule]  # the ast gate too, where defined


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_documentation_shows_first_examples(rule):
    doc = rule.documentation()
    assert doc.startswith(f"# {rule.code} {rule.name}")
    assert rule.INVALID[0].code.strip() in doc
    assert rule.VALID[0].code.strip() in doc
    for heading in ("What it does", "Why is this bad?", "Example", "Use instead",
                    "How --verify confirms it"):
        assert f"## {heading}" in doc
