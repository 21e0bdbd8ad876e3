"""One module read into what the project model is asked about it.

A ``ModuleSummary`` is built from Python's ``ast`` in one pass over the module and holds
no tree: what each function returns (a role, a parameter, or a call still to be
followed), which parameters it writes with ``torch.save``, where the module loads a
checkpoint and whether that code resumes training. Values are followed within a
function flow-insensitively (any assignment to a name may reach a use of it), which
over-approximates the roles a value may have and never invents one without a
constructor, a factory or a usage behind it.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field

from mllint.gates.resolve import Imports, dotted, of_type
from mllint.gates.training import BACKWARD_METHODS, SAVE_FUNCTIONS
from mllint.optimizer_names import looks_like_optimizer
from mllint.project.roles import ROLE_KEEPING_METHODS, ROLE_KEEPING_WRAPPERS, Role, constructor_role

LOAD_FUNCTIONS = frozenset({"torch.load", "torch.serialization.load"})
#: Words of code that resumes an interrupted run rather than evaluating a trained model.
RESUME_WORDS = re.compile(
    r"resum|start_?epoch|start_?iter|start_?step|begin_?epoch|init_?epoch|continue_?train"
    r"|restart|last_?epoch", re.IGNORECASE)
#: File names of scripts that only use a trained model.
INFERENCE_SCRIPT = re.compile(r"(^|_)(test|eval|evaluate|infer|inference|predict|sample|"
                              r"sampling|demo|generate|export|deploy|serve)", re.IGNORECASE)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Value:
    """What an expression holds, as far as its own module tells."""

    role: Role | None = None
    call: str | None = None  # a call of this dotted name, for the project to follow
    param: int | None = None  # the function's parameter at this position


@dataclass(frozen=True)
class FunctionSummary:
    qualname: str
    line: int
    params: tuple[str, ...]
    #: One entry per ``return``: the values it gives back, one per tuple position.
    returns: tuple[tuple[Value | None, ...], ...]
    #: Positions of the parameters this function writes with ``torch.save``.
    saved_params: frozenset[int]


@dataclass(frozen=True)
class LoadSite:
    """A ``torch.load`` and the code around it."""

    line: int
    #: Identifiers and string pieces of the path argument (``args.resume`` -> resume).
    words: frozenset[str]
    #: String keys the loaded object is indexed with (``ckpt["epoch"]``).
    keys: frozenset[str]
    #: The enclosing function (or the module, at top level) speaks of resuming.
    resumes: bool


@dataclass(frozen=True)
class ModuleSummary:
    path: str
    digest: str
    imports: dict[str, frozenset[str]]
    functions: dict[str, FunctionSummary]
    loads: tuple[LoadSite, ...]
    #: The module back-propagates or steps an optimizer.
    trains: bool
    #: Named like a script that only uses a trained model (``test.py``, ``sample.py``).
    inference_script: bool = False
    #: Names the module binds to a value of a known role at its top level.
    globals: dict[str, Value] = field(default_factory=dict)


def digest_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def summarize(path: str, tree: ast.Module, digest: str) -> ModuleSummary:
    imports = Imports.of(tree)
    functions: dict[str, FunctionSummary] = {}
    loads: list[LoadSite] = []
    _walk_defs(tree.body, "", imports, functions)
    for owner in [tree, *of_type(tree, *_FUNCTIONS)]:
        loads.extend(_loads(owner, imports))
    stem = path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    return ModuleSummary(
        path=path,
        digest=digest,
        imports={k: frozenset(v) for k, v in imports.aliases.items()},
        functions=functions,
        loads=tuple(sorted(loads, key=lambda s: s.line)),
        trains=_trains(tree),
        inference_script=bool(INFERENCE_SCRIPT.search(stem)),
        globals=_bindings_values(tree.body, (), imports),
    )


def _walk_defs(body: list[ast.stmt], prefix: str, imports: Imports,
               out: dict[str, FunctionSummary]) -> None:
    for node in body:
        if isinstance(node, _FUNCTIONS):
            qualname = prefix + node.name
            out[qualname] = _function(node, qualname, imports)
        elif isinstance(node, ast.ClassDef):
            _walk_defs(node.body, f"{prefix}{node.name}.", imports, out)
        elif isinstance(node, (ast.If, ast.Try)):
            # ``if TYPE_CHECKING:``/``try:`` blocks at module level still define functions.
            _walk_defs(node.body, prefix, imports, out)


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    a = func.args
    return tuple(p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs])


def _own_nodes(func: ast.AST) -> list[ast.AST]:
    """The nodes of ``func``'s body, not of functions or classes nested in it."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        out.append(node)
        if not isinstance(node, (*_FUNCTIONS, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return out


def _bindings(nodes: list[ast.AST]) -> dict[str, list[ast.expr]]:
    out: dict[str, list[ast.expr]] = {}
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out.setdefault(target.id, []).append(node.value)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            if isinstance(node.target, ast.Name):
                out.setdefault(node.target.id, []).append(node.value)
    return out


def _bindings_values(body: list[ast.stmt], params: tuple[str, ...],
                     imports: Imports) -> dict[str, Value]:
    bindings = _bindings(list(body))
    out = {}
    for name in bindings:
        value = _value(ast.Name(id=name), params, bindings, imports, _MAX_DEPTH)
        if value is not None and value.role is not None:
            out[name] = value
    return out


def _function(func: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str,
              imports: Imports) -> FunctionSummary:
    params = _params(func)
    nodes = _own_nodes(func)
    bindings = _bindings(nodes)
    returns = []
    saved: set[int] = set()
    for node in nodes:
        if isinstance(node, ast.Return) and node.value is not None:
            elements = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            returns.append(tuple(_value(e, params, bindings, imports, _MAX_DEPTH)
                                 for e in elements))
        elif isinstance(node, ast.Call) and imports.resolves_to(node.func, SAVE_FUNCTIONS):
            payload = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "obj"), None)
            if isinstance(payload, ast.Name) and payload.id in params:
                saved.add(params.index(payload.id))
    return FunctionSummary(qualname, func.lineno, params, tuple(returns), frozenset(saved))


def _value(expr: ast.expr, params: tuple[str, ...], bindings: dict[str, list[ast.expr]],
           imports: Imports, depth: int) -> Value | None:
    if depth <= 0:
        return None
    if isinstance(expr, ast.Call):
        func = expr.func
        role = constructor_role(imports.qualified(func))
        if role is not None:
            return Value(role=role)
        if isinstance(func, ast.Attribute) and func.attr in ROLE_KEEPING_METHODS:
            return _value(func.value, params, bindings, imports, depth - 1)
        if imports.qualified(func) & ROLE_KEEPING_WRAPPERS and expr.args:
            return _value(expr.args[0], params, bindings, imports, depth - 1)
        name = dotted(func)
        return Value(call=name) if name is not None else None
    if isinstance(expr, ast.Name):
        if expr.id in params:
            return Value(param=params.index(expr.id))
        found = [_value(v, params, bindings, imports, depth - 1)
                 for v in bindings.get(expr.id, ())]
        # A role beats a call still to follow; the first of either otherwise.
        found = [v for v in found if v is not None]
        return next((v for v in found if v.role is not None), found[0] if found else None)
    return None


def _trains(tree: ast.Module) -> bool:
    for call in of_type(tree, ast.Call):
        func = call.func
        if isinstance(func, ast.Attribute):
            if func.attr in BACKWARD_METHODS:
                return True
            if func.attr == "step" and looks_like_optimizer(dotted(func.value) or ""):
                return True
    return False


def _words(expr: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.update(p for p in re.split(r"[/\\{}]+", node.value) if p)
    return out


def _loads(owner: ast.AST, imports: Imports) -> list[LoadSite]:
    nodes = _own_nodes(owner)
    calls = [n for n in nodes if isinstance(n, ast.Call)
             and imports.resolves_to(n.func, LOAD_FUNCTIONS)]
    if not calls:
        return []
    bindings = _bindings(nodes)
    resumes = any(RESUME_WORDS.search(w) for n in nodes for w in _words_of_node(n))
    # ``ckpt = torch.load(...)`` then ``ckpt["epoch"]``: the keys read back.
    loaded = {name for name, values in bindings.items()
              if any(v in calls for v in values)}
    keys = frozenset(
        n.slice.value for n in nodes
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
        and n.value.id in loaded and isinstance(n.slice, ast.Constant)
        and isinstance(n.slice.value, str))
    sites = []
    for call in calls:
        arg = call.args[0] if call.args else next(
            (k.value for k in call.keywords if k.arg == "f"), None)
        words = _words(arg) if arg is not None else set()
        if isinstance(arg, ast.Name):
            for value in bindings.get(arg.id, ()):
                words |= _words(value)
        sites.append(LoadSite(call.lineno, frozenset(words), keys, resumes))
    return sites


def _words_of_node(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (node.attr,)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    return ()
