"""``[tool.mllint]`` in ``pyproject.toml``, found by walking up from the linted paths."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from mllint.source import DEFAULT_MAX_BYTES

KNOWN_KEYS = {
    "select", "ignore", "extend-select", "per-file-ignores", "exclude", "extend-exclude",
    "max-file-size", "cache-dir", "respect-gitignore", "force-exclude",
}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    root: Path
    config_file: Path | None = None
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    per_file_ignores: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    max_file_size: int = DEFAULT_MAX_BYTES
    cache_dir: Path | None = None
    #: Skip what git ignores (``.gitignore`` files, ``.git/info/exclude``, the global
    #: excludes file) when walking directories, as ruff does.
    respect_gitignore: bool = True
    #: Apply ``exclude`` and ``.gitignore`` to files passed by name too (pre-commit,
    #: editors pass every file by name).
    force_exclude: bool = False

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the config root, in POSIX form, for pattern matching."""
        p = Path(os.path.abspath(path))
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()

    def is_excluded(self, path: str | os.PathLike, is_dir: bool = False) -> bool:
        rel = self.relative(path)
        return matches_any(rel + "/" if is_dir else rel, self.exclude)

    def ignored_codes(self, path: str | os.PathLike) -> set[str]:
        rel = self.relative(path)
        out: set[str] = set()
        for pattern, codes in self.per_file_ignores.items():
            if matches_any(rel, (pattern,)):
                out.update(codes)
        return out


def matches_any(rel: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``rel`` (POSIX, relative to the config root; a directory ends in ``/``)
    matches the patterns, with gitignore semantics (``pathspec``): ``dir/`` matches a
    directory and everything under it, a pattern without a ``/`` matches at any depth,
    ``*`` stops at ``/`` and ``**`` crosses it, a later ``!pattern`` re-includes."""
    return bool(patterns) and _spec(tuple(patterns)).match_file(rel)


@functools.lru_cache(maxsize=64)
def _spec(patterns: tuple[str, ...]) -> Any:
    import pathspec  # only when there are patterns: it costs a run's start-up time

    lines = []
    for raw in patterns:
        pattern = raw.strip()
        while pattern.startswith("./"):  # "./.github/" means ".github/" at the root
            pattern = "/" + pattern[2:].lstrip("/") if pattern[2:] else ""
        lines.append(pattern)
    return pathspec.GitIgnoreSpec.from_lines(lines)


def find_config(paths: list[str]) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.mllint]`` table above the paths."""
    starts = [Path(os.path.abspath(p)) for p in paths] or [Path.cwd()]
    common = Path(os.path.commonpath([str(s) for s in starts]))
    if common.is_file() or not common.exists():
        common = common.parent
    for directory in [common, *common.parents]:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if "mllint" in data.get("tool", {}):
                return candidate
    return None


def load_settings(paths: list[str], config: str | None = None) -> Settings:
    file = Path(config) if config else find_config(paths)
    if file is None:
        return Settings(root=Path.cwd())
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    table = data.get("tool", {}).get("mllint", {})
    return settings_from_table(table, file)


def settings_from_table(table: Mapping[str, Any], file: Path) -> Settings:
    unknown = set(table) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) in [tool.mllint]: {', '.join(sorted(unknown))}")

    def str_list(key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{file}: [tool.mllint] {key} must be a list of strings")
        return tuple(value)

    pfi = table.get("per-file-ignores", {})
    if not isinstance(pfi, dict):
        raise ConfigError(f"{file}: [tool.mllint] per-file-ignores must be a table")
    per_file = {}
    for pattern, codes in pfi.items():
        if isinstance(codes, str):
            codes = [codes]
        per_file[pattern] = tuple(c.upper() for c in codes)
    size = table.get("max-file-size", DEFAULT_MAX_BYTES)
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"{file}: [tool.mllint] max-file-size must be a positive integer (bytes)")
    root = file.parent.resolve()
    cache_dir = table.get("cache-dir")
    select = str_list("select") + str_list("extend-select") if "select" in table else ()
    flags = {}
    for key in ("respect-gitignore", "force-exclude"):
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(f"{file}: [tool.mllint] {key} must be true or false")
            flags[key.replace("-", "_")] = table[key]
    return Settings(
        root=root,
        config_file=file,
        select=select,
        ignore=str_list("ignore"),
        per_file_ignores=per_file,
        exclude=str_list("exclude") + str_list("extend-exclude"),
        max_file_size=size,
        cache_dir=None if cache_dir is None else root / cache_dir,
        **flags,
    )
