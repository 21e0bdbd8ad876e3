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
cannot hold an ML001 finding.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

from mllint.gates.resolve import Imports, dotted, of_type
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
    return _optimizer_evidence(tree, calls, imports) or (
        project is not None and _project_evidence(tree, project))


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
