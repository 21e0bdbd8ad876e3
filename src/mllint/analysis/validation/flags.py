"""Shared train/eval loops switched by a flag: the evaluation path of ``run_epoch(...)``.

Many training scripts run one loop for both phases and let a parameter decide whether it
trains::

    def run_epoch(model, loader, optimizer, train: bool):
        for x, y in loader:
            loss = criterion(model(x), y)
            if train:
                optimizer.zero_grad(); loss.backward(); optimizer.step()

    run_epoch(model, val_loader, optimizer, train=False)

The loop trains, so it is no validation pass as written; but called with ``train=False``
it is one. A function is *switched* by its parameter ``p`` when every training call in
it (``backward()``, ``step()``, a same-module helper that trains) sits under an ``if``
that tests ``p`` (``if p:``, ``if not p:``, ``if p == "train":``, on one line, so the
prefilter can see it). A call of the function that binds ``p`` - by keyword, position or
default - to a literal on which no training call runs is an *evaluation call*, and the
function's loops over batches are validation passes on that path: their mode and
autograd state are what the function sets on that path, else what holds at that call.

The flag may reach the guarded training one level further down: a loop function that
hands its parameter on to a switched batch function (``self._run_batch(x, y, train)``)
is switched by that parameter, and the batch function's forwards are passes of its loop
on the evaluation path of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import ast

from mllint.analysis.pyast.scopes import default_of
from mllint.analysis.pyast.syntax import FUNCTIONS, SourceText
from mllint.analysis.validation.facts import CallRec, Scope, _is_training_call
from mllint.gates.resolve import dotted as dotted_name
from mllint.analysis.validation.names import FLAG_IF_RE

#: A literal a flag can be bound to: ``True``/``False``/``None``, a number or a string.
Literal = object
_NOT_LITERAL = object()
#: How many functions a flag is followed through when each hands it on to the next.
_MAX_HOPS = 3


@dataclass(frozen=True)
class FlagTest:
    """``if <test>:`` on parameter ``param``: its body runs for the values ``runs`` accepts."""

    param: str
    negated: bool
    #: ``==``/``!=`` against this string; None for a truth test.
    equals: str | None = None

    def body_runs(self, value: Literal) -> bool:
        if self.equals is None:
            taken = bool(value)
        else:
            taken = value == self.equals
        return taken != self.negated


@dataclass(frozen=True)
class Switch:
    """A function whose training is switched by its parameter ``param``."""

    scope: Scope
    param: str


@dataclass(frozen=True)
class EvalCall:
    """A call of a switched function that takes its evaluation path."""

    switch: Switch
    call: CallRec
    value: Literal

    def describe(self) -> str:
        return f"`{self.call.func}(..., {self.switch.param}={_show(self.value)})`"


def flag_test(test: ast.expr, params: tuple[str, ...], text: SourceText) -> FlagTest | None:
    """The flag test ``test`` makes on one of ``params``, if it is one of the forms the
    prefilter (``FLAG_IF``) also knows: ``p``, ``not p``, ``p == "x"``, ``p != "x"``,
    with no parentheses of their own (a plain string, no prefix)."""
    negated = False
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        negated, test = True, test.operand
        if text.parenthesized(test):
            return None
    if isinstance(test, ast.Name) and test.id in params and not text.parenthesized(test):
        return FlagTest(test.id, negated)
    if negated or not isinstance(test, ast.Compare) or len(test.ops) != 1:
        return None
    left, op = test.left, test.ops[0]
    if not (isinstance(left, ast.Name) and left.id in params) or text.parenthesized(test) \
            or text.parenthesized(left):
        return None
    if not isinstance(op, (ast.Eq, ast.NotEq)):
        return None
    value = text.plain_string(test.comparators[0])
    if value is None:
        return None
    return FlagTest(left.id, isinstance(op, ast.NotEq), value)


class Flags:
    """The switched functions of one module and their evaluation calls."""

    def __init__(self, va) -> None:  # va: ValidationAnalysis (imports this module)
        self.va = va
        self._switches: dict[int, Switch | None] = {}
        self._tests: dict[int, FlagTest | None] = {}

    # -- guards ------------------------------------------------------------------------

    def _test(self, scope: Scope, node: ast.If) -> FlagTest | None:
        key = id(node)
        if key not in self._tests:
            test = flag_test(node.test, scope.params, self.va.facts.text)
            if test is not None and not self._on_flag_line(scope, node):
                test = None
            self._tests[key] = test
        return self._tests[key]

    def _on_flag_line(self, scope: Scope, node: ast.If) -> bool:
        where = self.va.facts.ifs.get(id(node))
        return where is not None and self.va.facts.line_matches(where.pos, FLAG_IF_RE)

    def runs(self, call: CallRec, param: str, value: Literal) -> bool | None:
        """Whether ``call`` runs when ``param`` is ``value``, as far as the ``if`` tests
        on ``param`` around it tell: True, False, or None (no such test around it)."""
        verdict: bool | None = None
        for node in call.ifs:
            test = self._test(call.scope, node)
            if test is None or test.param != param:
                continue
            part = self._part_of(node, call.node)
            if part is None:
                continue  # in the test itself
            in_body = part is node.body
            taken = test.body_runs(value)
            if taken != in_body:
                return False
            verdict = True
        return verdict

    def _part_of(self, node: ast.If, inner: ast.AST) -> list | None:
        """The block of ``node`` (its body or its ``else``) that holds ``inner``; None
        when ``inner`` is in its test."""
        up = self.va.facts.index
        child = inner
        for anc in up.ancestors(inner):
            if anc is node:
                if any(s is child for s in node.body):
                    return node.body
                if any(s is child for s in node.orelse):
                    return node.orelse
                return None
            child = anc
        return None

    # -- switched functions --------------------------------------------------------------

    def switch(self, scope: Scope) -> Switch | None:
        """``scope``'s flag parameter, when every training call in it is guarded by a test
        of that one parameter."""
        key = id(scope)
        if key in self._switches:
            return self._switches[key]
        self._switches[key] = None
        found: Switch | None = None
        if not scope.is_module and self.va.trains(scope):
            training = [c for c in scope.calls if self._trains(c)]
            params: set[str] | None = None
            for c in training:
                guarded = {t.param for n in c.ifs if (t := self._test(scope, n)) is not None}
                forwarded = self.forwarded(c)
                if forwarded is not None:
                    guarded.add(forwarded[1])  # ``self._run_batch(x, y, train)``
                params = guarded if params is None else params & guarded
                if not params:
                    break
            if params and len(params) == 1:
                found = Switch(scope, next(iter(params)))
        self._switches[key] = found
        return found

    def _trains(self, call: CallRec) -> bool:
        if _is_training_call(call):
            return True
        helper = self.va.helper_of(call)
        return helper is not None and helper is not call.scope and self.va.trains(helper)

    def forwarded(self, call: CallRec) -> tuple[Switch, str] | None:
        """A call that hands its function's parameter on as the flag of a switched helper
        (``self._run_batch(x, y, train)`` in ``_run_epoch(self, loader, train)``): the
        helper's switch and the parameter handed on."""
        scope = call.scope
        helper = self.va.helper_of(call)
        if scope.is_module or helper is None or helper is scope:
            return None
        inner = self.switch(helper)
        if inner is None:
            return None
        arg = bound_arg(helper, call, inner.param)
        if (isinstance(arg, ast.Name) and not self.va.facts.text.parenthesized(arg)
                and arg.id in scope.params and not scope.assigned(arg.id)):
            return inner, arg.id
        return None

    def trains_with(self, switch: Switch, value: Literal, depth: int = 0) -> bool:
        """Some training call of the switched function runs when its flag is ``value``
        (a call that hands the flag on to a switched helper: when the helper trains)."""
        for c in switch.scope.calls:
            if not self._trains(c) or self.runs(c, switch.param, value) is False:
                continue
            forwarded = self.forwarded(c)
            if forwarded is not None and forwarded[1] == switch.param:
                if depth >= _MAX_HOPS or self.trains_with(forwarded[0], value, depth + 1):
                    return True
                continue
            return True
        return False

    def eval_calls(self, scope: Scope) -> list[EvalCall]:
        """The calls of ``scope`` in this module that take its evaluation path."""
        switch = self.switch(scope)
        if switch is None:
            return []
        out = []
        for call in self.va.callers(scope):
            value = bound_literal(scope, call, switch.param, self.va.facts.text)
            if value is not _NOT_LITERAL and not self.trains_with(switch, value):
                out.append(EvalCall(switch, call, value))
        return out

    def is_eval_call(self, call: CallRec) -> bool:
        """``call`` is a call of a switched function on its evaluation path."""
        helper = self.va.helper_of(call)
        if helper is None or self.switch(helper) is None:
            return False
        return any(e.call is call for e in self.eval_calls(helper))


def chosen_name(va, ec: EvalCall, scope: Scope, name: str, pos) -> str | None:
    """What ``name`` holds on the evaluation path when it is assigned a conditional on
    the flag (``loader = self.tr_loader if not cross_valid else self.cv_loader``): the
    chosen branch's dotted name, "" when that branch is no name; None when ``name`` is
    not assigned that way."""
    for s, f in va.origins(scope, name, pos):
        if s is not scope or f.index is not None or not isinstance(f.value, ast.IfExp):
            continue
        test = flag_test(f.value.test, (ec.switch.param,), va.facts.text)
        if test is not None:
            branch = f.value.body if test.body_runs(ec.value) else f.value.orelse
            return dotted_name(branch) or ""
    return None


def bound_literal(callee: Scope, call: CallRec, param: str, text: SourceText) -> Literal:
    """The literal ``call`` binds to ``callee``'s parameter ``param`` (its default when
    the call leaves it out), or ``_NOT_LITERAL``."""
    expr = bound_arg(callee, call, param)
    return _NOT_LITERAL if expr is None else _literal(expr, text)


def bound_arg(callee: Scope, call: CallRec, param: str) -> ast.expr | None:
    """The expression ``call`` binds to ``callee``'s parameter ``param`` (its default when
    the call leaves it out), or None when that cannot be told."""
    args = call.args
    for a in args:
        if a.keyword is not None and a.keyword == param:
            return a.value
        if a.star:
            return None  # ``*args`` / ``**kwargs``: cannot tell
    offset = 1 if callee.cls is not None and call.func and "." in call.func else 0
    index = callee.params.index(param) - offset
    positional = [a for a in args if a.keyword is None]
    if 0 <= index < len(positional):
        return positional[index].value
    func = callee.node
    if isinstance(func, FUNCTIONS):
        a = func.args
        for q in (*a.posonlyargs, *a.args, *a.kwonlyargs):
            if q.arg == param:
                return default_of(func, q)
    return None


def _literal(expr: ast.expr, text: SourceText) -> Literal:
    if isinstance(expr, ast.Constant):
        value = expr.value
        if value is None or isinstance(value, bool) or type(value) is int:
            return value
        plain = text.plain_string(expr)
        return plain if plain is not None else _NOT_LITERAL
    return _NOT_LITERAL


def _show(value: Literal) -> str:
    return repr(value)
