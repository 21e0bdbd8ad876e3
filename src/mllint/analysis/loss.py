"""Which expressions hold a loss tensor that may still carry its autograd graph.

A loss is recognised by how it was computed: a call of a ``torch.nn.functional`` loss
(``F.cross_entropy``), of a loss module (``criterion = nn.CrossEntropyLoss()``,
``self.criterion``, a same-module ``class FocalLoss``), of a callable whose name says it
computes a loss (``criterion``, ``loss_fn``, ``compute_loss``), of a same-module function
returning one; ``outputs.loss`` / ``outputs["loss"]`` of a model; or a variable that is
back-propagated (``loss.backward()``). Arithmetic and view-like methods keep the graph
(``loss * bs``, ``loss.mean()``, ``loss.cpu()``); ``.item()``, ``.detach()``,
``float(...)`` and ``.tolist()`` drop it.

Every word this module recognises a loss by matches ``LOSS_TEXT``, which rules use as
their sound textual prefilter.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from mllint.analysis.grads import GradEvents
from mllint.analysis.index import CodeIndex, GradMode
from mllint.analysis.syntax import dotted_name, names_in

# What names a loss, and which methods keep a tensor on the graph, are defined with the
# stdlib-only gate of ML004 (``mllint.gates.loss``), which must judge them alike.
from mllint.engine import traversal
from mllint.gates.loss import (  # noqa: F401
    ACCUMULATING_METHODS,
    GRAPH_KEEPING_METHODS,
    KNOWN_METER,
    LOSS_CALLEE,
    LOSS_FUNCTIONS,
)
from mllint.prefilter import any_layout

#: The prefilter: a file without any of these cannot hold a recognised loss.
LOSS_TEXT = any_layout(r"(?i:loss|cross_?entropy|kl_div|backward|crit)")  # words only

#: Methods of a loss object that compute the loss itself (``criterion.forward(out, y)``).
LOSS_OBJECT_CALLS = frozenset({"forward", "__call__"})
#: Callables that combine tensors into one attached to all of them.
GRAPH_KEEPING_FUNCTIONS = frozenset(
    {"builtins.sum", "torch.stack", "torch.cat", "torch.mean", "torch.sum", "torch.add", "torch.mul"}
)


@dataclass(frozen=True)
class LossValue:
    """A loss found inside an expression."""

    #: The loss as written in the expression (``loss``, ``criterion(out, y)``).
    expr: cst.BaseExpression
    #: Where the variable got that value (``None`` for a loss computed in place).
    definition: cst.CSTNode | None


class LossOracle:
    def __init__(self, index: CodeIndex, events: GradEvents) -> None:
        self.ix = index
        self.ev = events
        self._backwarded: dict[int, set[str]] = {}

    # -- variables ---------------------------------------------------------------------

    def backwarded_names(self, func) -> set[str]:
        """Dotted names back-propagated in ``func`` (``loss`` in ``(loss / k).backward()``)."""
        key = id(func)
        if key not in self._backwarded:
            names: set[str] = set()
            for call in self.ev.in_function(func).backwards:
                for target in self.ev.backward_targets(call):
                    names |= names_in(target)
            self._backwarded[key] = names
        return self._backwarded[key]

    def assignments_before(self, name: str, at: cst.CSTNode) -> list[cst.CSTNode]:
        """Assignments to ``name`` in ``at``'s function that start before it, latest first."""
        func = self.ix.function_of(at)
        pos = self.ix.position(at)
        found = []
        for node in self.ix.assigns_in_function(func):
            if self.ix.position(node) >= pos:
                continue
            targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            if any(name in _bound_names(t) for t in targets):
                found.append(node)
        found.sort(key=self.ix.position, reverse=True)
        return found

    def variable_loss(self, name: cst.Name | cst.Attribute, at: cst.CSTNode, depth: int) -> LossValue | None:
        """The loss variable ``name`` holds at ``at``, if its latest value is one."""
        dotted = dotted_name(name)
        if dotted is None:
            return None
        for node in self.assignments_before(dotted, at):
            if isinstance(node, cst.AugAssign):
                if self.carried_loss(node.value, node, depth + 1) is not None:
                    return LossValue(name, node)
                continue  # ``loss /= k`` keeps whatever ``loss`` was
            value = node.value
            direct = any(
                dotted_name(t) == dotted
                for t in ([t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target])
            )
            if direct and value is not None:
                if self.carried_loss(value, node, depth + 1) is not None:
                    return LossValue(name, node)
                if _drops_graph(value):
                    return None
            if not direct and isinstance(node, cst.Assign) and isinstance(value, cst.Call):
                index = _unpacked_index(node, dotted)
                if index is not None and index in self._project_losses(value):
                    return LossValue(name, node)  # ``loss, mse = losses.compute(out, y)``
            # Unknown producer (``logits, loss = model(x, y)``): back-propagating it says
            # it is a loss.
            if dotted in self.backwarded_names(self.ix.function_of(at)):
                return LossValue(name, node)
            return None
        if dotted in self.backwarded_names(self.ix.function_of(at)):
            return LossValue(name, None)
        return None

    def _project_losses(self, call: cst.Call) -> frozenset[int]:
        """Positions of what ``call`` returns that hold a loss tensor, when it runs a
        function of another module of the project (also through a module-level alias:
        ``loss_fn = my_loss``)."""
        context = getattr(self.ix.v, "context", None)
        view = context.project if context is not None else None
        callee = dotted_name(call.func)
        if view is None or callee is None or self.ix.resolve_call(call) is not None:
            return frozenset()
        found = view.returned_losses(callee)
        if not found and isinstance(call.func, cst.Name):
            alias = self._module_alias(call.func)
            if alias is not None:
                found = view.returned_losses(alias)
        return found

    def _module_alias(self, name: cst.Name) -> str | None:
        """What ``name`` stands for when every binding of it is a module-level
        ``name = other`` of the same ``other``."""
        found: set[str | None] = set()
        for binding in self.ix.bindings(name):
            target = self.ix.parent(binding) if isinstance(binding, cst.Name) else None
            assign = self.ix.parent(target) if isinstance(target, cst.AssignTarget) else None
            if not isinstance(assign, cst.Assign) or self.ix.function_of(assign) is not None:
                return None
            found.add(dotted_name(assign.value))
        return found.pop() if len(found) == 1 else None

    # -- expressions -------------------------------------------------------------------

    def carried_loss(self, expr: cst.BaseExpression, at: cst.CSTNode, depth: int = 0) -> LossValue | None:
        """The loss ``expr`` carries with its graph, or ``None`` if it carries none."""
        if depth > 8:
            return None
        if isinstance(expr, (cst.Name,)) or (
            isinstance(expr, cst.Attribute) and expr.attr.value not in ("loss", "data", "grad")
            and dotted_name(expr) is not None
        ):
            return self.variable_loss(expr, at, depth)
        if isinstance(expr, cst.Attribute):
            return LossValue(expr, None) if expr.attr.value == "loss" and self._model_output(expr.value) else None
        if isinstance(expr, cst.Subscript):
            if _string_index(expr) == "loss":
                entries = self._helper_entries(expr.value, "loss")
                if entries is not None:
                    # ``train_log = train(...)`` of a same-module ``train`` that returns
                    # ``OrderedDict([("loss", meter.avg), ...])``: what it puts there.
                    return next((found for value, ret in entries
                                 if (found := self.carried_loss(value, ret, depth + 2))), None)
                return LossValue(expr, None) if self._model_output(expr.value) else None
            if isinstance(expr.value, cst.Call) and not self._element_may_carry(expr, depth):
                return None
            return self.carried_loss(expr.value, at, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            return self.carried_loss(expr.left, at, depth + 1) or self.carried_loss(expr.right, at, depth + 1)
        if isinstance(expr, cst.UnaryOperation):
            return self.carried_loss(expr.expression, at, depth + 1)
        if isinstance(expr, (cst.List, cst.Tuple)):
            for el in expr.elements:
                found = self.carried_loss(el.value, at, depth + 1)
                if found is not None:
                    return found
            return None
        if isinstance(expr, cst.Call):
            return self._call_loss(expr, at, depth)
        return None

    def _element_may_carry(self, sub: cst.Subscript, depth: int) -> bool:
        """For ``helper(...)[i]`` where ``helper`` is a same-module function whose every
        return is a tuple literal, whether element ``i`` of one of them carries a loss
        (yolov5's ``return total * bs, torch.cat(parts).detach()``, read as ``[1]``).
        ``True`` when the returns cannot be told apart."""
        index = _int_index(sub)
        callee = self.ix.resolve_call(sub.value) if index is not None else None
        if callee is None or depth > 4:
            return True
        returns = self.ix.returns_of(callee)
        if not returns or not all(
            isinstance(r.value, (cst.Tuple, cst.List)) and index < len(r.value.elements)
            and not any(isinstance(e, cst.StarredElement) for e in r.value.elements)
            for r in returns
        ):
            return True
        return any(
            self.carried_loss(r.value.elements[index].value, r, depth + 2) is not None
            for r in returns
        )

    def _call_loss(self, call: cst.Call, at: cst.CSTNode, depth: int) -> LossValue | None:
        func = call.func
        if isinstance(func, cst.Attribute) and self.ix.resolve_call(call) is None:
            method = func.attr.value
            if method in GRAPH_KEEPING_METHODS:
                return self.carried_loss(func.value, at, depth + 1)
            if method not in LOSS_OBJECT_CALLS and self._is_loss(func.value, at, depth):
                # ``loss.get_loss()`` on a custom loss object (pytorch-seq2seq) returns
                # whatever it likes, often a float: only tensor methods that keep the
                # graph (above) are known to return one.
                return None
        names = self.ix.qualified(func)
        if names & GRAPH_KEEPING_FUNCTIONS:
            for arg in call.args:
                found = self.carried_loss(arg.value, at, depth + 1)
                if found is not None:
                    return found
            return None
        if self.computes_loss(call, depth):
            if call.args and all(a.star == "" and _detached(a.value) for a in call.args):
                # ``criterion(pred.detach().cpu(), true.detach().cpu())`` (Informer's
                # ``vali``): a loss of detached inputs has no graph to keep.
                return None
            return LossValue(call, None)
        return None

    def _is_loss(self, receiver: cst.BaseExpression, at: cst.CSTNode, depth: int) -> bool:
        """``receiver`` holds a loss: a loss tensor, or a loss object named like one
        (``self.loss``, ``criterion``)."""
        if self.carried_loss(receiver, at, depth + 1) is not None:
            return True
        dotted = dotted_name(receiver)
        return dotted is not None and bool(LOSS_CALLEE.match(dotted.rsplit(".", 1)[-1]))

    def _helper_entries(self, expr: cst.BaseExpression,
                        key: str) -> list[tuple[cst.BaseExpression, cst.Return]] | None:
        """When ``expr`` is what a same-module function returned (``f(...)``, or a name
        assigned only such calls) and every ``return`` of it builds a dict literal
        (``{...}``, ``dict(...)``, ``OrderedDict([...])``), the values put under ``key``
        with their returns; ``None`` when that is not known."""
        calls = [expr] if isinstance(expr, cst.Call) else (
            [o.expr for o in self.ix.origins(expr)] if isinstance(expr, cst.Name) else [])
        if not calls or not all(isinstance(c, cst.Call) for c in calls):
            return None
        out: list[tuple[cst.BaseExpression, cst.Return]] = []
        for call in calls:
            callee = self.ix.resolve_call(call)
            if callee is None or callee.name.value == "__init__":
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

    def _model_output(self, expr: cst.BaseExpression) -> bool:
        """``outputs`` in ``outputs.loss`` is what a call returned (``model(**batch)``),
        not a loop variable or parameter, which is as often a dict of logged floats."""
        if isinstance(expr, cst.Call):
            return True
        if isinstance(expr, cst.Name):
            return any(isinstance(o.expr, cst.Call) for o in self.ix.origins(expr))
        return False

    def computes_loss(self, call: cst.Call, depth: int = 0) -> bool:
        """Whether ``call`` computes a fresh loss tensor."""
        func = call.func
        names = self.ix.qualified(func)
        if names & LOSS_FUNCTIONS:
            return True
        if isinstance(func, cst.Call) and self._builds_loss_module(func):
            return True  # ``nn.CrossEntropyLoss()(logits, y)``
        callee = self.ix.resolve_call(call)
        if callee is not None:
            if callee.name.value == "__init__":
                return False
            return depth < 4 and any(
                r.value is not None and self.carried_loss(r.value, r, depth + 2) is not None
                for r in self.ix.returns_of(callee)
            )
        if isinstance(func, (cst.Name, cst.Attribute)):
            for origin in self.ix.origins(func):
                if isinstance(origin.expr, cst.Call) and self._builds_loss_module(origin.expr):
                    return True
                if origin.expr is not None and self.ix.qualified(origin.expr) & LOSS_FUNCTIONS:
                    return True  # ``loss_fn = F.cross_entropy``
            last = func.value if isinstance(func, cst.Name) else func.attr.value
            return bool(LOSS_CALLEE.match(last))
        return False

    def _builds_loss_module(self, call: cst.Call) -> bool:
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
        if isinstance(node, (cst.Assign, cst.AnnAssign)) and node.value is not None:
            expr = node.value
        root = expr
        while isinstance(root, (cst.Attribute, cst.Subscript)):
            root = root.value
        if root is expr or not isinstance(root, cst.Name):
            return False
        earlier = self.assignments_before(root.value, node)
        return bool(earlier) and self._off(earlier[0])

    def _off(self, node: cst.CSTNode) -> bool:
        return self.ix.grad_mode(node) in (GradMode.DISABLED, GradMode.MAYBE_DISABLED)


def _bound_names(target: cst.BaseExpression) -> set[str]:
    if isinstance(target, (cst.Tuple, cst.List)):
        out: set[str] = set()
        for el in target.elements:
            out |= _bound_names(el.value)
        return out
    if isinstance(target, cst.StarredElement):
        return _bound_names(target.value)
    dotted = dotted_name(target)
    return {dotted} if dotted else set()


def _int_index(sub: cst.Subscript) -> int | None:
    if len(sub.slice) == 1 and isinstance(sub.slice[0].slice, cst.Index):
        value = sub.slice[0].slice.value
        if isinstance(value, cst.Integer) and isinstance(value.evaluated_value, int):
            return value.evaluated_value
    return None


def _dict_entries(expr: cst.BaseExpression) -> list[tuple[str | None, cst.BaseExpression]] | None:
    """``(key, value)`` of a dict built literally: ``{"loss": v}``, ``dict(loss=v)``,
    ``OrderedDict([("loss", v)])`` (``None`` keys where not a string); ``None`` for any
    other expression."""
    def text(node: cst.BaseExpression) -> str | None:
        if isinstance(node, cst.SimpleString) and isinstance(node.evaluated_value, str):
            return node.evaluated_value
        return None
    if isinstance(expr, cst.Dict):
        return [(text(e.key), e.value) for e in expr.elements if isinstance(e, cst.DictElement)]
    if not isinstance(expr, cst.Call):
        return None
    name = dotted_name(expr.func) or ""
    last = name.rsplit(".", 1)[-1]
    if last == "dict" and all(a.keyword is not None for a in expr.args):
        return [(a.keyword.value, a.value) for a in expr.args]  # type: ignore[union-attr]
    if last == "OrderedDict" and len(expr.args) == 1 and isinstance(expr.args[0].value, (cst.List, cst.Tuple)):
        out: list[tuple[str | None, cst.BaseExpression]] = []
        for el in expr.args[0].value.elements:
            pair = el.value
            if not (isinstance(pair, cst.Tuple) and len(pair.elements) == 2):
                return None
            out.append((text(pair.elements[0].value), pair.elements[1].value))
        return out
    return None


def _string_index(sub: cst.Subscript) -> str | None:
    if len(sub.slice) == 1 and isinstance(sub.slice[0].slice, cst.Index):
        value = sub.slice[0].slice.value
        if isinstance(value, cst.SimpleString):
            return value.evaluated_value if isinstance(value.evaluated_value, str) else None
    return None


_DETACHING_METHODS = frozenset({"item", "detach", "tolist", "numpy", "detach_"})
_DETACHING_FUNCTIONS = frozenset({"float", "int", "round", "str", "bool"})


def _drops_graph(expr: cst.BaseExpression) -> bool:
    """``loss.item()``, ``float(loss)``, ``loss.detach()``, a literal: no graph here."""
    if isinstance(expr, (cst.Integer, cst.Float, cst.SimpleString)):
        return True
    if isinstance(expr, cst.Call):
        func = expr.func
        if isinstance(func, cst.Attribute) and func.attr.value in _DETACHING_METHODS:
            return True
        if isinstance(func, cst.Name) and func.value in _DETACHING_FUNCTIONS:
            return True
    if isinstance(expr, cst.BinaryOperation):
        return _drops_graph(expr.left) and _drops_graph(expr.right)
    return False


def _detached(expr: cst.BaseExpression) -> bool:
    """``pred.detach()``, ``pred.detach().cpu()``, ``x.data``, ``y.numpy()``, a literal:
    an input that brings no graph into what is computed from it."""
    while True:
        if _drops_graph(expr) or isinstance(expr, (cst.Name,)) and expr.value in ("None", "True", "False"):
            return True
        if isinstance(expr, cst.Attribute):
            if expr.attr.value == "data":
                return True
            return False
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and (
            expr.func.attr.value in GRAPH_KEEPING_METHODS
        ):
            expr = expr.func.value
            continue
        return False


# -- meters: objects that sum or store what their methods are given ------------------------


@dataclass(frozen=True)
class Accumulates:
    """How a method keeps one of its parameters."""

    #: Only summed (``self.sum += val * n``): under ``no_grad`` the sum has no graph.
    arithmetic: bool
    #: In words, for messages: "adds it to `self.sum`".
    words: str


def meter_classes(ix: CodeIndex, receiver: cst.BaseExpression) -> list[cst.ClassDef | str]:
    """What class the object ``receiver`` names may be an instance of: same-module classes
    whose bases are all ``object`` or same-module classes (a torchmetrics ``Metric``
    subclass runs ``update`` under ``no_grad``: its sum keeps no graph), and, by last name,
    well-known meter classes from elsewhere (``KNOWN_METER``). Followed through
    assignments, ``self.`` attributes and containers (``meters["loss"]`` of a dict or
    comprehension of meters, ``defaultdict(AverageMeter)``)."""
    out: list[cst.ClassDef | str] = []
    for ref in _class_refs(ix, receiver, 0):
        cls = ix.class_named(ref) if isinstance(ref, cst.Name) else None
        if cls is not None:
            if _plain_class(ix, cls) and not any(cls is c for c in out):
                out.append(cls)
            continue
        name = dotted_name(ref)
        last = name.rsplit(".", 1)[-1] if name else ""
        if KNOWN_METER.match(last) and last not in out:
            out.append(last)
    return out


_DEFAULTDICT = frozenset({"collections.defaultdict"})


def _class_refs(ix: CodeIndex, expr: cst.BaseExpression, depth: int) -> list[cst.BaseExpression]:
    """Expressions naming the classes whose instances ``expr`` may hold."""
    if depth > 3:
        return []
    if isinstance(expr, cst.Subscript):
        refs: list[cst.BaseExpression] = []
        for origin in ix.origins(expr.value):
            container = origin.expr
            if isinstance(container, cst.Call) and ix.qualified(container.func) & _DEFAULTDICT:
                if container.args and container.args[0].keyword is None:
                    refs.append(container.args[0].value)
                continue
            for element in _elements(container, _string_index(expr)):
                refs += _refs_of_value(ix, element, depth + 1)
        return refs
    refs = []
    for origin in ix.origins(expr):
        if origin.expr is not None and origin.expr is not expr:
            refs += _refs_of_value(ix, origin.expr, depth + 1)
    return refs


def _refs_of_value(ix: CodeIndex, value: cst.BaseExpression, depth: int) -> list[cst.BaseExpression]:
    if isinstance(value, cst.Call) and isinstance(value.func, (cst.Name, cst.Attribute)):
        return [value.func]
    if isinstance(value, cst.Subscript):
        return _class_refs(ix, value, depth)
    return []


def _elements(container: cst.BaseExpression | None, key: str | None) -> list[cst.BaseExpression]:
    """What a container literal or comprehension holds (under ``key``, for a dict literal
    that has it)."""
    if isinstance(container, cst.Dict):
        entries = [e for e in container.elements if isinstance(e, cst.DictElement)]
        keyed = [e.value for e in entries
                 if isinstance(e.key, cst.SimpleString) and e.key.evaluated_value == key]
        return keyed or [e.value for e in entries]
    if isinstance(container, (cst.List, cst.Tuple)):
        return [e.value for e in container.elements if isinstance(e, cst.Element)]
    if isinstance(container, cst.DictComp):
        return [container.value]
    if isinstance(container, (cst.ListComp, cst.GeneratorExp)):
        return [container.elt]
    return []


def _plain_class(ix: CodeIndex, cls: cst.ClassDef, depth: int = 0) -> bool:
    """Every base is ``object`` or a same-module class with the same property."""
    if depth > 4:
        return False
    for base in cls.bases:
        if base.keyword is not None:
            continue  # ``metaclass=...``
        if isinstance(base.value, cst.Name) and base.value.value == "object":
            continue
        inner = ix.class_named(base.value)
        if inner is None or not _plain_class(ix, inner, depth + 1):
            return False
    return True


def accumulated_params(method: cst.FunctionDef) -> dict[cst.Param, Accumulates]:
    """Parameters of ``method`` it sums or appends, as given, into an attribute of its
    ``self`` (``self.sum += val * n``, ``self.total = self.total + val``,
    ``self.history.append(val)``). A parameter the method rebinds anywhere
    (``val = val.item()``) or only reads through a method that drops the graph
    (``val.item()``, ``float(val)``, ``val.detach()``) is not accumulated as given."""
    params = [*method.params.posonly_params, *method.params.params]
    if not params or any(
        isinstance(d.decorator, cst.Name) and d.decorator.value in ("staticmethod", "classmethod")
        for d in method.decorators
    ):
        return {}
    me = params[0].name.value
    candidates = {p.name.value: p for p in (*params[1:], *method.params.kwonly_params)}
    finder = _AccumulationFinder(me, set(candidates))
    traversal.visit(method.body, finder)
    out: dict[cst.Param, Accumulates] = {}
    for name, ways in finder.found.items():
        if name in finder.rebound:
            continue
        arithmetic = all(a for a, _ in ways)
        out[candidates[name]] = Accumulates(arithmetic, ways[0][1])
    return out


class _AccumulationFinder(cst.CSTVisitor):
    def __init__(self, me: str, params: set[str]) -> None:
        self.me = me
        self.params = params
        self.found: dict[str, list[tuple[bool, str]]] = {}
        self.rebound: set[str] = set()

    def _on_self(self, target: cst.BaseExpression) -> bool:
        root = target
        while isinstance(root, (cst.Attribute, cst.Subscript)):
            root = root.value
        return root is not target and isinstance(root, cst.Name) and root.value == self.me

    def _record(self, value: cst.BaseExpression, arithmetic: bool, words: str) -> None:
        for name in self.params:
            if _carries(value, name):
                self.found.setdefault(name, []).append((arithmetic, words))

    def _bind(self, target: cst.BaseExpression) -> None:
        if isinstance(target, cst.Name):
            self.rebound.add(target.value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for e in target.elements:
                self._bind(e.value)
        elif isinstance(target, cst.StarredElement):
            self._bind(target.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._bind(node.target)
        if isinstance(node.operator, cst.AddAssign) and self._on_self(node.target):
            self._record(node.value, True, f"adds it to `{_source(node.target)}`")

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._bind(t.target)
        if len(node.targets) != 1 or not self._on_self(node.targets[0].target):
            return
        target = _source(node.targets[0].target)
        value = node.value
        if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
            terms = [value.left, value.right]
            if any(_source(t) == target for t in terms):
                for t in terms:
                    if _source(t) != target:
                        self._record(t, True, f"adds it to `{target}`")

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._bind(node.target)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in ACCUMULATING_METHODS:
            if self._on_self(func.value):
                positional = [a.value for a in node.args if a.keyword is None and not a.star]
                index = ACCUMULATING_METHODS[func.attr.value]
                if len(positional) > index:
                    self._record(positional[index], False,
                                 f"appends it to `{_source(func.value)}`")

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False


def _carries(expr: cst.BaseExpression, name: str) -> bool:
    """``expr`` is ``name`` itself or arithmetic/graph-keeping methods on it
    (``val * n``, ``val.mean()``, ``(val,)``); not ``val.item()`` or ``float(val)``."""
    if isinstance(expr, cst.Name):
        return expr.value == name
    if isinstance(expr, cst.BinaryOperation):
        return _carries(expr.left, name) or _carries(expr.right, name)
    if isinstance(expr, cst.UnaryOperation):
        return _carries(expr.expression, name)
    if isinstance(expr, cst.Subscript):
        return _carries(expr.value, name)
    if isinstance(expr, (cst.Tuple, cst.List)):
        return any(_carries(e.value, name) for e in expr.elements)
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
        return expr.func.attr.value in GRAPH_KEEPING_METHODS and _carries(expr.func.value, name)
    return False


def _source(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _unpacked_index(assign: cst.Assign, name: str) -> int | None:
    """Where ``name`` sits in a tuple target of ``assign`` (``a, name, c = ...``)."""
    for target in assign.targets:
        seq = target.target
        if isinstance(seq, (cst.Tuple, cst.List)) and not any(
                isinstance(e, cst.StarredElement) for e in seq.elements):
            for i, element in enumerate(seq.elements):
                if dotted_name(element.value) == name:
                    return i
    return None
