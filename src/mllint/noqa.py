"""``# noqa`` directives, read from comment tokens (never from inside a string).

``# noqa`` alone suppresses every finding on its line; ``# noqa: ML001, missing-zero-grad``
only those rules (codes or names). A directive mllint cannot read is warned about and
suppresses nothing it does not name: ``# noqa:`` with no code, a misspelt mllint code
(``ML01``, ``ML999``) or name. Codes of other tools (``E501``, ``BLE001``) share the comment
with mllint's and are left alone, as ruff leaves codes it does not own.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

from mllint.source import STRING_OR_COMMENT
from mllint.types import ErrorKind, FileResult, Finding, Position, Severity, Span

#: mllint's own pseudo-rule for a directive that suppressed nothing (ruff's RUF100).
UNUSED_CODE = "ML100"
UNUSED_NAME = "unused-noqa"

_DIRECTIVE = re.compile(r"#\s*noqa(?P<sep>\s*:)?(?P<rest>[^#]*)", re.IGNORECASE)
_CODE = re.compile(r"^[A-Za-z]+[0-9]+$")
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)+$")
_OURS = re.compile(r"^ML", re.IGNORECASE)


@dataclass
class Directive:
    line: int
    column: int  # 1-based column of the ``#``
    codes: frozenset[str] | None  # None: a blanket ``# noqa``
    used: set[str] = field(default_factory=set)
    used_blanket: bool = False


@dataclass(frozen=True)
class NoqaScan:
    directives: dict[int, Directive]
    warnings: tuple[str, ...]  # "line N: ..." for each directive that could not be read


def scan(text: str, rules: dict[str, str]) -> NoqaScan:
    """Every ``# noqa`` comment in ``text``; ``rules`` maps each known name to its code."""
    directives: dict[int, Directive] = {}
    warnings: list[str] = []
    if "noqa" not in text.lower():
        return NoqaScan(directives, ())
    for line, col, comment in _comments(text):
        m = _DIRECTIVE.search(comment)
        if m is None:
            continue
        rest = m.group("rest").strip()
        if m.group("sep") is None:
            if rest and _CODE.match(rest.replace(",", " ").split()[0]):
                warnings.append(f"line {line}: `# noqa {rest}` lacks its colon; "
                                f"write `# noqa: {rest}` (suppresses nothing as written)")
                directives[line] = Directive(line, col, frozenset())
            else:  # ``# noqa`` or ``# noqa  reason...``
                directives[line] = Directive(line, col, None)
            continue
        items = [i for i in re.split(r"[\s,]+", rest) if i]
        if not items:
            warnings.append(f"line {line}: `# noqa:` names no rule; it suppresses nothing "
                            "(write `# noqa` to suppress every rule on this line)")
            directives[line] = Directive(line, col, frozenset())
            continue
        codes = set()
        for item in items:
            if item.lower() in rules:
                codes.add(rules[item.lower()])
            elif item.upper() in rules.values() or item.upper() == UNUSED_CODE:
                codes.add(item.upper())
            elif _CODE.match(item) and not _OURS.match(item):
                continue  # another tool's code
            elif _CODE.match(item) or _NAME.match(item):
                warnings.append(f"line {line}: unknown rule `{item}` in `# noqa`; "
                                "see `mllint rules`")
            else:
                if not codes:
                    warnings.append(f"line {line}: cannot read `{item}` in `# noqa`; "
                                    "expected a code like ML001 or a rule name")
                break  # the rest of the comment is prose (a reason), not codes
        directives[line] = Directive(line, col, frozenset(codes))
    return NoqaScan(directives, tuple(warnings))


def known_rules(extra=()) -> dict[str, str]:
    """Every rule's name -> its code (from the manifest: no rule is imported), plus
    ``extra`` rules (anything with ``code`` and ``name``)."""
    from mllint.manifest import rule_infos
    # Never written from here: whether a manifest may be stored is the CLI's call
    # (not with --no-cache), and it has asked first.
    return {r.name: r.code for r in (*rule_infos(write=False), *extra)}


def apply(result: FileResult, text: str, known: dict[str, str],
          unused_codes=(), findings=()) -> FileResult:
    """``findings`` less those a ``# noqa`` suppresses, added to ``result``, with a
    warning for each directive that cannot be read; with ``unused_codes`` (the codes of
    the run's rules) also a finding for each directive that suppresses none of them."""
    scanned = scan(text, known)
    kept = suppress(list(findings), scanned)
    if unused_codes and scanned.directives and not any(
            e.kind is ErrorKind.INTERNAL for e in result.errors):
        kept += unused(result.path, scanned, set(unused_codes), text.splitlines())
    warnings = tuple(f"{result.path}: {w}" for w in scanned.warnings)
    return FileResult(result.path, tuple(sorted((*result.findings, *kept),
                                                key=Finding.sort_key)),
                      result.errors, result.warnings + warnings)


def _comments(text: str):
    """``(line, column, comment)`` of each comment that mentions noqa, the string literals
    skipped with one regex (what Python's tokenizer finds, at C speed: every file that
    mentions noqa is read, most of them with no finding to suppress)."""
    line, line_start = 1, 0
    for m in STRING_OR_COMMENT.finditer(text):
        if m.group(1) is not None or "noqa" not in m.group().lower():
            continue
        start = m.start()
        line += text.count("\n", line_start, start)
        line_start = text.rfind("\n", 0, start) + 1
        yield line, start - line_start + 1, m.group()


def suppress(findings: list[Finding], noqa: NoqaScan) -> list[Finding]:
    """The findings no directive suppresses; marks the directives that did."""
    kept = []
    for f in findings:
        directive = _suppressing(f, noqa)
        if directive is None:
            kept.append(f)
        elif directive.codes is None:
            directive.used_blanket = True
        else:
            directive.used.add(f.code)
    return kept


def _suppressing(f: Finding, noqa: NoqaScan) -> Directive | None:
    for line in dict.fromkeys((f.span.start.line, f.span.end.line)):
        d = noqa.directives.get(line)
        if d is not None and (d.codes is None or f.code in d.codes):
            return d
    return None


def unused(path: str, noqa: NoqaScan, active: set[str], lines: list[str]) -> list[Finding]:
    """A finding for each directive, or code in one, that suppressed nothing this run.
    Only codes of rules that ran count: an ignored rule's directive is not unused."""
    out = []
    for d in noqa.directives.values():
        if d.codes is None:
            if d.used_blanket:
                continue
            what = "`# noqa` suppresses nothing on this line"
        else:
            stale = sorted(c for c in d.codes - d.used if c in active)
            if not stale:
                continue
            what = f"`# noqa: {', '.join(stale)}` suppresses nothing on this line"
        end = len(lines[d.line - 1].rstrip()) + 1 if d.line <= len(lines) else d.column + 1
        out.append(Finding(
            path=path, code=UNUSED_CODE, name=UNUSED_NAME,
            message=f"{what}: no such finding here. Remove it (or `mllint --add-noqa` "
                    "rewrites directives for the current findings).",
            span=Span(Position(d.line, d.column), Position(d.line, end)),
            severity=Severity.WARNING,
            hint="Remove the unused directive or the unused codes.",
        ))
    return out


def add_noqa(text: str, findings: list[Finding]) -> tuple[str, int]:
    """``text`` with ``# noqa: CODE`` on each finding's line (merged into an existing
    directive); returns the new text and how many lines changed. A finding inside a
    multi-line string gets its directive where the string ends."""
    lines = text.splitlines(keepends=True)
    string_end = _string_ends(text)
    wanted: dict[int, set[str]] = {}
    for f in findings:
        line = string_end.get(f.span.start.line, f.span.start.line)
        wanted.setdefault(line, set()).add(f.code)
    existing = {line: comment for line, _, comment in _comments(text)}
    changed = 0
    for line, codes in sorted(wanted.items()):
        if not 0 < line <= len(lines):
            continue
        raw = lines[line - 1]
        body = raw.rstrip("\r\n")
        ending = raw[len(body):]
        comment = existing.get(line)
        m = _DIRECTIVE.search(comment) if comment else None
        if m is not None and m.group("sep") is None and not m.group("rest").strip():
            continue  # a blanket ``# noqa`` already covers everything
        if m is not None and m.group("sep") is not None:
            have = [i for i in re.split(r"[\s,]+", m.group("rest")) if i]
            merged = have + sorted(c for c in codes if c not in {h.upper() for h in have})
            start = body.rindex(comment) + m.start()
            stop = body.rindex(comment) + m.end()
            new = body[:start] + f"# noqa: {', '.join(merged)}" + (
                " " if body[stop:].strip() else "") + body[stop:].lstrip()
        else:
            new = f"{body.rstrip()}  # noqa: {', '.join(sorted(codes))}"
        if new != body:
            lines[line - 1] = new + ending
            changed += 1
    return "".join(lines), changed


def _string_ends(text: str) -> dict[int, int]:
    """For each line inside a multi-line string (or f-string), the line where it ends."""
    out: dict[int, int] = {}
    fstrings: list[int] = []  # start lines of the open f-strings (tokenized in parts, 3.12+)
    start_kind = getattr(tokenize, "FSTRING_START", None)
    end_kind = getattr(tokenize, "FSTRING_END", None)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == start_kind:
                fstrings.append(tok.start[0])
                continue
            first = fstrings.pop() if tok.type == end_kind and fstrings else tok.start[0]
            if first != tok.end[0] and tok.type != tokenize.NL and not (
                    fstrings and tok.type != end_kind):
                for line in range(first, tok.end[0]):
                    out.setdefault(line, tok.end[0])
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return out
