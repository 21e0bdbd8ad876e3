"""Copy-on-write for the files of a ``--verify`` run (note "verify-safety" in ``sandbox``).

Writes the script makes inside the project (its working directory and the script's own
directory) or to any existing regular file go to a scratch copy instead; later reads in
the same run see the copy, deletions and renames only hide or move copies, and the
scratch area is deleted with the run. The user's files stay byte-identical.

Two layers:

- **OS overlay** (Linux, when mount and user namespaces allow it; see ``overlay_argv``):
  the child starts in a private mount namespace with an overlayfs mounted over the
  project directory, its upper layer in the scratch area. Every write inside the project
  lands there, from Python, C extensions or subprocesses alike.
- **Python layer** (always; the only one elsewhere): ``open``/``io.open``, ``os.open``,
  ``os.remove``/``unlink``/``rename``/``replace``/``mkdir``/``makedirs``/``rmdir``,
  ``os.stat``/``lstat`` (so ``os.path.exists`` sees the run's view), ``shutil.rmtree`` and
  (through the save guard) ``torch.save``/``torch.load`` are redirected. ``pathlib``,
  ``shutil.copy``/``move``, ``np.save``/``np.load``, ``pickle``, PIL and most loggers go
  through these.

What can still escape the Python layer alone (no overlay): writes by C/C++/Rust code that
opens paths itself (``safetensors``, ``cv2.imwrite``, ``h5py``, sqlite, ``torch.jit.save``),
by subprocesses, through file descriptors the script did not get from ``open``/``os.open``
(``os.fdopen`` of an inherited descriptor), ``os.link``/``os.symlink``, and
``os.chown``; ``chmod``/``utime``/``truncate`` are applied to the run's copy. Directory listings (``os.listdir``,
``os.scandir``, ``glob``) show the original tree. Outside the project, new files are
created for real (only existing files are protected), as are writes under ``/dev``,
``/proc``, ``/sys`` and the system temporary directory.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import threading
from typing import Any, Callable

#: ``os.open`` flags that may change a file.
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_SYSTEM = ("/dev/", "/proc/", "/sys/")


class CopyOnWrite:
    def __init__(self, roots: list[str], scratch: str) -> None:
        self.roots = tuple(os.path.realpath(r).rstrip(os.sep) + os.sep for r in roots)
        self.scratch = os.path.realpath(scratch)
        self._tmp = os.path.realpath(tempfile.gettempdir()).rstrip(os.sep) + os.sep
        #: real path -> its copy in the scratch area
        self.copies: dict[str, str] = {}
        #: real paths deleted (or moved away) during the run
        self.deleted: set[str] = set()
        self._busy = threading.local()
        # Originals, bound before any patch goes in.
        self._open = io.open
        self._os_open = os.open
        self._stat = os.stat
        self._lstat = os.lstat
        self._remove = os.remove
        self._rename = os.rename
        self._replace = os.replace
        self._mkdir = os.mkdir
        self._rmdir = os.rmdir
        self._rmtree = shutil.rmtree
        self._makedirs = os.makedirs

    # -- decisions ----------------------------------------------------------------------

    def _real(self, path: Any, dir_fd: int | None = None) -> str | None:
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return None  # an int file descriptor
        if dir_fd is not None and not os.path.isabs(text):
            text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
        # ``realpath`` calls ``os.lstat``: those inner calls must see the disk.
        outer = getattr(self._busy, "active", False)
        self._busy.active = True
        try:
            return os.path.realpath(text)
        finally:
            self._busy.active = outer

    def protected(self, real: str) -> bool:
        """Writes to ``real`` must go to a copy: inside the project, or an existing file."""
        if real.startswith(self.scratch + os.sep) or real.startswith(_SYSTEM):
            return False
        if (real + os.sep).startswith(self.roots):
            return True
        if real.startswith(self._tmp):
            return False
        return os.path.isfile(real) and real not in self.deleted

    def _copy_path(self, real: str) -> str:
        return os.path.join(self.scratch, "files", real.lstrip(os.sep))

    def view(self, real: str) -> str:
        """Where the run sees ``real``: its copy, or the original."""
        copy = self.copies.get(real)
        if copy is not None:
            return copy
        if real in self.deleted:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory (deleted "
                                    "during the --verify run)", real)
        return real

    def _writable_copy(self, real: str, keep_content: bool) -> str:
        copy = self.copies.get(real)
        if copy is None:
            copy = self._copy_path(real)
            self._makedirs(os.path.dirname(copy), exist_ok=True)
            if keep_content and real not in self.deleted and os.path.isfile(real):
                shutil.copyfile(real, copy)
            self.copies[real] = copy
            self.deleted.discard(real)
        return copy

    # -- the patched functions ----------------------------------------------------------

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int) or not (self.copies or self.deleted or _writes(mode)):
            return self._open(file, mode, *args, **kwargs)  # the common case: a read
        real = self._real(file)
        if real is None:
            return self._open(file, mode, *args, **kwargs)
        if _writes(mode) and self.protected(real):
            if "x" in mode and (real in self.copies or (
                    real not in self.deleted and os.path.exists(real))):
                raise FileExistsError(errno.EEXIST, "File exists", os.fspath(file))
            keep = not ("w" in mode or "x" in mode)
            return self._open(self._writable_copy(real, keep), mode.replace("x", "w"),
                              *args, **kwargs)
        if real in self.copies or real in self.deleted:
            return self._open(self.view(real), mode, *args, **kwargs)
        return self._open(file, mode, *args, **kwargs)

    def os_open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        real = self._real(path, dir_fd)
        if real is None:
            return self._os_open(path, flags, mode, dir_fd=dir_fd)
        if flags & _WRITE_FLAGS and self.protected(real):
            if flags & os.O_EXCL and (real in self.copies or os.path.exists(real)):
                raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path))
            keep = not flags & os.O_TRUNC
            copy = self._writable_copy(real, keep)
            return self._os_open(copy, flags & ~os.O_EXCL, mode)
        if real in self.copies or real in self.deleted:
            return self._os_open(self.view(real), flags, mode)
        return self._os_open(path, flags, mode, dir_fd=dir_fd)

    def _metadata(self, original: Callable) -> Callable:
        """``chmod``/``utime``/``truncate`` of a path: applied to the run's copy."""

        def change(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, int) or kwargs.get("dir_fd") is not None:
                return original(path, *args, **kwargs)
            real = self._real(path)
            if real is not None and (real in self.copies or self.protected(real)):
                path = self._writable_copy(real, keep_content=True)
            return original(path, *args, **kwargs)

        return change

    def stat(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        return self._stat_view(self._stat, path, args, kwargs)

    def lstat(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        return self._stat_view(self._lstat, path, args, kwargs)

    def _stat_view(self, original: Callable, path: Any, args: tuple, kwargs: dict) -> Any:
        # ``realpath`` itself calls ``os.lstat``: the inner calls see the disk.
        if (getattr(self._busy, "active", False) or not (self.copies or self.deleted)
                or isinstance(path, int) or args or kwargs.get("dir_fd") is not None):
            return original(path, *args, **kwargs)
        real = self._real(path)
        if real is not None and (real in self.copies or real in self.deleted):
            return original(self.view(real))
        return original(path, *args, **kwargs)

    def remove(self, path: Any, *, dir_fd: Any = None) -> None:
        real = self._real(path, dir_fd)
        if real is None or not self.protected(real) and real not in self.copies:
            return self._remove(path, dir_fd=dir_fd)
        self.view(real)  # FileNotFoundError when already gone
        if real in self.copies:
            self._remove(self.copies.pop(real))
        if os.path.lexists(real):
            self.deleted.add(real)

    def rename(self, src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
        real_src, real_dst = self._real(src, src_dir_fd), self._real(dst, dst_dir_fd)
        if real_src is None or real_dst is None or not (
            self.protected(real_src) or self.protected(real_dst)
            or real_src in self.copies or real_src in self.deleted
        ):
            return self._replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        source = self.view(real_src)
        if os.path.isdir(source):
            target = self._writable_dir(real_dst)
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target = self._writable_copy(real_dst, keep_content=False)
            if source == real_src and not self.protected(real_src):
                self._replace(source, target)  # a temporary file of the script's own
                return
            shutil.copyfile(source, target)
        self.remove(src, dir_fd=src_dir_fd) if not os.path.isdir(source) else self._hide(real_src)

    def _hide(self, real: str) -> None:
        self.copies.pop(real, None)
        self.deleted.add(real)

    def _writable_dir(self, real: str) -> str:
        copy = self._copy_path(real)
        self._makedirs(copy, exist_ok=True)
        self.copies[real] = copy
        self.deleted.discard(real)
        return copy

    def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: Any = None) -> None:
        real = self._real(path, dir_fd)
        if real is None or not (real + os.sep).startswith(self.roots):
            return self._mkdir(path, mode, dir_fd=dir_fd)
        exists = real in self.copies or (real not in self.deleted and os.path.isdir(real))
        if exists or (real not in self.deleted and os.path.exists(real)):
            raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path))
        self._writable_dir(real)

    def makedirs(self, name: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        real = self._real(name)
        if real is None or not (real + os.sep).startswith(self.roots):
            return self._makedirs(name, mode, exist_ok)
        if real in self.copies or (real not in self.deleted and os.path.isdir(real)):
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, "File exists", os.fspath(name))
            return None
        self._writable_dir(real)
        return None

    def rmdir(self, path: Any, *, dir_fd: Any = None) -> None:
        real = self._real(path, dir_fd)
        if real is None or not self.protected_dir(real):
            return self._rmdir(path, dir_fd=dir_fd)
        self.view(real)
        self._hide(real)

    def rmtree(self, path: Any, *args: Any, **kwargs: Any) -> None:
        real = self._real(path)
        if real is None or not self.protected_dir(real):
            return self._rmtree(path, *args, **kwargs)
        self.view(real)
        self._hide(real)

    def protected_dir(self, real: str) -> bool:
        return (real + os.sep).startswith(self.roots) or real in self.copies

    # -- helpers for the torch.save guard ------------------------------------------------

    def capture(self, path: Any) -> str:
        """Where a ``torch.save`` to ``path`` goes: always a copy in the scratch area."""
        real = self._real(path) or os.fspath(path)
        return self._writable_copy(real, keep_content=False)

    def read_bytes(self, real: str) -> bytes | None:
        """The run's view of ``real`` when it differs from the disk (copied or deleted)."""
        if real not in self.copies and real not in self.deleted:
            return None
        with self._open(self.view(real), "rb") as fh:
            return fh.read()

    # -- installing ----------------------------------------------------------------------

    def install(self, patch: Callable[[Any, str, Any], None]) -> None:
        import builtins

        patch(builtins, "open", self.open)
        patch(io, "open", self.open)
        for name, fn in (("open", self.os_open), ("stat", self.stat), ("lstat", self.lstat),
                         ("remove", self.remove), ("unlink", self.remove),
                         ("rename", self.rename), ("replace", self.rename),
                         ("mkdir", self.mkdir), ("makedirs", self.makedirs),
                         ("rmdir", self.rmdir)):
            patch(os, name, fn)
        patch(shutil, "rmtree", self.rmtree)
        for name in ("chmod", "utime", "truncate"):
            patch(os, name, self._metadata(getattr(os, name)))


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def overlay_argv(project: str, scratch: str, argv: list[str]) -> list[str] | None:
    """``argv`` wrapped so that it runs with an overlay over ``project`` (writes land in
    ``scratch``), or None when this machine cannot (not Linux, no ``unshare``/``mount``,
    or the kernel refuses; the wrapper falls back to running ``argv`` as it is and says so
    in ``MLLINT_OVERLAY``)."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if not sys_is_linux() or unshare is None or mount is None:
        return None
    upper, work = os.path.join(scratch, "overlay-upper"), os.path.join(scratch, "overlay-work")
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    options = f"lowerdir={project},upperdir={upper},workdir={work}"
    # After the mount, ``cd`` again: the process entered the directory below the overlay.
    script = ('if mount -t overlay mllint-verify -o "$1" "$2" 2>/dev/null && cd "$2"; then '
              'export MLLINT_OVERLAY=1; else export MLLINT_OVERLAY=0; fi; shift 2; exec "$@"')
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    prefix = [unshare, "--mount", "--propagation", "private", *user]
    try:  # the namespace itself may be refused (containers, hardened kernels)
        import subprocess

        subprocess.run([*prefix, "true"], check=True, timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return [*prefix, "sh", "-c", script, "mllint-overlay", options, project, *argv]


def sys_is_linux() -> bool:
    return os.uname().sysname == "Linux" if hasattr(os, "uname") else False

