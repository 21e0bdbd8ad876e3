"""A per-file index of functions, loops, calls and assignments, for rules that follow code.

Rules built on ``IndexedRule`` only *collect* nodes during the engine's single traversal;
when the module is left, a ``CodeIndex`` answers the questions those rules share:
which function or loop holds a node, which same-module function (or method) a call runs,
where the value of a name or ``self.attr`` comes from (assignments, tuple unpacking,
call-site arguments), and whether autograd is switched off around a node. Everything is
lexical and lazy: nothing is computed for a file unless a rule asks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import (
    ParentNodeProvider,
    PositionProvider,
    QualifiedNameProvider,
    ScopeProvider,
)

from mllint.analysis.syntax import dotted_name, qualified_names
from mllint.rule import Rule

Loop = cst.For | cst.While
Function = cst.FunctionDef

#: How far value tracing and call-graph walks go; real code rarely needs more, and the
#: caps keep pathological files (deep alias chains, recursion) cheap.
MAX_TRACE_DEPTH = 6
MAX_CALLER_DEPTH = 4
MAX_CHAINS = 8

# Autograd's states and the names that switch it, defined once with the ``ast`` index.
from mllint.analysis.pyast.index import ENABLE_GRAD as _ENABLE_GRAD  # noqa: E402
from mllint.analysis.pyast.index import NO_GRAD as _NO_GRAD  # noqa: E402
from mllint.analysis.pyast.index import NO_GRAD_WORD as _NO_GRAD_WORD  # noqa: E402
from mllint.analysis.pyast.index import SET_GRAD_ENABLED as _SET_GRAD_ENABLED  # noqa: E402
from mllint.analysis.pyast.index import GradMode  # noqa: E402,F401


@dataclass
class Collected:
    functions: list[cst.FunctionDef] = field(default_factory=list)
    classes: list[cst.ClassDef] = field(default_factory=list)
    calls: list[cst.Call] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    assigns: list[cst.Assign | cst.AugAssign | cst.AnnAssign] = field(default_factory=list)
    dels: list[cst.Del] = field(default_factory=list)
    returns: list[cst.Return] = field(default_factory=list)


@dataclass(frozen=True)
class LoopChain:
    """The loops a node runs in, innermost first, continued through the loops around
    same-module call sites of its function."""

    loops: tuple[Loop, ...]
    #: The node runs only on some iterations of ``loops[0]`` (an ``if`` between them).
    guarded: bool


@dataclass(frozen=True)
class Origin:
    """Where a value may come from: an expression that produced it, or a parameter
    whose callers are unknown (``expr`` is then ``None``)."""

    expr: cst.BaseExpression | None
    param: cst.Param | None = None
    #: For a name unpacked from a call's result (``opt, msg = build(cfg)``): its
    #: position in the returned tuple; ``expr`` is then that call.
    index: int | None = None


class IndexedRule(Rule):
    """A rule that collects nodes while visiting and checks a ``CodeIndex`` at the end."""

    abstract = True
    METADATA_DEPENDENCIES = (
        PositionProvider,
        ParentNodeProvider,
        ScopeProvider,
        QualifiedNameProvider,
    )

    def __init__(self, context) -> None:
        super().__init__(context)
        self._nodes = Collected()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._nodes.functions.append(node)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._nodes.classes.append(node)

    def visit_Call(self, node: cst.Call) -> None:
        self._nodes.calls.append(node)

    def visit_For(self, node: cst.For) -> None:
        self._nodes.loops.append(node)

    def visit_While(self, node: cst.While) -> None:
        self._nodes.loops.append(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        self._nodes.assigns.append(node)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._nodes.assigns.append(node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._nodes.assigns.append(node)

    def visit_Del(self, node: cst.Del) -> None:
        self._nodes.dels.append(node)

    def visit_Return(self, node: cst.Return) -> None:
        self._nodes.returns.append(node)

    def leave_Module(self, original_node: cst.Module) -> None:
        self.check(CodeIndex(self, self._nodes, original_node))

    def check(self, index: CodeIndex) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class CodeIndex:
    """Lexical questions about one module, answered from the collected nodes."""

    def __init__(self, visitor: cst.MetadataDependent, nodes: Collected, module: cst.Module):
        self.v = visitor
        self.nodes = nodes
        self.module = module
        self._function_of: dict[int, Function | None] = {}
        self._calls_by_function: dict[int, list[cst.Call]] | None = None
        self._call_sites: dict[int, list[cst.Call]] | None = None
        self._resolved: dict[int, Function | None] = {}
        self._returns_by_function: dict[int, list[cst.Return]] | None = None
        self._assigns_by_function: dict[int, list[cst.Assign | cst.AugAssign | cst.AnnAssign]] | None = None
        self._self_assigns: dict[tuple[int, str], list[tuple[int, cst.Assign | cst.AnnAssign]]] | None = None
        self._parents: Mapping[cst.CSTNode, cst.CSTNode] | None = None

    # -- metadata ----------------------------------------------------------------------

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        parents = self._parents
        if parents is None:
            # ``get_metadata``'s checks once, then the mapping itself: ``ancestors`` asks
            # for every level above every node, and the checks cost more than the look-up.
            self.v.get_metadata(ParentNodeProvider, self.module, None)
            parents = self._parents = self.v.metadata[ParentNodeProvider]
        return parents.get(node)

    def position(self, node: cst.CSTNode) -> tuple[int, int]:
        rng = self.v.get_metadata(PositionProvider, node)
        return (rng.start.line, rng.start.column)

    def end_position(self, node: cst.CSTNode) -> tuple[int, int]:
        rng = self.v.get_metadata(PositionProvider, node)
        return (rng.end.line, rng.end.column)

    def line(self, node: cst.CSTNode) -> int:
        return self.position(node)[0]

    def qualified(self, node: cst.CSTNode) -> set[str]:
        return qualified_names(self.v, node)

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    # -- where a node sits -------------------------------------------------------------

    def ancestors(self, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
        cur = self.parent(node)
        while cur is not None:
            yield cur
            cur = self.parent(cur)

    def function_of(self, node: cst.CSTNode) -> Function | None:
        """The innermost ``def`` whose body holds ``node`` (lambdas are transparent)."""
        key = id(node)
        if key not in self._function_of:
            found = None
            child = node
            for anc in self.ancestors(node):
                if isinstance(anc, cst.FunctionDef) and child is anc.body:
                    found = anc
                    break
                child = anc
            self._function_of[key] = found
        return self._function_of[key]

    def function_defining(self, param: cst.Param) -> Function | None:
        """The ``def`` whose parameter list holds ``param`` (lambdas give ``None``)."""
        for anc in self.ancestors(param):
            if isinstance(anc, cst.FunctionDef):
                return anc
            if isinstance(anc, cst.Lambda):
                return None
        return None

    def class_of(self, func: Function | None) -> cst.ClassDef | None:
        """The class ``func`` is a method of, looking through nested defs (closures)."""
        while func is not None:
            block = self.parent(func)
            owner = self.parent(block) if block is not None else None
            if isinstance(owner, cst.ClassDef):
                return owner
            func = self.function_of(func)
        return None

    def loops_of(self, node: cst.CSTNode) -> list[Loop]:
        """Loops whose *body* holds ``node`` within its function, innermost first."""
        out: list[Loop] = []
        child = node
        for anc in self.ancestors(node):
            if isinstance(anc, cst.FunctionDef) and child is anc.body:
                break
            if isinstance(anc, (cst.For, cst.While)) and child is anc.body:
                out.append(anc)
            child = anc
        return out

    def within(self, node: cst.CSTNode, container: cst.CSTNode) -> bool:
        return node is container or any(a is container for a in self.ancestors(node))

    def conditional_within(self, node: cst.CSTNode, top: cst.CSTNode) -> bool:
        """Whether ``node`` runs only on some passes through ``top`` (an ``if``, an
        exception handler, a ``match`` case or a loop lies between them)."""
        child = node
        for anc in self.ancestors(node):
            if anc is top:
                return False
            if isinstance(anc, (cst.If, cst.IfExp, cst.ExceptHandler, cst.MatchCase, cst.BooleanOperation)):
                return True
            if isinstance(anc, (cst.For, cst.While)) and child is anc.body:
                return True
            if isinstance(anc, cst.Try) and child is not anc.body and child is not anc.finalbody:
                return True
            child = anc
        return False

    def statement_of(self, node: cst.CSTNode) -> cst.BaseStatement | None:
        """The statement (simple line or compound statement) that holds ``node``."""
        for anc in [node, *self.ancestors(node)]:
            if isinstance(anc, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
                return anc
        return None

    def loop_chains(self, node: cst.CSTNode, _depth: int = 0, _guarded: bool = False) -> list[LoopChain]:
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

    # -- functions and calls -----------------------------------------------------------

    def calls_in_function(self, func: Function | None) -> list[cst.Call]:
        if self._calls_by_function is None:
            groups: dict[int, list[cst.Call]] = {}
            for call in self.nodes.calls:
                f = self.function_of(call)
                groups.setdefault(id(f) if f is not None else 0, []).append(call)
            self._calls_by_function = groups
        return self._calls_by_function.get(id(func) if func is not None else 0, [])

    def assigns_in_function(self, func: Function | None) -> list[cst.Assign | cst.AugAssign | cst.AnnAssign]:
        """The assignments ``func`` itself holds (``None``: module level), in source order."""
        if self._assigns_by_function is None:
            groups: dict[int, list[cst.Assign | cst.AugAssign | cst.AnnAssign]] = {}
            for node in self.nodes.assigns:
                f = self.function_of(node)
                groups.setdefault(id(f) if f is not None else 0, []).append(node)
            self._assigns_by_function = groups
        return self._assigns_by_function.get(id(func) if func is not None else 0, [])

    def returns_of(self, func: Function) -> list[cst.Return]:
        """The ``return`` statements of ``func`` (not of functions nested in it)."""
        if self._returns_by_function is None:
            groups: dict[int, list[cst.Return]] = {}
            for node in self.nodes.returns:
                f = self.function_of(node)
                if f is not None:
                    groups.setdefault(id(f), []).append(node)
            self._returns_by_function = groups
        return self._returns_by_function.get(id(func), [])

    def class_methods(self, cls: cst.ClassDef, name: str, _seen: frozenset = frozenset()) -> Function | None:
        """Method ``name`` of ``cls`` or of a base class defined in this module."""
        if id(cls) in _seen:
            return None
        for stmt in cls.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == name:
                return stmt
        for base in cls.bases:
            base_cls = self.class_named(base.value)
            if base_cls is not None:
                found = self.class_methods(base_cls, name, _seen | {id(cls)})
                if found is not None:
                    return found
        return None

    def class_named(self, expr: cst.BaseExpression) -> cst.ClassDef | None:
        if isinstance(expr, cst.Name):
            for node in self.bindings(expr):
                if isinstance(node, cst.ClassDef):
                    return node
        return None

    def related_classes(self, cls: cst.ClassDef) -> list[cst.ClassDef]:
        """``cls`` and its same-module base classes (their ``self`` is the same object)."""
        out, todo = [], [cls]
        while todo:
            c = todo.pop()
            if any(c is o for o in out):
                continue
            out.append(c)
            todo.extend(b for b in (self.class_named(a.value) for a in c.bases) if b is not None)
        return out

    def resolve_call(self, call: cst.Call) -> Function | None:
        """The same-module function a call runs (``__init__`` for a class), else ``None``."""
        key = id(call)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(call)
        return self._resolved[key]

    def _resolve(self, call: cst.Call) -> Function | None:
        func = call.func
        if isinstance(func, cst.Name):
            for node in self.bindings(func):
                if isinstance(node, cst.FunctionDef):
                    return node
                if isinstance(node, cst.ClassDef):
                    return self.class_methods(node, "__init__")
            return None
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name):
            cls = self._instance_class(func.value, call)
            if cls is not None:
                return self.class_methods(cls, func.attr.value)
        return None

    def _instance_class(self, recv: cst.Name, at: cst.CSTNode) -> cst.ClassDef | None:
        """The same-module class ``recv`` is an instance of: ``self``/``cls`` in a method,
        or a name assigned from ``SomeClass(...)``."""
        if recv.value in ("self", "cls"):
            return self.class_of(self.function_of(at))
        # Direct assignments only: following parameters would need the call sites this
        # very resolution is building.
        for node in self.bindings(recv):
            value = self._assigned_value(node)
            if isinstance(value, cst.Call):
                cls = self.class_named(value.func)
                if cls is not None:
                    return cls
        return None

    def _assigned_value(self, target: cst.CSTNode) -> cst.BaseExpression | None:
        parent = self.parent(target)
        if isinstance(parent, cst.AssignTarget) and parent.target is target:
            return self.parent(parent).value
        if isinstance(parent, cst.AnnAssign) and parent.target is target:
            return parent.value
        return None

    def call_sites(self, func: Function) -> list[cst.Call]:
        if self._call_sites is None:
            sites: dict[int, list[cst.Call]] = {}
            for call in self.nodes.calls:
                target = self.resolve_call(call)
                if target is not None:
                    sites.setdefault(id(target), []).append(call)
            self._call_sites = sites
        return self._call_sites.get(id(func), [])

    def is_method(self, func: Function) -> bool:
        block = self.parent(func)
        if not isinstance(self.parent(block) if block is not None else None, cst.ClassDef):
            return False
        return not any(
            isinstance(d.decorator, cst.Name) and d.decorator.value == "staticmethod"
            for d in func.decorators
        )

    def argument_for(self, call: cst.Call, func: Function, param: cst.Param) -> cst.BaseExpression | None:
        """The expression ``call`` passes for ``param`` of ``func``, if it can be told."""
        for arg in call.args:
            if arg.keyword is not None and arg.keyword.value == param.name.value:
                return arg.value
        if param in func.params.kwonly_params:
            return None
        positional = [*func.params.posonly_params, *func.params.params]
        if self.is_method(func) and isinstance(call.func, (cst.Attribute, cst.Name)):
            # Bound calls (``self.f(x)``, ``obj.f(x)``, ``Cls(x)``) skip ``self``.
            positional = positional[1:]
        index = next((i for i, p in enumerate(positional) if p is param), None)
        if index is None:
            return None
        args = []
        for arg in call.args:
            if arg.star:  # *args / **kwargs: positions are unknowable from here
                return None
            if arg.keyword is None:
                args.append(arg.value)
        return args[index] if index < len(args) else None

    # -- where values come from --------------------------------------------------------

    def bindings(self, name: cst.Name) -> list[cst.CSTNode]:
        """The nodes that bind the name ``name`` reads (a ``Name`` target, a ``Param``, a
        ``def``, a ``class``, an import); builtins have none."""
        scope = self.v.get_metadata(ScopeProvider, name, None)
        if scope is None:
            return []
        try:
            accesses = scope.accesses[name]
        except Exception:
            return []
        return [
            ref.node
            for acc in accesses
            for ref in acc.referents
            if getattr(ref, "node", None) is not None
        ]

    def origins(self, expr: cst.BaseExpression, _depth: int = 0, _seen: set[int] | None = None) -> list[Origin]:
        """Expressions whose value ``expr`` may hold: followed through assignments to
        names and to ``self.attr``, aliases, tuple unpacking of ``f(a, b)`` into the
        same number of names, parameters (to their call-site arguments and defaults).
        Anything else is returned as is."""
        seen = _seen if _seen is not None else set()
        if id(expr) in seen or _depth > MAX_TRACE_DEPTH:
            return []
        seen.add(id(expr))
        if isinstance(expr, cst.Name):
            out: list[Origin] = []
            nodes = self.bindings(expr)
            for node in nodes:
                out += self._origins_of_binding(node, _depth + 1, seen)
            return out if nodes else [Origin(expr)]
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
            cls = self.class_of(self.function_of(expr))
            if cls is None:
                return [Origin(expr)]
            out = []
            for value in self.self_attribute_values(cls, expr.attr.value):
                out += self.origins(value, _depth + 1, seen) if isinstance(value, (cst.Name, cst.Attribute)) else [Origin(value)]
            return out
        return [Origin(expr)]

    def self_attribute_values(self, cls: cst.ClassDef, attr: str) -> list[cst.BaseExpression]:
        """What the methods of ``cls`` and of its same-module bases assign to
        ``self.<attr>``, in source order."""
        assigns = self._assigns_to_self()
        found = [entry for c in self.related_classes(cls) for entry in assigns.get((id(c), attr), ())]
        return [node.value for _, node in sorted(found, key=lambda entry: entry[0])]

    def _assigns_to_self(self) -> dict[tuple[int, str], list[tuple[int, cst.Assign | cst.AnnAssign]]]:
        """Assignments with a value to ``self.<attr>``, keyed by the class of the method
        that makes them and the attribute, with their rank in source order (one entry per
        matching target). Built once per module: one query no longer scans every
        assignment of the module."""
        if self._self_assigns is None:
            found: dict[tuple[int, str], list[tuple[int, cst.Assign | cst.AnnAssign]]] = {}
            for rank, node in enumerate(self.nodes.assigns):
                if not isinstance(node, (cst.Assign, cst.AnnAssign)) or node.value is None:
                    continue
                targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
                owner: cst.ClassDef | None = None
                for target in targets:
                    if (
                        isinstance(target, cst.Attribute)
                        and isinstance(target.value, cst.Name)
                        and target.value.value == "self"
                    ):
                        owner = owner or self.class_of(self.function_of(node))
                        if owner is not None:
                            found.setdefault((id(owner), target.attr.value), []).append((rank, node))
            self._self_assigns = found
        return self._self_assigns

    def _origins_of_binding(self, node: cst.CSTNode, depth: int, seen: set[int]) -> list[Origin]:
        if isinstance(node, cst.Param):
            out = [Origin(None, param=node)]
            func = self.function_defining(node)
            if func is not None and depth <= MAX_TRACE_DEPTH:
                if node.default is not None:
                    out += self.origins(node.default, depth, seen)
                for call in self.call_sites(func):
                    arg = self.argument_for(call, func, node)
                    if arg is not None:
                        out += self.origins(arg, depth, seen)
            return out
        if not isinstance(node, cst.Name):
            return [Origin(node)] if isinstance(node, cst.BaseExpression) else []
        parent = self.parent(node)
        if isinstance(parent, cst.AssignTarget):
            assign = self.parent(parent)
            return self.origins(assign.value, depth, seen)
        if isinstance(parent, cst.AnnAssign) and parent.value is not None:
            return self.origins(parent.value, depth, seen)
        if isinstance(parent, cst.Element):
            seq = self.parent(parent)
            holder = self.parent(seq)
            if isinstance(holder, cst.AssignTarget) and isinstance(seq, (cst.Tuple, cst.List)):
                value = self.parent(holder).value
                index = next(i for i, el in enumerate(seq.elements) if el is parent)
                if isinstance(value, cst.Call) and self._project_function(value):
                    return [Origin(value, index=index)]  # what the project's function returns
                if isinstance(value, cst.Call):
                    positional = [a.value for a in value.args if a.keyword is None and not a.star]
                    if len(positional) == len(seq.elements):
                        # ``model, opt = accelerator.prepare(model, opt)``: wrappers return
                        # their arguments in order.
                        return self.origins(positional[index], depth, seen)
                if isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(seq.elements):
                    return self.origins(value.elements[index].value, depth, seen)
                if isinstance(value, cst.Call) and not any(
                        isinstance(e, cst.StarredElement) for e in seq.elements):
                    return [Origin(value, index=index)]
        return []

    def _project_function(self, call: cst.Call) -> bool:
        """``call`` runs a function of another module of the project, whose returns the
        project model summarises."""
        context = getattr(self.v, "context", None)
        view = context.project if context is not None else None
        callee = dotted_name(call.func)
        if view is None or callee is None or self.resolve_call(call) is not None:
            return False
        return view.function(callee) is not None

    # -- autograd state ----------------------------------------------------------------

    def grad_mode(self, node: cst.CSTNode) -> GradMode:
        """Autograd's state at ``node`` from ``with`` blocks and decorators of its
        function; ``INHERITED`` when only the caller can tell."""
        child = node
        for anc in self.ancestors(node):
            if isinstance(anc, cst.With) and child is anc.body:
                for item in anc.items:
                    mode = self._mode_of_manager(item.item)
                    if mode is not None:
                        return mode
            if isinstance(anc, cst.FunctionDef) and child is anc.body:
                for dec in anc.decorators:
                    mode = self._mode_of_manager(dec.decorator)
                    if mode is not None:
                        return mode
                return GradMode.INHERITED
            child = anc
        return GradMode.INHERITED

    def _mode_of_manager(self, expr: cst.BaseExpression) -> GradMode | None:
        callee = expr.func if isinstance(expr, cst.Call) else expr
        names = self.qualified(callee)
        if names & _NO_GRAD or self._named_no_grad(callee, names):
            return GradMode.DISABLED
        if names & _ENABLE_GRAD:
            return GradMode.ENABLED
        if names & _SET_GRAD_ENABLED and isinstance(expr, cst.Call) and expr.args:
            value = expr.args[0].value
            if isinstance(value, cst.Name) and value.value in ("True", "False"):
                return GradMode.ENABLED if value.value == "True" else GradMode.DISABLED
            return GradMode.MAYBE_DISABLED
        return None

    def _named_no_grad(self, callee: cst.BaseExpression, names: set[str]) -> bool:
        """A decorator or context manager torch does not define whose name says it turns
        autograd off: yolov5's ``@smart_inference_mode()``, ``@torch_no_grad``. Such
        wrappers (usually imported from a utils module we cannot read) pick
        ``inference_mode`` or ``no_grad``; a finding that needs autograd on would be a
        guess against the author's own word."""
        if any(n.startswith("torch.") for n in names):
            return False  # torch's own names are known exactly (``_NO_GRAD``)
        written = {n.rsplit(".", 1)[-1] for n in names}
        dotted = dotted_name(callee)
        if dotted is not None:
            written.add(dotted.rsplit(".", 1)[-1])
        return any(_NO_GRAD_WORD.search(w) for w in written)
