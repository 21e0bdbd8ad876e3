"""The run summary of ``--verify``: what ended the run, in words and as JSON.

Every format carries it: the human formats print ``text``, ``--format json`` nests
``to_dict`` under ``"verify"``. The stop reason is always one of ``StopReason`` so that a
reader (or a CI job) can tell "every finding settled" from "the step budget was spent".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from mllint.types import VerdictStatus


class StopReason(str, enum.Enum):
    #: Every finding's probe and every runtime check was settled, so mllint ended the run
    #: (note "settle-windows" in ``mllint.rules.runtime._support``).
    SETTLED = "settled"
    #: ``--max-steps`` optimizer steps (or, without an optimizer, backward passes) ran.
    STEPS = "steps"
    #: No step at all, and ``--max-steps`` x ``--max-batches`` batches were drawn.
    BATCHES = "batches"
    #: The script ended by itself, successfully.
    FINISHED = "finished"
    #: The script exited with a non-zero status or crashed with an exception.
    CRASHED = "crashed"
    #: The run was killed at ``--timeout``.
    TIMEOUT = "timeout"
    #: The run was interrupted (SIGINT/SIGTERM/SIGHUP to mllint).
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class RunSummary:
    steps: int
    batches: int
    seconds: float
    stop_reason: StopReason
    max_steps: int
    crashed: str | None = None
    exit_code: int | None = None
    notes: tuple[str, ...] = ()
    output_tail: str = ""
    fault_run: "RunSummary | None" = None
    series: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """The run could not do its job: it crashed, timed out or was interrupted."""
        return self.stop_reason in (StopReason.CRASHED, StopReason.TIMEOUT,
                                    StopReason.INTERRUPTED)

    def text(self) -> str:
        head = f"--verify run: {self.steps} optimizer step(s) in {self.seconds:.1f}s"
        why = {
            StopReason.SETTLED: ("stopped once every finding and runtime check was "
                                "settled"),
            StopReason.STEPS: f"stopped: the step budget (--max-steps {self.max_steps}) "
                              "was spent",
            StopReason.BATCHES: "stopped: no optimizer step ran within the batch budget "
                                "(--max-steps x --max-batches batches)",
            StopReason.FINISHED: "the script finished on its own",
            StopReason.TIMEOUT: "killed at the timeout",
            StopReason.INTERRUPTED: "interrupted",
        }.get(self.stop_reason)
        if self.stop_reason is StopReason.STEPS and self.steps == 0:
            why += " on backward passes (no optimizer stepped: weights updated by hand)"
        if self.stop_reason is StopReason.CRASHED:
            why = (f"the script crashed: {self.crashed}" if self.crashed
                   else f"the script exited with status {self.exit_code}")
        parts = [head, why]
        if self.fault_run is not None:
            parts.append(f"fault-injection run: {self.fault_run.steps} step(s), "
                         f"{self.fault_run.stop_reason.value}")
        return "; ".join(p for p in parts if p) + "."

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "batches": self.batches,
            "seconds": self.seconds,
            "stop_reason": self.stop_reason.value,
            "max_steps": self.max_steps,
            "crashed": self.crashed,
            "timed_out": self.stop_reason is StopReason.TIMEOUT,
            "exit_code": self.exit_code,
            "notes": list(self.notes),
            "fault_run": None if self.fault_run is None else self.fault_run.to_dict(),
            **({"series": self.series} if self.series else {}),
        }


def summarise(run: Any, max_steps: int, fault_run: Any = None,
              series: dict[str, Any] | None = None) -> RunSummary:
    """A ``RunSummary`` from the harness's ``RunOutcome``."""
    if run.timed_out:
        reason = StopReason.TIMEOUT
    elif getattr(run, "interrupted", False):
        reason = StopReason.INTERRUPTED
    elif run.crashed or run.exit_code not in (0, None):
        reason = StopReason.CRASHED
    elif run.stop_reason in (r.value for r in StopReason):
        reason = StopReason(run.stop_reason)
    else:
        reason = StopReason.FINISHED
    return RunSummary(
        steps=run.steps, batches=run.batches, seconds=run.seconds, stop_reason=reason,
        max_steps=max_steps, crashed=run.crashed, exit_code=run.exit_code,
        notes=tuple(run.notes), output_tail=_last_lines(run.stdout_tail, run.stderr_tail),
        fault_run=None if fault_run is None else summarise(fault_run, max_steps),
        series=dict(series or {}),
    )


#: Lines of the script's output shown when it crashed.
TAIL_LINES = 15


def _last_lines(stdout: str, stderr: str) -> str:
    text = "\n".join(s.rstrip("\n") for s in (stdout, stderr) if s.strip())
    return "\n".join(text.splitlines()[-TAIL_LINES:])


def is_problem(verdict: Any) -> bool:
    """A diagnostic counts as a problem unless the run refuted it."""
    return verdict is None or verdict.status is not VerdictStatus.REFUTED


def exit_status(diagnostics: Any, summary: RunSummary | None, fatal: bool) -> int:
    """The exit code of a ``--verify`` run (README, "Exit codes"): 2 when the run could
    not start, or crashed / timed out without confirming anything; else 1 when some
    diagnostic is a problem (confirmed, unsettled or runtime-only), else 0."""
    if fatal:
        return 2
    confirmed = any(d.verdict is not None and d.verdict.status is VerdictStatus.CONFIRMED
                    for d in diagnostics)
    if summary is not None and summary.failed and not confirmed:
        return 2
    return 1 if any(is_problem(d.verdict) for d in diagnostics) else 0
