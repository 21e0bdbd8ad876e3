"""What the parent process needs to know of the rules without importing them.

Importing the rules means importing libcst (about 0.25 s of CPU), which a run does not
need when no file passes a prefilter or every result is cached: the pre-commit case of a
few changed files. The codes, names and prefilters are read from a small manifest, made
by importing the rules once and stored per mllint version and rules-package fingerprint
(best effort: without a writable cache directory, the rules are imported every time).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mllint import __version__
from mllint.prefilter import Requirement, matches, normalize


@dataclass(frozen=True)
class RuleInfo:
    code: str
    name: str
    requires: tuple[Requirement, ...]
    gate: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires", normalize(self.requires))

    def may_match(self, text: str, memo: dict[str, bool] | None = None) -> bool:
        return matches(self.requires, text, memo)


def _rules_dir() -> Path:
    spec = importlib.util.find_spec("mllint.rules")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _fingerprint(directory: Path) -> str:
    """Version plus the rule modules' and mllint's own modules' sizes and times: a
    prefilter may be built from constants of an analysis module, and an editable
    install changes files without changing the version."""
    h = hashlib.blake2b(__version__.encode(), digest_size=12)
    own = Path(__file__).resolve().parent
    # The gates decide which files are linted at all: a cached "nothing to check" must
    # not outlive a change to them.
    for folder in (directory, own, own / "gates", own / "project"):
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                st = entry.stat()
                h.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def code_fingerprint() -> str:
    """Changes whenever mllint's code or rules may have changed (see ``_fingerprint``)."""
    return _fingerprint(_rules_dir())


def _manifest_path(directory: Path) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mllint" / f"rules-{_fingerprint(directory)}.json"


def _from_rules() -> tuple[RuleInfo, ...]:
    from mllint.registry import all_rules

    return tuple(RuleInfo(r.code, r.name, tuple(r.REQUIRES), r.GATE) for r in all_rules())


@functools.lru_cache(maxsize=1)
def rule_infos() -> tuple[RuleInfo, ...]:
    try:
        path = _manifest_path(_rules_dir())
    except OSError:
        return _from_rules()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return tuple(RuleInfo(r["code"], r["name"], tuple(r["requires"]), r["gate"]) for r in raw)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    infos = _from_rules()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump([{"code": i.code, "name": i.name, "requires": list(i.requires),
                        "gate": i.gate} for i in infos], fh)
        os.replace(tmp, path)
    except OSError:
        pass
    return infos
