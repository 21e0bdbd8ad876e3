"""``[tool.mllint]`` in ``pyproject.toml``, found by walking up from the linted paths."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from mllint.source import DEFAULT_MAX_BYTES

#: A file that takes longer than this to lint is pathological (hand-written training code
#: lints in well under a second); it is reported instead of holding up the whole run.
DEFAULT_FILE_TIMEOUT = 120.0

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
    #: Seconds one file may take before it is reported instead of linted (``None``: no limit).
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT
    #: Skip what git ignores (``.gitignore`` files, ``.git/info/exclude``, the global
    #: excludes file) when walking directories, as ruff does.
    respect_gitignore: bool = True
    #: Apply ``exclude`` and ``.gitignore`` to files passed by name too (pre-commit,
    #: editors pass every file by name).
    force_exclude: bool = False

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the config root, in POSIX form, for pattern matching."""
        # String operations, not pathlib: this runs for every file and directory walked.
        full = os.path.abspath(path)
        root = os.fspath(self.root)
        if full == root:
            return "."
        prefix = root if root.endswith(os.sep) else root + os.sep
        rel = full[len(prefix):] if full.startswith(prefix) else full
        return rel if os.sep == "/" else rel.replace(os.sep, "/")

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
    """The nearest ``pyproject.toml`` with a ``[tool.mllint]`` table above the paths.

    A ``pyproject.toml`` on the way that cannot be read is an error, not skipped: it may be
    the one meant to configure this run, and skipping it would silently lose its settings.
    """
    starts = [Path(os.path.abspath(p)) for p in paths] or [Path.cwd()]
    common = Path(os.path.commonpath([str(s) for s in starts]))
    if common.is_file() or not common.exists():
        common = common.parent
    for directory in [common, *common.parents]:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            tool = _read_toml(candidate).get("tool")
            if isinstance(tool, dict) and "mllint" in tool:
                return candidate
    return None


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}); TOML files must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None


def load_settings(paths: list[str], config: str | None = None) -> Settings:
    file = Path(config) if config else find_config(paths)
    if file is None:
        return Settings(root=Path.cwd())
    data = _read_toml(file)
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{file}: [tool] must be a table, not {_type_name(tool)}")
    table = tool.get("mllint", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [tool.mllint] must be a table, not {_type_name(table)}")
    return settings_from_table(table, file)


# -- the schema ------------------------------------------------------------------------
#
# Every key of [tool.mllint], the type of its value in words, and the test of it: one
# table, so that every key is checked alike and an error always names file, key and type.

def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_codes_table(v: object) -> bool:
    return isinstance(v, dict) and all(isinstance(c, str) or _is_str_list(c) for c in v.values())


def _is_positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_positive_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")


_STR_LIST = ("a list of strings", _is_str_list)
SCHEMA: dict[str, tuple[str, Callable[[object], bool]]] = {
    "select": _STR_LIST,
    "extend-select": _STR_LIST,
    "ignore": _STR_LIST,
    "exclude": _STR_LIST,
    "extend-exclude": _STR_LIST,
    "per-file-ignores": ("a table of glob patterns to lists of rule codes", _is_codes_table),
    "max-file-size": ("a positive integer (bytes)", _is_positive_int),
    "cache-dir": ("a string (a directory path)", lambda v: isinstance(v, str) and v != ""),
    "file-timeout": ("a positive number (seconds)", _is_positive_number),
    "respect-gitignore": ("true or false", lambda v: isinstance(v, bool)),
    "force-exclude": ("true or false", lambda v: isinstance(v, bool)),
}


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def validate(table: Mapping[str, Any], file: Path) -> None:
    """Raise ``ConfigError`` naming the file, the key and the expected type."""
    unknown = sorted(set(table) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) in [tool.mllint]: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(SCHEMA))})")
    for key, value in table.items():
        expected, ok = SCHEMA[key]
        if not ok(value):
            if key == "per-file-ignores" and isinstance(value, dict):
                bad = next(k for k, c in value.items() if not (isinstance(c, str) or _is_str_list(c)))
                raise ConfigError(f"{file}: [tool.mllint.per-file-ignores] {bad!r} must be a "
                                  f"list of rule codes, not {_type_name(value[bad])}")
            raise ConfigError(f"{file}: [tool.mllint] {key} must be {expected}, "
                              f"not {_type_name(value)}")


def settings_from_table(table: Mapping[str, Any], file: Path) -> Settings:
    validate(table, file)
    per_file = {}
    for pattern, codes in table.get("per-file-ignores", {}).items():
        if isinstance(codes, str):
            codes = [codes]
        per_file[pattern] = tuple(c.strip().upper() for c in codes)
    root = file.parent.resolve()
    cache_dir = table.get("cache-dir")
    select = (*table["select"], *table.get("extend-select", ())) if "select" in table else ()
    flags = {key.replace("-", "_"): table[key]
             for key in ("respect-gitignore", "force-exclude") if key in table}
    return Settings(
        root=root,
        config_file=file,
        select=tuple(select),
        ignore=tuple(table.get("ignore", ())),
        per_file_ignores=per_file,
        exclude=(*table.get("exclude", ()), *table.get("extend-exclude", ())),
        max_file_size=table.get("max-file-size", DEFAULT_MAX_BYTES),
        cache_dir=None if cache_dir is None else root / cache_dir,
        file_timeout=float(table.get("file-timeout", DEFAULT_FILE_TIMEOUT)),
        **flags,
    )


def resolve_rule_codes(settings: Settings, rules: Sequence[Any]) -> Settings:
    """Every code in ``per-file-ignores`` must name a rule (a code, a code prefix or a rule
    name, as ``--select`` takes them): a typo would otherwise suppress nothing, silently."""
    codes = {r.code for r in rules}
    names = {r.name.upper(): r.code for r in rules}
    resolved: dict[str, tuple[str, ...]] = {}
    for pattern, entries in settings.per_file_ignores.items():
        out = []
        for entry in entries:
            if entry in names:
                out.append(names[entry])
            elif entry == "ALL" or any(c.startswith(entry) for c in codes):
                out.append("" if entry == "ALL" else entry)
            else:
                raise ConfigError(
                    f"{settings.config_file}: [tool.mllint.per-file-ignores] {pattern!r}: "
                    f"unknown rule code {entry!r} (see `mllint rules`)")
        resolved[pattern] = tuple(out)
    return replace(settings, per_file_ignores=resolved)
