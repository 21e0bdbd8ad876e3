"""Reading a file's text the way Python itself would, or saying clearly why not."""

from __future__ import annotations

import errno
import io
import os
import tokenize

from mllint.types import ErrorKind, FileError, Position

#: Files larger than this are reported instead of parsed: generated code of this size is
#: never hand-written training code, and parsing it would dominate a run's time and memory.
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes | FileError:
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return FileError(
                path,
                ErrorKind.TOO_LARGE,
                f"file is {size / 1e6:.1f} MB, above the {max_bytes / 1e6:.1f} MB limit; "
                "not linted (raise `max-file-size` in [tool.mllint] to lint it)",
            )
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return FileError(path, ErrorKind.SYMLINK_LOOP, "symbolic link loop; not linted")
        if exc.errno == errno.ENOENT:
            return FileError(path, ErrorKind.MISSING, "no such file (a dangling symlink?)")
        return FileError(path, ErrorKind.UNREADABLE, f"cannot read file: {exc.strerror}")


def decode(path: str, data: bytes) -> str | FileError:
    """Decode per PEP 263 (BOM or coding cookie, else UTF-8)."""
    if b"\x00" in data[:8192]:
        return FileError(path, ErrorKind.BINARY, "file contains NUL bytes; looks binary, not linted")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if b"coding" in data[:400]:
            return FileError(path, ErrorKind.DECODE, f"bad encoding declaration: {exc.msg}")
        # No declaration, and the first lines are not UTF-8: report where, below.
        encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        pos = None
        if isinstance(exc, UnicodeDecodeError):
            line = data[: exc.start].count(b"\n") + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            pos = Position(line, col)
            detail = f"byte 0x{data[exc.start]:02x} is not valid {encoding}"
        else:
            detail = f"unknown encoding {encoding!r}"
        hint = " (declare the file's encoding with a PEP 263 `# -*- coding: ... -*-` line)"
        return FileError(path, ErrorKind.DECODE, f"cannot decode: {detail}{hint}", pos)
    if text.startswith("\ufeff"):
        text = text[1:]
    return text
