"""Backward passes, optimizer steps and gradient clearing in one module, on Python's ``ast``.

``GradEvents`` classifies the calls and assignments of a module (``ModuleIndex``) and
sums them up per loop or function, following same-module helpers (and ``step(closure)``
closures) into their bodies. Optimizers are identified by how they were built, never by
their variable's name alone: a constructor call (``torch.optim.*``, the optimizers of
libraries people train with, same-module ``Optimizer`` subclasses), a same-module
factory returning one, a wrapper such as ``accelerator.prepare(opt)``, a parameter
annotated as an optimizer or passed one by a caller (same module, or, with the project
model, another module), a factory of another module that returns one. Only as a last
resort is a parameter accepted by name (``optimizer``, ``opt_g``), and then only when
the module calls ``zero_grad()`` on a receiver of that name elsewhere, i.e. uses the
name for one.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from mllint.analysis.pyast.index import Function, ModuleIndex, Origin, names_in, position
from mllint.analysis.pyast.scopes import PlainImports, default_of
from mllint.gates.resolve import dotted
from mllint.optimizer_names import is_optimizer_constructor
from mllint.prefilter import GAP, any_layout
from mllint.prefilter import dotted as dotted_text
from mllint.project.roles import Role

#: ``x.backward``, ``from torch.autograd import backward``, ``x.step``: the rules'
#: prefilter signs (every backward call and step this module recognises leaves one in a
#: file), written for any layout (``GAP`` between tokens, comments inside a bracketed
#: import), so the prefilter needs no normalised copies of the text for them.
BACKWARD_SIGNS = (
    any_layout(dotted_text(r"backward\b")),
    any_layout(rf"from(?:\s|\\)+torch{GAP}\.{GAP}autograd(?:\s|\\)+import(?:[^;#]|#[^\r\n]*(?![^\r\n]))*?\bbackward\b"),
)
STEP_TEXT = any_layout(dotted_text(r"step\b"))

BACKWARD_FUNCTIONS = frozenset({"torch.autograd.backward"})
OPTIMIZER_BASES = frozenset({"torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"})
EXTRA_OPTIMIZERS = frozenset(
    {
        "torch.distributed.optim.ZeroRedundancyOptimizer",
        "torch.distributed.optim.zero_redundancy_optimizer.ZeroRedundancyOptimizer",
    }
)
#: What clears gradients besides ``zero_grad()``: ``p.grad.zero_()`` and kin, and
#: ``torch._foreach_zero_``.
GRAD_ZEROING_METHODS = frozenset({"zero_", "fill_", "mul_"})
GRAD_ZEROING_FUNCTIONS = frozenset({"torch._foreach_zero_"})
#: Callees from other modules whose name says they clear gradients (``utils.zero_grads``).
#: Used only to *suppress* findings, never to raise one.
CLEARING_NAME = re.compile(r"zero_?grad|clear_?grad|reset_?grad", re.IGNORECASE)
OPTIMIZER_PARAM = re.compile(
    r"^(opt|optim|optimizer|optimiser)(_?\w+)?$|^\w+_(opt|optim|optimizer|optimiser)$"
)
#: Wrappers that return the optimizer they are given (accelerate, fabric, apex, horovod).
OPTIMIZER_WRAPPERS = frozenset({"prepare", "prepare_optimizer", "setup_optimizers", "DistributedOptimizer"})


@dataclass(frozen=True)
class Step:
    """``optimizer.step(...)``, or ``scaler.step(optimizer)`` which steps ``optimizer``."""

    call: ast.Call
    optimizer: ast.expr
    #: The argument ``step`` is given (an LBFGS-style closure), if any.
    closure: ast.expr | None


@dataclass(frozen=True)
class Clear:
    """A statement or call that clears gradients."""

    node: ast.AST
    #: The receiver of ``.zero_grad()``; ``None`` when it reaches any parameter
    #: (``p.grad = None``, an external ``zero_grads(model)``).
    receiver: ast.expr | None


@dataclass
class Events:
    backwards: list[ast.Call] = field(default_factory=list)
    #: Every ``x.step(...)`` call, optimizer or not (a training iteration's marker).
    step_calls: list[ast.Call] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)
    #: Closures passed to ``step()`` that this module does not define.
    unknown_closures: list[Step] = field(default_factory=list)

    def merge(self, other: Events) -> None:
        self.backwards += other.backwards
        self.step_calls += other.step_calls
        self.steps += other.steps
        self.clears += other.clears
        self.unknown_closures += other.unknown_closures


class GradEvents:
    """The gradient-relevant events of one module."""

    def __init__(self, index: ModuleIndex) -> None:
        self.ix = index
        self._backwards: list[ast.Call] = []
        self._step_calls: list[ast.Call] = []
        self._clears: list[Clear] = []
        self._steps: list[Step] | None = None
        self._summaries: dict[ast.AST, Events] = {}
        self._in_progress: set[ast.AST] = set()
        self._optimizer_memo: dict[int, bool] = {}
        self._by_function: dict[ast.AST | None, Events] | None = None
        self._cleared_names: dict[str, list[Function | None]] | None = None
        self._clears_by_node: dict[ast.AST, list[Clear]] | None = None
        self._imported = PlainImports.of(index.tree).imported
        for call in index.calls():
            self._classify_call(call)
        for node in index.of_type(ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete):
            if isinstance(node, ast.Delete):
                cleared = any(_is_grad_attribute(t) or (
                    isinstance(t, ast.Tuple) and any(_is_grad_attribute(e) for e in t.elts))
                    for t in node.targets)
            else:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                cleared = any(_is_grad_attribute(t) for t in targets)
            if cleared:
                self._clears.append(Clear(node, None))
        self._clears.sort(key=lambda c: position(c.node))

    # -- classifying ---------------------------------------------------------------------

    def _classify_call(self, call: ast.Call) -> None:
        func = call.func
        if isinstance(func, ast.Attribute):
            method = func.attr
            if method == "backward":
                self._backwards.append(call)
            elif method == "step":
                self._step_calls.append(call)
            elif method == "zero_grad":
                self._clears.append(Clear(call, func.value))
            elif method in GRAD_ZEROING_METHODS and _mentions_grad(func.value) and _zeroes(call):
                self._clears.append(Clear(call, None))
            elif CLEARING_NAME.search(method) and self.ix.resolve_call(call) is None:
                self._clears.append(Clear(call, None))
            # (``torch.autograd.backward(...)`` is a ``.backward`` call: recorded above.)
            if method == "_foreach_zero_" and self.ix.qualified(func) & GRAD_ZEROING_FUNCTIONS:
                self._clears.append(Clear(call, None))
        elif isinstance(func, ast.Name):
            if func.id in self._imported:  # ``from torch.autograd import backward as bw``
                names = self.ix.qualified(func)
                if names & BACKWARD_FUNCTIONS:
                    self._backwards.append(call)
                elif names & GRAD_ZEROING_FUNCTIONS:
                    self._clears.append(Clear(call, None))
            if CLEARING_NAME.search(func.id) and self.ix.resolve_call(call) is None:
                self._clears.append(Clear(call, None))

    @property
    def backwards(self) -> list[ast.Call]:
        return self._backwards

    @property
    def clears(self) -> list[Clear]:
        return self._clears

    def steps(self) -> list[Step]:
        """Every optimizer step in the module (calls of ``.step`` on an optimizer)."""
        if self._steps is None:
            self._steps = [s for s in map(self._as_step, self._step_calls) if s is not None]
        return self._steps

    def _as_step(self, call: ast.Call) -> Step | None:
        recv = call.func.value  # type: ignore[attr-defined] - only attribute calls get here
        positional = [a for a in call.args if not isinstance(a, ast.Starred)]
        closure_kw = next((k.value for k in call.keywords if k.arg == "closure"), None)
        if self.is_optimizer(recv):
            return Step(call, recv, closure_kw or (positional[0] if positional else None))
        if positional and self.is_optimizer(positional[0]):
            # ``scaler.step(optimizer)`` (GradScaler) steps ``optimizer``.
            return Step(call, positional[0], None)
        return None

    # -- optimizers ----------------------------------------------------------------------

    def is_optimizer(self, expr: ast.expr) -> bool:
        key = id(expr)
        if key not in self._optimizer_memo:
            self._optimizer_memo[key] = False  # recursion guard
            self._optimizer_memo[key] = self._is_optimizer(expr)
        return self._optimizer_memo[key]

    def _is_optimizer(self, expr: ast.expr) -> bool:
        origins = self.ix.origins(expr)
        if any(self._origin_is_optimizer(o) for o in origins):
            return True
        # Last resort: a parameter named like an optimizer, in a module that clears a
        # receiver of that name elsewhere (so it uses the name for optimizers).
        return any(self._named_like_optimizer(o.param) for o in origins if o.param is not None)

    def _origin_is_optimizer(self, origin: Origin) -> bool:
        if origin.index is not None:  # one element of what a call returns
            return isinstance(origin.expr, ast.Call) and self._project_returns_optimizer(
                origin.expr, origin.index)
        if origin.param is not None:
            ann = origin.param.annotation
            if ann is None:
                return self._passed_an_optimizer(origin.param)
            return _optimizer_type(self.ix.qualified(ann))
        value = origin.expr
        if not isinstance(value, ast.Call):
            return False
        names = self.ix.qualified(value.func)
        if is_optimizer_constructor(names) or names & EXTRA_OPTIMIZERS:
            return True
        if self._optimizer_class_parameter(value.func):
            return True
        callee = self.ix.resolve_call(value)
        if callee is None and self._project_returns_optimizer(value):
            return True
        if callee is not None:
            cls = self.ix.class_of(callee) if callee.name == "__init__" else None
            if cls is not None:
                return self._subclasses_optimizer(cls)
            return any(r.value is not None and self.is_optimizer(r.value)
                       for r in self.ix.returns_of(callee))
        cls = self.ix.class_named(value.func)
        if cls is not None:
            return self._subclasses_optimizer(cls)
        func = value.func
        method = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if method in OPTIMIZER_WRAPPERS:
            given = [a for a in value.args if not isinstance(a, ast.Starred)]
            given += [k.value for k in value.keywords if k.arg is not None]
            return any(self.is_optimizer(a) for a in given)
        return False

    def _optimizer_class_parameter(self, func: ast.expr) -> bool:
        """``optimizer_klass(params, lr=lr)`` where the parameter ``optimizer_klass``
        defaults to an optimizer class (``optimizer_klass=Adam``)."""
        if not isinstance(func, ast.Name):
            return False
        for origin in self.ix.origins(func):
            if origin.param is None:
                continue
            owner = self.ix.function_defining(origin.param)
            default = default_of(owner, origin.param) if owner is not None else None
            if default is not None and is_optimizer_constructor(self.ix.qualified(default)):
                return True
        return False

    def _passed_an_optimizer(self, param: ast.arg) -> bool:
        """A parameter of a top-level function that the project's callers in other
        modules hand an optimizer (``train(model, loader, optimizer)`` from main.py), or
        of a method of a top-level class whose instances they call it on
        (``executor = Executor(); executor.train(model, optimizer, loader)``)."""
        view = self.ix.project
        func = self.ix.function_defining(param)
        if view is None or func is None:
            return False
        params = [p.arg for p in func.args.args]
        owner = self.ix.parent(func)
        if isinstance(owner, ast.ClassDef):
            if self.ix.parent(owner) is not self.ix.tree or not self.ix.is_method(func) or any(
                    isinstance(d, ast.Name) and d.id == "classmethod" for d in func.decorator_list):
                return False
            qualname, params = f"{owner.name}.{func.name}", params[1:]  # bound: no ``self``
        elif self.ix.class_of(func) is not None:
            return False
        else:
            qualname = func.name
        index = params.index(param.arg) if param.arg in params else len(params)
        return Role.OPTIMIZER in view.param_roles(qualname, index, param.arg)

    def _project_returns_optimizer(self, call: ast.Call, index: int | None = None) -> bool:
        """A factory of another module (or one the index does not follow) that returns an
        optimizer: ``optimizer = build_optimizer(cfg, model)``, or at ``index`` of the
        tuple it returns (``optimizer, msg = build_optimizer(cfg)``)."""
        view = self.ix.project
        callee = dotted(call.func)
        if view is None or callee is None:
            return False
        roles = view.returned_roles(callee)
        if index is None:
            return len(roles) == 1 and Role.OPTIMIZER in roles[0]
        return len(roles) > 1 and index < len(roles) and Role.OPTIMIZER in roles[index]

    def _subclasses_optimizer(self, cls: ast.ClassDef) -> bool:
        return any(_optimizer_type(self.ix.qualified(base))
                   for c in self.ix.related_classes(cls) for base in c.bases)

    def _named_like_optimizer(self, param: ast.arg) -> bool:
        if not OPTIMIZER_PARAM.match(param.arg):
            return False
        home = self.ix.function_defining(param)
        return any(f is not home for f in self._clearing_functions().get(param.arg, ()))

    def _clearing_functions(self) -> dict[str, list[Function | None]]:
        """For each last name of a ``zero_grad()`` receiver (``opt`` of ``self.opt``),
        the functions that clear it, computed once per module."""
        if self._cleared_names is None:
            found: dict[str, list[Function | None]] = {}
            for clear in self._clears:
                name = dotted(clear.receiver) if clear.receiver is not None else None
                if name is not None:
                    found.setdefault(name.rsplit(".", 1)[-1], []).append(self.ix.function_of(clear.node))
            self._cleared_names = found
        return self._cleared_names

    def identity(self, expr: ast.expr) -> tuple | None:
        """A key equal for two mentions of the same variable in the same scope."""
        name = dotted(expr)
        if name is None:
            return None
        if name.startswith("self."):
            return ("class", id(self.ix.class_of(self.ix.function_of(expr))), name)
        return ("function", id(self.ix.function_of(expr)), name)

    def clears_optimizer(self, clear: Clear, step: Step) -> bool:
        """Whether ``clear`` may clear the gradients ``step`` applies.

        ``zero_grad()`` on a *different* optimizer of the same scope does not; a module's
        ``zero_grad()``, ``p.grad = None`` or an optimizer we cannot tell apart does.
        """
        if clear.receiver is None:
            return True
        mine, theirs = self.identity(step.optimizer), self.identity(clear.receiver)
        if mine is None or theirs is None or mine == theirs:
            return True
        if mine[:2] != theirs[:2]:
            return True  # different scopes: may well be the same object
        if self.is_optimizer(clear.receiver):
            return False
        return not self._other_models(clear.receiver, step.optimizer)

    def _other_models(self, module: ast.expr, optimizer: ast.expr) -> bool:
        """Whether ``module.zero_grad()`` surely misses ``optimizer``'s parameters: the
        optimizer is built over ``owner.parameters()`` of other models only (a GAN's
        ``opt_g`` over ``netG``, cleared by ``netD.zero_grad()``), and neither is built
        from the other (``DDP(netG)``, ``netG = netD.generator``). Anything not seen
        being built in this module may be the same object: then it may clear."""
        owners = self._parameter_owners(optimizer)
        name = dotted(module)
        if not owners or name is None or name in {dotted(o) for o in owners}:
            return False
        built = self.ix.origins(module)
        if not built or any(not isinstance(o.expr, ast.Call) for o in built):
            return False
        owner_names = {dotted(o) for o in owners}
        if any(_mentions(o.expr, owner_names) for o in built):  # type: ignore[arg-type]
            return False
        for owner in owners:
            made = self.ix.origins(owner)
            if not made or any(not isinstance(o.expr, ast.Call) or _mentions(o.expr, {name})
                               for o in made):
                return False
        return True

    def _parameter_owners(self, optimizer: ast.expr) -> list[ast.expr]:
        """The ``owner`` of every ``owner.parameters()`` an optimizer is built over, when
        each of its constructions passes only such parameters (else empty)."""
        owners: list[ast.expr] = []
        for origin in self.ix.origins(optimizer):
            value = origin.expr
            if origin.index is not None or not isinstance(value, ast.Call):
                return []
            if not (value.args or value.keywords) or not is_optimizer_constructor(
                    self.ix.qualified(value.func)):
                return []
            params = next((k.value for k in value.keywords if k.arg == "params"), None)
            if params is None and value.args and not _first_is_keyword(value):
                params = _unstarred(value.args[0])
            found = _parameter_calls(params) if params is not None else None
            if not found:
                return []
            owners.extend(found)
        return owners if all(dotted(o) is not None for o in owners) else []

    # -- summaries -----------------------------------------------------------------------

    def events_in(self, container: ast.AST, func: Function | None) -> Events:
        """Events inside ``container`` (a loop, a statement, a function) of ``func``,
        with the events of same-module functions called there, transitively."""
        out = Events()
        mine = self.in_function(func)

        def inside(node: ast.AST) -> bool:
            return self.ix.within(node, container)

        out.backwards = [c for c in mine.backwards if inside(c)]
        out.step_calls = [c for c in mine.step_calls if inside(c)]
        out.clears = [c for c in mine.clears if inside(c.node)]
        out.steps = [s for s in mine.steps if inside(s.call)]
        for step in list(out.steps):
            if step.closure is None:
                continue
            closure = self.function_named(step.closure)
            if closure is not None:
                out.merge(self.summary(closure))
            elif not isinstance(step.closure, ast.Lambda):
                out.unknown_closures.append(step)
        for call in self.ix.calls_in_function(func):
            callee = self.ix.resolve_call(call)
            if callee is not None and self.ix.within(call, container):
                out.merge(self.summary(callee))
        return out

    def in_function(self, func: Function | None) -> Events:
        """The events ``func`` itself holds (``None``: module level), in source order,
        without those of the functions it calls."""
        return self._events_by_function().get(func, Events())

    def clears_at(self, node: ast.AST) -> list[Clear]:
        """The clears recorded for ``node`` itself (a call or a statement)."""
        if self._clears_by_node is None:
            found: dict[ast.AST, list[Clear]] = {}
            for clear in self._clears:
                found.setdefault(clear.node, []).append(clear)
            self._clears_by_node = found
        return self._clears_by_node.get(node, [])

    def _events_by_function(self) -> dict[ast.AST | None, Events]:
        """The module's events grouped by the function that holds them (``None``: module
        level), in source order, so that ``events_in`` looks at one function's events."""
        if self._by_function is None:
            groups: dict[ast.AST | None, Events] = {}

            def group(node: ast.AST) -> Events:
                return groups.setdefault(self.ix.function_of(node), Events())

            for call in self._backwards:
                group(call).backwards.append(call)
            for call in self._step_calls:
                group(call).step_calls.append(call)
            for clear in self._clears:
                group(clear.node).clears.append(clear)
            for step in self.steps():
                group(step.call).steps.append(step)
            self._by_function = groups
        return self._by_function

    def summary(self, func: Function) -> Events:
        if func in self._summaries:
            return self._summaries[func]
        if func in self._in_progress:
            return Events()  # recursion: the outer call is still collecting
        self._in_progress.add(func)
        try:
            events = self.events_in(func, func)
        finally:
            self._in_progress.discard(func)
        self._summaries[func] = events
        return events

    def function_named(self, expr: ast.expr) -> Function | None:
        if isinstance(expr, ast.Name):
            for node in self.ix.bindings(expr):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    return node
        return None

    @staticmethod
    def backward_targets(call: ast.Call) -> list[ast.expr]:
        """What a backward call back-propagates from: ``loss`` in ``loss.backward()``,
        ``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``,
        ``torch.autograd.backward(loss)``."""
        out: list[ast.expr] = []
        if isinstance(call.func, ast.Attribute):
            recv = call.func.value
            if isinstance(recv, ast.Call) and isinstance(recv.func, ast.Attribute) and recv.func.attr == "scale":
                out += [_unstarred(a) for a in recv.args[:1]]
            else:
                out.append(recv)
        out += [a for a in call.args if not isinstance(a, ast.Starred)][:1]
        return out


def _optimizer_type(names: set[str]) -> bool:
    return bool(names & OPTIMIZER_BASES) or is_optimizer_constructor(names)


def _unstarred(expr: ast.expr) -> ast.expr:
    return expr.value if isinstance(expr, ast.Starred) else expr


def _first_is_keyword(call: ast.Call) -> bool:
    """Whether a keyword argument comes before every positional one in the source."""
    if not call.keywords:
        return False
    return position(call.keywords[0]) < position(call.args[0])


def _parameter_calls(expr: ast.expr) -> list[ast.expr] | None:
    """The receivers of the ``x.parameters()`` / ``x.named_parameters()`` calls that
    ``expr`` is made of (through lists, dicts of param groups, ``chain``, ``list``,
    ``filter``); ``None`` if any other value could supply parameters."""
    expr = _unstarred(expr)
    if isinstance(expr, ast.Call):
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr in ("parameters", "named_parameters"):
            return [func.value]
        values = [*expr.args, *(k.value for k in expr.keywords)]
        inner = [_parameter_calls(a) for a in values if not isinstance(a, ast.Lambda)]
    elif isinstance(expr, (ast.List, ast.Tuple)):
        inner = [_parameter_calls(e) for e in expr.elts]
    elif isinstance(expr, ast.Dict):
        inner = [_parameter_calls(v) for k, v in zip(expr.keys, expr.values)
                 if isinstance(k, ast.Constant) and k.value == "params"]
    else:
        return None
    if not inner or any(i is None for i in inner):
        return None
    return [r for i in inner for r in i]  # type: ignore[union-attr]


def _mentions(expr: ast.AST, names: set[str | None]) -> bool:
    """Whether ``expr`` reads any of ``names`` (dotted), or an attribute of one."""
    return any(read == name or read.startswith(f"{name}.")
               for read in names_in(expr) for name in names if name is not None)


def _is_grad_attribute(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Attribute) and expr.attr == "grad"


def _zeroes(call: ast.Call) -> bool:
    """``zero_()``, ``fill_(0)``, ``mul_(0.0)``: not ``fill_(0.01)`` (fake gradients)."""
    if not (call.args or call.keywords):
        return True
    value = _unstarred(call.args[0]) if call.args else call.keywords[0].value
    return (isinstance(value, ast.Constant) and type(value.value) in (int, float)
            and float(value.value) == 0.0)


def _mentions_grad(expr: ast.expr) -> bool:
    """``p.grad`` or ``p.grad.data`` (the receiver of an in-place zeroing)."""
    while isinstance(expr, ast.Attribute):
        if expr.attr == "grad":
            return True
        expr = expr.value
    return False
