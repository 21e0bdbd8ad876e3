"""Gate of ML005 (double-softmax) over Python's ``ast``.

The rule reports a cross-entropy call whose input may hold a softmax output. This gate
asks the same question with the rule's own flow kinds, each made coarser so that every
answer the rule can give "yes" to is a "yes" here too:

* names: every ``n = v`` / ``n: T = v`` / ``(n := v)`` anywhere in the module counts for
  every use of ``n`` (the rule picks the reaching definitions of one scope);
* tuple unpacking ``a, b = v`` (no starred target), tuple positions, ``x[i]``;
* parameters: the defaults, and the arguments of every call ``f(...)`` by plain name;
* ``self.attr``: every ``self.attr = v`` in the methods of the enclosing class;
* names resolved through every import of the module (``import torch.nn.functional as F``,
  ``from torch.nn import CrossEntropyLoss as CE``), ignoring shadowing; where the rule
  acts differently on imported and local receivers (``x.softmax()``, ``x.view()``), both;
* calling a module: ``nn.Softmax``, ``nn.Sequential`` ending in one (also through an
  ``OrderedDict``), a same-module class whose ``forward`` returns a softmax on every
  ``return``, ``self(...)``, passthrough methods (``.to``, ``.view``...).

Depth limits are dropped; recursion through cycles (``x = x.view(...)``) is solved as a
least fixed point, so the answer is never below the rule's. What it turns away:
transformers-style modules whose softmax sits in attention while the loss is fed logits.

Stdlib only: the parent process runs gates without libcst.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from typing import Callable, Hashable

from mllint.gates.resolve import child_fields, children

# Defined here (stdlib only) and imported by the rule and ``analysis.flow``, so the gate
# and the libcst analysis recognise the same names.
SOFTMAX_FUNCTIONS = frozenset(
    {"torch.nn.functional.softmax", "torch.softmax", "torch.special.softmax", "torch.Tensor.softmax"}
)
SOFTMAX_MODULES = frozenset({"torch.nn.Softmax", "torch.nn.modules.activation.Softmax"})
SEQUENTIAL = frozenset({"torch.nn.Sequential", "torch.nn.modules.container.Sequential"})
CE_FUNCTIONS = frozenset({"torch.nn.functional.cross_entropy"})
CE_MODULES = frozenset({"torch.nn.CrossEntropyLoss", "torch.nn.modules.loss.CrossEntropyLoss"})
ORDERED_DICT = frozenset({"collections.OrderedDict"})
PASSTHROUGH_METHODS = frozenset(
    {
        "to", "cuda", "cpu", "float", "double", "half", "bfloat16", "type", "contiguous",
        "squeeze", "unsqueeze", "view", "reshape", "view_as", "reshape_as", "flatten",
        "permute", "transpose", "clone", "train", "requires_grad_", "resize", "resize_",
        "resize_as", "resize_as_", "squeeze_", "unsqueeze_",
    }
)
#: Functions that only reshape their first argument (``torch.squeeze(probs, 0)``).
SHAPE_FUNCTIONS = frozenset(
    {"torch.squeeze", "torch.unsqueeze", "torch.reshape", "torch.flatten", "torch.permute",
     "torch.transpose"}
)
#: Wrappers whose call runs the wrapped module's forward (``DistributedDataParallel(model)``).
MODULE_WRAPPERS = frozenset(
    {
        "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
        "torch.nn.parallel.data_parallel.DataParallel",
        "torch.nn.parallel.DistributedDataParallel",
        "torch.nn.parallel.distributed.DistributedDataParallel", "torch.compile",
    }
)

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SEQUENCES = (ast.Tuple, ast.List)


def may_flag(tree: ast.Module) -> bool:
    """False only when ML005 cannot report anything in ``tree``."""
    return bool(_suspects(tree, first_only=True))


def suspect_lines(tree: ast.Module) -> set[int]:
    """Lines of every loss call the rule could report (a superset of its findings' lines);
    for tests and for looking into what the gate admits."""
    return {call.lineno for call in _suspects(tree, first_only=False)}


def _suspects(tree: ast.Module, first_only: bool) -> list[ast.Call]:
    facts = _Facts(tree)
    sites = [(call, x) for call in facts.calls if (x := facts.loss_input(call)) is not None]
    if not sites:
        return []
    solver = _Solver(facts)
    try:
        while True:
            before = len(solver.trues)
            solver.start_pass()
            found = []
            for call, x in sites:
                if solver.line(x, None):
                    if first_only:
                        return [call]
                    found.append(call)
            # A cycle was cut short by assuming "no"; if that pass proved anything new,
            # the assumption may have been wrong: run again from what is now known.
            if not solver.stale or len(solver.trues) == before:
                return found
    except RecursionError:
        return [call for call, _ in sites]


# -- facts: one walk over the module ------------------------------------------------------


class _Facts:
    """What the walk records: imports, assignments, parameters, calls, classes, and
    which ``self`` names / ``self.attr`` nodes belong to which class."""

    def __init__(self, tree: ast.Module) -> None:
        self.imports: dict[str, set[str]] = defaultdict(set)
        self.assigns: dict[str, list[ast.expr]] = defaultdict(list)
        self.unpacks: dict[str, list[tuple[ast.expr, int]]] = defaultdict(list)
        #: name -> (enclosing def's name or None, positional index or None, default)
        self.params: dict[str, list[tuple[str | None, int | None, ast.expr | None]]] = defaultdict(list)
        self.calls_by_name: dict[str, list[ast.Call]] = defaultdict(list)
        self.classes: dict[str, list[ast.ClassDef]] = defaultdict(list)
        self.class_attrs: dict[tuple[ast.ClassDef, str], list[ast.expr]] = defaultdict(list)
        self.self_names: dict[ast.Name, ast.ClassDef] = {}
        self.self_attrs: dict[ast.Attribute, ast.ClassDef] = {}
        self.calls: list[ast.Call] = []
        self._values: dict[str, list[ast.expr]] = {}
        self._ce_names: dict[Hashable, bool] = {}
        self._walk(tree)

    def _walk(self, tree: ast.Module) -> None:
        # (node, nearest class, `self` of the nearest def if a method, nearest def's name,
        #  class whose method body this is directly in, class of a def directly in its body)
        stack: list[tuple] = [(tree, None, None, None, None, None)]
        pop, push = stack.pop, stack.append
        Name, Attribute, Call, AST = ast.Name, ast.Attribute, ast.Call, ast.AST
        while stack:
            node, cls, me, fname, owner, method_of = pop()
            kind = type(node)
            if kind is Name:
                if me is not None and node.id == me:
                    self.self_names[node] = cls
                continue
            if kind is Attribute:
                value = node.value
                if me is not None and type(value) is Name and value.id == me:
                    self.self_attrs[node] = cls
            elif kind is Call:
                if type(node.func) is Name:
                    self.calls_by_name[node.func.id].append(node)
                if node.args or node.keywords:
                    self.calls.append(node)
            elif kind is ast.Assign:
                for target in node.targets:
                    self._target(target, node.value, owner, me, unpack=True)
            elif kind is ast.AnnAssign:
                if node.value is not None:
                    self._target(node.target, node.value, owner, me, unpack=False)
            elif kind is ast.NamedExpr:
                self.assigns[node.target.id].append(node.value)
            elif kind is ast.ClassDef:
                self.classes[node.name].append(node)
                for child in children(node):
                    # A def among a class's children is in its body: a method.
                    push((child, node, me, fname, None, node if isinstance(child, _FUNCTIONS) else None))
                continue
            elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
                self._params(node.args, node.name, positional=True)
                first = [*node.args.posonlyargs, *node.args.args]
                me = first[0].arg if method_of is not None and first else None
                owner = method_of if me is not None else None
                for child in children(node):
                    push((child, cls, me, node.name, owner, None))
                continue
            elif kind is ast.Lambda:
                self._params(node.args, fname, positional=False)
            elif kind is ast.Import:
                for alias in node.names:
                    if alias.asname:
                        self.imports[alias.asname].add(alias.name)
                    else:
                        head = alias.name.split(".", 1)[0]
                        self.imports[head].add(head)
                continue
            elif kind is ast.ImportFrom:
                base = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name != "*":
                        full = f"{base}.{alias.name}" if node.module else base + alias.name
                        self.imports[alias.asname or alias.name].add(full)
                continue
            elif kind is ast.Constant:
                continue
            for field in child_fields(kind):
                value = getattr(node, field)
                if type(value) is list:
                    for child in value:
                        if isinstance(child, AST):
                            push((child, cls, me, fname, owner, None))
                elif isinstance(value, AST):
                    push((value, cls, me, fname, owner, None))

    def _target(self, target: ast.expr, value: ast.expr, owner: ast.ClassDef | None,
                me: str | None, unpack: bool) -> None:
        kind = type(target)
        if kind is ast.Name:
            self.assigns[target.id].append(value)
        elif kind is ast.Attribute:
            # ``self.attr = v`` directly in a method body (the rule's class attributes).
            if owner is not None and type(target.value) is ast.Name and target.value.id == me:
                self.class_attrs[(owner, target.attr)].append(value)
        elif unpack and kind in _SEQUENCES:
            if not any(type(e) is ast.Starred for e in target.elts):
                for i, e in enumerate(target.elts):
                    if type(e) is ast.Name:
                        self.unpacks[e.id].append((value, i))

    def _params(self, args: ast.arguments, fname: str | None, positional: bool) -> None:
        ordered = [*args.posonlyargs, *args.args]
        first_default = len(ordered) - len(args.defaults)
        for i, p in enumerate(ordered):
            default = args.defaults[i - first_default] if i >= first_default else None
            self.params[p.arg].append((fname, i if positional else None, default))
        for p, default in zip(args.kwonlyargs, args.kw_defaults):
            self.params[p.arg].append((fname, None, default))
        for p in (args.vararg, args.kwarg):
            if p is not None:
                self.params[p.arg].append((fname, None, None))

    # -- names ------------------------------------------------------------------------

    def qualified(self, expr: ast.expr) -> set[str]:
        """Imported qualified names ``expr`` may denote, like libcst's (whose dotted name
        of an expression goes through calls and subscripts: ``F.softmax(x).view``)."""
        parts: list[str] = []
        while True:
            kind = type(expr)
            if kind is ast.Attribute:
                parts.append(expr.attr)
                expr = expr.value
            elif kind is ast.Call:
                expr = expr.func
            elif kind is ast.Subscript:
                expr = expr.value
            elif kind is ast.Name:
                break
            else:
                return set()
        found = self.imports.get(expr.id)
        if not found:
            return set()
        rest = ".".join(reversed(parts))
        return {f"{q}.{rest}" if rest else q for q in found}

    def values(self, name: str) -> list[ast.expr]:
        """Everything the module may give ``name``: assigned values, and for parameters
        their defaults and what calls of their function by name pass."""
        cached = self._values.get(name)
        if cached is not None:
            return cached
        out = list(self.assigns.get(name, ()))
        for fname, index, default in self.params.get(name, ()):
            if default is not None:
                out.append(default)
            if fname is None:
                continue
            for call in self.calls_by_name.get(fname, ()):
                arg = _bind(call, name, index)
                if arg is not None:
                    out.append(arg)
        self._values[name] = out
        return out

    def attr_values(self, node: ast.Attribute) -> list[ast.expr]:
        """What ``self.attr`` may hold (nothing for other attributes, as in the rule)."""
        cls = self.self_attrs.get(node)
        if cls is None:
            return []
        return self.class_attrs.get((cls, node.attr), [])

    # -- loss calls -------------------------------------------------------------------

    def loss_input(self, call: ast.Call) -> ast.expr | None:
        """The input of ``call`` when it may be a cross-entropy call."""
        func = call.func
        if not (self.qualified(func) & CE_FUNCTIONS or self._ce_module(func)):
            return None
        for kw in call.keywords:
            if kw.arg == "input":
                return kw.value
        positional = [a for a in call.args if type(a) is not ast.Starred]
        return positional[0] if positional else None

    def _ce_module(self, func: ast.expr) -> bool:
        """``func`` may be (or name) an ``nn.CrossEntropyLoss`` instance."""
        func = _strip_passthrough(func)
        kind = type(func)
        if kind is ast.Call:
            return bool(self.qualified(func.func) & CE_MODULES)
        if kind is ast.Name:
            key: Hashable = func.id
        elif kind is ast.Attribute and func in self.self_attrs:
            key = (self.self_attrs[func], func.attr)
        else:
            return False
        cached = self._ce_names.get(key)
        if cached is None:
            cached = self._ce_names[key] = self._reaches_ce([func])
        return cached

    def _reaches_ce(self, frontier: list[ast.expr]) -> bool:
        """Whether following names and ``self.attr`` (as ``Flow.resolve`` does, without
        its depth limit) reaches a ``CrossEntropyLoss(...)`` call."""
        seen: set[Hashable] = set()
        while frontier:
            expr = _strip_passthrough(frontier.pop())
            kind = type(expr)
            if kind is ast.Name:
                if expr.id not in seen:
                    seen.add(expr.id)
                    frontier.extend(self.values(expr.id))
            elif kind is ast.Attribute:
                if expr in self.self_attrs:
                    key = (self.self_attrs[expr], expr.attr)
                    if key not in seen:
                        seen.add(key)
                        frontier.extend(self.attr_values(expr))
            elif kind is ast.Call and self.qualified(expr.func) & CE_MODULES:
                return True
        return False


def _bind(call: ast.Call, name: str, index: int | None) -> ast.expr | None:
    """The argument of ``call`` for parameter ``name`` at position ``index`` (a superset
    of the rule's ``_bind``: a keyword match counts even beside ``*args``)."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if index is None or index >= len(call.args):
        return None
    if any(type(a) is ast.Starred for a in call.args) or any(kw.arg is None for kw in call.keywords):
        return None
    return call.args[index]


def _shaped(call: ast.Call) -> list[ast.expr]:
    """What ``torch.squeeze(...)`` and kin reshape: the first argument, or ``input=``."""
    out = [kw.value for kw in call.keywords if kw.arg == "input"]
    if call.args and type(call.args[0]) is not ast.Starred:
        out.append(call.args[0])
    return out


def _wrapped(call: ast.Call) -> list[ast.expr]:
    """The module a wrapper is given: its first positional argument, or ``module=``/``model=``."""
    out = [kw.value for kw in call.keywords if kw.arg in ("module", "model")]
    if call.args and type(call.args[0]) is not ast.Starred:
        out.append(call.args[0])
    return out


def _strip_passthrough(expr: ast.expr) -> ast.expr:
    """``nn.CrossEntropyLoss()`` for ``nn.CrossEntropyLoss().to(device).cuda()``."""
    while type(expr) is ast.Call and type(expr.func) is ast.Attribute and (
        expr.func.attr in PASSTHROUGH_METHODS
    ):
        expr = expr.func.value
    return expr


def _int_index(sub: ast.Subscript) -> int | None:
    """``i`` in ``x[i]`` for a literal non-negative integer."""
    s = sub.slice
    if type(s) is ast.Constant and type(s.value) is int and s.value >= 0:
        return s.value
    return None


def _returns(func: ast.AST) -> list[ast.Return]:
    """The ``return`` statements of ``func`` itself (not of nested functions)."""
    out: list[ast.Return] = []
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return out


# -- the question: may this expression hold a softmax output? ------------------------------


class _Solver:
    """The rule's ``_softmax_line`` / ``_softmax_callable`` / ``_forward_softmax`` as
    monotone boolean questions, memoised. A question met again while being answered
    (a cycle) is assumed "no" for that pass; ``may_flag`` re-runs passes until the set
    of proven answers stops growing, which gives the least fixed point."""

    def __init__(self, facts: _Facts) -> None:
        self.f = facts
        self.trues: set[Hashable] = set()
        self.cache: dict[Hashable, bool] = {}
        self.active: set[Hashable] = set()
        self.stale = False
        self._returns: dict[ast.ClassDef, list[ast.Return] | None] = {}

    def start_pass(self) -> None:
        self.cache.clear()
        self.stale = False

    def _ask(self, key: Hashable, answer: Callable[[], bool]) -> bool:
        if key in self.trues:
            return True
        known = self.cache.get(key)
        if known is not None:
            return known
        if key in self.active:
            self.stale = True
            return False
        self.active.add(key)
        try:
            result = answer()
        finally:
            self.active.discard(key)
        if result:
            self.trues.add(key)
        self.cache[key] = result
        return result

    # ``line``: the rule's ``_softmax_line`` is not None.

    def line(self, expr: ast.expr, index: int | None) -> bool:
        kind = type(expr)
        if kind is ast.Name:
            return self._ask(("line", expr.id, index), lambda: self._name_line(expr.id, index))
        if kind is ast.Attribute:
            cls = self.f.self_attrs.get(expr)
            if cls is None:
                return False
            return self._ask(("line", cls, expr.attr, index),
                             lambda: any(self.line(v, index) for v in self.f.attr_values(expr)))
        return self._ask(("line", expr, index), lambda: self._expr_line(expr, index))

    def _name_line(self, name: str, index: int | None) -> bool:
        if any(self.line(v, index) for v in self.f.values(name)):
            return True
        if index is None:
            return any(self.line(v, pos) for v, pos in self.f.unpacks.get(name, ()))
        return False

    def _expr_line(self, expr: ast.expr, index: int | None) -> bool:
        kind = type(expr)
        if kind in _SEQUENCES:
            elts = expr.elts
            if index is None or index >= len(elts):
                return False
            if any(type(e) is ast.Starred for e in elts[: index + 1]):
                return False
            return self.line(elts[index], None)
        if kind is ast.Subscript:
            if index is not None:
                return False
            position = _int_index(expr)
            # A tuple's element, or part of a softmax tensor (``probs[:, :k]``).
            return (position is not None and self.line(expr.value, position)) or self.line(
                expr.value, None)
        if kind is not ast.Call:
            return False
        func = expr.func
        if index is None:
            names = self.f.qualified(func)
            if names & SOFTMAX_FUNCTIONS:
                return True
            if names & SHAPE_FUNCTIONS and any(self.line(a, None) for a in _shaped(expr)):
                return True
            if type(func) is ast.Attribute:
                # The rule takes these only when the receiver is not imported; whether it
                # is cannot always be told here, so both readings count.
                if func.attr == "softmax":
                    return True
                if func.attr in PASSTHROUGH_METHODS and self.line(func.value, None):
                    return True
        return self.callable(func, index)

    # ``callable``: the rule's ``_softmax_callable`` is not None.

    def callable(self, expr: ast.expr, index: int | None) -> bool:
        kind = type(expr)
        if kind is ast.Name:
            cls = self.f.self_names.get(expr)
            if cls is not None:  # ``self(x)``: this class's forward
                return self.forward(cls, index)
            return self._ask(("call", expr.id, index), lambda: self._name_callable(expr.id, index))
        if kind is ast.Attribute:
            cls = self.f.self_attrs.get(expr)
            if cls is None:
                return False
            return self._ask(("call", cls, expr.attr, index),
                             lambda: any(self.callable(v, index) for v in self.f.attr_values(expr)))
        if kind is not ast.Call:
            return False
        return self._ask(("call", expr, index), lambda: self._call_callable(expr, index))

    def _name_callable(self, name: str, index: int | None) -> bool:
        if any(self.callable(v, index) for v in self.f.values(name)):
            return True
        # ``clf, disc = Classifier(), Discriminator()``: the literal's element.
        for value, pos in self.f.unpacks.get(name, ()):
            if type(value) in _SEQUENCES and pos < len(value.elts):
                if not any(type(e) is ast.Starred for e in value.elts):
                    if self.callable(value.elts[pos], index):
                        return True
        return False

    def _call_callable(self, expr: ast.Call, index: int | None) -> bool:
        names = self.f.qualified(expr.func)
        if names & SOFTMAX_MODULES and index is None:
            return True
        if names & SEQUENTIAL and any(self.callable(last, index) for last in self._last_layers(expr)):
            return True
        func = expr.func
        if type(func) is ast.Attribute and func.attr in PASSTHROUGH_METHODS:
            if self.callable(func.value, index):
                return True
        if names & MODULE_WRAPPERS and any(self.callable(m, index) for m in _wrapped(expr)):
            return True
        if type(func) is ast.Name:
            return any(self.forward(cls, index) for cls in self.f.classes.get(func.id, ()))
        return False

    def _last_layers(self, sequential: ast.Call) -> list[ast.expr]:
        """The last layer given to ``nn.Sequential(...)``; with one argument that may be an
        ``OrderedDict([...])``, also its last entry's module."""
        args = sequential.args
        if not args or type(args[-1]) is ast.Starred:
            return []
        last = args[-1]
        out = [last]
        if len(args) == 1 and type(last) is ast.Call and self.f.qualified(last.func) & ORDERED_DICT:
            first = last.args[0] if last.args else (last.keywords[0].value if last.keywords else None)
            if type(first) is ast.Starred:
                first = first.value
            if type(first) in _SEQUENCES and first.elts:
                entry = first.elts[-1]
                if type(entry) is ast.Tuple and len(entry.elts) == 2:
                    out.append(entry.elts[1])
        return out

    # ``forward``: the rule's ``_forward_softmax`` is not None.

    def forward(self, cls: ast.ClassDef, index: int | None) -> bool:
        return self._ask(("forward", cls, index), lambda: self._forward(cls, index))

    def _forward(self, cls: ast.ClassDef, index: int | None) -> bool:
        if cls not in self._returns:
            method = next((s for s in cls.body if isinstance(s, _FUNCTIONS) and s.name == "forward"), None)
            self._returns[cls] = None if method is None else _returns(method)
        returns = self._returns[cls]
        if not returns:
            return False
        return all(r.value is not None and self.line(r.value, index) for r in returns)
