"""Probe isolation: each probe reaches the runtime through a facade that guards its callbacks.

An exception escaping a probe's callback marks that probe's ``Slot`` with the error and
switches its callbacks off; the user's run and the other probes go on. ``InjectedFault``
alone is let through (see ``mllint.verify.probe``). The facade also times the callbacks:
``Slot.seconds`` is that probe's share of the run's overhead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from time import perf_counter
from types import FrameType
from typing import TYPE_CHECKING, Any

from mllint.types import Finding
from mllint.verify.probe import InjectedFault

if TYPE_CHECKING:
    from mllint.verify.runtime import Runtime


class Slot:
    """One installed probe (or watcher) and what the run did to it."""

    def __init__(self, index: int | None, label: str) -> None:
        self.index = index
        self.label = label
        self.probe: Any = None
        self.error: str | None = None
        self.settled = False
        #: Time spent in this probe's callbacks (its share of the run's overhead).
        self.seconds = 0.0

    def fail(self, where: str, exc: BaseException) -> None:
        if self.error is None:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            at = "" if tb is None else (
                f" ({os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})"
            )
            self.error = f"{self.label} failed in {where}: {type(exc).__name__}: {exc}{at}"


class ProbeRuntime:
    """One probe's view of the runtime: every callback it registers runs guarded."""

    def __init__(self, core: "Runtime", slot: Slot) -> None:
        self._core = core
        self._slot = slot

    torch = property(lambda self: self._core.torch)
    step = property(lambda self: self._core.step)
    max_steps = property(lambda self: self._core.max_steps)
    batches = property(lambda self: self._core.batches)
    fault_run = property(lambda self: self._core.fault_run)

    def _guard(self, fn: Callable, where: str) -> Callable:
        slot = self._slot

        def guarded(*args: Any, **kwargs: Any) -> None:
            if slot.error is not None:
                return
            start = perf_counter()
            try:
                fn(*args, **kwargs)
            except InjectedFault:
                raise
            except Exception as exc:  # isolation, see probe.py
                slot.fail(where, exc)
            finally:
                slot.seconds += perf_counter() - start

        return guarded

    def user_frame(self) -> FrameType | None:
        return self._core.user_frame(sys._getframe(1))

    def stack_in(self, finding: Finding) -> FrameType | None:
        return self._core.stack_in(finding, sys._getframe(1))

    def object_of(self, frame: FrameType, expr: str) -> Any:
        return self._core.object_of(frame, expr)

    def quiet(self) -> Any:
        return self._core.quiet()

    def monitor(self) -> Any:
        return self._core.monitor()

    def is_user_file(self, filename: str) -> bool:
        return self._core.is_user_file(filename)

    def user_site(self) -> Any:
        """The user's (file, line) calling into torch right now, as a monitor ``Site``."""
        return self._core.monitor().user_site(sys._getframe(1))

    def patch(self, owner: Any, attr: str, replacement: Any) -> None:
        self._core.patch(owner, attr, replacement)

    def on_call(self, owner: Any, attr: str, fn: Callable[..., None]) -> None:
        self._core.on_call(owner, attr, self._guard(fn, f"on_call({attr})"))

    def add_forward_pre_hook(self, fn: Callable[[Any, tuple], None]) -> None:
        self._core.add_forward_pre_hook(self._guard(fn, "a forward pre-hook"))

    def add_forward_hook(self, fn: Callable[[Any, tuple, Any], None]) -> Callable[[], None]:
        """Returns what removes the hook again."""
        return self._core.add_forward_hook(self._guard(fn, "a forward hook"))

    def add_step_pre_hook(self, fn: Callable[[Any], None]) -> None:
        self._core.add_step_pre_hook(self._guard(fn, "a step pre-hook"))

    def add_step_post_hook(self, fn: Callable[[Any], None]) -> None:
        self._core.add_step_post_hook(self._guard(fn, "a step post-hook"))

    def on_backward(self, fn: Callable[[Any], None]) -> None:
        self._core.on_backward(self._guard(fn, "on_backward"))

    def on_save(self, fn: Callable[[Any, Any], None]) -> None:
        self._core.on_save(self._guard(fn, "on_save"))

    def on_batch(self, fn: Callable[[Any, Any], None]) -> None:
        self._core.on_batch(self._guard(fn, "on_batch"))

    def on_line(self, path: str, line: int, fn: Callable[[FrameType], None]) -> None:
        self._core.on_line(path, line, self._guard(fn, f"on_line({line})"))

    def after_line(self, path: str, line: int, fn: Callable[[FrameType], None]) -> None:
        self._core.after_line(path, line, self._guard(fn, f"after_line({line})"))
