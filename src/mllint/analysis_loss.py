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

from mllint.analysis import dotted_name
from mllint.analysis_grads import GradEvents
from mllint.analysis_index import CodeIndex, GradMode

# What names a loss, and which methods keep a tensor on the graph, are defined with the
# stdlib-only gate of ML004 (``mllint.gates.loss``), which must judge them alike.
from mllint.gates.loss import GRAPH_KEEPING_METHODS, LOSS_CALLEE, LOSS_FUNCTIONS  # noqa: F401

#: The prefilter: a file without any of these cannot hold a recognised loss.
LOSS_TEXT = r"(?i)loss|cross_?entropy|kl_div|backward|crit"

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
            for call in self.ev.backwards:
                if self.ix.function_of(call) is func:
                    for target in self.ev.backward_targets(call):
                        names |= names_in(target)
            self._backwarded[key] = names
        return self._backwarded[key]

    def assignments_before(self, name: str, at: cst.CSTNode) -> list[cst.CSTNode]:
        """Assignments to ``name`` in ``at``'s function that start before it, latest first."""
        func = self.ix.function_of(at)
        pos = self.ix.position(at)
        found = []
        for node in self.ix.nodes.assigns:
            if self.ix.function_of(node) is not func or self.ix.position(node) >= pos:
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
            # Unknown producer (``logits, loss = model(x, y)``): back-propagating it says
            # it is a loss.
            if dotted in self.backwarded_names(self.ix.function_of(at)):
                return LossValue(name, node)
            return None
        if dotted in self.backwarded_names(self.ix.function_of(at)):
            return LossValue(name, None)
        return None

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
        returns = [r for r in self.ix.nodes.returns if self.ix.function_of(r) is callee]
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
            return LossValue(call, None)
        return None

    def _is_loss(self, receiver: cst.BaseExpression, at: cst.CSTNode, depth: int) -> bool:
        """``receiver`` holds a loss: a loss tensor, or a loss object named like one
        (``self.loss``, ``criterion``)."""
        if self.carried_loss(receiver, at, depth + 1) is not None:
            return True
        dotted = dotted_name(receiver)
        return dotted is not None and bool(LOSS_CALLEE.match(dotted.rsplit(".", 1)[-1]))

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
                for r in self.ix.nodes.returns
                if self.ix.function_of(r) is callee
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


def names_in(expr: cst.BaseExpression) -> set[str]:
    """Dotted names (``loss``, ``self.total``) read anywhere in a small expression."""
    out: set[str] = set()

    class _Names(cst.CSTVisitor):
        def visit_Attribute(self, node: cst.Attribute) -> bool:
            dotted = dotted_name(node)
            if dotted is not None:
                out.add(dotted)
                return False
            return True

        def visit_Name(self, node: cst.Name) -> None:
            out.add(node.value)

    expr.visit(_Names())
    return out


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
