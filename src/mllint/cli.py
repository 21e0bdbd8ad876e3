"""The ``mllint`` command.

``mllint [PATHS]...`` lints; ``mllint rules`` lists the rules; ``mllint rule CODE`` prints a
rule's documentation. (To lint a directory literally named ``rules``, write ``./rules``.)
Exit codes: 0 clean, 1 findings (with ``--verify``: a finding confirmed or left unsettled),
2 usage error or a file that could not be linted (it is reported, the run goes on).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from mllint import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _split_codes(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(readable=False))
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
@click.option("--clear-cache", is_flag=True, help="Empty the result cache before linting.")
@click.option("--file-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Report a file that takes longer than this to lint instead of waiting "
                   "(default 120; 0: no limit). Overrides config.")
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
@click.option("--overfit-batch", type=click.IntRange(min=2), is_flag=False, flag_value=50,
              default=None, metavar="[N]",
              help="With --verify: replay the first batch for N steps (default 50) and check "
                   "that the loss falls (ML108).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE.html",
              help="With --verify: also write a self-contained HTML report (findings, "
                   "verdicts, evidence, per-step plots).")
@click.option("--show-output", is_flag=True,
              help="With --verify: pass the script's own output through (to stderr).")
@click.version_option(__version__, prog_name="mllint")
@click.pass_context
def check(ctx: click.Context, paths, select, ignore, fmt, output_file, exit_zero, jobs,
          no_cache, cache_dir, clear_cache, file_timeout, config_path, no_prefilter, verify, run_cmd, device,
          max_batches, max_steps, timeout, overfit_batch, report_path, show_output) -> None:
    """Find silent bugs in PyTorch training code."""
    from mllint.config import ConfigError, load_settings, resolve_rule_codes
    from mllint.registry import UnknownRuleError

    from mllint.libcst_support import installed_version, warning
    if (libcst_warning := warning(installed_version())) is not None:
        click.echo(libcst_warning, err=True)
    script_args = tuple((ctx.obj or {}).get("script_args", ()))
    paths = list(paths) or ["."]
    if (run_cmd or script_args) and not verify:
        raise click.UsageError("--run and script arguments after `--` need --verify")
    if report_path and not verify:
        raise click.UsageError("--report needs --verify")
    try:
        settings = load_settings(paths, config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    chosen_select = _split_codes(select) or list(settings.select)
    chosen_ignore = _split_codes(ignore) + list(settings.ignore)
    try:
        from mllint.manifest import rule_infos
        from mllint.registry import select_rules_and_checks
        infos = rule_infos(write=not _no_cache(no_cache))
        rules, checks = select_rules_and_checks(chosen_select, chosen_ignore, infos)
        settings = resolve_rule_codes(settings, infos)
    except UnknownRuleError as exc:
        raise click.UsageError(f"unknown rule selector: {exc.args[0]} (see `mllint rules`)") from None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if file_timeout is not None:
        settings = replace(settings, file_timeout=file_timeout or None)
    if output_file:
        _check_output_file(output_file)
    if clear_cache:
        from mllint.cache import clear
        clear(_cache_dir(settings, cache_dir))

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
    verify_failed = False
    if verify:
        from mllint.verify.harness import VerifyOptions
        options = VerifyOptions(script=script, script_args=script_args, run=run_cmd,
                                device=device, max_batches=max_batches, max_steps=max_steps,
                                timeout=timeout, show_output=show_output,
                                overfit_batch=overfit_batch,
                                watch=tuple(c.code for c in checks))
        diagnostics, summary, verify_failed = _verify(findings, options, fmt)
    sources = _sources(d.finding.path for d in diagnostics) if fmt == "full" else {}
    checked = sum(1 for r in results if not r.errors)
    report = Report(diagnostics, errors, checked, summary, sources)
    _emit(fmt, report, output_file)
    if report_path:
        from mllint.reporters.html import document
        with open(report_path, "w", encoding="utf-8") as fh:
            fh.write(document(report))

    if errors:
        ctx.exit(EXIT_ERROR)
    if verify:
        from mllint.verify.summary import exit_status
        status = exit_status(diagnostics, summary, verify_failed)
        ctx.exit(EXIT_CLEAN if exit_zero and status == EXIT_FINDINGS else status)
    if exit_zero:
        ctx.exit(EXIT_CLEAN)
    ctx.exit(EXIT_FINDINGS if diagnostics else EXIT_CLEAN)


def _lint(paths, rules, settings, jobs, no_cache, cache_dir, no_prefilter):
    from mllint.cache import Cache
    from mllint.files import iter_targets
    from mllint.runner import RunOptions, lint_targets

    cache = None
    if not _no_cache(no_cache):
        from mllint.manifest import code_fingerprint
        cache = Cache(_cache_dir(settings, cache_dir), tuple(r.code for r in rules),
                      code_fingerprint())
    opts = RunOptions(rules=rules, settings=settings, jobs=jobs, cache=cache,
                      prefilter=not no_prefilter)
    results = list(lint_targets(iter_targets(paths, settings), opts))
    if cache is not None:
        cache.prune()
    return results


def _cache_dir(settings, cache_dir) -> Path:
    return Path(cache_dir) if cache_dir else (settings.cache_dir or settings.root / ".mllint_cache")


def _no_cache(no_cache: bool) -> bool:
    return no_cache or bool(os.environ.get("MLLINT_NO_CACHE"))


def _check_output_file(output_file: str) -> None:
    """Fail before linting, not after, when the report could not be written."""
    target = Path(output_file)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise click.UsageError(f"--output-file {output_file}: is a directory")
    if not parent.is_dir():
        raise click.UsageError(f"--output-file {output_file}: directory {parent} does not exist")
    if not os.access(target if target.exists() else parent, os.W_OK):
        raise click.UsageError(f"--output-file {output_file}: not writable")


def _sources(paths) -> dict[str, list[str]]:
    from mllint.source import decode, physical_lines, read_bytes
    out = {}
    for path in set(paths):
        data = read_bytes(path)
        text = decode(path, data) if isinstance(data, bytes) else None
        if isinstance(text, str):
            out[path] = physical_lines(text)
    return out


def _emit(fmt, report, output_file) -> None:
    from mllint.reporters import render
    if output_file:
        with open(output_file, "w", encoding="utf-8") as fh:
            render(fmt, report, fh)
    else:
        render(fmt, report, sys.stdout)
        sys.stdout.flush()


def _verify(findings, options, fmt):
    """Run the training under the probes: (diagnostics with verdicts, run summary, failed).

    A fatal error (no torch, no CUDA, nothing to run) is reported on stderr and the static
    findings are kept, without verdicts; the caller exits 2."""
    from mllint.reporters import Diagnostic
    from mllint.verify.harness import VerifyError, verify
    from mllint.verify.progress import ProgressDisplay
    from mllint.verify.summary import summarise

    with ProgressDisplay(len(findings), enabled=fmt == "full") as progress:
        try:
            result = verify(findings, options, on_event=progress.update)
        except VerifyError as exc:
            click.echo(f"mllint: error: --verify: {exc}", err=True)
            return tuple(Diagnostic(f) for f in findings), None, True
    diagnostics = [Diagnostic(f, v) for f, v in zip(findings, result.verdicts)]
    diagnostics += [Diagnostic(f, v, runtime_only=True) for f, v in result.runtime_findings]
    summary = summarise(result.run, options.max_steps, result.fault_run, result.series)
    return tuple(diagnostics), summary, False


@click.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text")
def list_rules(fmt: str) -> None:
    """List every rule."""
    from mllint.registry import all_checks, all_rules
    rules, checks = all_rules(), all_checks()
    if fmt == "json":
        import json
        click.echo(json.dumps([{"code": r.code, "name": r.name, "summary": r.summary,
                                "severity": r.severity.value,
                                "kind": "runtime" if r in checks else "static"}
                               for r in (*rules, *checks)], indent=2))
        return
    if fmt == "markdown":
        click.echo(rules_table(rules), nl=False)
        click.echo("\nRuntime checks (every `--verify` run):\n")
        click.echo(rules_table(checks), nl=False)
        return
    width = max((len(r.name) for r in (*rules, *checks)), default=0)
    for r in rules:
        click.echo(f"{r.code}  {r.name:<{width}}  {r.summary}")
    for r in checks:
        click.echo(f"{r.code}  {r.name:<{width}}  {r.summary} (runtime, --verify)")


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
