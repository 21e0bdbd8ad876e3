"""Deciding, before any libcst parse, which rules could report anything in a file.

Two stages, both sound (they may admit a file the rule then finds clean, never the
reverse), and both runnable without importing libcst or the rules:

1. ``REQUIRES``: regexes that must all occur in the text. Costs microseconds.
2. ``GATE`` (optional): a function over Python's own syntax tree (``ast``, the C parser,
   about ten times faster than a libcst parse) that answers "could this rule report in
   this module?" by a coarse, over-approximating version of the rule's own reasoning:
   e.g. ML005 asks whether any cross-entropy input could be a softmax output at all.
   A gate sees a tree only when some rule that has one passed stage 1, and the tree is
   parsed once for all gates.

A file whose text Python cannot parse keeps every rule that passed stage 1, so the libcst
path reports the syntax error exactly as before.
"""

from __future__ import annotations

import ast
import functools
import importlib
import warnings
from typing import Callable, Protocol, Sequence, TypeVar

Gate = Callable[[ast.Module], bool]


class Filtered(Protocol):
    def may_match(self, text: str) -> bool: ...

    @property
    def gate(self) -> str | None: ...


T = TypeVar("T", bound=Filtered)


@functools.lru_cache(maxsize=None)
def load_gate(spec: str) -> Gate:
    """``"package.module:function"`` -> the function (stdlib-only modules by contract)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def python_tree(text: str) -> ast.Module | None:
    """Python's syntax tree of ``text``, or ``None`` when Python cannot parse it."""
    try:
        with warnings.catch_warnings():
            # Invalid escape sequences and the like are the user's business, not ours.
            warnings.simplefilter("ignore")
            return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def admitted(rules: Sequence[T], text: str) -> list[T]:
    """The rules that could report in ``text``: stage 1, then stage 2 where defined."""
    passed = [r for r in rules if r.may_match(text)]
    if not any(r.gate for r in passed):
        return passed
    tree = python_tree(text)
    if tree is None:
        return passed
    return [r for r in passed if not r.gate or _gate_admits(r.gate, tree)]


def _gate_admits(spec: str, tree: ast.Module) -> bool:
    """A gate that fails (a tree too deep to walk, a bug) admits the file: the rule then
    runs as if there were no gate, and any real problem is reported from there."""
    try:
        return bool(load_gate(spec)(tree))
    except Exception:  # noqa: BLE001 - a prefilter must never lose a file
        return True
