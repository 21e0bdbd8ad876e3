"""Deciding, before any libcst parse, which rules could report anything in a file.

Two stages, both sound (they may admit a file the rule then finds clean, never the
reverse), and both runnable without importing libcst or the rules:

1. ``REQUIRES``: regexes that must all occur in the text; an entry may also be a tuple
   of regexes of which any one must occur. Each distinct regex is searched at most once
   per file, however many rules list it (the validation-pass rules share their signs),
   and never by trying it at every character: a regex whose matches begin with one of
   a few literals is tried where ``str.find`` finds one (``_heads``); one whose matches
   stay within a line, on the lines holding the words it needs (``_line_words``); a
   ``dotted`` one from its word back to the dot; a ``both`` one as its two parts.
2. ``GATE`` (optional): a function over Python's own syntax tree (``ast``, the C parser,
   about ten times faster than a libcst parse) that answers "could this rule report in
   this module?" by a coarse, over-approximating version of the rule's own reasoning:
   e.g. ML001 asks whether any ``.step()`` could be an optimizer's at all. A gate sees a
   tree only when some rule that has one passed stage 1, and the tree is parsed once for
   all gates. A rule that decides on ``ast`` itself (``rule.AstRule``) needs no gate: it
   runs on the same tree, and is its own cheap stage.

A file whose text Python cannot parse keeps every rule that passed stage 1, so the libcst
path reports the syntax error exactly as before.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import sys
import warnings

try:  # the regex parser ``re`` itself uses (``sre_parse`` before Python 3.11)
    from re import _constants as _sre_constants, _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_constants  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]
from typing import Callable, Protocol, Sequence, Tuple, TypeVar, Union

from mllint.collector import collector_paused
from mllint.gates.resolve import drop_caches
from mllint.source import STRING_OR_COMMENT

Gate = Callable[[ast.Module], bool]
#: One ``REQUIRES`` entry: a regex, or a tuple of regexes any one of which suffices.
Requirement = Union[str, Tuple[str, ...]]

_COMPILED: dict[str, _Pattern] = {}
#: A pattern may open with a regex comment naming literals of which every match contains
#: at least one, e.g. ``(?#guard:no_grad|inference_mode)``: when none occurs in the text
#: (a plain substring test, far cheaper than any regex), the pattern is not run at all.
_GUARD = re.compile(r"(?:\(\?#(?:any-layout|as-written)\))?\(\?#guard:([^)]*)\)")


#: What Python allows between two tokens of one statement, outside strings: blanks, line
#: breaks (inside brackets), backslash continuations and comments. A superset: a regex
#: that allows it between tokens matches the code in any layout. Each character has one
#: way to be matched (a comment runs to the end of its line), so it never backtracks
#: more than linearly, even over a banner of ``#``s.
GAP = r"(?:\s|\\|#[^\r\n]*(?![^\r\n]))*"
#: Marks a pattern that needs no ``token_variants`` because it matches the text as
#: written whenever it would match one of them: it allows ``GAP`` between tokens, or
#: names only runs of word characters (which no layout splits or joins).
#: ``tests/test_prefilter_soundness.py`` checks that claim on every fixture and rule
#: example laid out every way.
_ANY_LAYOUT = "(?#any-layout)"
#: Marks a sign the rule itself reads off one physical line of the text as written
#: (``line_matches``): a layout that breaks the line hides it from the rule as well, so
#: only the text as written matters. (Checked by the same tests, end to end.)
_AS_WRITTEN = "(?#as-written)"
_MARKS = (_ANY_LAYOUT, _AS_WRITTEN)


def any_layout(pattern: str) -> str:
    """``pattern`` marked as matching the code as written in any layout (see above)."""
    return pattern if pattern.startswith(_MARKS) else _ANY_LAYOUT + pattern


def as_written(pattern: str) -> str:
    """``pattern`` marked as a sign the rule reads off a physical line (see above)."""
    return pattern if pattern.startswith(_MARKS) else _AS_WRITTEN + pattern


def guarded(literals: Sequence[str], pattern: str) -> str:
    """``pattern`` with a guard of ``literals`` (each match must contain one of them)."""
    assert all("|" not in lit and ")" not in lit for lit in literals)
    return f"(?#guard:{'|'.join(literals)}){pattern}"


class _Pattern:
    """A compiled ``REQUIRES`` regex with what makes it cheap to search (see ``_search``).
    What takes parsing the regex is worked out on first use on a large text, so that a
    run over a few small files (pre-commit) does not pay for it."""

    __slots__ = ("pattern", "regex", "guard", "_plan")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.regex = re.compile(pattern)
        guard = _GUARD.match(pattern)
        self.guard: tuple[str, ...] = tuple(guard.group(1).split("|")) if guard else ()
        self._plan: _Plan | None = None

    @property
    def plan(self) -> _Plan:
        if self._plan is None:
            self._plan = _Plan(self.pattern)
        return self._plan


class _Plan:
    """How to search a pattern without trying it at every character (see ``_search``)."""

    __slots__ = ("heads", "parts", "rest", "rest_heads", "line_words")

    def __init__(self, pattern: str) -> None:
        # Measured on the corpus, pattern by pattern: where ``re`` has a literal lead to
        # scan for (``for(?<!\wfor)``, ``\n(?:for|while)``), it rejects most places at once
        # and heads do not pay; a short lead (``if``) is so frequent that searching only
        # the lines with the words still does.
        lead = _literal_lead(pattern)
        heads = _heads(pattern) if not lead else ()
        self.heads = heads if heads and min(map(len, heads)) >= 2 else ()
        self.parts = _parts(pattern)
        rest = _after_dot(pattern)
        self.rest_heads = _heads(rest) if rest is not None else ()
        self.rest = re.compile(rest) if self.rest_heads else None
        self.line_words = _line_words(pattern) if not self.heads and len(lead) < 3 else ()


#: Texts shorter than this are searched with the plain regex: on them a search costs
#: less than working out a pattern's plan (about ten milliseconds for all of them).
_PLAIN_BELOW = 16_384


#: How ``both`` writes "both occur": anchored at the start and greedy, ``re`` tries it
#: once, jumps to the end and steps back only to the characters a part starts with.
#: (Unanchored, ``a.*b`` is tried again from every ``a`` when there is no ``b``, each
#: time to the end of the file: quadratic.)
_BOTH_OPEN, _BOTH_SEP = r"\A(?=(?s:.*)(?:", r"))(?s:.*)(?:"


def both(a: str, b: str) -> str:
    """A regex that matches where ``a`` and ``b`` both occur in the text, in any order or
    overlap. Stage 1 searches the two on their own instead (each once per file, however
    many patterns name it), ``a`` first: put the cheaper, rarer one there."""
    return f"{_BOTH_OPEN}{a}{_BOTH_SEP}{b})"


def dotted(rest: str) -> str:
    """``.`` then ``rest``, with anything Python allows between two tokens (``GAP``)
    between them: ``optimizer . step``, ``optimizer.\\`` newline ``step``. Stage 1 looks
    for ``rest`` first and then back for the dot (``_DOT_BEHIND``), instead of trying
    the regex at every ``.`` of the file."""
    return rf"{_DOTTED_OPEN}{rest})"


_DOTTED_OPEN = rf"\.{GAP}(?:"
#: ``\.{GAP}`` read backwards, on the reversed text: a comment, reversed, runs from a
#: line end back to a ``#``.
_DOT_BEHIND = re.compile(r"(?:\s|\\|(?<![^\r\n])[^\r\n]*#)*\.")


def _parts(pattern: str) -> tuple[str, ...]:
    """The two parts of a ``both`` pattern (``()`` for any other): where the separator
    splits it into two regexes, that is its parse (a valid regex inside ``(?:...)`` is
    one group, so no other split leaves two valid regexes)."""
    guard = _GUARD.match(pattern)
    body = pattern[guard.end():] if guard else _unmarked(pattern)
    if not (body.startswith(_BOTH_OPEN) and body.endswith(")")):
        return ()
    inner = body[len(_BOTH_OPEN):-1]
    at = inner.find(_BOTH_SEP)
    while at >= 0:
        a, b = inner[:at], inner[at + len(_BOTH_SEP):]
        if _valid(a) and _valid(b):
            return a, b
        at = inner.find(_BOTH_SEP, at + 1)
    return ()


def _after_dot(pattern: str) -> str | None:
    """``rest`` of a ``dotted(rest)`` pattern (``None`` for any other; see ``_parts``)."""
    body = _unmarked(pattern)
    if body.startswith(_DOTTED_OPEN) and body.endswith(")"):
        rest = body[len(_DOTTED_OPEN):-1]
        if _valid(rest):
            return rest
    return None


def _unmarked(pattern: str) -> str:
    for mark in _MARKS:
        if pattern.startswith(mark):
            return pattern[len(mark):]
    return pattern


def _valid(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _compiled(pattern: str) -> _Pattern:
    try:
        return _COMPILED[pattern]
    except KeyError:
        _COMPILED[pattern] = entry = _Pattern(pattern)
        return entry


def _search(pattern: str, texts: _Texts, memo: dict[str, bool]) -> bool:
    """Whether ``pattern`` occurs in the text (``memo``: what is known of other patterns
    in it). Where every match begins with one of a few literals (its ``_heads``), the
    regex is tried only where one of them occurs (found by ``str.find`` in the lower-case
    text, which has the same positions), instead of letting ``re`` try it at every
    character that could begin one: a match of ``compiled.match(text, i)`` is exactly a
    match of ``search`` that starts at ``i`` (lookbehinds and ``\\A`` see the whole
    text). ``both`` and ``dotted`` patterns are taken apart (see there)."""
    entry = _compiled(pattern)
    text = texts.text
    # (The guard's words are a clause of ``_needed``: the proofs have mostly looked.)
    if entry.guard and not any(texts.has(lit, False) for lit in entry.guard):
        return False
    if len(text) < _PLAIN_BELOW:
        return entry.regex.search(text) is not None
    plan = entry.plan
    if plan.parts:
        return all(_found(part, texts, memo) for part in plan.parts)
    if plan.heads or plan.rest or plan.line_words:
        lower = texts.lower
        if lower is not None:
            if plan.rest:
                return _dotted_at_heads(plan.rest, texts, lower, plan.rest_heads)
            if plan.line_words:
                return _search_lines(entry.regex, text, lower, plan.line_words)
            return _match_at_heads(entry.regex, text, lower, plan.heads)
    return entry.regex.search(text) is not None


def _search_lines(regex: re.Pattern[str], text: str, lower: str, words: tuple[str, ...]) -> bool:
    """Whether ``regex``, none of whose matches spans a line break and each of which
    holds one of ``words``, occurs in the text: searched only on the lines where one of
    the words occurs (with the line's ``\\n``, so that what follows the line looks the
    same to the regex; lookbehinds see the whole text)."""
    search, find = regex.search, lower.find
    searched: set[int] = set()
    for word in words:
        at = find(word)
        while at >= 0:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at) + 1 or len(text)
            if start not in searched:
                searched.add(start)
                if search(text, start, end):
                    return True
            at = find(word, end)
    return False


def _found(pattern: str, texts: _Texts, memo: dict[str, bool]) -> bool:
    key = _unmarked(pattern)  # a mark changes nothing the regex matches
    found = memo.get(key)
    if found is None:
        found = memo[key] = _search(pattern, texts, memo)
    return found


def _dotted_at_heads(rest: re.Pattern[str], texts: _Texts, lower: str, heads: tuple[str, ...]) -> bool:
    """Whether ``dotted(rest)`` matches: ``rest`` at a head, and a dot and ``GAP`` right
    before it (read backwards from there on the reversed text)."""
    text, back = texts.text, texts.reversed
    end = len(text)
    match, behind, find = rest.match, _DOT_BEHIND.match, lower.find
    for head in heads:
        at = find(head)
        while at >= 0:
            if match(text, at) and behind(back, end - at):
                return True
            at = find(head, at + 1)
    return False


def _match_at_heads(regex: re.Pattern[str], text: str, lower: str, heads: tuple[str, ...]) -> bool:
    match = regex.match
    find = lower.find
    for head in heads:
        at = find(head)
        while at >= 0:
            if match(text, at):
                return True
            at = find(head, at + 1)
    return False


def normalize(requires: Sequence[object]) -> tuple[Requirement, ...]:
    """``REQUIRES`` as hashable tuples (a manifest read back from JSON has lists)."""
    return tuple(r if isinstance(r, str) else tuple(r) for r in requires)  # type: ignore[arg-type]


def matches(requires: Sequence[Requirement], text: str, memo: dict[str, bool] | None = None) -> bool:
    """Whether every entry of ``requires`` occurs in ``text`` (see stage 1 above)."""
    return _matches(requires, _Texts(text), {} if memo is None else memo)


def _matches(requires: Sequence[Requirement], texts: _Texts, memo: dict[str, bool]) -> bool:
    for entry in requires:
        if not any(_found(p, texts, memo) for p in ((entry,) if isinstance(entry, str) else entry)):
            return False
    return True


class Filtered(Protocol):
    def may_match(self, text: str, memo: dict[str, bool] | None = None) -> bool: ...

    @property
    def gate(self) -> str | None: ...


T = TypeVar("T", bound=Filtered)


@functools.lru_cache(maxsize=None)
def load_gate(spec: str) -> Gate:
    """``"package.module:function"`` -> the function (stdlib-only modules by contract)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


#: The last text parsed and what came of it (a tree or the exception): the engine asks
#: again about the same text right after the gates, and should not parse it twice.
_LAST: list = [None, None]


def _python_parse(text: str) -> object:
    if _LAST[0] is text:
        return _LAST[1]
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like are the user's business, not ours.
            warnings.simplefilter("ignore")
            result: object = _parse_as_python_would(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        result = exc
    _LAST[0], _LAST[1] = text, result
    return result


#: Python's default recursion limit. The engine lints on a thread with a far higher one
#: (``engine.lint.on_deep_stack``), under which Python's parser accepts code nested more
#: deeply than ``python`` itself can compile: such a file is judged at Python's own limit.
PYTHON_RECURSION_LIMIT = 1000


def forget_last() -> None:
    """Let go of the last tree parsed, once its file is done (``engine.lint_text``): the
    next file's tree replaces it anyway, and dropped with its caches it is freed at once."""
    tree = _LAST[1]
    _LAST[0] = _LAST[1] = None
    if isinstance(tree, ast.AST):
        drop_caches(tree)


def _parse_as_python_would(text: str) -> ast.Module:
    limit = sys.getrecursionlimit()
    if limit <= PYTHON_RECURSION_LIMIT:
        return ast.parse(text)
    try:
        sys.setrecursionlimit(PYTHON_RECURSION_LIMIT)
    except RecursionError:  # already deeper than that: judge at the limit in force
        return ast.parse(text)
    try:
        return ast.parse(text)
    finally:
        sys.setrecursionlimit(limit)


def source_of(tree: ast.Module) -> str | None:
    """The text ``tree`` was parsed from, while it is the last tree parsed (as it is for
    the gates, which get the tree right after the parse), else ``None``."""
    return _LAST[0] if _LAST[1] is tree else None


def python_tree(text: str) -> ast.Module | None:
    """Python's syntax tree of ``text``, or ``None`` when Python cannot parse it."""
    result = _python_parse(text)
    return result if isinstance(result, ast.Module) else None


def python_syntax_error(text: str) -> SyntaxError | RecursionError | MemoryError | None:
    """Python's own verdict that it cannot compile ``text``, if it cannot: a syntax error,
    or code nested too deeply for its parser (which Python could not run either)."""
    result = _python_parse(text)
    return result if isinstance(result, (SyntaxError, RecursionError, MemoryError)) else None


_CONTINUATION = re.compile(r"\\\r?\n|\\\r")
#: A line break after an opening bracket, comma or dot, or before a closing bracket or
#: dot: inside brackets, where a statement goes on. Other line breaks are kept, so that
#: patterns bounded by a line (``[^\n]*``) stay cheap. (Each pattern starts with a
#: literal or a class, so ``re`` scans for it quickly.)
_BREAK_AFTER = re.compile(r"([(\[{,.])[ \t\f\v]*\r?\n\s*")
_BREAK_BEFORE = re.compile(r"\r?\n\s*(?=[)\]}.])")
_BLANKS = re.compile(r"[ \t\f\v]{2,}|[\t\f\v]")
_SPACE_AT_PUNCTUATION = re.compile(r" (?=[^\w\s])|(?<=[^\w\s]) ")


def token_variants(text: str) -> tuple[str, str]:
    """``text`` with what may sit between two tokens normalised away: comments and line
    continuations dropped, line breaks inside brackets and runs of blanks made one space;
    and that again with no space next to punctuation (``optimizer . step`` as
    ``optimizer.step``).

    Why: a REQUIRES regex is written for code as people usually write it, but
    ``optimizer.\\`` + newline + ``step()`` or ``(optimizer.  # c`` + newline +
    ``step())`` is the same code to Python and to the rule. A rule that fails on the text
    is tried on these two forms too, so stage 1 holds for such layouts
    (``tests/test_prefilter_soundness.py`` checks it on every fixture and rule example).
    Joining lines only admits more.
    """
    flat = _CONTINUATION.sub(" ", STRING_OR_COMMENT.sub(r"\1", text))
    flat = _BLANKS.sub(" ", _BREAK_BEFORE.sub(" ", _BREAK_AFTER.sub(r"\1 ", flat)))
    return flat, _SPACE_AT_PUNCTUATION.sub("", flat)


def _stage1(rules: Sequence[T], text: str) -> list[T]:
    """The rules each of whose ``REQUIRES`` entries occurs in the text as written or in
    one of its ``token_variants`` (each entry may be found in a different form: the rule
    fires only if the code has every piece, in whatever layout).

    Cheapest first: a rule one of whose entries misses a word every match must contain
    (a substring test, see ``_layout_proof``) is out before any regex runs; the variants
    are made only for an entry whose regex fails on the text while its words are there."""
    forms: list[_Texts] = [_Texts(text)]
    memos: list[dict[str, bool]] = [{}]
    texts = forms[0]
    proofs: dict[str, bool] = {}

    def proof(pattern: str) -> bool:
        found = proofs.get(pattern)
        if found is None:
            found = proofs[pattern] = _layout_proof(pattern, texts)
        return found

    def proven_absent(entry: Requirement) -> bool:
        if isinstance(entry, str):
            return proof(entry)
        for p in entry:
            if not proof(p):
                return False
        return True

    def found(entry: Requirement) -> bool:
        if _matches((entry,), texts, memos[0]):
            return True
        rest = tuple(p for p in ((entry,) if isinstance(entry, str) else entry)
                     if not p.startswith(_MARKS) and not proof(p))
        if not rest:
            return False
        if len(forms) == 1:
            forms.extend(map(_Texts, token_variants(text)))
            memos.extend(({}, {}))
        return _matches((rest,), forms[1], memos[1]) or _matches((rest,), forms[2], memos[2])

    candidates = [r for r in rules if not any(proven_absent(e) for e in _requirements(r))]
    return [r for r in candidates if all(found(e) for e in _requirements(r))]


_WORD = re.compile(r"\w+")


#: The only characters beyond ASCII that ``re`` matches case-insensitively to an ASCII
#: letter (``ſ`` to ``s``, the Kelvin sign to ``k``, the dotted and dotless ``i``s), and
#: ``İ`` is also the only character whose ``str.lower`` is two characters long
#: (``tests/test_prefilter_anchors.py`` checks both over every code point).
_FOLDS_TO_ASCII = "\u0130\u0131\u017f\u212a"


class _Texts:
    """The text, and (made once, if asked for) its lower-case ASCII form: ``None`` where
    that could mislead, i.e. for a text holding one of ``_FOLDS_TO_ASCII``. Elsewhere
    that form has the text's positions, and any case-insensitive match of ASCII letters
    in the text is those letters, lower-cased, at the same place in it."""

    __slots__ = ("text", "_lower", "_reversed", "_has", "_has_folded")

    def __init__(self, text: str) -> None:
        self.text = text
        self._has: dict[str, bool] = {}
        self._has_folded: dict[str, bool] = {}
        self._lower: str | None | bool = False
        self._reversed: str | None = None

    @property
    def reversed(self) -> str:
        if self._reversed is None:
            self._reversed = self.text[::-1]
        return self._reversed

    @property
    def lower(self) -> str | None:
        if self._lower is False:
            text = self.text
            if text.isascii():
                self._lower = text.lower()
            elif any(c in text for c in _FOLDS_TO_ASCII):
                self._lower = None
            else:  # ASCII letters lower-cased, every other character a ``?``: 3x faster
                self._lower = text.encode("ascii", "replace").lower().decode("ascii")
        return self._lower  # type: ignore[return-value]

    def has(self, word: str, ignore_case: bool) -> bool:
        # Asked again and again: many patterns need the same words (the data names).
        known = self._has_folded if ignore_case else self._has
        found = known.get(word)
        if found is None:
            if not ignore_case:
                found = word in self.text
            else:
                lower = self.lower
                found = lower is None or word in lower
            known[word] = found
        return found


def _layout_proof(pattern: str, texts: _Texts) -> bool:
    """Whether ``pattern`` is surely absent from the text and from its variants: some
    piece of literal text every match must contain is missing. (``token_variants`` only
    removes comments, line continuations and blanks, so a literal run of word
    characters, which no layout can split, is missing from them as well.)"""
    has = texts.has
    for clause in _needed(pattern):  # loops, not generators: asked ~50 times per file
        for word, ignore_case in clause:
            if has(word, ignore_case):
                break
        else:
            return True
    return False


@functools.lru_cache(maxsize=None)
def _needed(pattern: str) -> tuple[frozenset[tuple[str, bool]], ...]:
    """Clauses of words: every match of ``pattern`` contains a word of each clause. A word
    is ``(word, ignore_case)``; a case-insensitive one is kept in lower case."""
    try:
        parsed = _sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - an unforeseen form: no shortcut, just slower
        return ()
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    clauses = _clauses(list(parsed), ignore_case)
    guard = _GUARD.match(pattern)
    if guard:  # the pattern's own promise: every match holds one of these literals
        clauses.append({(lit, False) for lit in guard.group(1).split("|")})
    return tuple(frozenset(_fewest(c)) for c in clauses)


def _fewest(clause: set[tuple[str, bool]]) -> set[tuple[str, bool]]:
    """``clause`` without the words that hold another of its words (``validation``
    beside ``val``): where one is in the text, so is the other, so they decide nothing,
    and each costs a scan of the text."""
    def implies(w: tuple[str, bool], v: tuple[str, bool]) -> bool:
        (word, ci), (other, other_ci) = w, v
        return w != v and (other_ci or not ci) and other in (word.lower() if other_ci else word)

    return {w for w in clause if not any(implies(w, v) for v in clause)}


def _clauses(items: list, ignore_case: bool) -> list[set[tuple[str, bool]]]:
    """Needed-word clauses of a parsed regex sequence (see ``_needed``)."""
    c = _sre_constants
    out: list[set[tuple[str, bool]]] = []
    run: list[str] = []

    def flush() -> None:
        word = "".join(run)
        if _WORD.fullmatch(word):
            out.append({(word.lower(), True) if ignore_case else (word, False)})
        run.clear()

    for op, arg in items:
        if op is c.LITERAL:
            ch = chr(arg)
            if ch.isascii() and _WORD.fullmatch(ch):
                run.append(ch)
                continue
        flush()
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, sub = arg
            inner = (ignore_case or bool(add_flags & re.IGNORECASE)) and not del_flags & re.IGNORECASE
            out += _clauses(list(sub), inner)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and arg[0] >= 1:
            out += _clauses(list(arg[2]), ignore_case)
        elif op is c.ASSERT:  # a lookahead or lookbehind: its text is there too
            out += _clauses(list(arg[1]), ignore_case)
        elif op is c.BRANCH:
            per_branch = [_clauses(list(b), ignore_case) for b in arg[1]]
            if all(per_branch):
                # One clause from each branch: a match takes some branch, so contains
                # one of these words. (Any clause of a branch will do; the one whose
                # shortest word is longest is the least likely to be found by chance.)
                out.append(set().union(*(max(b, key=_strength) for b in per_branch)))
    flush()
    return out


def _strength(clause: set[tuple[str, bool]]) -> tuple[int, int]:
    return min(len(w) for w, _ in clause), -len(clause)


#: At most this many heads per pattern (each costs a ``str.find`` over the text).
_MAX_HEADS = 16


@functools.lru_cache(maxsize=None)
def _heads(pattern: str) -> tuple[str, ...]:
    """Lower-case literals one of which begins every match of ``pattern`` (``()`` when
    no such set is known): the literal text its matches open with, through groups and
    alternatives, small character classes (``[vV]``) and zero-width assertions, in lower
    case (so one set serves case-sensitive and case-insensitive parts alike). A head
    that begins with another head is left out: the shorter one finds it."""
    try:
        parsed = _sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - an unforeseen form: no shortcut, just slower
        return ()
    heads, _ = _openings(list(parsed), {""})
    if "" in heads:
        return ()
    short_first = sorted(heads, key=lambda h: (len(h), h))
    return tuple(h for i, h in enumerate(short_first)
                 if not any(h.startswith(g) for g in short_first[:i]))


def _literal_lead(pattern: str) -> str:
    """The case-sensitive literal text ``pattern`` opens with (lower-cased), which ``re``
    itself scans for quickly."""
    parsed = _sre_parse.parse(pattern)
    if parsed.state.flags & re.IGNORECASE:
        return ""
    lead = []
    for op, arg in parsed:
        if op is not _sre_constants.LITERAL:
            break
        lead.append(chr(arg))
    return "".join(lead).lower()


def _openings(items: list, heads: set[str]) -> tuple[set[str], bool]:
    """``heads`` extended by what ``items`` must open with, and whether all of ``items``
    was literal (so what follows may extend the heads further)."""
    c = _sre_constants
    for op, arg in items:
        if op is c.AT and arg in (c.AT_BEGINNING, c.AT_BEGINNING_STRING):
            return {""}, False  # ``re`` tries such a pattern at the start only
        if op in (c.ASSERT, c.ASSERT_NOT, c.AT):
            continue  # zero-width: the match goes on from the same place
        if op is c.SUBPATTERN:
            heads, whole = _openings(list(arg[3]), heads)
            if not whole:
                return heads, False
            continue
        if op is c.BRANCH:
            per_branch = [_openings(list(b), heads) for b in arg[1]]
            branched = set().union(*(h for h, _ in per_branch))
            if len(branched) > _MAX_HEADS:
                return heads, False  # too many: what came before still begins each match
            heads = branched
            if not all(whole for _, whole in per_branch):
                return heads, False
            continue
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and arg[:2] == (0, 1):  # ``x?``: with or without
            taken, whole = _openings(list(arg[2]), heads)
            if len(heads | taken) > _MAX_HEADS:
                return heads, False
            heads = heads | taken
            if not whole:
                return heads, False
            continue
        chars = _literal_chars(op, arg)
        if not chars or len(heads) * len(chars) > _MAX_HEADS:
            return heads, False
        heads = {h + ch for h in heads for ch in chars}
    return heads, True


def _literal_chars(op: object, arg: object) -> set[str] | None:
    """The lower-case ASCII characters a literal or a small class matches (``None`` for
    anything else: beyond ASCII, case folding is not ``str.lower``)."""
    c = _sre_constants
    if op is c.LITERAL:
        codes = [arg]
    elif op is c.IN and all(o is c.LITERAL for o, _ in arg) and len(arg) <= 4:  # type: ignore[union-attr]
        codes = [a for _, a in arg]  # type: ignore[union-attr]
    else:
        return None
    if not all(isinstance(code, int) and code < 128 for code in codes):
        return None
    return {chr(code).lower() for code in codes}


@functools.lru_cache(maxsize=None)
def _line_words(pattern: str) -> tuple[str, ...]:
    """For a ``pattern`` none of whose matches can span a line break, lower-case words
    one of which each match holds (the strongest clause of ``_needed``, each word that
    holds another one left out); ``()`` for any other pattern."""
    try:
        parsed = _sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - an unforeseen form: no shortcut, just slower
        return ()
    items = list(parsed)
    if items[:1] in ([(_sre_constants.AT, _sre_constants.AT_BEGINNING)],
                     [(_sre_constants.AT, _sre_constants.AT_BEGINNING_STRING)]):
        return ()  # ``re`` tries it at the start only
    if not _within_a_line(items, parsed.state.flags):
        return ()
    clauses = [{w.lower() for w, _ in clause} for clause in _needed(pattern)]
    clauses = [{w for w in c if not any(v != w and v in w for v in c)} for c in clauses]
    if not clauses:
        return ()
    return tuple(sorted(max(clauses, key=lambda c: _strength({(w, True) for w in c}))))


#: Character categories of ``re`` that hold no line break.
_NO_BREAK_CATEGORIES = frozenset(
    getattr(_sre_constants, f"CATEGORY_{prefix}{name}")
    for prefix in ("", "UNI_", "LOC_") for name in ("DIGIT", "NOT_SPACE", "WORD", "NOT_LINEBREAK")
    if hasattr(_sre_constants, f"CATEGORY_{prefix}{name}")
)


def _within_a_line(items: list, flags: int) -> bool:
    """Whether no match of the parsed ``items`` (lookarounds included) can hold a
    ``\\n``, nor depends on where the text ends (``$``, ``\\Z``)."""
    c = _sre_constants
    newline = ord("\n")
    for op, arg in items:
        if op is c.LITERAL:
            ok = arg != newline
        elif op is c.NOT_LITERAL:
            ok = arg == newline
        elif op is c.ANY:
            ok = not flags & re.DOTALL
        elif op is c.IN:
            ok = not _class_holds_newline(arg)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            ok = _within_a_line(list(arg[2]), flags)
        elif op is c.SUBPATTERN:
            _group, add_flags, del_flags, sub = arg
            ok = _within_a_line(list(sub), (flags | add_flags) & ~del_flags)
        elif op is c.BRANCH:
            ok = all(_within_a_line(list(b), flags) for b in arg[1])
        elif op in (c.ASSERT, c.ASSERT_NOT):
            ok = _within_a_line(list(arg[1]), flags)
        elif op is c.AT:
            ok = arg not in (c.AT_END, c.AT_END_STRING)
        else:
            ok = False  # back-references, atomic groups...: not worth knowing
        if not ok:
            return False
    return True


def _class_holds_newline(items: list) -> bool:
    c = _sre_constants
    newline = ord("\n")
    negated = bool(items) and items[0][0] is c.NEGATE
    held = False
    for op, arg in items[negated:]:
        if op is c.LITERAL:
            held |= arg == newline
        elif op is c.RANGE:
            held |= arg[0] <= newline <= arg[1]
        elif op is c.CATEGORY:
            held |= arg not in _NO_BREAK_CATEGORIES
        else:
            return True  # unforeseen: assume the worst
    return held != negated


def _requirements(rule: object) -> tuple[Requirement, ...]:
    # A rule class keeps them normalised in ``_requires``; a manifest entry in ``requires``.
    return getattr(rule, "_requires", None) or normalize(getattr(rule, "requires", ()))


def admitted(rules: Sequence[T], text: str, file: str | None = None) -> list[T]:
    """The rules that could report in ``text``: stage 1, then stage 2 where defined.
    ``file`` is where the text lies on disk, for gates that ask the project model."""
    passed = _stage1(rules, text)
    if not any(r.gate for r in passed):
        return passed
    with collector_paused():
        tree = python_tree(text)
        if tree is None:
            return passed
        project = _LazyProject(file, tree, text)
        return [r for r in passed if not r.gate or _gate_admits(r.gate, tree, project)]


class _LazyProject:
    """The project of the file, made only if a gate asks for it."""

    def __init__(self, file: str | None, tree: ast.Module, text: str) -> None:
        self.file, self.tree, self.text = file, tree, text
        self._view: object = None

    def get(self) -> object:
        if self._view is None and self.file is not None:
            from mllint.project import project_for

            self._view = project_for(self.file, self.tree, self.text)
        return self._view


def project_aware(gate: Callable[..., bool]) -> Callable[..., bool]:
    """Marks a gate that takes a second argument, the file's ``ProjectView`` (or
    ``None``): the facts of other modules it may need, from the same project model the
    rule asks (summaries of Python's ``ast``, no libcst)."""
    gate.project_aware = True  # type: ignore[attr-defined]
    return gate


def _gate_admits(spec: str, tree: ast.Module, project: _LazyProject) -> bool:
    """A gate that fails (a tree too deep to walk, a bug) admits the file: the rule then
    runs as if there were no gate, and any real problem is reported from there."""
    try:
        gate = load_gate(spec)
        if getattr(gate, "project_aware", False):
            return bool(gate(tree, project.get()))
        return bool(gate(tree))
    except Exception:  # noqa: BLE001 - a prefilter must never lose a file
        return True
