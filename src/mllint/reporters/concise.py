from __future__ import annotations

from typing import TextIO

from mllint.reporters import Report


def render(report: Report, out: TextIO) -> None:
    for d in report.diagnostics:
        f = d.finding
        verdict = "" if d.verdict is None else f" [{d.verdict.status.value}]"
        cell = "" if f.cell is None else f"cell {f.cell}:"
        out.write(f"{f.path}:{cell}{f.line}:{f.span.start.column}: {f.code} {f.message}{verdict}\n")
    for e in report.errors:
        pos = "" if e.position is None else f"{e.position.line}:{e.position.column}:"
        if e.cell is not None:
            pos = f"cell {e.cell}:{pos}"
        out.write(f"{e.path}:{pos} error[{e.kind.value}] {e.message}\n")
    if report.verify_summary is not None:
        out.write(report.verify_summary.text() + "\n")
