"""Worker processes that lint one file at a time, so that no file can take the run down.

A worker that dies (a segfault in libcst's native parser, the out-of-memory killer) or
that runs past the per-file time budget is killed and replaced; its file is reported as
an error of kind ``crashed`` or ``timeout`` with the cause, and every other file is linted.
Files are handed out one at a time (not in chunks) so that the parent always knows which
file a dead worker was on.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator

from mllint.types import ErrorKind, FileError, FileResult

Check = Callable[[str, Any], FileResult]

#: What a worker sends when the costly part of a file begins (see ``clock_starts``).
_STARTED = "started"
#: Time a file may take before ``clock_starts``: reading, prefiltering and, in a fresh
#: worker, importing libcst and the rules (a second or more on a busy machine) do not
#: count against the budget, which is about the file's own cost.
SETUP_ALLOWANCE = 30.0
_conn: Connection | None = None


def clock_starts() -> None:
    """Called by the check, in a worker, when the file's own lint begins (after imports):
    the time budget counts from here."""
    if _conn is not None:
        _conn.send(_STARTED)


def _serve(conn: Connection, check: Check, opts: Any) -> None:
    global _conn
    _conn = conn
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        try:
            result = check(path, opts)
        except BaseException as exc:  # noqa: BLE001 - the file is reported, the worker lives on
            result = FileResult(path, errors=(FileError(
                path, ErrorKind.INTERNAL,
                f"linting failed: {type(exc).__name__}: {exc}; please report this"),))
        conn.send(result)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    path: str | None = None
    index: int = -1
    deadline: float = 0.0
    _closed: bool = field(default=False, repr=False)

    def stop(self, *, force: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if not force:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                force = True
        if force and self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=None if force else 5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def death_cause(exitcode: int | None) -> str:
    """Why a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {
            "SIGSEGV": " (a crash in libcst's native parser, typically on very long or deeply "
                       "nested expressions)",
            "SIGKILL": " (killed from outside, often by the out-of-memory killer)",
        }.get(name, "")
        return f"the process linting this file died of {name}{hint}"
    return f"the process linting this file exited unexpectedly (status {exitcode})"


class WorkerPool:
    def __init__(self, check: Check, opts: Any, jobs: int, budget: float | None) -> None:
        self.check = check
        self.opts = opts
        self.jobs = max(1, jobs)
        self.budget = budget
        methods = multiprocessing.get_all_start_methods()
        # fork shares the parent's imports; workers pay for libcst only if a file needs it.
        self.ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_serve, args=(child, self.check, self.opts), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, paths: list[str]) -> Iterator[FileResult]:
        """Lint ``paths``; results come in the order of ``paths``."""
        pending = deque(enumerate(paths))
        done: dict[int, FileResult] = {}
        idle: list[_Worker] = []
        busy: list[_Worker] = []
        emitted = 0
        try:
            while pending or busy:
                while pending and len(busy) < self.jobs:
                    worker = idle.pop() if idle else self._start()
                    worker.index, worker.path = pending.popleft()
                    worker.deadline = time.monotonic() + (
                        self.budget + SETUP_ALLOWANCE if self.budget else float("inf"))
                    try:
                        worker.conn.send(worker.path)
                    except OSError:
                        pass  # it died already: found below
                    busy.append(worker)
                now = time.monotonic()
                timeout = max(0.0, min(w.deadline for w in busy) - now)
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                                 timeout=None if timeout == float("inf") else timeout))
                for worker in list(busy):
                    result = self._collect(worker, ready)
                    if result is None:
                        continue
                    busy.remove(worker)
                    done[worker.index] = result
                    if worker._closed:
                        continue
                    idle.append(worker)
                while emitted in done:
                    yield done.pop(emitted)
                    emitted += 1
        finally:
            for worker in idle + busy:
                worker.stop(force=worker in busy)

    def _collect(self, worker: _Worker, ready: set) -> FileResult | None:
        """The worker's result, an error if it died or ran out of time, else ``None``."""
        path = worker.path
        assert path is not None
        if worker.conn in ready or worker.process.sentinel in ready:
            try:
                while worker.conn.poll():
                    message = worker.conn.recv()
                    if message != _STARTED:
                        return message
                    if self.budget:
                        worker.deadline = time.monotonic() + self.budget
                if worker.process.is_alive():
                    return None
            except (EOFError, OSError):
                pass
            worker.process.join()
            cause = death_cause(worker.process.exitcode)
            worker.stop(force=True)
            return FileResult(path, errors=(FileError(
                path, ErrorKind.CRASHED, f"{cause}; not linted, please report this"),))
        if time.monotonic() >= worker.deadline:
            worker.stop(force=True)
            return FileResult(path, errors=(FileError(
                path, ErrorKind.TIMEOUT,
                f"linting took longer than the {self.budget:g} s budget per file; stopped, "
                "not linted (raise `file-timeout` in [tool.mllint] or pass --file-timeout)"),))
        return None
