"""Small questions about ``ast`` nodes that libcst answers from its concrete tree: the
arguments of a call in source order, the text a string constant was written as, whether
an expression stands in its own parentheses, and children in source order.

``ast`` keeps positional arguments and keywords apart and forgets quotes, prefixes and
parentheses; the analyses that read those (a flag compared with ``"val"``, a loader named
``loaders['val']``) get them back here from the module's text, which ``ModuleIndex``
holds.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass

from mllint.gates.resolve import children

FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Arg:
    """One argument of a call as written: ``keyword=value``, ``*value``, ``**value`` or
    a plain positional ``value``."""

    keyword: str | None
    value: ast.expr
    #: ``""``, ``"*"`` or ``"**"``.
    star: str = ""


def args_of(call: ast.Call) -> tuple[Arg, ...]:
    """The arguments of ``call`` in the order they are written (``f(k=1, *a)`` puts the
    keyword first), kept on the node."""
    found = getattr(call, "_mllint_args", None)
    if found is not None:
        return found
    items: list[tuple[tuple[int, int], Arg]] = []
    for a in call.args:
        if isinstance(a, ast.Starred):
            items.append(((a.lineno, a.col_offset), Arg(None, a.value, "*")))
        else:
            items.append(((a.lineno, a.col_offset), Arg(None, a)))
    for k in call.keywords:
        at = (k.lineno, k.col_offset)
        items.append((at, Arg(None, k.value, "**") if k.arg is None else Arg(k.arg, k.value)))
    if call.keywords and call.args:
        items.sort(key=lambda item: item[0])
    found = tuple(arg for _, arg in items)
    call._mllint_args = found  # type: ignore[attr-defined]
    return found


def first_positional(call: ast.Call) -> ast.expr | None:
    """The first argument when it is a plain positional one."""
    args = args_of(call)
    return args[0].value if args and args[0].keyword is None and not args[0].star else None


def literal_flag(expr: ast.AST | None) -> bool | None:
    """True for ``False``, False for ``True``, None for anything decided at run time."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, bool):
        return expr.value is False
    return None


def is_none(expr: ast.AST | None) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is None


def is_number(expr: ast.AST | None) -> bool:
    """An integer, float or imaginary literal (not ``True``/``False``)."""
    return (isinstance(expr, ast.Constant) and isinstance(expr.value, (int, float, complex))
            and not isinstance(expr.value, bool))


def is_string(expr: ast.AST | None) -> bool:
    """A string or bytes literal, plain, prefixed or implicitly joined (not an f-string)."""
    return isinstance(expr, ast.Constant) and isinstance(expr.value, (str, bytes))


#: One string literal as written: prefix, quotes and all.
STRING_TOKEN = re.compile(
    r"""(?is)[rbu]{0,2}(?:'''(?:[^\\]|\\.)*?'''|\"\"\"(?:[^\\]|\\.)*?\"\"\"|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")


class SourceText:
    """The module's text, cut into lines once, for the exact code of nodes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[str] | None = None
        self._ascii: dict[int, bool] = {}

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            # The line breaks ``ast`` counts lines by, each kept with its line.
            parts = re.split(r"(\r\n|\r|\n)", self.text)
            self._lines = [a + b for a, b in zip(parts[::2], [*parts[1::2], ""])]
        return self._lines

    def column(self, line: int, byte_offset: int) -> int:
        """A column in characters of 1-based ``line``, from ``ast``'s UTF-8 byte offset."""
        plain = self._ascii.get(line)
        lines = self.lines
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        if plain is None:
            plain = self._ascii[line] = text.isascii()
        if plain:
            return byte_offset
        return len(text.encode("utf-8")[:byte_offset].decode("utf-8", "replace"))

    def start(self, node: ast.AST) -> tuple[int, int]:
        """Where ``node`` starts: line and column in characters (libcst's reckoning)."""
        line = node.lineno  # type: ignore[attr-defined]
        return (line, self.column(line, node.col_offset))  # type: ignore[attr-defined]

    def code(self, node: ast.AST) -> str:
        """The exact text of ``node``, line breaks and comments included."""
        end_line = getattr(node, "end_lineno", None)
        if end_line is None:
            return ast.unparse(node)
        lines = self.lines
        first, last = node.lineno, end_line  # type: ignore[attr-defined]
        if not (0 < first <= last <= len(lines)):
            return ast.unparse(node)
        begin = self.column(first, node.col_offset)  # type: ignore[attr-defined]
        end = self.column(last, node.end_col_offset)  # type: ignore[attr-defined]
        if first == last:
            return lines[first - 1][begin:end]
        return lines[first - 1][begin:] + "".join(lines[first:last - 1]) + lines[last - 1][:end]

    def one_line(self, node: ast.AST) -> str:
        """The code of ``node`` on one line, whitespace runs made one blank (messages)."""
        return " ".join(self.code(node).split())

    def string_literal(self, node: ast.AST) -> str | bytes | None:
        """The value of a string or bytes literal written as one literal (a prefix
        allowed; not ``"a" "b"``, not an f-string), else None."""
        if not is_string(node) or not STRING_TOKEN.fullmatch(self.code(node)):
            return None
        return node.value  # type: ignore[attr-defined]

    def plain_string(self, node: ast.AST) -> str | None:
        """The value of a string literal written as one plain string (no prefix, no
        implicit joining, no parentheses of its own), else None."""
        value = self.string_literal(node)
        if not isinstance(value, str) or self.code(node)[:1] not in "'\"" or self.parenthesized(node):
            return None
        return value

    def parenthesized(self, node: ast.AST) -> bool:
        """``node`` stands in parentheses of its own (``(train)``), not a call's or a
        tuple's: the text before it, past blanks, is ``(`` with no name or closing
        bracket before that (a keyword such as ``if`` or ``not`` may be)."""
        line, col = self.start(node)
        lines = self.lines
        i = line - 1
        j = col
        while i >= 0:
            text = lines[i][:j].rstrip()
            if text:
                if not text.endswith("("):
                    return False
                before = text[:-1].rstrip()
                k = i
                while not before and k > 0:
                    k -= 1
                    before = lines[k].rstrip()
                    before = before.rstrip("\\").rstrip()
                if not before:
                    return True
                last = before[-1]
                if last in ")]" or last == "'" or last == '"':
                    return False
                if last.isalnum() or last == "_":
                    word = re.search(r"\w+$", before)
                    return word is not None and keyword.iskeyword(word.group(0))
                return True
            i -= 1
            if i >= 0:
                j = len(lines[i])
        return False


def source_children(node: ast.AST) -> list[ast.AST]:
    """``children(node)`` in the order their code is written, where ``ast``'s field
    order differs from it (decorators before a ``def``, keywords among arguments,
    dictionary keys with their values, a conditional expression's body before its
    test)."""
    reorder = SOURCE_ORDER.get(type(node))
    return children(node) if reorder is None else reorder(node)


def _function_children(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    out: list[ast.AST] = [*node.decorator_list, *_parameters(node.args)]
    if node.returns is not None:
        out.append(node.returns)
    return out + list(node.body)


def _call_children(node: ast.Call) -> list[ast.AST]:
    if not node.keywords:
        return [node.func, *node.args]
    rest: list[ast.AST] = [*node.args, *node.keywords]
    if node.args:
        rest.sort(key=lambda n: (n.lineno, n.col_offset))  # type: ignore[attr-defined]
    return [node.func, *rest]


def _dict_children(node: ast.Dict) -> list[ast.AST]:
    out: list[ast.AST] = []
    for k, v in zip(node.keys, node.values):
        if k is not None:
            out.append(k)
        out.append(v)
    return out


#: Node kinds whose children ``ast`` lists in another order than the code has them, with
#: the function that lists them in the code's order (the rest: ``children``).
SOURCE_ORDER = {
    ast.FunctionDef: _function_children,
    ast.AsyncFunctionDef: _function_children,
    ast.ClassDef: lambda n: [*n.decorator_list, *n.bases, *n.keywords, *n.body],
    ast.Call: _call_children,
    ast.Dict: _dict_children,
    ast.IfExp: lambda n: [n.body, n.test, n.orelse],
    ast.Lambda: lambda n: [*_parameters(n.args), n.body],
}


def _parameters(args: ast.arguments) -> list[ast.AST]:
    """The parameters with their annotations and defaults, in the order written."""
    out: list[ast.AST] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for p, d in zip(positional, defaults):
        out.append(p)
        if d is not None:
            out.append(d)
    if args.vararg is not None:
        out.append(args.vararg)
    for p, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append(p)
        if d is not None:
            out.append(d)
    if args.kwarg is not None:
        out.append(args.kwarg)
    return out


def nodes_under(root: ast.AST, kind: type | tuple[type, ...]) -> list:
    """Every node of ``kind`` under ``root`` (itself included)."""
    found = []
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, kind):
            found.append(node)
        stack.extend(children(node))
    return found
