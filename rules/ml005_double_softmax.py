"""ML005 double-softmax: probabilities passed to a loss that applies log-softmax itself."""

from __future__ import annotations

import ast
from typing import Any

import libcst as cst

from mllint.analysis.pyast.flow import Flow
from mllint.analysis.pyast.scopes import default_of, positional_params
from mllint.analysis.syntax import keyword_arg, positional_arg
from mllint.gates.resolve import of_type
from mllint.rule import AstRule, Invalid, Valid
from mllint.types import Verdict
from mllint.verify.probe import Probe

#: What the rule recognises, by the qualified names the module's imports give.
SOFTMAX_FUNCTIONS = frozenset(
    {"torch.nn.functional.softmax", "torch.softmax", "torch.special.softmax", "torch.Tensor.softmax"}
)
SOFTMAX_MODULES = frozenset({"torch.nn.Softmax", "torch.nn.modules.activation.Softmax"})
SOFTMAX_ANY = SOFTMAX_FUNCTIONS | SOFTMAX_MODULES
SEQUENTIAL = frozenset({"torch.nn.Sequential", "torch.nn.modules.container.Sequential"})
CE_FUNCTIONS = frozenset({"torch.nn.functional.cross_entropy"})
CE_MODULES = frozenset({"torch.nn.CrossEntropyLoss", "torch.nn.modules.loss.CrossEntropyLoss"})
ORDERED_DICT = frozenset({"collections.OrderedDict"})
#: Methods that return (a view or copy of) the tensor or module they are called on, so
#: what the receiver holds passes through them (``model.to(device)``, ``probs.view(...)``).
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

# How many assignments/calls deep a value is followed; real code rarely needs more.
_DEPTH = 8


class DoubleSoftmax(AstRule):
    """
    ## What it does
    Flags a call of `nn.CrossEntropyLoss` (also moved with `.to(device)`/`.cuda()`) or
    `F.cross_entropy` whose input (the first argument) is already a probability
    distribution: the output of `F.softmax`, `torch.softmax`, `x.softmax(dim)`,
    `nn.Softmax()(x)`, of a model whose `nn.Sequential` ends with `nn.Softmax`, or of a
    model whose `forward` returns a softmax (also through a `self.<layer>` Sequential
    ending in `nn.Softmax`, and through `DistributedDataParallel`/`DataParallel`/
    `torch.compile`); reshaping (`.view`, `.reshape`, `.squeeze`, indexing) keeps it a
    distribution. Values are
    followed through local assignments, `self.` attributes, the arguments of same-module
    functions and tuple positions: `validity, label = discriminator(x)` feeds `label`,
    element 1 of every tuple the model's `forward` returns.

    ## Why is this bad?
    Cross-entropy applies `log_softmax` to its input itself, so it expects raw logits.
    Fed probabilities, it computes `log_softmax(softmax(z))`: every input now lies in
    [0, 1], so the loss can never go much below `log(C) - 1`, its gradients are squashed
    and the model learns slowly or stalls, without any error.

    ## Known problems
    Only models defined in the same file are looked into; a softmax applied inside a model
    imported from elsewhere is not seen. Soft targets (probabilities as the *target*) are
    fine and never flagged.

    ## How --verify confirms it
    Wraps `torch.nn.functional.cross_entropy` (which `nn.CrossEntropyLoss` calls) and,
    when it is called from the flagged line, checks that its input is non-negative with
    rows summing to 1 along the class dimension (within 1e-4). The evidence gives the
    smallest value, the largest deviation of a row sum from 1 and the batch shape.
    """

    code = "ML005"
    name = "double-softmax"
    summary = "Softmax probabilities passed to cross-entropy, which applies log-softmax itself"
    hint = "Pass the logits (the values before softmax) to the loss; keep softmax for metrics."
    # Literals (``oftmax`` for ``[Ss]oftmax``) and alternatives: ``re`` scans for them fast.
    REQUIRES = ("oftmax", ("cross_entropy", "CrossEntropyLoss"))
    PROBE = "mllint.rules.ml005_double_softmax:DoubleSoftmaxProbe"

    INVALID = [
        Invalid(
            """
            import torch.nn.functional as F

            def train_step(model, optimizer, x, y):
                logits = model(x)
                probs = F.softmax(logits, dim=1)
                loss = F.cross_entropy(probs, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            """,
            lines=(6,),
        ),
        Invalid(
            """
            from torch import nn
            from torch.nn import CrossEntropyLoss as CE

            model = nn.Sequential(nn.Linear(8, 3), nn.Softmax(dim=1)).to("cpu")
            criterion = CE()

            def step(x, y):
                loss = criterion(model(x), y)
                return loss
            """,
            lines=(8,),
        ),
        Invalid(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(8, 3)
                    self.criterion = nn.CrossEntropyLoss()

                def forward(self, x):
                    return torch.softmax(self.fc(x), dim=-1)

                def loss(self, x, y):
                    out = self(x)
                    return self.criterion(out, y)

            def fit(net, x, y):
                return nn.CrossEntropyLoss()(net(x).softmax(1), y)
            """,
            lines=(15, 18),
        ),
        Invalid(  # forward returns a self.<layer> Sequential ending in Softmax; tuple outputs
            """
            import torch
            import torch.nn as nn

            class Classifier(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.output_layer = nn.Sequential(nn.Linear(64, 10), nn.Softmax())

                def forward(self, img):
                    label = self.output_layer(img.view(img.size(0), -1))
                    return label

            class Discriminator(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.adv_layer = nn.Sequential(nn.Linear(64, 1), nn.Sigmoid())
                    self.aux_layer = nn.Sequential(nn.Linear(64, 10), nn.Softmax())

                def forward(self, img):
                    out = img.view(img.shape[0], -1)
                    return self.adv_layer(out), self.aux_layer(out)

            classifier, discriminator = Classifier(), Discriminator()
            task_loss = torch.nn.CrossEntropyLoss()
            for imgs, labels in loader:
                l1 = task_loss(classifier(imgs), labels)
                validity, pred_label = discriminator(imgs)
                l2 = task_loss(pred_label, labels)
                l3 = task_loss(discriminator(imgs)[1], labels)
            """,
            lines=(26, 28, 29),
        ),
        Invalid(  # the loss moved to the GPU, reshaped probabilities, a DDP-wrapped model
            """
            import torch
            import torch.nn as nn
            import torch.nn.functional as F
            from torch.nn.parallel import DistributedDataParallel as DDP

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(16, 4)

                def forward(self, x):
                    return F.softmax(self.fc(x), dim=-1)

            criterion = nn.CrossEntropyLoss().to("cuda")
            model = DDP(Net().cuda(), device_ids=[0])
            for x, y in loader:
                scores = model(x)
                loss = criterion(scores, y)
                seq_logits = torch.randn(8, 5, 4)
                probs = F.softmax(seq_logits, dim=-1).view(-1, 4)
                loss = loss + criterion(probs, y.view(-1))
                loss = loss + F.cross_entropy(probs[:, :3], y)
            """,
            lines=(18, 21, 22),
        ),
    ]
    VALID = [
        Valid(
            """
            import torch.nn.functional as F

            def train_step(model, optimizer, x, y):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probs = F.softmax(logits, dim=1)  # metrics only
                return loss.item(), probs.argmax(1)
            """
        ),
        Valid(
            """
            import torch.nn as nn
            import torch.nn.functional as F

            model = nn.Sequential(nn.Linear(8, 3), nn.LogSoftmax(dim=1))
            nll = nn.NLLLoss()

            def step(x, y, teacher_logits, T=2.0):
                out = model(x)
                soft = F.softmax(teacher_logits / T, dim=1)
                kd = F.kl_div(F.log_softmax(out / T, dim=1), soft, reduction="batchmean")
                return nll(out, y) + kd
            """
        ),
        Valid(
            """
            import torch.nn.functional as F

            def mixup_loss(logits, y_a, y_b, lam):
                target = lam * F.softmax(y_a, 1) + (1 - lam) * y_b.softmax(1)
                return F.cross_entropy(logits, target)
            """
        ),
        Valid(
            """
            import torch
            from torch import nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def forward(self, x, probs=False):
                    z = self.fc(x)
                    if probs:
                        return torch.softmax(z, 1)
                    return z

            net = Net()

            def step(x, y):
                return F.cross_entropy(net(x), y)
            """
        ),
        Valid(  # the softmax sits at another tuple position than the one fed to the loss
            """
            import torch.nn as nn
            import torch.nn.functional as F

            class Heads(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(8, 3)

                def forward(self, x):
                    logits = self.fc(x)
                    return F.softmax(logits, dim=1), logits

            heads = Heads()
            ce = nn.CrossEntropyLoss()
            for x, y in loader:
                probs, logits = heads(x)
                loss = ce(logits, y) + F.cross_entropy(heads(x)[1], y)
                first, *rest = heads(x)
                loss = loss + ce(rest[0], y)
            """
        ),
        Valid(  # a wrapped model returning logits; reshaped probabilities used as targets
            """
            import torch.nn as nn
            import torch.nn.functional as F

            model = nn.DataParallel(nn.Sequential(nn.Linear(16, 4))).cuda()
            criterion = nn.CrossEntropyLoss().cuda()
            for x, y, teacher in loader:
                logits = model(x)
                soft = F.softmax(teacher, dim=-1).view(-1, 4)
                loss = criterion(logits.view(-1, 4), soft)
                confidence = F.softmax(logits, dim=-1).max(1)[0]
            """
        ),
    ]

    def check(self, tree: ast.Module) -> None:
        calls = of_type(tree, ast.Call)
        if not calls:
            return
        self.flow = Flow(tree, self.context.source)
        self._forward_cache: dict[tuple[ast.ClassDef, int | None], int | None] = {}
        self._attr_cache: dict[tuple[ast.AST | None, str, int], bool] = {}
        self._calls = calls
        self._edge_list: list[tuple[ast.expr, str]] | None = None
        self._source_map: dict[str, list[ast.expr]] | None = None
        self._dead: set[str] = set()  # keys from which no softmax can flow
        holders = self._holders(calls)
        loss_calls = []
        for call in calls:
            if not (call.args or call.keywords):
                continue
            ce_function = bool(self.flow.names_one_of(call.func, CE_FUNCTIONS))
            if not (ce_function or (holders is not None and _may_hold(call.func, holders))):
                continue
            value = _argument(call, 0, "input")
            # Both what the callee holds and what its input holds are followed through
            # the module's scopes, whose placing is most of this rule's cost; an input no
            # softmax can reach by any name (``_may_carry_softmax``) needs neither.
            if value is None or not self._may_carry_softmax(value):
                continue
            if ce_function or self._is_cross_entropy_module(call.func):
                loss_calls.append((call, value))
        loss_calls.sort(key=lambda c: (c[0].lineno, c[0].col_offset))
        for call, value in loss_calls:
            line = self._softmax_line(value, _DEPTH)
            if line is None:
                continue
            shown = self.flow.source_of(value)
            self.report(
                call,
                f"`{shown}` is already a probability distribution (softmax at line {line}), "
                f"but `{self.flow.source_of(call.func)}` applies log-softmax to its input "
                "itself: the loss sees softmax twice, its gradients are squashed and "
                "training stalls without an error. Pass the logits (the values before the "
                "softmax) instead.",
                data={"probs": shown, "softmax_line": line},
            )

    def _holders(self, calls: list[ast.Call]) -> set[str] | None:
        """The names (``criterion``) and attributes (``.criterion``) that may hold an
        ``nn.CrossEntropyLoss`` (``None`` when the module builds none): what any
        assignment, call of a same-module function or default gives one, forwards to a
        fixed point. Every chain ``_is_cross_entropy_module`` can follow back to the
        constructor runs through these names, so a callee named otherwise is not asked."""
        built = {id(c) for c in calls if self.flow.names_one_of(c.func, CE_MODULES)}
        if not built:
            return None
        edges = self._edges()
        # The holders are the least fixed point of "a key holds one when a value flowing
        # into it is built in place or is a holder's key": a graph search from the
        # constructors along ``source key -> keys it flows into``, one pass over the
        # edges instead of one pass per link of the longest chain.
        feeds: dict[str, list[str]] = {}
        todo: list[str] = []
        for value, key in edges:
            value = _strip_passthrough(value)
            if id(value) in built:
                todo.append(key)
                continue
            source = _key(value)
            if source is not None:
                feeds.setdefault(source, []).append(key)
        holders: set[str] = set()
        while todo:
            key = todo.pop()
            if key not in holders:
                holders.add(key)
                todo.extend(feeds.get(key, ()))
        return holders

    def _edges(self) -> list[tuple[ast.expr, str]]:
        """``(value, key)`` for each value that flows into a name or ``.attr`` (``_key``):
        by assignment, by a parameter's default, or as the argument a call of a
        same-module function passes for a parameter; made once per module."""
        if self._edge_list is not None:
            return self._edge_list
        tree = self.flow.tree
        defs: dict[str, list[ast.AST]] = {}
        for f in of_type(tree, ast.FunctionDef, ast.AsyncFunctionDef):
            defs.setdefault(f.name, []).append(f)
        edges: list[tuple[ast.expr, str]] = []
        for node in of_type(tree, ast.Assign, ast.AnnAssign, ast.NamedExpr):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                key = _key(t)
                if key is not None and node.value is not None:
                    edges.append((node.value, key))
        for f in (f for fs in defs.values() for f in fs):
            for param in [*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs]:
                default = default_of(f, param)
                if default is not None:
                    edges.append((default, param.arg))
        for call in self._calls:
            if isinstance(call.func, ast.Name) and call.func.id in defs:
                for f in defs[call.func.id]:
                    params = positional_params(f)
                    for i, arg in enumerate(call.args[:len(params)]):
                        edges.append((arg, params[i].arg))
                for kw in call.keywords:
                    if kw.arg is not None:
                        edges.append((kw.value, kw.arg))
        self._edge_list = edges
        return edges

    # -- which inputs a softmax may reach -------------------------------------------------

    def _may_carry_softmax(self, expr: ast.expr) -> bool:
        """``False`` only when ``_softmax_line(expr, ...)`` is ``None`` at any depth and
        tuple position: no chain of names, ``.attr`` keys and ``forward`` returns leads
        from ``expr`` to a call that may be a softmax. Told by name alone, so it needs
        no scopes; anything it lets through is decided by ``_softmax_line``."""
        sink, keys = self._consulted(expr)
        if sink:
            return True
        sources = self._sources()
        # A search back through what flows into each key. When it finds no softmax,
        # everything it reached was searched through, so those keys lead to none for
        # any later input either (``_dead``); a search that finds one proves nothing
        # about the keys it passed.
        seen: set[str] = set()
        todo = list(keys)
        while todo:
            key = todo.pop()
            if key in seen or key in self._dead:
                continue
            seen.add(key)
            for value in sources.get(key, ()):
                sink, more = self._consulted(value)
                if sink:
                    return True
                todo.extend(more)
        self._dead |= seen
        return False

    def _sources(self) -> dict[str, list[ast.expr]]:
        """For each key (a name, ``.attr``), the values that may flow into it, over-
        approximating every step ``_softmax_line`` and ``_softmax_callable`` take,
        whatever the scope, depth or tuple position: the ``_edges``, tuple unpacking
        (``validity, label = disc(x)``, any nesting), a lambda's defaults, a class's
        name for what its ``forward`` returns and, for ``self(x)``, every method's
        first parameter too. Made once per module."""
        if self._source_map is not None:
            return self._source_map
        tree = self.flow.tree
        edges = list(self._edges())
        for node in of_type(tree, ast.Assign):
            stack = [t for t in node.targets if isinstance(t, (ast.Tuple, ast.List))]
            while stack:
                target = stack.pop()
                if isinstance(target, (ast.Tuple, ast.List)):
                    stack.extend(target.elts)
                elif isinstance(target, ast.Starred):
                    stack.append(target.value)
                else:
                    key = _key(target)
                    if key is not None:
                        edges.append((node.value, key))
        for lam in of_type(tree, ast.Lambda):
            for param in [*lam.args.posonlyargs, *lam.args.args, *lam.args.kwonlyargs]:
                default = default_of(lam, param)
                if default is not None:
                    edges.append((default, param.arg))
        classes = of_type(tree, ast.ClassDef)
        methods = [(cls, stmt) for cls in classes for stmt in cls.body
                   if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))]
        # ``self(x)`` runs the ``forward`` of the class around it: any class's, for a
        # search that does not tell classes apart.
        selves = {positional_params(m)[0].arg for _, m in methods if positional_params(m)}
        for cls, method in methods:
            if method.name == "forward":
                for ret in self.flow.returns(method):
                    if ret.value is not None:
                        edges.extend((ret.value, key) for key in (cls.name, *selves))
        sources: dict[str, list[ast.expr]] = {}
        for value, key in edges:
            sources.setdefault(key, []).append(value)
        self._source_map = sources
        return sources

    def _consulted(self, expr: ast.expr) -> tuple[bool, set[str]]:
        """What ``_softmax_line`` and ``_softmax_callable`` may look at in ``expr``
        before following a value elsewhere: whether they may meet a softmax call in it,
        and the keys (a name, ``.attr``) whose values they may follow. The same parts
        they descend into (tuple elements, what is indexed, the receiver of a
        pass-through method, the shaped argument, the last layer of a Sequential, the
        wrapped module, the callee), with imports told apart by ``may_name`` only."""
        keys: set[str] = set()
        stack: list[ast.expr | None] = [expr]
        while stack:
            e = stack.pop()  # ``None`` for a part a call does not have: nothing to follow
            if isinstance(e, ast.Name):
                keys.add(e.id)
            elif isinstance(e, ast.Attribute):
                keys.add("." + e.attr)
            elif isinstance(e, (ast.Tuple, ast.List)):
                stack.extend(e.elts)
            elif isinstance(e, ast.Subscript):
                stack.append(e.value)
            elif isinstance(e, ast.Call):
                func = e.func
                if (isinstance(func, ast.Attribute) and func.attr == "softmax") or \
                        self.flow.may_name(func, SOFTMAX_ANY):
                    return True, keys
                stack.append(func)
                if isinstance(func, ast.Attribute) and func.attr in PASSTHROUGH_METHODS:
                    stack.append(func.value)
                if self.flow.may_name(func, SHAPE_FUNCTIONS):
                    stack.append(_argument(e, 0, "input"))
                if self.flow.may_name(func, SEQUENTIAL):
                    stack.extend(_layer_candidates(e))
                if self.flow.may_name(func, MODULE_WRAPPERS):
                    stack.append(_keyword(e, "module") or _keyword(e, "model") or _argument(e, 0))
        return False, keys

    # -- what an expression holds --------------------------------------------------------

    def _is_cross_entropy_module(self, func: ast.expr, depth: int = 2) -> bool:
        """``func`` is (or names) an ``nn.CrossEntropyLoss`` instance, also moved with
        ``.to(device)`` / ``.cuda()`` (which return the module itself)."""
        func = _strip_passthrough(func)
        if isinstance(func, ast.Call):
            return bool(self.flow.names_one_of(func.func, CE_MODULES))
        if not isinstance(func, (ast.Name, ast.Attribute)):
            return False
        if isinstance(func, ast.Attribute):
            if not self.flow.is_self(func.value):
                return False
            # ``self.layer(x)``: what the attribute holds is the same in every method of
            # the class, so it is worked out once per class and attribute.
            key = (self.flow.enclosing(func, ast.ClassDef), func.attr, depth)
            known = self._attr_cache.get(key)
            if known is None:
                known = self._attr_cache[key] = self._holds_cross_entropy(func, depth)
            return known
        return self._holds_cross_entropy(func, depth)

    def _holds_cross_entropy(self, func: ast.expr, depth: int) -> bool:
        for value in self.flow.resolve(func):
            value = _strip_passthrough(value)
            if isinstance(value, ast.Call) and self.flow.names_one_of(value.func, CE_MODULES):
                return True
            if isinstance(value, (ast.Name, ast.Attribute)) and depth > 0 and (
                self._is_cross_entropy_module(value, depth - 1)
            ):
                return True  # ``criterion = nn.CrossEntropyLoss(); criterion = criterion.cuda()``
        return False

    def _softmax_line(self, expr: ast.expr, depth: int, index: int | None = None) -> int | None:
        """The line of the softmax whose output ``expr`` holds, or ``None``; with
        ``index``, the softmax in element ``index`` of the tuple ``expr`` holds."""
        if depth <= 0:
            return None
        if isinstance(expr, (ast.Name, ast.Attribute)) and not (
            isinstance(expr, ast.Attribute) and not self.flow.is_self(expr.value)
        ):
            for value in self.flow.values(expr):
                line = self._softmax_line(value, depth - 1, index)
                if line is not None:
                    return line
            if isinstance(expr, ast.Name):
                # ``validity, pred_label = discriminator(x)``: position 1 of what it returns.
                for value, position in self.flow.unpacked_values(expr):
                    if index is None:
                        line = self._softmax_line(value, depth - 1, position)
                        if line is not None:
                            return line
            return None
        if isinstance(expr, (ast.Tuple, ast.List)):
            if index is None or index >= len(expr.elts):
                return None
            if any(isinstance(e, ast.Starred) for e in expr.elts[:index + 1]):
                return None
            return self._softmax_line(expr.elts[index], depth - 1)
        if isinstance(expr, ast.Subscript):
            if index is not None:
                return None
            position = _int_index(expr)
            line = None if position is None else self._softmax_line(expr.value, depth - 1, position)
            # Not a tuple's element: part of a softmax tensor (``probs[:, :k]``) is one too.
            return line if line is not None else self._softmax_line(expr.value, depth - 1)
        if not isinstance(expr, ast.Call):
            return None
        func = expr.func
        names = self.flow.imported_names(func)
        if index is None:
            if names & SOFTMAX_FUNCTIONS:
                return self.flow.line(expr)
            if names & SHAPE_FUNCTIONS:
                arg = _argument(expr, 0, "input")
                return None if arg is None else self._softmax_line(arg, depth - 1)
            if isinstance(func, ast.Attribute):
                # A tensor method: the receiver is a local value, not an imported module.
                if func.attr == "softmax" and not names:
                    return self.flow.line(expr)
                if func.attr in PASSTHROUGH_METHODS:
                    # ``F.softmax(z, 1).view(-1, C)``: reshaping keeps the probabilities.
                    line = self._softmax_line(func.value, depth - 1)
                    if line is not None:
                        return line
        return self._softmax_callable(func, depth - 1, index)

    def _softmax_callable(self, expr: ast.expr, depth: int, index: int | None = None) -> int | None:
        """The line of the softmax that calling ``expr`` (a module) ends with, or ``None``;
        with ``index``, the softmax in element ``index`` of the tuple it returns."""
        if depth <= 0:
            return None
        if isinstance(expr, ast.Name) and self.flow.is_self(expr):
            cls = self.flow.enclosing(expr, ast.ClassDef)
            return self._forward_softmax(cls, index) if isinstance(cls, ast.ClassDef) else None
        if isinstance(expr, (ast.Name, ast.Attribute)):
            if isinstance(expr, ast.Attribute) and not self.flow.is_self(expr.value):
                return None
            for value in self.flow.values(expr) + self._unpacked_literals(expr):
                line = self._softmax_callable(value, depth - 1, index)
                if line is not None:
                    return line
            return None
        if not isinstance(expr, ast.Call):
            return None
        names = self.flow.imported_names(expr.func)
        if names & SOFTMAX_MODULES:
            return self.flow.line(expr) if index is None else None
        if names & SEQUENTIAL:
            last = self._last_layer(expr)
            return None if last is None else self._softmax_callable(last, depth - 1, index)
        if isinstance(expr.func, ast.Attribute) and expr.func.attr in PASSTHROUGH_METHODS:
            return self._softmax_callable(expr.func.value, depth - 1, index)
        if names & MODULE_WRAPPERS:
            # ``DistributedDataParallel(model)`` runs ``model``'s forward.
            inner = _keyword(expr, "module") or _keyword(expr, "model") or _argument(expr, 0)
            return None if inner is None else self._softmax_callable(inner, depth - 1, index)
        cls = self.flow.class_of(expr.func)
        if cls is not None:
            return self._forward_softmax(cls, index)
        return None

    def _unpacked_literals(self, expr: ast.expr) -> list[ast.expr]:
        """``Classifier()`` for ``clf`` in ``clf, disc = Classifier(), Discriminator()``."""
        if not isinstance(expr, ast.Name):
            return []
        out = []
        for value, position in self.flow.unpacked_values(expr):
            if isinstance(value, (ast.Tuple, ast.List)) and position < len(value.elts):
                if not any(isinstance(e, ast.Starred) for e in value.elts):
                    out.append(value.elts[position])
        return out

    def _forward_softmax(self, cls: ast.ClassDef, index: int | None = None) -> int | None:
        """Line of the softmax when *every* return of ``cls.forward`` is a softmax output
        (with ``index``: holds one at that tuple position). Computed once per class with
        a fresh depth budget, so the cached answer does not depend on how deep the
        question came from."""
        key = (cls, index)
        if key in self._forward_cache:
            return self._forward_cache[key]
        self._forward_cache[key] = None  # guards recursion through self(...)
        forward = self.flow.method(cls, "forward")
        result = None
        if forward is not None:
            returns = self.flow.returns(forward)
            lines = [self._softmax_line(r.value, _DEPTH, index) if r.value else None for r in returns]
            if lines and all(line is not None for line in lines):
                result = lines[0]
        self._forward_cache[key] = result
        return result

    def _last_layer(self, sequential: ast.Call) -> ast.expr | None:
        """The last layer given to ``nn.Sequential(...)``: the last positional argument, or
        the last entry of an ``OrderedDict([...])``."""
        args = sequential.args
        if not args or isinstance(args[-1], ast.Starred) or any(
                k.arg is None for k in sequential.keywords):
            return None
        last = args[-1]
        if (
            len(args) == 1
            and isinstance(last, ast.Call)
            and self.flow.names_one_of(last.func, ORDERED_DICT)
            and last.args
            and isinstance(last.args[0], (ast.List, ast.Tuple))
            and last.args[0].elts
        ):
            entry = last.args[0].elts[-1]
            if isinstance(entry, ast.Tuple) and len(entry.elts) == 2:
                return entry.elts[1]
            return None
        return last


def _key(expr: ast.expr) -> str | None:
    """``criterion`` for a name, ``.criterion`` for any ``x.criterion``."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        return "." + expr.attr
    return None


def _layer_candidates(sequential: ast.Call) -> list[ast.expr]:
    """What ``_last_layer`` may answer for ``nn.Sequential(...)``, whatever the
    imports: its last argument and, for an ``OrderedDict([...])``, its last entry's
    layer."""
    if not sequential.args:
        return []
    last = sequential.args[-1]
    out = [last]
    if isinstance(last, ast.Call) and last.args and isinstance(last.args[0], (ast.List, ast.Tuple)) \
            and last.args[0].elts:
        entry = last.args[0].elts[-1]
        if isinstance(entry, ast.Tuple) and len(entry.elts) == 2:
            out.append(entry.elts[1])
    return out


def _may_hold(func: ast.expr, holders: set[str]) -> bool:
    """``func`` could be a cross-entropy module by ``_holders``: built in place, or named
    as one of the holders."""
    func = _strip_passthrough(func)
    if isinstance(func, ast.Call):
        return True
    key = _key(func)
    return key is not None and key in holders


def _strip_passthrough(expr: ast.expr) -> ast.expr:
    """``nn.CrossEntropyLoss()`` for ``nn.CrossEntropyLoss().to(device).cuda()``."""
    while (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
           and expr.func.attr in PASSTHROUGH_METHODS):
        expr = expr.func.value
    return expr


def _int_index(sub: ast.Subscript) -> int | None:
    """``i`` in ``x[i]`` for a literal non-negative integer."""
    value = sub.slice
    if isinstance(value, ast.Constant) and type(value.value) is int:
        return value.value
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _argument(call: ast.Call, position: int, keyword: str | None = None) -> ast.expr | None:
    """The argument ``keyword=`` if given, else the one at ``position`` (not past a
    ``*args``)."""
    if keyword is not None:
        found = _keyword(call, keyword)
        if found is not None:
            return found
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):
            return None
        if i == position:
            return arg
    return None


class DoubleSoftmaxProbe(Probe):
    """Checks that the input reaching cross-entropy at the flagged call is a distribution.

    ``nn.CrossEntropyLoss.forward`` calls ``torch.nn.functional.cross_entropy`` through the
    module attribute, so watching that one attribute covers both spellings; a call counts
    when the flagged line is on the stack.
    """

    TOLERANCE = 1e-4
    #: Calls at the flagged line after which the verdict cannot change much.
    ENOUGH_CALLS = 3

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.calls = 0
        self.distribution_calls = 0
        self.min_value: float | None = None
        self.max_row_error: float | None = None
        self.shape: list[int] | None = None

    def install(self) -> None:
        self.rt.on_call(self.rt.torch.nn.functional, "cross_entropy", self._cross_entropy)

    def _cross_entropy(self, *args: Any, **kwargs: Any) -> None:
        logits = args[0] if args else kwargs.get("input")
        torch = self.rt.torch
        if not isinstance(logits, torch.Tensor) or self.rt.stack_in(self.finding) is None:
            return
        with torch.no_grad():
            x = logits.detach().float()
            class_dim = 0 if x.dim() == 1 else 1
            if x.numel() == 0:
                return
            # One host sync for both figures (this runs at every training step).
            min_value, row_error = torch.stack(
                [x.min(), (x.sum(dim=class_dim) - 1).abs().max()]).tolist()
        self.calls += 1
        if min_value >= -self.TOLERANCE and row_error <= self.TOLERANCE:
            self.distribution_calls += 1
        self.min_value = min_value if self.min_value is None else min(self.min_value, min_value)
        self.max_row_error = max(self.max_row_error or 0.0, row_error)
        self.shape = list(x.shape)

    def settled(self) -> bool:
        return self.calls >= self.ENOUGH_CALLS

    def verdict(self) -> Verdict | None:
        if not self.calls:
            return None
        figures = {
            "calls": self.calls,
            "distribution_calls": self.distribution_calls,
            "min_value": self.min_value,
            "max_row_sum_error": self.max_row_error,
            "batch_shape": "x".join(map(str, self.shape or [])),
        }
        where = f"line {self.finding.line}"
        if self.distribution_calls:
            return self.confirmed(
                f"the input to cross_entropy at {where} was already a probability "
                f"distribution in {self.distribution_calls} of {self.calls} call(s): "
                f"smallest value {self.min_value:.3g}, rows sum to 1 within "
                f"{self.max_row_error:.2g} (batch shape {figures['batch_shape']}); "
                "cross_entropy applied log-softmax on top of it",
                **figures,
            )
        return self.refuted(
            f"the input to cross_entropy at {where} was not a probability distribution in "
            f"any of {self.calls} call(s): smallest value {self.min_value:.3g}, row sums "
            f"off by up to {self.max_row_error:.3g} (batch shape {figures['batch_shape']})",
            **figures,
        )


# -- fix (mllint.fixes): kept apart from the check above -------------------------------------

from mllint.fixes import Fix, FixFile, FixSpec  # noqa: E402


def _softmax_input(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """``x`` of ``F.softmax(x, dim=1)``, ``torch.softmax(x, 1)``, ``x.softmax(1)`` or
    ``nn.Softmax(dim=1)(x)``; None for anything else."""
    if not isinstance(node, cst.Call):
        return None
    func = node.func
    if isinstance(func, cst.Call) and _last_name(func.func) == "Softmax":
        return node.args[0].value if len(node.args) == 1 and not node.args[0].keyword else None
    if _last_name(func) != "softmax":
        return None
    data_arg = positional_arg(node, 0) or keyword_arg(node, "input")
    if isinstance(func, cst.Attribute) and _last_name(func.value) in ("F", "functional", "torch"):
        return data_arg.value if data_arg is not None else None
    if isinstance(func, cst.Attribute):
        return func.value  # the method: ``x.softmax(dim=1)``
    return data_arg.value if data_arg is not None else None  # ``from ... import softmax``


def _last_name(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Attribute):
        return node.attr.value
    return node.value if isinstance(node, cst.Name) else ""


def _fix(file: FixFile, finding) -> Fix | None:
    call = file.node_for(finding, cst.Call)
    if call is None:
        return None
    arg = keyword_arg(call, "input") or positional_arg(call, 0)
    if arg is None:
        return None
    inner = _softmax_input(arg.value)
    if inner is not None:
        # The softmax only feeds the loss: removing it changes nothing else.
        edit = file.replace(arg.value, file.source(inner))
        return Fix("Pass the logits to the loss", True, (edit,))
    line = finding.data.get("softmax_line")
    if isinstance(arg.value, cst.Name) and line:
        for assign in file.nodes_on_line(line, cst.Assign):
            source = _softmax_input(assign.value)
            targets = [t.target for t in assign.targets]
            if source is not None and len(targets) == 1 and isinstance(targets[0], cst.Name) \
                    and targets[0].value == arg.value.value:
                return Fix("Pass the logits to the loss", False,
                           (file.replace(arg.value, file.source(source)),))
    if line:
        return _drop_last_layer(file, line)
    return None


def _drop_last_layer(file: FixFile, line: int) -> Fix | None:
    """Removes a trailing ``nn.Softmax(...)`` from the ``nn.Sequential(...)`` it ends."""
    for layer in file.nodes_on_line(line, cst.Call):
        if _last_name(layer.func) != "Softmax":
            continue
        arg = file.parent(layer)
        sequential = file.parent(arg) if isinstance(arg, cst.Arg) else None
        if not isinstance(sequential, cst.Call) or _last_name(sequential.func) != "Sequential":
            continue
        if sequential.args[-1] is not arg or len(sequential.args) < 2:
            continue
        edit = file.delete_item(arg.value, sequential.args[-2].value)
        return Fix("Remove the model's last Softmax layer", False, (edit,))
    return None


DoubleSoftmax.FIX = FixSpec(
    safety="""
    When the softmax is written inside the loss call (`F.cross_entropy(F.softmax(x, dim=1),
    y)`), the fix passes its input instead (`F.cross_entropy(x, y)`). That is safe: the
    softmax fed nothing but the loss.

    When the probabilities come from a variable (`probs = F.softmax(logits, dim=1)` ...
    `F.cross_entropy(probs, y)`), the fix passes `logits` to the loss and leaves `probs`
    for whatever else reads it; unsafe, because `logits` may have been rebound in between.
    When the model's last layer is `nn.Softmax` in an `nn.Sequential`, the fix removes that
    layer; unsafe, because everything else that calls the model (inference, metrics,
    exported checkpoints) then receives logits instead of probabilities. A softmax
    returned by a `forward` method has no fix.
    """,
    make=_fix,
)
