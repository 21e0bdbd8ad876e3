"""A result cache keyed by file content, path, rule set and mllint version.

Unchanged files cost one hash on the next run. Only complete results are stored: a file
whose lint hit an internal error is linted again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from mllint import __version__
from mllint.types import ErrorKind, FileError, FileResult, Finding

_FORMAT = "1"


class Cache:
    def __init__(self, directory: Path, rule_codes: tuple[str, ...], code_version: str = "") -> None:
        self.directory = directory
        # code_version: a fingerprint of mllint's installed code, so that an edited rule
        # (an editable install keeps its version number) never reads stale results.
        salt = f"{_FORMAT}\0{__version__}\0{code_version}\0{','.join(sorted(rule_codes))}\0"
        self._salt = salt.encode()
        self._ready = False

    def key(self, path: str, data: bytes) -> str:
        h = hashlib.blake2b(self._salt, digest_size=20)
        h.update(path.encode("utf-8", "surrogateescape") + b"\0")
        h.update(data)
        return h.hexdigest()

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key[2:]}.json"

    def get(self, key: str) -> FileResult | None:
        try:
            raw = json.loads(self._file(key).read_text(encoding="utf-8"))
            return FileResult(
                raw["path"],
                tuple(Finding.from_dict(f) for f in raw["findings"]),
                tuple(FileError.from_dict(e) for e in raw["errors"]),
                tuple(raw.get("warnings", ())),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, result: FileResult) -> None:
        if any(e.kind is ErrorKind.INTERNAL for e in result.errors):
            return
        try:
            self._prepare()
            target = self._file(key)
            target.parent.mkdir(exist_ok=True)
            payload = json.dumps({
                "path": result.path,
                "findings": [f.to_dict() for f in result.findings],
                "errors": [e.to_dict() for e in result.errors],
                "warnings": list(result.warnings),
            })
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
            os.replace(tmp, target)
        except OSError:
            # A read-only checkout must still lint; the cache is only an accelerator.
            pass

    def _prepare(self) -> None:
        if self._ready:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        gitignore = self.directory / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# Created by mllint.\n*\n")
        tag = self.directory / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n# mllint cache\n")
        self._ready = True


def clear(directory: Path) -> int:
    """Empty a cache directory mllint made (and only such); returns the entries removed."""
    tag = directory / "CACHEDIR.TAG"
    try:
        if directory.is_symlink() or "mllint" not in tag.read_text(encoding="utf-8"):
            return 0
    except (OSError, UnicodeDecodeError):
        return 0
    removed = 0
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink() and len(entry.name) == 2:
            removed += sum(1 for _ in entry.glob("*.json"))
            shutil.rmtree(entry, ignore_errors=True)
    return removed
