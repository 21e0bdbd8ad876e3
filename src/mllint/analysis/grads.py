"""Backward passes, optimizer steps and gradient clearing in one module's code.

``GradEvents`` classifies the calls and assignments a ``CodeIndex`` collected and sums
them up per loop or function, following same-module helpers (and ``step(closure)``
closures) into their bodies. Optimizers are identified by how they were built, never by
their variable's name alone: a constructor call (``torch.optim.*``, the optimizers of
libraries people train with, same-module ``Optimizer`` subclasses), a same-module
factory returning one, a wrapper such as ``accelerator.prepare(opt)``, a parameter
annotated as an optimizer or passed one by a same-module caller. Only as a last resort
is a parameter accepted by name (``optimizer``, ``opt_g``), and then only when the module
calls ``zero_grad()`` on a receiver of that name elsewhere, i.e. uses the name for one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from mllint.analysis.index import CodeIndex, Function, Origin
from mllint.analysis.syntax import dotted_name, is_optimizer_constructor, names_in

# How optimizers are recognised, defined with ML001's analysis on ``ast``.
from mllint.analysis.pyast.grads import BACKWARD_FUNCTIONS, EXTRA_OPTIMIZERS, OPTIMIZER_BASES  # noqa: F401
from mllint.analysis.pyast.grads import OPTIMIZER_PARAM as _OPTIMIZER_PARAM
from mllint.analysis.pyast.grads import CLEARING_NAME as _CLEARING_NAME
from mllint.analysis.pyast.grads import GRAD_ZEROING_FUNCTIONS, GRAD_ZEROING_METHODS
from mllint.prefilter import GAP, any_layout, dotted
from mllint.project.roles import Role

#: Text every backward call this module recognises leaves in a file: a ``.backward``
#: method call, or ``backward`` imported from ``torch.autograd`` (a sound prefilter).
#: ``x.backward``, ``from torch.autograd import backward``, ``x.step``: the rules'
#: prefilter signs, written for any layout (``GAP`` between tokens, comments inside a
#: bracketed import), so the prefilter needs no normalised copies of the text for them.
BACKWARD_SIGNS = (
    any_layout(dotted(r"backward\b")),
    any_layout(rf"from(?:\s|\\)+torch{GAP}\.{GAP}autograd(?:\s|\\)+import(?:[^;#]|#[^\r\n]*(?![^\r\n]))*?\bbackward\b"),
)
BACKWARD_TEXT = "|".join(BACKWARD_SIGNS)
STEP_TEXT = any_layout(dotted(r"step\b"))
#: Wrappers that return the optimizer they are given (accelerate, fabric, apex, horovod).
OPTIMIZER_WRAPPERS = frozenset({"prepare", "prepare_optimizer", "setup_optimizers", "DistributedOptimizer"})


@dataclass(frozen=True)
class Step:
    """``optimizer.step(...)``, or ``scaler.step(optimizer)`` which steps ``optimizer``."""

    call: cst.Call
    optimizer: cst.BaseExpression
    #: The argument ``step`` is given (an LBFGS-style closure), if any.
    closure: cst.BaseExpression | None


@dataclass(frozen=True)
class Clear:
    """A statement or call that clears gradients."""

    node: cst.CSTNode
    #: The receiver of ``.zero_grad()``; ``None`` when it reaches any parameter
    #: (``p.grad = None``, an external ``zero_grads(model)``).
    receiver: cst.BaseExpression | None


@dataclass
class Events:
    backwards: list[cst.Call] = field(default_factory=list)
    #: Every ``x.step(...)`` call, optimizer or not (a training iteration's marker).
    step_calls: list[cst.Call] = field(default_factory=list)
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

    def __init__(self, index: CodeIndex) -> None:
        self.ix = index
        self._backwards: list[cst.Call] = []
        self._step_calls: list[cst.Call] = []
        self._clears: list[Clear] = []
        self._steps: list[Step] | None = None
        self._summaries: dict[int, Events] = {}
        self._in_progress: set[int] = set()
        self._optimizer_memo: dict[int, bool] = {}
        self._by_function: dict[int, Events] | None = None
        self._cleared_names: dict[str, list[Function | None]] | None = None
        self._clears_by_node: dict[int, list[Clear]] | None = None
        for call in index.nodes.calls:
            self._classify_call(call)
        for node in index.nodes.assigns:
            targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            if any(_is_grad_attribute(t) for t in targets):
                self._clears.append(Clear(node, None))
        for node in index.nodes.dels:
            if _is_grad_attribute(node.target) or (
                isinstance(node.target, cst.Tuple)
                and any(_is_grad_attribute(e.value) for e in node.target.elements)
            ):
                self._clears.append(Clear(node, None))

    # -- classifying -------------------------------------------------------------------

    def _classify_call(self, call: cst.Call) -> None:
        func = call.func
        names = self.ix.qualified(func)
        if names & BACKWARD_FUNCTIONS:
            self._backwards.append(call)
        elif names & GRAD_ZEROING_FUNCTIONS:
            self._clears.append(Clear(call, None))
        if not isinstance(func, cst.Attribute):
            if isinstance(func, cst.Name) and _CLEARING_NAME.search(func.value):
                if self.ix.resolve_call(call) is None:
                    self._clears.append(Clear(call, None))
            return
        method = func.attr.value
        if method == "backward":
            self._backwards.append(call)
        elif method == "step":
            self._step_calls.append(call)
        elif method == "zero_grad":
            self._clears.append(Clear(call, func.value))
        elif method in GRAD_ZEROING_METHODS and _mentions_grad(func.value) and _zeroes(call):
            self._clears.append(Clear(call, None))
        elif _CLEARING_NAME.search(method) and self.ix.resolve_call(call) is None:
            self._clears.append(Clear(call, None))

    @property
    def backwards(self) -> list[cst.Call]:
        return self._backwards

    @property
    def clears(self) -> list[Clear]:
        return self._clears

    def steps(self) -> list[Step]:
        """Every optimizer step in the module (calls of ``.step`` on an optimizer)."""
        if self._steps is None:
            self._steps = [s for s in map(self._as_step, self._step_calls) if s is not None]
        return self._steps

    def _as_step(self, call: cst.Call) -> Step | None:
        recv = call.func.value  # type: ignore[union-attr] - only attribute calls get here
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        closure_kw = next((a.value for a in call.args if a.keyword and a.keyword.value == "closure"), None)
        if self.is_optimizer(recv):
            return Step(call, recv, closure_kw or (positional[0] if positional else None))
        if positional and self.is_optimizer(positional[0]):
            # ``scaler.step(optimizer)`` (GradScaler) steps ``optimizer``.
            return Step(call, positional[0], None)
        return None

    # -- optimizers --------------------------------------------------------------------

    def is_optimizer(self, expr: cst.BaseExpression) -> bool:
        key = id(expr)
        if key not in self._optimizer_memo:
            self._optimizer_memo[key] = False  # recursion guard
            self._optimizer_memo[key] = self._is_optimizer(expr)
        return self._optimizer_memo[key]

    def _is_optimizer(self, expr: cst.BaseExpression) -> bool:
        origins = self.ix.origins(expr)
        if any(self._origin_is_optimizer(o) for o in origins):
            return True
        # Last resort: a parameter named like an optimizer, in a module that clears a
        # receiver of that name elsewhere (so it uses the name for optimizers).
        params = [o.param for o in origins if o.param is not None]
        return any(self._named_like_optimizer(p) for p in params)

    def _origin_is_optimizer(self, origin: Origin) -> bool:
        if origin.index is not None:  # one element of what a call returns
            return isinstance(origin.expr, cst.Call) and self._project_returns_optimizer(
                origin.expr, origin.index)
        if origin.param is not None:
            ann = origin.param.annotation
            if ann is None:
                return self._passed_an_optimizer(origin.param)
            names = self.ix.qualified(ann.annotation)
            return bool(names & OPTIMIZER_BASES) or is_optimizer_constructor(names)
        value = origin.expr
        if not isinstance(value, cst.Call):
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
            cls = self.ix.class_of(callee) if callee.name.value == "__init__" else None
            if cls is not None:
                return self._subclasses_optimizer(cls)
            return any(
                r.value is not None and self.is_optimizer(r.value)
                for r in self.ix.returns_of(callee)
            )
        cls = self.ix.class_named(value.func)
        if cls is not None:
            return self._subclasses_optimizer(cls)
        method = value.func.attr.value if isinstance(value.func, cst.Attribute) else None
        method = method or (value.func.value if isinstance(value.func, cst.Name) else None)
        if method in OPTIMIZER_WRAPPERS:
            return any(self.is_optimizer(a.value) for a in value.args if not a.star)
        return False

    def _optimizer_class_parameter(self, func: cst.BaseExpression) -> bool:
        """``optimizer_klass(params, lr=lr)`` where the parameter ``optimizer_klass``
        defaults to an optimizer class (``optimizer_klass=Adam``)."""
        if not isinstance(func, cst.Name):
            return False
        for origin in self.ix.origins(func):
            default = origin.param.default if origin.param is not None else None
            if default is not None and is_optimizer_constructor(self.ix.qualified(default)):
                return True
        return False

    def _project(self):
        context = getattr(self.ix.v, "context", None)
        return context.project if context is not None else None

    def _passed_an_optimizer(self, param: cst.Param) -> bool:
        """A parameter of a top-level function that the project's callers in other
        modules hand an optimizer (``train(model, loader, optimizer)`` from main.py)."""
        view = self._project()
        func = self.ix.function_defining(param)
        if view is None or func is None or self.ix.class_of(func) is not None:
            return False
        params = [p.name.value for p in func.params.params]
        name = param.name.value
        index = params.index(name) if name in params else len(params)
        return Role.OPTIMIZER in view.param_roles(func.name.value, index, name)

    def _project_returns_optimizer(self, call: cst.Call, index: int | None = None) -> bool:
        """A factory of another module (or one the index does not follow) that returns an
        optimizer: ``optimizer = build_optimizer(cfg, model)``, or at ``index`` of the
        tuple it returns (``optimizer, msg = build_optimizer(cfg)``)."""
        view = self._project()
        callee = dotted_name(call.func)
        if view is None or callee is None:
            return False
        roles = view.returned_roles(callee)
        if index is None:
            return len(roles) == 1 and Role.OPTIMIZER in roles[0]
        return len(roles) > 1 and index < len(roles) and Role.OPTIMIZER in roles[index]

    def _subclasses_optimizer(self, cls: cst.ClassDef) -> bool:
        for c in self.ix.related_classes(cls):
            for base in c.bases:
                names = self.ix.qualified(base.value)
                if names & OPTIMIZER_BASES or is_optimizer_constructor(names):
                    return True
        return False

    def _named_like_optimizer(self, param: cst.Param) -> bool:
        name = param.name.value
        if not _OPTIMIZER_PARAM.match(name):
            return False
        home = self.ix.function_defining(param)
        return any(f is not home for f in self._clearing_functions().get(name, ()))

    def _clearing_functions(self) -> dict[str, list[Function | None]]:
        """For each last name of a ``zero_grad()`` receiver (``opt`` of ``self.opt``),
        the functions that clear it, computed once per module."""
        if self._cleared_names is None:
            found: dict[str, list[Function | None]] = {}
            for clear in self._clears:
                dotted = dotted_name(clear.receiver) if clear.receiver is not None else None
                if dotted is not None:
                    found.setdefault(dotted.rsplit(".", 1)[-1], []).append(
                        self.ix.function_of(clear.node))
            self._cleared_names = found
        return self._cleared_names

    def identity(self, expr: cst.BaseExpression) -> tuple | None:
        """A key equal for two mentions of the same variable in the same scope."""
        dotted = dotted_name(expr)
        if dotted is None:
            return None
        if dotted.startswith("self."):
            cls = self.ix.class_of(self.ix.function_of(expr))
            return ("class", id(cls), dotted)
        return ("function", id(self.ix.function_of(expr)), dotted)

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

    def _other_models(self, module: cst.BaseExpression, optimizer: cst.BaseExpression) -> bool:
        """Whether ``module.zero_grad()`` surely misses ``optimizer``'s parameters: the
        optimizer is built over ``owner.parameters()`` of other models only (a GAN's
        ``opt_g`` over ``netG``, cleared by ``netD.zero_grad()``), and neither is built
        from the other (``DDP(netG)``, ``netG = netD.generator``). Anything not seen
        being built in this module may be the same object: then it may clear."""
        owners = self._parameter_owners(optimizer)
        name = dotted_name(module)
        if not owners or name is None or name in {dotted_name(o) for o in owners}:
            return False
        built = self.ix.origins(module)
        if not built or any(not isinstance(o.expr, cst.Call) for o in built):
            return False
        owner_names = {dotted_name(o) for o in owners}
        if any(_mentions(o.expr, owner_names) for o in built):
            return False
        for owner in owners:
            made = self.ix.origins(owner)
            if not made or any(not isinstance(o.expr, cst.Call) or _mentions(o.expr, {name})
                               for o in made):
                return False
        return True

    def _parameter_owners(self, optimizer: cst.BaseExpression) -> list[cst.BaseExpression]:
        """The ``owner`` of every ``owner.parameters()`` an optimizer is built over, when
        each of its constructions passes only such parameters (else empty)."""
        owners: list[cst.BaseExpression] = []
        origins = self.ix.origins(optimizer)
        for origin in origins:
            value = origin.expr
            if origin.index is not None or not isinstance(value, cst.Call) or not value.args:
                return []
            if not is_optimizer_constructor(self.ix.qualified(value.func)):
                return []
            params = next((a.value for a in value.args
                           if a.keyword is not None and a.keyword.value == "params"),
                          value.args[0].value if value.args[0].keyword is None else None)
            found = _parameter_calls(params) if params is not None else None
            if not found:
                return []
            owners.extend(found)
        return owners if all(dotted_name(o) is not None for o in owners) else []

    # -- summaries ---------------------------------------------------------------------

    def events_in(self, container: cst.CSTNode, func: Function | None) -> Events:
        """Events inside ``container`` (a loop, a statement, a function body) of ``func``,
        with the events of same-module functions called there, transitively."""
        out = Events()
        mine = self.in_function(func)

        def inside(node: cst.CSTNode) -> bool:
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
            elif not isinstance(step.closure, cst.Lambda):
                out.unknown_closures.append(step)
        for call in self.ix.calls_in_function(func):
            callee = self.ix.resolve_call(call)
            if callee is not None and self.ix.within(call, container):
                out.merge(self.summary(callee))
        return out

    def in_function(self, func: Function | None) -> Events:
        """The events ``func`` itself holds (``None``: module level), in source order,
        without those of the functions it calls."""
        return self._events_by_function().get(id(func) if func is not None else 0, Events())

    def clears_at(self, node: cst.CSTNode) -> list[Clear]:
        """The clears recorded for ``node`` itself (a call or a statement)."""
        if self._clears_by_node is None:
            found: dict[int, list[Clear]] = {}
            for clear in self._clears:
                found.setdefault(id(clear.node), []).append(clear)
            self._clears_by_node = found
        return self._clears_by_node.get(id(node), [])

    def _events_by_function(self) -> dict[int, Events]:
        """The module's events grouped by the function that holds them (``0``: module
        level), in source order: ``events_in`` then looks at one function's events, not
        at every event of the module (which made a file of many small training
        functions cost quadratic time)."""
        if self._by_function is None:
            groups: dict[int, Events] = {}

            def group(node: cst.CSTNode) -> Events:
                func = self.ix.function_of(node)
                return groups.setdefault(id(func) if func is not None else 0, Events())

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
        key = id(func)
        if key in self._summaries:
            return self._summaries[key]
        if key in self._in_progress:
            return Events()  # recursion: the outer call is still collecting
        self._in_progress.add(key)
        try:
            events = self.events_in(func.body, func)
        finally:
            self._in_progress.discard(key)
        self._summaries[key] = events
        return events

    def function_named(self, expr: cst.BaseExpression) -> Function | None:
        if isinstance(expr, cst.Name):
            for node in self.ix.bindings(expr):
                if isinstance(node, cst.FunctionDef):
                    return node
        return None

    def backward_targets(self, call: cst.Call) -> list[cst.BaseExpression]:
        """What a backward call back-propagates from: ``loss`` in ``loss.backward()``,
        ``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``,
        ``torch.autograd.backward(loss)``."""
        out: list[cst.BaseExpression] = []
        if isinstance(call.func, cst.Attribute):
            recv = call.func.value
            if isinstance(recv, cst.Call) and isinstance(recv.func, cst.Attribute) and recv.func.attr.value == "scale":
                out += [a.value for a in recv.args[:1]]
            else:
                out.append(recv)
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        out += positional[:1]
        return out


def _parameter_calls(expr: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """The receivers of the ``x.parameters()`` / ``x.named_parameters()`` calls that
    ``expr`` is made of (through lists, dicts of param groups, ``chain``, ``list``,
    ``filter``); ``None`` if any other value could supply parameters."""
    if isinstance(expr, cst.Call):
        func = expr.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("parameters", "named_parameters"):
            return [func.value]
        inner = [_parameter_calls(a.value) for a in expr.args if not isinstance(a.value, cst.Lambda)]
    elif isinstance(expr, (cst.List, cst.Tuple)):
        inner = [_parameter_calls(e.value) for e in expr.elements]
    elif isinstance(expr, cst.Dict):
        inner = [_parameter_calls(e.value) for e in expr.elements
                 if isinstance(e, cst.DictElement) and isinstance(e.key, cst.SimpleString)
                 and e.key.evaluated_value == "params"]
    else:
        return None
    if not inner or any(i is None for i in inner):
        return None
    return [r for i in inner for r in i]


def _mentions(expr: cst.CSTNode, names: set[str | None]) -> bool:
    """Whether ``expr`` reads any of ``names`` (dotted), or an attribute of one."""
    return any(read == name or read.startswith(f"{name}.")
               for read in names_in(expr) for name in names if name is not None)


def _is_grad_attribute(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Attribute) and expr.attr.value == "grad"


def _zeroes(call: cst.Call) -> bool:
    """``zero_()``, ``fill_(0)``, ``mul_(0.0)``: not ``fill_(0.01)`` (fake gradients)."""
    if not call.args:
        return True
    value = call.args[0].value
    return isinstance(value, (cst.Integer, cst.Float)) and float(value.value) == 0.0


def _mentions_grad(expr: cst.BaseExpression) -> bool:
    """``p.grad`` or ``p.grad.data`` (the receiver of an in-place zeroing)."""
    while isinstance(expr, cst.Attribute):
        if expr.attr.value == "grad":
            return True
        expr = expr.value
    return False
