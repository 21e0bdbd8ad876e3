"""The facts ML002/ML003/ML007 decide from, gathered in one walk of Python's ``ast``.

``collect`` records, per scope (the module or a function), the calls in source order with
the loops, ``with`` blocks and assignment around each, the loops with what they iterate,
the assignments, and the classes with their bases and ``self.x = ...`` attributes.
Deciding is left to ``ValidationAnalysis``. Scopes are the module and functions: a class
body, a lambda and a comprehension belong to the scope around them, and a function's
decorators and defaults to the function.
"""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from mllint.analysis.pyast.index import ModuleIndex
from mllint.analysis.pyast.syntax import (
    SOURCE_ORDER,
    STRING_TOKEN,
    Arg,
    SourceText,
    args_of,
    literal_flag,
    source_children,
)
from mllint.analysis.validation.names import (
    AUTOGRAD_CALLS,
    GRAD_OFF,
    GRAD_ON,
    GRAD_SET,
    TRAIN_METHODS,
    Pos,
)
from mllint.gates.resolve import children, dotted

# -- states --------------------------------------------------------------------------------


class Mode(enum.Enum):
    EVAL = "eval"
    TRAIN = "train"
    UNKNOWN = "unknown"


class Grad(enum.Enum):
    OFF = "off"
    ON = "on"
    UNKNOWN = "unknown"


class Evidence(enum.Enum):
    """Why a forward counts as evaluation rather than some other use of the model."""

    DATA_NAME = "it iterates data named like held-out data"
    FUNCTION_NAME = "its function is named like an evaluation"
    NO_GRAD = "it loops over batches in a `with torch.no_grad()` block"
    EVAL_MODE = "it loops over batches after `model.eval()`"
    EVAL_FLAG = "a call switches this shared train/eval loop to evaluation"


@dataclass(frozen=True)
class State:
    """A mode or autograd state at a point, with the line that set it (for messages)."""

    value: Mode | Grad
    line: int | None = None
    why: str = ""


# -- facts gathered during the walk ---------------------------------------------------------


@dataclass(eq=False)
class GradCtx:
    """One ``with`` block (or decorator) that sets autograd state."""

    node: ast.AST
    state: Grad
    text: str
    #: Where its ``with`` statement starts (none for a decorator).
    where: Where | None = None

    @property
    def pos(self) -> Pos:
        return (0, 0) if self.where is None else self.where.pos


@dataclass(eq=False)
class Loop:
    #: A ``For``/``While`` statement or a comprehension.
    node: ast.AST
    where: Where
    scope: Scope
    parent: Loop | None
    #: The iterated object after unwrapping ``enumerate``/``tqdm``/``zip``/``iter``.
    iterables: tuple[str, ...]
    #: Every dotted name and string constant in the iterator expression.
    iter_words: tuple[str, ...]
    #: Where its ``for``/``while`` keyword is (``async for`` starts at ``async``; the
    #: sign search skips it).
    kw_where: Where | None = None
    trains: bool = False
    #: Its header iterates no data (``for i in range(n)``, ``while True``), so the
    #: iterators its body draws batches from (``next(it)``) are added to ``iterables``.
    draws: bool = False
    #: The ``if`` statements around it in its scope, outermost first.
    ifs: tuple[ast.If, ...] = ()
    calls: list[CallRec] = field(default_factory=list)

    @property
    def pos(self) -> Pos:
        return self.where.pos

    @property
    def kw_pos(self) -> Pos:
        return (0, 0) if self.kw_where is None else self.kw_where.pos


class Where:
    """Where a record's statement or call starts, looked up only when first asked: most
    records are never compared by position, and positions are costly to compute."""

    __slots__ = ("node", "_locate", "_pos")

    def __init__(self, node: ast.AST, locate: Callable[[ast.AST], Pos]) -> None:
        self.node = node
        self._locate = locate
        self._pos: Pos | None = None

    @property
    def pos(self) -> Pos:
        if self._pos is None:
            self._pos = self._locate(self.node)
        return self._pos


@dataclass(eq=False)
class CallRec:
    node: ast.Call
    where: Where
    scope: Scope
    func: str | None
    #: The module's index, which names the callee (``qnames``, ``imported``) when asked:
    #: most calls are never asked.
    index: ModuleIndex
    loops: tuple[Loop, ...]
    grad: GradCtx | None
    with_node: ast.With | ast.AsyncWith | None
    flow: FlowRec | None
    #: The ``if`` statements around it in its scope, outermost first.
    ifs: tuple[ast.If, ...] = ()

    @cached_property
    def qnames(self) -> frozenset[str]:
        """The qualified names the callee may denote."""
        return frozenset(self.index.qualified(self.node.func))

    @cached_property
    def imported(self) -> bool:
        """The callee is reached through an import (``from timm import create_model``):
        every binding of its root name is one. ``import model`` then ``model =
        model.RNNModel(...)`` rebinds the name, so a call of it is not (only) a call of
        the module."""
        head: ast.AST = self.node.func
        while isinstance(head, ast.Attribute):
            head = head.value
        if not isinstance(head, ast.Name):
            return False
        found = self.index.scopes.bindings(head)[1]
        return bool(found) and all(b.imported is not None for b in found)

    @property
    def pos(self) -> Pos:
        return self.where.pos

    @property
    def attr(self) -> str | None:
        f = self.node.func
        return f.attr if isinstance(f, ast.Attribute) else None

    @property
    def receiver(self) -> str | None:
        f = self.node.func
        return dotted(f.value) if isinstance(f, ast.Attribute) else None

    @property
    def args(self) -> tuple[Arg, ...]:
        """The call's arguments in the order written, keywords among them."""
        return args_of(self.node)

    @property
    def line(self) -> int:
        return self.pos[0]


@dataclass(eq=False)
class FlowRec:
    """A statement moving values: ``a = f(b)``, ``a += b``, ``acc.append(b)``."""

    where: Where
    targets: tuple[str, ...]
    value: ast.expr | None
    index: int | None = None  # position in a tuple-unpacking target
    scope: Scope | None = None
    #: The statement (or ``append``-like call) that moves the value.
    stmt: ast.AST | None = None

    @property
    def pos(self) -> Pos:
        return self.where.pos


@dataclass(eq=False)
class ClassInfo:
    node: ast.ClassDef
    name: str
    base_qnames: frozenset[str]
    base_names: tuple[str, ...]
    methods: dict[str, Scope] = field(default_factory=dict)
    attrs: dict[str, list[FlowRec]] = field(default_factory=dict)


@dataclass(eq=False)
class Scope:
    """The module, or one function (methods included); class bodies belong to their scope."""

    node: ast.Module | ast.FunctionDef | ast.AsyncFunctionDef
    name: str
    parent: Scope | None
    cls: ClassInfo | None
    params: tuple[str, ...] = ()
    decorator: GradCtx | None = None
    calls: list[CallRec] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    flows: list[FlowRec] = field(default_factory=list)
    children: dict[str, Scope] = field(default_factory=dict)
    trains: bool = False
    # traversal state
    loop_stack: list[Loop] = field(default_factory=list)
    grad_stack: list[GradCtx] = field(default_factory=list)
    with_stack: list[ast.With | ast.AsyncWith] = field(default_factory=list)
    flow_stack: list[FlowRec] = field(default_factory=list)
    if_stack: list[ast.If] = field(default_factory=list)

    @property
    def is_module(self) -> bool:
        return isinstance(self.node, ast.Module)

    @property
    def self_name(self) -> str | None:
        return self.params[0] if self.cls is not None and self.params else None

    def assigned(self, name: str) -> bool:
        return any(name in f.targets for f in self.flows)


@dataclass(eq=False)
class Facts:
    module: Scope
    scopes: list[Scope] = field(default_factory=list)
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    path: str = ""
    lines: Sequence[str] = ()
    #: Where each ``if`` statement starts, by ``id`` of its node.
    ifs: dict[int, Where] = field(default_factory=dict)
    #: The module's text (exact code of nodes) and its index (parents, names).
    text: SourceText | None = None
    index: ModuleIndex | None = None

    def line_matches(self, pos: Pos, pattern: re.Pattern[str]) -> bool:
        """``pattern`` occurs on line ``pos[0]`` from column ``pos[1]`` on."""
        if not 0 < pos[0] <= len(self.lines):
            return False
        return pattern.search(self.lines[pos[0] - 1], pos[1]) is not None




def collect(tree: ast.Module, index: ModuleIndex, text: SourceText, path: str = "",
            lines: Sequence[str] = ()) -> Facts:
    """The facts of one module, from one walk of its tree."""
    return _Collector(index, text, path, lines).run(tree)


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_ASSIGNS = (ast.Assign, ast.AnnAssign, ast.AugAssign)
_FLOW_METHODS = frozenset({"append", "extend", "add", "update", "put"})


class _Collector:
    """Walks the tree once, in the order the code is written, keeping per scope the
    loops, ``with`` blocks, ``if`` statements and assignments around the current node."""

    def __init__(self, index: ModuleIndex, text: SourceText, path: str, lines: Sequence[str]) -> None:
        self.index = index
        self.text = text
        self.path = path
        self.lines = lines
        self.facts: Facts | None = None
        self._scope_stack: list[Scope] = []
        self._class_stack: list[ClassInfo] = []
        self._locate = text.start

    def run(self, tree: ast.Module) -> Facts:
        module = Scope(tree, "", None, None)
        self.facts = Facts(module, [module], path=self.path, lines=self.lines, text=self.text,
                           index=self.index)
        self._scope_stack = [module]
        # Iterative: generated code nests deeper than Python recurses. A tuple on the
        # stack means "leave this node"; only the kinds in ``_ENTER`` are recorded.
        enter = _ENTER.get
        reorder = SOURCE_ORDER.get
        stack: list[object] = list(reversed(source_children(tree)))
        while stack:
            node = stack.pop()
            kind = type(node)
            if kind is tuple:
                self._leave(node[0])  # type: ignore[index]
                continue
            handler = enter(kind)
            if handler is not None and handler(self, node):
                stack.append((node,))
            order = reorder(kind)
            below = children(node) if order is None else order(node)
            if below:
                below.reverse()
                stack.extend(below)
        return self.facts

    # -- helpers ---------------------------------------------------------------------------

    def _cur(self) -> Scope:
        return self._scope_stack[-1]

    def _qnames(self, node: ast.AST) -> frozenset[str]:
        return frozenset(self.index.qualified(node))

    def _grad_of(self, expr: ast.expr) -> GradCtx | None:
        """The autograd state a ``with`` item or decorator sets, if it is about autograd."""
        call = expr if isinstance(expr, ast.Call) else None
        target = call.func if call is not None else expr
        q = self._qnames(target)
        text = dotted(target) or ""
        args = args_of(call) if call is not None else ()
        first = args[0].value if args else None
        if q & GRAD_OFF:
            if first is not None and literal_flag(first) is True:
                return None  # inference_mode(False): leaves autograd as it was
            return GradCtx(expr, Grad.OFF, text)
        if q & GRAD_ON:
            return GradCtx(expr, Grad.ON, text)
        if q & GRAD_SET and first is not None:
            flag = literal_flag(first)
            state = Grad.UNKNOWN if flag is None else (Grad.OFF if flag else Grad.ON)
            return GradCtx(expr, state, text)
        if isinstance(expr, ast.IfExp):
            # ``torch.no_grad() if not train else nullcontext()``: chosen at run time.
            for branch in (expr.body, expr.orelse):
                if self._grad_of(branch) is not None:
                    return GradCtx(expr, Grad.UNKNOWN, text)
        return None

    # -- entering and leaving nodes --------------------------------------------------------

    def _if(self, node: ast.If) -> bool:
        self._cur().if_stack.append(node)
        self.facts.ifs[id(node)] = Where(node, self._locate)  # type: ignore[union-attr]
        return True

    def _for(self, node: ast.For | ast.AsyncFor) -> bool:
        self._push_loop(node, node.iter, Where(node, self._locate))
        return True

    def _while(self, node: ast.While) -> bool:
        self._push_loop(node, node.test, Where(node, self._locate))
        return True

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> bool:
        gen = node.generators[0]
        self._push_loop(node, gen.iter, Where(gen, self._comprehension_for))
        return True

    def _leave(self, node: ast.AST) -> None:
        kind = type(node)
        if kind is ast.Call or kind in _ASSIGNS:
            stack = self._cur().flow_stack
            while stack and stack[-1].stmt is node:
                stack.pop()
        elif kind is ast.If:
            self._cur().if_stack.pop()
        elif kind in (ast.For, ast.AsyncFor, ast.While) or kind in _COMPREHENSIONS:
            self._cur().loop_stack.pop()
        elif kind is ast.With or kind is ast.AsyncWith:
            scope = self._cur()
            scope.with_stack.pop()
            if scope.grad_stack and scope.grad_stack[-1].node is node:
                scope.grad_stack.pop()
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self._scope_stack.pop()
        elif kind is ast.ClassDef:
            self._class_stack.pop()

    # -- scopes ----------------------------------------------------------------------------

    def _class(self, node: ast.ClassDef) -> bool:
        qn: set[str] = set()
        names = []
        for base in node.bases:
            qn |= self._qnames(base)
            d = dotted(base)
            if d:
                names.append(d)
        info = ClassInfo(node, node.name, frozenset(qn), tuple(names))
        if not self._class_stack and self._cur().is_module:
            self.facts.classes.setdefault(info.name, info)  # type: ignore[union-attr]
        self._class_stack.append(info)
        return True

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        parent = self._cur()
        owner = self._class_stack[-1] if self._class_stack else None
        # A method, not a function nested in one.
        cls = owner if owner is not None and any(s is node for s in owner.node.body) else None
        a = node.args
        params = tuple(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs))
        scope = Scope(node, node.name, parent, cls, params)
        for dec in node.decorator_list:
            ctx = self._grad_of(dec)
            if ctx is not None:
                scope.decorator = ctx
        if cls is not None:
            cls.methods.setdefault(scope.name, scope)
        else:
            parent.children.setdefault(scope.name, scope)
        self.facts.scopes.append(scope)  # type: ignore[union-attr]
        self._scope_stack.append(scope)
        return True

    # -- loops and blocks ------------------------------------------------------------------

    def _push_loop(self, node: ast.AST, expr: ast.expr, kw: Where) -> None:
        scope = self._cur()
        iterables = tuple(_iterables(expr, self.text)) if not isinstance(node, ast.While) else ()
        loop = Loop(
            node, Where(node, self._locate), scope, scope.loop_stack[-1] if scope.loop_stack else None,
            iterables, tuple(_words(expr, self.text)), kw, draws=not iterables,
            ifs=tuple(scope.if_stack),
        )
        scope.loops.append(loop)
        scope.loop_stack.append(loop)

    def _comprehension_for(self, gen: ast.AST) -> Pos:
        """Where a comprehension's ``for`` keyword is (``async for``: at ``async``):
        ``ast`` keeps no position for the clause, so it is read off the text before its
        target."""
        line, col = self.text.start(gen.target)  # type: ignore[attr-defined]
        lines = self.text.lines
        i = line - 1
        head = lines[i][:col] if 0 <= i < len(lines) else ""
        while i >= 0:
            found = None
            for m in _FOR_KEYWORD.finditer(head):
                found = m
            if found is not None:
                before = head[:found.start()].rstrip()
                if gen.is_async and before.endswith("async"):  # type: ignore[attr-defined]
                    return (i + 1, len(before) - len("async"))
                return (i + 1, found.start())
            i -= 1
            head = lines[i] if i >= 0 else ""
        return (line, col)

    def _with(self, node: ast.With | ast.AsyncWith) -> bool:
        scope = self._cur()
        ctx = None
        for item in node.items:
            ctx = self._grad_of(item.context_expr) or ctx
        scope.with_stack.append(node)
        if ctx is not None:
            ctx.node = node
            ctx.where = Where(node, self._locate)
            scope.grad_stack.append(ctx)
        return True

    # -- value flow ----------------------------------------------------------------------

    def _assign(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> bool:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                self._flow(node, t, node.value)
            return True
        if node.value is None:
            return False
        self._flow(node, node.target, node.value)
        return True

    def _flow(self, stmt: ast.AST, target: ast.expr, value: ast.expr) -> None:
        scope = self._cur()
        pos = Where(stmt, self._locate)
        if isinstance(target, (ast.Tuple, ast.List)):
            names = [_target_name(e) for e in target.elts]
            rec = FlowRec(pos, tuple(n for n in names if n), value, None, scope, stmt)
            scope.flows.append(rec)
            scope.flow_stack.append(rec)
            # Each part separately too, so a name maps to its own piece of the value.
            for i, n in enumerate(names):
                if n:
                    scope.flows.append(FlowRec(pos, (n,), value, i, scope))
            return
        name = _target_name(target)
        rec = FlowRec(pos, (name,) if name else (), value, None, scope, stmt)
        scope.flows.append(rec)
        scope.flow_stack.append(rec)
        if name and scope.self_name and name.startswith(scope.self_name + "."):
            attr = name[len(scope.self_name) + 1:]
            scope.cls.attrs.setdefault(attr, []).append(rec)  # type: ignore[union-attr]

    # -- calls ------------------------------------------------------------------------------

    def _call(self, node: ast.Call) -> bool:
        scope = self._cur()
        func = dotted(node.func)
        rec = CallRec(
            node, Where(node, self._locate), scope, func, self.index, tuple(scope.loop_stack),
            scope.grad_stack[-1] if scope.grad_stack else None,
            scope.with_stack[-1] if scope.with_stack else None,
            scope.flow_stack[-1] if scope.flow_stack else None,
            ifs=tuple(scope.if_stack),
        )
        scope.calls.append(rec)
        for loop in scope.loop_stack:
            loop.calls.append(rec)
        if scope.loop_stack and scope.loop_stack[-1].draws:
            drawn = _drawn_from(node, func)
            loop = scope.loop_stack[-1]
            if drawn and drawn not in loop.iterables:
                loop.iterables = (*loop.iterables, drawn)
        if _is_training_call(rec):
            scope.trains = True
            for loop in scope.loop_stack:
                loop.trains = True
        attr = rec.attr
        if attr in _FLOW_METHODS and rec.receiver:
            # ``outputs.append(model(x))`` moves the forward's output into ``outputs``.
            flow = FlowRec(rec.where, (rec.receiver,), node, None, scope, node)
            scope.flows.append(flow)
            scope.flow_stack.append(flow)
            return True
        return False


#: What the walk records, by node kind: each handler says whether the node must be left.
_ENTER = {
    ast.Call: _Collector._call,
    ast.Assign: _Collector._assign,
    ast.AnnAssign: _Collector._assign,
    ast.AugAssign: _Collector._assign,
    ast.If: _Collector._if,
    ast.For: _Collector._for,
    ast.AsyncFor: _Collector._for,
    ast.While: _Collector._while,
    ast.ListComp: _Collector._comprehension,
    ast.SetComp: _Collector._comprehension,
    ast.GeneratorExp: _Collector._comprehension,
    ast.DictComp: _Collector._comprehension,
    ast.With: _Collector._with,
    ast.AsyncWith: _Collector._with,
    ast.FunctionDef: _Collector._function,
    ast.AsyncFunctionDef: _Collector._function,
    ast.ClassDef: _Collector._class,
}

_FOR_KEYWORD = re.compile(r"\bfor\b")


def _target_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Starred):
        expr = expr.value
    return dotted(expr)


_UNWRAP = frozenset({"enumerate", "tqdm", "iter", "zip", "tqdm.tqdm", "trange", "progress_bar",
                     "track", "islice", "itertools.islice", "cycle", "itertools.cycle"})


def _iterables(expr: ast.expr, text: SourceText) -> Iterator[str]:
    """The objects a ``for`` iterates: ``val_loader`` in ``enumerate(tqdm(val_loader))``."""
    if isinstance(expr, ast.Call):
        if isinstance(expr.func, ast.Attribute) and expr.func.attr == "__iter__":
            yield from _iterables(expr.func.value, text)  # ``loader.__iter__()``
            return
        func = dotted(expr.func)
        if func in _UNWRAP or (func or "").endswith(("tqdm", "progress_bar")):
            for arg in args_of(expr):
                if arg.keyword is None:
                    yield from _iterables(arg.value, text)
                    if func not in ("zip",):
                        break
            return
        return
    if isinstance(expr, ast.Subscript):
        name = dotted(expr.value)
        if name:
            key = expr.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, (str, bytes)):
                code = text.code(key)
                if STRING_TOKEN.fullmatch(code):  # one string as written, not joined
                    yield f"{name}[{code}]"
                    return
            yield name
        return
    name = dotted(expr)
    if name:
        yield name


def _drawn_from(node: ast.Call, func: str | None) -> str | None:
    """The iterator a call takes the next batch from: ``it`` in ``next(it)``,
    ``it.next()``, ``it.__next__()``."""
    args = args_of(node)
    if func == "next":
        first = args[0] if args else None
        if first is not None and first.keyword is None and not first.star:
            return dotted(first.value)
        return None
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr in ("next", "__next__") and not args:
        return dotted(f.value)
    return None


def _words(expr: ast.AST, text: SourceText | None) -> Iterator[str]:
    """Names and string constants (as written, quotes included) in an expression; with
    no ``text``, the names alone."""
    stack: list[ast.AST] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Name, ast.Attribute)):
            d = dotted(node)
            if d:
                yield d
                continue
        name = _held_name(node)
        if name is not None:
            yield name
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if text is not None:
                yield from _string_parts(text.code(node))
            continue
        if isinstance(node, ast.JoinedStr):
            # An f-string's text is no string of its own: only its fields are read.
            stack.extend(v for v in node.values if isinstance(v, ast.FormattedValue))
            continue
        stack.extend(children(node))


def _string_parts(code: str) -> Iterator[str]:
    """The string literals an implicitly joined string is written as (``"a" "b"``)."""
    found = False
    for m in STRING_TOKEN.finditer(code):
        found = True
        yield m.group(0)
    if not found:
        yield code


def _held_name(node: ast.AST) -> str | None:
    """A name the node holds that the analyses read as a word (libcst, which they were
    first written on, keeps it as a ``Name`` node): an attribute of something not dotted
    (``f(x).attr``), a keyword argument's name, a lambda's parameter."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.keyword):
        return node.arg
    if isinstance(node, ast.arg):
        return node.arg
    return None


def names_in(expr: ast.AST) -> set[str]:
    """Dotted names (and their roots) an expression reads."""
    out: set[str] = set()
    for word in _words(expr, None):
        out.add(word)
        out.add(word.split(".", 1)[0])
    return out


#: The last names of ``AUTOGRAD_CALLS``: only a call of one of these can be one.
_AUTOGRAD_LAST = frozenset(q.rpartition(".")[2] for q in AUTOGRAD_CALLS)


def _is_training_call(rec: CallRec) -> bool:
    last = (rec.func or "").rpartition(".")[2]
    if last in _AUTOGRAD_LAST and rec.qnames & AUTOGRAD_CALLS:
        return True
    attr = rec.attr
    if attr in TRAIN_METHODS:
        # ``scheduler.step()`` moves no weights; everything else named step() does.
        recv = (rec.receiver or "").lower()
        return not (attr == "step" and ("sched" in recv or "lr" == recv.rsplit(".", 1)[-1]))
    return False
