"""The same program laid out differently: what Python and the rules cannot tell apart,
but a textual prefilter could. Shared by ``test_prefilter_soundness.py`` and the fuzz
script ``tests/bench/fuzz.py``."""

from __future__ import annotations

import ast
import io
import tokenize

#: After these operators a variant breaks the line or adds space.
_BREAK_AFTER = {".", "(", "[", ","}
_SKIP = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER}


def _insert_after(text: str, make) -> str:
    """``text`` with ``make(token, depth)`` (a string or ``None``) inserted right after
    each operator token in ``_BREAK_AFTER`` that is followed by another token on the
    same line; ``depth`` is the bracket depth after the token."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    inserts: list[tuple[int, str]] = []
    depth = 0
    for tok, nxt in zip(tokens, tokens[1:]):
        if tok.type == tokenize.OP:
            depth += tok.string in "([{"
            depth -= tok.string in ")]}"
        if (tok.type == tokenize.OP and tok.string in _BREAK_AFTER
                and nxt.type not in _SKIP and nxt.start[0] == tok.end[0]):
            piece = make(tok, depth)
            if piece:
                inserts.append((offsets[tok.end[0] - 1] + tok.end[1], piece))
    out, last = [], 0
    for at, piece in inserts:
        out += [text[last:at], piece]
        last = at
    out.append(text[last:])
    return "".join(out)


def continuations(text: str) -> str:
    """``optimizer.\\`` newline ``step()``: a backslash continuation after each operator."""
    return _insert_after(text, lambda tok, depth: "\\\n    ")


def comments(text: str) -> str:
    """``(optimizer.  # c`` newline ``step())``: a comment and a line break after each
    operator inside brackets (only there is a comment allowed mid-expression)."""
    return _insert_after(text, lambda tok, depth: "  # c\n    " if depth > 0 else None)


def spaces(text: str) -> str:
    """``optimizer . step ( )``: space around each operator."""
    return _insert_after(text, lambda tok, depth: " \t ")


def parenthesized(text: str) -> str:
    """Every expression statement and assigned value in parentheses, so that ``comments``
    can break it anywhere: ``(optimizer.step())``."""
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []  # (line index, byte column, text)
    for node in ast.walk(ast.parse(text)):
        value = node.value if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign)) else None
        if value is not None and value.end_lineno is not None:
            edits.append((value.lineno - 1, value.col_offset, "("))
            edits.append((value.end_lineno - 1, value.end_col_offset, ")"))
    encoded = [line.encode() for line in lines]
    for row, col, piece in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        encoded[row] = encoded[row][:col] + piece.encode() + encoded[row][col:]
    return b"".join(encoded).decode()


VARIANTS = {
    "continuations": continuations,
    "comments": lambda text: comments(parenthesized(text)),
    "spaces": spaces,
}


def variants(text: str) -> dict[str, str]:
    """Every layout variant of ``text`` that Python accepts (``{}`` when it rejects ``text``)."""
    out = {}
    for name, make in VARIANTS.items():
        try:
            variant = make(text)
            ast.parse(variant)
        except (tokenize.TokenError, SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        out[name] = variant
    return out
