"""Running the child: a new session, progress events forwarded live, the group killed.

The child runs in its own session (``start_new_session``), so at the timeout, and after
a normal exit too, ``killpg`` ends the script together with its DataLoader workers and any
process it started. Events arrive as JSON lines on a pipe and are handed to ``emit`` in
the caller's thread while the child runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mllint.verify.errors import VerifyInterrupted


class EventPipe:
    """The pipe the child writes its events to (``write_fd`` goes into the spec)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()


@dataclass(frozen=True)
class Exit:
    returncode: int | None
    timed_out: bool
    #: The child reported that it was about to run the target (the bootstrap worked).
    started: bool
    seconds: float


def run(
    argv: list[str], *, cwd: str, env: Mapping[str, str], pipe: EventPipe, out_path: str,
    err_path: str, timeout: float, emit: Callable[[dict], None], passthrough: bool = False,
) -> Exit:
    """Run ``argv`` to its end or the timeout. Raises ``OSError`` if it cannot start.

    The child's output goes to ``out_path``/``err_path``, or with ``passthrough`` to our
    own stderr (``--show-output``; the files then stay empty)."""
    started = time.monotonic()
    _become_subreaper()
    known = _own_children()
    with open(out_path, "wb") as out, open(err_path, "wb") as err, _signals_interrupt():
        if passthrough:
            sys.stderr.flush()
            out = err = sys.stderr  # noqa: PLW2901 - the child writes to our stderr
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, pass_fds=(pipe.write_fd,), start_new_session=True,
            )
        except OSError:
            os.close(pipe.read_fd)
            raise
        finally:
            os.close(pipe.write_fd)
        reader = _EventReader(pipe.read_fd, emit)
        try:
            timed_out = _wait(proc, reader, started + timeout)
        finally:
            _kill_group(proc)
            _kill_orphans(known)
            reader.drain()
            reader.close()
    return Exit(proc.returncode, timed_out, reader.started, time.monotonic() - started)


def tail(path: str, chars: int = 4000) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - chars))
        return fh.read().decode("utf-8", errors="replace")


def _wait(proc: subprocess.Popen, reader: "_EventReader", deadline: float) -> bool:
    """Forward events until the child exits (True if the deadline came first)."""
    while True:
        if _exited(proc):
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        reader.pump(min(0.1, remaining))


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it: while it is an unreaped zombie
    its process-group id cannot be reused, so killing the group afterwards is safe."""
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == proc.pid


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM, SIGHUP and SIGINT raise ``VerifyInterrupted`` while the child runs (the
    caller's ``finally`` blocks then kill the tree and remove the temporary files)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise VerifyInterrupted(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, interrupt)
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _become_subreaper() -> None:
    """Linux: processes the script starts in a session of their own (so ``killpg`` misses
    them) are re-parented to us when their parent dies, so ``_kill_orphans`` finds them."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _own_children() -> set[int]:
    return {pid for pid, ppid in _process_table().items() if ppid == os.getpid()}


def _process_table() -> dict[int, int]:
    """pid -> parent pid, from /proc (empty where there is none)."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                table[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    return table


def _kill_orphans(known: set[int]) -> None:
    """Kill what the run left behind: our children that were not there before it (the
    re-parented descendants) and everything below them, then reap them."""
    table = _process_table()
    roots = {pid for pid, ppid in table.items() if ppid == os.getpid() and pid not in known}
    doomed, frontier = set(), set(roots)
    while frontier:
        doomed |= frontier
        frontier = {pid for pid, ppid in table.items() if ppid in frontier} - doomed
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in roots:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


class _EventReader:
    def __init__(self, fd: int, emit: Callable[[dict], None]) -> None:
        self._fd = fd
        self._emit = emit
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)
        self._open = True
        self.started = False

    def pump(self, timeout: float) -> None:
        if not self._open:
            time.sleep(timeout)
            return
        if self._selector.select(timeout):
            self._read_once()

    def drain(self) -> None:
        """What is left once the group is dead (no writer remains, so this ends)."""
        os.set_blocking(self._fd, False)
        while self._open:
            try:
                if not self._read_once():
                    break
            except BlockingIOError:
                break

    def _read_once(self) -> bool:
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self._open = False
            self._selector.unregister(self._fd)
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("type") == "started":
                self.started = True
            self._emit(event)
        return True

    def close(self) -> None:
        if self._open:
            self._selector.unregister(self._fd)
        self._selector.close()
        os.close(self._fd)
