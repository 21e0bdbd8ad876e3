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


FIX_OPTIONS: list[Callable] = [
    click.option("--fix", is_flag=True, help="Apply the safe fixes, then report what is left."),
    click.option("--unsafe-fixes", is_flag=True,
                 help="With --fix or --diff: apply the unsafe fixes too."),
    click.option("--diff", is_flag=True,
                 help="Print the fixes as a unified diff instead of writing them."),
]
OPTIONS.extend(FIX_OPTIONS)


@dataclasses.dataclass
class FixReport:
    results: list
    fixed: int = 0  # findings fixed
    files: int = 0  # files changed
    withheld: int = 0  # unsafe fixes not applied
    diffs: list = dataclasses.field(default_factory=list)


def apply_fixes(results, rule_infos, settings, unsafe: bool, write: bool) -> FixReport:
    """Fixes every file that has findings; each fixed file is linted again, so what is
    reported afterwards is what is left. With ``write`` False, the diffs are collected."""
    from mllint.engine import lint_text
    from mllint.fixes import fix_text, unified_diff
    from mllint.notebook import is_notebook
    from mllint.registry import all_rules
    from mllint.source import decode, read_bytes
    from mllint.types import FileResult

    classes = {r.code: r for r in all_rules()}
    chosen = [classes[i.code] for i in rule_infos if i.code in classes]
    report = FixReport([])
    for result in results:
        if not result.findings or result.errors or is_notebook(result.path):
            report.results.append(result)
            continue
        data = read_bytes(result.path, settings.max_file_size)
        text = decode(result.path, data) if isinstance(data, bytes) else None
        if not isinstance(text, str):
            report.results.append(result)
            continue
        ignored = settings.ignored_codes(result.path)
        path = result.path

        def lint(t: str, path=path, ignored=ignored):
            found = lint_text(path, t, chosen).findings
            return [f for f in found if not any(f.code.startswith(i) for i in ignored)]
        outcome = fix_text(text, lint, classes, unsafe)
        report.withheld += outcome.withheld
        if outcome.text == text:
            report.results.append(result)
            continue
        after = tuple(lint(outcome.text))
        report.fixed += max(0, len(result.findings) - len(after))
        report.files += 1
        if write:
            write_like(path, data, outcome.text)
            report.results.append(FileResult(path, after, (), result.warnings))
        else:
            report.diffs.append(unified_diff(path, text, outcome.text))
            report.results.append(result)
    return report


def fix_summary(report: FixReport, write: bool) -> str:
    verb = "Fixed" if write else "Would fix"
    text = (f"{verb} {report.fixed} finding{'s' if report.fixed != 1 else ''} in "
            f"{report.files} file{'s' if report.files != 1 else ''}.")
    if report.withheld:
        text += (f" {report.withheld} more fix{'es' if report.withheld != 1 else ''} "
                 "available with --unsafe-fixes.")
    return text
