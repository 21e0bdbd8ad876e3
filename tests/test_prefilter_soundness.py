"""The prefilter only ever admits more: on every fixture and every rule example, laid out
with line continuations, comments or extra whitespace between tokens, the prefiltered
run reports exactly what the unfiltered run reports."""

from __future__ import annotations

import pytest

import layout_variants
from helpers import ROOT, all_fixtures
from mllint.engine import lint_text
from mllint.prefilter import _stage1
from mllint.registry import all_rules


def _sources() -> list[tuple[str, str]]:
    out = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in all_fixtures()]
    for rule in all_rules():
        for i, example in enumerate([*rule.INVALID, *rule.VALID]):
            out.append((f"{rule.code}-example-{i}", example.code))
    return out


SOURCES = _sources()


def _findings(text: str, prefilter: bool) -> list[tuple[str, int, int]]:
    result = lint_text("f.py", text, all_rules(), prefilter=prefilter)
    assert result.errors == ()
    return [(f.code, f.line, f.span.start.column) for f in result.findings]


@pytest.mark.parametrize("name,text", SOURCES, ids=[n for n, _ in SOURCES])
def test_prefiltered_equals_unfiltered_for_every_layout(name, text):
    variants = layout_variants.variants(text)
    assert set(variants) == set(layout_variants.VARIANTS), "the variant generator failed"
    for layout, variant in variants.items():
        assert _findings(variant, True) == _findings(variant, False), layout


@pytest.mark.parametrize("text", [
    "loss.backward()\noptimizer.\\\n    step()\n",
    "loss.backward()\n(optimizer.  # c\n    step())\n",
])
def test_issue_examples_pass_the_literal_stage(text):
    [ml001] = [r for r in all_rules() if r.code == "ML001"]
    assert not ml001.may_match(text)  # the text as written fails ML001's regexes...
    assert _stage1([ml001], text) == [ml001]  # ...but stage 1 also tries it normalised
