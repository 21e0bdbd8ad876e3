"""Automatic fixes: text edits computed on libcst's tree, so comments and formatting stay.

A rule offers a fix through its ``FIX`` (a ``FixSpec``): the "Fix safety" text of its docs
and a function from (file, finding) to a ``Fix`` or ``None``. A fix is *safe* when it
cannot change what correct code computes (it removes the bug and nothing else); *unsafe*
when it could, in a way the rule cannot rule out from the source (``--unsafe-fixes``).

Edits are replacements of source text between two offsets, each made from libcst nodes
(``FixFile.replace`` renders the new node with libcst, so the untouched parts keep their
exact text). A file's fixes are applied together when their edits do not overlap; the
file is then linted again and fixed again, up to ``MAX_ROUNDS`` times, as ruff does.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from mllint.types import Finding

MAX_ROUNDS = 5


@dataclass(frozen=True)
class Edit:
    start: int  # offsets into the file's text
    end: int
    text: str


@dataclass(frozen=True)
class Fix:
    title: str
    safe: bool
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class FixSpec:
    """What a rule says about fixing it: the "Fix safety" section of its docs and, when
    it has a fix, the function that makes one."""

    safety: str
    make: Callable[["FixFile", Finding], Fix | None] | None = None


class FixFile:
    """One file's text and libcst tree, with the helpers fix functions need."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.module = cst.parse_module(text)
        self.wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
        self.positions = self.wrapper.resolve(PositionProvider)
        self.parents = self.wrapper.resolve(ParentNodeProvider)
        self._line_starts = [0]
        for line in text.splitlines(keepends=True):
            self._line_starts.append(self._line_starts[-1] + len(line))

    # -- finding nodes ---------------------------------------------------------------------

    def nodes_at(self, line: int, column: int, kind: type | tuple[type, ...] = cst.CSTNode):
        """Nodes of ``kind`` starting at 1-based ``line`` and ``column``, outermost first."""
        out = [node for node, rng in self.positions.items()
               if rng.start.line == line and rng.start.column + 1 == column
               and isinstance(node, kind)]
        return sorted(out, key=lambda n: -self.length(n))

    def node_for(self, finding: Finding, kind: type | tuple[type, ...]):
        """The node the finding reports: of ``kind``, spanning the finding's span."""
        for node in self.nodes_at(finding.span.start.line, finding.span.start.column, kind):
            rng = self.positions[node]
            if (rng.end.line, rng.end.column + 1) == (finding.span.end.line,
                                                      finding.span.end.column):
                return node
        return None

    def nodes_on_line(self, line: int, kind: type | tuple[type, ...]):
        return [n for n, rng in self.positions.items()
                if rng.start.line == line and isinstance(n, kind)]

    def walk(self, kind: type | tuple[type, ...]) -> Iterable[cst.CSTNode]:
        return (n for n in self.positions if isinstance(n, kind))

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self.parents.get(node)

    def ancestors(self, node: cst.CSTNode) -> Iterable[cst.CSTNode]:
        while (node := self.parents.get(node)) is not None:
            yield node

    # -- positions and edits -------------------------------------------------------------

    def offset(self, line: int, column0: int) -> int:
        return self._line_starts[line - 1] + column0

    def span(self, node: cst.CSTNode) -> tuple[int, int]:
        rng = self.positions[node]
        return (self.offset(rng.start.line, rng.start.column),
                self.offset(rng.end.line, rng.end.column))

    def length(self, node: cst.CSTNode) -> int:
        start, end = self.span(node)
        return end - start

    def source(self, node: cst.CSTNode) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def replace(self, node: cst.CSTNode, new: str) -> Edit:
        """``node``'s text replaced by ``new``. Fixes build ``new`` from the text of the
        nodes they keep (``source``), never by rendering a nested node with libcst,
        which would lose the indentation its enclosing block gives it."""
        start, end = self.span(node)
        return Edit(start, end, new)

    def delete_item(self, item: cst.CSTNode, previous: cst.CSTNode | None) -> Edit:
        """Removes one item of a comma-separated list (an argument, a dict element):
        its whole line when it has one to itself, else its text and the comma before."""
        start, end = self.span(item)
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", end)
        line_end = len(self.text) if line_end < 0 else line_end + 1
        rest = self.text[end:line_end].strip()
        if not self.text[line_start:start].strip() and rest in ("", ",") or (
                rest.startswith(",") and rest[1:].strip().startswith("#")):
            return Edit(line_start, line_end, "")
        if previous is None:
            return Edit(start, end + (1 if self.text[end:end + 1] == "," else 0), "")
        return Edit(self.span(previous)[1], end, "")

    def append_item(self, items: Sequence[cst.CSTNode], text: str) -> Edit | None:
        """Adds ``text`` after the last of ``items`` (a non-empty comma-separated list):
        on a line of its own, with the last item's indentation, when that item has one."""
        last = items[-1]
        # An element's own span may hold its comma; its value's end is where it ends.
        start, end = self.span(last)[0], self.span(getattr(last, "value", last))[1]
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", end)
        line_end = len(self.text) if line_end < 0 else line_end
        tail = self.text[end:line_end]
        own_line = not self.text[line_start:start].strip() and tail.strip()[:1] in ("", ",", "#")
        if own_line:
            indent = self.text[line_start:start]
            comma_at = end + len(tail) - len(tail.lstrip()) if tail.lstrip().startswith(",") else None
            edits_text = f"\n{indent}{text},"
            if comma_at is None:  # the last item had no comma: give it one
                return Edit(end, line_end, "," + tail + edits_text)
            return Edit(line_end, line_end, edits_text)
        comma = tail.lstrip().startswith(",")
        if comma:
            at = end + len(tail) - len(tail.lstrip()) + 1
            return Edit(at, at, f" {text},")
        return Edit(end, end, f", {text}")

    def line_text(self, line: int) -> str:
        return self.text[self._line_starts[line - 1]:self._line_starts[line]] \
            if line < len(self._line_starts) else ""

    def insert_line_before(self, line: int, code: str) -> Edit:
        """``code`` as a new line above ``line``, at that line's indentation."""
        current = self.line_text(line)
        indent = current[:len(current) - len(current.lstrip(" \t"))]
        ending = "\r\n" if current.endswith("\r\n") else "\n"
        at = self._line_starts[line - 1]
        return Edit(at, at, f"{indent}{code}{ending}")

    def binds(self, name: str) -> bool:
        """Whether ``name`` is assigned or imported anywhere in the module."""
        for node in self.walk((cst.Name,)):
            if node.value == name and isinstance(
                    self.parent(node), (cst.AssignTarget, cst.ImportAlias, cst.AsName,
                                        cst.AnnAssign, cst.Param, cst.For, cst.WithItem)):
                return True
        return False


def method_call(file: FixFile, expr: cst.BaseExpression, method: str) -> str:
    """``expr.method()`` as text, from ``expr``'s own text: a name, attribute, call or
    subscript as it is, anything else in parentheses."""
    text = file.source(expr)
    atomic = isinstance(expr, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or expr.lpar
    return f"{text}.{method}()" if atomic else f"({text}).{method}()"


# -- applying ------------------------------------------------------------------------------

@dataclass
class FixOutcome:
    text: str
    applied: list[Fix] = field(default_factory=list)
    #: Findings with a fix that was not applied (unsafe without --unsafe-fixes).
    withheld: int = 0


def fixes_for(text: str, findings: Sequence[Finding], rules: dict[str, type],
              unsafe: bool) -> tuple[list[Fix], int]:
    """The fixes to apply to ``text`` now, and how many unsafe ones were withheld."""
    specs = {f.code: getattr(rules.get(f.code), "FIX", None) for f in findings}
    if not any(s is not None and s.make is not None for s in specs.values()):
        return [], 0
    try:
        file = FixFile(text)
    except cst.ParserSyntaxError:
        return [], 0
    chosen, withheld = [], 0
    for finding in findings:
        spec = specs[finding.code]
        if spec is None or spec.make is None:
            continue
        fix = spec.make(file, finding)
        if fix is None or not fix.edits:
            continue
        if fix.safe or unsafe:
            chosen.append(fix)
        else:
            withheld += 1
    return chosen, withheld


def apply(text: str, fixes: Sequence[Fix]) -> tuple[str, list[Fix]]:
    """``text`` with every fix whose edits overlap no earlier fix's; and those applied."""
    taken: list[Edit] = []
    applied = []
    for fix in fixes:
        if any(e.start < t.end and t.start < e.end or (e.start == t.start == e.end == t.end)
               for e in fix.edits for t in taken):
            continue
        taken.extend(fix.edits)
        applied.append(fix)
    for edit in sorted(taken, key=lambda e: (e.start, e.end), reverse=True):
        text = text[:edit.start] + edit.text + text[edit.end:]
    return text, applied


def fix_text(text: str, lint: Callable[[str], Sequence[Finding]], rules: dict[str, type],
             unsafe: bool) -> FixOutcome:
    """Fix, lint again, fix again, until nothing more applies (at most ``MAX_ROUNDS``)."""
    outcome = FixOutcome(text)
    for _ in range(MAX_ROUNDS):
        fixes, withheld = fixes_for(outcome.text, lint(outcome.text), rules, unsafe)
        outcome.withheld = withheld
        if not fixes:
            break
        new, applied = apply(outcome.text, fixes)
        try:
            cst.parse_module(new)
        except cst.ParserSyntaxError:
            break  # never write a file a fix broke; the findings stay reported
        outcome.text = new
        outcome.applied += applied
    return outcome


def unified_diff(path: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True),
                                        after.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))
