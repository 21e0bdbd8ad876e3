"""The facts ML002/ML003/ML007 decide from, gathered in the engine's single traversal.

``FactsCollector`` is a rule base class: its visit methods record, per scope (the module
or a function), the calls in source order with the loops, ``with`` blocks and assignment
around each, the loops with what they iterate, the assignments, and the classes with their
bases and ``self.x = ...`` attributes. Deciding is left to ``ValidationAnalysis``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import PositionProvider, QualifiedNameProvider, QualifiedNameSource

from mllint.analysis.syntax import dotted_name, qualified_names
from mllint.analysis.validation.names import (
    AUTOGRAD_CALLS,
    GRAD_OFF,
    GRAD_ON,
    GRAD_SET,
    TRAIN_METHODS,
    Pos,
)
from mllint.engine.traversal import children
from mllint.rule import FileContext, Rule

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


# -- facts gathered during the traversal ---------------------------------------------------


@dataclass(eq=False)
class GradCtx:
    """One ``with`` block (or decorator) that sets autograd state."""

    node: cst.CSTNode
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
    node: cst.CSTNode
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
    ifs: tuple[cst.If, ...] = ()
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

    def __init__(self, node: cst.CSTNode, locate: Callable[[cst.CSTNode], Pos]) -> None:
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
    node: cst.Call
    where: Where
    scope: Scope
    func: str | None
    qnames: frozenset[str]
    loops: tuple[Loop, ...]
    grad: GradCtx | None
    with_node: cst.With | None
    flow: FlowRec | None
    #: The callee is reached through an import (``from timm import create_model``).
    imported: bool = False
    #: The ``if`` statements around it in its scope, outermost first.
    ifs: tuple[cst.If, ...] = ()

    @property
    def pos(self) -> Pos:
        return self.where.pos

    @property
    def attr(self) -> str | None:
        f = self.node.func
        return f.attr.value if isinstance(f, cst.Attribute) else None

    @property
    def receiver(self) -> str | None:
        f = self.node.func
        return dotted_name(f.value) if isinstance(f, cst.Attribute) else None

    @property
    def line(self) -> int:
        return self.pos[0]


@dataclass(eq=False)
class FlowRec:
    """A statement moving values: ``a = f(b)``, ``a += b``, ``acc.append(b)``."""

    where: Where
    targets: tuple[str, ...]
    value: cst.BaseExpression | None
    index: int | None = None  # position in a tuple-unpacking target
    scope: Scope | None = None

    @property
    def pos(self) -> Pos:
        return self.where.pos


@dataclass(eq=False)
class ClassInfo:
    node: cst.ClassDef
    name: str
    base_qnames: frozenset[str]
    base_names: tuple[str, ...]
    methods: dict[str, Scope] = field(default_factory=dict)
    attrs: dict[str, list[FlowRec]] = field(default_factory=dict)


@dataclass(eq=False)
class Scope:
    """The module, or one function (methods included); class bodies belong to their scope."""

    node: cst.Module | cst.FunctionDef
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
    with_stack: list[cst.With] = field(default_factory=list)
    flow_stack: list[FlowRec] = field(default_factory=list)
    if_stack: list[cst.If] = field(default_factory=list)

    @property
    def is_module(self) -> bool:
        return isinstance(self.node, cst.Module)

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

    def line_matches(self, pos: Pos, pattern: re.Pattern[str]) -> bool:
        """``pattern`` occurs on line ``pos[0]`` from column ``pos[1]`` on."""
        if not 0 < pos[0] <= len(self.lines):
            return False
        return pattern.search(self.lines[pos[0] - 1], pos[1]) is not None


_SHARED_KEY = "validation-facts"


class FactsCollector(Rule):
    """Records ``self.facts`` while the engine walks the module once."""

    abstract = True
    METADATA_DEPENDENCIES = (PositionProvider, QualifiedNameProvider)

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._scope_stack: list[Scope] = []
        self._class_stack: list[ClassInfo] = []
        self.facts: Facts | None = None
        self._owner: FactsCollector | None = None

    def get_visitors(self):  # type: ignore[override]
        """The facts do not depend on the rule: the first collector of a traversal gathers
        them, and the others (ML002, ML003 and ML007 run together) only read them when
        the module is left, instead of walking the same calls three times over."""
        owner = self.context.shared.setdefault(_SHARED_KEY, self)
        if owner is self:
            self._owner = None
            return super().get_visitors()
        self._owner = owner
        return {"leave_Module": self.leave_Module}

    def shared_facts(self) -> Facts | None:
        return self.facts if self._owner is None else self._owner.facts

    # -- helpers ---------------------------------------------------------------------------

    def _pos(self, node: cst.CSTNode) -> Pos:
        start = self.get_metadata(PositionProvider, node).start
        return (start.line, start.column)

    def _qnames(self, node: cst.CSTNode) -> frozenset[str]:
        return frozenset(qualified_names(self, node))

    def _qualified(self, node: cst.CSTNode) -> set:
        try:
            return self.get_metadata(QualifiedNameProvider, node, set())
        except KeyError:
            return set()

    def _cur(self) -> Scope:
        # A method, not a property: libcst's batching inspects every attribute.
        return self._scope_stack[-1]

    def _grad_of(self, expr: cst.BaseExpression) -> GradCtx | None:
        """The autograd state a ``with`` item or decorator sets, if it is about autograd."""
        call = expr if isinstance(expr, cst.Call) else None
        target = call.func if call is not None else expr
        q = self._qnames(target)
        text = dotted_name(target) or ""
        if q & GRAD_OFF:
            if call is not None and call.args and _is_false_literal(call.args[0].value) is True:
                return None  # inference_mode(False): leaves autograd as it was
            return GradCtx(expr, Grad.OFF, text)
        if q & GRAD_ON:
            return GradCtx(expr, Grad.ON, text)
        if q & GRAD_SET and call is not None and call.args:
            flag = _is_false_literal(call.args[0].value)
            state = Grad.UNKNOWN if flag is None else (Grad.OFF if flag else Grad.ON)
            return GradCtx(expr, state, text)
        if isinstance(expr, cst.IfExp):
            # ``torch.no_grad() if not train else nullcontext()``: chosen at run time.
            for branch in (expr.body, expr.orelse):
                if self._grad_of(branch) is not None:
                    return GradCtx(expr, Grad.UNKNOWN, text)
        return None

    # -- scopes ----------------------------------------------------------------------------

    def visit_Module(self, node: cst.Module) -> None:
        module = Scope(node, "", None, None)
        self.facts = Facts(module, [module], path=self.context.path, lines=self.context.lines)
        self._scope_stack = [module]

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        qn: set[str] = set()
        names = []
        for base in node.bases:
            qn |= self._qnames(base.value)
            d = dotted_name(base.value)
            if d:
                names.append(d)
        info = ClassInfo(node, node.name.value, frozenset(qn), tuple(names))
        if not self._class_stack and self._cur().is_module:
            self.facts.classes.setdefault(info.name, info)
        self._class_stack.append(info)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._class_stack.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        parent = self._cur()
        cls = None
        owner = self._class_stack[-1] if self._class_stack else None
        if owner is not None and owner.node.body is _parent_block(node, owner.node):
            cls = owner  # a method, not a function nested in one
        p = node.params
        params = tuple(x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params))
        scope = Scope(node, node.name.value, parent, cls, params)
        for dec in node.decorators:
            ctx = self._grad_of(dec.decorator)
            if ctx is not None:
                scope.decorator = ctx
        if cls is not None:
            cls.methods.setdefault(scope.name, scope)
        else:
            parent.children.setdefault(scope.name, scope)
        self.facts.scopes.append(scope)
        self._scope_stack.append(scope)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._scope_stack.pop()

    # -- loops and blocks ------------------------------------------------------------------

    def visit_For(self, node: cst.For) -> None:
        self._push_loop(node, node.iter, node)

    def leave_For(self, original_node: cst.For) -> None:
        self._cur().loop_stack.pop()

    def visit_While(self, node: cst.While) -> None:
        self._push_loop(node, node.test, node)

    def leave_While(self, original_node: cst.While) -> None:
        self._cur().loop_stack.pop()

    def _push_loop(self, node: cst.CSTNode, expr: cst.BaseExpression, kw: cst.CSTNode) -> None:
        scope = self._cur()
        iterables = tuple(_iterables(expr)) if not isinstance(node, cst.While) else ()
        loop = Loop(
            node, Where(node, self._pos), scope, scope.loop_stack[-1] if scope.loop_stack else None,
            iterables, tuple(_words(expr)), Where(kw, self._pos), draws=not iterables,
            ifs=tuple(scope.if_stack),
        )
        scope.loops.append(loop)
        scope.loop_stack.append(loop)

    # A comprehension is a loop too: ``[model(x) for x, _ in val_loader]``.
    def visit_ListComp(self, node: cst.ListComp) -> None:
        self._push_loop(node, node.for_in.iter, node.for_in)

    def leave_ListComp(self, original_node: cst.ListComp) -> None:
        self._cur().loop_stack.pop()

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> None:
        self._push_loop(node, node.for_in.iter, node.for_in)

    def leave_GeneratorExp(self, original_node: cst.GeneratorExp) -> None:
        self._cur().loop_stack.pop()

    def visit_SetComp(self, node: cst.SetComp) -> None:
        self._push_loop(node, node.for_in.iter, node.for_in)

    def leave_SetComp(self, original_node: cst.SetComp) -> None:
        self._cur().loop_stack.pop()

    def visit_DictComp(self, node: cst.DictComp) -> None:
        self._push_loop(node, node.for_in.iter, node.for_in)

    def leave_DictComp(self, original_node: cst.DictComp) -> None:
        self._cur().loop_stack.pop()

    def visit_With(self, node: cst.With) -> None:
        scope = self._cur()
        ctx = None
        for item in node.items:
            ctx = self._grad_of(item.item) or ctx
        scope.with_stack.append(node)
        if ctx is not None:
            ctx.node = node
            ctx.where = Where(node, self._pos)
            scope.grad_stack.append(ctx)

    def leave_With(self, original_node: cst.With) -> None:
        scope = self._cur()
        scope.with_stack.pop()
        if scope.grad_stack and scope.grad_stack[-1].node is original_node:
            scope.grad_stack.pop()

    def visit_If(self, node: cst.If) -> None:
        self._cur().if_stack.append(node)
        self.facts.ifs[id(node)] = Where(node, self._pos)

    def leave_If(self, original_node: cst.If) -> None:
        self._cur().if_stack.pop()

    # -- value flow ----------------------------------------------------------------------

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._flow(node, t.target, node.value)

    def leave_Assign(self, original_node: cst.Assign) -> None:
        self._pop_flows(original_node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._flow(node, node.target, node.value)

    def leave_AnnAssign(self, original_node: cst.AnnAssign) -> None:
        self._pop_flows(original_node)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._flow(node, node.target, node.value)

    def leave_AugAssign(self, original_node: cst.AugAssign) -> None:
        self._pop_flows(original_node)

    def _flow(self, stmt: cst.CSTNode, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        scope = self._cur()
        pos = Where(stmt, self._pos)
        if isinstance(target, (cst.Tuple, cst.List)):
            names = [_target_name(e.value) for e in target.elements]
            rec = FlowRec(pos, tuple(n for n in names if n), value, None, scope)
            scope.flows.append(rec)
            scope.flow_stack.append(rec)
            # Each part separately too, so a name maps to its own piece of the value.
            for i, n in enumerate(names):
                if n:
                    scope.flows.append(FlowRec(pos, (n,), value, i, scope))
            rec.stmt = stmt  # type: ignore[attr-defined]
            return
        name = _target_name(target)
        rec = FlowRec(pos, (name,) if name else (), value, None, scope)
        rec.stmt = stmt  # type: ignore[attr-defined]
        scope.flows.append(rec)
        scope.flow_stack.append(rec)
        if name and scope.self_name and name.startswith(scope.self_name + "."):
            attr = name[len(scope.self_name) + 1:]
            scope.cls.attrs.setdefault(attr, []).append(rec)  # type: ignore[union-attr]

    def _pop_flows(self, stmt: cst.CSTNode) -> None:
        stack = self._cur().flow_stack
        while stack and getattr(stack[-1], "stmt", None) is stmt:
            stack.pop()

    # -- calls ------------------------------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        scope = self._cur()
        func = dotted_name(node.func)
        qualified = self._qualified(node.func)
        qnames = frozenset(q.name for q in qualified)
        rec = CallRec(
            node, Where(node, self._pos), scope, func, qnames, tuple(scope.loop_stack),
            scope.grad_stack[-1] if scope.grad_stack else None,
            scope.with_stack[-1] if scope.with_stack else None,
            scope.flow_stack[-1] if scope.flow_stack else None,
            # ``import model`` then ``model = model.RNNModel(...)``: the name is rebound,
            # so a call of it is not (only) a call of the module.
            imported=bool(qualified) and all(q.source is QualifiedNameSource.IMPORT
                                             for q in qualified),
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
        if attr in ("append", "extend", "add", "update", "put") and rec.receiver:
            # ``outputs.append(model(x))`` moves the forward's output into ``outputs``.
            flow = FlowRec(rec.where, (rec.receiver,), node, None, scope)
            flow.stmt = node  # type: ignore[attr-defined]
            scope.flows.append(flow)
            scope.flow_stack.append(flow)

    def leave_Call(self, original_node: cst.Call) -> None:
        self._pop_flows(original_node)

def _parent_block(node: cst.FunctionDef, cls: cst.ClassDef) -> cst.BaseSuite | None:
    """``cls.body`` when ``node`` is one of its direct statements (a method)."""
    body = cls.body
    stmts = getattr(body, "body", ())
    return body if any(s is node for s in stmts) else None


def _is_false_literal(expr: cst.BaseExpression) -> bool | None:
    """True for ``False``, False for ``True``, None for anything decided at run time."""
    if isinstance(expr, cst.Name) and expr.value in ("True", "False"):
        return expr.value == "False"
    return None


def _target_name(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.Subscript):
        expr = expr.value
    if isinstance(expr, cst.StarredElement):
        expr = expr.value
    return dotted_name(expr)


_UNWRAP = frozenset({"enumerate", "tqdm", "iter", "zip", "tqdm.tqdm", "trange", "progress_bar",
                     "track", "islice", "itertools.islice", "cycle", "itertools.cycle"})


def _iterables(expr: cst.BaseExpression) -> Iterator[str]:
    """The objects a ``for`` iterates: ``val_loader`` in ``enumerate(tqdm(val_loader))``."""
    if isinstance(expr, cst.Call):
        if isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "__iter__":
            yield from _iterables(expr.func.value)  # ``loader.__iter__()``
            return
        func = dotted_name(expr.func)
        if func in _UNWRAP or (func or "").endswith(("tqdm", "progress_bar")):
            for arg in expr.args:
                if arg.keyword is None:
                    yield from _iterables(arg.value)
                    if func not in ("zip",):
                        break
            return
        return
    if isinstance(expr, cst.Subscript):
        name = dotted_name(expr.value)
        if name:
            key = expr.slice[0].slice if len(expr.slice) == 1 else None
            if isinstance(key, cst.Index) and isinstance(key.value, cst.SimpleString):
                yield f"{name}[{key.value.value}]"
                return
            yield name
        return
    name = dotted_name(expr)
    if name:
        yield name


def _drawn_from(node: cst.Call, func: str | None) -> str | None:
    """The iterator a call takes the next batch from: ``it`` in ``next(it)``,
    ``it.next()``, ``it.__next__()``."""
    if func == "next":
        first = node.args[0] if node.args else None
        if first is not None and first.keyword is None and not first.star:
            return dotted_name(first.value)
        return None
    f = node.func
    if isinstance(f, cst.Attribute) and f.attr.value in ("next", "__next__") and not node.args:
        return dotted_name(f.value)
    return None


def _words(expr: cst.BaseExpression) -> Iterator[str]:
    """Names and string constants in an expression (small subtrees only)."""
    stack: list[cst.CSTNode] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Name, cst.Attribute)):
            d = dotted_name(node)
            if d:
                yield d
                continue
        if isinstance(node, cst.SimpleString):
            yield node.value
            continue
        stack.extend(children(node))


def names_in(expr: cst.CSTNode) -> set[str]:
    """Dotted names (and their roots) an expression reads."""
    out: set[str] = set()
    for w in _words(expr):  # type: ignore[arg-type]
        if w[:1] in "\"'" or w[:1] in "bfrBFR" and w[1:2] in "\"'":
            continue
        out.add(w)
        out.add(w.split(".", 1)[0])
    return out


def _is_training_call(rec: CallRec) -> bool:
    if rec.qnames & AUTOGRAD_CALLS:
        return True
    attr = rec.attr
    if attr in TRAIN_METHODS:
        # ``scheduler.step()`` moves no weights; everything else named step() does.
        recv = (rec.receiver or "").lower()
        return not (attr == "step" and ("sched" in recv or "lr" == recv.rsplit(".", 1)[-1]))
    return False


