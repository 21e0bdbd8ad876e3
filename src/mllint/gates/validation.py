"""Gate of the validation-pass rules (ML002, ML003, ML007) over Python's ``ast``.

Every finding of these rules is about a *validation pass* (``ValidationAnalysis.passes``),
and ML007 also about a call of an evaluation-named function it cannot see into
(``DataAnalysis.external_evaluations``). A pass is a forward call ``m(args)`` /
``m.forward(args)`` of something that may be a model, with a sign of evaluation. This
gate restates those conditions over ``ast`` and drops, never adds, the parts it cannot
decide cheaply, so it answers True whenever the analysis could find a pass:

* the callee may be a model: its name says so (``is_model_name``), an assignment of that
  name here or in a scope around it (where ``origins`` looks; only an assignment lets the
  analysis judge a name by its value), or it is a parameter of a function the module
  calls (judged by what the callers pass); for ``recv.method(args)`` with a ``method``
  of a class the module builds (``Net(...)``, or a base class of it in the module), the
  same of ``recv`` (``model.predict(x)``);
* a sign of evaluation may hold: a loop around the call (the comprehension's or
  statement's own, within the same function) iterates a name that ``is_val_name``
  accepts and none that ``is_train_name`` accepts (a string constant counts when its
  text may name held-out data: the analysis reads strings' source text, which ``ast``
  does not keep); the function is named like an evaluation (``is_eval_function``) and
  takes data or loops, or the module may train and has an ``.eval()``/``.train(...)``
  call (``_switched_to_eval``: a full-batch forward after ``model.eval()``, the function
  called from a training loop); a loop-less call's first argument is named like held-out data;
  or, in a loop over batches (``FOR_DATA_RE`` on a line its keyword may be on, read off
  the source the prefilter parsed), an enclosing ``with`` that may switch autograd off
  (ML002, ML007; for ML007 in any loop: an evaluation under a held-out guard) or any
  ``.eval()``/``.train(...)`` call in the module (ML003, ML007); or, in such a loop, a
  function that may be a switched train/eval loop (it tests a parameter in an ``if`` or
  hands one on, the module calls it, and something in the module may train); or, for a
  call outside any loop in a function that may return its output, any of these signs
  but the flag at a call of a function of that name (with arguments) from a loop (a
  helper such as ``self._forward_pass(x)``), or, in a function that may be switched,
  such a call from a loop of a switched function that hands on a parameter (a flag
  handed on to a switched batch function: ``self._run_batch(x, y, train)``).

ML007's calls of evaluation functions count when the function is not the module's own
(``helper_of``) and an argument may be training data: named so, assigned where the
analysis looks, or anything when something in the module may train (the data a training
loop iterates is training data).

Left out (each only ever rejects a pass, so leaving it out keeps the gate sound): the
other textual line checks, training inside the loop through helpers, synthetic inputs,
back-propagated outputs, framework base classes and test files. A method named like a
framework hook (``validation_step``) is skipped exactly as the analysis skips it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from mllint.analysis.validation.names import (
    _FRAMEWORK_HOOKS,
    AUTOGRAD_CALLS,
    FOR_DATA_RE,
    ITER_WRAPPERS,
    TRAIN_METHODS,
    WRAPPED_DATA_RE,
    WRAPPED_VAL_RE,
    is_eval_function,
    is_model_name,
    is_train_name,
    is_val_name,
)
from mllint.gates.resolve import children, dotted, parents
from mllint.prefilter import source_of
from mllint.source import physical_lines

#: Callees whose ``with`` block may switch autograd off (``torch.no_grad`` and kin), by
#: their last name; imports that rename them are resolved below.
_GRAD_NAMES = frozenset({"no_grad", "inference_mode", "set_grad_enabled"})
#: Methods whose receiver the analysis records as assigned (``outputs.append(model(x))``).
_FLOW_METHODS = frozenset({"append", "extend", "add", "update", "put"})

# Signs of evaluation (``analysis.validation.facts.Evidence``), as bits.
DATA, FUNCTION, NO_GRAD, EVAL_MODE, FLAG = 1, 2, 4, 8, 16
#: Autograd off around a loop that need not be over batches: ML007's evaluations under
#: a held-out guard (``DataAnalysis.guarded_evaluations``), forwards directly in a loop
#: over what a training loop iterates (so only where something may train).
GUARDED = 32
#: Which signs can lead to a finding of each rule: a pass whose only sign is a
#: ``no_grad`` block cannot lack no_grad (ML003), one whose only sign is ``model.eval()``
#: cannot be in training mode (ML002).
ML002_SIGNS = DATA | FUNCTION | NO_GRAD | FLAG
ML003_SIGNS = DATA | FUNCTION | EVAL_MODE | FLAG
ML007_SIGNS = DATA | FUNCTION | NO_GRAD | EVAL_MODE | FLAG | GUARDED


@dataclass(eq=False)
class _Loop:
    #: Dotted names in the iterated expression (as ``facts._words`` yields them).
    words: tuple[str, ...]
    #: The expression holds a string constant whose source text may name held-out data.
    strings: bool
    #: A call in it (same function) surely trains: ``x.backward()``, ``opt.step()``.
    trains: bool = False
    #: The lines its ``for`` (or ``while``) keyword may be on.
    first: int = 0
    last: int = 0
    #: ``FOR_DATA_RE`` may match on the keyword's line (None: not looked yet).
    batches: bool | None = None

    def may_name_heldout(self) -> bool:
        if any(is_train_name(w) for w in self.words):
            return False
        return self.strings or any(is_val_name(w) for w in self.words)


@dataclass(eq=False)
class _Scope:
    """A function or the module: the analysis's scopes (a class body belongs to the scope
    around it, as do lambdas and comprehensions)."""

    name: str
    params: tuple[str, ...]
    self_name: str | None
    is_module: bool
    #: A framework hook method (here or around it): the analysis skips its calls.
    owned: bool
    #: The scope the function is defined in (None for the module).
    parent: _Scope | None = None
    #: Dotted names assigned here (``FlowRec.targets``).
    targets: set[str] = field(default_factory=set)
    #: Holds an ``if`` that tests one of its parameters, or hands a parameter on to a
    #: call: what a switched function (``FlagAnalysis.switch``) needs.
    flag: bool = False
    #: Holds a ``return`` with a value (``_returns_output`` needs one).
    returns: bool = False
    #: Functions defined here, not methods (``Scope.children``).
    defs: set[str] = field(default_factory=set)
    #: For a method, the methods its class defines (``ClassInfo.methods``).
    cls_methods: frozenset[str] | None = None

    def resolves(self, func: str) -> bool:
        """``ValidationAnalysis.helper_of``: ``func`` called here is a function of the
        module (``f(...)`` defined here or around) or of the method's class
        (``self.f(...)``)."""
        if "." not in func:
            return any(func in s.defs for s in self._outward())
        recv, _, meth = func.rpartition(".")
        return self.cls_methods is not None and recv == self.self_name and meth in self.cls_methods

    def sees(self, name: str) -> bool:
        """``name`` is assigned here or in a scope around it, where the analysis's
        ``origins`` looks for it."""
        return any(name in s.targets for s in self._outward())

    def _outward(self) -> Iterator[_Scope]:
        """This scope, then each scope around it, out to the module."""
        s: _Scope | None = self
        while s is not None:
            yield s
            s = s.parent


@dataclass
class _Candidate:
    target: str
    scope: _Scope
    loops: tuple[_Loop, ...]
    #: True, or the root names of enclosing ``with`` items to resolve (see ``run``).
    in_grad_with: bool | tuple[str, ...]
    first_arg: str | None
    #: For ``recv.method(args)``: the receiver, a model when its class defines ``method``.
    receiver: str | None = None
    method: str | None = None
    #: A bare parameter of its function is among its arguments (a flag handed on).
    hands_on_param: bool = False
    node: ast.Call | None = None
    #: The callee's dotted name.
    func: str = ""


@dataclass
class _Facts:
    candidates: list[_Candidate] = field(default_factory=list)
    #: Calls of evaluation-named functions (maybe defined elsewhere), with their scope
    #: and the dotted names among their arguments: ML007 classifies those names' data.
    external_evals: list[tuple[_Scope, str, tuple[str, ...]]] = field(default_factory=list)
    #: Some call may train (``facts._is_training_call``): only then can a training loop,
    #: and the data it iterates, be known.
    trains: bool = False
    mode_calls: bool = False
    #: Every dotted name assigned anywhere (``self.x`` is judged by the class's
    #: assignments in any of its methods).
    targets: set[str] = field(default_factory=set)
    grad_aliases: set[str] = field(default_factory=set)
    #: Every callee's dotted name (``Net`` in ``Net(...)``).
    callees: set[str] = field(default_factory=set)
    #: Their last names: a function of that name may have callers here.
    called: set[str] = field(default_factory=set)
    #: Top-level classes: their methods and the names of their bases.
    classes: dict[str, tuple[set[str], list[str]]] = field(default_factory=dict)
    #: The methods (own or inherited within the module) of the classes some call of the
    #: module constructs: ``model.predict(x)`` runs a model only on such an instance.
    methods: set[str] = field(default_factory=set)
    #: By last name, what anything of that name is bound to by a call of an
    #: ``ITER_WRAPPERS`` function (``pbar = tqdm(val_loader)``), anywhere in the module.
    wrapped: dict[str, list[ast.Call]] = field(default_factory=dict)
    #: The module's source, when the prefilter parsed it (its lines are made if asked).
    source: str | None = None
    _lines: list[str] | None = None

    def assigns_attribute(self, attr: str) -> bool:
        """Some ``<self>.attr = ...`` anywhere: what ``origins`` finds for ``self.attr``
        in any method of the class (the class is not told apart: a superset)."""
        return any(t.partition(".")[2] == attr for t in self.targets if "." in t)

    def lines(self) -> list[str] | None:
        if self._lines is None and self.source is not None:
            self._lines = physical_lines(self.source)
        return self._lines


def _words(expr: ast.AST) -> tuple[tuple[str, ...], bool]:
    """Dotted names (and keyword/attribute/parameter names, which libcst holds as
    ``Name`` nodes) in ``expr``, and whether it holds a string constant."""
    words: list[str] = []
    strings = False
    stack = [expr]
    while stack:
        node = stack.pop()
        d = dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
        if d:
            words.append(d)
            continue
        if isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            words.append(node.arg)
        elif isinstance(node, ast.arg):
            words.append(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            strings = strings or _may_name_heldout(node.value)
        elif isinstance(node, ast.JoinedStr):
            strings = True
        stack.extend(children(node))
    return tuple(words), strings


#: What every match of ``names.VAL_WORD`` holds, lower-cased.
_HELDOUT_PARTS = ("val", "dev", "test", "holdout", "heldout")
_PLAIN = re.compile(r"[ -~]*")


def _may_name_heldout(value: str | bytes) -> bool:
    """The source text of a string constant with this value may name held-out data (the
    analysis reads ``is_val_name`` off that text, quotes and escapes included). Where the
    value holds a character an escape may have written (``\t``, ``\x76``, anything not
    printable ASCII), the text cannot be told from it."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not _PLAIN.fullmatch(text):
        return True
    low = text.lower()
    return any(part in low for part in _HELDOUT_PARTS)


def _first_arg(call: ast.Call) -> ast.AST | None:
    """The first argument in source order, positional or keyword, unstarred."""
    found = [a for a in call.args] + [k.value for k in call.keywords]
    if not found:
        return None
    first = min(found, key=lambda a: (a.lineno, a.col_offset))
    return first.value if isinstance(first, ast.Starred) else first


def _surely_trains(call: ast.Call) -> bool:
    """``facts._is_training_call`` by method name alone (it also counts some qualified
    names; missing those only leaves more loops in play)."""
    f = call.func
    if not isinstance(f, ast.Attribute) or f.attr not in TRAIN_METHODS:
        return False
    recv = (dotted(f.value) or "").lower()
    return not (f.attr == "step" and ("sched" in recv or "lr" == recv.rsplit(".", 1)[-1]))


def _may_train(call: ast.Call) -> bool:
    """``facts._is_training_call``, over-approximated: a method named like a step or a
    backward, or an autograd function by its last name."""
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr in TRAIN_METHODS or f.attr in _AUTOGRAD_LAST
    return isinstance(f, ast.Name) and f.id in _AUTOGRAD_LAST


#: Last names of ``names.AUTOGRAD_CALLS``.
_AUTOGRAD_LAST = frozenset(q.rpartition(".")[2] for q in AUTOGRAD_CALLS)

#: Nodes with nothing below them that the gate reads.
_LEAVES = frozenset({ast.Name, ast.Constant, ast.Load, ast.Store, ast.Del, ast.Pass,
                     ast.Break, ast.Continue, ast.Global, ast.Nonlocal, ast.alias})


class _Walker:
    def __init__(self) -> None:
        self.facts = _Facts()

    def run(self, tree: ast.Module) -> _Facts:
        module = _Scope("", (), None, True, False)
        self.facts.source = source_of(tree)
        self.visit(tree, module)
        self.facts.called = {f.rpartition(".")[2] for f in self.facts.callees}
        self.facts.methods = _constructed_methods(self.facts)
        # A parameter handed on counts only to a function of the module (``forwarded``
        # needs ``helper_of``), known once every function has been seen.
        for c in self.facts.candidates:
            if c.hands_on_param:
                c.hands_on_param = c.scope.resolves(c.func)
                if c.hands_on_param:
                    c.scope.flag = True  # maybe a flag handed on to a switched helper
        # ``with`` items named by an import alias (``from torch import no_grad as ng``)
        # are known only once every import has been seen.
        aliases = self.facts.grad_aliases
        for c in self.facts.candidates:
            if not isinstance(c.in_grad_with, bool):
                c.in_grad_with = any(r in aliases for r in c.in_grad_with)
        return self.facts

    @staticmethod
    def grad_item(expr: ast.AST) -> bool | str:
        """True for ``torch.no_grad()`` and kin, else the root name to resolve later."""
        if isinstance(expr, ast.IfExp):
            return False  # chosen at run time: the analysis calls that state unknown
        target = expr.func if isinstance(expr, ast.Call) else expr
        d = dotted(target)
        if d is None:
            return False
        return d.rsplit(".", 1)[-1] in _GRAD_NAMES or d.split(".", 1)[0]

    def wrapped(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> None:
        """``ValidationAnalysis.wrapped_iterables``' bindings: any target of a wrapper's
        call, by last name (a superset of the analysis's scoped, dotted lookup)."""
        value = node.value
        if not isinstance(value, ast.Call):
            return
        func = dotted(value.func)
        if func is None or func.rpartition(".")[2] not in ITER_WRAPPERS:
            return
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            for sub in ast.walk(t):
                d = dotted(sub) if isinstance(sub, (ast.Name, ast.Attribute)) else None
                if d:
                    self.facts.wrapped.setdefault(d.rpartition(".")[2], []).append(value)

    def target(self, expr: ast.AST, scope: _Scope) -> None:
        if isinstance(expr, (ast.Tuple, ast.List)):
            for e in expr.elts:
                self.target(e, scope)
            return
        if isinstance(expr, (ast.Subscript, ast.Starred)):
            expr = expr.value
        d = dotted(expr)
        if d:
            self.facts.targets.add(d)
            scope.targets.add(d)

    def visit(self, root: ast.Module, module: _Scope) -> None:
        """Walk the tree (iteratively: generated code nests deeper than Python recurses).
        Each entry carries its scope, the class whose body holds it directly (its functions
        are methods), and the loops and autograd ``with`` blocks around it in its scope."""
        stack: list[tuple[ast.AST, _Scope, ast.ClassDef | None, tuple[_Loop, ...], Any]] = [
            (root, module, None, (), False)
        ]
        while stack:
            node, scope, cls, loops, grad = stack.pop()
            if type(node) in _LEAVES:
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = tuple(p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs))
                method = cls is not None
                inner = _Scope(
                    node.name, params, params[0] if method and params else None, False,
                    scope.owned or (method and bool(_FRAMEWORK_HOOKS.match(node.name))),
                    scope,
                )
                if cls is None:
                    scope.defs.add(node.name)
                else:
                    inner.cls_methods = frozenset(
                        n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
                # Decorators and defaults belong to the function's scope (as libcst visits).
                stack.extend((child, inner, None, (), False) for child in children(node))
                continue
            if isinstance(node, ast.ClassDef):
                if scope.is_module and cls is None:
                    methods = {n.name for n in node.body
                               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                    bases = [d for b in node.bases if (d := dotted(b))]
                    self.facts.classes.setdefault(node.name, (methods, bases))
                stack.extend((child, scope, node, loops, grad) for child in node.body)
                stack.extend((child, scope, None, loops, grad)
                             for child in (*node.bases, *node.keywords, *node.decorator_list))
                continue
            if isinstance(node, (ast.For, ast.AsyncFor)):
                loops = (*loops, _Loop(*_words(node.iter), first=node.lineno, last=node.iter.lineno))
            elif isinstance(node, ast.While):
                # ``iter_words`` of its test
                loops = (*loops, _Loop(*_words(node.test), first=node.lineno, last=node.test.lineno))
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                it = node.generators[0].iter
                loops = (*loops, _Loop(*_words(it), first=node.lineno, last=it.lineno))
            elif isinstance(node, (ast.With, ast.AsyncWith)) and grad is not True:
                items = [self.grad_item(i.context_expr) for i in node.items]
                if True in items:
                    grad = True
                else:
                    roots = tuple(r for r in items if isinstance(r, str))
                    if roots:
                        grad = (*(grad or ()), *roots)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name.rsplit(".", 1)[-1] in _GRAD_NAMES:
                        self.facts.grad_aliases.add(alias.asname or alias.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                if not (isinstance(node, ast.AnnAssign) and node.value is None):
                    for t in node.targets if isinstance(node, ast.Assign) else (node.target,):
                        self.target(t, scope)
                    self.wrapped(node)
            elif isinstance(node, ast.Call):
                self.call(node, scope, loops, grad)
            elif isinstance(node, ast.If) and _flag_test(node.test, scope.params):
                scope.flag = True
            elif isinstance(node, ast.Return) and node.value is not None:
                scope.returns = True
            stack.extend((child, scope, None, loops, grad) for child in children(node))

    def call(self, node: ast.Call, scope: _Scope, loops: tuple[_Loop, ...], grad: Any) -> None:
        f = node.func
        if _surely_trains(node):
            for loop in loops:
                loop.trains = True
        if _may_train(node):
            self.facts.trains = True
        attr = f.attr if isinstance(f, ast.Attribute) else None
        has_args = bool(node.args or node.keywords)
        if attr == "eval" and not has_args or attr == "train" and has_args:
            self.facts.mode_calls = True
        if attr in _FLOW_METHODS:
            recv = dotted(f.value)  # type: ignore[union-attr]
            if recv:
                self.facts.targets.add(recv)
                scope.targets.add(recv)
        func = dotted(f)
        if func is not None:
            self.facts.callees.add(func)
        if func is None or not has_args or scope.owned:
            return
        if is_eval_function(func.rpartition(".")[2]):
            values = [a.value if isinstance(a, ast.Starred) else a for a in node.args]
            values += [k.value for k in node.keywords]
            names = tuple(d for v in values if (d := dotted(v)))
            if names:
                self.facts.external_evals.append((scope, func, names))
        target = dotted(f.value) if attr == "forward" else func  # type: ignore[union-attr]
        if target is None:
            return
        first = _first_arg(node)
        receiver = dotted(f.value) if attr is not None and attr != "forward" else None  # type: ignore[union-attr]
        args = [*node.args, *(k.value for k in node.keywords)]
        hands_on = any(isinstance(a, ast.Name) and a.id in scope.params for a in args)
        self.facts.candidates.append(
            _Candidate(target, scope, loops, grad, dotted(first) if first is not None else None,
                       receiver, attr if receiver else None, hands_on, node, func)
        )


def _constructed_methods(facts: _Facts) -> set[str]:
    """``ValidationAnalysis._own_method``: a receiver runs a method of its own class only
    when it holds an instance built here (``Net(...)``) of a class of the module defining
    that method, itself or through a base class of the module."""
    out: set[str] = set()
    todo = [name for name in facts.classes if name in facts.callees]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in facts.classes:
            continue
        seen.add(name)
        methods, bases = facts.classes[name]
        out |= methods
        todo.extend(bases)
    return out


def _may_be_model(c: _Candidate, facts: _Facts) -> bool:
    name = c.target
    root, dot, rest = name.partition(".")
    if c.scope.self_name is not None and root == c.scope.self_name:
        if name.count(".") != 1:
            return False
        # ``self.x``: judged by the class's ``<self>.x = ...`` in any of its methods.
        return is_model_name(name) or facts.assigns_attribute(rest)
    if name in c.scope.params and c.scope.name in facts.called:
        return True  # the analysis follows a parameter to what the callers pass
    # Otherwise an assignment the analysis's ``origins`` finds, or the name alone.
    return is_model_name(name) or c.scope.sees(name)


def _flag_test(test: ast.expr, params: tuple[str, ...]) -> bool:
    """``p``, ``not p``, ``p == "x"`` or ``p != "x"`` on a parameter ``p`` (the forms
    ``analysis.validation.flags.flag_test`` accepts, parentheses or not)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test = test.operand
        return isinstance(test, ast.Name) and test.id in params
    if isinstance(test, ast.Compare):
        return (
            len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.NotEq))
            and isinstance(test.left, ast.Name) and test.left.id in params
            and isinstance(test.comparators[0], ast.Constant)
            and isinstance(test.comparators[0].value, str)
        )
    return isinstance(test, ast.Name) and test.id in params


def _switch(scope: _Scope, facts: _Facts) -> bool:
    """``FlagAnalysis.switch`` may find a flag parameter of ``scope``: it tests a
    parameter or hands one on, and something may train (a switch guards training)."""
    return scope.flag and facts.trains


def _switched(scope: _Scope, facts: _Facts) -> bool:
    """``FlagAnalysis.eval_calls`` may find calls of ``scope`` that take its evaluation
    path: it may be a switch, and it has callers here."""
    return _switch(scope, facts) and scope.name in facts.called


def _over_batches(loop: _Loop, facts: _Facts) -> bool:
    """``ValidationAnalysis.over_batches`` may hold: ``FOR_DATA`` occurs on a line the
    loop's keyword may be on (from its first column: a superset), or ``WRAPPED_DATA``
    where a wrapped iterable it iterates is made. Without the source at hand, it may."""
    if loop.batches is None:
        lines = facts.lines()
        loop.batches = lines is None or any(
            FOR_DATA_RE.search(lines[i - 1]) for i in range(loop.first, loop.last + 1)
            if 0 < i <= len(lines)) or any(
                _line_may_match(c, facts, WRAPPED_DATA_RE) for c in _wrapped_calls(loop, facts))
    return loop.batches


def _wrapped_calls(loop: _Loop, facts: _Facts) -> list[ast.Call]:
    """What the names in the loop's header may be bound to by a wrapper's call."""
    return [call for w in loop.words for call in facts.wrapped.get(w.rpartition(".")[2], ())]


def _line_may_match(call: ast.Call, facts: _Facts, pattern: re.Pattern[str]) -> bool:
    """``pattern`` may match on the line where ``call`` starts (from any column: a
    superset of the analysis's from-the-call reading). Without the source at hand, it may."""
    lines = facts.lines()
    if lines is None:
        return True
    return 0 < call.lineno <= len(lines) and pattern.search(lines[call.lineno - 1]) is not None


def _held_out_loop(loop: _Loop, facts: _Facts) -> bool:
    """``ValidationAnalysis.held_out_loop`` may hold: the header's names may name
    held-out data, or those of a wrapped iterable it iterates, on whose line
    ``WRAPPED_VAL`` may match."""
    if loop.may_name_heldout():
        return True
    for call in _wrapped_calls(loop, facts):
        words, strings = _words(call)
        if (strings or any(is_val_name(w) for w in words)) and _line_may_match(call, facts, WRAPPED_VAL_RE):
            return True
    return False


def _signs(c: _Candidate, facts: _Facts) -> int:
    signs = 0
    mode_calls = facts.mode_calls
    # Autograd or the mode switched off, and a flag, are signs only around a loop over
    # batches (``_as_pass``, ``_loop_evidence``, ``_flag_passes``).
    batches = bool(c.loops) and _over_batches(c.loops[-1], facts)
    if batches and _switched(c.scope, facts):
        signs |= FLAG  # maybe the evaluation path of a shared train/eval loop
    held_out = c.first_arg is not None and is_val_name(c.first_arg) and not is_train_name(c.first_arg)
    if c.loops and c.loops[-1].trains:
        # A forward on held-out data inside the training loop: a periodic evaluation.
        return signs | (DATA if held_out else 0)
    if c.loops:
        if any(_held_out_loop(loop, facts) for loop in c.loops if not loop.trains):
            signs |= DATA
        if c.in_grad_with and batches:
            signs |= NO_GRAD
        elif c.in_grad_with and facts.trains:
            signs |= GUARDED  # over what a training loop iterates: something trains
        if mode_calls and batches:
            signs |= EVAL_MODE
    elif held_out:
        signs |= DATA
    inputs = [p for p in c.scope.params if p != c.scope.self_name]
    if not c.scope.is_module and is_eval_function(c.scope.name) and (
            inputs or c.loops or (mode_calls and facts.trains)):
        signs |= FUNCTION  # the last: a full-batch forward after ``model.eval()``
    return signs


_last: tuple[ast.Module | None, _Facts | None] = (None, None)


def _facts(tree: ast.Module) -> _Facts:
    """One walk per tree for the three rules (the prefilter hands each gate the same tree;
    the reference held here keeps ``is`` meaningful)."""
    global _last
    if _last[0] is not tree:
        _last = (tree, _Walker().run(tree))
    return _last[1]  # type: ignore[return-value]


def _helper_signs(facts: _Facts) -> dict[str, int]:
    """Per function name, the signs of the loops that call a function of that name with
    arguments: a forward in a helper (``self._forward_pass(x)``) is checked as part of
    the validation loop that calls it (``_helper_pass``, which reads the loop's data,
    function name, no_grad and mode, not a flag), or as the evaluation path of a switched
    batch function the loop hands its flag on to (``_forwarded_passes``: FLAG)."""
    found: dict[str, int] = {}
    for d in facts.candidates:
        if d.loops:
            name = d.target.rpartition(".")[2]
            signs = _signs(d, facts) & ~(FLAG | GUARDED)
            if d.hands_on_param and _switched(d.scope, facts) and _over_batches(d.loops[-1], facts):
                signs |= FLAG
            found[name] = found.get(name, 0) | signs
    return found


def _may_flow(call: ast.Call | None, tree: ast.Module) -> bool:
    """``_returns_output`` may hold: the call's value may reach a ``return`` of its
    function, being in one or in an assignment (``CallRec.flow``: also an ``append``-like
    call's argument)."""
    up = parents(tree)
    node: ast.AST | None = call
    while node is not None and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
        if isinstance(node, (ast.Return, ast.Assign, ast.AnnAssign, ast.AugAssign)):
            return True
        if (isinstance(node, ast.Call) and node is not call and isinstance(node.func, ast.Attribute)
                and node.func.attr in _FLOW_METHODS):
            return True
        node = up.get(node)
    return False


def _may_pass(tree: ast.Module, wanted: int) -> bool:
    facts = _facts(tree)
    helpers: dict[str, int] | None = None
    for c in facts.candidates:
        signs = _signs(c, facts)
        if not c.loops and not c.scope.is_module and not signs & wanted:
            if helpers is None:
                helpers = _helper_signs(facts)
            handed = helpers.get(c.scope.name, 0)
            # A flag handed on matters only to a function that tests a parameter; the
            # loop's other signs only when the forward's output may be returned.
            if not _switch(c.scope, facts):
                handed &= ~FLAG
            if handed & ~FLAG and not (c.scope.returns and _may_flow(c.node, tree)):
                handed &= FLAG
            signs |= handed
        if not signs & wanted:
            continue
        if _may_be_model(c, facts):
            return True
        if c.method in facts.methods and _may_be_model(replace(c, target=c.receiver), facts):
            return True  # ``model.predict(x)``: a method of the model's own class
    return False


def ml002_may_flag(tree: ast.Module) -> bool:
    return _may_pass(tree, ML002_SIGNS)


def ml003_may_flag(tree: ast.Module) -> bool:
    return _may_pass(tree, ML003_SIGNS)


def _may_be_training_data(name: str, scope: _Scope, facts: _Facts) -> bool:
    """``DataAnalysis.classify`` can call ``name`` training data: by its name, by what an
    assignment the analysis finds there puts in it, or as data a training loop iterates."""
    if facts.trains or is_train_name(name):
        return True
    root, dot, rest = name.partition(".")
    if scope.self_name is not None and root == scope.self_name and dot:
        return facts.assigns_attribute(rest)
    return scope.sees(name) or (dot != "" and scope.sees(root))


def ml007_may_flag(tree: ast.Module) -> bool:
    facts = _facts(tree)
    for scope, func, names in facts.external_evals:
        if scope.resolves(func):
            continue  # a function of this module: its passes are looked into instead
        if any(_may_be_training_data(n, scope, facts) for n in names):
            return True
    return _may_pass(tree, ML007_SIGNS)
