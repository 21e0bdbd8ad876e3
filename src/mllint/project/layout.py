"""Where a project starts and which file an import statement names.

The project of a file is the nearest directory above it holding ``pyproject.toml``,
``setup.cfg``, ``setup.py`` or ``.git``; without one, the directory above its top
package. Imports are resolved on the filesystem the way the script would find them when
run: relative imports from the file's package, absolute ones from the script's own
directory, the project root and its ``src/`` folder. Nothing outside the project is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

ROOT_MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", ".git")
#: Directories never part of a project's own code.
SKIPPED_DIRS = frozenset({
    "__pycache__", "node_modules", "site-packages", "dist-packages", "build", "dist",
    "venv", "env", ".venv", ".env", ".tox", ".nox", ".mypy_cache", ".git",
})
#: A project larger than this is listed only this far: whole-project questions (who loads
#: this checkpoint?) then answer from the part seen, and a home directory mistaken for a
#: project costs a bounded walk.
MAX_LISTED_FILES = 20_000


def find_root(path: str | os.PathLike[str]) -> Path:
    start = Path(os.path.abspath(path)).parent
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in ROOT_MARKERS):
            return directory
    top = start
    while (top / "__init__.py").exists() and top.parent != top:
        top = top.parent
    return top


def python_files(root: Path, left_out: list[Path] | None = None) -> Iterator[Path]:
    """The project's Python files, in a stable order, at most ``MAX_LISTED_FILES``.
    ``left_out``, when given, receives the directories left out that an import may still
    reach: skipped ones named like a package (``build``), and symlinked ones (not
    followed)."""
    count = 0
    for directory, dirs, files in os.walk(root):
        if left_out is not None:
            left_out.extend(Path(directory, d) for d in dirs if d.isidentifier() and (
                d in SKIPPED_DIRS or os.path.islink(os.path.join(directory, d))))
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory, name)
                count += 1
                if count >= MAX_LISTED_FILES:
                    return


def resolve_module(root: Path, importer: Path, module: str, level: int = 0) -> Path | None:
    """The file of ``module`` (``from ..a.b import c`` is ``module="a.b", level=2``) as
    imported from ``importer``, if it is a file of the project."""
    parts = [p for p in module.split(".") if p]
    if level:
        base = importer.parent
        for _ in range(level - 1):
            base = base.parent
        bases = [base]
    else:
        bases = [importer.parent, root, root / "src"]
        # A script in ``tools/`` importing ``mypkg.x`` run from the root: the ancestors.
        bases += [d for d in importer.parent.parents if _inside(d, root)]
    seen: set[Path] = set()
    for base in bases:
        if base in seen or not _inside(base, root):
            continue
        seen.add(base)
        found = _module_file(base, parts)
        if found is not None:
            return found
    return None


def _module_file(base: Path, parts: list[str]) -> Path | None:
    if not parts:
        init = base / "__init__.py"
        return init if init.is_file() else None
    target = base.joinpath(*parts)
    for candidate in (target.with_name(target.name + ".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
