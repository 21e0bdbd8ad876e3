"""ML004 loss-tensor-accumulated: a loss kept with its autograd graph across iterations."""

from __future__ import annotations

import ast
import enum
from dataclasses import dataclass
from typing import Any

import libcst as cst

from mllint.analysis.pyast.grads import BACKWARD_SIGNS, STEP_TEXT, GradEvents
from mllint.analysis.pyast.index import (
    FUNCTIONS,
    LOOPS,
    MAX_CALLER_DEPTH,
    TRIES,
    GradMode,
    LoopChain,
    ModuleIndex,
    in_list,
    names_in,
)
from mllint.analysis.pyast.loss import (
    ACCUMULATING_METHODS,
    KNOWN_METER_METHODS,
    LOSS_TEXT,
    LossOracle,
    LossValue,
    accumulated_params,
    meter_classes,
    targets_of,
)
from mllint.gates.resolve import dotted
from mllint.prefilter import any_layout
from mllint.rule import AstRule, Invalid, Valid
from mllint.types import Verdict
from mllint.verify.probe import Probe

#: Every way this rule proves autograd is on leaves one of these in the file: a backward
#: pass or a step (training), ``enable_grad``/``set_grad_enabled``, or a script entry
#: point at module level (``if __name__ == "__main__":``, a loop, a bare call).
#: As alternatives (any one suffices), each led by a literal so that ``re`` skips ahead;
#: a line start is ``\n`` or the start of the text (``(?m:^)`` would be tried everywhere).
GRAD_ON_SIGNS = (
    *BACKWARD_SIGNS,
    STEP_TEXT,
    "__main__",
    "enable_grad",
    "set_grad_enabled",
    # Module-level loops and calls (a dotted callee at the start of a line). No layout
    # makes a line start; blanks and continuations may sit around the dots and the ``(``.
    any_layout(r"\n(?:for|while)\b"),
    any_layout(r"\A(?:for|while)\b"),
    any_layout(r"\n[A-Za-z_](?:\w|(?:\s|\\)*\.(?:\s|\\)*)*(?:\s|\\)*\("),
    any_layout(r"\A[A-Za-z_](?:\w|(?:\s|\\)*\.(?:\s|\\)*)*(?:\s|\\)*\("),
)
GRAD_ON_TEXT = "|".join(GRAD_ON_SIGNS)


class Kind(str, enum.Enum):
    #: The accumulator outlives optimizer steps (or backward passes) of a training loop.
    TRAINING = "training"
    #: A pass with autograd on: the accumulator keeps every batch's forward graph.
    EVALUATION = "evaluation"


@dataclass(frozen=True)
class Accumulation:
    node: ast.AST  # what to report: the augmented assignment or the append call
    target: ast.expr  # the accumulator as written (``meters["loss"]``)
    value: ast.expr  # what is added to it
    #: ``+=`` / ``x = x + ...``: a new tensor, which has no graph under ``no_grad``.
    arithmetic: bool
    #: For a meter's method (``losses.update(loss, n)``): how it accumulates, in words.
    meter: str | None = None


class LossTensorAccumulated(AstRule):
    """
    ## What it does
    Finds a loss tensor that is accumulated or stored across loop iterations while it
    still carries its autograd graph: `total += loss`, `total = total + loss`,
    `losses.append(loss)`, `meters["loss"] += loss * bs`, `history.extend([loss])`,
    `loss_meter.update(loss, bs)` on a meter that sums what it is given, where the
    accumulator outlives the training step (or, in a pass with autograd on, the batch)
    that computed the loss.

    A meter sums what it is given when its class, defined in the same file, adds the
    argument to an attribute of `self` (`self.sum += val * n`) or appends it
    (`self.values.append(val)`) without converting it first, or when it is a
    well-known meter class from elsewhere (`AverageMeter`, torchnet's
    `AverageValueMeter`) called through `update`/`add`.

    A loss is recognised by how it was computed: a `torch.nn.functional` loss, a loss
    module (`nn.CrossEntropyLoss()`, `self.criterion`), a callable named like a
    criterion, a same-module function returning one, a model output's `.loss`, or a
    variable that is back-propagated.

    ## Why is this bad?
    A loss tensor references the graph that produced it. Summing it into a running
    total, or keeping it in a list, chains every step's graph to the next: memory grows
    with every step until the run slows down or dies with an out-of-memory error hours
    in. `backward()` frees the activations a graph saved, so in a training loop what
    piles up is the graph's nodes; in a pass that never back-propagates (an evaluation
    with autograd on) every batch's activations stay alive too, and memory runs out
    fast. `loss.item()` (or `loss.detach()`) keeps the number without the graph.

    ## Known problems
    Summing micro-batch losses into one tensor that is then back-propagated (gradient
    accumulation of a summed loss within one step) is not flagged, nor is a total that
    is reset every step. A meter class defined in another module is judged by its name
    only: an `AverageMeter` there that calls `.item()` itself would be reported
    wrongly; other classes from elsewhere (a torchmetrics metric, which updates under
    `no_grad`, a logger's `update(**values)`) are never taken for summing meters, nor are
    same-file classes derived from them. In a pass that does not back-propagate, the
    finding needs proof that autograd is on: a same-module call path from a script's
    entry (`if __name__ == "__main__":`, a top-level loop or call) or from code that
    back-propagates; an evaluation helper only called from other files is left alone.
    A decorator or context manager torch does not define but whose name says
    `no_grad` or `inference_mode` (`@smart_inference_mode()`) is taken to turn autograd
    off. What a method of a loss returns (`loss.get_loss()` on a custom loss object) is
    not assumed to be a tensor unless the method is a known graph-keeping tensor method
    (`mean`, `sum`, `float`, `view`...).

    ## How --verify confirms it
    After the flagged line runs, the probe reads the accumulator: a tensor with a
    `grad_fn` (or a container holding one) after two or more steps confirms the finding,
    with the `grad_fn`, the number of graph nodes it keeps reachable and the step count.
    Plain numbers or detached tensors refute it.
    """

    code = "ML004"
    name = "loss-tensor-accumulated"
    summary = "A loss tensor is accumulated across iterations with its autograd graph"
    hint = "Accumulate `loss.item()` (or `loss.detach()`), not the loss tensor itself."
    # Cheapest first: ``all()`` stops at the first pattern a file lacks.
    REQUIRES = (any_layout(r"\+|append|extend|insert|update|add"), GRAD_ON_SIGNS, LOSS_TEXT)
    PROBE = "mllint.rules.ml004_loss_tensor_accumulated:LossTensorAccumulatedProbe"

    VALID = [
        Valid(  # inputs kept for later are no loss: only what is back-propagated as is
            """
            import torch.nn.functional as F

            fixed = []
            for x, _ in test_loader:
                fixed.append(x)
            for x, y in train_loader:
                optimizer.zero_grad()
                F.mse_loss(model(x), y).backward()
                optimizer.step()
            """
        ),
        Valid(  # a per-batch sum over scales, returned in a dict the caller back-propagates
            """
            import torch.nn.functional as F

            class Trainer:
                def compute_losses(self, outputs, target):
                    losses = {}
                    total = 0
                    for scale in range(4):
                        total += F.l1_loss(outputs[scale], target)
                    losses["loss"] = total / 4
                    return losses

                def run_epoch(self):
                    for x, y in self.loader:
                        outputs, losses = self.model(x), self.compute_losses(self.model(x), y)
                        self.optimizer.zero_grad()
                        losses["loss"].backward()
                        self.optimizer.step()
            """
        ),
        Valid(
            """
            import torch.nn.functional as F

            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss.item()
            """
        ),
        Valid(  # detached, or under no_grad
            """
            import torch
            from torch import nn

            criterion = nn.MSELoss()
            history = []
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                history.append(loss.detach())
                with torch.no_grad():
                    running = running + loss
            """
        ),
        Valid(  # micro-batch losses summed and back-propagated within one step
            """
            import torch.nn.functional as F

            for batch in loader:
                total_loss = 0
                for x, y in batch:
                    total_loss += F.mse_loss(model(x), y)
                total_loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            """
        ),
        Valid(  # per-environment losses summed into the objective of one step
            """
            import torch.nn.functional as F

            def update(network, minibatches, optimizer, penalty):
                total_loss = 0
                for x, y in minibatches:
                    env_loss = F.cross_entropy(network(x), y)
                    total_loss += env_loss
                mean_loss = total_loss / len(minibatches)
                objective = mean_loss + penalty
                optimizer.zero_grad()
                objective.backward()
                optimizer.step()
                return mean_loss.item()
            """
        ),
        Valid(  # a loss of detached inputs, stored in a validation pass that keeps autograd on
            """
            import numpy as np
            import torch.nn as nn

            class Experiment:
                def vali(self, loader, criterion):
                    self.model.eval()
                    losses = []
                    for x, y in loader:
                        pred = self.model(x)
                        loss = criterion(pred.detach().cpu(), y.detach().cpu())
                        losses.append(loss)
                    self.model.train()
                    return np.average(losses)

                def train(self, train_loader, val_loader):
                    criterion = nn.MSELoss()
                    for x, y in train_loader:
                        self.optimizer.zero_grad()
                        loss = criterion(self.model(x), y)
                        loss.backward()
                        self.optimizer.step()
                    return self.vali(val_loader, criterion)
            """
        ),
        Valid(  # a per-head sum within one training step, reset every step
            """
            import torch.nn.functional as F

            for epoch in range(10):
                for x, y in loader:
                    optimizer.zero_grad()
                    outs = model(x)
                    parts = 0
                    for i in range(n_heads):
                        part = F.cross_entropy(outs[i], y)
                        parts += 2 * (1 - part)
                    stats.append(parts.item())
                    loss = F.cross_entropy(outs[-1], y)
                    loss.backward()
                    optimizer.step()
            """
        ),
        Valid(  # an auxiliary loss added before backward
            """
            for x, y in loader:
                loss = criterion(model(x), y)
                loss = loss + 0.01 * model.l2()
                loss += aux_weight * aux_criterion(model.aux, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            """
        ),
        Valid(  # a custom loss object: what its own methods return is not known to be a tensor
            """
            class Trainer:
                def _train_batch(self, x, y):
                    loss = self.loss
                    loss.reset()
                    loss.eval_batch(self.model(x), y)
                    self.model.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                    return loss.get_loss()

                def train(self, loader):
                    total = 0
                    for x, y in loader:
                        loss = self._train_batch(x, y)
                        total += loss
            """
        ),
        Valid(  # a decorator from elsewhere whose name says it turns autograd off
            """
            import torch.nn.functional as F
            from utils.torch_utils import smart_inference_mode

            @smart_inference_mode()
            def run(model, loader):
                loss = 0
                for x, y in loader:
                    loss += F.cross_entropy(model(x), y)
                return loss

            if __name__ == "__main__":
                run(model, loader)
            """
        ),
        Valid(  # meters fed `loss.item()`, a dict, a progress bar, a torchmetrics metric
            """
            import torch
            import torch.nn.functional as F
            import torchmetrics
            from tqdm import tqdm

            class RunningMean:
                def __init__(self):
                    self.total, self.count = 0.0, 0

                def update(self, val, n=1):
                    if torch.is_tensor(val):
                        val = val.detach()
                    self.total += val * n
                    self.count += n

            meter, logs, mean_loss = RunningMean(), {}, torchmetrics.MeanMetric()
            bar = tqdm(loader)
            for x, y in bar:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                meter.update(loss, x.size(0))
                logs.update(loss=loss)
                bar.set_postfix(loss=loss)
                mean_loss.update(loss)
            """
        ),
        Valid(  # per-time-step losses summed in a helper whose caller back-propagates the sum
            """
            import torch
            from torch import nn

            def batch_loss(encoder, decoder, X, Y, loss):
                outputs, state = encoder(X, None)
                total = torch.tensor([0.0])
                for y in Y.permute(1, 0):
                    out, state = decoder(y, state, outputs)
                    total = total + loss(out, y).sum()
                return total / Y.shape[1]

            def train(encoder, decoder, loader, lr):
                opt = torch.optim.Adam(encoder.parameters(), lr=lr)
                loss = nn.CrossEntropyLoss(reduction="none")
                for X, Y in loader:
                    opt.zero_grad()
                    l = batch_loss(encoder, decoder, X, Y, loss)
                    l.backward()
                    opt.step()
            """
        ),
        Valid(  # per-layer losses summed in a method whose result, handed on through another
            # method, one step back-propagates
            """
            import torch


            class Model:
                def __init__(self, net, heads, criteria, lr):
                    self.net, self.heads, self.criteria = net, heads, criteria
                    self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)

                def layer_loss(self, src, tgt):
                    feats_q, feats_k = self.net(tgt), self.net(src)
                    total = 0.0
                    for f_q, f_k, crit in zip(feats_q, feats_k, self.criteria):
                        total += crit(f_q, f_k).mean()
                    return total / len(self.criteria)

                def compute_loss(self, src, tgt):
                    self.loss_layers = self.layer_loss(src, tgt)
                    both = self.loss_layers * 0.5
                    self.loss = both + self.net(src).abs().mean()
                    return self.loss

                def optimize(self, src, tgt):
                    self.optimizer.zero_grad()
                    self.loss = self.compute_loss(src, tgt)
                    self.loss.backward()
                    self.optimizer.step()
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch.nn.functional as F

            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss
            """,
            lines=(9,),
        ),
        Invalid(
            """
            from torch import nn

            criterion = nn.CrossEntropyLoss()
            losses, meters = [], {"loss": 0.0}
            for epoch in range(10):
                for x, y in loader:
                    loss = criterion(model(x), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss)
                    meters["loss"] += loss * x.size(0)
            """,
            lines=(11, 12),
        ),
        Invalid(  # only the target is detached: the prediction brings its graph
            """
            import torch.nn.functional as F

            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.mse_loss(model(x), y.detach().float())
                loss.backward()
                optimizer.step()
                total += loss
            """,
            lines=(9,),
        ),
        Invalid(  # a logging window that resets only every 100 steps
            """
            running_loss = 0.0
            for i, batch in enumerate(loader):
                outputs = model(**batch)
                outputs.loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                running_loss = running_loss + outputs.loss
                if i % 100 == 99:
                    print(running_loss / 100)
                    running_loss = 0.0
            """,
            lines=(7,),
        ),
        Invalid(  # element 0 of the helper's tuple is the loss; element 1 is detached
            """
            import torch
            import torch.nn.functional as F

            def compute_loss(out, y):
                loss = F.cross_entropy(out, y)
                return loss, torch.stack([loss, loss * 2]).detach()

            total, parts = 0.0, 0.0
            for x, y in loader:
                optimizer.zero_grad()
                out = model(x)
                compute_loss(out, y)[0].backward()
                optimizer.step()
                total += compute_loss(out, y)[0]
                parts += compute_loss(out, y)[1]
            """,
            lines=(14,),
        ),
        Invalid(  # meters that sum what they are given: one of this file, one well known
            """
            import torch.nn.functional as F
            from utils import AverageMeter

            class RunningMean:
                def __init__(self):
                    self.total, self.count = 0.0, 0

                def update(self, val, n=1):
                    self.total += val * n
                    self.count += n

            loss_meter, top = RunningMean(), AverageMeter("Loss", ":.4e")
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_meter.update(loss, x.size(0))
                top.update(loss, x.size(0))
            """,
            lines=(18, 19),
        ),
    ]

    def check(self, tree: ast.Module) -> None:
        ix = ModuleIndex(tree, self.context.source, self.context.project, self.context.star_imports)
        accumulations = _accumulations(ix) + meter_updates(ix)
        if not accumulations:
            return
        events = GradEvents(ix)
        oracle = LossOracle(ix, events)
        checker = _Checker(ix, events, oracle)
        for acc in accumulations:
            verdict = checker.judge(acc)
            if verdict is not None:
                self._report(ix, acc, *verdict)

    def _report(self, ix: ModuleIndex, acc: Accumulation, loss: LossValue, base: str, region,
                kind: Kind) -> None:
        statement = ix.source(acc.node)
        loss_text = ix.source(loss.expr)
        if kind is Kind.TRAINING:
            why = (
                f"`{base}` lives across optimizer steps, so it keeps every step's graph "
                f"alive, chained to the next, and memory grows with each step"
            )
            fix = f"Accumulate `{loss_text}.item()` (or `{loss_text}.detach()`) instead."
        else:
            why = (
                f"this pass runs with autograd on, so `{base}` keeps every batch's graph "
                f"(and its activations) alive"
            )
            fix = f"Accumulate `{loss_text}.item()`, or run the pass under `torch.no_grad()`."
        how = "" if acc.meter is None else f" ({acc.meter})"
        message = (
            f"`{statement}` stores `{loss_text}`, a tensor that still carries its autograd "
            f"graph, in `{base}`{how} on every iteration: {why}. {fix}"
        )
        data = {
            "kind": kind.value,
            "accumulator": base,
            "accumulator_expr": ix.source(acc.target),
            "loss": loss_text,
        }
        if acc.meter is not None:
            data["meter"] = True
        self.report(acc.node, message, region=region, data=data)


def _accumulations(ix: ModuleIndex) -> list[Accumulation]:
    out = []
    for node in ix.of_type(ast.AugAssign, ast.Assign):
        if isinstance(node, ast.AugAssign):
            if isinstance(node.op, ast.Add):
                out.append(Accumulation(node, node.target, node.value, True))
        elif len(node.targets) == 1:
            target = node.targets[0]
            added = _added_to(node.value, ix.source(target), ix.source)
            if added is not None:
                out.append(Accumulation(node, target, added, True))
    for call in ix.calls():
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in ACCUMULATING_METHODS:
            positional = [a for a in call.args if not isinstance(a, ast.Starred)]
            index = ACCUMULATING_METHODS[func.attr]
            if len(positional) > index:
                out.append(Accumulation(call, func.value, positional[index], False))
    return out


#: Methods that empty an accumulator: a list's ``clear()``, a meter's ``reset()``.
_RESETS = frozenset({"clear", "reset"})


def meter_updates(ix: ModuleIndex) -> list[Accumulation]:
    """Calls that hand a value to a meter which sums or stores it: a method of a
    same-module class that accumulates its parameter on ``self`` (``self.sum += val * n``,
    ``self.values.append(val)``), or ``update``/``add`` of a well-known meter class
    defined elsewhere (``AverageMeter``: ``KNOWN_METER``)."""
    out = []
    calls = [c for c in ix.calls() if isinstance(c.func, ast.Attribute) and (c.args or c.keywords)]
    # Only a method some class here accumulates in, or a known meter's, can add anything;
    # and only methods called with arguments here need looking at (a walk of each).
    called = {c.func.attr for c in calls}  # type: ignore[attr-defined]
    memo: dict[ast.AST, dict[ast.arg, Any]] = {}

    def accumulated(method) -> dict[ast.arg, Any]:
        if method not in memo:
            memo[method] = accumulated_params(method)
        return memo[method]

    # A method can keep a parameter only through a sum or an append in its own body.
    summing = {ix.function_of(n) for n in ix.of_type(ast.AugAssign, ast.Assign, ast.Call)
               if _sums_or_appends(n)}
    wanted = KNOWN_METER_METHODS | {
        f.name for c in ix.of_type(ast.ClassDef) for f in c.body
        if isinstance(f, FUNCTIONS) and f.name in called and f in summing and accumulated(f)
    }
    for call in calls:
        func = call.func
        method = func.attr  # type: ignore[attr-defined]
        if method not in wanted:
            continue
        for cls in meter_classes(ix, func.value):  # type: ignore[attr-defined]
            if isinstance(cls, ast.ClassDef):
                found = ix.class_methods(cls, method)
                if found is None:
                    continue
                for param, how in accumulated(found).items():
                    arg = ix.argument_for(call, found, param)
                    if arg is not None:
                        out.append(Accumulation(call, func.value, arg, how.arithmetic,  # type: ignore[attr-defined]
                                                f"`{cls.name}.{method}` {how.words}"))
                break
            if method in KNOWN_METER_METHODS:
                arg = _known_meter_value(call)
                if arg is not None:
                    out.append(Accumulation(call, func.value, arg, True,  # type: ignore[attr-defined]
                                            f"`{cls}` sums the values it is given"))
                break
    return out


def _sums_or_appends(node: ast.AST) -> bool:
    """``x += ...``, ``x = a + b`` or ``x.append(...)`` (and kin): the statements through
    which ``accumulated_params`` finds a parameter kept."""
    if isinstance(node, ast.AugAssign):
        return isinstance(node.op, ast.Add)
    if isinstance(node, ast.Assign):
        return isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.Add)
    return isinstance(node.func, ast.Attribute) and node.func.attr in ACCUMULATING_METHODS  # type: ignore[attr-defined]


def _known_meter_value(call: ast.Call) -> ast.expr | None:
    for k in call.keywords:
        if k.arg in ("val", "value"):
            return k.value
    first = call.args[0] if call.args else None
    return first if first is not None and not isinstance(first, ast.Starred) else None


def _added_to(value: ast.expr, target: str, source) -> ast.expr | None:
    """For ``t = t + x`` (or ``t = a * t + b * x``), the sum without ``t``'s own terms."""
    if not isinstance(value, ast.BinOp) or not isinstance(value.op, ast.Add):
        return None
    terms: list[ast.expr] = []

    def collect(e: ast.expr) -> None:
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            collect(e.left)
            collect(e.right)
        else:
            terms.append(e)

    collect(value)
    mine = [t for t in terms if target in {source(t)} | names_in(t)]
    others = [t for t in terms if not any(t is m for m in mine)]
    if not mine or not others:
        return None
    return others[0] if len(others) == 1 else ast.List(elts=others, ctx=ast.Load())


def _upstream(names: set[str], flows: list[tuple[set[str], set[str]]]) -> set[str]:
    """``names`` and every name whose value flows into one of them: for each (targets,
    read) assignment that writes one, what it reads, to a fixed point. (Given the pairs
    reversed, what flows out of them.)"""
    names = set(names)
    grown = True
    while grown:
        grown = False
        for targets, read in flows:
            if targets & names and not read <= names:
                names |= read
                grown = True
    return names


def _written(target: ast.expr) -> set[str]:
    """The variables an assignment target writes: ``x``, ``self.x``, both names of
    ``a, b``, and ``losses`` for ``losses["loss"]``."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_written(e) for e in target.elts))
    if isinstance(target, ast.Starred):
        return _written(target.value)
    base = _base(target)
    return {base} if base is not None else set()


def _base(target: ast.expr) -> str | None:
    """The variable an accumulator lives in: ``meters`` for ``meters["loss"]``."""
    written = dotted(target)
    if written is not None:
        return written
    if isinstance(target, (ast.Subscript, ast.Attribute)):
        return _base(target.value)
    return None


class _Checker:
    def __init__(self, index: ModuleIndex, events: GradEvents, oracle: LossOracle) -> None:
        self.ix = index
        self.ev = events
        self.oracle = oracle
        self._enabled: dict[ast.AST, bool] = {}
        self._switched_off: bool | None = None

    def judge(self, acc: Accumulation) -> tuple[LossValue, str, ast.AST, Kind] | None:
        ix = self.ix
        loss = self.oracle.carried_loss(acc.value, acc.node)
        base = _base(acc.target)
        if loss is None or base is None or self.oracle.grad_free(loss):
            return None
        if ix.grad_mode(acc.node) in (GradMode.DISABLED, GradMode.MAYBE_DISABLED):
            # ``total += loss`` under no_grad makes a new tensor without a graph; storing
            # the very tensor (``losses.append(loss)``) still keeps its graph.
            if acc.arithmetic or acc.value is not loss.expr:
                return None
        if self._feeds_backward(acc, base):
            return None
        lifetime = self._lifetime(acc, base)
        if not lifetime:
            return None
        outer = lifetime[-1]
        if loss.definition is not None and ix.function_of(loss.definition) is ix.function_of(outer):
            if not ix.within(loss.definition, outer):
                return None  # the same tensor every time: no new graph per iteration
        kind = self._kind(acc, loss, outer)
        return None if kind is None else (loss, base, outer, kind)

    def _feeds_backward(self, acc: Accumulation, base: str) -> bool:
        """The accumulator is (part of) what gets back-propagated: a summed loss built
        within one step (``total_loss += loss; total_loss.backward()``), also through
        other variables (``mean = total_loss / n; objective = mean + penalty;
        objective.backward()``)."""
        func = self.ix.function_of(acc.node)
        flows = self._flows(func)
        if base in _upstream(set(self.oracle.backwarded_names(func)), flows):
            return True
        # A per-step loss summed in a helper and returned to a caller of this module that
        # back-propagates it (``l = batch_loss(...); l.backward()``).
        if func is None or not self._result_backpropagated(func):
            return False
        returned: set[str] = set()
        for ret in self.ix.returns_of(func):
            if ret.value is not None:
                returned |= names_in(ret.value)
        return base in _upstream(returned, flows)

    def _flows(self, func) -> list[tuple[set[str], set[str]]]:
        """(names assigned, names read) of every assignment in ``func``."""
        flows = []
        for node in self.ix.assigns_in_function(func):
            if node.value is None:  # type: ignore[attr-defined]
                continue
            # ``losses["loss"] = total`` writes into ``losses``.
            flows.append(({d for t in targets_of(node) for d in _written(t)},
                          names_in(node.value)))  # type: ignore[attr-defined]
        return flows

    def _result_backpropagated(self, func, depth: int = 0) -> bool:
        """What ``func`` returns is back-propagated by a caller of this module, directly
        (``l = batch_loss(...); l.backward()``) or after callers in between hand it on
        through what they return (``self.loss_nce = self.nce_loss(...)``; ``loss_g =
        gan + self.loss_nce; return loss_g``; ``self.compute_loss().backward()``)."""
        for call in self.ix.call_sites(func):
            if self._caller_backpropagates(call):
                return True
            caller = self.ix.function_of(call)
            if depth < 3 and caller is not None and caller is not func \
                    and self._returned_by(caller, call) \
                    and self._result_backpropagated(caller, depth + 1):
                return True
        return False

    def _returned_by(self, func, call: ast.Call) -> bool:
        """The value of ``call`` reaches a ``return`` of ``func``, through assignments."""
        flows = self._flows(func)
        reached = _upstream(self._assigned_from(func, call),
                            [(read, targets) for targets, read in flows])
        for ret in self.ix.returns_of(func):
            if ret.value is not None and (self.ix.within(call, ret.value)
                                          or names_in(ret.value) & reached):
                return True
        return False

    def _caller_backpropagates(self, call: ast.Call) -> bool:
        """What ``call`` returns is back-propagated by the function that makes it, through
        the names it is assigned to."""
        caller = self.ix.function_of(call)
        fed = self.oracle.backwarded_names(caller)
        return bool(fed) and bool(self._assigned_from(caller, call) & fed)

    def _assigned_from(self, func, call: ast.Call) -> set[str]:
        """The names ``func`` assigns a value holding ``call``'s result to (``outputs,
        losses = self.process_batch(x)`` assigns it to both)."""
        out: set[str] = set()
        for node in self.ix.assigns_in_function(func):
            if node.value is not None and self.ix.within(call, node.value):  # type: ignore[attr-defined]
                out |= {d for t in targets_of(node) for d in _written(t)}
        return out

    def _persistent(self, acc: Accumulation, base: str) -> bool:
        """An attribute or a module-level variable outlives one call of its function."""
        if "." in base or self.ix.function_of(acc.node) is None:
            return True
        root = acc.target
        while isinstance(root, (ast.Subscript, ast.Attribute)):
            root = root.value
        if isinstance(root, ast.Name):
            return any(self.ix.function_of(b) is None and not isinstance(b, ast.arg)
                       for b in self.ix.bindings(root))
        return False

    def _lifetime(self, acc: Accumulation, base: str) -> list[ast.AST]:
        """The loops whose iterations the accumulator outlives, innermost first; for an
        attribute or global written in a function that itself steps an optimizer (a
        ``train_step`` method), that function, whose calls are steps."""
        persistent = self._persistent(acc, base)
        if persistent:
            chains = self.ix.loop_chains(acc.node)
        else:
            chains = [LoopChain(tuple(self.ix.loops_of(acc.node)), False)]
        for chain in chains:
            lifetime = []
            for loop in chain.loops:
                if self._resets(loop, acc, base):
                    break
                lifetime.append(loop)
            if lifetime:
                return lifetime
        func = self.ix.function_of(acc.node)
        if persistent and func is not None and not chains and self.ev.summary(func).step_calls:
            if not self._resets(func, acc, base):
                return [func]
        return []

    def _resets(self, scope: ast.AST, acc: Accumulation, base: str, depth: int = 0) -> bool:
        """Each run of ``scope`` (a loop's iteration, a function's call) gives the
        accumulator a fresh value, unconditionally or together with an optimizer step."""
        ix = self.ix
        func = scope if isinstance(scope, FUNCTIONS) else ix.function_of(scope)
        written = self.ix.source(acc.target)
        for node in ix.assigns_in_function(func):
            if node is acc.node or isinstance(node, ast.AugAssign) or node.value is None:  # type: ignore[attr-defined]
                continue
            if not ix.in_body(node, scope):
                continue
            if any(dotted(t) == base or self.ix.source(t) == written for t in targets_of(node)):
                if base in names_in(node.value):  # type: ignore[attr-defined]
                    continue  # ``total = total + x`` carries the old value on
                if not ix.conditional_within(node, scope) or self._with_a_step(node, scope):
                    return True
        for call in ix.calls_in_function(func):
            if not ix.in_body(call, scope) or ix.conditional_within(call, scope):
                continue
            if isinstance(call.func, ast.Attribute) and call.func.attr in _RESETS:
                if dotted(call.func.value) == base:
                    return True
            callee = ix.resolve_call(call)
            if callee is not None and base.startswith("self.") and depth < MAX_CALLER_DEPTH:
                if self._helper_resets(callee, base):
                    return True
        return False

    def _with_a_step(self, node: ast.AST, scope: ast.AST) -> bool:
        """``node`` sits in an ``if`` branch that also steps (``if (i + 1) % k == 0:
        opt.step(); total = 0``): the accumulator lives for one optimizer step."""
        child = node
        for anc in self.ix.ancestors(node):
            if anc is scope:
                return False
            branch = None
            if isinstance(anc, ast.If):
                branch = anc.body if in_list(child, anc.body) else anc.orelse if in_list(child, anc.orelse) else None
            elif isinstance(anc, (*LOOPS, *TRIES)) and in_list(child, anc.orelse):
                branch = anc.orelse
            if branch is not None:
                func = self.ix.function_of(node)
                return any(self.ev.events_in(s, func).step_calls for s in branch)
            child = anc
        return False

    @staticmethod
    def _helper_resets(func, base: str) -> bool:
        return any(isinstance(stmt, ast.Assign) and any(dotted(t) == base for t in stmt.targets)
                   for stmt in func.body)

    def _kind(self, acc: Accumulation, loss: LossValue, outer: ast.AST) -> Kind | None:
        ix = self.ix
        func = ix.function_of(outer)
        inside = self.ev.events_in(outer, func)
        if inside.step_calls:
            return Kind.TRAINING
        if inside.backwards:
            # Backward on every iteration but the step outside these loops: micro-batches
            # of one step, whose graphs are freed once the step is done.
            around = self.ev.summary(func) if func is not None else self.ev.events_in(ix.tree, None)
            return None if around.step_calls else Kind.TRAINING
        if any(self.ev.events_in(loop, func).step_calls for loop in ix.loops_of(outer)):
            # ``for i in range(n_classes): part += loss_i`` inside a training step, reset
            # every step: the graphs live no longer than that step's own.
            return None
        where = loss.definition if loss.definition is not None else acc.node
        if ix.grad_mode(where) is GradMode.ENABLED or (
            ix.grad_mode(where) is GradMode.INHERITED and self._grad_enabled(where, 0)
        ):
            return None if self._grad_switched_off_globally() else Kind.EVALUATION
        return None

    def _grad_enabled(self, node: ast.AST, depth: int) -> bool:
        """Whether the code around ``node`` provably runs with autograd on: it is a script's
        module-level entry code, its function back-propagates, or a same-module caller
        calls that function with autograd on."""
        func = self.ix.function_of(node)
        if func is None:
            return self._script_entry(node)
        if func in self._enabled:
            return self._enabled[func]
        self._enabled[func] = False  # recursion guard
        result = bool(self.ev.summary(func).backwards)
        if not result and depth < MAX_CALLER_DEPTH:
            for site in self.ix.call_sites(func):
                mode = self.ix.grad_mode(site)
                if mode is GradMode.ENABLED or (
                    mode is GradMode.INHERITED and self._grad_enabled(site, depth + 1)
                ):
                    result = True
                    break
        self._enabled[func] = result
        return result

    def _script_entry(self, node: ast.AST) -> bool:
        """``node`` is in module-level code a script runs: a top-level loop, the
        ``if __name__ == "__main__":`` block, or a bare top-level call (``main()``).
        Anything else at module level (an assignment, a ``with`` or ``try``) is not taken
        as proof; ``GRAD_ON_TEXT`` relies on this list."""
        top = node
        for anc in self.ix.ancestors(node):
            if isinstance(anc, ast.Module):
                break
            top = anc
        if isinstance(top, LOOPS):
            return True
        if isinstance(top, ast.If):
            return "__main__" in self.ix.source(top.test)
        return isinstance(top, ast.Expr) and isinstance(top.value, ast.Call)

    def _grad_switched_off_globally(self) -> bool:
        """``torch.set_grad_enabled(False)`` as a statement: we cannot tell where it holds.
        (Once per module: every evaluation-kind accumulation asks.)"""
        if self._switched_off is None:
            self._switched_off = any(
                isinstance(self.ix.parent(call), ast.Expr)
                and (dotted(call.func) or "").rsplit(".", 1)[-1] == "set_grad_enabled"
                and self.ix.qualified(call.func) & {"torch.set_grad_enabled", "torch.autograd.set_grad_enabled"}
                for call in self.ix.calls())
        return self._switched_off


# -- runtime probe -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Observation:
    step: int
    graph_tensors: int  # tensors in the accumulator that still have a grad_fn
    nodes: int  # autograd nodes reachable from them (capped)
    grad_fn: str | None


class LossTensorAccumulatedProbe(Probe):
    """Reads the accumulator each time the flagged statement has run.

    A tensor with a ``grad_fn`` (or a list, tuple, deque or dict holding such tensors, or
    for a meter, an attribute of the meter holding one) still references its graph; seen after two or more optimizer steps (two or more
    passes for an evaluation finding), it confirms the finding, with the number of
    autograd nodes it keeps reachable then and at the first observation. Plain numbers
    and detached tensors refute it.
    """

    ENOUGH = 3
    #: Graph walks stop here: enough to show growth, bounded on huge graphs.
    NODE_CAP = 200_000
    #: Container elements looked at (the newest ones, where a leak shows first).
    ELEMENT_CAP = 1_000

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.name = finding.data.get("accumulator", "")
        self.evaluation = finding.data.get("kind") == Kind.EVALUATION.value
        #: The accumulator is a meter object: its attributes hold the sums.
        self.meter = bool(finding.data.get("meter"))
        self.runs = 0
        self.detached_runs = 0
        self.held_type: str | None = None
        self.first: _Observation | None = None
        self.last: _Observation | None = None

    def install(self) -> None:
        self.rt.after_line(self.finding.path, self.finding.line, self._after)

    def _after(self, frame: Any) -> None:
        if self.settled():
            return  # the verdict cannot change; spare the graph walks
        try:
            value = self.rt.object_of(frame, self.name)
        except LookupError:
            return
        self.runs += 1
        self.held_type = type(value).__name__
        tensors = self._graph_tensors(value)
        if not tensors:
            self.detached_runs += 1
            return
        seen = _Observation(self.rt.step, len(tensors), self._reachable(tensors),
                            type(tensors[-1].grad_fn).__name__)
        self.first = self.first or seen
        self.last = seen

    def _graph_tensors(self, value: Any, depth: int = 0) -> list:
        torch = self.rt.torch
        if isinstance(value, torch.Tensor):
            return [value] if value.grad_fn is not None else []
        if depth > 1:
            return []
        if isinstance(value, dict):
            items = list(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__ == "deque":
            items = list(value)
        elif self.meter and hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
            items = list(vars(value).values())  # ``meter.sum``, ``meter.history``
        else:
            return []
        out = []
        for item in items[-self.ELEMENT_CAP:]:
            out += self._graph_tensors(item, depth + 1)
        return out

    def _reachable(self, tensors: list) -> int:
        seen: set[int] = set()
        todo = [t.grad_fn for t in tensors]
        while todo and len(seen) < self.NODE_CAP:
            fn = todo.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            todo.extend(next_fn for next_fn, _ in getattr(fn, "next_functions", ()))
        return len(seen)

    def _span(self) -> int:
        """Steps (passes, for evaluation) the accumulator has outlived with a graph."""
        if self.first is None or self.last is None:
            return 0
        if self.evaluation:
            return self.runs - self.detached_runs
        return self.last.step - self.first.step + 1

    def settled(self) -> bool:
        return self._span() >= 2 or self.detached_runs >= self.ENOUGH

    def verdict(self) -> Verdict | None:
        if not self.runs:
            return None
        where = f"`{self.name}` (line {self.finding.line})"
        if self.last is None:
            return self.refuted(
                f"{where} held no tensor with an autograd graph after any of {self.runs} "
                f"run(s) of the line (it held a {self.held_type})",
                runs=self.runs, held_type=self.held_type,
            )
        first, last = self.first, self.last
        unit = "pass(es)" if self.evaluation else "optimizer step(s)"
        figures = {
            "runs": self.runs,
            "steps": self._span(),
            "grad_fn": last.grad_fn,
            "graph_nodes": last.nodes,
            "graph_nodes_first": first.nodes,
            "graph_tensors": last.graph_tensors,
        }
        growth = (
            f", up from {first.nodes} after the first"
            if last.nodes > first.nodes else ""
        )
        return self.confirmed(
            f"after {self._span()} {unit}, {where} still held "
            f"{'a tensor' if last.graph_tensors == 1 else f'{last.graph_tensors} tensors'} "
            f"with grad_fn={last.grad_fn}, keeping {last.nodes} autograd node(s) "
            f"reachable{growth}: every step's graph stays alive",
            **figures,
        )


# -- fix (mllint.fixes): kept apart from the check above -------------------------------------

from mllint.fixes import Fix, FixFile, FixSpec, method_call  # noqa: E402

#: Calls that read an accumulator as a number (or a list of numbers) and would read a
#: float (or a list of floats) the same way.
_NUMERIC_READERS = frozenset({
    "print", "float", "int", "round", "len", "sum", "min", "max", "abs", "str", "repr",
    "format", "mean", "median", "fmean", "average", "std", "isnan", "isfinite",
    "add_scalar", "add_scalars", "log", "log_metric", "log_metrics", "info", "debug",
    "warning", "write", "set_postfix", "set_description",
})
_CONTAINER_METHODS = frozenset({"append", "insert", "clear", "extend"})


def _read_as_number(file: FixFile, node: cst.CSTNode, depth: int = 0,
                    name: str = "") -> bool:
    """Whether the value at ``node`` (a reference to ``name``) is only ever read the way a
    float would be."""
    parent = file.parent(node)
    if isinstance(parent, (cst.AssignTarget, cst.AugAssign)) and parent.target is node:
        return True  # written, not read
    if isinstance(parent, cst.Subscript) and parent.value is node:
        return _read_as_number(file, parent, depth, name)  # ``meters["loss"]``
    if isinstance(parent, cst.Attribute) and parent.value is node:
        return (parent.attr.value in _CONTAINER_METHODS
                and isinstance(file.parent(parent), cst.Call))
    if isinstance(parent, (cst.Comparison, cst.ComparisonTarget,
                           cst.FormattedStringExpression, cst.AugAssign)):
        return True
    if isinstance(parent, (cst.BinaryOperation, cst.UnaryOperation)):
        return _read_as_number(file, parent, depth, name)  # ``total / n``: as what it joins
    if isinstance(parent, cst.Arg):
        call = file.parent(parent)
        func = call.func if isinstance(call, cst.Call) else None
        name = func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", "")
        return name in _NUMERIC_READERS
    if isinstance(parent, cst.Assign) and depth < 3:
        # ``avg = total / n``: follow the new name, twice at most.
        return all(isinstance(t.target, cst.Name) and (
            t.target.value == name  # ``total = total + ...``: the accumulator itself
            or _name_read_as_number(file, t.target.value, depth + 1)) for t in parent.targets)
    return False


def _name_read_as_number(file: FixFile, name: str, depth: int = 0) -> bool:
    if not name.isidentifier():
        return False  # ``self.total``: read from anywhere the object goes
    references = [n for n in file.walk(cst.Name) if n.value == name and not (
        isinstance(file.parent(n), cst.Attribute) and file.parent(n).attr is n)]
    return all(_read_as_number(file, n, depth, name) for n in references)


def _fix(file: FixFile, finding) -> Fix | None:
    node = file.node_for(finding, (cst.AugAssign, cst.Assign, cst.Call))
    accumulator = finding.data.get("accumulator")
    if node is None or not accumulator:
        return None
    if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign):
        value = node.value
    elif isinstance(node, cst.Assign) and isinstance(node.value, cst.BinaryOperation):
        op = node.value
        target = file.code(node.targets[0].target).strip()
        value = op.right if file.code(op.left).strip() == target else op.left
    elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and \
            node.func.attr.value in ("append", "insert") and node.args:
        value = node.args[-1].value
    else:
        return None
    if "\n" in file.source(value):
        return None
    safe = _name_read_as_number(file, accumulator)
    new = method_call(file, value, "item")
    return Fix(f"Accumulate `{new}`", safe, (file.replace(value, new),))


LossTensorAccumulated.FIX = FixSpec(
    safety="""
    The fix accumulates `loss.item()` (a Python float) instead of the tensor. It is safe
    when the accumulator is only read as a number: printed, formatted, logged, averaged
    with `sum`/`len`/`mean`, compared, or combined arithmetically into values read the
    same way. It is unsafe when anything else reads it (`torch.stack(losses)`,
    `total.backward()`, `total.item()`, returned to a caller), because a float does not
    behave like a tensor there. `losses.extend([loss])` and accumulators written by helper
    methods have no fix.
    """,
    make=_fix,
)
