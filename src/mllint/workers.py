"""Worker processes that lint one file at a time, so that no file can take the run down.

A worker that dies (a segfault in libcst's native parser, the out-of-memory killer) or
that runs past the per-file time budget is killed and replaced; its file is reported as
an error of kind ``crashed`` or ``timeout`` with the cause, and every other file is linted.
A worker holds at most two files at a time (the one it is on and the next, see
``WorkerPool``), never a chunk, so that the parent always knows which file a dead worker
was on.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator

from mllint.collector import batch_thresholds
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


def _serve(conn: Connection, check: Check, opts: Any,
           warm_up: Callable[[], object] | None = None) -> None:
    global _conn
    _conn = conn
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    batch_thresholds()
    if warm_up is not None:
        try:
            warm_up()
        except Exception:  # noqa: BLE001 - only a head start: the check imports what it needs
            pass
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
    #: Files sent and not answered yet, in the order the worker takes them: (index, path).
    #: The first is the one it is on; it dies or times out on that one.
    queue: deque = field(default_factory=deque)
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
    """Lints files in ``jobs`` worker processes.

    Each worker has up to ``depth`` files in hand: the one it is on and the next, so that
    it never waits for the parent between two files (most files take a few milliseconds,
    about what a round trip through the parent costs on a busy machine). Files still come
    back one result at a time, in the order sent, so the parent always knows which file a
    dead worker was on; the files queued behind it go to another worker.
    """

    def __init__(self, check: Check, opts: Any, jobs: int, budget: float | None,
                 depth: int = 2) -> None:
        self.check = check
        self.opts = opts
        self.jobs = max(1, jobs)
        self.budget = budget
        self.depth = max(1, depth)
        methods = multiprocessing.get_all_start_methods()
        # fork shares the parent's imports; workers pay for libcst only if a file needs it.
        self.ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._spare: list[_Worker] = []
        #: Files handed to a prestarted worker by ``submit_early``; they come first in ``run``.
        self.early = 0

    def _start(self, warm_up: Callable[[], object] | None = None) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_serve, args=(child, self.check, self.opts, warm_up),
                                   daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def prestart(self, warm_up: Callable[[], object] | None) -> None:
        """Start one worker now, running ``warm_up`` (importing libcst and the engine)
        while the parent is still finding files and answering cache hits: the first file
        that needs linting then finds a worker ready. ``run`` uses it first; ``close``
        kills it unused, without waiting for its imports."""
        self._spare.append(self._start(warm_up))

    def submit_early(self, path: str) -> bool:
        """Hand ``path`` to a prestarted worker now, if one has room, while the caller goes
        on finding files (a warm run's one changed file is then linted while this process
        answers the cache hits). ``run`` yields its result first. False: no room, pass it
        to ``run``."""
        for worker in self._spare:
            if len(worker.queue) < self.depth:
                self._send(worker, (self.early, path))
                self.early += 1
                return True
        return False

    def close(self) -> None:
        """Kill the prestarted workers ``run`` did not use."""
        while self._spare:
            self._spare.pop().stop(force=True)

    def _head_deadline(self) -> float:
        """When the file a worker has just begun must be done: the budget plus the setup
        allowance, until the worker says its own lint has started (``clock_starts``)."""
        return time.monotonic() + (self.budget + SETUP_ALLOWANCE if self.budget else float("inf"))

    def _send(self, worker: _Worker, item: tuple[int, str]) -> None:
        if not worker.queue:
            worker.deadline = self._head_deadline()
        worker.queue.append(item)
        try:
            worker.conn.send(item[1])
        except OSError:
            pass  # it died already: found when its sentinel is ready

    def run(self, paths: list[str],
            while_waiting: Callable[[], object] | None = None) -> Iterator[FileResult]:
        """Lint ``paths``; results come in the order of ``paths``, after those of the
        files ``submit_early`` handed out. ``while_waiting`` runs once, before the first
        wait for a worker (errors in it are ignored: it is only a head start)."""
        pending = deque(enumerate(paths, start=self.early))
        done: dict[int, FileResult] = {}
        # Workers that already hold files, first; prestarted idle ones wait in the spares.
        workers = [w for w in self._spare if w.queue]
        self._spare = [w for w in self._spare if not w.queue]
        emitted = 0
        try:
            while pending or any(w.queue for w in workers):
                wanted = min(self.jobs, len(pending) + sum(len(w.queue) for w in workers))
                while len(workers) < wanted:
                    workers.append(self._spare.pop() if self._spare else self._start())
                for level in range(1, self.depth + 1):  # one file each before a second
                    for worker in workers:
                        if pending and len(worker.queue) < level:
                            self._send(worker, pending.popleft())
                busy = [w for w in workers if w.queue]
                if while_waiting is not None:
                    try:
                        while_waiting()
                    except Exception:  # noqa: BLE001 - whoever needs it imports it again
                        pass
                    while_waiting = None
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                                 timeout=None if timeout == float("inf") else timeout))
                for worker in busy:
                    for index, result in self._collect(worker, ready, pending):
                        done[index] = result
                    if worker._closed:
                        workers.remove(worker)
                while emitted in done:
                    yield done.pop(emitted)
                    emitted += 1
        finally:
            for worker in workers:
                worker.stop(force=bool(worker.queue))

    def _collect(self, worker: _Worker, ready: set,
                 pending: deque) -> list[tuple[int, FileResult]]:
        """The results the worker has sent; an error for its current file if it died or ran
        out of time (the files queued behind that one go back to ``pending``)."""
        results: list[tuple[int, FileResult]] = []
        if worker.conn in ready or worker.process.sentinel in ready:
            try:
                while worker.queue and worker.conn.poll():
                    message = worker.conn.recv()
                    if message == _STARTED:
                        if self.budget:
                            worker.deadline = time.monotonic() + self.budget
                        continue
                    results.append((worker.queue.popleft()[0], message))
                    worker.deadline = self._head_deadline()
                if not worker.queue or worker.process.is_alive():
                    return results
            except (EOFError, OSError):
                pass
            worker.process.join()
            return results + [self._lost(worker, pending, ErrorKind.CRASHED,
                                         f"{death_cause(worker.process.exitcode)}; "
                                         "not linted, please report this")]
        if time.monotonic() >= worker.deadline:
            return results + [self._lost(
                worker, pending, ErrorKind.TIMEOUT,
                f"linting took longer than the {self.budget:g} s budget per file; stopped, "
                "not linted (raise `file-timeout` in [tool.mllint] or pass --file-timeout)")]
        return results

    @staticmethod
    def _lost(worker: _Worker, pending: deque, kind: ErrorKind,
              message: str) -> tuple[int, FileResult]:
        """Stop a worker that died or ran out of time on its current file: that file gets
        the error, the files queued behind it are handed out again."""
        worker.stop(force=True)
        index, path = worker.queue.popleft()
        pending.extendleft(reversed(worker.queue))
        worker.queue.clear()
        return index, FileResult(path, errors=(FileError(path, kind, message),))
