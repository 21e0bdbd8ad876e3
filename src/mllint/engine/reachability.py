"""Code that can never run: statements after a ``return``, ``raise``, ``continue`` or
``break`` in the same block (``def test(self): return`` left above the old body).

A finding there describes a bug that cannot happen, so the engine drops it. Only this
one syntactic form is recognised; conditions that are always false are not evaluated.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

_ENDS_BLOCK = (ast.Return, ast.Raise, ast.Continue, ast.Break)
_BLOCKS = ("body", "orelse", "finalbody")
_TRY = tuple(t for t in (ast.Try, getattr(ast, "TryStar", None)) if t is not None)


def unreachable_spans(tree: ast.Module) -> list[tuple[int, int]]:
    """(first line, last line) of each run of statements that follows a statement ending
    its block."""
    spans: list[tuple[int, int]] = []
    for block in _blocks(tree):
        for i, stmt in enumerate(block[:-1]):
            if isinstance(stmt, _ENDS_BLOCK):
                rest = block[i + 1:]
                spans.append((rest[0].lineno, rest[-1].end_lineno or rest[-1].lineno))
                break
    return spans


def _blocks(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for field in _BLOCKS:
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block
                stack.extend(block)
        if isinstance(node, _TRY):
            for handler in node.handlers:
                yield handler.body
                stack.extend(handler.body)
        elif isinstance(node, ast.Match):
            for case in node.cases:
                yield case.body
                stack.extend(case.body)


def in_spans(line: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= line <= end for start, end in spans)
