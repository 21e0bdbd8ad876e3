"""GitHub Actions workflow commands: one ``::error``/``::warning`` annotation a line."""

from __future__ import annotations

from typing import TextIO

from mllint.reporters import Report


def _data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(s: str) -> str:
    return _data(s).replace(":", "%3A").replace(",", "%2C")


def _path(path: str) -> str:
    """As GitHub matches it against the repository: no leading ``./``."""
    while path.startswith("./"):
        path = path[2:]
    return path


def render(report: Report, out: TextIO) -> None:
    for d in report.diagnostics:
        f = d.finding
        # A refuted finding is a note: the run showed the bug does not happen.
        level = "notice" if d.refuted else ("error" if f.severity.value == "error" else "warning")
        msg = f.message
        if d.verdict is not None:
            msg += f"\n--verify: {d.verdict.status.value}: {d.verdict.evidence}"
        if f.cell is None:
            where = (f"line={f.line},col={f.span.start.column},"
                     f"endLine={f.span.end.line},endColumn={f.span.end.column}")
        else:
            # A notebook: the line of the .ipynb file that holds the source line, and the
            # cell in the message (columns of the raw JSON would mislead).
            where = f"line={f.notebook_line or 1}"
            msg = f"cell {f.cell}, line {f.line}: {msg}"
        props = f"file={_prop(_path(f.path))},{where},title={_prop(f'{f.code} {f.name}')}"
        out.write(f"::{level} {props}::{_data(msg)}\n")
    run = report.verify_summary
    if run is not None:
        level = "error" if run.failed else "notice"
        out.write(f"::{level} title={_prop('mllint --verify')}::{_data(run.text())}\n")
    for e in report.errors:
        props = f"file={_prop(_path(e.path))}"
        message = e.message
        if e.position is not None and e.cell is None:
            props += f",line={e.position.line},col={e.position.column}"
        elif e.position is not None:
            message = f"cell {e.cell}, line {e.position.line}: {message}"
        props += f",title={_prop('mllint ' + e.kind.value)}"
        out.write(f"::error {props}::{_data(message)}\n")
