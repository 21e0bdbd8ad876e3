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
import re
from dataclasses import dataclass
from pathlib import Path

from mllint import __version__
from mllint.cache import read_signed, user_cache_dir, user_secret, write_signed
from mllint.prefilter import Requirement, matches, normalize

_CODE_RE = re.compile(r"^ML\d{3}$")
_MODULE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class RuleInfo:
    code: str
    name: str
    requires: tuple[Requirement, ...]
    gate: str | None = None
    #: The module of ``mllint.rules`` that defines the rule, so that a worker imports
    #: only the rules a file needs (``registry.rule_classes``).
    module: str = ""

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
    folders = [directory, own] + sorted(
        Path(root) / name
        for root, dirs, _ in os.walk(own)
        for name in dirs
        if name != "__pycache__"
    )
    for folder in folders:
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
    return user_cache_dir() / f"rules-{_fingerprint(directory)}.json"


def _from_rules() -> tuple[RuleInfo, ...]:
    from mllint.registry import all_rules

    return tuple(RuleInfo(r.code, r.name, tuple(r.REQUIRES), r.GATE,
                          r.__module__.rpartition(".")[2]) for r in all_rules())


def _is_requirement(r: object) -> bool:
    return isinstance(r, str) or (
        isinstance(r, list) and bool(r) and all(isinstance(x, str) for x in r))


def _parse(raw: object) -> tuple[RuleInfo, ...]:
    """The manifest's rules; raises on anything but what ``rule_infos`` writes. (Every rule
    has a code, a name and at least one prefilter entry; an empty list is not a manifest.)"""
    if not isinstance(raw, list) or not raw:
        raise ValueError("not a rule list")
    infos = []
    for r in raw:
        if not (isinstance(r, dict) and set(r) == {"code", "name", "requires", "gate", "module"}
                and isinstance(r["code"], str) and _CODE_RE.match(r["code"])
                and isinstance(r["name"], str) and r["name"]
                and isinstance(r["requires"], list) and r["requires"]
                and all(_is_requirement(x) for x in r["requires"])
                and (r["gate"] is None or isinstance(r["gate"], str))
                and isinstance(r["module"], str) and _MODULE_RE.match(r["module"])):
            raise ValueError("bad rule entry")
        infos.append(RuleInfo(r["code"], r["name"], tuple(r["requires"]), r["gate"],
                              r["module"]))
    return tuple(infos)


@functools.lru_cache(maxsize=None)
def rule_infos(write: bool = True) -> tuple[RuleInfo, ...]:
    """The rules' manifest: read back when its signature verifies (it decides which rules
    run, so it is trusted no more than a cache entry), else made from the rules and, when
    ``write`` (not with ``--no-cache``), stored."""
    secret = user_secret(create=write)
    try:
        path = _manifest_path(_rules_dir())
    except OSError:
        return _from_rules()
    stored = read_signed(path, secret, path.name.encode()) if secret is not None else None
    if stored is not None:
        try:
            return _parse(json.loads(stored))
        except Exception:  # noqa: BLE001 - a malformed manifest is remade
            pass
    infos = _from_rules()
    if secret is None or not write:
        return infos
    payload = json.dumps([{"code": i.code, "name": i.name, "requires": list(i.requires),
                           "gate": i.gate, "module": i.module} for i in infos])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_signed(path, secret, path.name.encode(), payload)
        # Manifests of earlier versions or edits are never read again.
        for old in path.parent.glob("rules-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass
    return infos
