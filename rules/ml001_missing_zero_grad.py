"""ML001 missing-zero-grad: gradients never cleared between optimizer steps."""

from __future__ import annotations

import ast
import dataclasses
import enum
import re
import weakref
from typing import Any

import libcst as cst

from mllint.analysis.pyast.grads import BACKWARD_SIGNS, STEP_TEXT, Events, GradEvents, Step
from mllint.analysis.pyast.index import LOOPS, TRIES, LoopChain, ModuleIndex, position
from mllint.gates.resolve import dotted, of_type
from mllint.rule import AstRule, Invalid, Valid
from mllint.types import Verdict
from mllint.verify.probe import Probe

#: Calls that take an optimizer without clearing its gradients, so passing it to them
#: does not hide a ``zero_grad()`` from us.
_HARMLESS_METHODS = frozenset({"step", "unscale_", "update", "scale", "append", "state_dict", "format"})
_HARMLESS_PREFIXES = ("torch.", "builtins.", "math.", "numpy.", "logging.")


class Kind(str, enum.Enum):
    NEVER_CLEARED = "never-cleared"
    CLEARED_BEFORE_STEP = "cleared-before-step"
    #: Cleared on every iteration of a loop that steps only every k-th (accumulation).
    CLEARED_EACH_MICRO_BATCH = "cleared-each-micro-batch"


#: The test of an ``if`` that makes a step wait for several backward passes.
_ACCUMULATION_TEST = re.compile(r"%|accum|update_freq|iters_to", re.IGNORECASE)


#: What a benchmark reads to time the code it repeats.
_CLOCKS = frozenset({"time.time", "time.perf_counter", "time.monotonic", "time.process_time",
                     "torch.cuda.synchronize", "timeit.default_timer"})


class MissingZeroGrad(AstRule):
    """
    ## What it does
    Finds training loops that call `backward()` and an optimizer's `step()` but never
    clear the gradients on the way (no `optimizer.zero_grad()`, `model.zero_grad()`,
    `p.grad = None`, nor a same-module helper that does one of these), straight-line
    code that clears them *between* `backward()` and `step()`, and gradient accumulation
    that clears on every micro-batch while the step waits for `if i % accum == 0:`.

    Optimizers are recognised by how they were built (`torch.optim.*` and the optimizers
    of common libraries, aliases included, `self.optimizer = ...` in a trainer class,
    factories and `accelerator.prepare`), `scaler.step(optimizer)` counts as a step of
    `optimizer`, and helpers, `step(closure)` closures and callers' loops are followed.

    ## Why is this bad?
    `backward()` *adds* to `.grad`. Without clearing, step *n* applies the sum of the
    gradients of all *n* batches so far: the effective learning rate grows with every
    step and old batches keep pushing the weights. Training often still "works" a little,
    so nothing crashes; the model is just worse. Clearing between `backward()` and
    `step()` is the opposite bug: every step applies zero gradients.

    ## Known problems
    Gradient accumulation is recognised by the clearing being somewhere in the loop
    (typically under `if (i + 1) % k == 0:`); a loop that deliberately never clears is
    flagged. An optimizer handed inside the loop to a function of another module of the
    project is assumed cleared there only when that function (or what it hands the
    optimizer on to) can clear gradients; handed to a library's code, it is assumed
    cleared. An optimizer that arrives as an unannotated parameter
    no same-module caller fills is recognised only when the module calls `zero_grad()`
    on that name elsewhere, so such a `train(model, optimizer, loader)` with no clearing
    anywhere in its file is missed.

    ## How --verify confirms it
    At every `backward()` inside the flagged loop, the probe looks at the parameters of
    the stepped optimizer: gradients that survived an earlier `step()` confirm the
    finding (with the step number, the leftover gradient norm and the optimizer class);
    so does a `step()` applying all-zero gradients. Gradients that are `None` or zero
    before each backward following a step refute it. For accumulation, a backward that
    finds the gradients of an earlier micro-batch (since the last step) gone confirms it;
    steps that applied the gradients of several backward passes refute it.
    """

    code = "ML001"
    name = "missing-zero-grad"
    summary = "Gradients are never cleared between optimizer steps (or cleared before the step)"
    hint = "Call `optimizer.zero_grad()` once per step: before `loss.backward()` or right after `optimizer.step()`."
    REQUIRES = (STEP_TEXT, BACKWARD_SIGNS)
    PROBE = "mllint.rules.ml001_missing_zero_grad:MissingZeroGradProbe"

    VALID = [
        Valid(
            """
            import torch

            model = torch.nn.Linear(4, 1)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in loader:
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                optimizer.step()
            """
        ),
        Valid(  # gradient accumulation
            """
            import torch

            opt = torch.optim.AdamW(model.parameters())
            for i, (x, y) in enumerate(loader):
                loss = model(x).sum() / 4
                loss.backward()
                if (i + 1) % 4 == 0:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            """
        ),
        Valid(  # a helper clears them; zero_grad on the model
            """
            import torch

            def reset(model):
                model.zero_grad()

            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x in data:
                reset(model)
                model(x).sum().backward()
                opt.step()
            """
        ),
        Valid(  # LBFGS closure
            """
            import torch

            opt = torch.optim.LBFGS(model.parameters())
            for _ in range(10):
                def closure():
                    opt.zero_grad()
                    loss = model(x).sum()
                    loss.backward()
                    return loss
                opt.step(closure)
            """
        ),
        Valid(  # GradScaler steps, p.grad = None clears
            """
            import torch

            opt = torch.optim.Adam(model.parameters())
            scaler = torch.amp.GradScaler()
            for x in data:
                for p in model.parameters():
                    p.grad = None
                scaler.scale(model(x).sum()).backward()
                scaler.step(opt)
                scaler.update()
            """
        ),
        Valid(  # a scheduler's step is not an optimizer's; backward without step
            """
            import torch

            sched = torch.optim.lr_scheduler.StepLR(opt, 10)
            for x in data:
                model(x).sum().backward()
                sched.step()
            """
        ),
        Valid(  # a WGAN: the generator is cleared every iteration and trained every n-th
            """
            import torch

            opt_d = torch.optim.RMSprop(critic.parameters(), lr=5e-5)
            opt_g = torch.optim.RMSprop(generator.parameters(), lr=5e-5)
            for i, real in enumerate(loader):
                opt_d.zero_grad()
                fake = generator(torch.randn(64, 100))
                (critic(fake).mean() - critic(real).mean()).backward()
                opt_d.step()
                opt_g.zero_grad()
                if i % n_critic == 0:
                    (-critic(generator(torch.randn(64, 100))).mean()).backward()
                    opt_g.step()
            """
        ),
        Valid(  # a timed benchmark repeating one step on fixed tensors, not training
            """
            import time
            import torch

            def benchmark(layer, x, target, steps=1000):
                optimizer = torch.optim.Adam(layer.parameters(), 1e-4)
                start = time.time()
                for i in range(steps):
                    loss = ((layer(x) - target) ** 2).mean()
                    loss.backward()
                    optimizer.step()
                return (time.time() - start) / steps
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            model = torch.nn.Linear(4, 1)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in loader:
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                optimizer.step()
            """,
            lines=(8,),
        ),
        Invalid(  # cleared between backward and step
            """
            from torch.optim import AdamW as Opt

            opt = Opt(model.parameters())
            for x in data:
                loss = model(x).sum()
                loss.backward()
                opt.zero_grad()
                opt.step()
            """,
            lines=(8,),
        ),
        Invalid(  # trainer class: the optimizer is an attribute, the step a method
            """
            import torch

            class Trainer:
                def __init__(self, model):
                    self.model = model
                    self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

                def train_step(self, x):
                    self.model(x).sum().backward()
                    self.optimizer.step()

                def fit(self, data):
                    for x in data:
                        self.train_step(x)
            """,
            lines=(10,),
        ),
        Invalid(  # cleared once per epoch only
            """
            import torch

            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for epoch in range(3):
                opt.zero_grad()
                for x in data:
                    model(x).sum().backward()
                    opt.step()
            """,
            lines=(8,),
        ),
        Invalid(  # the optimizer class is a parameter; cleared right before the step
            """
            from torch.optim import Adam

            class Trainer:
                def __init__(self, model, accelerator, optimizer_klass=Adam, lr=3e-4):
                    self.model = model
                    self.accelerator = accelerator
                    self.optimizer = optimizer_klass(model.parameters(), lr=lr)

                def fit(self, loader):
                    for batch in loader:
                        self.accelerator.backward(self.model(batch))
                        self.optimizer.zero_grad()
                        self.optimizer.step()
            """,
            lines=(13,),
        ),
        Invalid(  # timed, but each iteration trains on another batch: training
            """
            import time
            import torch

            def train(layer, data, targets, steps=1000):
                optimizer = torch.optim.Adam(layer.parameters(), 1e-4)
                start = time.time()
                for i in range(steps):
                    loss = ((layer(data[i]) - targets[i]) ** 2).mean()
                    loss.backward()
                    optimizer.step()
                return (time.time() - start) / steps
            """,
            lines=(10,),
        ),
    ]

    def check(self, tree: ast.Module) -> None:
        if not self._may_step(tree):
            return
        ix = ModuleIndex(tree, self.context.source, self.context.project, self.context.star_imports)
        events = GradEvents(ix)
        if not events.backwards:
            return
        self._ix = ix
        reported: set[ast.AST] = set()
        for step in events.steps():
            if self._check_closure_clears_after_backward(ix, events, step):
                continue
            if self._check_cleared_before_step(ix, events, step):
                continue
            if self._check_cleared_each_micro_batch(ix, events, step, reported):
                continue
            self._check_never_cleared(ix, events, step)

    @staticmethod
    def _may_step(tree: ast.Module) -> bool:
        """Some ``x.step(...)`` call: without one there is no optimizer step to judge."""
        return any(isinstance(c.func, ast.Attribute) and c.func.attr == "step"
                   for c in of_type(tree, ast.Call))

    def _source(self, node: ast.AST | list[ast.stmt]) -> str:
        """The code of a node (or of the statements of one line) on one line."""
        if isinstance(node, list):
            return "; ".join(self._ix.source(s) for s in node)
        return self._ix.source(node)

    # -- never cleared -----------------------------------------------------------------

    def _check_never_cleared(self, ix: ModuleIndex, ev: GradEvents, step: Step) -> None:
        for chain in ix.loop_chains(step.call):
            loop = chain.loops[0]
            inner = ev.events_in(loop, ix.function_of(loop))
            if not inner.backwards or inner.unknown_closures:
                continue
            if self._clears(ev, inner, step) or self._cleared_by_outer_loop(ix, ev, chain, step):
                continue
            if self._passes_optimizer_away(ix, loop, step):
                continue
            if self._timed_repetition(ix, loop):
                continue
            # The backward pass this step applies: the last one before it (a GAN's
            # generator step follows the discriminator's backward and its own).
            before = [b for b in inner.backwards if position(b) < position(step.call)]
            backward = max(before, key=position) if before else min(inner.backwards, key=position)
            self._report(ix, ev, step, loop, backward, None, Kind.NEVER_CLEARED)
            return

    def _timed_repetition(self, ix: ModuleIndex, loop: ast.AST) -> bool:
        """A speed or memory benchmark, not training: ``for i in range(n):`` whose body
        never reads ``i`` nor draws a batch (``next(...)``, an inner loop), so every
        iteration repeats the same step on the same tensors, in a function that reads a
        clock (``time.time()``, ``time.perf_counter()``) or synchronises the GPU to time
        it. Whether the gradients are cleared changes no figure such a loop measures."""
        if not isinstance(loop, (ast.For, ast.AsyncFor)) or not isinstance(loop.iter, ast.Call):
            return False
        if "builtins.range" not in ix.qualified(loop.iter.func) or not isinstance(loop.target, ast.Name):
            return False
        counter = loop.target.id
        for node in (n for stmt in loop.body for n in ast.walk(stmt)):
            if isinstance(node, LOOPS):
                return False
            if isinstance(node, ast.Name) and node.id == counter:
                return False
            if isinstance(node, ast.Call) and "builtins.next" in ix.qualified(node.func):
                return False
        func = ix.function_of(loop)
        return func is not None and any(
            ix.qualified(c.func) & _CLOCKS for c in ix.calls_in_function(func))

    def _clears(self, ev: GradEvents, events: Events, step: Step) -> bool:
        return any(ev.clears_optimizer(c, step) for c in events.clears)

    def _cleared_by_outer_loop(self, ix: ModuleIndex, ev: GradEvents, chain: LoopChain, step: Step) -> bool:
        """A step taken only on some iterations of its loop (accumulation over an inner
        loop of micro-batches) is cleared per step by an outer loop that clears."""
        if not chain.guarded:
            return False
        return any(
            self._clears(ev, ev.events_in(outer, ix.function_of(outer)), step)
            for outer in chain.loops[1:]
        )

    def _passes_optimizer_away(self, ix: ModuleIndex, loop: ast.AST, step: Step) -> bool:
        """The loop hands the optimizer to code this module does not show, which may
        clear its gradients (``train_utils.optimizer_step(opt)``)."""
        func = ix.function_of(loop)
        if ix.function_of(step.call) is not func:
            return False
        wanted = dotted(step.optimizer)
        for call in ix.calls_in_function(func):
            if call is step.call or not ix.within(call, loop) or ix.resolve_call(call) is not None:
                continue
            if isinstance(call.func, ast.Attribute) and call.func.attr in _HARMLESS_METHODS:
                continue
            given = [a.value if isinstance(a, ast.Starred) else a for a in call.args]
            given += [k.value for k in call.keywords]
            if not any(dotted(a) == wanted for a in given):
                continue
            if any(n.startswith(_HARMLESS_PREFIXES) for n in ix.qualified(call.func)):
                continue
            if self._may_clear(call):
                return True
        return False

    def _may_clear(self, call: ast.Call) -> bool:
        """A function of another module of the project clears only if its code (or code
        it hands its arguments to) can; anything else handed the optimizer may."""
        view = self.context.project
        callee = dotted(call.func)
        if view is None or callee is None:
            return True
        return view.may_clear_gradients(callee) is not False

    # -- cleared between backward() and step() -----------------------------------------

    def _check_cleared_before_step(self, ix: ModuleIndex, ev: GradEvents, step: Step) -> bool:
        stmt = ix.parent(step.call)
        if not isinstance(stmt, ast.Expr):
            return False  # only a step that is a statement of its own
        func = ix.function_of(step.call)
        sole = self._sole_optimizer(ix, ev, step, func)
        clear: ast.AST | list[ast.stmt] | None = None
        current: ast.stmt = stmt
        while True:
            block = ix.parent(current)
            body = _block_holding(block, current)
            if body is None:
                return False
            before = body[: next(i for i, s in enumerate(body) if s is current)]
            # Statements ending on the step's own line share its line: not before it.
            before = [s for s in before if current is not stmt or s.end_lineno < stmt.lineno]
            for prev in reversed(_lines(before)):
                backwards = [b for s in prev for b in ev.events_in(s, func).backwards]
                if backwards:
                    if clear is None:
                        return False
                    loops = ix.loops_of(step.call)
                    region = loops[0] if loops else func
                    self._report(ix, ev, step, region, backwards[-1], clear, Kind.CLEARED_BEFORE_STEP)
                    return True
                if clear is None:
                    clear = self._unconditional_clear(ix, ev, prev, step, sole, set())
            if not isinstance(block, (ast.With, ast.AsyncWith)):
                return False
            current = block

    def _check_closure_clears_after_backward(self, ix: ModuleIndex, ev: GradEvents, step: Step) -> bool:
        """``opt.step(closure)`` (LBFGS) whose closure clears the gradients after its own
        ``backward()``: the step re-evaluates the closure and reads zero gradients."""
        closure = ev.function_named(step.closure) if step.closure is not None else None
        if closure is None:
            return False
        mine = dotted(step.optimizer)
        backward = None
        for line in _lines(closure.body):
            found = [b for s in line for b in ev.events_in(s, closure).backwards]
            if found:
                backward = found[-1]
                continue
            if backward is None or isinstance(line[0], _COMPOUND):
                continue
            for small in line:
                node = small.value if isinstance(small, ast.Expr) else small
                for clear in ev.clears_at(node):
                    if clear.receiver is None or dotted(clear.receiver) == mine or not ev.is_optimizer(clear.receiver):
                        self._report(ix, ev, step, closure, backward, node, Kind.CLEARED_BEFORE_STEP)
                        return True
        return False

    # -- cleared on every micro-batch of an accumulation ---------------------------------

    def _check_cleared_each_micro_batch(self, ix: ModuleIndex, ev: GradEvents, step: Step,
                                        reported: set[ast.AST]) -> bool:
        """A loop that back-propagates on every iteration but steps only under an
        accumulation test (``if i % accum == 0:``), while clearing the same optimizer
        unconditionally on every iteration: each step sees one micro-batch's gradient."""
        loops = ix.loops_of(step.call)
        if not loops:
            return False
        loop = loops[0]
        guard = self._accumulation_guard(ix, step.call, loop)
        if guard is None:
            return False
        func = ix.function_of(step.call)
        inner = ev.events_in(loop, func)
        if any(ix.within(b, guard) for b in inner.backwards):
            return False  # the guarded block runs a pass of its own (a GAN's n_critic)
        backwards = inner.backwards
        if not backwards:
            return False
        mine = ev.identity(step.optimizer)
        for clear in inner.clears:
            if clear.receiver is None or ev.identity(clear.receiver) != mine:
                continue
            if clear.node in reported or not self._every_iteration(ix, clear.node, loop):
                continue
            reported.add(clear.node)
            self._report(ix, ev, step, loop, backwards[0], clear.node,
                         Kind.CLEARED_EACH_MICRO_BATCH, guard=guard)
            return True
        return False

    def _accumulation_guard(self, ix: ModuleIndex, node: ast.AST, loop: ast.AST) -> ast.If | None:
        for anc in ix.ancestors(node):
            if anc is loop:
                return None
            if isinstance(anc, ast.If) and _ACCUMULATION_TEST.search(self._source(anc.test)):
                return anc
        return None

    @staticmethod
    def _every_iteration(ix: ModuleIndex, node: ast.AST, loop: ast.AST) -> bool:
        """``node`` runs on every iteration of ``loop``: no branch or inner loop between."""
        for anc in ix.ancestors(node):
            if anc is loop:
                return True
            if isinstance(anc, (ast.If, *LOOPS, *TRIES, ast.IfExp)):
                return False
        return False

    def _sole_optimizer(self, ix: ModuleIndex, ev: GradEvents, step: Step, func) -> bool:
        """Whether ``step``'s optimizer is the only one stepped in its function, so that
        ``model.zero_grad()`` or ``p.grad = None`` there surely reaches its parameters."""
        mine = ev.identity(step.optimizer)
        return all(ev.identity(s.optimizer) == mine for s in ev.in_function(func).steps)

    def _unconditional_clear(
        self, ix: ModuleIndex, ev: GradEvents, line: list[ast.stmt], step: Step, sole: bool,
        seen: set[ast.AST],
    ) -> ast.AST | list[ast.stmt] | None:
        """The statements of one line (or a compound statement), returned if they always
        clear ``step``'s gradients when they run."""
        first = line[0]
        if isinstance(first, (ast.For, ast.AsyncFor)):
            body = _lines(first.body)
            if body and all(self._unconditional_clear(ix, ev, s, step, sole, seen) for s in body):
                return first
            return None
        if isinstance(first, _COMPOUND):
            return None
        shown = first if len(line) == 1 else line
        for small in line:
            node = small.value if isinstance(small, ast.Expr) else small
            for clear in ev.clears_at(node):
                same = clear.receiver is not None and ev.identity(clear.receiver) == ev.identity(step.optimizer)
                if same or (sole and (clear.receiver is None or not ev.is_optimizer(clear.receiver))):
                    return shown
            if isinstance(node, ast.Call) and sole:
                callee = ix.resolve_call(node)
                if callee is not None and callee not in seen:
                    seen.add(callee)
                    if any(self._unconditional_clear(ix, ev, s, step, sole, seen) for s in _lines(callee.body)):
                        return shown
        return None

    # -- reporting ---------------------------------------------------------------------

    def _report(self, ix, ev, step: Step, region, backward: ast.Call, clear, kind: Kind,
                guard: ast.If | None = None) -> None:
        opt = self._source(step.optimizer)
        func = step.call.func
        stepper = self._source(func) + "(" + (opt if func.value is not step.optimizer else "") + ")"  # type: ignore[attr-defined]
        targets = ev.backward_targets(backward)
        loss = self._source(targets[0]) if targets else "loss"
        bwd = self._source(backward)
        clear_line = (clear[0] if isinstance(clear, list) else clear).lineno if clear is not None else None
        if kind is Kind.NEVER_CLEARED:
            message = (
                f"`{stepper}` runs after `{bwd}` in this loop, but `{opt}`'s gradients are never "
                f"cleared: `backward()` adds to `.grad`, so every step applies the sum of all "
                f"earlier batches' gradients. Call `{opt}.zero_grad()` once per step."
            )
        elif kind is Kind.CLEARED_EACH_MICRO_BATCH:
            message = (
                f"`{self._source(clear)}` (line {clear_line}) clears `{opt}`'s gradients on "
                f"every iteration, but `{stepper}` runs only when `{self._source(guard.test)}`: "
                f"the gradients `{bwd}` accumulates over the micro-batches in between are "
                f"thrown away, so each step applies the last micro-batch's gradient alone. "
                f"Clear them right after the step, under the same condition."
            )
        else:
            message = (
                f"`{self._source(clear)}` (line {clear_line}) clears the gradients that `{bwd}` "
                f"just computed, before `{stepper}` applies them: every step applies zero "
                f"gradients. Clear them before the backward pass or after the step."
            )
        data = {
            "kind": kind.value,
            "optimizer": opt,
            "loss": loss,
            "step_line": step.call.lineno,
            "backward_line": backward.lineno,
        }
        if clear_line is not None:
            data["clear_line"] = clear_line
        self.report(step.call, message, region=region, data=data)


_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, *TRIES,
             ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match)


def _lines(statements: list[ast.stmt]) -> list[list[ast.stmt]]:
    """``statements`` grouped by logical line: simple statements joined by ``;`` share
    one; a compound statement is one of its own."""
    out: list[list[ast.stmt]] = []
    for stmt in statements:
        if (out and not isinstance(stmt, _COMPOUND) and not isinstance(out[-1][-1], _COMPOUND)
                and stmt.lineno == out[-1][-1].end_lineno):
            out[-1].append(stmt)
        else:
            out.append([stmt])
    return out


def _block_holding(block: ast.AST | None, statement: ast.stmt) -> list[ast.stmt] | None:
    """The statement list of ``block`` that holds ``statement``."""
    for name in ("body", "orelse", "finalbody"):
        body = getattr(block, name, None)
        if isinstance(body, list) and any(s is statement for s in body):
            return body
    return None


# -- runtime probe -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Grads:
    """The gradients an optimizer's parameters hold at one moment."""

    norm: float
    holding: int  # parameters whose .grad is non-zero
    params: int

    @property
    def clear(self) -> bool:
        return self.holding == 0


class MissingZeroGradProbe(Probe):
    """Watches the optimizer stepped at the flagged line.

    The optimizer is the one whose ``step()`` runs while the flagged line is on the stack
    (``scaler.step(opt)`` included, as GradScaler calls ``opt.step()``). For a
    never-cleared finding, each interval between two of its steps is judged: the bug is
    an interval in which a backward ran inside the flagged loop yet its gradients were
    never seen cleared (None or zero) at any backward or at the closing step, so the
    closing step applied the previous step's gradients too. Checking whole intervals,
    not just the first backward after a step, keeps correct GANs refuted: there another
    network's backward may run before this optimizer's ``zero_grad()``. For a
    cleared-before-step finding, the probe reads the gradients as the flagged ``step()``
    starts.
    """

    #: Intervals (or steps) after which a clean record refutes the finding.
    ENOUGH = 3

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.kind = Kind(finding.data.get("kind", Kind.NEVER_CLEARED.value))
        self.name = finding.data.get("optimizer", "the optimizer")
        # The step call itself, not the loop: identifies the optimizer.
        self._step_site = dataclasses.replace(finding, region=None)
        self._optimizer: weakref.ref | None = None
        self.optimizer_class: str | None = None
        self.steps = 0
        # The interval since the latest step: a backward in the loop ran; grads seen clear.
        self._backward_in_loop = False
        self._seen_clear = False
        self._first_leftover: _Grads | None = None
        self.clean = 0
        self.bad: tuple[int, _Grads] | None = None  # (step that re-applied, leftover)
        # Accumulation: backward passes in the loop since the latest step, and whether
        # the gradients were found cleared between two of them.
        self._micro_batches = 0
        self._discarded = False
        self.discarded: tuple[int, int] | None = None  # (step, micro-batches before it)
        # ``step(closure)``: backwards run inside the step; every closure evaluation but
        # the very first must start from cleared gradients.
        self._stepping = False
        self._closure_backwards = 0

    def install(self) -> None:
        self.rt.add_step_pre_hook(self._before_step)
        self.rt.add_step_post_hook(self._after_step)
        if self.kind is Kind.NEVER_CLEARED:
            self.rt.on_backward(self._before_backward)
        elif self.kind is Kind.CLEARED_EACH_MICRO_BATCH:
            self.rt.on_backward(self._before_micro_batch)

    # -- callbacks ---------------------------------------------------------------------

    def _watched(self) -> Any:
        return None if self._optimizer is None else self._optimizer()

    def _before_step(self, optimizer: Any) -> None:
        if self.settled():
            return
        if self._watched() is None and self.rt.stack_in(self._step_site) is not None:
            self._optimizer = weakref.ref(optimizer)
            self.optimizer_class = type(optimizer).__name__
        if optimizer is not self._watched() or self.bad is not None:
            return
        if self.kind is Kind.CLEARED_EACH_MICRO_BATCH:
            if self._micro_batches >= 2:
                if self._discarded:
                    self.discarded = (self.steps + 1, self._micro_batches)
                else:
                    self.clean += 1
            return
        self._stepping = True
        grads = self._grads(optimizer)
        if self.kind is Kind.CLEARED_BEFORE_STEP:
            if self.rt.stack_in(self._step_site) is None:
                return
            if grads.clear:
                self.bad = (self.steps + 1, grads)
            else:
                self.clean += 1
            return
        if self.steps == 0 or not self._backward_in_loop:
            return  # no previous step, or nothing of the loop's to judge
        if self._seen_clear or grads.clear:
            self.clean += 1
        else:
            self.bad = (self.steps + 1, self._first_leftover or grads)

    def _after_step(self, optimizer: Any) -> None:
        if optimizer is self._watched():
            self._stepping = False
            self.steps += 1
            self._backward_in_loop = False
            self._seen_clear = False
            self._first_leftover = None
            self._micro_batches = 0
            self._discarded = False

    def _before_micro_batch(self, tensor: Any) -> None:
        """Accumulation: a backward in the loop finding the gradients of an earlier
        micro-batch (since the latest step) gone means they were cleared in between."""
        optimizer = self._watched()
        if optimizer is None or self.settled() or self.rt.stack_in(self.finding) is None:
            return
        if self._micro_batches and self._grads(optimizer).clear:
            self._discarded = True
        self._micro_batches += 1

    def _before_backward(self, tensor: Any) -> None:
        optimizer = self._watched()
        if optimizer is None or self.settled():
            return
        if self._stepping:
            self._closure_backward(optimizer)
            return
        if self.steps == 0:
            return
        if self.rt.stack_in(self.finding) is not None:
            self._backward_in_loop = True
        if self._seen_clear:
            return
        grads = self._grads(optimizer)
        if grads.clear:
            self._seen_clear = True
        elif self._first_leftover is None:
            self._first_leftover = grads

    def _closure_backward(self, optimizer: Any) -> None:
        """A backward inside ``step(closure)``: it must start from cleared gradients,
        except the first evaluation of all (nothing to clear yet)."""
        self._closure_backwards += 1
        if self._closure_backwards == 1:
            return
        grads = self._grads(optimizer)
        if grads.clear:
            self.clean += 1
        else:
            self.bad = (self.steps + 1, grads)

    def _grads(self, optimizer: Any) -> _Grads:
        torch = self.rt.torch
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return _Grads(0.0, 0, len(params))
        with torch.no_grad():
            # Stacked per device: one sync per device however many parameters.
            per_device: dict[Any, list] = {}
            for g in grads:
                per_device.setdefault(g.device, []).append(torch.linalg.vector_norm(g.detach().float()))
            norms = torch.cat([torch.stack(n).cpu() for n in per_device.values()])
            holding = int((norms > 0).sum())
            total = float(torch.linalg.vector_norm(norms))
        return _Grads(total, holding, len(params))

    # -- verdict -----------------------------------------------------------------------

    def _micro_batch_verdict(self, who: str, figures: dict[str, Any]) -> Verdict | None:
        if self.discarded is not None:
            step, micro = self.discarded
            return self.confirmed(
                f"{micro} backward passes ran before step {step} of {who}, but the "
                f"gradients were cleared between them: the step applied the last "
                f"micro-batch's gradient alone",
                step=step, micro_batches=micro, **figures)
        if not self.clean:
            return None  # every step followed a single backward: no accumulation in this run
        return self.refuted(
            f"in {self.clean} step(s) of {who} after several backward passes, the "
            f"gradients accumulated over all of them",
            **figures)

    def settled(self) -> bool:
        return self.bad is not None or self.discarded is not None or self.clean >= self.ENOUGH

    def verdict(self) -> Verdict | None:
        if self._watched() is None and self.optimizer_class is None:
            return None
        figures: dict[str, Any] = {
            "optimizer_class": self.optimizer_class,
            "steps": self.steps,
            "clean_checks": self.clean,
        }
        who = f"`{self.name}` ({self.optimizer_class})"
        if self.kind is Kind.CLEARED_EACH_MICRO_BATCH:
            return self._micro_batch_verdict(who, figures)
        if self.bad is not None:
            step, grads = self.bad
            figures.update(
                step=step,
                leftover_grad_norm=round(grads.norm, 6),
                params_with_grad=grads.holding,
                params=grads.params,
            )
            if self.kind is Kind.CLEARED_BEFORE_STEP:
                return self.confirmed(
                    f"step {step} of {who} applied all-zero gradients: every one of its "
                    f"{grads.params} parameters had a None or zero .grad when step() ran",
                    **figures,
                )
            if self._closure_backwards:
                return self.confirmed(
                    f"in step {step} of {who}, the closure's backward (evaluation "
                    f"{self._closure_backwards}) added to gradients left over from the "
                    f"previous evaluation: they were never cleared in between (norm "
                    f"{grads.norm:.4g} over {grads.holding} of {grads.params} parameters)",
                    closure_evaluations=self._closure_backwards, **figures,
                )
            return self.confirmed(
                f"step {step} of {who} applied gradients left over from step {step - 1}: "
                f"they were never cleared in between (norm {grads.norm:.4g} over "
                f"{grads.holding} of {grads.params} parameters before the next backward)",
                **figures,
            )
        if not self.clean:
            return None  # the loop never ran a full step-to-step interval
        if self.kind is Kind.CLEARED_BEFORE_STEP:
            return self.refuted(
                f"{who} had non-zero gradients at the flagged step() in {self.clean} "
                f"step(s): they are not cleared before it runs",
                **figures,
            )
        if self._closure_backwards:
            return self.refuted(
                f"the gradients of {who} were cleared (None or zero) before each of "
                f"{self.clean} closure evaluation(s) inside step()",
                closure_evaluations=self._closure_backwards, **figures,
            )
        return self.refuted(
            f"between each of {self.clean} pair(s) of consecutive steps, the gradients of "
            f"{who} were cleared (None or zero) before they were applied again",
            **figures,
        )


# -- fix (mllint.fixes): kept apart from the check above -------------------------------------

from mllint.fixes import Fix, FixFile, FixSpec  # noqa: E402


def _fix(file: FixFile, finding) -> Fix | None:
    data = finding.data
    optimizer, line = data.get("optimizer"), data.get("backward_line")
    if data.get("kind") != Kind.NEVER_CLEARED.value or not optimizer or not line:
        return None
    if finding.region is not None and not finding.region.contains_line(line):
        return None  # the backward pass is in a helper: its scope may not see the optimizer
    # The backward call must start its own line, so the new call goes right above it.
    statements = [s for s in file.nodes_on_line(line, cst.SimpleStatementLine)]
    if len(statements) != 1:
        return None
    text = file.line_text(line)
    if file.positions[statements[0]].start.column != len(text) - len(text.lstrip(" \t")):
        return None
    edit = file.insert_line_before(line, f"{optimizer}.zero_grad()")
    return Fix(f"Call `{optimizer}.zero_grad()` before the backward pass", True, (edit,))


MissingZeroGrad.FIX = FixSpec(
    safety="""
    For a loop that never clears the gradients, the fix inserts `optimizer.zero_grad()`
    (with your optimizer's name) on the line above the loop's `backward()` call. It is
    safe: the rule only reports a loop whose steps apply gradients summed over every
    earlier batch, which no correct loop intends (gradient accumulation clears once per
    optimizer step and is not reported). A backward pass in a helper function, or a
    `zero_grad()` that runs between `backward()` and `step()`, has no fix: where the call
    belongs there is a decision for you.
    """,
    make=_fix,
)
