"""The body of the ``--verify`` child process (entered through ``bootstrap.py``).

Order matters: torch is imported from the user's environment, the core patches go in
(budgets, the ``torch.save`` guard), every probe is loaded and installed, the user's
target runs as ``__main__``, and whatever ends it (its own end, ``StopRun``, a crash, a
``SystemExit``) is recorded. Verdicts are then collected, every hook and patch removed,
the result written, and the process leaves with ``os._exit`` so that the script's
``atexit`` handlers and stray non-daemon threads cannot hold the run open.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import runpy
import sys
import threading
import time
import traceback
from typing import Any

from mllint.types import Finding, Verdict, VerdictStatus
from mllint.verify import linerewrite, sandbox
from mllint.verify.isolation import ProbeRuntime, Slot
from mllint.verify.runtime import Runtime, StopRun
from mllint.verify.spec import EXIT_FATAL, Fatal, RunResult, RunSpec


class _Events:
    """JSON lines to the parent; one ``os.write`` per flush so lines never interleave.

    Progress events (a step, a batch) are held back and written together at most every
    ``PROGRESS_EVERY`` seconds: a write per step woke the parent at every step, which on
    a busy machine was most of the harness's own step overhead (wall time). Any other
    event (a settled verdict, started, finished) goes out at once with everything held
    before it, so a script that dies suddenly loses at most that interval of progress
    counts, never a verdict.
    """

    PROGRESS_EVERY = 0.1
    _PROGRESS = frozenset({"step", "batch"})

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._held: list[str] = []
        self._last = 0.0

    def emit(self, event: dict) -> None:
        import json

        line = json.dumps(event, default=str) + "\n"
        with self._lock:
            self._held.append(line)
            now = time.monotonic()
            if event.get("type") in self._PROGRESS and now - self._last < self.PROGRESS_EVERY:
                return
            self._last = now
            data = "".join(self._held).encode()
            self._held.clear()
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:
                pass  # the parent stopped listening; the run itself goes on


class _Child:
    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.events = _Events(spec.events_fd)
        self.result = RunResult()
        self.runtime: Runtime | None = None
        self.slots: list[Slot] = []
        self._write_lock = threading.Lock()
        self._final_written = False
        self._pid = os.getpid()
        self._borrowed: list[str] = []

    # -- fatal: the run could not start ----------------------------------------------

    def fatal(self, kind: str, message: str) -> None:
        self.result.fatal = {"kind": kind, "message": message}
        self.result.dump(self.spec.results)
        _leave(EXIT_FATAL)

    # -- the run ------------------------------------------------------------------------

    def run(self) -> None:
        spec = self.spec
        sys.dont_write_bytecode = True
        try:
            import torch
        except ImportError as exc:
            self.fatal(Fatal.TORCH_MISSING,
                       f"torch is not installed in {sys.executable} ({exc}); install it "
                       "there, or point --verify at the interpreter that has it")
            return
        if spec.device == "cuda" and not torch.cuda.is_available():
            self.fatal(Fatal.CUDA_UNAVAILABLE,
                       f"--device cuda, but torch.cuda.is_available() is False in "
                       f"{sys.executable} (torch {torch.__version__}, CUDA build: "
                       f"{torch.version.cuda or 'none'})")
            return

        import mllint

        runtime = self.runtime = Runtime(
            torch,
            max_batches=spec.max_batches,
            max_steps=spec.max_steps,
            fault_run=spec.fault_run,
            stop_when_settled=spec.stop_when_settled,
            emit=self.events.emit,
            library_dirs=(os.path.dirname(mllint.__file__), spec.rules_path),
        )
        runtime.cow = self._copy_on_write()
        runtime.install_core()
        runtime.cow.install(runtime.patch)
        self._redirect_tensorboard(runtime)
        findings = [Finding.from_dict(d) for d in spec.findings]
        for probe_spec in spec.probes:
            finding = None if probe_spec.index is None else findings[probe_spec.index]
            self.slots.append(self._load(probe_spec.target, probe_spec.label,
                                         probe_spec.index, finding, runtime))
        runtime.slots = self.slots
        # The script must not see packages of mllint's environment it does not have.
        for path in self._borrowed:
            if path in sys.path:
                sys.path.remove(path)
        if spec.deadline is not None:
            threading.Thread(target=self._watchdog, daemon=True).start()
        self.events.emit({"type": "started", "pid": os.getpid(),
                          "probes": sum(s.index is not None for s in self.slots),
                          "fault_run": spec.fault_run})
        runtime.refresh_settled()
        self._prepare_sys()
        self._check_target()
        start = time.perf_counter()
        runtime.start()
        try:
            self._run_target()
        except BaseException as exc:
            self._record_ending(exc)
        else:
            self.result.exit_code = 0
        finally:
            runtime.stop_tracing()
        self.result.notes.append(f"ran for {time.perf_counter() - start:.2f}s")
        self._finish()

    def _copy_on_write(self) -> Any:
        """The project is the working directory and the script's own directory."""
        from mllint.verify.cow import CopyOnWrite

        spec = self.spec
        roots = [spec.cwd]
        if spec.mode == "script":
            roots.append(os.path.dirname(os.path.realpath(spec.target)))
        overlay = os.environ.pop("MLLINT_OVERLAY", None)
        if overlay is not None:
            self.result.notes.append(
                "the project directory was mounted copy-on-write (overlay)" if overlay == "1"
                else "the overlay mount was refused; copy-on-write at the Python level only")
        return CopyOnWrite(roots, os.path.join(spec.scratch, "cow"))

    def _check_target(self) -> None:
        """After the probes are installed: finding a module imports its parent package."""
        spec = self.spec
        if spec.mode == "module":
            try:
                found = importlib.util.find_spec(spec.target)
            except ModuleNotFoundError:
                found = None
            if found is None:
                self.fatal(Fatal.TARGET_NOT_FOUND,
                           f"no module named {spec.target!r} (looked in {spec.cwd} and "
                           f"the sys.path of {sys.executable})")
        elif not os.path.isfile(spec.target):
            self.fatal(Fatal.TARGET_NOT_FOUND, f"script not found: {spec.target}")

    def _prepare_sys(self) -> None:
        spec = self.spec
        if spec.mode == "module":
            sys.argv = [spec.target, *spec.args]
            sys.path.insert(0, spec.cwd)  # what `python -m` does
        else:
            sys.argv = [spec.target, *spec.args]
            sys.path.insert(0, os.path.dirname(spec.target))  # what `python x.py` does

    def _run_target(self) -> None:
        spec = self.spec
        if spec.mode == "module":
            runpy.run_module(spec.target, run_name="__main__", alter_sys=True)
            return
        code = self.runtime.compile_script(spec.target) if self.runtime else None
        if code is None:
            runpy.run_path(spec.target, run_name="__main__")
        else:
            linerewrite.run_script(spec.target, code)

    def _record_ending(self, exc: BaseException) -> None:
        runtime = self.runtime
        assert runtime is not None
        result = self.result
        if _chain_has(exc, StopRun):
            result.exit_code = 0
            return
        if isinstance(exc, SystemExit):
            code = exc.code
            if code is None:
                result.exit_code = 0
            elif isinstance(code, int):
                result.exit_code = code
            else:
                print(code, file=sys.stderr)
                result.exit_code = 1
            if result.exit_code:
                result.crashed = f"SystemExit: {code}{self._where(exc)}"
            return
        result.exit_code = 1
        message = str(exc)
        result.crashed = f"{type(exc).__name__}{': ' + message if message else ''}" + (
            self._where(exc)
        )
        self._print_user_traceback(exc)

    def _where(self, exc: BaseException) -> str:
        frame_line = None
        tb = exc.__traceback__
        is_user = self.runtime.is_user_file if self.runtime else None
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if is_user is None or is_user(name):
                frame_line = (name, tb.tb_lineno)
            tb = tb.tb_next
        if frame_line is None:
            return ""
        path, line = frame_line
        rel = os.path.relpath(path, self.spec.cwd)
        return f" (at {path if rel.startswith('..') else rel}:{line})"

    def _print_user_traceback(self, exc: BaseException) -> None:
        """The traceback as Python would print it, minus runpy's and mllint's frames."""
        tb = exc.__traceback__
        is_user = self.runtime.is_user_file if self.runtime else None
        while tb is not None and is_user is not None and not is_user(
            tb.tb_frame.f_code.co_filename
        ):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__, file=sys.stderr)

    # -- probes -------------------------------------------------------------------------

    def _load(self, target: str | None, label: str, index: int | None,
              finding: Finding | None, runtime: Runtime) -> Slot:
        slot = Slot(index, label)
        try:
            cls = self._import(target or "")
            with contextlib.suppress(TypeError, OSError):
                runtime.exclude_file(inspect.getfile(cls))
            facade = ProbeRuntime(runtime, slot)
            slot.probe = cls(finding, facade) if finding is not None else cls(facade)
        except Exception as exc:
            slot.fail(f"loading {target}", exc)
            return slot
        try:
            slot.probe.install()
        except Exception as exc:
            slot.fail("install()", exc)
        return slot

    def _import(self, target: str) -> Any:
        module_name, _, class_name = target.partition(":")
        if module_name.startswith("mllint.rules."):
            self._ensure_rules_package()
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if not self._add_fallback_path():
                raise
            module = importlib.import_module(module_name)
        return getattr(module, class_name)

    def _ensure_rules_package(self) -> None:
        """``mllint.rules`` lives outside the ``mllint`` directory in a source checkout
        (an editable install maps it with an import hook the user's interpreter may not
        have): load it from the harness's own location."""
        if "mllint.rules" in sys.modules:
            return
        try:
            if importlib.util.find_spec("mllint.rules") is not None:
                return
        except ImportError:
            pass
        init = os.path.join(self.spec.rules_path, "__init__.py")
        spec = importlib.util.spec_from_file_location(
            "mllint.rules", init, submodule_search_locations=[self.spec.rules_path])
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules["mllint.rules"] = module
        spec.loader.exec_module(module)

    def _add_fallback_path(self) -> bool:
        """Rule modules import libcst; when the user's environment lacks it, borrow the
        harness's site directories (same Python version only), after the user's own, for
        as long as the probes are being loaded."""
        spec = self.spec
        if list(sys.version_info[:2]) != spec.python_version:
            return False
        added = [p for p in spec.fallback_path if p not in sys.path]
        sys.path.extend(added)
        self._borrowed += added
        importlib.invalidate_caches()
        return bool(added)

    def _redirect_tensorboard(self, runtime: Runtime) -> None:
        scratch = self.spec.scratch

        def redirect(keyword: str):
            return lambda module: sandbox.redirect_summary_writer(
                module, scratch, runtime.patch, keyword)

        hook = sandbox.AfterImport({
            "torch.utils.tensorboard.writer": redirect("log_dir"),
            "tensorboardX.writer": redirect("logdir"),
        })
        runtime.on_close(hook.install())

    # -- results ------------------------------------------------------------------------

    def _collect(self, partial: bool) -> RunResult:
        runtime = self.runtime
        result = self.result
        if runtime is not None:
            result.steps = runtime.step
            result.batches = runtime.batches
            result.saves = runtime.saves
            result.stop_reason = runtime.stop_reason
            result.stops_raised = runtime.stops_raised
            result.series = runtime.series()
        result.partial = partial
        result.fault_indices = [
            s.index for s in self.slots
            if s.index is not None and getattr(s.probe, "fault_injection", False)
        ]
        result.verdicts = {}
        result.runtime_findings = []
        result.probe_seconds = {
            (str(s.index) if s.index is not None else f"watch:{n}"): round(s.seconds, 6)
            for n, s in enumerate(self.slots)
        }
        for slot in self.slots:
            if slot.index is None:
                result.runtime_findings += self._watcher_findings(slot)
            else:
                verdict = self._verdict(slot)
                result.verdicts[str(slot.index)] = None if verdict is None else verdict.to_dict()
        result.notes += [slot.error for slot in self.slots
                         if slot.index is None and slot.error is not None]
        if result.stops_raised > 1:
            result.notes.append(
                f"the script caught mllint's stop signal {result.stops_raised - 1} time(s) "
                "(a bare `except:` or `except BaseException`); it was raised again at the "
                "next hook")
        return result

    def _verdict(self, slot: Slot) -> Verdict | None:
        if slot.error is None and slot.probe is not None:
            try:
                verdict = slot.probe.verdict()
            except Exception as exc:
                slot.fail("verdict()", exc)
            else:
                if verdict is None or isinstance(verdict, Verdict):
                    return verdict
                slot.error = f"{slot.label}: verdict() returned {type(verdict).__name__}"
        return Verdict(VerdictStatus.ERROR, slot.error or f"{slot.label}: not loaded")

    def _watcher_findings(self, slot: Slot) -> list[dict]:
        if slot.error is not None or slot.probe is None:
            return []
        try:
            found = list(slot.probe.findings())
            return [{"finding": f.to_dict(), "verdict": v.to_dict()} for f, v in found]
        except Exception as exc:
            slot.fail("findings()", exc)
            return []

    def _watchdog(self) -> None:
        delay = (self.spec.deadline or 0) - time.time()
        if delay > 0:
            time.sleep(delay)
        with self._write_lock:
            if not self._final_written:
                self._collect(partial=True).dump(self.spec.results)

    def _finish(self) -> None:
        if os.getpid() != self._pid:
            # A process the script forked ran on to the end of the script: only the
            # run's own process reports (DataLoader workers never get here).
            _leave(0)
        with self._write_lock:
            result = self._collect(partial=False)
            if self.runtime is not None:
                self.runtime.close()
            result.dump(self.spec.results)
            self._final_written = True
        self.events.emit({"type": "finished", "steps": result.steps,
                          "exit_code": result.exit_code})
        _leave(result.exit_code or 0)


def _chain_has(exc: BaseException | None, kind: type) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _leave(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code if 0 <= code < 256 else 1)


def run_child(spec_path: str) -> None:
    spec = RunSpec.load(spec_path)
    child = _Child(spec)
    try:
        child.run()
    except BaseException as exc:
        child.result.fatal = {
            "kind": Fatal.BOOTSTRAP,
            "message": "".join(traceback.format_exception(exc)).strip(),
        }
        child.result.dump(spec.results)
        _leave(EXIT_FATAL)
