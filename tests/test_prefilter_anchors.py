"""Stage 1's shortcuts find exactly what a plain ``re.search`` finds: the regex tried only
where one of its heads occurs (``prefilter._heads``, on a lower-case copy of the text that
keeps its positions), a ``both`` pattern as its two parts, a ``dotted`` one from its word
back to the dot, and a pattern that stays within a line only on the lines with its words."""

from __future__ import annotations

import random
import re
import sys

import pytest

from helpers import all_fixtures
from mllint import prefilter
from mllint.prefilter import _heads, _requirements, _search, _Texts
from mllint.registry import all_rules


@pytest.fixture(autouse=True)
def _plans_for_every_text(monkeypatch):
    """The shortcuts are for large texts; here every text takes them (see the last tests
    for the plain search of small texts)."""
    monkeypatch.setattr(prefilter, "_PLAIN_BELOW", 0)


def _found(pattern: str, text: str) -> bool:
    prefilter._COMPILED.pop(pattern, None)
    return _search(pattern, _Texts(text), {})


def test_heads_follow_groups_alternatives_classes_and_assertions():
    assert _heads(r"(?:save(?<!\wsave)|Checkpoint|ckpt)\w*\(") == ("ckpt", "save", "checkpoint")
    assert _heads(r"e[vV](?<=\be.)(?i:al|aluate)|T[eE](?i:st)") == ("eval", "test")
    # Literal alternatives are followed on; ``validity`` begins with ``valid``.
    assert _heads(r"(?i:val|valid|dev)_x") == ("dev_x", "val_x", "valid_x")
    assert _heads(r"(?i:valid|validity)\w") == ("valid",)
    assert _heads(r"(?<![a-z])loss") == ("loss",)
    assert _heads(r"(?:optimizer_)?step\w") == ("step", "optimizer_step")  # with or without
    # No head: a match may open with anything, or only at the start of the text.
    assert _heads(r"\w+loss") == ()
    assert _heads(r"(?:loss)*x") == ()
    assert _heads(r"\A(?:for|while)") == ()
    assert _heads(r"[a-z]oss") == ()  # a class of more than a few characters


# (pattern, text, whether it occurs)
CASES = [
    # at the start, in the middle, at the end
    (r"(?:save|ckpt)\(", "save(m)", True),
    (r"(?:save|ckpt)\(", "x = 1\nckpt(m)\ny = 2", True),
    (r"(?:save|ckpt)\(", "x = 1\nsave(", True),
    # only the second occurrence of a head begins a match
    (r"(?:save|ckpt)\(", "save = 1\nsave(", True),
    # the heads overlap themselves: ``abab`` at 0 fails, the one at 2 matches
    (r"(?:abab|zz)\d", "ababab1", True),
    # a lookbehind sees the text before the head
    (r"(?:save|ckpt)(?<=\.save)\(", "torch.save(m)", True),
    (r"(?:save|ckpt)(?<=\.save)\(", "save(m)", False),
    (r"(?:save|ckpt)(?<!\wsave)\(", "autosave(m) save(m)", True),
    (r"(?:save|ckpt)(?<!\wsave)\(", "autosave(m)", False),
    # ignored case, found through the lower-case copy
    (r"(?i:val|test)_loader", "for x in VAL_loader:", True),
    (r"(?i:val|test)_loader", "for x in my_loader:", False),
    (r"e[vV](?i:al)\(|t[eE]st\(", "evAL(m)", True),
    (r"e[vV](?i:al)\(|t[eE]st\(", "Eval(m)", False),
    # beyond ASCII: ``é`` keeps the copy usable; ``ſ`` matches ``s`` to ``re`` only
    (r"(?i:st|xx)ep", "é = 1\nStep", True),
    (r"(?i:st|xx)ep", "é = 1\nſtep", True),
    (r"(?i:st|xx)ep", "é = 1\nſlep", False),
    (r"(?:İnit|xx)\(", "İnit(", True),
    # none there at all
    (r"(?:save|ckpt)\(", "", False),
    (r"(?:save|ckpt)\(", "saved ckpt = 1", False),
]


@pytest.mark.parametrize("pattern, text, expected", CASES)
def test_the_shortcut_finds_what_search_finds(pattern, text, expected):
    assert (re.search(pattern, text) is not None) == expected  # the case itself is right
    assert _found(pattern, text) == expected


def test_heads_are_used_where_re_has_no_literal_lead():
    assert prefilter._compiled(r"(?:save|ckpt)\(").plan.heads == ("ckpt(", "save(")
    assert prefilter._compiled(r"(?i:val|test)x").plan.heads == ("valx", "testx")
    assert prefilter._compiled(r"(?i:loss)x").plan.heads == ("lossx",)
    # ``re`` scans for a literal lead, or a single character, as fast by itself.
    assert prefilter._compiled(r"for(?<!\wfor)\s").plan.heads == ()
    assert prefilter._compiled(r"\((?:a|b)+").plan.heads == ()


def _rule_patterns() -> list[str]:
    return sorted({p for rule in all_rules() for entry in _requirements(rule)
                   for p in ((entry,) if isinstance(entry, str) else entry)})


def test_every_rule_pattern_is_found_where_search_finds_it():
    texts = [p.read_text(encoding="utf-8") for p in all_fixtures()]
    texts += [ex.code for rule in all_rules() for ex in [*rule.INVALID, *rule.VALID]]
    for pattern in _rule_patterns():
        regex = re.compile(pattern)
        for text in texts:
            assert _found(pattern, text) == (regex.search(text) is not None), pattern[:80]


def test_the_characters_that_fold_to_ascii_are_known():
    """What ``_Texts.lower`` relies on, over every code point: beyond ASCII, only
    ``_FOLDS_TO_ASCII`` match an ASCII letter case-insensitively or lower-case to ASCII,
    and only ``İ`` lower-cases to more than one character."""
    letter = re.compile("(?i)[a-z]")
    folding, growing = set(), set()
    for code in range(128, sys.maxunicode + 1):
        ch = chr(code)
        low = ch.lower()
        if letter.fullmatch(ch) or any(c.isascii() for c in low):
            folding.add(ch)
        if len(low) != 1:
            growing.add(ch)
    assert folding == set(prefilter._FOLDS_TO_ASCII)
    assert growing <= folding


# -- ``both`` and ``dotted`` patterns, taken apart -------------------------------------------

def test_both_is_taken_apart_into_its_two_regexes():
    a, b = r"with\b[^\n]*?no_grad", r"for\s+\w+\s+in\b"
    assert prefilter._parts(prefilter.both(a, b)) == (a, b)
    assert prefilter._parts(prefilter.guarded(["no_grad"], prefilter.both(a, b))) == (a, b)
    # A part that holds the separator's text itself is still split where the regex is.
    tricky = r"((x))(?s:.*)(?:y)"
    assert prefilter._parts(prefilter.both(tricky, b)) == (tricky, b)
    assert prefilter._parts(prefilter.both(b, tricky)) == (b, tricky)
    assert prefilter._parts(r"\A(?=(?s:.*)x)y") == ()


def test_dotted_is_taken_apart_into_its_rest():
    assert prefilter._after_dot(prefilter.dotted(r"step\b")) == r"step\b"
    assert prefilter._after_dot(prefilter.any_layout(prefilter.dotted(r"a|b"))) == "a|b"
    assert prefilter._after_dot(r"\.step") is None


BOTH_CASES = [
    ("with no_grad():\nfor x in loader:\n", True),  # in order
    ("for x in loader:\nwith no_grad():\n", True),  # the other way round
    ("with no_grad(): [m(x) for x in loader]\n", True),  # on one line
    ("with no_grad():\n", False),
    ("for x in loader:\n", False),
    ("", False),
]


@pytest.mark.parametrize("text, expected", BOTH_CASES)
def test_both_finds_what_search_finds(text, expected):
    pattern = prefilter.both(r"with\b[^\n]*?no_grad", r"for\s+\w+\s+in\b")
    assert (re.search(pattern, text) is not None) == expected
    assert _found(pattern, text) == expected


def test_each_part_of_both_is_searched_once_per_file(monkeypatch):
    searched = []
    search = prefilter._search
    monkeypatch.setattr(prefilter, "_search", lambda p, t, m: searched.append(p) or search(p, t, m))

    class Rule:
        gate = None

        def __init__(self, *requires):
            self._requires = requires

    shared = r"for\s+\w+\s+in\b"
    rules = [Rule(prefilter.both(shared, r"with\b")), Rule(prefilter.both(shared, r"if\b")),
             Rule(prefilter.as_written(shared))]
    assert prefilter._stage1(rules, "with x:\n  for a in b:\n    if c:\n") == rules
    assert searched.count(shared) == 1


DOTTED_CASES = [
    ("optimizer.step()", True),
    ("optimizer . step ()", True),
    ("optimizer.\\\n    step()", True),
    ("(optimizer.  # c\n    step())", True),
    ("(optimizer.  # c # d\n  # e\n    step())", True),
    ("optimizer  # a.\n step()", True),  # a dot in a comment is a dot to the regex, too
    ("optimizer.# c\nstep()", True),
    ("optimizer.step", True),  # at the end of the text
    ("optimizer.stepper()", False),
    ("optimizer.x step()", False),
    ("optimizer  # c\n step()", False),
    ("optimizer.  # c step()", False),  # ``step`` inside the comment
    ("step()", False),
    (".", False),
]


@pytest.mark.parametrize("text, expected", DOTTED_CASES)
def test_dotted_finds_what_search_finds(text, expected):
    pattern = prefilter.dotted(r"step\b")
    assert (re.search(pattern, text) is not None) == expected
    assert _found(pattern, text) == expected


def test_dotted_and_both_agree_with_search_on_random_texts():
    """Texts of the characters that matter, where a backwards reading could go wrong:
    dots, blanks, line breaks, backslashes, comments."""
    rng = random.Random(1)
    alphabet = [".", " ", "\n", "\r", "#", "\\", "step", "s", "x", "(", "eval"]
    patterns = [prefilter.dotted(r"step\b"), prefilter.dotted(rf"(?:eval|step){prefilter.GAP}\("),
                prefilter.both(r"x\(", prefilter.dotted(r"step\b"))]
    regexes = [re.compile(p) for p in patterns]
    for _ in range(8000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        for pattern, regex in zip(patterns, regexes):
            assert _found(pattern, text) == (regex.search(text) is not None), (pattern, text)


def test_the_lower_case_form_keeps_positions_beyond_ascii():
    text = "é = Step(ü) + 日本 # Val"
    lower = _Texts(text).lower
    assert len(lower) == len(text)
    assert lower.index("step") == text.index("Step") and lower.index("val") == text.index("Val")
    assert _Texts("ſtep").lower is None
    assert _found(r"(?i:val|test)\b", text) and not _found(r"(?i:val|test)x", text)


# -- patterns that match within one line, searched line by line ------------------------------

@pytest.mark.parametrize("pattern, within", [
    (r"\([ \t]*[\w.]*?val[\w.]*[,)]", True),
    (r"with\b[^\n]*?no_grad", True),
    (r"(?<![a-z])val(?![a-z])|(?<=['\"])dev(?=['\"])", True),
    (r"(?m:^)val$", False),  # ``$`` also matches before a last line break
    (r"val\Z", False),
    (r"for\s+val", False),  # ``\s`` holds a line break
    (r"for[^x]val", False),
    (r"for(?s:.)val", False),
    (r"for.val", True),  # ``.`` stops at a line break
    (r"val(?=\n)", False),  # a lookahead past the line
    (r"[\w\n]val", False),
    (r"[^\S\n]val", True),
])
def test_which_patterns_stay_within_a_line(pattern, within):
    assert bool(prefilter._line_words(pattern)) == within


def test_line_words_are_the_strongest_needed_clause():
    assert prefilter._line_words(r"\([\w.]*?(?i:val|validation|test)\)") == ("test", "val")
    assert prefilter._line_words(r"with\b[^\n]*?(?:no_grad|inference_mode)") == (
        "inference_mode", "no_grad")
    assert prefilter._line_words(r"\A(?:for|while)\b") == ()  # ``re`` tries it at the start only


LINE_PATTERN = r"\((?=[ \t]*[\w.]*[ \t]*[,)])[ \t]*[\w.]*?(?<![a-z])(?i:val|dev)(?![a-z])[\w.]*[ \t]*[,)]"
LINE_CASES = [
    ("model(val)", True),  # first line, no line break at all
    ("x = 1\nmodel(x, val)\ny = 2\n", False),  # the word is not the first argument
    ("x = 1\nmodel(VAL_x, 2)\n", True),  # ignored case; ``_`` is no letter
    ("x = 1\nmodel(VALx, 2)\n", False),
    ("x = 1\nmodel(DEV)\n", True),  # ignored case, a middle line
    ("interval = 1; f(interval, dev)\nmodel(dev)", True),  # the last line, no ``\n``
    ("interval = 1; f(x.val) # val\n", True),  # the word twice on one line
    ("value(x)\n(dev\n)", False),  # the argument runs over the line break
    ("x\n(a.val)", True),  # a lookbehind at the start of a line sees the break before
]


@pytest.mark.parametrize("text, expected", LINE_CASES)
def test_line_by_line_finds_what_search_finds(text, expected):
    assert prefilter._compiled(LINE_PATTERN).plan.line_words == ("dev", "val")
    assert (re.search(LINE_PATTERN, text) is not None) == expected
    assert _found(LINE_PATTERN, text) == expected


def test_line_by_line_agrees_with_search_on_random_texts():
    rng = random.Random(2)
    alphabet = ["(", ")", ",", ".", " ", "\n", "val", "Dev", "x", "_", "interval", "\r"]
    regex = re.compile(LINE_PATTERN)
    for _ in range(8000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(14)))
        assert _found(LINE_PATTERN, text) == (regex.search(text) is not None), text


def test_needed_clauses_keep_only_the_words_that_decide():
    # ``validation`` holds ``val``: a text with the one has the other.
    assert prefilter._needed("(?i:val|validation|test)") == (frozenset({("val", True), ("test", True)}),)
    assert prefilter._needed("Val|(?i:val)") == (frozenset({("val", True)}),)
    assert prefilter._needed("(?i:Val)|val_x") == (frozenset({("val", True)}),)
    # a case-insensitive word is not implied by a case-sensitive one
    assert prefilter._needed("val|(?i:valx)") == (frozenset({("val", False), ("valx", True)}),)


def test_a_word_is_found_in_any_spelling_the_text_has():
    texts = _Texts("é = Save(model)  # SAVE")
    assert texts.has("Save", False) and texts.has("SAVE", False) and texts.has("save", True)
    assert not texts.has("save", False) and not texts.has("Model", False)
    assert _Texts("x = 'ſave'").has("ſave", False)  # beyond ASCII: the text itself decides
    assert _Texts("日本 = 1").has("日本", False)


def test_no_shortcut_where_re_scans_for_a_literal_lead_itself():
    assert prefilter._compiled(r"\n(?:for|while)\b").plan.heads == ()
    assert prefilter._compiled(r"with\b[^\n]*?(?:no_grad|inference_mode)").plan.line_words == ()
    assert prefilter._compiled(r"if\b[^\n]*?(?i:val|test)").plan.line_words == ("test", "val")


def test_a_small_text_is_searched_plainly_without_working_out_a_plan(monkeypatch):
    monkeypatch.setattr(prefilter, "_PLAIN_BELOW", 100)
    pattern = r"(?:save(?<!\wsave)|ckpt)\w*\("
    prefilter._COMPILED.pop(pattern, None)
    assert _search(pattern, _Texts("torch.save(m, p)\n"), {})
    assert not _search(pattern, _Texts("unsave(m)\n"), {})
    assert prefilter._COMPILED[pattern]._plan is None
    # A large text is searched with the plan, and finds the same.
    assert _search(pattern, _Texts("x = 1\n" * 30 + "ckpt_save(m)\n"), {})
    assert prefilter._COMPILED[pattern]._plan is not None
    assert not _search(pattern, _Texts("x = 1\n" * 30 + "unsave(m)\n"), {})
