"""The ``mllint`` command.

``mllint [PATHS]...`` lints (it is ``mllint check [PATHS]...``, the default command);
``mllint rules`` lists the rules; ``mllint rule CODE`` prints a rule's documentation;
``mllint clean`` removes the result cache. A directory named like a subcommand is linted
with ``mllint check rules`` (or ``mllint ./rules``).
Exit codes: 0 clean, 1 findings (with ``--verify``: a finding confirmed or left unsettled),
2 usage error or a file that could not be linted (it is reported, the run goes on).
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import click

from mllint import __version__
from mllint.cli_options import ecosystem_options

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _split_codes(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


HELP = {"help_option_names": ["-h", "--help"]}


class DefaultGroup(click.Group):
    """A group whose first argument, when it names no subcommand, starts ``check``:
    ``mllint src/`` is ``mllint check src/``, as ruff users type it."""

    default = "check"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        group_only = {"-h", "--help", "--version"}
        if not ctx.resilient_parsing and (not args or (args[0] not in self.commands
                                                       and args[0] not in group_only)):
            args = [self.default, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] [PATHS]... | COMMAND [ARGS]...")


@click.group(cls=DefaultGroup, context_settings=HELP)
@click.version_option(__version__, prog_name="mllint")
def cli() -> None:
    """Find silent bugs in PyTorch training code and notebooks.

    `mllint [OPTIONS] [PATHS]...` lints (the `check` command); `mllint check -h` lists
    its options.
    """


@cli.command("check", context_settings=HELP)
@click.argument("paths", nargs=-1, type=click.Path(readable=False))
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these rules (codes, prefixes or names; comma-separated). Overrides config.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these rules.")
@click.option("--format", "--output-format", "fmt", default="full", show_default=True,
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
@ecosystem_options
@click.version_option(__version__, prog_name="mllint")
@click.pass_context
def check(ctx: click.Context, paths, select, ignore, fmt, output_file, exit_zero, jobs,
          no_cache, cache_dir, clear_cache, file_timeout, config_path, no_prefilter, verify,
          run_cmd, device, max_batches, max_steps, timeout, overfit_batch, report_path,
          show_output, **opts) -> None:
    """Find silent bugs in PyTorch training code and notebooks."""
    from mllint import cli_options
    from mllint.config import ConfigError, load_settings, resolve_rule_codes
    from mllint.engine.libcst_support import installed_version, warning
    from mllint.registry import UnknownRuleError
    if (libcst_warning := warning(installed_version())) is not None:
        click.echo(libcst_warning, err=True)
    script_args = tuple((ctx.obj or {}).get("script_args", ()))
    stdin_name = opts["stdin_filename"]
    if stdin_name and [p for p in paths if p != "-"]:
        raise click.UsageError("--stdin-filename lints standard input: pass no paths")
    paths = [stdin_name] if stdin_name else (list(paths) or ["."])
    if (run_cmd or script_args) and not verify:
        raise click.UsageError("--run and script arguments after `--` need --verify")
    if report_path and not verify:
        raise click.UsageError("--report needs --verify")
    try:
        settings = cli_options.override_settings(load_settings(paths, config_path), opts)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    chosen_select = cli_options.extend_select(_split_codes(select) or list(settings.select), opts)
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
        scripts = [p for p in paths if p.endswith((".py", ".ipynb")) and os.path.isfile(p)]
        if len(scripts) != 1:
            raise click.UsageError(
                "--verify needs one training script to run (mllint --verify train.py "
                "[-- args]) or a command (--run \"python -m pkg.train\")")
        script = scripts[0]

    from mllint.reporters import Diagnostic, Report, preload
    unused = tuple(r.code for r in rules) if opts["report_unused_noqa"] else ()
    if stdin_name:
        results, stdin_data = _lint_stdin(stdin_name, rules, settings, unused)
    else:
        results = _lint(paths, rules, settings, jobs, no_cache, cache_dir, no_prefilter, unused,
                        while_waiting=lambda: preload(fmt))
    cli_options.print_warnings(results, opts["quiet"])
    if opts["add_noqa"]:
        changed = cli_options.add_noqa(results)
        click.echo(f"Added {changed} noqa directive{'s' if changed != 1 else ''}.", err=True)
        ctx.exit(EXIT_ERROR if any(r.errors for r in results) else EXIT_CLEAN)
    if opts["fix"] or opts["diff"]:
        if verify:
            raise click.UsageError("--fix and --diff do not combine with --verify")
        fixed = cli_options.apply_fixes(results, rules, settings, opts["unsafe_fixes"],
                                        write=not opts["diff"])
        if opts["diff"]:
            sys.stdout.write("".join(fixed.diffs))
            if not opts["quiet"]:
                click.echo(cli_options.fix_summary(fixed, write=False), err=True)
            ctx.exit(EXIT_FINDINGS if fixed.diffs else EXIT_CLEAN)
        results = fixed.results
        if not opts["quiet"]:
            click.echo(cli_options.fix_summary(fixed, write=True), err=True)
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
        if script is not None and script.endswith(".ipynb"):
            diagnostics, summary, verify_failed = _verify_notebook(findings, script, options, fmt)
        else:
            diagnostics, summary, verify_failed = _verify(findings, options, fmt)
    sources = _sources(d.finding.path for d in diagnostics) if fmt == "full" else {}
    if stdin_name and fmt == "full":
        sources.update(_sources_of(stdin_name, stdin_data))
    checked = sum(1 for r in results if all(e.partial for e in r.errors))
    report = Report(diagnostics, errors, checked, summary, sources, quiet=opts["quiet"])
    if opts["statistics"]:
        cli_options.print_statistics(diagnostics, fmt, sys.stdout)
        for e in errors:
            click.echo(f"error: {e.path}: {e.kind.value}: {e.message}", err=True)
    else:
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


def _lint_stdin(path, rules, settings, unused):
    """Standard input as the file ``path``: its config, per-file ignores and, with
    ``--force-exclude``, its exclusion (an excluded file reports nothing, as with ruff)."""
    from mllint.cli_options import read_stdin
    from mllint.files import is_skipped
    from mllint.runner import RunOptions, check_bytes
    from mllint.types import FileResult

    data = read_stdin()
    if settings.force_exclude and is_skipped(path, settings):
        return [FileResult(path)], data
    opts = RunOptions(rules=rules, settings=settings, unused_noqa=unused)
    return [check_bytes(path, data, opts)], data


def _lint(paths, rules, settings, jobs, no_cache, cache_dir, no_prefilter, unused=(),
          while_waiting=None):
    from mllint.cache import Cache
    from mllint.files import iter_targets
    from mllint.runner import RunOptions, lint_targets

    cache = None
    if not _no_cache(no_cache):
        from mllint.manifest import code_fingerprint
        # An unused-noqa report is part of the result: a different cache entry.
        cache = Cache(_cache_dir(settings, cache_dir),
                      tuple(r.code for r in rules) + (("noqa",) if unused else ()),
                      code_fingerprint())
    opts = RunOptions(rules=rules, settings=settings, jobs=jobs, cache=cache,
                      prefilter=not no_prefilter, unused_noqa=unused)
    # Files named one by one (pre-commit) go to the first worker at once; most need no
    # libcst, so it is not imported ahead of them.
    named_files = bool(paths) and all(os.path.isfile(p) for p in paths)
    results = list(lint_targets(iter_targets(paths, settings), opts, while_waiting,
                                warm_up=not named_files))
    if cache is not None:
        cache.save_stat_index()
        cache.prune()
    return results


def _cache_dir(settings, cache_dir) -> Path:
    return Path(cache_dir) if cache_dir else _cache_directory(settings)


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


def _sources(paths) -> dict:
    from mllint.source import read_bytes
    out: dict = {}
    for path in set(paths):
        out.update(_sources_of(path, read_bytes(path)))
    return out


def _sources_of(path: str, data) -> dict:
    """Lines for code frames: a file's, or each cell's of a notebook."""
    from mllint.notebook import is_notebook, read_notebook
    from mllint.source import decode, physical_lines
    from mllint.types import FileError
    text = decode(path, data) if isinstance(data, bytes) else None
    if not isinstance(text, str):
        return {}
    if not is_notebook(path):
        return {path: physical_lines(text)}
    nb = read_notebook(path, text)
    if isinstance(nb, FileError):
        return {}
    return {(path, n): list(lines) for n, lines in enumerate(nb.cells, 1)}


def _emit(fmt, report, output_file) -> None:
    from mllint.reporters import render
    if output_file:
        with open(output_file, "w", encoding="utf-8") as fh:
            render(fmt, report, fh)
    else:
        render(fmt, report, sys.stdout)
        sys.stdout.flush()


def _verify_notebook(findings, notebook, options, fmt):
    """A notebook's code cells run as a script (``mllint.notebook.as_script``), in the
    notebook's directory as Jupyter runs it, its modules importable; findings and
    verdicts are told in cells and lines."""
    from mllint import notebook as nbs
    from mllint.reporters import Diagnostic
    from mllint.source import decode, read_bytes
    from mllint.types import FileError

    text = decode(notebook, read_bytes(notebook))
    nb = nbs.read_notebook(notebook, text) if isinstance(text, str) else text
    if isinstance(nb, FileError):
        raise click.ClickException(f"--verify: {nb.message}")
    folder = os.path.dirname(os.path.abspath(notebook))
    path = os.environ.get("PYTHONPATH")
    env = {"PYTHONPATH": folder + (os.pathsep + path if path else "")}
    with nbs.as_script(notebook, nb) as script:
        diagnostics, summary, failed = _verify(
            [nbs.to_script(f, nb, script) for f in findings],
            replace(options, script=script, cwd=folder, env=env), fmt)
    static, runtime = diagnostics[:len(findings)], diagnostics[len(findings):]
    out = [Diagnostic(f, _verdict_in_cells(d.verdict, nb)) for f, d in zip(findings, static)]
    out += [Diagnostic(nbs.from_script(d.finding, nb, notebook),
                       _verdict_in_cells(d.verdict, nb), runtime_only=True) for d in runtime]
    return tuple(out), summary, failed


def _verdict_in_cells(verdict, nb):
    from mllint.notebook import cells_in_text
    from mllint.types import Verdict
    if verdict is None:
        return None
    return Verdict(verdict.status, cells_in_text(verdict.evidence, nb), verdict.figures)


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


@cli.command("rules", context_settings=HELP)
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


@cli.command("rule", context_settings=HELP)
@click.argument("code")
def show_rule(code: str) -> None:
    """Print a rule's documentation (by code or name)."""
    from mllint.registry import UnknownRuleError, rule_by_code
    try:
        rule = rule_by_code(code)
    except UnknownRuleError:
        raise click.UsageError(f"unknown rule {code!r} (see `mllint rules`)") from None
    click.echo(rule.documentation(), nl=False)


@cli.command("clean", context_settings=HELP)
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="The cache to remove (default: the one `mllint` uses here).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A pyproject.toml to read [tool.mllint] from.")
def clean(cache_dir, config_path) -> None:
    """Remove the result cache."""
    from mllint.cache import clear
    from mllint.config import ConfigError, load_settings
    try:
        settings = load_settings(["."], config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    directory = Path(cache_dir) if cache_dir else _cache_directory(settings)
    removed = clear(directory)
    click.echo(f"Removed {removed} cached result{'s' if removed != 1 else ''} from {directory}")


def _cache_directory(settings) -> Path:
    return settings.cache_dir or settings.root / ".mllint_cache"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, script_args = args[:i], args[i + 1:]
    cli.main(args, prog_name="mllint", obj={"script_args": tuple(script_args)})


def console_main() -> NoReturn:
    """The ``mllint`` command: ``main``, then a quick exit. Once the report is out and the
    exit handlers have run, tearing down every module and object of the process only costs
    time (tens of milliseconds, a tenth of a pre-commit run), so the process leaves
    without it. In-process callers use ``main``."""
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # as Python prints a non-integer exit code
    atexit._run_exitfuncs()  # weakref finalizers (temporary directories) included
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what was not read is lost anyway
            pass
    os._exit(status)
