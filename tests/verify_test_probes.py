"""Probes for the harness tests, loaded in the child through ``probe_override``.

They exercise the ``Runtime`` contract itself, independent of any rule: each records
what it saw into its verdict's figures so the tests can assert on it.
"""

from __future__ import annotations

import os

from mllint.types import Finding, Position, Span, Verdict, VerdictStatus
from mllint.verify.probe import InjectedFault, Probe, Watcher


class RecorderProbe(Probe):
    """Registers every kind of callback and counts what fires."""

    def install(self) -> None:
        self.counts = dict.fromkeys(
            ["forward_pre", "forward", "step_pre", "step_post", "backward", "batch", "save",
             "line", "after_line", "stack_in"], 0)
        self.assigned: list[str] = []
        self.user_files: set[str] = set()
        self.saved_keys: list[str] = []
        self.save_targets: list[str] = []
        self.max_batch_rows = 0
        rt = self.rt
        rt.add_forward_pre_hook(self._forward_pre)
        rt.add_forward_hook(lambda m, a, o: self._count("forward"))
        rt.add_step_pre_hook(lambda opt: self._count("step_pre"))
        rt.add_step_post_hook(lambda opt: self._count("step_post"))
        rt.on_backward(self._backward)
        rt.on_batch(self._batch)
        rt.on_save(self._save)
        rt.on_line(self.finding.path, self.finding.line, lambda f: self._count("line"))
        rt.after_line(self.finding.path, self.finding.line, self._after)

    def _count(self, key: str) -> None:
        self.counts[key] += 1

    def _forward_pre(self, module, args) -> None:
        self._count("forward_pre")
        frame = self.rt.user_frame()
        if frame is not None:
            self.user_files.add(os.path.basename(frame.f_code.co_filename))

    def _backward(self, tensor) -> None:
        self._count("backward")
        if self.rt.stack_in(self.finding) is not None:
            self._count("stack_in")

    def _batch(self, loader, batch) -> None:
        self._count("batch")
        self.max_batch_rows = max(self.max_batch_rows, len(batch[0]))

    def _save(self, obj, f) -> None:
        self._count("save")
        self.saved_keys = sorted(obj) if isinstance(obj, dict) else [type(obj).__name__]
        self.save_targets.append(str(f))

    def _after(self, frame) -> None:
        self._count("after_line")
        name = self.finding.data.get("var")
        if name:
            value = self.rt.object_of(frame, name)
            self.assigned.append(type(value).__name__)

    def verdict(self) -> Verdict | None:
        if not any(self.counts.values()):
            return None
        return self.confirmed(
            "recorded", **self.counts, steps=self.rt.step, batches=self.rt.batches,
            assigned=",".join(self.assigned[:3]), user_files=",".join(sorted(self.user_files)),
            saved_keys=",".join(self.saved_keys), save_targets=",".join(self.save_targets),
            max_batch_rows=self.max_batch_rows,
        )


class SettleAfterProbe(Probe):
    """Settles after ``finding.data["steps"]`` optimizer steps."""

    def settled(self) -> bool:
        return self.rt.step >= int(self.finding.data.get("steps", 2))

    def verdict(self) -> Verdict | None:
        return self.refuted("settled", steps=self.rt.step)


class BrokenProbe(Probe):
    """Its forward hook raises: the probe must end as "error", the run must go on."""

    def install(self) -> None:
        self.rt.add_forward_hook(self._boom)

    def _boom(self, module, args, output) -> None:
        raise ValueError("probe bug")

    def verdict(self) -> Verdict | None:
        return self.confirmed("should never be reported")


class VerdictRaisesProbe(Probe):
    def verdict(self) -> Verdict | None:
        raise RuntimeError("verdict bug")


class NeverProbe(Probe):
    """Watches the finding's line; reports only if it ran."""

    def install(self) -> None:
        self.hits = 0
        self.rt.on_line(self.finding.path, self.finding.line, self._hit)

    def _hit(self, frame) -> None:
        self.hits += 1

    def verdict(self) -> Verdict | None:
        return self.confirmed("ran", hits=self.hits) if self.hits else None


class FaultProbe(Probe):
    """In the fault run, fails the third backward; confirmed if training went on."""

    fault_injection = True

    def install(self) -> None:
        self.injected_at: int | None = None
        self.steps_after = 0
        self.rt.on_backward(self._backward)
        self.rt.add_step_post_hook(self._step)

    def _backward(self, tensor) -> None:
        if self.rt.fault_run and self.injected_at is None and self.rt.step == 2:
            self.injected_at = self.rt.step
            raise InjectedFault("mllint: injected failure")

    def _step(self, optimizer) -> None:
        if self.injected_at is not None:
            self.steps_after += 1

    def verdict(self) -> Verdict | None:
        if not self.rt.fault_run:
            return Verdict(VerdictStatus.NOT_REACHED, "main run")
        if self.injected_at is None:
            return None
        if self.steps_after:
            return self.confirmed("training went on", steps_after=self.steps_after)
        return self.refuted("the failure stopped training")


class LossLineWatcher(Watcher):
    """Reports a runtime-only finding at the first user line that calls backward()."""

    def install(self) -> None:
        self.where: tuple[str, int] | None = None
        self.rt.on_backward(self._backward)

    def _backward(self, tensor) -> None:
        frame = self.rt.user_frame()
        if self.where is None and frame is not None:
            self.where = (os.path.realpath(frame.f_code.co_filename), frame.f_lineno)

    def findings(self) -> list[tuple[Finding, Verdict]]:
        if self.where is None:
            return []
        path, line = self.where
        span = Span(Position(line, 1), Position(line, 2))
        finding = Finding(path, "ML999", "test-watch", "backward seen here", span)
        return [(finding, Verdict(VerdictStatus.CONFIRMED, "seen at run time", {"line": line}))]
