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
import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mllint.analysis.pyast.loss import GRAPH_KEEPING_METHODS, LOSS_FUNCTIONS
from mllint.gates.resolve import Imports, dotted, of_type
from mllint.gates.training import BACKWARD_METHODS, SAVE_FUNCTIONS
from mllint.optimizer_names import looks_like_optimizer
from mllint.project.roles import (
    NESTING_LAYERS,
    ROLE_KEEPING_METHODS,
    ROLE_KEEPING_WRAPPERS,
    SGD_CONSTRUCTORS,
    SGD_MOMENTUM_POSITION,
    UNKNOWN,
    Role,
    constructor_role,
    mode_dependent_layer,
)

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
    #: For a role from a constructor: its shortest qualified name (``torch.optim.AdamW``).
    kind: str | None = None
    #: An optimizer that keeps no state between steps (SGD without momentum).
    stateless: bool = False
    #: With ``call``: the element at this position of the tuple the call returns
    #: (``optimizer, scheduler = load_optimizer(args, model)``).
    position: int | None = None


@dataclass(frozen=True)
class FunctionSummary:
    qualname: str
    line: int
    params: tuple[str, ...]
    #: One entry per ``return``: what it gives back, per tuple position, as the set of
    #: values each position may hold.
    returns: tuple[tuple[frozenset[Value], ...], ...]
    #: Positions of the parameters this function writes with ``torch.save``.
    saved_params: frozenset[int]
    #: It clears gradients itself: ``x.zero_grad()`` or ``p.grad = None``.
    clears: bool = False
    #: Calls it hands one of its parameters to, as written (``utils.step(opt)``).
    forwards: tuple[str, ...] = ()
    #: Its own code back-propagates or steps an optimizer.
    trains: bool = False
    #: The names of everything it calls, as written.
    called: frozenset[str] = frozenset()
    #: Positions of its returned tuple that hold a loss tensor on every ``return``
    #: (``return loss, mse, ce`` of a loss function built from ``nn.MSELoss()`` and the
    #: like); position 0 for a plain returned loss.
    loss_positions: frozenset[int] = frozenset()
    #: Positions of the parameters whose weights alone it writes with ``torch.save``
    #: (``torch.save(model.state_dict(), out)``, also through ``model.module``), and what
    #: identifies the files it writes them to (``path_words``).
    saved_weights: frozenset[int] = frozenset()
    weights_path_words: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ClassSummary:
    qualname: str
    line: int
    #: Base classes as written (``nn.Module``, ``BaseModel``) and as imports resolve them.
    bases: tuple[str, ...]
    base_qualified: frozenset[str]
    #: A dropout or batch-norm layer, or a branch on ``self.training``, in its own code.
    mode_layers: bool
    #: Calls in its code that may build sub-modules and are no torch call: classes and
    #: factories of the project or of other libraries, as written.
    parts: tuple[str, ...]


@dataclass(frozen=True)
class CallSite:
    """A call of a function by name, as written, and the state around it."""

    callee: str
    line: int
    #: Enclosing function's qualified name ("" at module level).
    function: str
    #: Autograd is off around it (``with torch.no_grad():``, a ``@torch.no_grad()``
    #: function, ``torch.set_grad_enabled(False)``).
    no_grad: bool
    #: What it passes, as dotted names (None for anything else), by position and keyword.
    args: tuple[str | None, ...]
    kwargs: tuple[tuple[str, str], ...]
    #: The last ``.eval()``/``.train()`` before it in its function, per receiver.
    modes: tuple[tuple[str, str], ...]
    #: What each argument may hold, by position and by keyword (``Value`` sets).
    arg_values: tuple[frozenset[Value], ...] = ()
    kwarg_values: tuple[tuple[str, frozenset[Value]], ...] = ()
    #: Made inside a ``for``/``while`` loop of its function (or of the module's code).
    in_loop: bool = False
    #: For a method call ``x.method(...)``: what ``x`` may hold (``Value(call="Executor")``
    #: for ``x = Executor()``), so that the project can tell whose method it runs.
    receiver: frozenset[Value] = frozenset()


@dataclass(frozen=True)
class LoadSite:
    """A ``torch.load`` and the code around it."""

    line: int
    #: What identifies the file (``path_words``), its own and what a name it is given
    #: was assigned.
    words: frozenset[str]
    #: String keys the loaded object is indexed with (``ckpt["epoch"]``).
    keys: frozenset[str]
    #: The enclosing function (or the module, at top level) speaks of resuming.
    resumes: bool
    #: The model (or object) the loaded state goes into: ``netG`` for
    #: ``netG.load_state_dict(torch.load(p))`` and ``model = torch.load(p)``.
    into: frozenset[str] = frozenset()
    #: It runs before the training of the same function (or script) starts.
    before_training: bool = False


class ModuleSummary:
    """What one module defines and does, read off its tree on demand: a function's or
    class's summary is made the first time it is asked for, so the file being linted
    and the few modules its questions reach cost only what those questions need. It
    keeps the tree (``Project`` bounds how many summaries it keeps)."""

    def __init__(self, path: str, tree: ast.Module, digest: str) -> None:
        self.path = path
        self.digest = digest
        self.tree = tree
        self._imports = Imports.of(tree)
        self.imports: dict[str, frozenset[str]] = {
            k: frozenset(v) for k, v in self._imports.aliases.items()}
        stem = path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
        #: Named like a script that only uses a trained model (``test.py``, ``sample.py``).
        self.inference_script = bool(INFERENCE_SCRIPT.search(stem))
        function_nodes: dict[str, ast.AST] = {}
        class_nodes: dict[str, ast.AST] = {}
        _walk_defs(tree.body, "", function_nodes, class_nodes)
        self._function_nodes = function_nodes
        imports = self._imports
        self.functions: Mapping[str, FunctionSummary] = _Lazy(
            function_nodes, lambda q, node: _function(node, q, imports))
        self.classes: Mapping[str, ClassSummary] = _Lazy(
            class_nodes, lambda q, node: _class(node, q, imports))

    @functools.cached_property
    def loads(self) -> tuple[LoadSite, ...]:
        """Every ``torch.load`` and every file named where the code decides to resume;
        and every call of the module's own function or method that loads (``agent.load()``
        of an ``agent = TD3(...)``), as a load of the files it reads, where it is called."""
        training: list[set[str]] = []

        def trained() -> set[str]:
            # Made only for a module that loads: it reads every function of the module.
            if not training:
                training.append(_training_functions(self.functions))
            return training[0]

        owners = [self.tree, *of_type(self.tree, *_FUNCTIONS)]
        # Most modules read have neither a ``torch.load`` nor an ``if`` on resuming: the
        # code of each function is not walked for them.
        loading = any(self._imports.resolves_to(call.func, LOAD_FUNCTIONS)
                      for call in of_type(self.tree, ast.Call))
        resuming = any(_speaks_of_resuming_test(node) for node in of_type(self.tree, ast.If))
        direct = {id(owner): _loads(owner, self._imports, trained) if loading else []
                  for owner in owners}
        qualnames = {id(node): q for q, node in self._function_nodes.items()}
        loaders = {qualnames[id(o)]: sites for o in owners[1:] if (sites := direct[id(o)])
                   and id(o) in qualnames}
        loads: list[LoadSite] = []
        for owner in owners:
            loads.extend(direct[id(owner)])
            if loaders:
                loads.extend(_helper_loads(owner, self._imports, trained(), loaders,
                                           set(self.classes)))
            if resuming:
                loads.extend(_resume_paths(owner))
        return tuple(sorted(loads, key=lambda s: s.line))

    @functools.cached_property
    def trains(self) -> bool:
        """The module back-propagates or steps an optimizer."""
        return _trains(self.tree)

    @functools.cached_property
    def globals(self) -> dict[str, frozenset[Value]]:
        """Names the module binds to values of a known role at its top level."""
        return _bindings_values(self.tree.body, (), self._imports)


class _Lazy(Mapping):
    """A mapping whose values are made from their nodes when first read."""

    def __init__(self, nodes: dict[str, ast.AST], make) -> None:
        self._nodes = nodes
        self._make = make
        self._made: dict[str, object] = {}

    def __getitem__(self, key: str):
        if key not in self._made:
            self._made[key] = self._make(key, self._nodes[key])
        return self._made[key]

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def __iter__(self):
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)


def digest_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def summarize(path: str, tree: ast.Module, digest: str) -> ModuleSummary:
    return ModuleSummary(path, tree, digest)


def _walk_defs(body: list[ast.stmt], prefix: str, functions: dict[str, ast.AST],
               classes: dict[str, ast.AST]) -> None:
    for node in body:
        if isinstance(node, _FUNCTIONS):
            functions[prefix + node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes[prefix + node.name] = node
            _walk_defs(node.body, f"{prefix}{node.name}.", functions, classes)
        elif isinstance(node, (ast.If, ast.Try)):
            # ``if TYPE_CHECKING:``/``try:`` blocks at module level still define functions.
            _walk_defs(node.body, prefix, functions, classes)


def _class(cls: ast.ClassDef, qualname: str, imports: Imports) -> ClassSummary:
    bases = tuple(name for b in cls.bases if (name := dotted(b)) is not None)
    qualified = frozenset(q for b in cls.bases for q in imports.qualified(b))
    mode = False
    parts: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and node.attr == "training":
            mode = True
        elif isinstance(node, ast.Call):
            names = imports.qualified(node.func)
            kwargs = {k.arg: _literal(k.value) for k in node.keywords if k.arg is not None}
            if any(k.arg is None for k in node.keywords):
                kwargs["dropout"] = kwargs["norm"] = UNKNOWN
            positional = sum(99 if isinstance(a, ast.Starred) else 1 for a in node.args)
            known = [mode_dependent_layer(q, kwargs, positional) for q in names]
            if True in known:
                mode = True
            elif False in known and (dotted(node.func) or "").rpartition(".")[2] in NESTING_LAYERS \
                    and not all(isinstance(a, (ast.Call, ast.Constant)) for a in node.args):
                parts.add(dotted(node.func) or "")  # ``GINConv(mlp)``: a module built elsewhere
            elif not any(q.startswith("torch.") for q in names) and False not in known:
                name = dotted(node.func)
                head = (name or "").partition(".")[0]
                # Builtins, ``self.f(...)`` and ``super()`` build no sub-module we could see.
                if name and head not in ("self", "super", "cls") and (
                        head in imports.aliases or head[:1].isupper()):
                    parts.add(name)
    return ClassSummary(qualname, cls.lineno, bases, qualified, mode, tuple(sorted(parts)))


def _literal(value: ast.expr) -> object:
    if isinstance(value, ast.Constant) and isinstance(value.value, (bool, int, float, type(None))):
        return value.value
    return UNKNOWN


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    a = func.args
    return tuple(p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs])


def _own_nodes(func: ast.AST) -> list[ast.AST]:
    """The nodes of ``func``'s body, not of functions or classes nested in it (computed
    once per function: several facts are read off the same nodes)."""
    cached = getattr(func, "_mllint_own", None)
    if cached is not None:
        return cached
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        out.append(node)
        if not isinstance(node, (*_FUNCTIONS, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    func._mllint_own = out  # type: ignore[attr-defined]
    return out


def _bindings(nodes: list[ast.AST]) -> dict[str, list[ast.expr]]:
    out: dict[str, list[ast.expr]] = {}
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out.setdefault(target.id, []).append(node.value)
                elif isinstance(target, (ast.Tuple, ast.List)) and not any(
                        isinstance(e, ast.Starred) for e in target.elts):
                    _unpack(target.elts, node.value, out)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            if isinstance(node.target, ast.Name):
                out.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
            # ``with open(args.save, "rb") as f``: f stands for the file opened.
            out.setdefault(node.optional_vars.id, []).append(node.context_expr)
    return out


def _unpack(targets: list[ast.expr], value: ast.expr, out: dict[str, list[ast.expr]]) -> None:
    """``a, b = f(x)`` binds ``a`` to ``f(x)[0]``; ``a, b = x, y`` binds ``a`` to ``x``."""
    literal = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(targets) \
        and not any(isinstance(e, ast.Starred) for e in value.elts)
    if not literal and not isinstance(value, ast.Call):
        return
    for i, target in enumerate(targets):
        if not isinstance(target, ast.Name):
            continue
        element = value.elts[i] if literal else ast.Subscript(  # type: ignore[union-attr]
            value=value, slice=ast.Constant(i), ctx=ast.Load())
        out.setdefault(target.id, []).append(element)


def _bindings_values(body: list[ast.stmt], params: tuple[str, ...],
                     imports: Imports) -> dict[str, frozenset[Value]]:
    bindings = _bindings(list(body))
    out = {}
    for name in bindings:
        values = frozenset(v for v in _values(ast.Name(id=name), params, bindings, imports,
                                              _MAX_DEPTH) if v.role is not None)
        if values:
            out[name] = values
    return out


def _function(func: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str,
              imports: Imports) -> FunctionSummary:
    params = _params(func)
    nodes = _own_nodes(func)
    bindings = _bindings(nodes)
    returns = []
    saved: set[int] = set()
    weights: set[int] = set()
    words: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Return) and node.value is not None:
            elements = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            returns.append(tuple(_values(e, params, bindings, imports, _MAX_DEPTH)
                                 for e in elements))
        elif isinstance(node, ast.Call) and imports.resolves_to(node.func, SAVE_FUNCTIONS):
            payload = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "obj"), None)
            if isinstance(payload, ast.Name) and payload.id in params:
                saved.add(params.index(payload.id))
            owner = _weights_of(payload)
            if owner is not None and owner in params:
                weights.add(params.index(owner))
                path = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "f"), None)
                if path is not None:
                    words |= path_words(path)
                    for value in bindings.get(path.id, ()) if isinstance(path, ast.Name) else ():
                        words |= path_words(value)
    clears = any(_clears(node) for node in nodes)
    forwards = tuple(sorted({
        name for node in nodes if isinstance(node, ast.Call)
        and any(isinstance(a, ast.Name) and a.id in params for a in node.args)
        and (name := dotted(node.func)) is not None}))
    called = frozenset(name for node in nodes if isinstance(node, ast.Call)
                       and (name := dotted(node.func)) is not None)
    return FunctionSummary(qualname, func.lineno, params, tuple(returns), frozenset(saved),
                           clears, forwards, any(_training_call(n) for n in nodes), called,
                           _loss_positions(nodes, bindings, imports), frozenset(weights),
                           frozenset(words))


def _weights_of(payload: ast.expr | None) -> str | None:
    """``model`` for a payload ``model.state_dict()`` or ``model.module.state_dict()``."""
    if not (isinstance(payload, ast.Call) and isinstance(payload.func, ast.Attribute)
            and payload.func.attr == "state_dict" and not payload.args):
        return None
    owner = payload.func.value
    if isinstance(owner, ast.Attribute) and owner.attr == "module":
        owner = owner.value
    return owner.id if isinstance(owner, ast.Name) else None


def _loss_positions(nodes: list[ast.AST], bindings: dict[str, list[ast.expr]],
                    imports: Imports) -> frozenset[int]:
    """Positions of the returned tuple (0 for a single value) that hold a loss tensor on
    every ``return`` of one width: the value of a loss function or module call, or of
    arithmetic on one. Precise rather than complete: an element only sometimes a loss,
    or given back by ``.item()``, is not counted."""
    returned = [n.value.elts if isinstance(n.value, ast.Tuple) else [n.value]
                for n in nodes if isinstance(n, ast.Return) and n.value is not None]
    if not returned or len({len(r) for r in returned}) != 1 \
            or any(isinstance(e, ast.Starred) for r in returned for e in r):
        return frozenset()
    return frozenset(i for i in range(len(returned[0]))
                     if all(_holds_loss(r[i], bindings, imports, _MAX_DEPTH) for r in returned))


def _holds_loss(expr: ast.expr, bindings: dict[str, list[ast.expr]], imports: Imports,
                depth: int) -> bool:
    if depth <= 0:
        return False
    if isinstance(expr, ast.Name):
        values = bindings.get(expr.id, ())
        return bool(values) and all(_holds_loss(v, bindings, imports, depth - 1) for v in values)
    if isinstance(expr, ast.BinOp):  # the expression's own size bounds this
        return (_holds_loss(expr.left, bindings, imports, depth)
                or _holds_loss(expr.right, bindings, imports, depth))
    if not isinstance(expr, ast.Call):
        return False
    func = expr.func
    if imports.qualified(func) & LOSS_FUNCTIONS:
        return True  # ``F.mse_loss(x, y)``
    if isinstance(func, ast.Attribute) and func.attr in GRAPH_KEEPING_METHODS:
        return _holds_loss(func.value, bindings, imports, depth)  # ``loss.mean()``
    # A call of a loss module: ``nn.MSELoss()(x, y)``, or ``mse(x, y)`` with ``mse`` bound
    # in the function to ``nn.MSELoss()`` only.
    built = [func] if isinstance(func, ast.Call) else (
        bindings.get(func.id, []) if isinstance(func, ast.Name) else [])
    return bool(built) and all(
        isinstance(b, ast.Call) and constructor_role(imports.qualified(b.func)) is Role.LOSS
        for b in built)


def _training_call(node: ast.AST) -> bool:
    """``loss.backward()``, ``optimizer.step()`` (a receiver named like an optimizer)."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    if node.func.attr in BACKWARD_METHODS:
        return True
    return node.func.attr == "step" and looks_like_optimizer(dotted(node.func.value) or "")


def _calls_own(node: ast.AST, names: set[str]) -> bool:
    """``f(...)`` or ``self.f(...)`` of one of the module's own functions ``names``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in names
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "self" and func.attr in names)


def _training_functions(functions: Mapping[str, FunctionSummary]) -> set[str]:
    """Names of the module's functions that train, themselves or through another."""
    training = {q.rsplit(".", 1)[-1] for q, f in functions.items() if f.trains}
    changed = True
    while changed:
        changed = False
        for qualname, f in functions.items():
            name = qualname.rsplit(".", 1)[-1]
            if name not in training and any(c.rsplit(".", 1)[-1] in training for c in f.called):
                training.add(name)
                changed = True
    return training


def _clears(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "zero_grad"
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Attribute) and t.attr == "grad" for t in node.targets)
    return False


def _values(expr: ast.expr, params: tuple[str, ...], bindings: dict[str, list[ast.expr]],
            imports: Imports, depth: int) -> frozenset[Value]:
    """What ``expr`` may hold: every assignment to a name counts (flow-insensitive)."""
    if depth <= 0:
        return frozenset()
    if isinstance(expr, ast.Call):
        func = expr.func
        qualified = imports.qualified(func)
        role = constructor_role(qualified)
        if role is not None:
            return frozenset({Value(role=role, kind=min(qualified, key=len),
                                    stateless=role is Role.OPTIMIZER
                                    and _momentum_free(expr, qualified))})
        if isinstance(func, ast.Attribute) and func.attr in ROLE_KEEPING_METHODS:
            return _values(func.value, params, bindings, imports, depth - 1)
        if qualified & ROLE_KEEPING_WRAPPERS and expr.args:
            return _values(expr.args[0], params, bindings, imports, depth - 1)
        name = dotted(func)
        return frozenset({Value(call=name)}) if name is not None else frozenset()
    if isinstance(expr, ast.Name):
        if expr.id in params:
            return frozenset({Value(param=params.index(expr.id))})
        out: set[Value] = set()
        for value in bindings.get(expr.id, ()):
            out |= _values(value, params, bindings, imports, depth - 1)
        return frozenset(out)
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Call) \
            and isinstance(expr.slice, ast.Constant) and type(expr.slice.value) is int:
        # An element of the tuple a call returns (bound by unpacking, see ``_unpack``).
        name = dotted(expr.value.func)
        if name is None or constructor_role(imports.qualified(expr.value.func)) is not None:
            return frozenset()
        return frozenset({Value(call=name, position=expr.slice.value)})
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, (ast.Dict, ast.List, ast.Tuple)):
        # ``{"adam": optim.Adam(...), "sgd": optim.SGD(...)}[name]``: one of the entries.
        entries = expr.value.values if isinstance(expr.value, ast.Dict) else expr.value.elts
        found: set[Value] = set()
        for entry in entries:
            if isinstance(entry, ast.Starred):
                return frozenset()
            found |= _values(entry, params, bindings, imports, depth - 1)
        return frozenset(found)
    return frozenset()


def _trains(tree: ast.Module) -> bool:
    for call in of_type(tree, ast.Call):
        func = call.func
        if isinstance(func, ast.Attribute):
            if func.attr in BACKWARD_METHODS:
                return True
            if func.attr == "step" and looks_like_optimizer(dotted(func.value) or ""):
                return True
    return False


#: Identifiers that name no particular file: path helpers, option holders, folders.
GENERIC_PATH_NAMES = frozenset({
    "os", "path", "join", "args", "opt", "opts", "cfg", "config", "conf", "hparams",
    "self", "format", "str", "f", "Path", "pathlib", "torch", "dirname", "basename",
    "exists", "makedirs", "abspath", "expanduser", "root", "dir", "save_dir", "output_dir",
    "out_dir", "checkpoint_dir", "ckpt_dir", "log_dir", "logdir", "model_dir", "exp_dir",
    "work_dir", "run_dir", "epoch", "step", "i", "open",
})


#: A string piece that is only a file extension (after an f-string's variable part).
_EXTENSION_ONLY = re.compile(r"\.\w+(\.tar|\.gz|\.zip)?")


def path_words(expr: ast.AST) -> frozenset[str]:
    """What identifies the file a path expression names, so that a save and a load of
    one file can be matched however each spells the path: the options and attributes in
    it (``args.resume`` -> ``resume``) and the file-name parts of its strings, quoted
    (``os.path.join(d, "last.pt")`` -> ``'last.pt'``), less generic ones. Plain variable
    names (``filename``, ``path``) name different files in different functions: the
    values assigned to them are followed instead."""
    out: set[str] = set()
    # ``logger.get_checkpoint_path('latest')``: a method names how, not which file.
    called = {id(n.func) for n in ast.walk(expr) if isinstance(n, ast.Call)}
    for node in ast.walk(expr):
        if isinstance(node, ast.Attribute):
            if id(node) not in called:
                out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            piece = re.split(r"[/\\]", node.value)[-1]
            if _EXTENSION_ONLY.fullmatch(piece):
                continue  # ``f"{name}.cleanrl_model"``: every file of the kind ends so
            if len(piece) > 4 or (piece and not piece.startswith(".")):
                out.add(f"'{piece}'")
    return frozenset(out - GENERIC_PATH_NAMES)


def _loads(owner: ast.AST, imports: Imports,
           trained: Callable[[], set[str]]) -> list[LoadSite]:
    nodes = _own_nodes(owner)
    calls = [n for n in nodes if isinstance(n, ast.Call)
             and imports.resolves_to(n.func, LOAD_FUNCTIONS)]
    if not calls:
        return []
    bindings = _bindings(nodes)
    training = trained()
    train_lines = [n.lineno for n in nodes if _training_call(n) or _calls_own(n, training)]
    branches = _if_branches(nodes)
    resumes = _speaks_of_resuming(nodes)
    # ``ckpt = torch.load(...)`` then ``ckpt["epoch"]``: the keys read back, per load.
    loaded = {name for name, values in bindings.items()
              if any(v in calls for v in values)}
    read = [(n.value.id, n.slice.value) for n in nodes
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
            and n.value.id in loaded and isinstance(n.slice, ast.Constant)
            and isinstance(n.slice.value, str)]
    sites = []
    for call in calls:
        mine = {name for name in loaded if call in bindings[name]}
        keys = frozenset(key for name, key in read if name in mine)
        arg = call.args[0] if call.args else next(
            (k.value for k in call.keywords if k.arg == "f"), None)
        words = set(path_words(arg)) if arg is not None else set()
        if isinstance(arg, ast.Name):
            for value in bindings.get(arg.id, ()):
                words |= path_words(value)
        into = frozenset(_loaded_into(call, nodes, loaded))
        sites.append(LoadSite(call.lineno, frozenset(words), keys, resumes, into,
                              _before_training(call.lineno, train_lines, branches)))
    return sites


def _speaks_of_resuming(nodes: list[ast.AST]) -> bool:
    return any(RESUME_WORDS.search(w) for n in nodes for w in _words_of_node(n))


def _before_training(line: int, train_lines: list[int],
                     branches: list[tuple[tuple[int, int], tuple[int, int]]]) -> bool:
    """Training follows ``line``: the first training line that can run after it comes
    later (``if os.path.isfile(p): load(p) else: train()``: a load that skips training
    is not followed by it)."""
    after = [t for t in train_lines if not _exclusive(line, t, branches)]
    return bool(after) and line < min(after)


def _if_branches(nodes: list[ast.AST]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The line spans of the two branches of every ``if`` with an ``else``/``elif``."""
    def span(block: list[ast.stmt]) -> tuple[int, int]:
        return block[0].lineno, block[-1].end_lineno or block[-1].lineno
    return [(span(n.body), span(n.orelse)) for n in nodes if isinstance(n, ast.If) and n.orelse]


def _exclusive(a: int, b: int, branches: list[tuple[tuple[int, int], tuple[int, int]]]) -> bool:
    """Lines ``a`` and ``b`` lie in the two branches of one ``if``: never both run."""
    def within(line: int, span: tuple[int, int]) -> bool:
        return span[0] <= line <= span[1]
    return any((within(a, body) and within(b, other)) or (within(a, other) and within(b, body))
               for body, other in branches)


def _helper_loads(owner: ast.AST, imports: Imports, training: set[str],
                  loaders: dict[str, list[LoadSite]], classes: set[str]) -> list[LoadSite]:
    """Calls in ``owner`` of the module's own functions that load (``loaders``, by
    qualified name): ``restore(path)`` of a ``def restore``, or ``agent.load()`` on an
    instance of the module's class built in ``owner`` (``agent = TD3(...)``). Each is a
    load of what that function reads, at the call, judged by the code around the call."""
    nodes = _own_nodes(owner)
    instances = {t.id: dotted(n.value.func) for n in nodes
                 if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                 and dotted(n.value.func) in classes
                 for t in n.targets if isinstance(t, ast.Name)}
    found: list[tuple[ast.Call, list[LoadSite]]] = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        qualname = None
        if isinstance(func, ast.Name) and not imports.qualified(func):
            qualname = func.id
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            cls = instances.get(func.value.id)
            if cls is not None:
                qualname = f"{cls}.{func.attr}"
        if qualname in loaders:
            found.append((node, loaders[qualname]))
    if not found:
        return []
    # ``agent.update()`` of such an instance trains when that method does.
    train_lines = [n.lineno for n in nodes if _training_call(n) or _calls_own(n, training)
                   or (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                       and isinstance(n.func.value, ast.Name) and n.func.value.id in instances
                       and n.func.attr in training)]
    branches = _if_branches(nodes)
    resumes = _speaks_of_resuming(nodes)
    out = []
    for call, sites in found:
        words = frozenset().union(*(site.words for site in sites))
        keys = frozenset().union(*(site.keys for site in sites))
        out.append(LoadSite(call.lineno, words, keys, resumes, frozenset(),
                            _before_training(call.lineno, train_lines, branches)))
    return out


def _resume_paths(owner: ast.AST) -> list[LoadSite]:
    """Files named where the code decides to resume, which it then hands to a loader
    elsewhere: ``if cfg.start_epoch > 0: cfg.weights = f"{d}/net_epoch_{n}.pth"``."""
    sites = []
    for node in _own_nodes(owner):
        if not isinstance(node, ast.If) or not _speaks_of_resuming_test(node):
            continue
        # File names only (``'net_epoch_{}.pth'``), not the keys the body indexes with.
        files = frozenset(w for stmt in node.body for w in path_words(stmt)
                          if w.startswith("'") and "." in w.strip("'").lstrip("."))
        if files:
            sites.append(LoadSite(node.lineno, files, frozenset(), True))
    return sites


def _speaks_of_resuming_test(node: ast.If) -> bool:
    return any(RESUME_WORDS.search(w) for n in ast.walk(node.test) for w in _words_of_node(n))


def _loaded_into(call: ast.Call, nodes: list[ast.AST], loaded: set[str]) -> set[str]:
    """What the state ``call`` loads is put into."""
    out = set()
    for node in nodes:
        if isinstance(node, ast.Assign) and node.value is call:
            out |= {name for t in node.targets if (name := dotted(t)) is not None}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "load_state_dict" and node.args):
            arg = node.args[0]
            base = arg.value if isinstance(arg, ast.Subscript) else arg
            if arg is call or (isinstance(base, ast.Name) and base.id in loaded):
                receiver = dotted(node.func.value)
                if receiver is not None:
                    out.add(receiver)
    return out


def _words_of_node(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (node.attr,)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    return ()


def _momentum_free(call: ast.Call, qualified: set[str]) -> bool:
    """``torch.optim.SGD`` with momentum absent or a literal 0 (as ``analysis.training.
    sgd_momentum`` decides on libcst's tree): no state between steps."""
    if not qualified & SGD_CONSTRUCTORS:
        return False
    if any(k.arg is None for k in call.keywords) or any(
            isinstance(a, ast.Starred) for a in call.args):
        return False
    value = next((k.value for k in call.keywords if k.arg == "momentum"), None)
    if value is None and len(call.args) > SGD_MOMENTUM_POSITION:
        value = call.args[SGD_MOMENTUM_POSITION]
    if value is None:
        return True
    return isinstance(value, ast.Constant) and value.value == 0


NO_GRAD_MANAGERS = frozenset({
    "torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad",
    "torch.autograd.inference_mode", "torch.autograd.grad_mode.no_grad",
    "torch.autograd.grad_mode.inference_mode",
})
_SET_GRAD = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled"})


def _grad_off(expr: ast.expr, imports: Imports) -> bool:
    """``torch.no_grad()``, ``torch.inference_mode()``, ``torch.set_grad_enabled(False)``
    (as a context manager or a decorator)."""
    call = expr if isinstance(expr, ast.Call) else None
    func = call.func if call is not None else expr
    names = imports.qualified(func)
    if names & NO_GRAD_MANAGERS:
        return True
    if names & _SET_GRAD and call is not None and call.args:
        arg = call.args[0]
        return isinstance(arg, ast.Constant) and arg.value is False
    return False


@dataclass
class _Context:
    """The function a statement is in, as ``_call_sites`` walks it."""

    function: str
    modes: list[tuple[int, str, str]]
    params: tuple[str, ...]
    bindings: dict[str, list[ast.expr]]


def call_sites(tree: ast.Module) -> list[CallSite]:
    """Calls of functions by name in a module (``evaluate(model, loader)``,
    ``engine.evaluate(...)``), with the autograd and mode state around each. Kept out of
    ``ModuleSummary``: only questions about callers need them, and they cost more than
    the rest of a summary."""
    return _call_sites(tree, Imports.of(tree))


def _call_sites(tree: ast.Module, imports: Imports) -> list[CallSite]:
    out: list[CallSite] = []

    def walk(body: list[ast.stmt], ctx: _Context, no_grad: bool, in_loop: bool) -> None:
        for stmt in body:
            if isinstance(stmt, _FUNCTIONS):
                inner = any(_grad_off(d, imports) for d in stmt.decorator_list)
                name = f"{ctx.function}.{stmt.name}" if ctx.function else stmt.name
                walk(stmt.body, _Context(name, _mode_calls(stmt), _params(stmt),
                                         _bindings(_own_nodes(stmt))), inner, False)
                continue
            if isinstance(stmt, ast.ClassDef):
                name = f"{ctx.function}.{stmt.name}" if ctx.function else stmt.name
                walk(stmt.body, _Context(name, [], (), {}), False, False)
                continue
            off = no_grad
            if isinstance(stmt, (ast.With, ast.AsyncWith)):
                off = no_grad or any(_grad_off(i.context_expr, imports) for i in stmt.items)
            for node in _statement_nodes(stmt):
                if isinstance(node, ast.Call):
                    site = _site(node, ctx, off, imports, in_loop)
                    if site is not None:
                        out.append(site)
            looping = in_loop or isinstance(stmt, (ast.For, ast.AsyncFor, ast.While))
            for field_name in ("body", "orelse", "finalbody", "handlers"):
                inner_body = getattr(stmt, field_name, None)
                inner_loop = looping if field_name == "body" else in_loop
                if isinstance(inner_body, list) and inner_body and isinstance(inner_body[0], ast.stmt):
                    walk(inner_body, ctx, off, inner_loop)
                elif field_name == "handlers" and inner_body:
                    for handler in inner_body:
                        walk(handler.body, ctx, off, in_loop)

    walk(tree.body, _Context("", _mode_calls(tree), (), _bindings(_own_nodes(tree))), False,
         False)
    return out


def _statement_nodes(stmt: ast.stmt) -> list[ast.AST]:
    """The expression nodes of a statement itself, not of the statements nested in it."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = [
        v for name, v in ast.iter_fields(stmt)
        if name not in ("body", "orelse", "finalbody", "handlers") and isinstance(v, ast.AST)]
    for name, value in ast.iter_fields(stmt):
        if name not in ("body", "orelse", "finalbody", "handlers") and isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, ast.AST))
    while stack:
        node = stack.pop()
        out.append(node)
        if not isinstance(node, (ast.Lambda, *_FUNCTIONS)):
            stack.extend(ast.iter_child_nodes(node))
    return out


def _mode_calls(owner: ast.AST) -> list[tuple[int, str, str]]:
    """(line, receiver, "eval"|"train") for every ``x.eval()``/``x.train(...)`` of a
    function's own code."""
    out = []
    for node in _own_nodes(owner):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = dotted(node.func.value)
            if receiver is None:
                continue
            if node.func.attr == "eval":
                out.append((node.lineno, receiver, "eval"))
            elif node.func.attr == "train":
                off = node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value is False
                out.append((node.lineno, receiver, "eval" if off else "train"))
    return sorted(out)


def _receiver_values(func: ast.expr, imports: Imports, values) -> frozenset[Value]:
    """What the receiver of a method call may hold, for a receiver that is a local name
    (``executor`` of ``executor.train(...)``): not ``self``, nor an imported module."""
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        return frozenset()
    name = func.value.id
    if name in ("self", "cls") or name in imports.aliases:
        return frozenset()
    return values(func.value)


def _site(call: ast.Call, ctx: _Context, no_grad: bool, imports: Imports,
          in_loop: bool = False) -> CallSite | None:
    callee = dotted(call.func)
    if callee is None or not call.args and not call.keywords:
        return None
    last: dict[str, str] = {}
    for line, receiver, mode in ctx.modes:
        if line < call.lineno:
            last[receiver] = mode

    def values(expr: ast.expr) -> frozenset[Value]:
        return _values(expr, ctx.params, ctx.bindings, imports, _MAX_DEPTH)

    return CallSite(
        callee, call.lineno, ctx.function, no_grad,
        tuple(dotted(a) for a in call.args),
        tuple((k.arg, name) for k in call.keywords
              if k.arg is not None and (name := dotted(k.value)) is not None),
        tuple(sorted(last.items())),
        tuple(values(a) for a in call.args),
        tuple((k.arg, values(k.value)) for k in call.keywords if k.arg is not None),
        in_loop,
        _receiver_values(call.func, imports, values))
