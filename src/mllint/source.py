"""Reading a file's text the way Python itself would, or saying clearly why not."""

from __future__ import annotations

import codecs
import errno
import io
import os
import re
import tokenize

from mllint.types import ErrorKind, FileError, Position

#: A string literal (group 1) or a comment. Strings are matched only so that a ``#``
#: inside one is not taken for a comment; prefixes need no care (a raw string's ``\"``
#: does not end it either).
STRING_OR_COMMENT = re.compile(
    r'''("""(?:[^\\]|\\.)*?"""|\'\'\'(?:[^\\]|\\.)*?\'\'\''''
    r'''|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\')|#[^\r\n]*''',
    re.S,
)

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


#: Python's tokenizer ends a line at these only; ``str.splitlines`` also breaks at form
#: feed, \x0b, \x1c-\x1e, \x85, U+2028 and U+2029, which may sit in comments and strings.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def physical_lines(text: str) -> list[str]:
    """``text``'s lines as Python numbers them (without their line ends)."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _wide_encoding(head: bytes) -> str | None:
    """"UTF-16"/"UTF-32" when ``head`` is text in one of them (by its byte-order mark, or
    for UTF-16 without one, by every other byte being NUL)."""
    for bom, name in _UTF16_32_BOMS:
        if head.startswith(bom):
            return name
    if len(head) >= 16:
        even, odd = head[0::2], head[1::2]
        for zeros, other in ((odd, even), (even, odd)):
            if zeros.count(0) >= 0.9 * len(zeros) and other.count(0) == 0:
                return "UTF-16"
    return None


def decode(path: str, data: bytes) -> str | FileError:
    """Decode per PEP 263 (BOM or coding cookie, else UTF-8)."""
    wide = _wide_encoding(data[:8192])
    if wide is not None:
        return FileError(path, ErrorKind.DECODE,
                         f"file is {wide}-encoded text; Python reads source as UTF-8 (or a "
                         "PEP 263 declared 8-bit encoding) and cannot run it: re-save it as "
                         "UTF-8")
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
    nul = text.find("\x00")
    if nul >= 0:
        # Past the first 8 KB, so not a binary file: a text file Python refuses to compile.
        before = _LINE_BREAK.split(text[:nul])
        line, col = len(before), len(before[-1]) + 1
        return FileError(path, ErrorKind.SYNTAX,
                         "cannot parse: source contains a NUL byte (Python cannot compile it)",
                         Position(line, col))
    return text
