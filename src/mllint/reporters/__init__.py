"""Output formats. Each module exposes ``render(report, out)``; looked up lazily by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, TextIO

from mllint.types import FileError, Finding, Verdict, VerdictStatus

FORMATS = ("full", "concise", "json", "github", "sarif")


@dataclass(frozen=True)
class Diagnostic:
    finding: Finding
    verdict: Verdict | None = None
    #: True for a bug the runtime probes found that the static pass did not.
    runtime_only: bool = False

    @property
    def refuted(self) -> bool:
        """The run showed the bug does not happen: a note, not a problem."""
        return self.verdict is not None and self.verdict.status is VerdictStatus.REFUTED


@dataclass(frozen=True)
class Report:
    diagnostics: tuple[Diagnostic, ...]
    errors: tuple[FileError, ...]
    files_checked: int
    #: The --verify run summary (``mllint.verify.summary.RunSummary``), if it ran.
    verify_summary: Any = None
    #: Source lines for code frames: by path, or by (path, cell) for a notebook's cells.
    sources: dict[str | tuple[str, int], list[str]] = field(default_factory=dict)
    #: Findings only: no summary line.
    quiet: bool = False

    def lines_of(self, finding: Finding) -> list[str] | None:
        key = finding.path if finding.cell is None else (finding.path, finding.cell)
        return self.sources.get(key)

    @property
    def problems(self) -> tuple[Diagnostic, ...]:
        """Diagnostics that count as problems (all but the refuted ones)."""
        return tuple(d for d in self.diagnostics if not d.refuted)


def printable_path(path: str) -> str:
    """``path`` as valid Unicode: a file name that is not UTF-8 (held with lone
    surrogates, as Python decodes it) gets its odd bytes as ``\\xff`` escapes, since JSON
    and SARIF readers reject lone surrogates."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def render(fmt: str, report: Report, out: TextIO) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    module = importlib.import_module(f"mllint.reporters.{fmt}")
    module.render(report, out)


def preload(fmt: str) -> None:
    """Import the reporter of ``fmt`` (for ``full``, rich's console) ahead of ``render``:
    the CLI does it while it waits for the workers, off the path to the report."""
    if fmt in FORMATS:
        importlib.import_module(f"mllint.reporters.{fmt}")
