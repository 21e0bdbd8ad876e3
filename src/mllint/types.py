"""Value types shared by the engine, the reporters and the runtime harness.

Everything here is immutable and JSON-friendly (see ``to_dict``), because findings cross
process boundaries twice: from lint workers back to the CLI, and from the CLI into the
``--verify`` child process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Position:
    """1-based line and 1-based column, as editors and SARIF count them."""

    line: int
    column: int


@dataclass(frozen=True, order=True)
class Span:
    start: Position
    end: Position

    @classmethod
    def lines(cls, start_line: int, end_line: int) -> "Span":
        return cls(Position(start_line, 1), Position(end_line, 1))

    def contains_line(self, line: int) -> bool:
        return self.start.line <= line <= self.end.line


@dataclass(frozen=True)
class Finding:
    """One diagnostic: a rule's suspicion about one place in one file.

    ``region`` is the stretch of code the runtime probe watches (a loop, a function body)
    when it is wider than ``span``; ``data`` carries what the rule learnt that its probe
    needs (variable names, related lines). Both must stay JSON-serialisable.
    """

    path: str
    code: str
    name: str
    message: str
    span: Span
    severity: Severity = Severity.ERROR
    hint: str | None = None
    region: Span | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    #: In a notebook: the code cell (1-based) that ``span`` counts lines in, and the line
    #: of the ``.ipynb`` file holding the start (see ``mllint.notebook``).
    cell: int | None = None
    notebook_line: int | None = None

    @property
    def line(self) -> int:
        return self.span.start.line

    def sort_key(self) -> tuple:
        return (self.path, self.cell or 0, self.span.start.line, self.span.start.column,
                self.code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.span.start.line,
            "column": self.span.start.column,
            "end_line": self.span.end.line,
            "end_column": self.span.end.column,
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "severity": self.severity.value,
            "hint": self.hint,
            "region": None
            if self.region is None
            else [self.region.start.line, self.region.end.line],
            "data": dict(self.data),
            "cell": self.cell,
            **({} if self.cell is None else {"notebook_line": self.notebook_line}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        region = d.get("region")
        return cls(
            path=d["path"],
            code=d["code"],
            name=d["name"],
            message=d["message"],
            span=Span(
                Position(d["line"], d["column"]), Position(d["end_line"], d["end_column"])
            ),
            severity=Severity(d.get("severity", "error")),
            hint=d.get("hint"),
            region=None if region is None else Span.lines(region[0], region[1]),
            data=d.get("data") or {},
            cell=d.get("cell"),
            notebook_line=d.get("notebook_line"),
        )


class ErrorKind(str, enum.Enum):
    """Why a file could not be linted. Each kind makes the run exit with code 2."""

    MISSING = "missing-path"
    UNREADABLE = "unreadable"
    DECODE = "decode-error"
    BINARY = "binary-file"
    TOO_LARGE = "too-large"
    SYNTAX = "syntax-error"
    SYMLINK_LOOP = "symlink-loop"
    INTERNAL = "internal-error"
    #: The process linting the file died (e.g. a segfault in libcst's native parser).
    CRASHED = "crashed"
    #: Linting the file took longer than the per-file time budget.
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class FileError:
    path: str
    kind: ErrorKind
    message: str
    position: Position | None = None
    rule: str | None = None
    cell: int | None = None  # in a notebook: the code cell ``position`` counts lines in
    #: Only this part was left out: the rest of the file was linted (a notebook's cell).
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind.value,
            "message": self.message,
            "line": None if self.position is None else self.position.line,
            "column": None if self.position is None else self.position.column,
            "rule": self.rule,
            "cell": self.cell,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FileError":
        pos = None if d.get("line") is None else Position(d["line"], d["column"] or 1)
        return cls(d["path"], ErrorKind(d["kind"]), d["message"], pos, d.get("rule"),
                   d.get("cell"), bool(d.get("partial")))


class VerdictStatus(str, enum.Enum):
    CONFIRMED = "confirmed"
    REFUTED = "refuted"
    NOT_REACHED = "not-reached"
    ERROR = "error"


@dataclass(frozen=True)
class Verdict:
    """What the ``--verify`` run showed about one finding.

    ``figures`` holds the measured numbers behind ``evidence`` (JSON scalars only).
    """

    status: VerdictStatus
    evidence: str
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "evidence": self.evidence, **dict(self.figures)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        rest = {k: v for k, v in d.items() if k not in ("status", "evidence")}
        return cls(VerdictStatus(d["status"]), d.get("evidence", ""), rest)


@dataclass(frozen=True)
class FileResult:
    path: str
    findings: tuple[Finding, ...] = ()
    errors: tuple[FileError, ...] = ()
    #: Problems that do not stop the lint (an unreadable ``# noqa``), printed to stderr.
    warnings: tuple[str, ...] = ()
    #: Other files of the project the result depended on (path -> content digest, see
    #: ``mllint.project``): a cached result is valid only while they are unchanged.
    depends_on: Mapping[str, str] = field(default_factory=dict, compare=False)
