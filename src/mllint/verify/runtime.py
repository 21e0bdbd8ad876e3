"""The ``Runtime`` that probes program against, inside the ``--verify`` child process.

One ``Runtime`` owns every piece of process-wide state a run adds: torch's global module
and optimizer hooks, the trace function, and the attributes it patches (``torch.save``,
``DataLoader.__iter__``/``__len__``, ``Tensor.backward``...). Each is registered once,
lazily, the first time a probe asks for that kind of callback, and its handle or restore
function goes into one ``ExitStack`` that ``close()`` unwinds.

Each probe sees the runtime through its own ``ProbeRuntime`` facade (``isolation``), which
guards every callback the probe registers; the torch functions the run intercepts are in
``interception``.

Budgets: each ``DataLoader`` pass stops after ``max_batches``; after every optimizer step
and every batch the runtime asks the probes whether they are settled, and once the step
budget is spent or every probe is settled it raises ``StopRun`` into the user's code. A
bare ``except:`` in the script can swallow it; the runtime then raises it again at the
next hook it gets (step, batch, forward, backward) and counts how often that happened.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from types import FrameType
from typing import Any, Callable

from mllint.types import Finding, Verdict, VerdictStatus
from mllint.verify import frames, interception, linerewrite
from mllint.verify.isolation import ProbeRuntime, Slot
from mllint.verify.linetrace import LineTracer

Emit = Callable[[dict], None]

__all__ = ["ProbeRuntime", "Runtime", "Slot", "StopRun"]


class StopRun(BaseException):
    """Raised into the user's code to end the run early (a budget, or all settled).

    A ``BaseException`` so that ``except Exception`` in the script lets it through.
    """


class Runtime:
    """The shared runtime of one run; probes reach it through ``ProbeRuntime``."""

    def __init__(
        self,
        torch: Any,
        *,
        max_batches: int,
        max_steps: int,
        fault_run: bool = False,
        stop_when_settled: bool = True,
        emit: Emit | None = None,
        library_dirs: tuple[str, ...] = (),
    ) -> None:
        self.torch = torch
        self.step = 0
        self.batches = 0
        #: ``backward()`` calls so far; they stand in for steps while no optimizer steps.
        self.backwards = 0
        self.saves = 0
        self.fault_run = fault_run
        self.max_batches = max_batches
        self.max_steps = max_steps
        self.stop_when_settled = stop_when_settled
        self.slots: list[Slot] = []
        self.stop_reason: str | None = None
        self.stops_raised = 0
        self._emit = emit or (lambda event: None)
        self._stack = contextlib.ExitStack()
        self._main_thread = threading.get_ident()
        mllint_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._kinds = frames.FileKinds(
            (os.path.dirname(torch.__file__), mllint_dir, *library_dirs)
        )
        self._sites = linerewrite.LineSites()
        self._lines = LineTracer()  # fallback for files loaded before their lines were watched
        self._started = False
        self._module_files: dict[str, str] = {}
        self._modules_seen = 0
        self._adopted: set[str] = set()
        self._forward_pre: list[Callable] = []
        self._forward: list[Callable] = []
        self._forward_handle: Any = None
        self._step_pre: list[Callable] = []
        self._step_post: list[Callable] = []
        self._backward: list[Callable] = []
        self._save: list[Callable] = []
        self._batch: list[Callable] = []
        self._registered: set[str] = set()
        self._quiet = 0
        self._monitor: Any = None
        #: The run's ``CopyOnWrite`` layer, set by the child before ``install_core``.
        self.cow: Any = None

    # -- life cycle --------------------------------------------------------------------

    def install_core(self) -> None:
        """What every run needs, probes or not: the budgets and the torch.save guard."""
        interception.install_dataloader_cut(self)
        self._install_steps()
        interception.install_save_guard(self)
        interception.hide_mps_on_cpu(self)
        if self._first("backward"):  # counted for the step budget (see dispatch_backward)
            interception.install_backward_interception(self)
        self._stack.callback(linerewrite.install_hook(self._sites))

    def start(self) -> None:
        """Called right before the user's code runs (after every probe's ``install``)."""
        self._started = True
        self._lines.start()

    def compile_script(self, path: str) -> Any:
        """The script's code with its watched lines compiled in, or None when none of its
        lines is watched (then ``runpy`` runs it as usual)."""
        real = os.path.realpath(path)
        return self._sites.compile_file(real) if self._sites.watched(real) else None

    def stop_tracing(self) -> None:
        """Called as soon as the user's code has ended, before verdicts are collected."""
        self._lines.stop()

    def on_close(self, fn: Callable[[], Any]) -> None:
        self._stack.callback(fn)

    def close(self) -> None:
        self._lines.stop()
        self._stack.close()

    def patch(self, owner: Any, attr: str, replacement: Any) -> None:
        had_own = attr in getattr(owner, "__dict__", {})
        original = owner.__dict__[attr] if had_own else getattr(owner, attr, None)
        setattr(owner, attr, replacement)

        def restore() -> None:
            if had_own:
                setattr(owner, attr, original)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(owner, attr)

        self._stack.callback(restore)

    def on_call(self, owner: Any, attr: str, fn: Callable[..., None]) -> None:
        original = getattr(owner, attr)
        callbacks: list[Callable[..., None]] = getattr(original, "_mllint_callbacks", None)
        if callbacks is not None:  # already wrapped: share the wrapper
            callbacks.append(fn)
            return
        callbacks = [fn]
        runtime = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            runtime.enforce_stop()
            for cb in callbacks:
                cb(*args, **kwargs)
            return original(*args, **kwargs)

        wrapper._mllint_callbacks = callbacks  # type: ignore[attr-defined]
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        for name in ("__name__", "__qualname__", "__doc__", "__module__"):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(wrapper, name, getattr(original, name))
        self.patch(owner, attr, wrapper)

    # -- frames ------------------------------------------------------------------------

    def user_frame(self, start: FrameType | None = None) -> FrameType | None:
        return frames.user_frame(self._kinds, start or sys._getframe(1))

    def stack_in(self, finding: Finding, start: FrameType | None = None) -> FrameType | None:
        return frames.stack_in(self._kinds, finding, start or sys._getframe(1))

    def object_of(self, frame: FrameType, expr: str) -> Any:
        return frames.object_of(frame, expr)

    def realpath(self, filename: str) -> str:
        return self._kinds.realpath(filename)

    def exclude_file(self, filename: str) -> None:
        self._kinds.exclude_file(filename)

    def is_user_file(self, filename: str) -> bool:
        return self._kinds.is_user(filename)

    # -- callbacks ---------------------------------------------------------------------

    def add_forward_pre_hook(self, fn: Callable[[Any, tuple], None]) -> None:
        self._forward_pre.append(fn)
        self._register_forward_pre()

    def add_forward_hook(self, fn: Callable[[Any, tuple, Any], None]) -> Callable[[], None]:
        """Calls ``fn`` after every module's forward; returns what removes it again.

        torch's global hook is registered only while some callback wants it: with any
        global hook, every module call takes ``Module._call_impl``'s slow path."""
        self._forward.append(fn)
        if self._forward_handle is None:
            module = self.torch.nn.modules.module
            self._forward_handle = module.register_module_forward_hook(self._dispatch_forward)
            self._stack.callback(self._drop_forward_hook)

        def remove() -> None:
            if fn in self._forward:
                self._forward.remove(fn)
            if not self._forward:
                self._drop_forward_hook()

        return remove

    def _drop_forward_hook(self) -> None:
        if self._forward_handle is not None:
            self._forward_handle.remove()
            self._forward_handle = None

    def add_step_pre_hook(self, fn: Callable[[Any], None]) -> None:
        self._step_pre.append(fn)

    def add_step_post_hook(self, fn: Callable[[Any], None]) -> None:
        self._step_post.append(fn)

    def on_backward(self, fn: Callable[[Any], None]) -> None:
        self._backward.append(fn)
        if self._first("backward"):
            interception.install_backward_interception(self)

    def on_save(self, fn: Callable[[Any, Any], None]) -> None:
        self._save.append(fn)

    def on_batch(self, fn: Callable[[Any, Any], None]) -> None:
        self._batch.append(fn)

    def on_line(self, path: str, line: int, fn: Callable[[FrameType], None]) -> None:
        self._add_line(path, line, fn, "before")

    def after_line(self, path: str, line: int, fn: Callable[[FrameType], None]) -> None:
        self._add_line(path, line, fn, "after")

    def _add_line(self, path: str, line: int, fn: Callable[[FrameType], None],
                  kind: str) -> None:
        path = os.path.realpath(path)
        if self._sites.want(path, line, kind, fn) and path not in self._loaded_files():
            return  # compiled in when the file is loaded (see linerewrite)
        self._lines.add(path, line, fn, after=kind == "after")
        if self._started:
            self._lines.start()

    def _adopt_unrewritten(self) -> None:
        """Watched files that got loaded without rewriting (a custom loader, ``exec`` of
        the source, a nested ``runpy``) are handed to the trace-function fallback. Checked
        at steps and batches whenever ``sys.modules`` has grown."""
        count = len(sys.modules)
        if count == self._modules_seen:
            return
        self._modules_seen = count
        for path in self._loaded_files() - self._adopted:
            self._adopted.add(path)
            for line, kind, fns in self._sites.uncompiled_sites(path):
                self._lines.add(path, line, _fan_out(fns), after=kind == "after")
            self._lines.start()

    def _loaded_files(self) -> set[str]:
        """Watched files already imported as modules without our rewriting."""
        watched = self._sites.paths()
        names = {os.path.basename(p) for p in watched}
        loaded = set()
        for module in list(sys.modules.values()):
            filename = getattr(module, "__file__", None)
            # realpath only for a name that could match: torch alone loads ~1,500 modules.
            if isinstance(filename, str) and os.path.basename(filename) in names:
                real = self._module_files.get(filename)
                if real is None:
                    real = self._module_files[filename] = os.path.realpath(filename)
                loaded.add(real)
        return (loaded & watched) - set(self._sites.compiled)

    def _first(self, kind: str) -> bool:
        if kind in self._registered:
            return False
        self._registered.add(kind)
        return True

    # -- dispatchers (torch calls these) -----------------------------------------------

    def _register_forward_pre(self) -> None:
        if self._first("forward_pre"):
            module = self.torch.nn.modules.module
            handle = module.register_module_forward_pre_hook(self._dispatch_forward_pre)
            self._stack.callback(handle.remove)

    def monitor(self) -> Any:
        """The run's ``TrainingMonitor``, installed on first use (see ``monitor``)."""
        if self._monitor is None:
            from mllint.verify.monitor import TrainingMonitor

            self._monitor = TrainingMonitor(self)
            self._monitor.install()
        return self._monitor

    def series(self) -> dict:
        return {} if self._monitor is None else self._monitor.series()

    @contextlib.contextmanager
    def quiet(self):
        """Forwards run inside are not dispatched to any probe (a probe's own replay)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _dispatch_forward_pre(self, module: Any, args: tuple) -> None:
        if self._quiet:
            return
        self.enforce_stop()
        for fn in self._forward_pre:
            fn(module, args)

    def _dispatch_forward(self, module: Any, args: tuple, output: Any) -> None:
        if self._quiet:
            return
        for fn in self._forward:
            fn(module, args, output)

    def dispatch_save(self, obj: Any, f: Any) -> None:
        for fn in self._save:
            fn(obj, f)

    def _dispatch_step_pre(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self.enforce_stop()
        for fn in self._step_pre:
            fn(optimizer)

    def _dispatch_step_post(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self.step += 1
        for fn in self._step_post:
            fn(optimizer)
        self._emit({"type": "step", "steps": self.step})
        if self.step >= self.max_steps and self.stop_reason is None:
            self.stop_reason = "steps"
        self._progress()

    def dispatch_backward(self, tensors: Any) -> None:
        self.enforce_stop()
        self.backwards += 1
        if self.step == 0 and self.backwards > self.max_steps and self.stop_reason is None:
            # Weights updated by hand (``p -= lr * p.grad``): no optimizer step ever comes,
            # so backward passes count against the step budget.
            self.stop_reason = "steps"
            self.enforce_stop()
        if isinstance(tensors, self.torch.Tensor):
            tensors = (tensors,)
        for tensor in tensors or ():
            for fn in self._backward:
                fn(tensor)

    def dispatch_batch(self, loader: Any, batch: Any) -> None:
        self.batches += 1
        if (self.step == 0 and self.backwards == 0 and self.stop_reason is None
                and self.batches > self.max_steps * self.max_batches):
            # A run that never trains (evaluation only, or a loop mllint cannot see) is
            # bounded by the batches the step budget would have drawn.
            self.stop_reason = "batches"
        for fn in self._batch:
            fn(loader, batch)
        self._emit({"type": "batch", "batches": self.batches})
        self._progress()

    # -- budgets and settling ----------------------------------------------------------

    def _progress(self) -> None:
        """After a step or a batch: re-arm tracing, settle probes, stop if it is time."""
        if self._sites.paths():
            self._adopt_unrewritten()
        self._lines.resume(sys._getframe(2))
        self.refresh_settled()
        if self.stop_reason is None and self.stop_when_settled and self.slots and all(
            s.settled or s.error for s in self.slots
        ):
            self.stop_reason = "settled"
        self.enforce_stop()

    def refresh_settled(self) -> None:
        for slot in self.slots:
            if slot.settled or slot.probe is None:
                continue
            if slot.error is None:
                try:
                    slot.settled = bool(slot.probe.settled())
                except Exception as exc:
                    slot.fail("settled()", exc)
            if slot.error is not None:
                slot.settled = True
            if slot.settled and slot.index is not None:
                # The whole verdict goes to the parent now: if the script dies suddenly
                # (os._exit, the OOM killer), the verdicts reached so far are kept.
                verdict = self._verdict_now(slot)
                self._emit({"type": "settled", "index": slot.index,
                            "status": verdict["status"], "verdict": verdict,
                            "steps": self.step, "batches": self.batches})

    def _verdict_now(self, slot: Slot) -> dict:
        if slot.error is not None:
            return Verdict(VerdictStatus.ERROR, slot.error).to_dict()
        try:
            verdict = slot.probe.verdict()
        except Exception as exc:
            slot.fail("verdict()", exc)
            return Verdict(VerdictStatus.ERROR, slot.error or "verdict() failed").to_dict()
        if isinstance(verdict, Verdict):
            return verdict.to_dict()
        return {"status": VerdictStatus.NOT_REACHED.value, "evidence": ""}

    def enforce_stop(self) -> None:
        if self.stop_reason is None or threading.get_ident() != self._main_thread:
            return
        self.stops_raised += 1
        if self.stops_raised == 2:
            # The first StopRun was swallowed by the script: make sure some hook fires
            # again soon, even in a loop that never steps an optimizer.
            self._register_forward_pre()
        raise StopRun(self.stop_reason)

    # -- core patches ------------------------------------------------------------------

    def _install_steps(self) -> None:
        import torch.optim.optimizer as optim_module

        # The pre-hook also re-raises a swallowed StopRun before another step is taken.
        for register, hook in (
            (optim_module.register_optimizer_step_pre_hook, self._dispatch_step_pre),
            (optim_module.register_optimizer_step_post_hook, self._dispatch_step_post),
        ):
            self._stack.callback(register(hook).remove)

def _fan_out(fns: list[Callable[[FrameType], None]]) -> Callable[[FrameType], None]:
    """One callback that fires a site's list as it stands at each call."""

    def fire(frame: FrameType) -> None:
        for fn in list(fns):
            fn(frame)

    return fire


