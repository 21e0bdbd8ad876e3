"""The rule unit: one class holds a rule's code, docs, examples, static check and probe.

A rule is a libcst ``BatchableCSTVisitor``: the engine parses a file once, resolves the
union of every active rule's ``METADATA_DEPENDENCIES`` once, and walks the tree once with
all rules batched together. A rule gathers facts while visiting and decides when it
leaves the scope that settles them (usually ``leave_Module``), then calls ``report``.

An ``AstRule`` decides on Python's own ``ast`` instead, in one call of ``check``: the tree
the prefilter parsed already, about ten times cheaper than a libcst parse, which a file
whose active rules all decide on ``ast`` never gets. Such a rule needs no ``GATE``: it is
its own cheap stage. (Fixes still edit the libcst tree, see ``mllint.fixes``.)

The class docstring *is* the rule's documentation, under fixed headings (see
``DOC_HEADINGS``). The "Example" and "Use instead" sections are generated from the first
``INVALID`` and ``VALID`` examples, so the docs can never drift from the tested code.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import libcst as cst
from libcst.metadata import PositionProvider

from mllint.docstrings import sections
from mllint.prefilter import Requirement, matches, normalize
from mllint.source import physical_lines
from mllint.types import Finding, Position, Severity, Span

if TYPE_CHECKING:
    from mllint.project.model import ProjectView

DOC_HEADINGS = (
    "What it does",
    "Why is this bad?",
    "Known problems",
    "How --verify confirms it",
)

_CODE_RE = re.compile(r"^ML\d{3}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Invalid:
    """A bad example and the 1-based lines on which this rule must report, in order."""

    code: str
    lines: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", textwrap.dedent(self.code).strip("\n") + "\n")
        object.__setattr__(self, "lines", tuple(self.lines))


@dataclass(frozen=True)
class Valid:
    code: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", textwrap.dedent(self.code).strip("\n") + "\n")


_STAR_IMPORT = re.compile(r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]*\*", re.M)


@dataclass
class FileContext:
    """What a rule may know about the file it checks. Never the file's runtime behaviour."""

    path: str
    source: str
    lines: Sequence[str] = field(default_factory=list)
    #: What the rules of one traversal share (facts several rules gather alike); the
    #: engine empties it before each traversal.
    shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: The file on disk, when the text came from one: the project model reads the
    #: modules around it. ``None`` for text from elsewhere (stdin, tests).
    file: str | None = None

    def __post_init__(self) -> None:
        if not self.lines:
            self.lines = physical_lines(self.source)

    @functools.cached_property
    def star_imports(self) -> bool:
        """The module has a ``from x import *``: a name it never binds may come from it."""
        return _STAR_IMPORT.search(self.source) is not None

    @functools.cached_property
    def project(self) -> "ProjectView | None":
        """The project this file belongs to, as ``mllint.project`` models it; read on
        first use, so files no rule asks about cost nothing."""
        if self.file is None:
            return None
        from mllint.project import project_for

        return project_for(self.file)

    @property
    def depends_on(self) -> dict[str, str]:
        """Other files the rules' answers depended on (empty if none was asked)."""
        view = self.__dict__.get("project")
        return dict(view.read) if view is not None else {}


_HINT_NAME = re.compile(r"`([A-Za-z_]\w*)(?=[.(`])")


def personal_hint(hint: str, data: Mapping[str, Any]) -> str:
    """The hint in the user's own names: a code span that starts with a name the rule put
    in ``data`` (`optimizer.zero_grad()` with ``data["optimizer"] == "opt"``) names their
    variable instead (`opt.zero_grad()`)."""
    def own(m: re.Match) -> str:
        value = data.get(m.group(1))
        return f"`{value}" if isinstance(value, str) and value else m.group(0)
    return _HINT_NAME.sub(own, hint) if hint else hint


class Rule(cst.BatchableCSTVisitor):
    """Base class of every rule. Subclasses live in ``mllint.rules`` and are discovered."""

    code: ClassVar[str]
    name: ClassVar[str]
    #: One line: the bad pattern, for ``mllint rules`` and the README table.
    summary: ClassVar[str]
    #: What to do about it, shown under each finding.
    hint: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
    #: Sound textual prefilter: regexes that must *all* occur in a file's text for this
    #: rule to be able to report anything there (an entry may be a tuple of regexes, any
    #: one of which suffices). Files that fail it are never parsed for this rule, so a
    #: pattern must be implied by every way the rule can fire.
    REQUIRES: ClassVar[Sequence[Requirement]] = ()
    #: Optional second prefilter stage, ``"module:function"``: a stdlib-only function of
    #: Python's ``ast`` tree that returns False only when this rule cannot report in the
    #: module (see ``mllint.prefilter``). Never imports libcst, so the parent can run it.
    GATE: ClassVar[str | None] = None
    VALID: ClassVar[Sequence[Valid]] = ()
    INVALID: ClassVar[Sequence[Invalid]] = ()
    #: The runtime probe paired with this rule, as ``"module:Class"`` so that static
    #: linting never imports it (probes import torch).
    PROBE: ClassVar[str | None] = None
    #: The rule's automatic fix and its "Fix safety" docs (``mllint.fixes.FixSpec``), set
    #: at the end of the rule's module.
    FIX: ClassVar[Any] = None

    METADATA_DEPENDENCIES = (PositionProvider,)

    _requires: ClassVar[tuple[Requirement, ...]] = ()
    gate: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or cls.__dict__.get("abstract", False):
            return
        cls._requires = normalize(cls.REQUIRES)
        # ``prefilter.admitted`` reads ``.gate`` of rules and of manifest entries alike.
        cls.gate = cls.GATE

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context
        self.findings: list[Finding] = []

    def get_visitors(self) -> Mapping[str, Any]:
        """libcst's answer (``inspect.getmembers`` over ~1,000 attributes, about 5 ms per
        visitor and file), computed once per class: which methods a rule defines does not
        change from one instance to the next."""
        cls = type(self)
        names = cls.__dict__.get("_visitor_names")
        if names is None:
            names = tuple(super().get_visitors())
            cls._visitor_names = names
        return {name: getattr(self, name) for name in names}

    # -- prefilter ---------------------------------------------------------------------

    @classmethod
    def may_match(cls, text: str, memo: dict[str, bool] | None = None) -> bool:
        return matches(cls._requires, text, memo)

    # -- reporting ---------------------------------------------------------------------

    def span_of(self, node: cst.CSTNode) -> Span:
        """The span to show for ``node``; a compound statement is cut to its header line."""
        rng = self.get_metadata(PositionProvider, node)
        start = Position(rng.start.line, rng.start.column + 1)
        if isinstance(node, cst.BaseCompoundStatement):
            line = self.context.lines[rng.start.line - 1] if self.context.lines else ""
            return Span(start, Position(rng.start.line, len(line.rstrip()) + 1))
        return Span(start, Position(rng.end.line, rng.end.column + 1))

    def lines_of(self, node: cst.CSTNode) -> Span:
        rng = self.get_metadata(PositionProvider, node)
        return Span.lines(rng.start.line, rng.end.line)

    def report(
        self,
        node: cst.CSTNode,
        message: str,
        *,
        region: cst.CSTNode | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.findings.append(
            Finding(
                path=self.context.path,
                code=self.code,
                name=self.name,
                message=message,
                span=self.span_of(node),
                severity=self.severity,
                hint=personal_hint(self.hint, data or {}),
                region=None if region is None else self.lines_of(region),
                data=dict(data or {}),
            )
        )

    # -- documentation -----------------------------------------------------------------

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split by its ``## Heading`` lines."""
        return sections(cls.__doc__)

    @classmethod
    def documentation(cls) -> str:
        """The rule's full documentation in Markdown, as ``mllint rule CODE`` prints it."""
        sec = cls.doc_sections()
        out = [f"# {cls.code} {cls.name}", "", cls.summary, ""]
        for heading in DOC_HEADINGS[:3]:
            if sec.get(heading):
                out += [f"## {heading}", "", sec[heading], ""]
        if cls.INVALID:
            out += ["## Example", "", "```python", cls.INVALID[0].code.rstrip(), "```", ""]
        if cls.VALID:
            out += ["## Use instead", "", "```python", cls.VALID[0].code.rstrip(), "```", ""]
        if cls.FIX is not None:
            out += ["## Fix safety", "", inspect.cleandoc(cls.FIX.safety), ""]
        if sec.get(DOC_HEADINGS[3]):
            out += [f"## {DOC_HEADINGS[3]}", "", sec[DOC_HEADINGS[3]], ""]
        return "\n".join(out).rstrip() + "\n"

    @classmethod
    def validate_definition(cls) -> list[str]:
        """Problems with the rule's own definition; the test suite asserts there are none."""
        problems = []
        if not _CODE_RE.match(getattr(cls, "code", "")):
            problems.append(f"{cls.__name__}: code must look like ML001")
        if not _NAME_RE.match(getattr(cls, "name", "")):
            problems.append(f"{cls.__name__}: name must be kebab-case")
        for attr in ("summary", "hint"):
            if not getattr(cls, attr, None):
                problems.append(f"{cls.__name__}: missing {attr}")
        sec = cls.doc_sections()
        for heading in DOC_HEADINGS:
            if heading != "Known problems" and not sec.get(heading):
                problems.append(f"{cls.__name__}: docstring lacks '## {heading}'")
        if not cls.VALID or not cls.INVALID:
            problems.append(f"{cls.__name__}: needs VALID and INVALID examples")
        if not cls.REQUIRES:
            problems.append(f"{cls.__name__}: needs a REQUIRES prefilter")
        if cls.FIX is None:
            problems.append(f"{cls.__name__}: needs a FIX (its fix, or why it has none)")
        return problems


class AstRule(Rule):
    """A rule that decides on Python's ``ast`` (see the module's docstring): the engine
    calls ``check`` once per file with the module's tree, and never walks it with libcst."""

    abstract = True
    METADATA_DEPENDENCIES = ()

    def check(self, tree: ast.Module) -> None:
        raise NotImplementedError

    def span_of(self, node: ast.AST) -> Span:  # type: ignore[override]
        """``node``'s span in characters (``ast`` counts columns in UTF-8 bytes); a
        compound statement is cut to its header line."""
        line, end_line = node.lineno, node.end_lineno or node.lineno  # type: ignore[attr-defined]
        start = Position(line, self._column(line, node.col_offset) + 1)  # type: ignore[attr-defined]
        if isinstance(node, _COMPOUND):
            text = self.context.lines[line - 1] if self.context.lines else ""
            return Span(start, Position(line, len(text.rstrip()) + 1))
        end_col = node.end_col_offset or 0  # type: ignore[attr-defined]
        return Span(start, Position(end_line, self._column(end_line, end_col) + 1))

    def lines_of(self, node: ast.AST) -> Span:  # type: ignore[override]
        return Span.lines(node.lineno, node.end_lineno or node.lineno)  # type: ignore[attr-defined]

    def _column(self, line: int, byte_offset: int) -> int:
        text = self.context.lines[line - 1] if 0 < line <= len(self.context.lines) else ""
        if text.isascii():
            return byte_offset
        return len(text.encode("utf-8")[:byte_offset].decode("utf-8", "replace"))


_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
             ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match,
             getattr(ast, "TryStar", ast.Try))
