"""A result cache keyed by file content, path, rule set and mllint version.

Unchanged files cost one ``stat`` on the next run (the stat index below), else one hash. Only complete results are stored: a file
whose lint hit an internal error is linted again next time.

Nothing read back is trusted (see "Why entries are signed" below): an entry is used only
when its keyed digest verifies and its shape is exactly what ``put`` writes; anything else
is ignored and overwritten by the fresh result.

Why entries are signed: a cache directory can be committed, restored by CI from another
machine, or written by another user; a planted entry could hide findings or, if paths
were taken from it, make the report print lines of any readable file. Each entry carries
an HMAC over its key and payload, keyed with a secret that only this user on this machine
holds (``user_secret``, in the user's cache directory), so a foreign, edited or corrupted
entry fails verification. Entries never carry the path: findings always name the file
being linted, and code frames are read from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from mllint import __version__
from mllint.project.summaries import digest_of
from mllint.types import ErrorKind, FileError, FileResult, Finding

_FORMAT = "2"
#: Written into every directory mllint creates for its cache; ``clear`` empties only such.
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# mllint cache\n"
#: Entries not read or written for this long are removed (at most once a day).
MAX_AGE_SECONDS = 30 * 24 * 3600
#: And no more than this many are kept (the least recently used go first).
MAX_ENTRIES = 20_000
_PRUNE_EVERY_SECONDS = 24 * 3600


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mllint"


def user_secret(create: bool = True) -> bytes | None:
    """This user's signing key on this machine, made on first use if ``create`` (``None``:
    no writable user cache directory, so nothing is cached)."""
    directory = user_cache_dir()
    path = directory / "secret"
    try:
        key = path.read_bytes()
        if len(key) == 32 and path.stat().st_uid == os.getuid():
            return key + _machine()
    except (OSError, AttributeError):
        pass
    if not create:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")  # created 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        os.replace(tmp, path)
        key = path.read_bytes()  # whichever concurrent first run won the replace
        return key + _machine() if len(key) == 32 else None
    except OSError:
        return None


def _machine() -> bytes:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return f"\0{uid}\0{socket.gethostname()}".encode()


def sign(secret: bytes, *parts: bytes) -> str:
    mac = hmac.new(secret, digestmod=hashlib.blake2b)
    for part in parts:
        mac.update(len(part).to_bytes(8, "little") + part)
    return mac.hexdigest()


def read_signed(path: Path, secret: bytes, label: bytes) -> str | None:
    """The payload of a file ``write_signed`` wrote, if its signature verifies; ``None``
    for a missing, unreadable, malformed or foreign file."""
    try:
        raw = json.loads(path.read_bytes())
        payload, mac = raw["payload"], raw["mac"]
        expected = sign(secret, label, payload.encode("utf-8", "surrogatepass"))
        return payload if isinstance(mac, str) and hmac.compare_digest(mac, expected) else None
    except Exception:  # noqa: BLE001 - whatever is wrong with it, it is not trusted
        return None


def write_signed(path: Path, secret: bytes, label: bytes, payload: str) -> None:
    """Store ``payload`` with its signature, atomically (raises ``OSError``)."""
    mac = sign(secret, label, payload.encode("utf-8", "surrogatepass"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"payload": payload, "mac": mac}, fh)
    os.replace(tmp, path)


def is_mllint_dir(directory: Path) -> bool:
    try:
        return (directory / "CACHEDIR.TAG").read_text(encoding="utf-8") == _TAG
    except (OSError, UnicodeDecodeError):
        return False


def clear(directory: Path) -> int:
    """Empty a cache directory mllint made (and only such); returns the entries removed."""
    if directory.is_symlink() or not is_mllint_dir(directory):
        return 0
    removed = 0
    try:
        (directory / _INDEX).unlink()
    except OSError:
        pass
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink() and len(entry.name) == 2:
            removed += sum(1 for _ in entry.glob("*.json"))
            shutil.rmtree(entry, ignore_errors=True)
    return removed


class Cache:
    def __init__(self, directory: Path, rule_codes: tuple[str, ...], code_version: str = "",
                 secret: bytes | None = None) -> None:
        self.directory = directory
        # code_version: a fingerprint of mllint's installed code, so that an edited rule
        # (an editable install keeps its version number) never reads stale results.
        salt = f"{_FORMAT}\0{__version__}\0{code_version}\0{','.join(sorted(rule_codes))}\0"
        self._salt = salt.encode()
        self._secret = secret if secret is not None else user_secret()
        self._ready = False
        self._index: dict[str, list] | None = None
        self._index_dirty = False
        self._touched: set[str] = set()
        #: Digests of the files results depend on, by path, with the stat stamp they were
        #: read at: many files of a project depend on the same few modules, which are
        #: then read once, and read again only when they change.
        self._digests: dict[str, tuple[list[int], str]] = {}

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    # -- keys of unchanged files, without reading them ------------------------------------
    #
    # A warm run over a large tree spends most of its time reading and hashing files that
    # did not change. The stat index remembers, per path, the (inode, size, mtime, ctime)
    # it had when its key was last computed, and the key. ``ctime`` changes on every write
    # and cannot be set back, so a file whose four values match still has the content the
    # key was made from. The index is signed like the entries, and bound to this cache's
    # salt (mllint's code and the rule set): a foreign, edited or stale index is ignored.

    #
    # Most files of a tree have nothing to report and depend on no other file (no rule could
    # flag them). The index marks such a file's entry as clean, so that a warm run answers
    # it from the index alone, without opening its entry.

    def known_key(self, path: str, st: os.stat_result) -> tuple[str, bool] | None:
        """The key of ``path`` if the stat index says the file is unchanged since, and
        whether its stored result is empty (nothing found, nothing depended on)."""
        entry = self._stat_index().get(path)
        return (entry[4], entry[5]) if entry is not None and entry[:4] == _stamp(st) else None

    def remember_key(self, path: str, st: os.stat_result, key: str, result: FileResult) -> None:
        """Note that ``path``, as ``st`` describes it, has the key ``key`` and the stored
        result ``result``."""
        index = self._stat_index()
        self._touched.add(path)
        stamp = [*_stamp(st), key, _is_empty(result)]
        if index.get(path) != stamp:
            index[path] = stamp
            self._index_dirty = True

    def save_stat_index(self) -> None:
        """Write the stat index back if it changed (best effort, like every write here)."""
        if not self._index_dirty or self._secret is None or self._index is None:
            return
        if len(self._index) > MAX_ENTRIES:  # paths of other runs go first
            self._index = {p: e for p, e in self._index.items() if p in self._touched}
        payload = json.dumps({"salt": self._salt_digest(), "files": self._index}, sort_keys=True)
        try:
            self._prepare()
            write_signed(self.directory / _INDEX, self._secret, b"stat-index", payload)
            self._index_dirty = False
        except (OSError, UnicodeEncodeError):
            pass

    def _salt_digest(self) -> str:
        return hashlib.blake2b(self._salt, digest_size=16).hexdigest()

    def _stat_index(self) -> dict[str, list]:
        if self._index is None:
            self._index = self._read_stat_index()
        return self._index

    def _read_stat_index(self) -> dict[str, list]:
        if self._secret is None:
            return {}
        payload = read_signed(self.directory / _INDEX, self._secret, b"stat-index")
        if payload is None:
            return {}
        try:
            data = json.loads(payload)
            if data.get("salt") != self._salt_digest() or not isinstance(data.get("files"), dict):
                return {}
            return {p: e for p, e in data["files"].items() if _is_stamp(e)}
        except Exception:  # noqa: BLE001 - an unreadable index only costs the reads it saves
            return {}

    def key(self, path: str, data: bytes) -> str:
        h = hashlib.blake2b(self._salt, digest_size=20)
        h.update(path.encode("utf-8", "surrogateescape") + b"\0")
        h.update(data)
        return h.hexdigest()

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key[2:]}.json"

    def get(self, key: str, path: str) -> FileResult | None:
        """The stored result for ``key``, as a result for ``path``; ``None`` when there
        is none or it cannot be trusted."""
        if self._secret is None:
            return None
        payload = read_signed(self._file(key), self._secret, key.encode())
        if payload is None:
            return None
        try:
            result = _result(path, json.loads(payload))
            return result if self._unchanged(result.depends_on) else None
        except Exception:  # noqa: BLE001 - any unreadable or malformed entry is a miss
            return None

    def _unchanged(self, depends_on: Mapping[str, str]) -> bool:
        """Whether every other file a cached result depended on still has the same content."""
        return all(self._digest(path) == digest for path, digest in depends_on.items())

    def _digest(self, path: str) -> str | None:
        try:
            stamp = _stamp(os.stat(path))
            known = self._digests.get(path)
            if known is not None and known[0] == stamp:
                return known[1]
            digest = digest_of(Path(path).read_bytes())
        except OSError:
            return None
        self._digests[path] = (stamp, digest)
        return digest

    def put(self, key: str, result: FileResult) -> None:
        if self._secret is None or any(e.kind is ErrorKind.INTERNAL for e in result.errors):
            return
        payload = json.dumps({
            "findings": [_without_path(f.to_dict()) for f in result.findings],
            "errors": [_without_path(e.to_dict()) for e in result.errors],
            "depends_on": dict(result.depends_on),
            "warnings": list(result.warnings),
        }, sort_keys=True)
        try:
            self._prepare()
            target = self._file(key)
            target.parent.mkdir(exist_ok=True)
            write_signed(target, self._secret, key.encode(), payload)
        except (OSError, UnicodeEncodeError):
            # A read-only checkout must still lint; the cache is only an accelerator.
            pass

    def _prepare(self) -> None:
        if self._ready:
            return
        created = False
        if not os.path.lexists(self.directory):
            try:
                self.directory.mkdir(parents=True)
                created = True
            except FileExistsError:
                pass
        # Mark only a directory mllint made: `--cache-dir .` or a symlink to the user's own
        # directory must not get a .gitignore that hides their files.
        if created:
            (self.directory / ".gitignore").write_text("# Created by mllint.\n*\n")
            (self.directory / "CACHEDIR.TAG").write_text(_TAG)
        self._ready = True


    def prune(self, now: float | None = None) -> int:
        """Remove old entries, and the least recently used beyond ``MAX_ENTRIES``; runs at
        most once a day (a stamp file remembers when). Returns the entries removed."""
        if not self._ready or not is_mllint_dir(self.directory):
            return 0
        now = time.time() if now is None else now
        stamp = self.directory / "last-prune"
        try:
            if now - stamp.stat().st_mtime < _PRUNE_EVERY_SECONDS:
                return 0
        except OSError:
            pass
        entries = []
        for sub in self.directory.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for entry in os.scandir(sub):
                    try:
                        entries.append((entry.stat().st_mtime, entry.path))
                    except OSError:
                        pass
        entries.sort(reverse=True)
        doomed = [p for i, (mtime, p) in enumerate(entries)
                  if i >= MAX_ENTRIES or now - mtime > MAX_AGE_SECONDS]
        for p in doomed:
            try:
                os.unlink(p)
            except OSError:
                pass
        try:
            stamp.touch()
            os.utime(stamp, (now, now))
        except OSError:
            pass
        return len(doomed)


_INDEX = "stat-index"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _is_stamp(entry: object) -> bool:
    return (isinstance(entry, list) and len(entry) == 6
            and all(type(n) is int for n in entry[:4]) and isinstance(entry[4], str)
            and type(entry[5]) is bool)


def _is_empty(result: FileResult) -> bool:
    return not (result.findings or result.errors or result.warnings or result.depends_on)


def _without_path(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d.pop("path", None)
    return d


def _result(path: str, raw: Any) -> FileResult:
    """A stored payload back as a result for ``path``; raises on any unexpected shape."""
    if not isinstance(raw, dict) or set(raw) != {"findings", "errors", "depends_on", "warnings"}:
        raise ValueError("bad entry")
    findings = tuple(_checked_finding(path, d) for d in raw["findings"])
    errors = tuple(FileError.from_dict({**d, "path": path}) for d in raw["errors"])
    for e in errors:
        if not isinstance(e.message, str):
            raise ValueError("bad entry")
    depends_on = raw["depends_on"]
    if not isinstance(depends_on, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in depends_on.items()):
        raise ValueError("bad entry")
    warnings = raw["warnings"]
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise ValueError("bad entry")
    return FileResult(path, findings, errors, tuple(warnings), depends_on)


def _checked_finding(path: str, d: dict[str, Any]) -> Finding:
    f = Finding.from_dict({**d, "path": path})
    numbers = (f.span.start.line, f.span.start.column, f.span.end.line, f.span.end.column)
    if not all(type(n) is int and n >= 1 for n in numbers):
        raise ValueError("bad position")
    if not all(isinstance(s, str) for s in (f.code, f.name, f.message)):
        raise ValueError("bad text")
    return replace(f, data=dict(f.data))
