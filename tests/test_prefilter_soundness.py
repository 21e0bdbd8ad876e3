"""The prefilter only ever admits more: on every fixture and every rule example, laid out
with line continuations, comments or extra whitespace between tokens, the prefiltered
run reports exactly what the unfiltered run reports."""

from __future__ import annotations

import re

import pytest

import layout_variants
from helpers import ROOT, all_fixtures
from mllint.engine import lint_text
from mllint import prefilter
from mllint.prefilter import _ANY_LAYOUT, _requirements, _stage1, token_variants
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
    assert ml001.may_match(text)  # ML001's signs allow Python's layout between tokens
    assert _stage1([ml001], text) == [ml001]


def _tagged_patterns() -> list[str]:
    return sorted({p for rule in all_rules() for entry in _requirements(rule)
                   for p in ((entry,) if isinstance(entry, str) else entry)
                   if p.startswith(_ANY_LAYOUT)})


@pytest.mark.parametrize("name,text", SOURCES, ids=[n for n, _ in SOURCES])
def test_marked_patterns_match_as_written_whatever_the_layout(name, text):
    """The claim ``any_layout`` makes: where a marked pattern matches a normalised form
    of a layout, it matches that layout as written."""
    patterns = [re.compile(p) for p in _tagged_patterns()]
    for layout, variant in layout_variants.variants(text).items():
        forms = token_variants(variant)
        for p in patterns:
            if any(p.search(f) for f in forms):
                assert p.search(variant), (layout, p.pattern[:80])


def test_a_file_of_marked_signs_is_never_normalised(monkeypatch):
    def fail(text):
        raise AssertionError("normalised")

    monkeypatch.setattr(prefilter, "token_variants", fail)
    library_code = (
        "import math\n\n\ndef interval_value(step, test=None):  # no training here\n"
        "    for i in range(step):\n        yield math.sqrt(i) + (test or 0)\n"
    )
    assert _stage1(list(all_rules()), library_code) == []


def test_needed_words_cover_case_insensitive_parts_and_guards():
    assert prefilter._needed("(?i:foo)bar") == (frozenset({("foo", True)}), frozenset({("bar", False)}))
    assert prefilter._needed("(?i)Foo|bAr") == (frozenset({("foo", True), ("bar", True)}),)
    assert frozenset({("x", False), ("y", False)}) in prefilter._needed(prefilter.guarded(["x", "y"], "z"))
    ascii_text = prefilter._Texts("def STEP(): pass")
    assert not prefilter._layout_proof("(?i:step)", ascii_text)
    assert prefilter._layout_proof("(?i:walk)", ascii_text)
    # Beyond ASCII, ``re`` folds case more widely than ``str.lower`` (``ſ`` matches ``s``):
    # no case-insensitive proof there.
    assert re.search("(?i:step)", "ſtep")
    assert not prefilter._layout_proof("(?i:step)", prefilter._Texts("ſtep"))
