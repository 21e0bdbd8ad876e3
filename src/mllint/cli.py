"""The ``mllint`` command.

``mllint [PATHS]...`` lints; ``mllint rules`` lists the rules; ``mllint rule CODE`` prints a
rule's documentation. (To lint a directory literally named ``rules``, write ``./rules``.)
Exit codes: 0 clean, 1 findings (with ``--verify``: a finding confirmed or left unsettled),
2 usage error or a file that could not be linted (it is reported, the run goes on).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mllint import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _split_codes(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these rules (codes, prefixes or names; comma-separated). Overrides config.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these rules.")
@click.option("--format", "fmt", default="full", show_default=True,
              type=click.Choice(["full", "concise", "json", "github", "sarif"]),
              help="Output format.")
@click.option("--output-file", "-o", type=click.Path(dir_okay=False), help="Write the report here.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings are reported.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0,
              help="Worker processes (0: one per core).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where the cache lives.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A pyproject.toml to read [tool.mllint] from (default: found by walking up).")
@click.option("--no-prefilter", is_flag=True, hidden=True,
              help="Parse every file (for testing the prefilter's soundness).")
@click.option("--verify", is_flag=True,
              help="Run the training script for a few steps under runtime probes and confirm or "
                   "refute each finding. Arguments after `--` go to the script.")
@click.option("--run", "run_cmd", metavar="COMMAND",
              help="With --verify: the command that starts training, e.g. "
                   "\"python -m pkg.train --config tiny.yaml\".")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="With --verify: where the run may compute.")
@click.option("--max-batches", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --verify: batches per DataLoader pass.")
@click.option("--max-steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="With --verify: optimizer steps before the run is stopped.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="With --verify: seconds before the run is killed.")
@click.version_option(__version__, prog_name="mllint")
@click.pass_context
def check(ctx: click.Context, paths, select, ignore, fmt, output_file, exit_zero, jobs,
          no_cache, cache_dir, config_path, no_prefilter, verify, run_cmd, device,
          max_batches, max_steps, timeout) -> None:
    """Find silent bugs in PyTorch training code."""
    from mllint.config import ConfigError, load_settings
    from mllint.registry import UnknownRuleError, select_rules

    script_args = tuple((ctx.obj or {}).get("script_args", ()))
    paths = list(paths) or ["."]
    if (run_cmd or script_args) and not verify:
        raise click.UsageError("--run and script arguments after `--` need --verify")
    try:
        settings = load_settings(paths, config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    chosen_select = _split_codes(select) or list(settings.select)
    chosen_ignore = _split_codes(ignore) + list(settings.ignore)
    try:
        from mllint.manifest import rule_infos
        rules = select_rules(chosen_select or None, chosen_ignore, rule_infos())
    except UnknownRuleError as exc:
        raise click.UsageError(f"unknown rule selector: {exc.args[0]} (see `mllint rules`)") from None

    script = None
    if verify and not run_cmd:
        scripts = [p for p in paths if p.endswith(".py") and os.path.isfile(p)]
        if len(scripts) != 1:
            raise click.UsageError(
                "--verify needs one training script to run (mllint --verify train.py "
                "[-- args]) or a command (--run \"python -m pkg.train\")")
        script = scripts[0]

    from mllint.reporters import Diagnostic, Report
    results = _lint(paths, rules, settings, jobs, no_cache, cache_dir, no_prefilter)
    findings = sorted((f for r in results for f in r.findings), key=lambda f: f.sort_key())
    errors = tuple(e for r in results for e in r.errors)
    diagnostics = tuple(Diagnostic(f) for f in findings)
    summary = None
    if verify:
        diagnostics, summary = _verify(findings, script, script_args, run_cmd, device,
                                       max_batches, max_steps, timeout, fmt)
    sources = _sources(d.finding.path for d in diagnostics) if fmt == "full" else {}
    checked = sum(1 for r in results if not r.errors)
    report = Report(diagnostics, errors, checked, summary, sources)
    _emit(fmt, report, output_file)

    if errors:
        ctx.exit(EXIT_ERROR)
    if exit_zero:
        ctx.exit(EXIT_CLEAN)
    if verify:
        from mllint.types import VerdictStatus
        bad = any(d.verdict is None or d.verdict.status is not VerdictStatus.REFUTED
                  for d in diagnostics)
        ctx.exit(EXIT_FINDINGS if bad else EXIT_CLEAN)
    ctx.exit(EXIT_FINDINGS if diagnostics else EXIT_CLEAN)


def _lint(paths, rules, settings, jobs, no_cache, cache_dir, no_prefilter):
    from mllint.cache import Cache
    from mllint.files import iter_targets
    from mllint.runner import RunOptions, lint_targets

    cache = None
    if not no_cache and not os.environ.get("MLLINT_NO_CACHE"):
        directory = Path(cache_dir) if cache_dir else (settings.cache_dir or settings.root / ".mllint_cache")
        from mllint.manifest import code_fingerprint
        cache = Cache(directory, tuple(r.code for r in rules), code_fingerprint())
    opts = RunOptions(rules=rules, settings=settings, jobs=jobs, cache=cache,
                      prefilter=not no_prefilter)
    return list(lint_targets(iter_targets(paths, settings), opts))


def _sources(paths) -> dict:
    from mllint.notebook import is_notebook, read_notebook
    from mllint.source import decode, read_bytes
    from mllint.types import FileError
    out: dict = {}
    for path in set(paths):
        data = read_bytes(path)
        text = decode(path, data) if isinstance(data, bytes) else None
        if isinstance(text, str) and is_notebook(path):
            nb = read_notebook(path, text)
            if not isinstance(nb, FileError):
                out.update(((path, n), list(lines)) for n, lines in enumerate(nb.cells, 1))
        elif isinstance(text, str):
            out[path] = text.splitlines()
    return out


def _emit(fmt, report, output_file) -> None:
    from mllint.reporters import render
    if output_file:
        with open(output_file, "w", encoding="utf-8") as fh:
            render(fmt, report, fh)
    else:
        render(fmt, report, sys.stdout)
        sys.stdout.flush()


def _verify(findings, script, script_args, run_cmd, device, max_batches, max_steps, timeout, fmt):
    """Run the training under the probes; returns diagnostics with verdicts and a summary."""
    from mllint.reporters import Diagnostic
    from mllint.verify.harness import VerifyError, VerifyOptions, verify
    from mllint.verify.progress import ProgressDisplay

    options = VerifyOptions(script=script, script_args=script_args, run=run_cmd, device=device,
                            max_batches=max_batches, max_steps=max_steps, timeout=timeout)
    with ProgressDisplay(len(findings), enabled=fmt == "full") as progress:
        try:
            result = verify(findings, options, on_event=progress.update)
        except VerifyError as exc:
            raise click.ClickException(f"--verify: {exc}") from None
    diagnostics = [Diagnostic(f, v) for f, v in zip(findings, result.verdicts)]
    diagnostics += [Diagnostic(f, v, runtime_only=True) for f, v in result.runtime_findings]
    return tuple(diagnostics), _run_summary(result)


def _run_summary(result) -> str:
    run = result.run
    parts = [f"--verify run: {run.steps} optimizer step(s) in {run.seconds:.1f}s"]
    if run.timed_out:
        parts.append("killed at the timeout")
    elif run.crashed:
        parts.append(f"the script crashed: {run.crashed}")
    elif run.stopped_early:
        parts.append("stopped once every finding was settled or the step budget was spent")
    elif run.exit_code not in (0, None):
        parts.append(f"the script exited with status {run.exit_code}")
    return "; ".join(parts) + "."


@click.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text")
def list_rules(fmt: str) -> None:
    """List every rule."""
    from mllint.registry import all_rules
    rules = all_rules()
    if fmt == "json":
        import json
        click.echo(json.dumps([{"code": r.code, "name": r.name, "summary": r.summary,
                                "severity": r.severity.value} for r in rules], indent=2))
        return
    if fmt == "markdown":
        click.echo(rules_table(rules), nl=False)
        return
    width = max((len(r.name) for r in rules), default=0)
    for r in rules:
        click.echo(f"{r.code}  {r.name:<{width}}  {r.summary}")


def rules_table(rules) -> str:
    """The README's rule table (a test keeps the README equal to this)."""
    rows = ["| Code | Name | What it finds |", "| --- | --- | --- |"]
    rows += [f"| {r.code} | `{r.name}` | {r.summary} |" for r in rules]
    return "\n".join(rows) + "\n"


@click.command("rule")
@click.argument("code")
def show_rule(code: str) -> None:
    """Print a rule's documentation (by code or name)."""
    from mllint.registry import UnknownRuleError, rule_by_code
    try:
        rule = rule_by_code(code)
    except UnknownRuleError:
        raise click.UsageError(f"unknown rule {code!r} (see `mllint rules`)") from None
    click.echo(rule.documentation(), nl=False)


SUBCOMMANDS = {"rules": list_rules, "rule": show_rule}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        SUBCOMMANDS[args[0]].main(args[1:], prog_name=f"mllint {args[0]}")
        return
    script_args: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, script_args = args[:i], args[i + 1:]
    check.main(args, prog_name="mllint", obj={"script_args": tuple(script_args)})
