"""The contract between a rule's runtime probe and the ``--verify`` harness.

A probe lives in its rule's module (``Rule.PROBE = "mllint.rules.x:XProbe"``) and runs
only inside the child process that executes the user's script. This module must not
import torch at import time: static linting imports rule modules, and with them this one.

One probe instance is made per static finding. The harness calls ``install()`` before the
user's script starts, lets the script run under the budgets, then asks every probe for
its ``verdict()``. Probes never add hooks themselves; they ask the runtime, which keeps
every handle and removes it at the end (see ``Runtime``).

Isolation: every callback a probe registers runs guarded. An exception escaping a probe's
callback (or its ``install``/``settled``/``verdict``) turns that probe's verdict into an
"error" and switches its callbacks off; the user's run and the other probes go on. The
only exception that is let through into the user's code is ``InjectedFault`` (below).

Runtime-only findings: a rule module may define ``RUNTIME_WATCH = "module:Class"`` naming a
``Watcher`` subclass. The harness installs one instance for the whole run, without a static
finding, and reports what its ``findings()`` returns (see ``Watcher``).
"""

from __future__ import annotations

from types import FrameType
from typing import Any, Callable, ClassVar, Protocol

from mllint.types import Finding, Verdict, VerdictStatus


class InjectedFault(Exception):
    """The one exception a probe may raise from a callback on purpose.

    During the fault-injection run (``Runtime.fault_run``) a probe raises it, e.g. from an
    ``on_line`` or ``on_backward`` callback, to simulate a failing training step. The
    runtime lets it propagate into the user's code instead of marking the probe "error".
    """


class Runtime(Protocol):
    """What the harness offers probes. Implemented in ``mllint.verify.runtime``.

    Paths: ``finding.path`` is absolute and symlink-resolved inside the child process, the
    same form as ``frame.f_code.co_filename`` after ``os.path.realpath``.
    """

    #: The user's torch module (imported by the harness).
    torch: Any
    #: Optimizer steps completed so far, all optimizers together.
    step: int
    #: True during the second, fault-injection run (see ``Probe.fault_injection``).
    fault_run: bool
    #: Batches yielded so far by every ``DataLoader`` pass together.
    batches: int

    def user_frame(self) -> FrameType | None:
        """The innermost frame of the user's code (outside torch, mllint and stdlib)."""

    def stack_in(self, finding: Finding) -> FrameType | None:
        """The innermost frame currently on the stack that lies in ``finding``'s file
        within its region (or its span when it has no region), else ``None``."""

    def add_forward_pre_hook(self, fn: Callable[[Any, tuple], None]) -> None:
        """Global ``fn(module, args)`` before every ``nn.Module`` forward."""

    def add_forward_hook(self, fn: Callable[[Any, tuple, Any], None]) -> None:
        """Global ``fn(module, args, output)`` after every ``nn.Module`` forward."""

    def add_step_pre_hook(self, fn: Callable[[Any], None]) -> None:
        """``fn(optimizer)`` before every ``optimizer.step()`` of any optimizer."""

    def add_step_post_hook(self, fn: Callable[[Any], None]) -> None:
        """``fn(optimizer)`` after every ``optimizer.step()``."""

    def on_backward(self, fn: Callable[[Any], None]) -> None:
        """``fn(tensor)`` just before ``tensor.backward()`` / ``torch.autograd.backward``."""

    def on_save(self, fn: Callable[[Any, Any], None]) -> None:
        """``fn(obj, f)`` for every ``torch.save(obj, f)``; the harness never writes
        to ``f`` itself (payloads go to a scratch directory or nowhere)."""

    def on_batch(self, fn: Callable[[Any, Any], None]) -> None:
        """``fn(loader, batch)`` for every batch a ``DataLoader`` yields."""

    def on_line(self, path: str, line: int, fn: Callable[[FrameType], None]) -> None:
        """``fn(frame)`` each time the statement that covers ``line`` of ``path`` is about
        to run (a multi-line statement fires once); for a ``for``/``while`` header, before
        the loop and again for every iteration. ``frame`` is the user's frame. Works by
        compiling a call into the watched file (``mllint.verify.linerewrite``), so it
        costs nothing elsewhere; register during ``install()`` so the file is compiled
        with it (later registrations fall back to a trace function)."""

    def after_line(self, path: str, line: int, fn: Callable[[FrameType], None]) -> None:
        """``fn(frame)`` when the statement that covers ``line`` has finished normally
        (for a compound statement: its whole block); use it to read what a statement
        assigned. A statement that raises, returns or breaks has not finished."""

    def patch(self, owner: Any, attr: str, replacement: Any) -> None:
        """Replace ``owner.attr`` for the run; restored afterwards. The replacement runs
        unguarded inside the user's code: prefer ``on_call`` to inspect arguments."""

    def on_call(self, owner: Any, attr: str, fn: Callable[..., None]) -> None:
        """``fn(*args, **kwargs)`` (guarded) before every call of ``owner.attr`` made
        through that attribute, e.g. ``on_call(torch.nn.functional, "cross_entropy",
        ...)``; the original then runs unchanged. Restored afterwards."""

    def monitor(self) -> Any:
        """The run's ``TrainingMonitor`` (``mllint.verify.monitor``): construction sites of
        modules, optimizers and loaders, per-step norms, losses and memory, shared by the
        runtime checks. Installed on first use; call it from ``install()``."""

    def user_site(self) -> Any:
        """The user's line calling into torch right now, as a monitor ``Site``."""

    def is_user_file(self, filename: str) -> bool:
        """Whether ``filename`` is the user's code (not torch, mllint or the stdlib)."""

    def quiet(self) -> Any:
        """A context manager: forwards run inside it reach no probe's hooks (for a
        probe that replays a forward, e.g. in eval mode, to compare)."""

    def object_of(self, frame: FrameType, expr: str) -> Any:
        """Evaluate a dotted name such as ``self.model`` or ``opt`` in ``frame``
        (locals, then globals, then attribute access only; never calls anything).
        Raises ``LookupError`` when it cannot be resolved."""


class Probe:
    """Base class of a rule's runtime probe: one instance watches one finding."""

    #: The probe needs a second, short run where it injects a fault (``rt.fault_run``).
    fault_injection: ClassVar[bool] = False

    def __init__(self, finding: Finding, runtime: Runtime) -> None:
        self.finding = finding
        self.rt = runtime

    def install(self) -> None:
        """Register callbacks with ``self.rt``. Called once per run, before the script."""

    def settled(self) -> bool:
        """True once further running cannot change the verdict (lets the run end early)."""
        return False

    def verdict(self) -> Verdict | None:
        """The verdict after the run; ``None`` when the watched code never ran."""
        return None

    # Helpers so probes read alike.
    def confirmed(self, evidence: str, **figures: Any) -> Verdict:
        return Verdict(VerdictStatus.CONFIRMED, evidence, figures)

    def refuted(self, evidence: str, **figures: Any) -> Verdict:
        return Verdict(VerdictStatus.REFUTED, evidence, figures)


class Watcher:
    """A whole-run watcher that reports bugs the static pass missed (runtime-only findings).

    Named by a rule module's ``RUNTIME_WATCH = "module:Class"``; installed once per main run
    (never in the fault-injection run), with the same isolation as probes. It uses the same
    ``Runtime`` callbacks. The harness drops a runtime finding that falls on a static
    finding of the same code (same file, line within the static finding's span or region):
    that finding's own verdict already covers it.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def install(self) -> None:
        """Register callbacks with ``self.rt``."""

    def settled(self) -> bool:
        """True once the watcher needs no more steps (default: watch the whole budget)."""
        return False

    def findings(self) -> list[tuple[Finding, Verdict]]:
        """Bugs seen during the run, each with the verdict (usually confirmed) and its
        figures. ``Finding.path`` must be the realpath of the user's file."""
        return []
