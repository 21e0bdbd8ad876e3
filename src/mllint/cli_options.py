"""The ``check`` options ruff users expect, and what each one does.

Kept apart from ``mllint.cli`` so the command's own flow stays readable: file selection
(``--exclude``, ``.gitignore``, ``--force-exclude``, ``--stdin-filename``), rule selection
(``--extend-select``), output (``--statistics``, ``--quiet``) and edits (``--add-noqa``,
``--fix``, ``--unsafe-fixes``, ``--diff``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from typing import Callable

import click


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c.strip() for v in values for c in v.split(",") if c.strip())


OPTIONS: list[Callable] = [
    click.option("--extend-select", multiple=True, metavar="CODES",
                 help="Rules to add to the selection (config's or --select's)."),
    click.option("--exclude", multiple=True, metavar="PATTERNS",
                 help="Files to skip, gitignore-style (comma-separated); replaces config's."),
    click.option("--extend-exclude", multiple=True, metavar="PATTERNS",
                 help="Files to skip in addition to `exclude`."),
    click.option("--respect-gitignore/--no-respect-gitignore", default=None,
                 help="Skip files git ignores (default: on)."),
    click.option("--force-exclude/--no-force-exclude", default=None,
                 help="Apply exclusions to files passed by name too (for pre-commit, editors)."),
    click.option("--stdin-filename", metavar="PATH",
                 help="Lint the text on standard input as if it were this file."),
    click.option("--statistics", is_flag=True, help="Print how many findings each rule has."),
    click.option("--quiet", "-q", is_flag=True,
                 help="Print the findings only: no summary, no warnings."),
    click.option("--add-noqa", is_flag=True,
                 help="Add `# noqa: CODE` to every line with a finding, and exit."),
    click.option("--report-unused-noqa", is_flag=True,
                 help="Report `# noqa` directives that suppress nothing (code ML100)."),
]


def ecosystem_options(command: Callable) -> Callable:
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def override_settings(settings, opts: dict):
    """Command-line file options over the configuration's."""
    changes = {}
    if opts["exclude"]:
        changes["exclude"] = _split(opts["exclude"])
    if opts["extend_exclude"]:
        changes["exclude"] = changes.get("exclude", settings.exclude) + _split(
            opts["extend_exclude"])
    for key in ("respect_gitignore", "force_exclude"):
        if opts[key] is not None:
            changes[key] = opts[key]
    return dataclasses.replace(settings, **changes) if changes else settings


def extend_select(chosen_select: list[str], opts: dict) -> list[str]:
    extra = list(_split(opts["extend_select"]))
    if extra and not chosen_select:
        return ["ALL", *extra]  # no selection means every rule; extra adds nothing to it
    return chosen_select + extra


def print_statistics(diagnostics, fmt: str, out) -> None:
    counts = Counter((d.finding.code, d.finding.name) for d in diagnostics)
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if fmt == "json":
        json.dump([{"code": c, "name": n, "count": k} for (c, n), k in rows], out, indent=2)
        out.write("\n")
        return
    width = len(str(max(counts.values(), default=0)))
    for (code, name), count in rows:
        out.write(f"{count:>{width}}\t{code}\t{name}\n")


def print_warnings(results, quiet: bool) -> None:
    if quiet:
        return
    for result in results:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)


def add_noqa(results) -> int:
    """Writes ``# noqa`` directives for every finding; returns how many lines changed."""
    from mllint.noqa import add_noqa as add
    from mllint.notebook import is_notebook
    from mllint.source import decode, read_bytes

    by_path: dict[str, list] = {}
    for result in results:
        if result.findings:
            by_path.setdefault(result.path, []).extend(result.findings)
    changed = 0
    for path, findings in sorted(by_path.items()):
        if is_notebook(path):
            click.echo(f"warning: {path}: --add-noqa does not edit notebooks; "
                       "add the directives in Jupyter", err=True)
            continue
        data = read_bytes(path)
        text = decode(path, data) if isinstance(data, bytes) else None
        if not isinstance(text, str):
            continue
        new, n = add(text, findings)
        if n:
            write_like(path, data, new)
            changed += n
    return changed


def write_like(path: str, original: bytes, text: str) -> None:
    """Writes ``text`` in the encoding, BOM and line endings the file had."""
    import io
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(original).readline)
    except SyntaxError:
        encoding = "utf-8"
    newline = "\r\n" if b"\r\n" in original else "\n"
    body = text.replace("\r\n", "\n").replace("\n", newline)
    with open(path, "wb") as fh:
        fh.write(body.encode(encoding))


def read_stdin() -> bytes:
    return sys.stdin.buffer.read()
