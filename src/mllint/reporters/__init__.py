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
    sources: dict[str, list[str]] = field(default_factory=dict)


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
