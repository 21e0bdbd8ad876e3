"""Where a node sits and where a value comes from, in one module, on Python's ``ast``.

``ModuleIndex`` answers, for a rule that decides on ``ast``, the questions the libcst
rules ask: which function, class or loop holds a node,
which same-module function (or method) a call runs and who calls a function, the loops a
node runs in through those callers (``loop_chains``), and every expression a name or
``self.attr`` may hold (``origins``: assignments, tuple unpacking, parameters filled by
callers or defaults, what another module's function of the project returns). Bindings
come from ``scopes`` (flow-insensitive, like libcst's), qualified names from the
module's imports and builtins. Everything is lazy and kept per index; the node walk and
the parents are shared with the prefilter (``gates.resolve.nodes``).
"""

from __future__ import annotations

import ast
import builtins
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from mllint.analysis.pyast.scopes import Scopes, default_of
from mllint.analysis.pyast.syntax import FUNCTIONS, SourceText
from mllint.gates.resolve import dotted, nodes, parents, returns_of

LOOPS = (ast.For, ast.AsyncFor, ast.While)
Function = ast.FunctionDef | ast.AsyncFunctionDef
Loop = ast.For | ast.AsyncFor | ast.While

#: How far value tracing and call-graph walks go: real code rarely needs more, and the
#: caps keep pathological files (deep alias chains, recursion) cheap.
MAX_TRACE_DEPTH = 6
MAX_CALLER_DEPTH = 4
MAX_CHAINS = 8

_BUILTINS = frozenset(dir(builtins))

#: What turns autograd off, on, or either way around a block (``with``, decorators).
NO_GRAD = frozenset({
    "torch.no_grad",
    "torch.inference_mode",
    "torch.autograd.no_grad",
    "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.no_grad",
    "torch.autograd.grad_mode.inference_mode",
})
#: The final name of a wrapper that disables autograd, when torch does not define it.
NO_GRAD_WORD = re.compile(r"no_?grad|inference_mode", re.IGNORECASE)
ENABLE_GRAD = frozenset({"torch.enable_grad", "torch.autograd.enable_grad",
                         "torch.autograd.grad_mode.enable_grad"})
SET_GRAD_ENABLED = frozenset({
    "torch.set_grad_enabled",
    "torch.autograd.set_grad_enabled",
    "torch.autograd.grad_mode.set_grad_enabled",
})


class GradMode(enum.Enum):
    """Autograd's state around a node, as far as the enclosing code shows it."""

    DISABLED = "disabled"  # no_grad / inference_mode / set_grad_enabled(False)
    MAYBE_DISABLED = "maybe-disabled"  # set_grad_enabled(<expr>)
    ENABLED = "enabled"  # enable_grad / set_grad_enabled(True)
    INHERITED = "inherited"  # nothing lexical: whatever the caller had
#: Roots a star import brings in so commonly that an unbound one means that module.
_STAR_ROOTS = frozenset({"torch"})
_CONDITIONAL = (ast.If, ast.IfExp, ast.ExceptHandler, ast.match_case, ast.BoolOp)
TRIES = (ast.Try, getattr(ast, "TryStar", ast.Try))


def position(node: ast.AST) -> tuple[int, int, int, int]:
    """A sort key in source order that puts an enclosing node before the nodes it holds
    starting at the same place (``a.b(c).d()`` before ``a.b(c)``)."""
    return (node.lineno, node.col_offset,  # type: ignore[attr-defined]
            -node.end_lineno, -node.end_col_offset)  # type: ignore[attr-defined]


def start(node: ast.AST) -> tuple[int, int]:
    """Where ``node`` starts (line, column)."""
    return (node.lineno, node.col_offset)  # type: ignore[attr-defined]


def head_and_rest(expr: ast.AST) -> tuple[ast.Name, str] | None:
    """``(a, "b.c")`` for the dotted chain ``a.b.c``; ``None`` for anything else."""
    name = dotted(expr) if isinstance(expr, (ast.Name, ast.Attribute)) else None
    if name is None:
        return None
    head = expr
    while isinstance(head, ast.Attribute):
        head = head.value
    return head, name.partition(".")[2]  # type: ignore[return-value]


def in_list(node: ast.AST, items: list) -> bool:
    return any(item is node for item in items)


def names_in(expr: ast.AST) -> set[str]:
    """Dotted names (``loss``, ``self.total``) read anywhere in an expression."""
    found: set[str] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name is not None:
                found.add(name)
                continue
        elif isinstance(node, ast.Name):
            found.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return found


@dataclass(frozen=True)
class LoopChain:
    """The loops a node runs in, innermost first, continued through the loops around
    same-module call sites of its function."""

    loops: tuple[Loop, ...]
    #: The node runs only on some iterations of ``loops[0]`` (an ``if`` between them).
    guarded: bool


@dataclass(frozen=True)
class Origin:
    """Where a value may come from: an expression that produced it, or a parameter whose
    callers are unknown (``expr`` is then ``None``)."""

    expr: ast.expr | None
    param: ast.arg | None = None
    #: For a name unpacked from a call's result (``opt, msg = build(cfg)``): its position
    #: in the returned tuple; ``expr`` is then that call.
    index: int | None = None


class Tree:
    """Parents and ancestors of the nodes of one module's ``ast`` (the parents come from
    the node walk the prefilter shares)."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree

    @cached_property
    def _parents(self) -> dict[ast.AST, ast.AST]:
        # Made when first asked: an analysis that only names callees never walks up.
        return parents(self.tree)

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self._parents.get(node)

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        cur = self._parents.get(node)
        while cur is not None:
            yield cur
            cur = self._parents.get(cur)

    def within(self, node: ast.AST, container: ast.AST) -> bool:
        return node is container or any(a is container for a in self.ancestors(node))


class ModuleIndex(Tree):
    """Lexical questions about one module's ``ast``."""

    def __init__(self, tree: ast.Module, text: str = "", project=None,
                 star_imports: bool = False) -> None:
        super().__init__(tree)
        self.text = text
        #: The text, cut into lines once (exact code of nodes, columns in characters).
        self.code = SourceText(text)
        #: The project model's view (``project.model.ProjectView``), if any.
        self.project = project
        self.star_imports = star_imports
        self._function_of: dict[ast.AST, Function | None] = {}
        self._calls_by_function: dict[ast.AST | None, list[ast.Call]] | None = None
        self._assigns_by_function: dict[ast.AST | None, list[ast.stmt]] | None = None
        self._call_sites: dict[ast.AST, list[ast.Call]] | None = None
        self._resolved: dict[ast.Call, Function | None] = {}
        self._self_assigns: dict[tuple[ast.ClassDef, str], list[ast.expr]] | None = None

    @cached_property
    def _by_type(self) -> dict[type, list[ast.AST]]:
        return nodes(self.tree)

    @property
    def scopes(self) -> Scopes:
        return Scopes.of(self.tree)

    def of_type(self, *kinds: type) -> list:
        """The module's nodes of these types, in source order."""
        found = [n for kind in kinds for n in self._by_type.get(kind, ())]
        found.sort(key=position)
        return found

    # -- text ----------------------------------------------------------------------------

    def source(self, node: ast.AST) -> str:
        """The code of ``node`` on one line, for messages (``SourceText.one_line``: the
        text is split into lines once, not on every call as ``ast.get_source_segment``
        does)."""
        return self.code.one_line(node)

    # -- where a node sits ---------------------------------------------------------------

    def in_body(self, node: ast.AST, owner: ast.AST) -> bool:
        """``node`` lies in the body of ``owner`` (a loop's or a function's), not in its
        header nor in an ``else`` block."""
        child = node
        for anc in self.ancestors(node):
            if anc is owner:
                return in_list(child, owner.body)  # type: ignore[attr-defined]
            child = anc
        return False

    def statement_of(self, node: ast.AST) -> ast.stmt | None:
        cur: ast.AST | None = node
        while cur is not None and not isinstance(cur, ast.stmt):
            cur = self._parents.get(cur)
        return cur  # type: ignore[return-value]

    def function_of(self, node: ast.AST) -> Function | None:
        """The innermost ``def`` whose body holds ``node`` (lambdas are transparent; a
        decorator or default of a ``def`` is outside it): the first ``def`` above the
        statement holding ``node``, kept per statement."""
        stmt = self.statement_of(node)
        if stmt is None:
            return None
        if stmt in self._function_of:
            return self._function_of[stmt]
        found = None
        for anc in self.ancestors(stmt):
            if isinstance(anc, FUNCTIONS):
                found = anc
                break
        self._function_of[stmt] = found
        return found

    def function_defining(self, param: ast.arg) -> Function | None:
        """The ``def`` whose parameter list holds ``param`` (lambdas give ``None``)."""
        owner = self.parent(self.parent(param))  # type: ignore[arg-type]
        return owner if isinstance(owner, FUNCTIONS) else None

    def class_of(self, func: Function | None) -> ast.ClassDef | None:
        """The class ``func`` is a method of, looking through nested defs (closures)."""
        while func is not None:
            owner = self.parent(func)
            if isinstance(owner, ast.ClassDef):
                return owner
            func = self.function_of(func)
        return None

    def loops_of(self, node: ast.AST) -> list[Loop]:
        """Loops whose *body* holds ``node`` within its function, innermost first."""
        out: list[Loop] = []
        child = node
        for anc in self.ancestors(node):
            if isinstance(anc, FUNCTIONS) and in_list(child, anc.body):
                break
            if isinstance(anc, LOOPS) and in_list(child, anc.body):
                out.append(anc)
            child = anc
        return out

    def conditional_within(self, node: ast.AST, top: ast.AST) -> bool:
        """Whether ``node`` runs only on some passes through ``top`` (an ``if``, an
        exception handler, a ``match`` case or a loop lies between them)."""
        child = node
        for anc in self.ancestors(node):
            if anc is top:
                return False
            if isinstance(anc, _CONDITIONAL):
                return True
            if isinstance(anc, LOOPS) and in_list(child, anc.body):
                return True
            if isinstance(anc, TRIES) and in_list(child, anc.orelse):
                return True
            child = anc
        return False

    def loop_chains(self, node: ast.AST, _depth: int = 0, _guarded: bool = False) -> list[LoopChain]:
        """Every way ``node`` may run inside loops (at most ``MAX_CHAINS``): its own
        function's loops, then those around the call sites of that function."""
        func = self.function_of(node)
        loops = tuple(self.loops_of(node))
        if loops:
            guarded = _guarded or self.conditional_within(node, loops[0])
            outer = self._caller_chains(func, _depth)
            if not outer:
                return [LoopChain(loops, guarded)]
            return [LoopChain(loops + c.loops, guarded) for c in outer]
        if func is None:
            return []
        guarded = _guarded or self.conditional_within(node, func)
        return self._caller_chains(func, _depth, guarded)

    def _caller_chains(self, func: Function | None, depth: int, guarded: bool = False) -> list[LoopChain]:
        if func is None or depth >= MAX_CALLER_DEPTH:
            return []
        out: list[LoopChain] = []
        for site in self.call_sites(func):
            if self.function_of(site) is func:
                continue  # recursion
            out += self.loop_chains(site, depth + 1, guarded)
            if len(out) >= MAX_CHAINS:
                break
        return out[:MAX_CHAINS]

    # -- names ---------------------------------------------------------------------------

    def bindings(self, name: ast.Name) -> list[ast.AST]:
        """The nodes that bind the name ``name`` reads (a ``Name`` target, a parameter, a
        ``def``, a ``class``, an import); builtins have none."""
        return [b.node for b in self.scopes.bindings(name)[1]]

    def qualified(self, expr: ast.AST) -> set[str]:
        """The qualified names a name or dotted chain may denote, as libcst's
        ``QualifiedNameProvider`` gives them: through the module's imports (``F.softmax``
        -> ``torch.nn.functional.softmax``), a name the module defines
        (``FocalLoss``, ``train.<locals>.criterion``), a builtin when nothing binds it
        (``builtins.range``), and ``torch.x`` from a star import when nothing binds
        ``torch``."""
        split = head_and_rest(expr)
        if split is None:
            return set()
        head, rest = split
        name = f"{head.id}.{rest}" if rest else head.id
        found = self.scopes.bindings(head)[1]
        if found:
            out: set[str] = set()
            for b in found:
                base = b.imported if b.imported is not None else _scope_prefix(b.scope) + head.id  # type: ignore[attr-defined]
                out.add(f"{base}.{rest}" if rest else base)
            return out
        first = head.id  # type: ignore[attr-defined]
        if first in _BUILTINS:
            return {f"builtins.{name}"}
        if first in _STAR_ROOTS and self.star_imports:
            return {name}
        return set()

    # -- autograd state ------------------------------------------------------------------

    def grad_mode(self, node: ast.AST) -> GradMode:
        """Autograd's state at ``node`` from ``with`` blocks and decorators of its
        function; ``INHERITED`` when only the caller can tell."""
        child = node
        for anc in self.ancestors(node):
            if isinstance(anc, (ast.With, ast.AsyncWith)) and in_list(child, anc.body):
                for item in anc.items:
                    mode = self._mode_of_manager(item.context_expr)
                    if mode is not None:
                        return mode
            if isinstance(anc, FUNCTIONS) and in_list(child, anc.body):
                for dec in anc.decorator_list:
                    mode = self._mode_of_manager(dec)
                    if mode is not None:
                        return mode
                return GradMode.INHERITED
            child = anc
        return GradMode.INHERITED

    def _mode_of_manager(self, expr: ast.expr) -> GradMode | None:
        callee = expr.func if isinstance(expr, ast.Call) else expr
        names = self.qualified(callee)
        if names & NO_GRAD or self._named_no_grad(callee, names):
            return GradMode.DISABLED
        if names & ENABLE_GRAD:
            return GradMode.ENABLED
        if names & SET_GRAD_ENABLED and isinstance(expr, ast.Call) and (expr.args or expr.keywords):
            value = expr.args[0] if expr.args else expr.keywords[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                return GradMode.ENABLED if value.value else GradMode.DISABLED
            return GradMode.MAYBE_DISABLED
        return None

    @staticmethod
    def _named_no_grad(callee: ast.expr, names: set[str]) -> bool:
        """A decorator or context manager torch does not define whose name says it turns
        autograd off (yolov5's ``@smart_inference_mode()``, ``@torch_no_grad``): a
        finding that needs autograd on would be a guess against the author's own word."""
        if any(n.startswith("torch.") for n in names):
            return False  # torch's own names are known exactly (``NO_GRAD``)
        written = {n.rsplit(".", 1)[-1] for n in names}
        name = dotted(callee)
        if name is not None:
            written.add(name.rsplit(".", 1)[-1])
        return any(NO_GRAD_WORD.search(w) for w in written)

    # -- functions and calls -------------------------------------------------------------

    def calls(self) -> list[ast.Call]:
        """Every call of the module, in source order (outer calls first)."""
        return self.of_type(ast.Call)

    def calls_in_function(self, func: Function | None) -> list[ast.Call]:
        if self._calls_by_function is None:
            groups: dict[ast.AST | None, list[ast.Call]] = {}
            for call in self.calls():
                groups.setdefault(self.function_of(call), []).append(call)
            self._calls_by_function = groups
        return self._calls_by_function.get(func, [])

    def assigns_in_function(self, func: Function | None) -> list[ast.stmt]:
        """The assignments (``=``, ``+=``, annotated) ``func`` itself holds (``None``:
        module level), in source order."""
        if self._assigns_by_function is None:
            groups: dict[ast.AST | None, list[ast.stmt]] = {}
            for node in self.of_type(ast.Assign, ast.AugAssign, ast.AnnAssign):
                groups.setdefault(self.function_of(node), []).append(node)
            self._assigns_by_function = groups
        return self._assigns_by_function.get(func, [])

    def returns_of(self, func: Function) -> list[ast.Return]:
        """The ``return`` statements of ``func`` (not of functions nested in it)."""
        return sorted(returns_of(self.tree, func), key=position)

    def class_methods(self, cls: ast.ClassDef, name: str, _seen: frozenset = frozenset()) -> Function | None:
        """Method ``name`` of ``cls`` or of a base class defined in this module."""
        if cls in _seen:
            return None
        for stmt in cls.body:
            if isinstance(stmt, FUNCTIONS) and stmt.name == name:
                return stmt
        for base in cls.bases:
            base_cls = self.class_named(base)
            if base_cls is not None:
                found = self.class_methods(base_cls, name, _seen | {cls})
                if found is not None:
                    return found
        return None

    def class_named(self, expr: ast.AST) -> ast.ClassDef | None:
        if isinstance(expr, ast.Name):
            for node in self.bindings(expr):
                if isinstance(node, ast.ClassDef):
                    return node
        return None

    def related_classes(self, cls: ast.ClassDef) -> list[ast.ClassDef]:
        """``cls`` and its same-module base classes (their ``self`` is the same object)."""
        out: list[ast.ClassDef] = []
        todo = [cls]
        while todo:
            c = todo.pop()
            if any(c is o for o in out):
                continue
            out.append(c)
            todo.extend(b for b in (self.class_named(a) for a in c.bases) if b is not None)
        return out

    def resolve_call(self, call: ast.Call) -> Function | None:
        """The same-module function a call runs (``__init__`` for a class), else ``None``."""
        if call not in self._resolved:
            self._resolved[call] = self._resolve(call)
        return self._resolved[call]

    def _resolve(self, call: ast.Call) -> Function | None:
        func = call.func
        if isinstance(func, ast.Name):
            for node in self.bindings(func):
                if isinstance(node, FUNCTIONS):
                    return node
                if isinstance(node, ast.ClassDef):
                    return self.class_methods(node, "__init__")
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            cls = self._instance_class(func.value, call)
            if cls is not None:
                return self.class_methods(cls, func.attr)
        return None

    def _instance_class(self, recv: ast.Name, at: ast.AST) -> ast.ClassDef | None:
        """The same-module class ``recv`` is an instance of: ``self``/``cls`` in a method,
        or a name assigned from ``SomeClass(...)``."""
        if recv.id in ("self", "cls"):
            return self.class_of(self.function_of(at))
        # Direct assignments only: following parameters would need the call sites this
        # very resolution is building.
        for node in self.bindings(recv):
            value = self.assigned_value(node)
            if isinstance(value, ast.Call):
                cls = self.class_named(value.func)
                if cls is not None:
                    return cls
        return None

    def assigned_value(self, target: ast.AST) -> ast.expr | None:
        """The value of ``target = value`` (or ``target: T = value``) for a plain target."""
        parent = self.parent(target)
        if isinstance(parent, ast.Assign) and in_list(target, parent.targets):
            return parent.value
        if isinstance(parent, ast.AnnAssign) and parent.target is target:
            return parent.value
        return None

    def call_sites(self, func: Function) -> list[ast.Call]:
        if self._call_sites is None:
            sites: dict[ast.AST, list[ast.Call]] = {}
            for call in self.calls():
                target = self.resolve_call(call)
                if target is not None:
                    sites.setdefault(target, []).append(call)
            self._call_sites = sites
        return self._call_sites.get(func, [])

    def is_method(self, func: Function) -> bool:
        if not isinstance(self.parent(func), ast.ClassDef):
            return False
        return not any(isinstance(d, ast.Name) and d.id == "staticmethod"
                       for d in func.decorator_list)

    def argument_for(self, call: ast.Call, func: Function, param: ast.arg) -> ast.expr | None:
        """The expression ``call`` passes for ``param`` of ``func``, if it can be told."""
        for kw in call.keywords:
            if kw.arg == param.arg:
                return kw.value
        if in_list(param, func.args.kwonlyargs):
            return None
        positional = [*func.args.posonlyargs, *func.args.args]
        if self.is_method(func) and isinstance(call.func, (ast.Attribute, ast.Name)):
            positional = positional[1:]  # bound calls skip ``self``
        index = next((i for i, p in enumerate(positional) if p is param), None)
        if index is None:
            return None
        if any(isinstance(a, ast.Starred) for a in call.args) or any(
                kw.arg is None for kw in call.keywords):
            return None  # *args / **kwargs: positions are unknowable from here
        return call.args[index] if index < len(call.args) else None

    # -- where values come from ----------------------------------------------------------

    def origins(self, expr: ast.expr, _depth: int = 0, _seen: set[int] | None = None) -> list[Origin]:
        """Expressions whose value ``expr`` may hold: followed through assignments to
        names and to ``self.attr``, aliases, tuple unpacking, parameters (to their
        call-site arguments and defaults). Anything else is returned as is."""
        seen = _seen if _seen is not None else set()
        if id(expr) in seen or _depth > MAX_TRACE_DEPTH:
            return []
        seen.add(id(expr))
        if isinstance(expr, ast.Name):
            out: list[Origin] = []
            found = self.bindings(expr)
            for node in found:
                out += self._origins_of_binding(node, _depth + 1, seen)
            return out if found else [Origin(expr)]
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
            cls = self.class_of(self.function_of(expr))
            if cls is None:
                return [Origin(expr)]
            out = []
            for value in self.self_attribute_values(cls, expr.attr):
                out += (self.origins(value, _depth + 1, seen)
                        if isinstance(value, (ast.Name, ast.Attribute)) else [Origin(value)])
            return out
        return [Origin(expr)]

    def self_attribute_values(self, cls: ast.ClassDef, attr: str) -> list[ast.expr]:
        """What the methods of ``cls`` and of its same-module bases assign to
        ``self.<attr>``, in source order."""
        assigns = self._assigns_to_self()
        found = [entry for c in self.related_classes(cls) for entry in assigns.get((c, attr), ())]
        found.sort(key=position)
        return found

    def _assigns_to_self(self) -> dict[tuple[ast.ClassDef, str], list[ast.expr]]:
        """The values assigned to ``self.<attr>``, keyed by the class of the method that
        assigns and the attribute (one entry per matching target); built once."""
        if self._self_assigns is None:
            found: dict[tuple[ast.ClassDef, str], list[ast.expr]] = {}
            for node in self.of_type(ast.Assign, ast.AnnAssign):
                if node.value is None:
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                owner: ast.ClassDef | None = None
                for target in targets:
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id == "self"):
                        owner = owner or self.class_of(self.function_of(node))
                        if owner is not None:
                            found.setdefault((owner, target.attr), []).append(node.value)
            self._self_assigns = found
        return self._self_assigns

    def _origins_of_binding(self, node: ast.AST, depth: int, seen: set[int]) -> list[Origin]:
        if isinstance(node, ast.arg):
            out = [Origin(None, param=node)]
            func = self.function_defining(node)
            if func is not None and depth <= MAX_TRACE_DEPTH:
                default = default_of(func, node)
                if default is not None:
                    out += self.origins(default, depth, seen)
                for call in self.call_sites(func):
                    arg = self.argument_for(call, func, node)
                    if arg is not None:
                        out += self.origins(arg, depth, seen)
            return out
        if not isinstance(node, ast.Name):
            return []
        parent = self.parent(node)
        if isinstance(parent, ast.Assign) and in_list(node, parent.targets):
            return self.origins(parent.value, depth, seen)
        if isinstance(parent, ast.AnnAssign) and parent.value is not None:
            return self.origins(parent.value, depth, seen)
        if isinstance(parent, (ast.Tuple, ast.List)):
            holder = self.parent(parent)
            if isinstance(holder, ast.Assign) and in_list(parent, holder.targets):
                return self._unpacked(holder.value, parent, node, depth, seen)
        return []

    def _unpacked(self, value: ast.expr, seq: ast.Tuple | ast.List, name: ast.Name,
                  depth: int, seen: set[int]) -> list[Origin]:
        """Where ``name`` comes from in ``..., name, ... = value``."""
        index = next(i for i, el in enumerate(seq.elts) if el is name)
        if isinstance(value, ast.Call) and self._project_function(value):
            return [Origin(value, index=index)]  # what the project's function returns
        if isinstance(value, ast.Call):
            positional = [a for a in value.args if not isinstance(a, ast.Starred)]
            if len(positional) == len(seq.elts):
                # ``model, opt = accelerator.prepare(model, opt)``: wrappers return their
                # arguments in order.
                return self.origins(positional[index], depth, seen)
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(seq.elts):
            element = value.elts[index]
            if isinstance(element, ast.Starred):
                element = element.value
            return self.origins(element, depth, seen)
        if isinstance(value, ast.Call) and not any(isinstance(e, ast.Starred) for e in seq.elts):
            return [Origin(value, index=index)]
        return []

    def _project_function(self, call: ast.Call) -> bool:
        """``call`` runs a function of another module of the project, whose returns the
        project model summarises."""
        callee = dotted(call.func)
        if self.project is None or callee is None or self.resolve_call(call) is not None:
            return False
        return self.project.function(callee) is not None


def _scope_prefix(scope) -> str:
    """The prefix libcst gives the names a scope defines: ``""`` at module level,
    ``train.<locals>.`` in a function, ``Trainer.`` in a class body."""
    parts: list[str] = []
    while scope is not None and scope.kind != "module":
        name = getattr(scope.node, "name", None) or f"<{type(scope.node).__name__.lower()}>"
        parts.append(f"{name}.<locals>." if scope.kind == "function" else f"{name}.")
        scope = scope.parent
    return "".join(reversed(parts))
