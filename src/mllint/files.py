"""Which files a run lints: walking directories, skipping environments and build output."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Iterator

from mllint.config import Settings
from mllint.gitignore import GitIgnore
from mllint.types import ErrorKind, FileError

#: Directories that never hold the user's own training code.
DEFAULT_EXCLUDED_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".nox", ".eggs",
    "build", "dist", "node_modules", "site-packages", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", ".mllint_cache", ".ipynb_checkpoints",
})


#: What a directory walk lints: Python files and Jupyter notebooks (``mllint.notebook``).
LINTED_SUFFIXES = (".py", ".ipynb")


@dataclass(frozen=True)
class Target:
    path: str  # as given or joined from what was given: what the user sees


def _is_virtualenv(dirpath: str) -> bool:
    return os.path.isfile(os.path.join(dirpath, "pyvenv.cfg"))


def iter_targets(paths: list[str], settings: Settings) -> Iterator[Target | FileError]:
    """Files given by name are linted even when excluded (or ignored by git), unless
    ``force_exclude``; files found by walking a directory never are, as with ruff."""
    seen: set[str] = set()
    git = GitIgnore() if settings.respect_gitignore else None
    for given in paths:
        try:
            os.stat(given)  # follows links: a loop or a dangling link raises here
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                yield FileError(given, ErrorKind.SYMLINK_LOOP, "symbolic link loop; not linted")
            elif os.path.islink(given):
                yield FileError(given, ErrorKind.MISSING, "dangling symbolic link; not linted")
            elif exc.errno == errno.ENOENT:
                yield FileError(given, ErrorKind.MISSING, "no such file or directory")
            else:
                yield FileError(given, ErrorKind.UNREADABLE, f"cannot access: {exc.strerror}")
            continue
        if os.path.isdir(given):
            yield from _walk(given, settings, seen, git)
        elif not (settings.force_exclude and _skipped(given, settings, git)):
            real = os.path.realpath(given)
            if real not in seen:
                seen.add(real)
                yield Target(given)


def is_skipped(path: str, settings: Settings) -> bool:
    """Whether a walk would skip the file ``path`` (excluded, or ignored by git)."""
    return _skipped(path, settings, GitIgnore() if settings.respect_gitignore else None)


def _skipped(path: str, settings: Settings, git: GitIgnore | None, is_dir: bool = False) -> bool:
    if settings.is_excluded(path, is_dir):
        return True
    return git is not None and git.ignored(path, is_dir)


def _walk(top: str, settings: Settings, seen: set[str],
          git: GitIgnore | None) -> Iterator[Target | FileError]:
    errors: list[OSError] = []
    # followlinks=False: a symlinked directory is never entered, so links cannot loop.
    for dirpath, dirnames, filenames in os.walk(top, onerror=errors.append):
        real_dir = None  # resolved once per directory, and only if a file is linted
        dirnames[:] = sorted(
            d for d in dirnames
            if d not in DEFAULT_EXCLUDED_DIRS
            and not d.endswith(".egg-info")
            and not _is_virtualenv(os.path.join(dirpath, d))
            and not _skipped(os.path.join(dirpath, d), settings, git, is_dir=True)
        )
        for name in sorted(filenames):
            if not name.endswith(LINTED_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            if _skipped(path, settings, git):
                continue
            # The same file reached twice (a symlink to a file of the tree) is linted once.
            if os.path.islink(path):
                real = os.path.realpath(path)
            else:
                real_dir = real_dir or os.path.realpath(dirpath)
                real = os.path.join(real_dir, name)
            if real in seen:
                continue
            seen.add(real)
            yield Target(path)
        while errors:
            exc = errors.pop()
            yield FileError(exc.filename or top, ErrorKind.UNREADABLE,
                            f"cannot list directory: {exc.strerror}")
