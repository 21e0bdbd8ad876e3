"""Where the training happens in a module: which loops, functions and ``try`` bodies run a
training step (``backward()`` or an optimizer's ``step()``), directly or through a
same-module function they call.

A rule feeds ``TrainingMap`` during its single traversal (``enter``/``exit`` around the
nodes it wants to ask about, ``call`` and ``assign`` for every call and assignment) and
asks its questions after ``finish()``, in ``leave_Module``.

Optimizers are identified by how they were built (``analysis.is_optimizer_constructor``).
A receiver whose builder the module does not show (a parameter ``optimizer`` of a
``train`` function) is accepted when its name says it is an optimizer: ``opt``,
``optimizer_g``, ``self.optim``. Schedulers' ``step()`` is never a training step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property

import libcst as cst

from mllint.analysis.flow import Flow, source_of
from mllint.analysis.syntax import (
    dotted_name,
    is_optimizer_constructor,
    qualified_names,
)

# What back-propagates and what steps, defined with the stdlib-only ML006/ML008 gates.
from mllint.engine import traversal
from mllint.gates.training import (
    BACKWARD_FUNCTIONS,
    BACKWARD_METHODS,
    FACTORY_NAME,
    STEP_WITH_OPTIMIZER,
)
from mllint.optimizer_names import looks_like_optimizer
from mllint.project.roles import SGD_CONSTRUCTORS, SGD_MOMENTUM_POSITION, Role


@dataclass(frozen=True, eq=False)
class StepSite:
    """A training step or a call that may train (``node``), seen inside some containers.

    Its line and code are worked out when first read: a site is kept for every call of
    a training file, and only the few that end up in a message are ever read."""

    node: cst.Call
    containers: tuple[cst.CSTNode, ...]
    flow: Flow = field(repr=False)

    @cached_property
    def line(self) -> int:
        return self.flow.line(self.node)

    @cached_property
    def text(self) -> str:
        return source_of(self.node)


@dataclass
class _Call:
    name: str
    method: bool  # ``self.f(...)`` rather than ``f(...)``
    site: StepSite


@dataclass
class _Optimizer:
    target: str | None  # dotted name it was assigned to
    kind: str  # the constructor as written, e.g. ``torch.optim.AdamW``
    line: int
    models: tuple[str, ...]  # receivers of ``.parameters()`` in its arguments
    #: SGD without momentum (absent or a literal 0): it keeps no state between steps.
    stateless: bool = False
    #: SGD whose momentum is given but not as a literal: it may or may not keep buffers.
    maybe_momentum: bool = False


#: The public name rules use in annotations.
Optimizer = _Optimizer


@dataclass
class TrainingMap:
    flow: Flow
    _stack: list[cst.CSTNode] = field(default_factory=list)
    _steps: list[StepSite] = field(default_factory=list)
    _maybe_steps: list[tuple[str, StepSite, tuple[str, ...]]] = field(default_factory=list)
    _calls: list[_Call] = field(default_factory=list)
    #: ``recv.method(...)`` calls on a plain name, judged when the module is read: a
    #: call of the module's own method when ``recv`` holds an instance of its class.
    _instance_calls: list[tuple[str, cst.Name, StepSite]] = field(default_factory=list)
    _functions: dict[tuple[str, bool], list[cst.FunctionDef]] = field(default_factory=dict)
    optimizers: list[_Optimizer] = field(default_factory=list)
    _trains: dict[cst.CSTNode, StepSite] = field(default_factory=dict)
    _training_functions: dict[cst.FunctionDef, StepSite] = field(default_factory=dict)
    #: Lines and targets of ``optimizers``, so each question is a lookup, not a scan of
    #: every optimizer of the module (a file of many training functions stays linear).
    _optimizer_lines: set[int] = field(default_factory=set)
    _optimizer_targets: set[str | None] = field(default_factory=set)
    #: The ``callees`` key of each function: a call reaches a set of functions when the
    #: key it calls by is among the set's keys (one lookup, not a scan of every
    #: same-named method of the module).
    _function_keys: dict[cst.FunctionDef, tuple[str, bool]] = field(default_factory=dict)

    # -- feeding -------------------------------------------------------------------------

    def enter(self, node: cst.CSTNode) -> None:
        self._stack.append(node)
        if isinstance(node, cst.FunctionDef):
            is_method = isinstance(self.flow.parent(self.flow.parent(node) or node), cst.ClassDef)
            self._functions.setdefault((node.name.value, is_method), []).append(node)
            self._function_keys[node] = (node.name.value, is_method)

    def exit(self, node: cst.CSTNode) -> None:
        if self._stack and self._stack[-1] is node:
            self._stack.pop()

    @property
    def containers(self) -> tuple[cst.CSTNode, ...]:
        return tuple(self._stack)

    def call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in BACKWARD_METHODS:
                self._steps.append(self._site(node))
            elif isinstance(func.value, cst.Name) and self.flow.is_self(func.value):
                # ``self.train_step(batch)``, also when the method is called ``step``.
                self._calls.append(_Call(method, True, self._site(node)))
            elif method in STEP_WITH_OPTIMIZER:
                receiver = dotted_name(func.value) or ""
                args = tuple(dotted_name(a.value) or "" for a in node.args)
                self._maybe_steps.append((receiver, self._site(node), args))
            elif isinstance(func.value, cst.Name):
                self._instance_calls.append((method, func.value, self._site(node)))
        elif isinstance(func, cst.Name):
            if qualified_names(self.flow.v, func) & BACKWARD_FUNCTIONS:
                self._steps.append(self._site(node))
            else:
                self._calls.append(_Call(func.value, False, self._site(node)))

    def _resolve_instance_calls(self) -> None:
        """``agent.update(batch)`` of an ``agent = TD3(...)``: a method of a class of this
        module, called on an instance of it (asked only for names of its methods)."""
        pending, self._instance_calls = self._instance_calls, []
        for method, receiver, site in pending:
            if (method, True) in self._functions and self._own_instance(receiver):
                self._calls.append(_Call(method, True, site))

    def _own_instance(self, name: cst.Name) -> bool:
        """``name`` holds an instance of a class this module defines."""
        return any(isinstance(v, cst.Call) and self.flow.class_of(v.func) is not None
                   for v in self.flow.values(name))

    def assign(self, targets: list[cst.BaseExpression], value: cst.BaseExpression | None) -> None:
        if not isinstance(value, cst.Call):
            return
        names = qualified_names(self.flow.v, value.func)
        if not is_optimizer_constructor(names):
            self._factory_optimizers(targets, value)
            return
        kind = min(names, key=len) if names else source_of(value.func)
        models = tuple(_parameter_owners(value))
        line = self.flow.line(value)
        dotted = [dotted_name(t) for t in targets]
        momentum = sgd_momentum(names, value)
        for target in dotted or [None]:
            self._add(_Optimizer(target, kind, line, models, momentum is Momentum.NONE,
                                 momentum is Momentum.UNKNOWN))

    def _factory_optimizers(self, targets: list[cst.BaseExpression], value: cst.Call) -> None:
        """``optimizer = build_optimizer(cfg, model)``, ``model, opt = setup(cfg)``: a
        function of the project (this module or another) whose result is an optimizer,
        as the project model follows it."""
        context = getattr(self.flow.v, "context", None)
        view = context.project if context is not None else None
        callee = dotted_name(value.func)
        if view is None or callee is None:
            return
        # What the ML006/ML008 gates admit (``factory_candidate``): the target or the
        # factory must be named like an optimizer.
        named = [dotted_name(e.value) if isinstance(t, (cst.Tuple, cst.List)) else dotted_name(t)
                 for t in targets
                 for e in (t.elements if isinstance(t, (cst.Tuple, cst.List)) else [t])]
        if not FACTORY_NAME.search(callee) and not any(
                n and looks_like_optimizer(n) for n in named):
            return
        returned = view.returned_values(callee)
        if not returned:
            return
        line = self.flow.line(value)
        # A factory handed the model builds the optimizer over its parameters.
        models = tuple(_parameter_owners(value)) + tuple(
            n for n in (dotted_name(a.value) for a in value.args) if n is not None)
        for target in targets:
            if isinstance(target, (cst.Tuple, cst.List)):
                if len(target.elements) != len(returned):
                    continue
                pairs = list(zip((e.value for e in target.elements), returned))
            elif len(returned) == 1:
                pairs = [(target, returned[0])]
            else:
                continue
            for element, values in pairs:
                dotted = dotted_name(element)
                built = [v for v in values if v.role is Role.OPTIMIZER]
                if dotted is None or not built:
                    continue
                kinds = {v.kind for v in built}
                kind = kinds.pop() if len(kinds) == 1 and None not in kinds else callee
                self._add(_Optimizer(dotted, kind, line, models, all(v.stateless for v in built)))

    def parameters(self, func: cst.FunctionDef) -> None:
        """Optimizers a top-level function gets on a parameter named like one: what every
        caller in another module of the project passes there is built by an optimizer
        class (``fit_one_epoch(model, ..., optimizer, ...)`` called from ``train.py``)."""
        context = getattr(self.flow.v, "context", None)
        view = context.project if context is not None else None
        if view is None or not isinstance(self.flow.parent(func), cst.Module):
            return
        params = [*func.params.posonly_params, *func.params.params]
        for index, param in enumerate(params):
            name = param.name.value
            if not looks_like_optimizer(name):
                continue  # asking the callers of every parameter costs a read of them all
            values = view.param_values(func.name.value, index, name)
            built = [v for v in values if v.role is Role.OPTIMIZER]
            if not built or len(built) != len(values):
                continue
            kinds = {v.kind for v in built}
            # ``Adam`` or ``SGD``, as the caller's option picks: named both ways.
            kind = " or ".join(sorted(kinds)) if None not in kinds else name
            self._add(_Optimizer(name, kind, self.flow.line(func), (),
                                 all(v.stateless for v in built)))

    def constructor(self, node: cst.Call) -> None:
        """An optimizer built without being assigned (``return torch.optim.Adam(...)``)."""
        names = qualified_names(self.flow.v, node.func)
        if is_optimizer_constructor(names) and self.flow.line(node) not in self._optimizer_lines:
            momentum = sgd_momentum(names, node)
            self._add(
                _Optimizer(None, min(names, key=len), self.flow.line(node),
                           tuple(_parameter_owners(node)), momentum is Momentum.NONE,
                           momentum is Momentum.UNKNOWN)
            )

    def _add(self, optimizer: _Optimizer) -> None:
        self.optimizers.append(optimizer)
        self._optimizer_lines.add(optimizer.line)
        self._optimizer_targets.add(optimizer.target)

    def _site(self, node: cst.Call) -> StepSite:
        return StepSite(node, tuple(self._stack), self.flow)

    # -- questions -----------------------------------------------------------------------

    def is_optimizer(self, dotted: str) -> bool:
        return dotted in self._optimizer_targets or looks_like_optimizer(dotted)

    def finish(self) -> None:
        """Settle which containers train, following same-module calls to a fixed point.

        An optimizer step always counts. A ``backward()`` counts only where an optimizer
        steps: in a function that steps (itself or through a function it calls), in a
        function called from one, or in a closure inside one (LBFGS). A backward with no
        optimizer step in reach is profiling or gradient inspection, not training.
        """
        self._resolve_instance_calls()
        steps = [site for receiver, site, args in self._maybe_steps
                 if self.is_optimizer(receiver) or any(a and self.is_optimizer(a) for a in args)]
        context = self._stepping_functions(steps)
        steps += [site for site in self._steps
                  if any(f in context for f in _functions_on(site))]
        for site in sorted(steps, key=lambda s: s.line):
            for container in site.containers:
                self._trains.setdefault(container, site)
        trained = self.keys_of(self._trains)
        changed = True
        while changed:
            changed = False
            for call in self._calls:
                if (call.name, call.method) not in trained:
                    continue
                for container in call.site.containers:
                    if container not in self._trains:
                        self._trains[container] = call.site
                        trained |= self.keys_of([container])
                        changed = True

    def keys_of(self, containers) -> set[tuple[str, bool]]:
        """The ``callees`` keys by which a call reaches one of ``containers``."""
        return {self._function_keys[c] for c in containers if c in self._function_keys}

    def _stepping_functions(self, steps: list[StepSite]) -> set[cst.CSTNode | None]:
        """Functions (``None``: module level) from which an optimizer step is in reach."""
        stepping: set[cst.CSTNode | None] = {_functions_on(s)[0] for s in steps}
        stepping_keys = self.keys_of(stepping)
        changed = True
        while changed:  # a function that calls a stepping function steps too
            changed = False
            for call in self._calls:
                caller = _functions_on(call.site)[0]
                if caller not in stepping and (call.name, call.method) in stepping_keys:
                    stepping.add(caller)
                    stepping_keys |= self.keys_of([caller])
                    changed = True
        context = set(stepping)
        added: set[tuple[str, bool]] = set()  # keys whose callees are all in ``context``
        changed = True
        while changed:  # ...and so does what it calls: the step follows their backward
            changed = False
            for call in self._calls:
                key = (call.name, call.method)
                if key not in added and any(f in context for f in _functions_on(call.site)):
                    added.add(key)
                    for f in self.callees(*key):
                        if f not in context:
                            context.add(f)
                            changed = True
        return context

    def callees(self, name: str, method: bool) -> list[cst.FunctionDef]:
        return self._functions.get((name, method), [])

    def trains(self, container: cst.CSTNode) -> StepSite | None:
        """The first training step (or training call) seen inside ``container``."""
        return self._trains.get(container)

    def calls(self) -> list[tuple[list[cst.FunctionDef], StepSite]]:
        """Every call of a same-module function, with the functions it may reach."""
        self._resolve_instance_calls()
        return [(self.callees(c.name, c.method), c.site) for c in self._calls]

    def calls_by_key(self) -> list[tuple[tuple[str, bool], StepSite]]:
        """Every call of a same-module function, with the ``callees`` key it calls by."""
        self._resolve_instance_calls()
        return [((c.name, c.method), c.site) for c in self._calls]

    def optimizer_for(self, model: str | None) -> _Optimizer | None:
        """The optimizer built over ``model``'s parameters, else the first one built."""
        for opt in self.optimizers:
            if model is not None and model in opt.models:
                return opt
        return self.optimizers[0] if self.optimizers else None

    def optimizers_for(self, model: str | None) -> list[_Optimizer]:
        """The optimizers a checkpoint of ``model`` concerns: those built over its
        parameters, else (the module does not tell) every optimizer it builds."""
        mine = [o for o in self.optimizers if model is not None and model in o.models]
        return mine or list(self.optimizers)

    def model_names(self) -> set[str]:
        return {m for o in self.optimizers for m in o.models}


class Momentum(enum.Enum):
    """What an ``SGD(...)`` call says about its momentum."""

    NONE = "none"  # absent or a literal 0: no momentum buffers, no state at all
    LITERAL = "literal"  # a non-zero literal: momentum buffers
    UNKNOWN = "unknown"  # a variable (``args.momentum``) or ``**kwargs``




def sgd_momentum(names: set[str], call: cst.Call) -> Momentum | None:
    """For a ``torch.optim.SGD`` call, what it says about momentum; ``None`` otherwise.

    SGD keeps per-parameter state (``momentum_buffer``) only when momentum is non-zero;
    without it, its ``state_dict()`` holds nothing a resumed run would miss.
    """
    if not names & SGD_CONSTRUCTORS:
        return None
    positional = []
    value = None
    for arg in call.args:
        if arg.star:
            return Momentum.UNKNOWN  # ``**config`` may hold momentum
        if arg.keyword is None:
            positional.append(arg.value)
        elif arg.keyword.value == "momentum":
            value = arg.value
    if value is None and len(positional) > SGD_MOMENTUM_POSITION:
        value = positional[SGD_MOMENTUM_POSITION]
    if value is None:
        return Momentum.NONE
    if isinstance(value, (cst.Integer, cst.Float)):
        return Momentum.NONE if value.evaluated_value == 0 else Momentum.LITERAL
    return Momentum.UNKNOWN


def _functions_on(site: StepSite) -> list[cst.CSTNode | None]:
    """The functions enclosing ``site``, innermost first; ``[None]`` at module level."""
    found: list[cst.CSTNode | None] = [
        c for c in reversed(site.containers) if isinstance(c, cst.FunctionDef)]
    return found or [None]


def _parameter_owners(call: cst.Call) -> list[str]:
    """``model`` for every ``model.parameters()`` / ``named_parameters()`` in the arguments."""
    finder = _ParametersFinder()
    for arg in call.args:
        traversal.visit(arg, finder)
    return finder.owners


class _ParametersFinder(cst.CSTVisitor):
    def __init__(self) -> None:
        self.owners: list[str] = []

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        # ``model.parameters()``, and helpers named so (``model.get_parameters()``,
        # ``model.trainable_parameters()``): the parameters of ``model``.
        if isinstance(func, cst.Attribute) and (
                func.attr.value in ("parameters", "named_parameters")
                or func.attr.value.endswith("_parameters")):
            name = dotted_name(func.value)
            if name is not None:
                self.owners.append(name)
