"""Gate of ML001 (missing-zero-grad): could any ``.step()`` here be an optimizer's?

ML001 reports only at an optimizer step (``GradEvents.steps``) in a module that calls
``backward()``. A receiver is an optimizer (``GradEvents.is_optimizer``) only through
one of: a constructor call (``torch.optim.X``, the libraries ``is_optimizer_constructor``
knows, ``ZeroRedundancyOptimizer``), a parameter defaulting to an optimizer class
(``optimizer_klass=Adam``), a class deriving from an optimizer, a parameter annotated as
one, or a parameter named like one whose name the module clears elsewhere
(``opt_g.zero_grad()``); with the project model, also a parameter that callers in other
modules hand an optimizer, or a project factory returning one. Same-module factories and
wrappers (``accelerator.prepare``) only pass one of those on. A module with none of them
cannot hold an ML001 finding; nor can one whose every step is cleared in its own loop
before its backward (``_every_step_cleared``, below).
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

from mllint.gates.resolve import Imports, dotted, enclosing, of_type, parents
from mllint.optimizer_names import is_optimizer_constructor
from mllint.prefilter import project_aware
from mllint.project.roles import Role

if TYPE_CHECKING:
    from mllint.project.model import ProjectView

# Defined here (stdlib only) and imported by ``analysis.grads``, so the gate and the
# libcst analysis recognise optimizers alike.
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


@project_aware
def may_flag(tree: ast.Module, project: ProjectView | None = None) -> bool:
    imports = Imports.of(tree)
    calls = of_type(tree, ast.Call)
    backward = steps = False
    for call in calls:
        func = call.func
        if isinstance(func, ast.Attribute):
            backward = backward or func.attr == "backward"
            steps = steps or func.attr == "step"
        elif not backward and imports.resolves_to(func, BACKWARD_FUNCTIONS):
            backward = True
    if not (backward and steps):
        return False
    if not (_optimizer_evidence(tree, calls, imports)
            or project is not None and _project_evidence(tree, project)):
        return False
    return not _every_step_cleared(tree, calls, imports)


def _project_evidence(tree: ast.Module, project: ProjectView) -> bool:
    """What the project model adds (``GradEvents._passed_an_optimizer`` and
    ``_project_returns_optimizer``): a top-level function whose callers in other
    modules pass an optimizer, or a call of a factory that returns one."""
    for func in tree.body:
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = func.args
            for i, p in enumerate([*a.posonlyargs, *a.args, *a.kwonlyargs]):
                if Role.OPTIMIZER in project.param_roles(func.name, i, p.arg):
                    return True
    for node in of_type(tree, ast.Assign):
        if isinstance(node.value, ast.Call):
            callee = dotted(node.value.func)
            roles = project.returned_roles(callee) if callee is not None else ()
            if any(Role.OPTIMIZER in r for r in roles):
                return True
    return False


def _optimizer_type(names: set[str]) -> bool:
    return bool(names & OPTIMIZER_BASES) or is_optimizer_constructor(names)


def _optimizer_evidence(tree: ast.Module, calls: list[ast.Call], imports: Imports) -> bool:
    for call in calls:
        names = imports.qualified(call.func)
        if names and (is_optimizer_constructor(names) or names & EXTRA_OPTIMIZERS):
            return True
    for args in of_type(tree, ast.arguments):
        # ``def __init__(..., optimizer_klass=Adam)``: the class is called later.
        for default in (*args.defaults, *(d for d in args.kw_defaults if d is not None)):
            if is_optimizer_constructor(imports.qualified(default)):
                return True
    for cls in of_type(tree, ast.ClassDef):
        if any(_optimizer_type(imports.qualified(base)) for base in cls.bases):
            return True
    cleared = {
        (dotted(c.func.value) or "").rsplit(".", 1)[-1]
        for c in calls
        if isinstance(c.func, ast.Attribute) and c.func.attr == "zero_grad"
    }
    for arg in of_type(tree, ast.arg):
        if arg.annotation is not None and any(
            _optimizer_type(imports.qualified(n))
            for n in ast.walk(arg.annotation) if isinstance(n, (ast.Name, ast.Attribute))
        ):
            return True
        if arg.arg in cleared and OPTIMIZER_PARAM.match(arg.arg):
            return True
    return False


# -- steps that surely clear ------------------------------------------------------------
#
# A module where an optimizer steps can still hold no ML001 finding: the common training
# step clears the same optimizer in the same loop, unconditionally, before its backward.
# ``_every_step_cleared`` proves that for every ``.step()`` call, by the rule's own four
# ways of reporting (``MissingZeroGrad.check``), each answered by something the code
# shows at once; any step it cannot prove so keeps the file:
#
# * never cleared: a ``zero_grad()`` on the same name (the same text: the analysis gives
#   it the same identity, so it clears that optimizer), in the same function and inside
#   the innermost loop around the step, when there is one (the analysis looks for the
#   clear among the events of that loop, helpers included);
# * cleared on every micro-batch: the step sits under no ``if`` inside that loop (only a
#   guarded step can wait for several backward passes);
# * cleared between backward and step: walking back from the step statement through its
#   block (and out of ``with`` blocks, as the rule does), a statement that surely
#   back-propagates comes before anything that may clear (a clearing call, a ``.grad``
#   assignment, a helper of the module, a loop holding any of these);
# * a closure cleared after its backward: the step has no argument that may be a closure.
#
# Steps of schedulers (``sched``/``warmup`` names never bound to an optimizer) and of RL
# environments are no optimizer steps; a ``scaler.step(opt)`` steps its argument.

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_NOT_STEPPING = re.compile(r"sched|warmup|(^|_)env($|_)", re.IGNORECASE)
_SCALER = re.compile(r"scaler", re.IGNORECASE)
_CLEARING_CALLS = GRAD_ZEROING_METHODS | {"zero_grad"} | {
    n.rsplit(".", 1)[-1] for n in GRAD_ZEROING_FUNCTIONS}


def _every_step_cleared(tree: ast.Module, calls: list[ast.Call], imports: Imports) -> bool:
    defined = {f.name for f in of_type(tree, ast.FunctionDef, ast.AsyncFunctionDef)}
    clears: dict[str, list[ast.Call]] = {}
    for call in calls:
        if isinstance(call.func, ast.Attribute) and call.func.attr == "zero_grad":
            receiver = dotted(call.func.value)
            if receiver is not None:
                clears.setdefault(receiver, []).append(call)
    for call in calls:
        if isinstance(call.func, ast.Attribute) and call.func.attr == "step":
            if not _step_cleared(call, tree, defined, clears, imports):
                return False
    return True


def _step_cleared(call: ast.Call, tree: ast.Module, defined: set[str],
                  clears: dict[str, list[ast.Call]], imports: Imports) -> bool:
    receiver = dotted(call.func.value)  # type: ignore[attr-defined]
    if receiver is None:
        return False
    args = [*call.args, *(k.value for k in call.keywords)]
    if any(isinstance(a, ast.Lambda) or (dotted(a) or "").rsplit(".", 1)[-1] in defined
           for a in args):
        return False  # maybe ``opt.step(closure)``
    if _NOT_STEPPING.search(receiver.rsplit(".", 1)[-1]) and not _bound_to_optimizer(
            tree, receiver, imports):
        return True
    if not call.args:
        stepped = [receiver]
    elif _SCALER.search(receiver.rsplit(".", 1)[-1]) and not _bound_to_optimizer(tree, receiver, imports):
        stepped = [dotted(call.args[0])]
    else:
        stepped = [receiver, dotted(call.args[0])]
    if None in stepped or any(isinstance(a, ast.Starred) for a in call.args):
        return False
    ancestors = enclosing(call, tree)
    loop = next((a for a in ancestors if isinstance(a, _LOOPS)), None)
    inside = ancestors[: ancestors.index(loop)] if loop is not None else ancestors
    if any(isinstance(a, (ast.If, ast.IfExp, *_COMPREHENSIONS)) for a in inside):
        return False
    function = ancestors[-1] if ancestors and isinstance(ancestors[-1], _FUNCTIONS) else None
    for name in stepped:
        if not any(_clear_in(c, function, loop, tree) for c in clears.get(name, ())):  # type: ignore[arg-type]
            return False
    return not _may_clear_before(call, tree, defined)


def _clear_in(clear: ast.Call, function: ast.AST | None, loop: ast.AST | None,
              tree: ast.Module) -> bool:
    ancestors = enclosing(clear, tree)
    mine = ancestors[-1] if ancestors and isinstance(ancestors[-1], _FUNCTIONS) else None
    return mine is function and (loop is None or loop in ancestors)


def _bound_to_optimizer(tree: ast.Module, name: str, imports: Imports) -> bool:
    """Some assignment binds ``name`` from an optimizer's constructor (then a
    scheduler-named variable may be one after all)."""
    for node in of_type(tree, ast.Assign, ast.AnnAssign):
        value = node.value
        if not isinstance(value, ast.Call):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {dotted(t) for target in targets
                 for t in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target])}
        if name in names and (is_optimizer_constructor(imports.qualified(value.func))
                              or "optim" in (dotted(value.func) or "").rsplit(".", 1)[-1].lower()):
            return True
    return False


def _may_clear_before(call: ast.Call, tree: ast.Module, defined: set[str]) -> bool:
    """Whether something between the step and the backward before it may clear the
    gradients (``MissingZeroGrad._check_cleared_before_step``)."""
    up = parents(tree)
    statement = up.get(call)
    if not isinstance(statement, ast.Expr):
        return False  # the rule looks only at a step that is a statement of its own
    current: ast.AST = statement
    line = statement.lineno
    while True:
        block = up.get(current)
        body = _block_of(block, current)
        if body is None:
            return False
        for previous in reversed(body[: body.index(current)]):
            if previous.end_lineno == line and current is statement:
                continue  # on the step's own line: the rule does not look there
            if _surely_backward(previous):
                return False
            if _may_clear(previous, defined):
                return True
        if not isinstance(block, (ast.With, ast.AsyncWith)):
            return False
        current = block


def _block_of(block: ast.AST | None, statement: ast.AST) -> list[ast.stmt] | None:
    for field in ("body", "orelse", "finalbody"):
        body = getattr(block, field, None)
        if isinstance(body, list) and statement in body:
            return body
    for handler in getattr(block, "handlers", ()):
        if statement in handler.body:
            return handler.body
    return None


def _own_nodes(statement: ast.AST):
    """The nodes of ``statement`` outside functions, lambdas and classes defined in it."""
    stack = [statement]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node)
                     if not isinstance(c, (*_FUNCTIONS, ast.ClassDef)))


def _surely_backward(statement: ast.stmt) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "backward" for n in _own_nodes(statement))


def _may_clear(statement: ast.stmt, defined: set[str]) -> bool:
    for node in ast.walk(statement):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _CLEARING_CALLS or name in defined or CLEARING_NAME.search(name):
                return True
        elif isinstance(node, ast.Attribute) and node.attr == "grad" and not isinstance(node.ctx, ast.Load):
            return True
    return False
