"""Which expressions hold a loss tensor that may still carry its autograd graph, on ``ast``.

A loss is recognised by how it was computed: a call of a ``torch.nn.functional`` loss
(``F.cross_entropy``), of a loss module (``criterion = nn.CrossEntropyLoss()``,
``self.criterion``, a same-module ``class FocalLoss``), of a callable whose name says it
computes a loss (``criterion``, ``loss_fn``, ``compute_loss``), of a same-module function
returning one, of another module's function that returns one (the project model);
``outputs.loss`` / ``outputs["loss"]`` of a model; or a variable that is back-propagated
(``loss.backward()``). Arithmetic and view-like methods keep the graph (``loss * bs``,
``loss.mean()``, ``loss.cpu()``); ``.item()``, ``.detach()``, ``float(...)`` and
``.tolist()`` drop it.

Meters (``meter_classes``, ``accumulated_params``) are objects whose methods sum or store
what they are given: a same-module class doing ``self.sum += val * n`` in a method, or a
well-known meter class of another module (``AverageMeter``).

Every word this module recognises a loss by matches ``LOSS_TEXT``, which rules use as
their sound textual prefilter.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from mllint.analysis.pyast.grads import GradEvents
from mllint.analysis.pyast.index import GradMode, ModuleIndex, in_list, names_in, start
from mllint.gates.resolve import dotted
from mllint.prefilter import any_layout

#: The prefilter: a file without any of these cannot hold a recognised loss.
LOSS_TEXT = any_layout(r"(?i:loss|cross_?entropy|kl_div|backward|crit)")  # words only

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
#: Callables that combine tensors into one attached to all of them.
GRAPH_KEEPING_FUNCTIONS = frozenset(
    {"builtins.sum", "torch.stack", "torch.cat", "torch.mean", "torch.sum", "torch.add", "torch.mul"}
)
#: Container methods that keep what they are given, with the position of the kept value.
ACCUMULATING_METHODS = {"append": 0, "appendleft": 0, "extend": 0, "insert": 1}
#: Meter classes, defined in another module, known to sum the values given to their
#: ``update``/``add`` (PyTorch's ImageNet example's ``AverageMeter`` and its copies,
#: torchnet's ``AverageValueMeter``). Matched on the class's last name.
KNOWN_METER = re.compile(r"^(?:Average|Avg|RunningAverage|AverageValue)Meter$")
KNOWN_METER_METHODS = frozenset({"update", "add"})
#: Methods of a loss object that compute the loss itself (``criterion.forward(out, y)``).
LOSS_OBJECT_CALLS = frozenset({"forward", "__call__"})

_DETACHING_METHODS = frozenset({"item", "detach", "tolist", "numpy", "detach_"})
_DETACHING_FUNCTIONS = frozenset({"float", "int", "round", "str", "bool"})
_DEFAULTDICT = frozenset({"collections.defaultdict"})


@dataclass(frozen=True)
class LossValue:
    """A loss found inside an expression."""

    #: The loss as written in the expression (``loss``, ``criterion(out, y)``).
    expr: ast.expr
    #: Where the variable got that value (``None`` for a loss computed in place).
    definition: ast.AST | None


def targets_of(node: ast.stmt) -> list[ast.expr]:
    """The targets an assignment statement writes."""
    return list(node.targets) if isinstance(node, ast.Assign) else [node.target]  # type: ignore[attr-defined]


def unstarred(expr: ast.expr) -> ast.expr:
    return expr.value if isinstance(expr, ast.Starred) else expr


def arguments(call: ast.Call) -> list[ast.expr]:
    """Every argument value of ``call``, positional (unstarred) then keyword."""
    return [*(unstarred(a) for a in call.args), *(k.value for k in call.keywords)]


class LossOracle:
    def __init__(self, index: ModuleIndex, events: GradEvents) -> None:
        self.ix = index
        self.ev = events
        self._backwarded: dict[ast.AST | None, set[str]] = {}
        self._backwarded_losses: dict[ast.AST | None, set[str]] = {}

    # -- variables -----------------------------------------------------------------------

    def backwarded_names(self, func) -> set[str]:
        """Dotted names read where ``func`` back-propagates (``loss`` in ``(loss /
        k).backward()``, also ``x`` in ``F.mse_loss(model(x), y).backward()``): what may
        feed the backward pass."""
        if func not in self._backwarded:
            names: set[str] = set()
            for call in self.ev.in_function(func).backwards:
                for target in self.ev.backward_targets(call):
                    names |= names_in(target)
            self._backwarded[func] = names
        return self._backwarded[func]

    def backwarded_losses(self, func) -> set[str]:
        """Dotted names ``func`` back-propagates as they are (``loss`` in ``(loss /
        k).backward()``, ``loss.mean().backward()``, ``losses["loss"].backward()``), not
        the inputs of a loss computed in place (``x`` in ``F.mse_loss(model(x),
        y).backward()``): a name back-propagated so is a loss."""
        if func not in self._backwarded_losses:
            names: set[str] = set()
            for call in self.ev.in_function(func).backwards:
                for target in self.ev.backward_targets(call):
                    names |= _propagated(target, self.ix)
            self._backwarded_losses[func] = names
        return self._backwarded_losses[func]

    def assignments_before(self, name: str, at: ast.AST) -> list[ast.stmt]:
        """Assignments to ``name`` in ``at``'s function that start before it, latest first."""
        func = self.ix.function_of(at)
        pos = start(at)
        found = [node for node in self.ix.assigns_in_function(func)
                 if start(node) < pos and any(name in _bound_names(t) for t in targets_of(node))]
        found.sort(key=start, reverse=True)
        return found

    def variable_loss(self, name: ast.Name | ast.Attribute, at: ast.AST, depth: int) -> LossValue | None:
        """The loss variable ``name`` holds at ``at``, if its latest value is one."""
        written = dotted(name)
        if written is None:
            return None
        for node in self.assignments_before(written, at):
            if isinstance(node, ast.AugAssign):
                if self.carried_loss(node.value, node, depth + 1) is not None:
                    return LossValue(name, node)
                continue  # ``loss /= k`` keeps whatever ``loss`` was
            value = node.value  # type: ignore[attr-defined]
            direct = any(dotted(t) == written for t in targets_of(node))
            if direct and value is not None:
                if self.carried_loss(value, node, depth + 1) is not None:
                    return LossValue(name, node)
                if _drops_graph(value):
                    return None
            if not direct and isinstance(node, ast.Assign) and isinstance(value, ast.Call):
                index = _unpacked_index(node, written)
                if index is not None and index in self._project_losses(value):
                    return LossValue(name, node)  # ``loss, mse = losses.compute(out, y)``
            # Unknown producer (``logits, loss = model(x, y)``): back-propagating it says
            # it is a loss.
            if written in self.backwarded_losses(self.ix.function_of(at)):
                return LossValue(name, node)
            return None
        if written in self.backwarded_losses(self.ix.function_of(at)):
            return LossValue(name, None)
        return None

    def _project_losses(self, call: ast.Call) -> frozenset[int]:
        """Positions of what ``call`` returns that hold a loss tensor, when it runs a
        function of another module of the project (also through a module-level alias:
        ``loss_fn = my_loss``)."""
        view = self.ix.project
        callee = dotted(call.func)
        if view is None or callee is None or self.ix.resolve_call(call) is not None:
            return frozenset()
        found = view.returned_losses(callee)
        if not found and isinstance(call.func, ast.Name):
            alias = self._module_alias(call.func)
            if alias is not None:
                found = view.returned_losses(alias)
        return found

    def _module_alias(self, name: ast.Name) -> str | None:
        """What ``name`` stands for when every binding of it is a module-level
        ``name = other`` of the same ``other``."""
        found: set[str | None] = set()
        for binding in self.ix.bindings(name):
            assign = self.ix.parent(binding) if isinstance(binding, ast.Name) else None
            if not (isinstance(assign, ast.Assign) and in_list(binding, assign.targets)) \
                    or self.ix.function_of(assign) is not None:
                return None
            found.add(dotted(assign.value))
        return found.pop() if len(found) == 1 else None

    # -- expressions ---------------------------------------------------------------------

    def carried_loss(self, expr: ast.expr, at: ast.AST, depth: int = 0) -> LossValue | None:
        """The loss ``expr`` carries with its graph, or ``None`` if it carries none."""
        if depth > 8:
            return None
        if isinstance(expr, ast.Name) or (
            isinstance(expr, ast.Attribute) and expr.attr not in ("loss", "data", "grad")
            and dotted(expr) is not None
        ):
            return self.variable_loss(expr, at, depth)  # type: ignore[arg-type]
        if isinstance(expr, ast.Attribute):
            return LossValue(expr, None) if expr.attr == "loss" and self._model_output(expr.value) else None
        if isinstance(expr, ast.Subscript):
            if _string_index(expr) == "loss":
                entries = self._helper_entries(expr.value, "loss")
                if entries is not None:
                    # ``train_log = train(...)`` of a same-module ``train`` that returns
                    # ``OrderedDict([("loss", meter.avg), ...])``: what it puts there.
                    return next((found for value, ret in entries
                                 if (found := self.carried_loss(value, ret, depth + 2))), None)
                return LossValue(expr, None) if self._model_output(expr.value) else None
            if isinstance(expr.value, ast.Call) and not self._element_may_carry(expr, depth):
                return None
            return self.carried_loss(expr.value, at, depth + 1)
        if isinstance(expr, ast.BinOp):
            return self.carried_loss(expr.left, at, depth + 1) or self.carried_loss(expr.right, at, depth + 1)
        if isinstance(expr, ast.UnaryOp):
            return self.carried_loss(expr.operand, at, depth + 1)
        if isinstance(expr, (ast.List, ast.Tuple)):
            for el in expr.elts:
                found = self.carried_loss(unstarred(el), at, depth + 1)
                if found is not None:
                    return found
            return None
        if isinstance(expr, ast.Call):
            return self._call_loss(expr, at, depth)
        return None

    def _element_may_carry(self, sub: ast.Subscript, depth: int) -> bool:
        """For ``helper(...)[i]`` where ``helper`` is a same-module function whose every
        return is a tuple literal, whether element ``i`` of one of them carries a loss
        (yolov5's ``return total * bs, torch.cat(parts).detach()``, read as ``[1]``).
        ``True`` when the returns cannot be told apart."""
        index = _int_index(sub)
        callee = self.ix.resolve_call(sub.value) if index is not None else None  # type: ignore[arg-type]
        if callee is None or depth > 4:
            return True
        returns = self.ix.returns_of(callee)
        if not returns or not all(
            isinstance(r.value, (ast.Tuple, ast.List)) and index < len(r.value.elts)  # type: ignore[operator]
            and not any(isinstance(e, ast.Starred) for e in r.value.elts)
            for r in returns
        ):
            return True
        return any(
            self.carried_loss(r.value.elts[index], r, depth + 2) is not None  # type: ignore[union-attr, index]
            for r in returns
        )

    def _call_loss(self, call: ast.Call, at: ast.AST, depth: int) -> LossValue | None:
        func = call.func
        if isinstance(func, ast.Attribute) and self.ix.resolve_call(call) is None:
            method = func.attr
            if method in GRAPH_KEEPING_METHODS:
                return self.carried_loss(func.value, at, depth + 1)
            if method not in LOSS_OBJECT_CALLS and self._is_loss(func.value, at, depth):
                # ``loss.get_loss()`` on a custom loss object (pytorch-seq2seq) returns
                # whatever it likes, often a float: only tensor methods that keep the
                # graph (above) are known to return one.
                return None
        if self.ix.qualified(func) & GRAPH_KEEPING_FUNCTIONS:
            for arg in arguments(call):
                found = self.carried_loss(arg, at, depth + 1)
                if found is not None:
                    return found
            return None
        if self.computes_loss(call, depth):
            given = [*call.args, *call.keywords]
            if given and all(not isinstance(a, ast.Starred)
                             and not (isinstance(a, ast.keyword) and a.arg is None)
                             and _detached(a.value if isinstance(a, ast.keyword) else a)
                             for a in given):
                # ``criterion(pred.detach().cpu(), true.detach().cpu())`` (Informer's
                # ``vali``): a loss of detached inputs has no graph to keep.
                return None
            return LossValue(call, None)
        return None

    def _is_loss(self, receiver: ast.expr, at: ast.AST, depth: int) -> bool:
        """``receiver`` holds a loss: a loss tensor, or a loss object named like one
        (``self.loss``, ``criterion``)."""
        if self.carried_loss(receiver, at, depth + 1) is not None:
            return True
        written = dotted(receiver)
        return written is not None and bool(LOSS_CALLEE.match(written.rsplit(".", 1)[-1]))

    def _helper_entries(self, expr: ast.expr, key: str) -> list[tuple[ast.expr, ast.Return]] | None:
        """When ``expr`` is what a same-module function returned (``f(...)``, or a name
        assigned only such calls) and every ``return`` of it builds a dict literal
        (``{...}``, ``dict(...)``, ``OrderedDict([...])``), the values put under ``key``
        with their returns; ``None`` when that is not known."""
        calls = [expr] if isinstance(expr, ast.Call) else (
            [o.expr for o in self.ix.origins(expr)] if isinstance(expr, ast.Name) else [])
        if not calls or not all(isinstance(c, ast.Call) for c in calls):
            return None
        out: list[tuple[ast.expr, ast.Return]] = []
        for call in calls:
            callee = self.ix.resolve_call(call)  # type: ignore[arg-type]
            if callee is None or callee.name == "__init__":
                return None
            returns = self.ix.returns_of(callee)
            if not returns:
                return None
            for ret in returns:
                entries = _dict_entries(ret.value) if ret.value is not None else None
                if entries is None:
                    return None
                out.extend((value, ret) for k, value in entries if k == key)
        return out

    def _model_output(self, expr: ast.expr) -> bool:
        """``outputs`` in ``outputs.loss`` is what a call returned (``model(**batch)``),
        not a loop variable or parameter, which is as often a dict of logged floats."""
        if isinstance(expr, ast.Call):
            return True
        if isinstance(expr, ast.Name):
            return any(isinstance(o.expr, ast.Call) for o in self.ix.origins(expr))
        return False

    def computes_loss(self, call: ast.Call, depth: int = 0) -> bool:
        """Whether ``call`` computes a fresh loss tensor."""
        func = call.func
        if self.ix.qualified(func) & LOSS_FUNCTIONS:
            return True
        if isinstance(func, ast.Call) and self._builds_loss_module(func):
            return True  # ``nn.CrossEntropyLoss()(logits, y)``
        callee = self.ix.resolve_call(call)
        if callee is not None:
            if callee.name == "__init__":
                return False
            return depth < 4 and any(
                r.value is not None and self.carried_loss(r.value, r, depth + 2) is not None
                for r in self.ix.returns_of(callee)
            )
        if isinstance(func, (ast.Name, ast.Attribute)):
            for origin in self.ix.origins(func):
                if isinstance(origin.expr, ast.Call) and self._builds_loss_module(origin.expr):
                    return True
                if origin.expr is not None and self.ix.qualified(origin.expr) & LOSS_FUNCTIONS:
                    return True  # ``loss_fn = F.cross_entropy``
            last = func.id if isinstance(func, ast.Name) else func.attr
            return bool(LOSS_CALLEE.match(last))
        return False

    def _builds_loss_module(self, call: ast.Call) -> bool:
        for name in self.ix.qualified(call.func):
            last = name.rsplit(".", 1)[-1]
            if last.endswith("Loss") or "CrossEntropy" in last:
                return True
        return False

    def grad_free(self, loss: LossValue) -> bool:
        """The loss was computed with autograd off (so it has no graph): where it was
        assigned, or, for ``outputs.loss`` / ``outputs[0]``, where ``outputs`` was."""
        node = loss.definition if loss.definition is not None else loss.expr
        if self._off(node):
            return True
        expr = loss.expr
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            expr = node.value
        root = expr
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        if root is expr or not isinstance(root, ast.Name):
            return False
        earlier = self.assignments_before(root.id, node)
        return bool(earlier) and self._off(earlier[0])

    def _off(self, node: ast.AST) -> bool:
        return self.ix.grad_mode(node) in (GradMode.DISABLED, GradMode.MAYBE_DISABLED)


def _propagated(expr: ast.expr, ix: ModuleIndex) -> set[str]:
    """The variables whose own graph ``expr`` carries: through arithmetic, graph-keeping
    methods and functions (``loss.mean()``, ``sum(losses)``, ``torch.stack([a, b])``),
    containers and subscripts; never into the arguments of another call."""
    written = dotted(expr) if isinstance(expr, (ast.Name, ast.Attribute)) else None
    if written is not None:
        return {written}
    if isinstance(expr, ast.BinOp):
        return _propagated(expr.left, ix) | _propagated(expr.right, ix)
    if isinstance(expr, ast.UnaryOp):
        return _propagated(expr.operand, ix)
    if isinstance(expr, (ast.Subscript, ast.Attribute, ast.Starred)):
        return _propagated(expr.value, ix)
    if isinstance(expr, (ast.List, ast.Tuple)):
        return set().union(*(_propagated(e, ix) for e in expr.elts))
    if isinstance(expr, ast.Call):
        if isinstance(expr.func, ast.Attribute) and expr.func.attr in GRAPH_KEEPING_METHODS:
            return _propagated(expr.func.value, ix)
        if ix.qualified(expr.func) & GRAPH_KEEPING_FUNCTIONS:
            return set().union(*(_propagated(a, ix) for a in arguments(expr)))
    return set()


def _bound_names(target: ast.expr) -> set[str]:
    if isinstance(target, (ast.Tuple, ast.List)):
        out: set[str] = set()
        for el in target.elts:
            out |= _bound_names(el)
        return out
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    written = dotted(target)
    return {written} if written else set()


def _int_index(sub: ast.Subscript) -> int | None:
    value = sub.slice
    if isinstance(value, ast.Constant) and type(value.value) is int:
        return value.value
    return None


def _string_index(sub: ast.Subscript) -> str | None:
    value = sub.slice
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None


def _text(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _dict_entries(expr: ast.expr) -> list[tuple[str | None, ast.expr]] | None:
    """``(key, value)`` of a dict built literally: ``{"loss": v}``, ``dict(loss=v)``,
    ``OrderedDict([("loss", v)])`` (``None`` keys where not a string); ``None`` for any
    other expression."""
    if isinstance(expr, ast.Dict):
        return [(_text(k), v) for k, v in zip(expr.keys, expr.values) if k is not None]
    if not isinstance(expr, ast.Call):
        return None
    last = (dotted(expr.func) or "").rsplit(".", 1)[-1]
    if last == "dict" and not expr.args and all(k.arg is not None for k in expr.keywords):
        return [(k.arg, k.value) for k in expr.keywords]
    if (last == "OrderedDict" and len(expr.args) == 1 and not expr.keywords
            and isinstance(expr.args[0], (ast.List, ast.Tuple))):
        out: list[tuple[str | None, ast.expr]] = []
        for pair in expr.args[0].elts:
            if not (isinstance(pair, ast.Tuple) and len(pair.elts) == 2):
                return None
            out.append((_text(pair.elts[0]), pair.elts[1]))
        return out
    return None


def _literal(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and type(expr.value) in (int, float, str, bytes)


def _drops_graph(expr: ast.expr) -> bool:
    """``loss.item()``, ``float(loss)``, ``loss.detach()``, a literal: no graph here."""
    if _literal(expr):
        return True
    if isinstance(expr, ast.Call):
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr in _DETACHING_METHODS:
            return True
        if isinstance(func, ast.Name) and func.id in _DETACHING_FUNCTIONS:
            return True
    if isinstance(expr, ast.BinOp):
        return _drops_graph(expr.left) and _drops_graph(expr.right)
    return False


def _detached(expr: ast.expr) -> bool:
    """``pred.detach()``, ``pred.detach().cpu()``, ``x.data``, ``y.numpy()``, a literal:
    an input that brings no graph into what is computed from it."""
    while True:
        if _drops_graph(expr) or isinstance(expr, ast.Constant) and (
                expr.value is None or isinstance(expr.value, bool)):
            return True
        if isinstance(expr, ast.Attribute):
            return expr.attr == "data"
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and (
            expr.func.attr in GRAPH_KEEPING_METHODS
        ):
            expr = expr.func.value
            continue
        return False


def _unpacked_index(assign: ast.Assign, name: str) -> int | None:
    """Where ``name`` sits in a tuple target of ``assign`` (``a, name, c = ...``)."""
    for seq in assign.targets:
        if isinstance(seq, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in seq.elts):
            for i, element in enumerate(seq.elts):
                if dotted(element) == name:
                    return i
    return None


# -- meters: objects that sum or store what their methods are given ------------------------


@dataclass(frozen=True)
class Accumulates:
    """How a method keeps one of its parameters."""

    #: Only summed (``self.sum += val * n``): under ``no_grad`` the sum has no graph.
    arithmetic: bool
    #: In words, for messages: "adds it to `self.sum`".
    words: str


def meter_classes(ix: ModuleIndex, receiver: ast.expr) -> list[ast.ClassDef | str]:
    """What class the object ``receiver`` names may be an instance of: same-module classes
    whose bases are all ``object`` or same-module classes (a torchmetrics ``Metric``
    subclass runs ``update`` under ``no_grad``: its sum keeps no graph), and, by last name,
    well-known meter classes from elsewhere (``KNOWN_METER``). Followed through
    assignments, ``self.`` attributes and containers (``meters["loss"]`` of a dict or
    comprehension of meters, ``defaultdict(AverageMeter)``)."""
    out: list[ast.ClassDef | str] = []
    for ref in _class_refs(ix, receiver, 0):
        cls = ix.class_named(ref) if isinstance(ref, ast.Name) else None
        if cls is not None:
            if _plain_class(ix, cls) and not any(cls is c for c in out):
                out.append(cls)
            continue
        name = dotted(ref)
        last = name.rsplit(".", 1)[-1] if name else ""
        if KNOWN_METER.match(last) and last not in out:
            out.append(last)
    return out


def _class_refs(ix: ModuleIndex, expr: ast.expr, depth: int) -> list[ast.expr]:
    """Expressions naming the classes whose instances ``expr`` may hold."""
    if depth > 3:
        return []
    if isinstance(expr, ast.Subscript):
        refs: list[ast.expr] = []
        for origin in ix.origins(expr.value):
            container = origin.expr
            if isinstance(container, ast.Call) and ix.qualified(container.func) & _DEFAULTDICT:
                if container.args:
                    refs.append(unstarred(container.args[0]))
                continue
            for element in _elements(container, _string_index(expr)):
                refs += _refs_of_value(ix, element, depth + 1)
        return refs
    refs = []
    for origin in ix.origins(expr):
        if origin.expr is not None and origin.expr is not expr:
            refs += _refs_of_value(ix, origin.expr, depth + 1)
    return refs


def _refs_of_value(ix: ModuleIndex, value: ast.expr, depth: int) -> list[ast.expr]:
    if isinstance(value, ast.Call) and isinstance(value.func, (ast.Name, ast.Attribute)):
        return [value.func]
    if isinstance(value, ast.Subscript):
        return _class_refs(ix, value, depth)
    return []


def _elements(container: ast.expr | None, key: str | None) -> list[ast.expr]:
    """What a container literal or comprehension holds (under ``key``, for a dict literal
    that has it)."""
    if isinstance(container, ast.Dict):
        entries = [(k, v) for k, v in zip(container.keys, container.values) if k is not None]
        keyed = [v for k, v in entries if _text(k) == key and key is not None]
        return keyed or [v for _, v in entries]
    if isinstance(container, (ast.List, ast.Tuple)):
        return [e for e in container.elts if not isinstance(e, ast.Starred)]
    if isinstance(container, ast.DictComp):
        return [container.value]
    if isinstance(container, (ast.ListComp, ast.GeneratorExp)):
        return [container.elt]
    return []


def _plain_class(ix: ModuleIndex, cls: ast.ClassDef, depth: int = 0) -> bool:
    """Every base is ``object`` or a same-module class with the same property."""
    if depth > 4:
        return False
    for base in cls.bases:  # keywords (``metaclass=...``) are apart in ``ast``
        if isinstance(base, ast.Name) and base.id == "object":
            continue
        inner = ix.class_named(base)
        if inner is None or not _plain_class(ix, inner, depth + 1):
            return False
    return True


def accumulated_params(method: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[ast.arg, Accumulates]:
    """Parameters of ``method`` it sums or appends, as given, into an attribute of its
    ``self`` (``self.sum += val * n``, ``self.total = self.total + val``,
    ``self.history.append(val)``). A parameter the method rebinds anywhere
    (``val = val.item()``) or only reads through a method that drops the graph
    (``val.item()``, ``float(val)``, ``val.detach()``) is not accumulated as given."""
    params = [*method.args.posonlyargs, *method.args.args]
    if not params or any(isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
                         for d in method.decorator_list):
        return {}
    candidates = {p.arg: p for p in (*params[1:], *method.args.kwonlyargs)}
    finder = _AccumulationFinder(params[0].arg, set(candidates))
    finder.walk(method.body)
    out: dict[ast.arg, Accumulates] = {}
    for name, ways in finder.found.items():
        if name in finder.rebound:
            continue
        out[candidates[name]] = Accumulates(all(a for a, _ in ways), ways[0][1])
    return out


class _AccumulationFinder:
    """What one method body sums or appends onto its ``self``, and which names it rebinds
    (nested functions, classes and lambdas left out)."""

    def __init__(self, me: str, params: set[str]) -> None:
        self.me = me
        self.params = params
        self.found: dict[str, list[tuple[bool, str]]] = {}
        self.rebound: set[str] = set()

    def walk(self, body: list[ast.stmt]) -> None:
        nodes: list[ast.AST] = []
        stack: list[ast.AST] = list(reversed(body))
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(reversed([c for c in ast.iter_child_nodes(node) if not isinstance(
                c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]))
        for node in nodes:  # source order, outer nodes first
            visit = getattr(self, f"visit_{type(node).__name__}", None)
            if visit is not None:
                visit(node)

    def _on_self(self, target: ast.expr) -> bool:
        root = target
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        return root is not target and isinstance(root, ast.Name) and root.id == self.me

    def _record(self, value: ast.expr, arithmetic: bool, words: str) -> None:
        for name in self.params:
            if _carries(value, name):
                self.found.setdefault(name, []).append((arithmetic, words))

    def _bind(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.rebound.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for e in target.elts:
                self._bind(e)
        elif isinstance(target, ast.Starred):
            self._bind(target.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._bind(node.target)
        if isinstance(node.op, ast.Add) and self._on_self(node.target):
            self._record(node.value, True, f"adds it to `{ast.unparse(node.target)}`")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._bind(t)
        if len(node.targets) != 1 or not self._on_self(node.targets[0]):
            return
        target = ast.unparse(node.targets[0])
        value = node.value
        if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add):
            terms = [value.left, value.right]
            if any(ast.unparse(t) == target for t in terms):
                for t in terms:
                    if ast.unparse(t) != target:
                        self._record(t, True, f"adds it to `{target}`")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._bind(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._bind(node.target)

    def visit_For(self, node: ast.For) -> None:
        self._bind(node.target)

    visit_AsyncFor = visit_For

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ACCUMULATING_METHODS and self._on_self(func.value):
            positional = [a for a in node.args if not isinstance(a, ast.Starred)]
            index = ACCUMULATING_METHODS[func.attr]
            if len(positional) > index:
                self._record(positional[index], False, f"appends it to `{ast.unparse(func.value)}`")


def _carries(expr: ast.expr, name: str) -> bool:
    """``expr`` is ``name`` itself or arithmetic/graph-keeping methods on it
    (``val * n``, ``val.mean()``, ``(val,)``); not ``val.item()`` or ``float(val)``."""
    if isinstance(expr, ast.Name):
        return expr.id == name
    if isinstance(expr, ast.BinOp):
        return _carries(expr.left, name) or _carries(expr.right, name)
    if isinstance(expr, ast.UnaryOp):
        return _carries(expr.operand, name)
    if isinstance(expr, ast.Subscript):
        return _carries(expr.value, name)
    if isinstance(expr, (ast.Tuple, ast.List)):
        return any(_carries(unstarred(e), name) for e in expr.elts)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        return expr.func.attr in GRAPH_KEEPING_METHODS and _carries(expr.func.value, name)
    return False
