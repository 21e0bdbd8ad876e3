"""Output formats. Each module exposes ``render(report, out)``; looked up lazily by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TextIO

from mllint.types import FileError, Finding, Verdict

FORMATS = ("full", "concise", "json", "github", "sarif")


@dataclass(frozen=True)
class Diagnostic:
    finding: Finding
    verdict: Verdict | None = None
    #: True for a bug the runtime probes found that the static pass did not.
    runtime_only: bool = False


@dataclass(frozen=True)
class Report:
    diagnostics: tuple[Diagnostic, ...]
    errors: tuple[FileError, ...]
    files_checked: int
    #: Rendered run summary from --verify (exit status, steps, time), if it ran.
    verify_summary: str | None = None
    #: Source lines for code frames: by path, or by (path, cell) for a notebook's cells.
    sources: dict[str | tuple[str, int], list[str]] = field(default_factory=dict)
    #: Findings only: no summary line.
    quiet: bool = False

    def lines_of(self, finding: Finding) -> list[str] | None:
        key = finding.path if finding.cell is None else (finding.path, finding.cell)
        return self.sources.get(key)


def render(fmt: str, report: Report, out: TextIO) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    module = importlib.import_module(f"mllint.reporters.{fmt}")
    module.render(report, out)
