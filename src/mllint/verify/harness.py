"""The parent side of ``--verify``: run the user's target under the probes, in a child.

``verify(findings, options)`` starts the user's interpreter on ``bootstrap.py`` in a new
session (so the whole process group can be killed at the timeout), streams its progress
events to ``on_event``, and turns the child's ``RunResult`` into one ``Verdict`` per
finding. When a probe asks for fault injection (``Probe.fault_injection``), a second,
short run with only those probes follows and its verdicts take precedence.

What the run is kept from doing, and what it may still do: note "verify-safety" in
``mllint.verify.sandbox``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import site
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from mllint.types import Finding, Verdict, VerdictStatus
from mllint.verify import process, sandbox
from mllint.verify.command import Target, resolve_target
from mllint.verify.errors import VerifyError
from mllint.verify.spec import ProbeSpec, RunResult, RunSpec

#: Optimizer steps of the fault-injection run (it only needs to reach the flagged step).
FAULT_RUN_STEPS = 6


@dataclass(frozen=True)
class VerifyOptions:
    script: str | None = None
    #: Arguments for the script (with ``run``: appended to the command's own).
    script_args: tuple[str, ...] = ()
    #: A command line such as ``python -m pkg.train --cfg x``; its ``python`` is replaced
    #: by ``python`` below (an explicit interpreter path in the command is used as given).
    run: str | None = None
    device: str = "cpu"  # cpu | cuda | auto
    max_batches: int = 4
    max_steps: int = 20
    timeout: float = 120.0
    python: str = sys.executable
    cwd: str | None = None
    #: For tests and extensions: the probe to use instead of the rule's ``PROBE``, keyed
    #: by finding index (int) or by rule code (str), as ``"module:Class"``; the module
    #: must be importable in the child (e.g. through ``env={"PYTHONPATH": ...}``).
    probe_override: Mapping[int | str, str] | None = None
    #: Extra environment for the child, applied last (may undo a sandbox variable).
    env: Mapping[str, str] | None = None
    #: Codes of rules whose ``RUNTIME_WATCH`` watcher runs (``None``: every rule's; ``()``:
    #: none); an entry with a colon names a ``Watcher`` class directly ("module:Class").
    watch: tuple[str, ...] | None = None
    #: End the run as soon as every finding is settled (the default). ``False`` runs the
    #: whole step budget, e.g. to measure the probes' overhead.
    stop_when_settled: bool = True
    #: Pass the script's stdout and stderr through to mllint's stderr as it runs.
    show_output: bool = False
    #: ``--overfit-batch N``: replay the first batch for N steps (check ML108).
    overfit_batch: int | None = None
    #: Mount the working directory copy-on-write (overlayfs in a private mount namespace)
    #: where Linux allows it; the Python-level copy-on-write layer runs in any case.
    overlay: bool = True


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int | None
    timed_out: bool
    #: "Type: message (at file:line)" of the exception that ended the script, if any.
    crashed: str | None
    steps: int
    seconds: float
    #: The run was ended by mllint: step budget spent or every finding settled.
    stopped_early: bool
    stderr_tail: str
    stdout_tail: str = ""
    batches: int = 0
    #: "steps", "settled" or None.
    stop_reason: str | None = None
    notes: tuple[str, ...] = ()
    #: (finding index, seconds spent in its probe's callbacks), slowest first.
    probe_seconds: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class VerifyReport:
    #: One verdict per finding passed to ``verify``, in the same order.
    verdicts: tuple[Verdict, ...]
    #: Bugs seen only at run time (rule watchers), each with its verdict.
    runtime_findings: tuple[tuple[Finding, Verdict], ...]
    run: RunOutcome
    fault_run: RunOutcome | None
    #: Per-step series of the main run (loss, gradient norms, update ratios, lr, memory).
    series: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def verify(
    findings: Sequence[Finding],
    options: VerifyOptions,
    on_event: Callable[[dict], None] | None = None,
) -> VerifyReport:
    target = resolve_target(script=options.script, script_args=options.script_args,
                            run=options.run, python=options.python, cwd=options.cwd)
    if options.device not in ("cpu", "cuda", "auto"):
        raise VerifyError(f"unknown device {options.device!r} (cpu, cuda or auto)")
    if options.max_batches < 1 or options.max_steps < 1 or not options.timeout > 0:
        raise VerifyError("--max-batches and --max-steps must be at least 1 and --timeout "
                          "positive")
    if options.overfit_batch is not None:
        # ML108: N steps on the replayed first batch, with no pass cut before them.
        options = dataclasses.replace(options, max_steps=options.overfit_batch,
                                      max_batches=max(options.max_batches,
                                                      options.overfit_batch))
    findings = list(findings)
    resolved = [dataclasses.replace(f, path=os.path.realpath(f.path)) for f in findings]
    probe_targets = [_probe_target(i, f, options) for i, f in enumerate(findings)]
    emit = on_event or (lambda event: None)

    with tempfile.TemporaryDirectory(prefix="mllint-verify-") as tmp:
        probes = [
            ProbeSpec(i, t, f"{f.code} probe ({os.path.basename(f.path)}:{f.line})")
            for i, (f, t) in enumerate(zip(findings, probe_targets)) if t
        ]
        probes += [ProbeSpec(None, w, f"runtime watcher {w}") for w in _watchers(options)]
        emit({"type": "phase", "phase": "main",
              "message": f"running {os.path.basename(target.target)}"})
        result, run = _run_child(target, options, resolved, probes, tmp, "main", emit)
        verdicts: list[Any] = [result.verdicts.get(str(i)) for i in range(len(findings))]

        fault_outcome = None
        fault_probes = [p for p in probes if p.index in set(result.fault_indices)]
        if fault_probes and not run.timed_out:
            emit({"type": "phase", "phase": "fault-injection",
                  "message": "fault-injection run"})
            fault_options = dataclasses.replace(
                options, max_steps=min(options.max_steps, FAULT_RUN_STEPS))
            fault_result, fault_outcome = _run_child(
                target, fault_options, resolved, fault_probes, tmp, "fault", emit)
            for p in fault_probes:
                found = fault_result.verdicts.get(str(p.index))
                if found is not None and found.get("status") != "not-reached":
                    verdicts[p.index] = found

    final = tuple(
        _final_verdict(f, probe_targets[i], verdicts[i], run, options)
        for i, f in enumerate(findings)
    )
    runtime_findings = _runtime_findings(result, resolved)
    return VerifyReport(final, runtime_findings, run, fault_outcome, result.series)


def _probe_target(index: int, finding: Finding, options: VerifyOptions) -> str | None:
    override = options.probe_override or {}
    if index in override:
        return override[index]
    if finding.code in override:
        return override[finding.code]
    from mllint.registry import UnknownRuleError, rule_by_code

    try:
        return rule_by_code(finding.code).PROBE
    except UnknownRuleError:
        return None


def _watchers(options: VerifyOptions) -> list[str]:
    """Watchers of the run: the runtime checks' (``mllint.rules.runtime``; opt-in ones only
    when asked for) and rules' ``RUNTIME_WATCH``, as chosen by ``options.watch``."""
    if options.watch == ():
        return []
    from mllint.registry import all_checks, all_rules

    found = [w for w in options.watch or () if ":" in w]
    codes = None if options.watch is None else {w.upper() for w in options.watch}
    for check in all_checks():
        if codes is not None and check.code not in codes:
            continue
        if check.OPT_IN and not _opted_in(check.code, options):
            continue
        if check.WATCHER not in found:
            found.append(check.WATCHER)
    for rule in all_rules():
        if codes is not None and rule.code not in codes:
            continue
        watch = getattr(sys.modules.get(rule.__module__), "RUNTIME_WATCH", None)
        if isinstance(watch, type):
            watch = f"{watch.__module__}:{watch.__qualname__}"
        if isinstance(watch, str) and watch not in found:
            found.append(watch)
    return found


def _opted_in(code: str, options: VerifyOptions) -> bool:
    return code == "ML108" and options.overfit_batch is not None


# -- running the child -------------------------------------------------------------------


def _run_child(
    target: Target,
    options: VerifyOptions,
    findings: list[Finding],
    probes: list[ProbeSpec],
    tmp: str,
    phase: str,
    emit: Callable[[dict], None],
) -> tuple[RunResult, RunOutcome]:
    import mllint
    import mllint.rules

    scratch = os.path.join(tmp, "scratch")
    os.makedirs(scratch, exist_ok=True)
    grace = min(3.0, max(0.5, options.timeout * 0.1))
    pipe = process.EventPipe()
    spec = RunSpec(
        mode=target.mode,
        target=target.target,
        args=list(target.args),
        cwd=target.cwd,
        findings=[f.to_dict() for f in findings],
        probes=probes,
        max_batches=options.max_batches,
        max_steps=options.max_steps,
        device=options.device,
        results=os.path.join(tmp, f"result-{phase}.json"),
        events_fd=pipe.write_fd,
        scratch=scratch,
        mllint_path=os.path.dirname(os.path.dirname(os.path.abspath(mllint.__file__))),
        rules_path=os.path.dirname(os.path.abspath(mllint.rules.__file__)),
        fault_run=phase == "fault",
        stop_when_settled=options.stop_when_settled,
        # The child writes the verdicts it has this long before the hard kill.
        deadline=time.time() + options.timeout - grace,
        fallback_path=_site_dirs(),
        python_version=list(sys.version_info[:2]),
    )
    spec_path = os.path.join(tmp, f"spec-{phase}.json")
    spec.dump(spec_path)
    env = sandbox.child_environment(os.environ, scratch, options.device,
                                    {**target.env, **(options.env or {})})
    out_path = os.path.join(tmp, f"stdout-{phase}.txt")
    err_path = os.path.join(tmp, f"stderr-{phase}.txt")
    bootstrap = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")
    argv = [target.python, bootstrap, spec_path]
    if options.overlay:
        from mllint.verify.cow import overlay_argv

        argv = overlay_argv(target.cwd, os.path.join(scratch, "cow"), argv) or argv
    streamed = _Streamed(emit)
    try:
        ended = process.run(argv, cwd=target.cwd, env=env,
                            pipe=pipe, out_path=out_path, err_path=err_path,
                            timeout=options.timeout, emit=streamed,
                            passthrough=options.show_output)
    except OSError as exc:
        raise VerifyError(f"cannot start {target.python}: {exc}") from None
    stdout_tail, stderr_tail = process.tail(out_path), process.tail(err_path)
    result = _read_result(spec.results)
    if result is None and streamed.seen:
        result = streamed.result()
    if result is not None and result.fatal is not None:
        raise VerifyError(result.fatal["message"])
    if result is None and not ended.started and not ended.timed_out:
        raise VerifyError(
            f"the verify bootstrap did not start in {target.python} (exit status "
            f"{ended.returncode}): {stderr_tail.strip()[-1500:] or 'no output'}")
    return _outcome(result, ended, options, stdout_tail, stderr_tail)


class _Streamed:
    """What the child reported as it ran (steps, settled verdicts): the result of a run
    that died before writing its report (``os._exit``, a signal, the OOM killer)."""

    def __init__(self, emit: Callable[[dict], None]) -> None:
        self._emit = emit
        self.seen = False
        self.steps = self.batches = 0
        self.verdicts: dict[str, dict] = {}

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind in ("step", "settled", "batch"):
            self.seen = True
            self.steps = max(self.steps, int(event.get("steps") or 0))
            self.batches = max(self.batches, int(event.get("batches") or 0))
        verdict = event.get("verdict")
        if kind == "settled" and isinstance(verdict, dict) and verdict.get("status") not in (
                None, "not-reached"):
            self.verdicts[str(event.get("index"))] = verdict
        self._emit(event)

    def result(self) -> RunResult:
        return RunResult(verdicts=dict(self.verdicts), steps=self.steps, batches=self.batches,
                         partial=True,
                         notes=["the script died before mllint's report; the steps and "
                                "verdicts are those it streamed while running"])


def _read_result(path: str) -> RunResult | None:
    try:
        return RunResult.load(path)
    except (OSError, ValueError, TypeError):
        return None


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str):
        dirs.append(user)
    return [d for d in dirs if os.path.isdir(d)]


def _outcome(
    result: RunResult | None, ended: process.Exit, options: VerifyOptions,
    stdout_tail: str, stderr_tail: str,
) -> tuple[RunResult, RunOutcome]:
    returncode, timed_out, seconds = ended.returncode, ended.timed_out, ended.seconds
    notes: list[str] = []
    if result is None:
        result = RunResult()
        if not timed_out:
            notes.append("the script ended without mllint's report (os._exit or a "
                         "signal); no verdicts could be collected")
    crashed = result.crashed
    exit_code = None if timed_out else returncode
    if not timed_out and returncode is not None and returncode < 0:
        crashed = f"killed by signal {signal.Signals(-returncode).name}"
    elif not timed_out and result.exit_code is None and returncode:
        crashed = crashed or f"exited with status {returncode} without a report"
    if timed_out:
        notes.append(
            f"killed with its process group at the {options.timeout:g}s timeout"
            + ("; verdicts are those reached before it" if result.partial else ""))
    notes += result.notes
    outcome = RunOutcome(
        exit_code=exit_code,
        timed_out=timed_out,
        crashed=None if timed_out else crashed,
        steps=result.steps,
        seconds=round(seconds, 3),
        stopped_early=not timed_out and result.stop_reason in ("steps", "settled"),
        stderr_tail=stderr_tail,
        stdout_tail=stdout_tail,
        batches=result.batches,
        stop_reason=None if timed_out else result.stop_reason,
        notes=tuple(notes),
        probe_seconds=tuple(sorted(
            ((int(k), v) for k, v in result.probe_seconds.items() if k.isdigit()),
            key=lambda item: -item[1])),
    )
    return result, outcome


# -- verdicts ------------------------------------------------------------------------------


def _final_verdict(
    finding: Finding, probe: str | None, found: dict | None, run: RunOutcome,
    options: VerifyOptions,
) -> Verdict:
    if probe is None:
        return Verdict(VerdictStatus.NOT_REACHED,
                       f"{finding.code} has no runtime probe, so the run could not check it")
    if found is not None:
        return Verdict.from_dict(found)
    where = f"{os.path.relpath(finding.path)}:{finding.line}"
    if run.timed_out:
        why = f"before the run was killed at the {options.timeout:g}s timeout"
    elif run.crashed:
        why = f"before the script stopped ({run.crashed})"
    else:
        why = (f"within the budget ({run.steps} optimizer step(s), at most "
               f"{options.max_batches} batch(es) per DataLoader pass)")
        if run.stop_reason in ("steps", "batches"):
            # The run was cut by mllint, so a larger budget may reach the code.
            why += (f"; run again with a larger budget to reach it, e.g. --max-steps "
                    f"{options.max_steps * 5}")
    return Verdict(VerdictStatus.NOT_REACHED, f"the flagged code at {where} never ran {why}",
                   {"steps": run.steps})


def _runtime_findings(
    result: RunResult, static: list[Finding]
) -> tuple[tuple[Finding, Verdict], ...]:
    out = []
    for item in result.runtime_findings:
        try:
            finding = Finding.from_dict(item["finding"])
            verdict = Verdict.from_dict(item["verdict"])
        except (KeyError, TypeError, ValueError):
            continue
        covered = any(
            s.code == finding.code and s.path == os.path.realpath(finding.path)
            and (s.region or s.span).contains_line(finding.line)
            for s in static
        )
        if not covered:
            # Shown like the static findings, which carry paths as the user gave them.
            rel = os.path.relpath(finding.path)
            if not rel.startswith(".."):
                finding = dataclasses.replace(finding, path=rel)
            out.append((finding, verdict))
    return tuple(out)


__all__ = ["RunOutcome", "VerifyError", "VerifyOptions", "VerifyReport", "verify"]
