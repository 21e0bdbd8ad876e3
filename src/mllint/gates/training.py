"""Gates of the rules built on ``analysis.training`` (ML006, ML008).

Each asks, over Python's ``ast``, for the few things without which the rule cannot
report in a module, by the rule's own definitions (names resolved through imports as
``resolve.Imports`` over-approximates them). Library code that saves or catches errors
but never trains is common; these are the files they turn away.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

from mllint.gates.resolve import Imports, dotted, of_type
from mllint.optimizer_names import is_optimizer_constructor, looks_like_optimizer
from mllint.prefilter import project_aware
from mllint.project.roles import Role

if TYPE_CHECKING:
    from mllint.project.model import ProjectView

# Defined here (stdlib only) and imported by ``analysis.training`` and the rules, so the
# gates and the libcst analyses recognise the same calls.
SAVE_FUNCTIONS = frozenset({"torch.save", "torch.serialization.save"})
#: Methods whose call back-propagates: ``loss.backward()``, ``accelerator.backward(loss)``,
#: Lightning's ``self.manual_backward(loss)``.
BACKWARD_METHODS = frozenset({"backward", "manual_backward"})
BACKWARD_FUNCTIONS = frozenset({"torch.autograd.backward"})
#: Methods that apply an update for the optimizer they are given (``scaler.step(opt)``,
#: ``xm.optimizer_step(opt)``).
STEP_WITH_OPTIMIZER = frozenset({"step", "optimizer_step"})
#: Names of calls that may write a checkpoint through a helper of the project
#: (``save_checkpoint``, ``utils.save_on_master``, ``ckpt_manager.snapshot``).
CHECKPOINT_CALL = re.compile(
    r"(^|_)save($|_(?!pretrained))|Save|checkpoint|Checkpoint|ckpt|snapshot")
#: A factory of the project counts as building an optimizer when what it builds is
#: named like one (the target) or it is (``build_optimizer``); the libcst side then asks
#: the project model what the factory returns.
FACTORY_NAME = re.compile(r"optim", re.IGNORECASE)
#: What a broad ``except`` names.
BROAD = frozenset({"Exception", "BaseException"})
_TRIES = (ast.Try, ast.TryStar) if hasattr(ast, "TryStar") else (ast.Try,)


def _calls(tree: ast.AST) -> list[ast.Call]:
    return of_type(tree, ast.Call)


def _builds_optimizer(calls: list[ast.Call], imports: Imports) -> bool:
    return any(is_optimizer_constructor(imports.qualified(c.func)) for c in calls)


@project_aware
def checkpoint_may_flag(tree: ast.Module, project: ProjectView | None = None) -> bool:
    """ML006 reports a ``torch.save`` call or a call of a checkpoint helper
    (``CHECKPOINT_CALL``), and only in a module that builds an optimizer or gets one from
    a factory (``TrainingMap.optimizers``: constructor calls, or ``factory_candidate``)."""
    imports = Imports.of(tree)
    calls = _calls(tree)
    saves = any(imports.resolves_to(c.func, SAVE_FUNCTIONS) or (c.args and _helper_save(c, project))
                for c in calls)
    if not saves:
        return False
    return (_builds_optimizer(calls, imports) or _factory_optimizers(tree, project)
            or _parameter_optimizers(tree, imports, project))


def _parameter_optimizers(tree: ast.Module, imports: Imports,
                          project: ProjectView | None) -> bool:
    """A top-level function that saves with ``torch.save`` and is handed an optimizer,
    on a parameter named like one, by its callers in other modules
    (``TrainingMap.parameters``), as the project model answers."""
    if project is None:
        return False
    for func in tree.body:
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        params = [*func.args.posonlyargs, *func.args.args]
        if not any(looks_like_optimizer(p.arg) for p in params) or not any(
                isinstance(c, ast.Call) and imports.resolves_to(c.func, SAVE_FUNCTIONS)
                for c in ast.walk(func)):
            continue
        for index, param in enumerate(params):
            if looks_like_optimizer(param.arg) and \
                    Role.OPTIMIZER in project.param_roles(func.name, index, param.arg):
                return True
    return False


def _factory_optimizers(tree: ast.Module, project: ProjectView | None) -> bool:
    """``optimizer = build_optimizer(cfg)``: a factory candidate that, with the project
    model at hand, returns an optimizer (``TrainingMap._factory_optimizers``)."""
    for node in of_type(tree, ast.Assign):
        if isinstance(node.value, ast.Call) and factory_candidate(node.targets, node.value):
            callee = dotted(node.value.func)
            if project is None or callee is None:
                return True
            if any(Role.OPTIMIZER in roles for roles in project.returned_roles(callee)):
                return True
    return False


def _helper_save(call: ast.Call, project: ProjectView | None) -> bool:
    """A call named like a checkpoint helper that, with the project model at hand, runs
    a project function of another module that ``torch.save``s an argument."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if not CHECKPOINT_CALL.search(name):
        return False
    callee = dotted(func)
    if project is None or callee is None:
        return True
    found = project.function(callee)
    return found is not None and bool(found[1].saved_params or found[1].saved_weights)


def factory_candidate(targets: list[ast.expr], value: ast.Call) -> bool:
    """Whether ``targets = value`` may bind an optimizer from a project factory."""
    if FACTORY_NAME.search(dotted(value.func) or ""):
        return True
    names = []
    for target in targets:
        names.extend(target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target])
    return any(looks_like_optimizer(dotted(t) or "") for t in names)


@project_aware
def swallow_may_flag(tree: ast.Module, project: ProjectView | None = None) -> bool:
    """ML008 reports a broad handler that does not re-raise, of a ``try`` whose body
    trains, or of a ``try`` in a loop body that trains after it (the handler may
    ``continue`` past the step).

    Something trains only if an optimizer steps somewhere in the module: a
    ``.step()``/``.optimizer_step()`` whose receiver or an argument is an optimizer (built
    by a constructor, or named like one), or a method call of an optimizer-named receiver
    that may wrap the step (``optimizer.step_and_update_lr()``, a method the module
    defines). The ``try`` body, or a statement after the ``try`` in its loop body, must
    then hold a backward or step call, or a call of a function or method the module defines.
    """
    imports = Imports.of(tree)
    calls = _calls(tree)
    defined = {n.name for n in of_type(tree, ast.FunctionDef, ast.AsyncFunctionDef)}
    if not (_optimizer_steps(calls, imports) or _wrapper_steps(calls, defined)
            or _factory_optimizers(tree, project)):
        return False
    trainers = {alias for alias, names in imports.aliases.items() if names & BACKWARD_FUNCTIONS}
    guarded = [t for t in of_type(tree, *_TRIES)
               if any(_broad(h) and not _raises(h) for h in t.handlers)]
    for node in guarded:
        if _any_may_train(node.body, defined, trainers):
            return True
    if guarded:
        for loop in of_type(tree, ast.For, ast.AsyncFor, ast.While):
            for i, stmt in enumerate(loop.body):
                if stmt in guarded and _any_may_train(loop.body[i + 1:], defined, trainers):
                    return True
    return False


def _any_may_train(statements: list[ast.stmt], defined: set[str], trainers: set[str]) -> bool:
    return any(_may_train(n, defined, trainers)
               for stmt in statements for n in ast.walk(stmt) if isinstance(n, ast.Call))


def _optimizer_steps(calls: list[ast.Call], imports: Imports) -> bool:
    steps = [c for c in calls if isinstance(c.func, ast.Attribute)
             and c.func.attr in STEP_WITH_OPTIMIZER]
    if not steps:
        return False
    if _builds_optimizer(calls, imports):
        return True  # any receiver may be a name the optimizer was assigned to
    for call in steps:
        names = [dotted(call.func.value) or ""] + [dotted(a) or "" for a in call.args]
        if any(n and looks_like_optimizer(n) for n in names):
            return True
    return False


def _wrapper_steps(calls: list[ast.Call], defined: set[str]) -> bool:
    """``optimizer.step_and_update_lr()`` or ``optimizer.<method the module defines>()``."""
    for call in calls:
        func = call.func
        if isinstance(func, ast.Attribute) and (func.attr.startswith("step_") or func.attr in defined):
            if looks_like_optimizer(dotted(func.value) or ""):
                return True
    return False


def _may_train(call: ast.Call, defined: set[str], trainers: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        # ``loss.backward()``, ``opt.step()``, ``opt.step_and_update_lr()``,
        # ``self.train_step()``, ``self.optimizer.update()``
        return (func.attr in BACKWARD_METHODS or func.attr in STEP_WITH_OPTIMIZER
                or func.attr.startswith("step_") or func.attr in defined)
    if isinstance(func, ast.Name):
        return func.id in defined or func.id in trainers
    return False


def _broad(handler: ast.ExceptHandler) -> bool:
    kind = handler.type
    if kind is None:
        return True
    elements = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(isinstance(e, ast.Name) and e.id in BROAD for e in elements)


def _raises(handler: ast.ExceptHandler) -> bool:
    """A ``raise`` runs in the handler (not in a function or lambda defined there)."""
    stack: list[ast.AST] = list(handler.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False
