"""The human format: code frame, rule, message, hint and --verify verdict (rich).

Colour follows rich's detection: none when ``NO_COLOR`` is set or output is not a tty.
"""

from __future__ import annotations

import os
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text

from mllint.reporters import Report
from mllint.types import VerdictStatus

_VERDICT_STYLE = {
    VerdictStatus.CONFIRMED: "bold red",
    VerdictStatus.REFUTED: "green",
    VerdictStatus.NOT_REACHED: "yellow",
    VerdictStatus.ERROR: "magenta",
}


def _frame(console: Console, lines: list[str], line: int, col: int, end_col: int, end_line: int) -> None:
    first = max(1, line - 1)
    last = min(len(lines), line + 1)
    width = len(str(last))
    # Python colours when colour is on (rich.syntax); plain text otherwise.
    syntax = Syntax("", "python", theme="ansi_dark") if console.color_system else None
    for n in range(first, last + 1):
        text = lines[n - 1].rstrip("\n")
        marker = ">" if n == line else " "
        row = Text.from_markup(f"  [dim]{marker}{n:>{width}} │[/dim] ")
        code = syntax.highlight(text) if syntax else Text(text)
        code.rstrip()  # highlight() ends the text with a newline
        row.append_text(code)
        console.print(row, highlight=False, no_wrap=True, crop=False)
        if n == line:
            stop = end_col if end_line == line and end_col > col else len(text.rstrip()) + 1
            carets = "^" * max(1, stop - col)
            console.print(f"  [dim] {' ' * width} │[/dim] {' ' * (col - 1)}[red]{carets}[/red]")


def _paragraph(console: Console, markup: str, wrap: bool) -> None:
    if not wrap:
        console.print(f"  {markup}")
        return
    text = Text.from_markup(markup)
    for line in text.wrap(console, max(20, console.width - 2)):
        line.rstrip()
        console.print(Text("  ") + line, soft_wrap=True)


def render(report: Report, out: TextIO) -> None:
    # NO_COLOR (no-color.org) means no styling at all, not merely no hues.
    plain = bool(os.environ.get("NO_COLOR"))
    console = Console(file=out, soft_wrap=True, highlight=False,
                      **({"color_system": None} if plain else {}))
    # On a terminal, long messages wrap at its width under their indent; piped output
    # keeps one line per message for grep and editors.
    wrap = console.is_terminal
    for d in report.diagnostics:
        f = d.finding
        tag = "runtime" if d.runtime_only else ""
        where = (f"{f.line}:{f.span.start.column}" if f.cell is None
                 else f"cell {f.cell}:line {f.line}")
        console.print(
            f"[bold]{escape(f.path)}:{where}[/bold]: "
            f"[bold red]{f.code}[/bold red] [cyan]{f.name}[/cyan]{' ' + tag if tag else ''}"
        )
        _paragraph(console, escape(f.message), wrap)
        lines = report.lines_of(f)
        if lines and 0 < f.line <= len(lines):
            _frame(console, lines, f.line, f.span.start.column, f.span.end.column, f.span.end.line)
        if f.hint:
            _paragraph(console, f"[blue]hint[/blue]: {escape(f.hint)}", wrap)
        if d.verdict is not None:
            style = _VERDICT_STYLE[d.verdict.status]
            console.print(
                f"  [{style}]--verify: {d.verdict.status.value}[/{style}]: {escape(d.verdict.evidence)}"
            )
        console.print()
    for e in report.errors:
        pos = "" if e.position is None else f"{e.position.line}:{e.position.column}:"
        if e.cell is not None:
            pos = f"cell {e.cell}:{pos}"
        console.print(f"[bold]{escape(e.path)}:{pos}[/bold] [bold magenta]error[/bold magenta] "
                      f"[magenta]{e.kind.value}[/magenta]: {escape(e.message)}")
    if report.quiet:
        return
    run = report.verify_summary
    if run is not None:
        console.print(escape(run.text()))
        if run.failed and run.output_tail:
            console.print("[dim]last lines of the script's output:[/dim]")
            for line in run.output_tail.splitlines():
                console.print(f"  [dim]│[/dim] {escape(line)}", highlight=False)
    problems = report.problems
    n = len(problems)
    files = len({d.finding.path for d in problems})
    failed = len({e.path for e in report.errors if not e.partial})
    summary = (f"Found {n} problem{'s' if n != 1 else ''} in {files} file{'s' if files != 1 else ''}"
               if n else "No problems found" + (" in the files checked" if failed else ""))
    refuted = len(report.diagnostics) - n
    if refuted:
        summary += f" ({refuted} finding{'s' if refuted != 1 else ''} refuted by the run)"
    if run is not None and run.failed:
        summary += (", but the --verify run did not finish"
                    if n == 0 else "; the --verify run did not finish")
    summary += f" ({report.files_checked} file{'s' if report.files_checked != 1 else ''} checked"
    if failed:
        summary += f"; {failed} file{'s' if failed != 1 else ''} could not be linted, see above"
    summary += ")."
    console.print(f"[bold]{summary}[/bold]")
