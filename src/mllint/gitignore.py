"""What git ignores: ``.gitignore`` files, ``.git/info/exclude`` and the global excludes file.

Read as git reads them, with ``pathspec``'s gitignore semantics: each ``.gitignore``
matches paths relative to its own directory, a deeper file overrides a shallower one,
within one source the last matching pattern wins (``!`` re-includes), and the global
file and ``info/exclude`` rank below every ``.gitignore``. Only inside a git work tree,
as ruff and git itself do: a ``.gitignore`` in a plain directory means nothing to git.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def _read(path: Path) -> Any:
    """The file's patterns as a ``pathspec.GitIgnoreSpec``; None when there are none."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    import pathspec  # only once some ignore file exists: it costs a run's start-up time

    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _work_tree(start: Path) -> Path | None:
    for directory in [start, *start.parents]:
        if (directory / ".git").exists():
            return directory
    return None


def _global_excludes() -> Path | None:
    """``core.excludesFile``, else git's default ``$XDG_CONFIG_HOME/git/ignore``."""
    try:
        proc = subprocess.run(["git", "config", "--path", "--get", "core.excludesFile"],
                              capture_output=True, text=True, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(os.path.expanduser(proc.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "git" / "ignore"


class GitIgnore:
    """Answers "does git ignore this path?" for paths under any number of work trees."""

    def __init__(self) -> None:
        #: directory -> the (spec, its base directory) that apply inside it, lowest
        #: precedence first; empty outside a work tree or where nothing applies.
        self._chains: dict[str, list[tuple[Any, str]] | None] = {}
        self._global: Any = False

    def ignored(self, path: str | os.PathLike, is_dir: bool = False) -> bool:
        absolute = os.path.abspath(path)
        chain = self._chain(os.path.dirname(absolute)) or ()
        verdict = None
        for spec, base in chain:
            rel = absolute[len(base):].lstrip(os.sep).replace(os.sep, "/")
            result = spec.check_file(rel + "/" if is_dir else rel)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)

    def _chain(self, directory: str) -> list[tuple[Any, str]] | None:
        """None outside a work tree."""
        if directory in self._chains:
            return self._chains[directory]
        chain: list[tuple[Any, str]] | None
        if os.path.exists(os.path.join(directory, ".git")):  # the work tree's top
            chain = [(spec, directory) for spec in self._base(directory)]
        else:
            parent = os.path.dirname(directory)
            up = None if parent == directory else self._chain(parent)
            chain = None if up is None else list(up)
        if chain is not None:
            own = _read(Path(directory) / ".gitignore")
            if own is not None:
                chain.append((own, directory))
        self._chains[directory] = chain
        return chain

    def _base(self, tree: str) -> list[Any]:
        if self._global is False:
            found = _global_excludes()
            self._global = _read(found) if found else None
        specs = [self._global, _read(Path(tree) / ".git" / "info" / "exclude")]
        return [s for s in specs if s is not None]
