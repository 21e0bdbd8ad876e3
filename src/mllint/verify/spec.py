"""What the harness hands the child process, and what the child hands back (both JSON).

Kept in one module so the two sides cannot drift: the harness writes a ``RunSpec`` and
reads a ``RunResult``; the bootstrap does the opposite. Only the standard library is used
here, because the bootstrap imports this before it knows whether torch exists.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

SPEC_VERSION = 1

#: Exit status of the bootstrap when it could not start the script at all (torch missing,
#: no CUDA, module not found); the reason is in ``RunResult.fatal``.
EXIT_FATAL = 86


class Fatal:
    """Kinds of ``RunResult.fatal``: the run could not start. The harness turns each into
    a ``VerifyError`` with the message."""

    TORCH_MISSING = "torch-missing"
    CUDA_UNAVAILABLE = "cuda-unavailable"
    TARGET_NOT_FOUND = "target-not-found"
    BOOTSTRAP = "bootstrap"


@dataclass
class ProbeSpec:
    index: int | None  # the finding's index; None for a watcher
    target: str | None  # "module:Class", or None when the rule has no probe
    label: str


@dataclass
class RunSpec:
    mode: str  # "script" (a file run as __main__) or "module" (python -m)
    target: str
    args: list[str]
    cwd: str
    findings: list[dict[str, Any]]
    probes: list[ProbeSpec]
    max_batches: int
    max_steps: int
    device: str
    results: str
    events_fd: int
    scratch: str
    mllint_path: str
    rules_path: str
    fault_run: bool = False
    stop_when_settled: bool = True
    #: Unix time at which the child writes the verdicts it has, before the hard kill.
    deadline: float | None = None
    #: The harness's own site directories, appended (last) to the child's sys.path only
    #: when a probe module fails to import there (e.g. libcst missing), and only when the
    #: child runs the same Python version.
    fallback_path: list[str] = field(default_factory=list)
    python_version: list[int] = field(default_factory=list)
    version: int = SPEC_VERSION

    def dump(self, path: str) -> None:
        _write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str) -> RunSpec:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        data["probes"] = [ProbeSpec(**p) for p in data["probes"]]
        return cls(**data)


@dataclass
class RunResult:
    verdicts: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    runtime_findings: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    crashed: str | None = None
    steps: int = 0
    batches: int = 0
    saves: int = 0
    stop_reason: str | None = None
    stops_raised: int = 0
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    fatal: dict[str, str] | None = None
    #: Seconds spent in each probe's callbacks, by finding index (watchers: "watch:N").
    probe_seconds: dict[str, float] = field(default_factory=dict)
    #: Indices of findings whose probe asked for a fault-injection run.
    fault_indices: list[int] = field(default_factory=list)
    #: Per-step series recorded by the run (see ``mllint.verify.series``).
    series: dict[str, Any] = field(default_factory=dict)

    def dump(self, path: str) -> None:
        _write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str) -> RunResult:
        with open(path, encoding="utf-8") as fh:
            return cls(**json.load(fh))


def _write_json(path: str, data: Any) -> None:
    """Atomically: a reader never sees half a file (the timeout path writes early)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    """Figures from probes may be numpy or torch scalars; JSON gets plain numbers."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
