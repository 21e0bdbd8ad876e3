"""Position metadata for the rules' traversal, computed only where rules ask.

libcst's ``PositionProvider`` code-generates the whole module and builds a ``CodeRange``
for every node (and resolving it when no other provider is pending costs libcst an extra,
empty traversal of the tree). Rules ask for the positions of a few percent of the nodes.
``seed`` puts a lazy mapping in the wrapper's store instead (how libcst caches a
resolved provider), with the same ``CodeRange`` values. Two ways to fill it:

* Placed statements, when the wrapper holds a parent map (some rule asked for
  ``ParentNodeProvider``). A *unit* is a statement in a ``Module`` or ``IndentedBlock``
  body. Code generation of a unit depends only on the line it starts on, the indentation
  of its enclosing blocks and the module's default indent and newline; it always starts
  at column 0. So the innermost unit around a queried node is generated alone, lines
  counted from 1, and shifted once its line is known. The line comes from the source
  text (libcst round-trips source exactly, so the unit's code occurs where the unit is):
  next to an already placed sibling (statements of one body are contiguous), or by a
  search that must find exactly one occurrence; an ambiguous unit is retried as its
  enclosing unit, and in the last resort the whole module is generated.
* In order, otherwise: top-level statements are generated one after the other, with one
  state as libcst does, up to the one that holds the queried node.

The code generation state records plain tuples with libcst's exact rules (syntactic
ranges win over whitespace-inclusive ones; starts and ends hoisted from children), with
fewer objects per node; ``CodeRange`` objects are built only for queried nodes.
``tests/test_fast_positions.py`` compares every node with libcst's provider.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Iterator, Mapping, Optional

import libcst as cst
from libcst._nodes.internal import CodegenState
from libcst.metadata import (
    CodePosition,
    CodeRange,
    MetadataWrapper,
    ParentNodeProvider,
    PositionProvider,
)
from libcst.metadata.position_provider import NEWLINE_RE

# (start line, start column, end line, end column), keyed by ``id(node)``: nodes hash in
# Python (``CSTNode.__hash__``), ints in C, and the module keeps every node alive.
_Raw = tuple[int, int, int, int]


def seed(wrapper: MetadataWrapper, wanted: set, text: Optional[str] = None) -> None:
    """Put a lazy ``PositionProvider`` mapping in ``wrapper``.

    ``text`` must be the source ``wrapper.module`` was parsed from; without it, the
    module is generated in order up to each queried node (slower when rules ask for a
    few nodes late in the file).
    """
    if PositionProvider in wanted and PositionProvider not in wrapper._metadata:
        wrapper._metadata[PositionProvider] = LazyPositions(wrapper, text)


class _State(CodegenState):
    """libcst's ``PositionProvidingCodegenState``, recording tuples into ``ranges``."""

    __slots__ = ("line", "column", "ranges", "_starts", "_syntactic", "_exit")

    def __init__(
        self, default_indent: str, default_newline: str, indent_tokens: list[str],
        ranges: dict[int, _Raw],
    ) -> None:
        self.default_indent = default_indent
        self.default_newline = default_newline
        self.provider = None
        self.indent_tokens = list(indent_tokens)
        self.tokens = []
        self.line = 1
        self.column = 0
        self.ranges = ranges
        self._starts: list[tuple[int, int]] = []
        # Open ``record_syntactic_position`` blocks: (node, start_node, end_node, line,
        # column). They nest, so one stack and one shared context manager do.
        self._syntactic: list[tuple] = []
        self._exit = _SyntacticExit(self)

    def add_indent_tokens(self) -> None:
        for token in self.indent_tokens:
            self.add_token(token)

    def add_token(self, value: str) -> None:
        self.tokens.append(value)
        if "\n" in value or "\r" in value:
            segments = NEWLINE_RE.split(value)
            self.line += len(segments) - 1
            self.column = len(segments[-1])
        else:
            self.column += len(value)

    def before_codegen(self, node: cst.CSTNode) -> None:
        self._starts.append((self.line, self.column))

    def after_codegen(self, node: cst.CSTNode) -> None:
        line, column = self._starts.pop()
        key = id(node)
        if key not in self.ranges:  # a syntactic range, recorded inside, wins
            self.ranges[key] = (line, column, self.line, self.column)

    def record_syntactic_position(
        self,
        node: cst.CSTNode,
        *,
        start_node: Optional[cst.CSTNode] = None,
        end_node: Optional[cst.CSTNode] = None,
    ) -> "_SyntacticExit":
        # Called in the ``with`` statement itself, so the position is the block's start.
        self._syntactic.append((node, start_node, end_node, self.line, self.column))
        return self._exit


class _SyntacticExit:
    """Closes the innermost ``record_syntactic_position`` block, as libcst's does:
    the block's range, with the start or end taken from ``start_node``/``end_node``."""

    __slots__ = ("state",)

    def __init__(self, state: _State) -> None:
        self.state = state

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        state = self.state
        node, start_node, end_node, sl, sc = state._syntactic.pop()
        ranges = state.ranges
        if start_node is not None:
            start = ranges[id(start_node)]
            sl, sc = start[0], start[1]
        if end_node is not None:
            end = ranges[id(end_node)]
            ranges[id(node)] = (sl, sc, end[2], end[3])
        else:
            ranges[id(node)] = (sl, sc, state.line, state.column)


def _indent_of(block: cst.IndentedBlock, default: str) -> str:
    return default if block.indent is None else block.indent


class LazyPositions(Mapping):
    """``PositionProvider``'s mapping, computed one statement (unit) at a time."""

    def __init__(self, wrapper: MetadataWrapper, text: Optional[str]) -> None:
        self._wrapper = wrapper
        self._module = wrapper.module
        self._text = text
        self._full_text: Optional[str] = None  # text as libcst's token stream
        self._line_starts: Optional[list[int]] = None
        self._parents: Optional[Mapping[cst.CSTNode, cst.CSTNode]] = None
        self._raw: dict[int, _Raw] = {}  # absolute lines
        self._ranges: dict[int, CodeRange] = {}
        self._placed: dict[cst.CSTNode, tuple[int, int]] = {}  # unit -> (offset, length)
        self._index: dict[int, dict[int, int]] = {}  # id(body owner) -> id(stmt) -> index
        self._complete = False
        self._in_order: Optional[bool] = None  # strategy, chosen on the first query
        self._state: Optional[_State] = None  # in order: the state so far
        self._next = 0  # in order: the next top-level statement to generate
        self.stats = {"units": 0, "anchored": 0, "searched": 0, "ambiguous": 0, "full": 0}

    # -- Mapping -------------------------------------------------------------------------

    def __getitem__(self, node: cst.CSTNode) -> CodeRange:
        key = id(node)
        rng = self._ranges.get(key)
        if rng is not None:
            return rng
        raw = self._raw.get(key)
        if raw is None:
            self._compute(node)
            raw = self._raw.get(key)
            if raw is None:
                raise KeyError(node)  # not a node of this module, like libcst
        rng = CodeRange(CodePosition(raw[0], raw[1]), CodePosition(raw[2], raw[3]))
        self._ranges[key] = rng
        return rng

    def __contains__(self, node: object) -> bool:
        try:
            self[node]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self) -> Iterator[cst.CSTNode]:
        # Not every node is generated (e.g. an unused whitespace field of MatchMapping),
        # so the keys are the generated nodes, as in libcst's mapping.
        self._whole_module()
        raw = self._raw
        if id(self._module) in raw:
            yield self._module
        for node in self._parent_map():
            if id(node) in raw:
                yield node

    def __len__(self) -> int:
        self._whole_module()
        return len(self._raw)

    # -- computing -----------------------------------------------------------------------

    def _compute(self, node: cst.CSTNode) -> None:
        if self._complete:
            return
        if self._in_order is None:
            self._in_order = self._choose_in_order()
        if self._in_order:
            self._compute_in_order(node)
        else:
            self._compute_unit(node)

    def _choose_in_order(self) -> bool:
        """Place statements only with the source text and a parent map at hand.

        Finding a node's statement needs a parent map. When no rule asked for one, the
        rules that ask for positions are ones that ask for almost every call and
        assignment, in document order; generating top-level statements in order, up to
        the one holding the node, is then cheaper than building a parent map first.
        Without the text, placing needs the module's code generated first, which costs
        more than it saves (measured on the corpus).
        """
        return self._text is None or self._wrapper._metadata.get(ParentNodeProvider) is None

    def _compute_in_order(self, node: cst.CSTNode) -> None:
        """Generate the module's parts in order until ``node`` has a position, with one
        state throughout, so every range is computed exactly as libcst does."""
        module = self._module
        raw = self._raw
        key = id(node)
        state = self._state
        if state is None:
            state = self._state = _State(module.default_indent, module.default_newline, [], raw)
            for line in module.header:
                line._codegen(state)
            if key in raw:
                return
        body = module.body
        while self._next < len(body):
            body[self._next]._codegen(state)
            self._next += 1
            self.stats["units"] += 1
            if key in raw:
                return
        self._whole_module()  # the module itself, its footer, or a node not in it

    def _compute_unit(self, node: cst.CSTNode) -> None:
        parents = self._parent_map()
        if node is not self._module and node not in parents:
            return  # not in this module
        # The units around ``node``, innermost first, and the blocks enclosing each.
        units: list[tuple[cst.BaseStatement, cst.CSTNode, int]] = []  # unit, owner, depth
        blocks: list[cst.IndentedBlock] = []
        cur = node
        parent = parents.get(cur)
        while parent is not None:
            if isinstance(parent, (cst.IndentedBlock, cst.Module)) and isinstance(
                cur, cst.BaseStatement
            ):
                units.append((cur, parent, len(blocks)))
            if isinstance(parent, cst.IndentedBlock):
                blocks.append(parent)
            cur = parent
            parent = parents.get(cur)
        default = self._module.default_indent
        indents = [_indent_of(b, default) for b in reversed(blocks)]  # outermost first
        for unit, owner, depth in units:
            # ``depth`` blocks lie inside this unit (counted from the innermost).
            if self._place(unit, owner, indents[: len(indents) - depth]):
                return
        self._whole_module()

    def _whole_module(self) -> None:
        if self._complete:
            return
        module = self._module
        ranges: dict[int, _Raw] = {}
        module._codegen(_State(module.default_indent, module.default_newline, [], ranges))
        self._raw = ranges
        self._complete = True
        self.stats["full"] += 1

    def _place(self, unit: cst.BaseStatement, owner: cst.CSTNode, indents: list[str]) -> bool:
        """Generate ``unit`` and find where it is; False if it cannot be placed alone."""
        module = self._module
        local: dict[int, _Raw] = {}
        state = _State(module.default_indent, module.default_newline, indents, local)
        unit._codegen(state)
        code = "".join(state.tokens)
        text = self._source()
        offset = self._offset(unit, owner, code, text)
        if offset is None:
            return False
        starts = self._starts()
        line = bisect.bisect_right(starts, offset)  # 1-based line of ``offset``
        if starts[line - 1] != offset:  # a unit starts a line; anything else is a bug
            return False
        self._placed[unit] = (offset, len(code))
        self.stats["units"] += 1
        d = line - 1
        if d:
            self._raw.update({n: (a + d, b, c + d, e) for n, (a, b, c, e) in local.items()})
        else:
            self._raw.update(local)
        return True

    def _offset(self, unit: cst.BaseStatement, owner: cst.CSTNode, code: str, text: str):
        body = owner.body  # type: ignore[attr-defined]
        index = self._index.get(id(owner))
        if index is None:
            index = self._index[id(owner)] = {id(s): i for i, s in enumerate(body)}
        k = index[id(unit)]
        # Statements of one body are contiguous: a placed neighbour fixes the offset.
        if k > 0 and body[k - 1] in self._placed:
            off, length = self._placed[body[k - 1]]
            if text.startswith(code, off + length):
                self.stats["anchored"] += 1
                return off + length
        if k + 1 < len(body) and body[k + 1] in self._placed:
            off = self._placed[body[k + 1]][0] - len(code)
            if off >= 0 and text.startswith(code, off):
                self.stats["anchored"] += 1
                return off
        self.stats["searched"] += 1
        first = text.find(code)
        if first < 0 or text.find(code, first + 1) >= 0:
            self.stats["ambiguous"] += 1
            return None
        return first

    # -- lazily built inputs -------------------------------------------------------------

    def _source(self) -> str:
        """The module's code as libcst's token stream, in which positions are counted.

        That is the source text, except at the end: without a final newline libcst
        still generates one (and drops it from ``Module.code``); a final ``\\r`` is not
        a trailing newline to libcst, but is generated (and dropped) all the same.
        """
        if self._full_text is None:
            module = self._module
            text = self._text
            if text is None:
                state = CodegenState(module.default_indent, module.default_newline)
                for part in (module.header, module.body, module.footer):
                    for node in part:
                        node._codegen(state)
                text = "".join(state.tokens)
            elif not module.has_trailing_newline and not text.endswith("\r"):
                text += module.default_newline
            self._full_text = text
        return self._full_text

    def _starts(self) -> list[int]:
        """Offsets where lines start, with libcst's idea of a newline."""
        if self._line_starts is None:
            text = self._source()
            self._line_starts = [0] + [m.end() for m in NEWLINE_RE.finditer(text)]
        return self._line_starts

    def _parent_map(self) -> Mapping[cst.CSTNode, cst.CSTNode]:
        if self._parents is None:
            seeded = self._wrapper._metadata.get(ParentNodeProvider)
            self._parents = seeded if seeded is not None else _parent_map(self._module)
        return self._parents


_FIELDS: dict[type, tuple[str, ...]] = {}


def _parent_map(module: cst.Module) -> dict[cst.CSTNode, cst.CSTNode]:
    """Child -> parent over every node (``CSTNode.children`` runs a visitor per node,
    far too slow here; a node's children are the nodes in its dataclass fields)."""
    parents: dict[cst.CSTNode, cst.CSTNode] = {}
    stack: list[cst.CSTNode] = [module]
    node_t = cst.CSTNode
    while stack:
        node = stack.pop()
        t = type(node)
        names = _FIELDS.get(t)
        if names is None:
            names = _FIELDS[t] = tuple(f.name for f in dataclasses.fields(t))
        for name in names:
            v = getattr(node, name)
            if isinstance(v, node_t):
                parents[v] = node
                stack.append(v)
            elif type(v) is tuple or type(v) is list:
                for c in v:
                    if isinstance(c, node_t):
                        parents[c] = node
                        stack.append(c)
    return parents
