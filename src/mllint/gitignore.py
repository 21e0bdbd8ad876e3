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

import pathspec


def _read(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
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
        self._trees: dict[Path, list[pathspec.GitIgnoreSpec]] = {}  # tree -> base specs
        self._dirs: dict[Path, pathspec.GitIgnoreSpec | None] = {}
        self._tree_of: dict[Path, Path | None] = {}
        self._global: pathspec.GitIgnoreSpec | None | bool = False

    def ignored(self, path: str | os.PathLike, is_dir: bool = False) -> bool:
        absolute = Path(os.path.abspath(path))
        tree = self._tree(absolute.parent)
        if tree is None or absolute == tree:
            return False
        rel = absolute.relative_to(tree)
        if rel.parts and rel.parts[0] == ".git":
            return True
        verdict = None
        # Lowest precedence first; a later source that matches overrides.
        sources = [(spec, tree) for spec in self._base(tree)]
        directory = tree
        for part in rel.parts[:-1]:
            sources.append((self._dir_spec(directory), directory))
            directory = directory / part
        sources.append((self._dir_spec(directory), directory))
        for spec, base in sources:
            if spec is None:
                continue
            sub = absolute.relative_to(base).as_posix() + ("/" if is_dir else "")
            result = spec.check_file(sub)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)

    def _tree(self, directory: Path) -> Path | None:
        if directory not in self._tree_of:
            self._tree_of[directory] = _work_tree(directory)
        return self._tree_of[directory]

    def _base(self, tree: Path) -> list[pathspec.GitIgnoreSpec]:
        if tree not in self._trees:
            if self._global is False:
                found = _global_excludes()
                self._global = _read(found) if found else None
            specs = [self._global, _read(tree / ".git" / "info" / "exclude")]
            self._trees[tree] = [s for s in specs if s is not None]
        return self._trees[tree]

    def _dir_spec(self, directory: Path) -> pathspec.GitIgnoreSpec | None:
        if directory not in self._dirs:
            self._dirs[directory] = _read(directory / ".gitignore")
        return self._dirs[directory]
