"""Gate of ML004 (loss-tensor-accumulated): is anything that may be a loss accumulated?

ML004 reports an accumulation (``t += x``, ``t = t + x``, ``xs.append(x)``,
``extend``/``appendleft``/``insert``) whose added value carries a loss
(``analysis.loss.LossOracle.carried_loss``). This gate runs a coarse version of that
question over Python's ``ast``: flow- and scope-insensitive (a dotted name is a loss if
*any* assignment anywhere gives it one, or if it is back-propagated anywhere), with a
fixpoint instead of a depth limit, and without most of the rule's later conditions
(loops, lifetimes, resets). Two it does ask, as the rule does: ``t = ... + ...`` adds to
``t`` only when ``t`` is in one of its terms (``_adds_to_itself``), and a sum inside
``with torch.no_grad():`` keeps no graph (``_autograd_off``). With the project model, a call of a function of
another module that returns a loss tensor in any position is a loss (the oracle asks
for one position). Everything the oracle calls a loss, this calls one.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from typing import TYPE_CHECKING

from mllint.gates.resolve import Imports, dotted, enclosing, of_type, returns_of
from mllint.prefilter import project_aware

if TYPE_CHECKING:
    from mllint.project.model import ProjectView

# Defined here (stdlib only) and imported by ``analysis.loss`` and the rule, so the gate
# and the libcst analysis cannot drift apart.
LOSS_FUNCTIONS = frozenset(
    f"torch.nn.functional.{name}"
    for name in (
        "cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
        "nll_loss", "poisson_nll_loss", "gaussian_nll_loss", "mse_loss", "l1_loss",
        "smooth_l1_loss", "huber_loss", "soft_margin_loss", "multilabel_soft_margin_loss",
        "multilabel_margin_loss", "multi_margin_loss", "margin_ranking_loss",
        "hinge_embedding_loss", "cosine_embedding_loss", "triplet_margin_loss",
        "triplet_margin_with_distance_loss", "ctc_loss",
    )
)
LOSS_CALLEE = re.compile(
    r"^(criterion\w*|crit|\w*loss_?f(n|unc\w*)|(compute|calc|get)_loss|\w*_loss|loss)$",
    re.IGNORECASE,
)
#: Methods whose result stays on the receiver's graph (``loss.mean()``).
GRAPH_KEEPING_METHODS = frozenset(
    {
        "mean", "sum", "cpu", "cuda", "to", "float", "double", "half", "bfloat16", "clone",
        "view", "reshape", "squeeze", "unsqueeze", "flatten", "contiguous", "mul", "div",
        "add", "sub", "abs", "sqrt", "exp", "log", "pow", "expand", "type",
        "clamp", "clamp_min", "clamp_max", "clip", "neg", "square", "rsqrt", "reciprocal",
        "log1p", "expm1", "sigmoid", "tanh", "relu", "max", "min", "amax", "amin", "norm",
        "prod", "nansum", "nanmean", "std", "var", "logsumexp", "cumsum", "t", "permute",
        "transpose", "view_as", "reshape_as", "masked_fill", "where", "matmul", "mm",
        "dot", "requires_grad_", "to_dense", "truediv", "multiply", "divide", "subtract",
    }
)
#: Functions followed into their arguments, by their last name (``torch.stack``, ``sum``).
KEEPING_FUNCTION_LASTS = frozenset({"sum", "stack", "cat", "mean", "add", "mul"})
ACCUMULATING_METHODS = {"append": 0, "appendleft": 0, "extend": 0, "insert": 1}
#: Meter classes, defined in another module, known to sum the values given to their
#: ``update``/``add`` (PyTorch's ImageNet example's ``AverageMeter`` and its copies,
#: torchnet's ``AverageValueMeter``). Matched on the class's last name.
KNOWN_METER = re.compile(r"^(?:Average|Avg|RunningAverage|AverageValue)Meter$")
KNOWN_METER_METHODS = frozenset({"update", "add"})
_MAX_ROUNDS = 20


@project_aware
def accumulation_may_flag(tree: ast.Module, project: ProjectView | None = None) -> bool:
    facts = _Facts(tree, project)
    for value in _accumulated_values(tree):
        if facts.lossy(value):
            return True
    return False


def _accumulated_values(tree: ast.Module) -> list[ast.expr]:
    out: list[ast.expr] = []
    # A meter's method may sum what it is given: ``update``/``add`` of a known meter, or
    # a method of a class of this module that accumulates on ``self`` (every argument).
    # (Only a method some call names can be one: the others are not looked into.)
    called = {c.func.attr for c in of_type(tree, ast.Call) if isinstance(c.func, ast.Attribute)}
    methods = {f.name for c in of_type(tree, ast.ClassDef) for f in c.body
               if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name in called
               and _accumulates_on_self(f)}
    meter_methods = (methods | KNOWN_METER_METHODS) - set(ACCUMULATING_METHODS)
    for node in of_type(tree, ast.AugAssign, ast.Assign, ast.Call):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in meter_methods:
            out += [a.value if isinstance(a, ast.Starred) else a for a in node.args]
            out += [k.value for k in node.keywords]
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
            if not _autograd_off(node, tree):
                out.append(node.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp) \
                and isinstance(node.value.op, ast.Add) and _adds_to_itself(node):
            # ``t = t + x``: every term may be "the other one" for some target spelling.
            if not _autograd_off(node, tree):
                out.append(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ACCUMULATING_METHODS:
            positional = [a for a in node.args if not isinstance(a, ast.Starred)]
            index = ACCUMULATING_METHODS[node.func.attr]
            if len(positional) > index:
                out.append(positional[index])
    return out


def _adds_to_itself(node: ast.Assign) -> bool:
    """``t = t + x`` or ``t = a * t + b * x``: one target, found in a term of the sum as
    the rule looks for it (``_added_to``: the term's text, or a name in it). A fresh sum
    (``loss = a + b``) accumulates nothing. Equal source texts unparse alike, and every
    dotted name in a term is among ``_names_in``, so this holds wherever the rule's does."""
    if len(node.targets) != 1:
        return False
    target = node.targets[0]
    name, text = dotted(target), ast.unparse(target)
    terms: list[ast.expr] = []
    stack: list[ast.expr] = [node.value]
    while stack:
        e = stack.pop()
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            stack += [e.left, e.right]
        else:
            terms.append(e)
    return any(ast.unparse(t) == text or (name is not None and name in _names_in(t)) for t in terms)


#: ``with`` items that surely turn autograd off, written out: torch's own managers and
#: the names the analysis takes for them (``CodeIndex.grad_mode``).
_GRAD_OFF_WRITTEN = re.compile(r"^(torch\.(autograd\.)?)?(no_grad|inference_mode)$")


def _autograd_off(statement: ast.stmt, tree: ast.Module) -> bool:
    """Whether ``statement`` surely runs with autograd off: the innermost ``with`` around
    it in its function opens with ``torch.no_grad()`` or ``torch.inference_mode()``.
    ML004 does not report ``t += loss`` there (the sum is a new tensor without a graph;
    ``CodeIndex.grad_mode`` answers DISABLED for these). Any other ``with`` on the way
    out may switch autograd itself (an alias of ``enable_grad``): then no answer."""
    child: ast.AST = statement
    for node in enclosing(statement, tree):
        if isinstance(node, (ast.With, ast.AsyncWith)) and child in node.body:
            first = node.items[0].context_expr
            callee = first.func if isinstance(first, ast.Call) else first
            return bool(_GRAD_OFF_WRITTEN.match(dotted(callee) or ""))
        child = node
    return False


def _accumulates_on_self(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """The method adds to or appends to something under its first parameter (a superset of
    ``analysis.loss.accumulated_params`` being non-empty)."""
    args = [*func.args.posonlyargs, *func.args.args]
    if not args:
        return False
    me = args[0].arg

    def on_self(target: ast.AST) -> bool:
        while isinstance(target, (ast.Attribute, ast.Subscript)):
            target = target.value
        return isinstance(target, ast.Name) and target.id == me

    for node in ast.walk(func):
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and on_self(node.target):
            return True
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp) and any(
                on_self(t) for t in node.targets):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ACCUMULATING_METHODS and on_self(node.func.value):
            return True
    return False


def _names_in(expr: ast.AST) -> set[str]:
    """Every dotted name (and each of its prefixes) read in ``expr``."""
    out: set[str] = set()
    for node in ast.walk(expr):
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = dotted(node)
            while name:
                out.add(name)
                name = name.rpartition(".")[0]
    return out


def _bound(target: ast.expr) -> list[str]:
    """Dotted names an assignment target binds (``a``, ``self.x``, both of ``a, b``)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _bound(e)]
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    name = dotted(target)
    return [name] if name else []


class _Facts:
    def __init__(self, tree: ast.Module, project: ProjectView | None = None) -> None:
        self.imports = Imports.of(tree)
        #: Functions of other modules returning loss tensors (``ProjectView.returned_losses``).
        self.project = project
        self.values: dict[str, list[ast.expr]] = defaultdict(list)
        self.returns: dict[str, list[ast.expr]] = defaultdict(list)
        self.backwarded: set[str] = set()
        #: Positional parameter names of the functions of each name; equal lists once
        #: (every ``forward(self, x)`` of a module gives the same values): a file of many
        #: same-named methods then costs linear, not quadratic, time.
        self._params: dict[str, dict[tuple[str, ...], None]] = {}
        self._loss_callables: dict[str, bool] = {}
        #: Calls whose result is unpacked (``a, b = f(...)``): only their parts may be
        #: losses by what the project says of ``f`` (as ``LossOracle`` reads them).
        self._unpacked: set[int] = set()
        for node in of_type(tree, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.FunctionDef,
                            ast.AsyncFunctionDef, ast.Call):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(node.value, ast.Call):
                        self._unpacked.add(id(node.value))
                    for name in _bound(target):
                        self.values[name].append(node.value)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                for name in _bound(node.target):
                    self.values[name].append(node.value)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for ret in returns_of(tree, node):
                    if ret.value is not None:
                        self.returns[node.name].append(ret.value)
                self._parameters(node)
            elif isinstance(node, ast.Call) and self._is_backward(node):
                self.backwarded |= _names_in(node)
        self._arguments(tree)
        self.loss_names: set[str] = set()
        self.loss_functions: set[str] = set()
        self._settle()

    def _parameters(self, func: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A parameter holds its default, and whatever same-module callers pass it."""
        args = func.args
        positional = [a.arg for a in args.posonlyargs + args.args]
        self._params.setdefault(func.name, {})[tuple(positional)] = None
        defaults = list(zip(reversed(positional), reversed(args.defaults)))
        defaults += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        for name, default in defaults:
            self.values[name].append(default)

    def _arguments(self, tree: ast.Module) -> None:
        for node in of_type(tree, ast.Call):
            func = node.func
            last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            for positional in self._params.get(last, ()):
                given = [a for a in node.args if not isinstance(a, ast.Starred)]
                # Bound calls skip ``self``; unbound ones do not: take both readings.
                for offset in (0, 1):
                    for name, arg in zip(positional[offset:], given):
                        self.values[name].append(arg)
                for kw in node.keywords:
                    if kw.arg is not None:
                        self.values[kw.arg].append(kw.value)

    def _is_backward(self, call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute):
            return func.attr == "backward"
        return bool(self.imports.qualified(func) & {"torch.autograd.backward"})

    def _settle(self) -> None:
        self.loss_names = set(self.backwarded)
        for _ in range(_MAX_ROUNDS):
            changed = False
            for name, values in self.values.items():
                if name not in self.loss_names and any(self.lossy(v) for v in values):
                    self.loss_names.add(name)
                    changed = True
            for name, values in self.returns.items():
                if name not in self.loss_functions and any(self.lossy(v) for v in values):
                    self.loss_functions.add(name)
                    changed = True
            if not changed:
                return
        # Not settled within the budget: claim everything rather than guess.
        self.loss_names |= set(self.values)
        self.loss_functions |= set(self.returns)

    # -- what may carry a loss ---------------------------------------------------------

    def lossy(self, expr: ast.expr) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in self.loss_names
        if isinstance(expr, ast.Attribute):
            if expr.attr == "loss":
                return True
            name = dotted(expr)
            return (name in self.loss_names) if name else self.lossy(expr.value)
        if isinstance(expr, ast.Subscript):
            return True if _string_index(expr) == "loss" else self.lossy(expr.value) or (
                isinstance(expr.value, ast.Call) and self._call(expr.value))
        if isinstance(expr, ast.BinOp):
            return self.lossy(expr.left) or self.lossy(expr.right)
        if isinstance(expr, ast.UnaryOp):
            return self.lossy(expr.operand)
        if isinstance(expr, (ast.List, ast.Tuple)):
            return any(self.lossy(e.value if isinstance(e, ast.Starred) else e) for e in expr.elts)
        if isinstance(expr, ast.Starred):
            return self.lossy(expr.value)
        if isinstance(expr, ast.Call):
            return self._call(expr)
        return False

    def _call(self, call: ast.Call) -> bool:
        func = call.func
        last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if isinstance(func, ast.Attribute) and func.attr in GRAPH_KEEPING_METHODS \
                and self.lossy(func.value):
            return True  # ``loss.mean()``; other methods (``.item()``) fall through
        if last in KEEPING_FUNCTION_LASTS and any(
            self.lossy(a.value if isinstance(a, ast.Starred) else a) for a in call.args
        ):
            return True
        if self.imports.qualified(func) & LOSS_FUNCTIONS:
            return True
        if isinstance(func, ast.Call) and _builds_loss_module(func, self.imports):
            return True
        if last is not None and last in self.loss_functions:
            return True
        name = dotted(func)
        if name is not None and self._holds_loss_callable(name):
            return True
        if name is not None and id(call) in self._unpacked and self._project_loss(name):
            return True
        return last is not None and bool(LOSS_CALLEE.match(last))

    def _project_loss(self, name: str) -> bool:
        """A call of ``name`` runs a function of another module that returns a loss
        tensor somewhere in its result, named directly or through a module-level alias
        (``loss_fn = combined_loss``)."""
        if self.project is None:
            return False
        names = {name} | {d for v in self.values.get(name, ()) if (d := dotted(v)) is not None}
        return any(self.project.returned_losses(n) for n in names)

    def _holds_loss_callable(self, name: str) -> bool:
        """``name`` is given a loss module or function somewhere. Once per name: the
        values are all known before the first question, and every call of ``name``
        asks it again."""
        if name not in self._loss_callables:
            self._loss_callables[name] = any(
                (isinstance(value, ast.Call) and _builds_loss_module(value, self.imports))
                or bool(self.imports.qualified(value) & LOSS_FUNCTIONS)
                for value in self.values.get(name, ()))
        return self._loss_callables[name]


def _builds_loss_module(call: ast.Call, imports: Imports) -> bool:
    names = set(imports.qualified(call.func))
    name = dotted(call.func)
    if name:
        names.add(name)  # a same-module ``class FocalLoss``
    for qualified in names:
        last = qualified.rsplit(".", 1)[-1]
        if last.endswith("Loss") or "CrossEntropy" in last:
            return True
    return False


def _string_index(sub: ast.Subscript) -> str | None:
    s = sub.slice
    return s.value if isinstance(s, ast.Constant) and isinstance(s.value, str) else None
