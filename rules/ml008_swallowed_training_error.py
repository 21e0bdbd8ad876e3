"""ML008 swallowed-training-error: a broad ``except`` around training that never re-raises."""

from __future__ import annotations

from typing import Any

import libcst as cst

from mllint.analysis.flow import FLOW_METADATA, Flow
from mllint.analysis.syntax import dotted_name, nodes_of, qualified_names
from mllint.analysis.training import StepSite, TrainingMap
from mllint.analysis.validation.names import is_model_name
from mllint.gates.training import BACKWARD_METHODS, BROAD, STEP_WITH_OPTIMIZER
from mllint.optimizer_names import looks_like_optimizer
from mllint.prefilter import GAP, any_layout, dotted
from mllint.rule import FileContext, Invalid, Rule, Valid
from mllint.types import Position, Span, Verdict
from mllint.verify.probe import InjectedFault, Probe

EXITS = frozenset({"sys.exit", "os._exit", "os.abort", "builtins.exit", "builtins.quit"})


class SwallowedTrainingError(Rule):
    """
    ## What it does
    Flags a bare `except:`, `except Exception` or `except BaseException` (alone or in a
    tuple) whose `try` body runs a training step or loop (`backward()`, an optimizer's
    `step()` or a wrapper of it such as `optimizer.step_and_update_lr()`, or a
    same-module function that does) and whose handler neither re-raises nor exits the
    process. Also flags such a handler around the forward pass (`out = model(x)`,
    `loss = ...`) that `continue`s past the `backward()` and step the loop runs after it.

    ## Why is this bad?
    When a step fails (NaN checks, shape errors, out-of-memory, a bug in a new loss), the
    handler swallows the error and training goes on with the next batch, or the script
    carries on after the loop and exits 0. Even when the handler prints the error, a run
    that skipped half its steps looks like one that finished: the metrics are wrong and
    nobody knows why.

    ## Known problems
    Narrow handlers (`except RuntimeError`, `except torch.cuda.OutOfMemoryError`) are
    never flagged, even when they skip a step: recovering from a known error is a choice.
    `except KeyboardInterrupt:` that saves a checkpoint is fine, and so is skipping a batch
    whose *loading* fails (a `try` around reading a sample, with no forward in it).
    A handler around the whole training loop that prints or logs the traceback
    (`traceback.print_exc()`, `logger.exception(...)`) is not flagged: training stops at
    the error and says why, even though the script then exits 0.

    ## How --verify confirms it
    Runs the script a second, short time and raises an exception once inside the flagged
    `try` body, at the first `backward()` or optimizer step taken from it (for a handler
    that skips the step, at the first forward of a module inside it). If optimizer
    steps still happen afterwards, or the script carries on past the `try`, the error was
    swallowed: confirmed, with the step it was injected at and the steps that followed.
    If the exception propagates and ends the run, the finding is refuted.
    """

    code = "ML008"
    name = "swallowed-training-error"
    summary = "A broad except around a training step that does not re-raise"
    hint = "Catch only the errors you can recover from, or re-raise after logging (`raise`)."
    # A training step is a call of ``.backward(``/``.manual_backward(``, of
    # ``torch.autograd.backward`` (possibly imported under another name, hence "autograd
    # import"), or of a ``.step(`` / ``.optimizer_step(`` / ``.step_and_update_lr(``
    # method; a same-module function or optimizer wrapper that trains contains one of them. Words in comments ("backward compatible",
    # "one step") do not match.
    REQUIRES = ("except", (any_layout(rf"backward{GAP}\("), any_layout(rf"autograd{GAP}import"),
                           any_layout(dotted(rf"(?:optimizer_)?step\w*{GAP}\("))))
    GATE = "mllint.gates.training:swallow_may_flag"
    PROBE = "mllint.rules.ml008_swallowed_training_error:SwallowedTrainingErrorProbe"
    METADATA_DEPENDENCIES = FLOW_METADATA

    INVALID = [
        Invalid(
            """
            def train(model, loader, optimizer, loss_fn):
                for x, y in loader:
                    try:
                        optimizer.zero_grad()
                        loss = loss_fn(model(x), y)
                        loss.backward()
                        optimizer.step()
                    except Exception as exc:
                        print(f"skipping batch: {exc}")
                        continue
            """,
            lines=(8,),
        ),
        Invalid(
            """
            import torch

            def train_epoch(model, loader, opt):
                for x, y in loader:
                    opt.zero_grad()
                    model(x).sum().backward()
                    opt.step()

            def main(model, loader):
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
                try:
                    for epoch in range(10):
                        train_epoch(model, loader, opt)
                except:
                    pass
                torch.save(model.state_dict(), "model.pt")
            """,
            lines=(14,),
        ),
        Invalid(
            # A failing forward is skipped, and with it the backward and the step.
            """
            def train(model, loader, optimizer, criterion):
                for x, y in loader:
                    try:
                        loss = criterion(model(x), y)
                    except Exception as exc:
                        print("bad batch:", exc)
                        continue
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            """,
            lines=(5,),
        ),
        Invalid(
            # A printed traceback does not help when the loop goes on past the failure.
            """
            import logging
            log = logging.getLogger(__name__)
            def train(model, loader, optimizer, loss_fn):
                for epoch in range(10):
                    try:
                        for x, y in loader:
                            optimizer.zero_grad()
                            loss_fn(model(x), y).backward()
                            optimizer.step()
                    except Exception:
                        log.exception("epoch %d failed", epoch)
            """,
            lines=(10,),
        ),
        Invalid(
            # The step taken through an optimizer wrapper (a learning-rate schedule).
            """
            def train_epoch(model, loader, optimizer):
                for src, tgt in loader:
                    try:
                        optimizer.zero_grad()
                        model(src, tgt).mean().backward()
                        optimizer.step_and_update_lr()
                    except:
                        pass
            """,
            lines=(7,),
        ),
    ]
    VALID = [
        Valid(
            # The loop stops at the first error and its traceback is printed.
            """
            import traceback
            def main(model, loader, optimizer, loss_fn):
                try:
                    for epoch in range(10):
                        for x, y in loader:
                            optimizer.zero_grad()
                            loss_fn(model(x), y).backward()
                            optimizer.step()
                except Exception:
                    traceback.print_exc()
                finally:
                    print("done")
            """
        ),
        Valid(
            """
            import logging

            def train(model, loader, optimizer, loss_fn):
                for x, y in loader:
                    try:
                        optimizer.zero_grad()
                        loss = loss_fn(model(x), y)
                        loss.backward()
                        optimizer.step()
                    except Exception:
                        logging.exception("step failed")
                        raise
            """
        ),
        Valid(
            """
            import sys
            import torch

            def run(model, loader, optimizer, loss_fn):
                try:
                    for x, y in loader:
                        optimizer.zero_grad()
                        loss_fn(model(x), y).backward()
                        optimizer.step()
                except KeyboardInterrupt:
                    torch.save({"model": model.state_dict(),
                                "optimizer": optimizer.state_dict()}, "interrupted.pt")
                except BaseException as exc:
                    print("training failed:", exc)
                    sys.exit(1)
            """
        ),
        Valid(
            """
            import torch

            def train(model, loader, optimizer, loss_fn, log):
                for x, y in loader:
                    try:
                        optimizer.zero_grad()
                        loss_fn(model(x), y).backward()
                        optimizer.step()
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        continue
                    try:
                        log.write(f"{loss_fn}\\n")
                    except Exception:
                        pass
            """
        ),
        Valid(
            """
            def load_batches(loader):
                batches = []
                try:
                    for batch in loader:
                        batches.append(batch)
                except Exception as exc:
                    print("bad sample", exc)
                return batches

            def step(scheduler, model):
                scheduler.step()
            """
        ),
        Valid(
            # Skipping a sample that fails to load is a choice; no forward is in the try.
            """
            def train(model, paths, optimizer, criterion, load):
                for path in paths:
                    try:
                        x, y = load(path)
                    except Exception:
                        continue
                    optimizer.zero_grad()
                    criterion(model(x), y).backward()
                    optimizer.step()
            """
        ),
        Valid(  # a loop shared by both phases, run for validation under no_grad; the
            # handler is the early-stopping exit and ends training
            """
            import torch

            def make_loop(model, loss_fn, optimizer, data):
                def run(phase):
                    loss = loss_fn(model(data.x), data.y)
                    if phase == "train":
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    elif loss.item() > 10:
                        raise Exception("patience has run out")
                return run

            def train(model, data):
                optimizer = torch.optim.Adam(model.parameters())
                run = make_loop(model, torch.nn.CrossEntropyLoss(), optimizer, data)
                for epoch in range(10):
                    run("train")
                    with torch.no_grad():
                        try:
                            run("val")
                        except Exception as e:
                            print(e)
                            break
            """
        ),
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.flow = Flow(self)
        self.training = TrainingMap(self.flow)
        self._tries: list[cst.Try | cst.TryStar] = []
        self._try_bodies: dict[cst.BaseSuite, cst.CSTNode] = {}
        # Loop bodies are watched too: a step after a ``try`` in one may be skipped by it.
        self._loop_bodies: dict[cst.BaseSuite, cst.For | cst.While] = {}
        # ``optimizer.step_and_update_lr()`` and other method calls on an optimizer.
        self._wrapper_calls: list[tuple[str, cst.Call, tuple[cst.CSTNode, ...]]] = []

    # -- gathering -----------------------------------------------------------------------

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.training.enter(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.training.exit(original_node)

    def visit_Try(self, node: cst.Try) -> None:
        self._tries.append(node)
        self._try_bodies[node.body] = node

    def visit_TryStar(self, node: cst.TryStar) -> None:
        self._tries.append(node)
        self._try_bodies[node.body] = node

    def visit_For(self, node: cst.For) -> None:
        self._loop_bodies[node.body] = node

    def visit_While(self, node: cst.While) -> None:
        self._loop_bodies[node.body] = node

    # Only the ``try`` body is watched: steps in handlers or ``finally`` are not guarded.
    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        if node in self._try_bodies or node in self._loop_bodies:
            self.training.enter(node)

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock) -> None:
        if original_node in self._try_bodies or original_node in self._loop_bodies:
            self.training.exit(original_node)

    def visit_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> None:
        if node in self._try_bodies:
            self.training.enter(node)

    def leave_SimpleStatementSuite(self, original_node: cst.SimpleStatementSuite) -> None:
        if original_node in self._try_bodies:
            self.training.exit(original_node)

    def visit_Call(self, node: cst.Call) -> None:
        self.training.call(node)
        self.training.constructor(node)
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value not in STEP_WITH_OPTIMIZER:
            receiver = dotted_name(func.value)
            if receiver and looks_like_optimizer(receiver) and not self.flow.is_self(func.value):
                self._wrapper_calls.append((func.attr.value, node, self.training.containers))

    def visit_Assign(self, node: cst.Assign) -> None:
        self.training.assign([t.target for t in node.targets], node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.training.assign([node.target], node.value)

    # -- deciding ------------------------------------------------------------------------

    def leave_Module(self, original_node: cst.Module) -> None:
        self.training.finish()
        wrapped = self._wrapper_steps()
        for try_node in self._tries:
            step = _first(self.training.trains(try_node.body), wrapped.get(try_node.body))
            if step is not None and self._called_without_autograd(try_node, step):
                step = None
            skipped = None if step is not None else self._skipped_step(try_node, wrapped)
            if step is None and skipped is None:
                continue
            for handler in try_node.handlers:
                caught = self._broad(handler)
                if caught is None or _leaves(handler, self):
                    continue
                data = {"handler_line": self.flow.line(handler), "try_line": self.flow.line(try_node)}
                ended = self._loop_in_try(try_node, step) if step is not None else None
                if ended is not None and _prints_traceback(handler, self):
                    continue  # the loop stops at the error, its traceback printed
                if ended is not None:
                    message = (
                        f"`{caught}` catches every error of the training step at line "
                        f"{step.line} (`{_short(step.text)}`) and does not re-raise: the first "
                        f"failing step ends the loop on line {self.flow.line(ended)}, and the "
                        "code after the `try` carries on as if training had finished (the "
                        "script exits 0), so a broken run looks like a finished one. Catch only "
                        "the errors you can recover from, or re-raise after logging."
                    )
                elif step is not None:
                    message = (
                        f"`{caught}` catches every error of the training step at line "
                        f"{step.line} (`{_short(step.text)}`) and does not re-raise: a failing "
                        "step is skipped and the run goes on as if nothing happened, so a "
                        "broken run looks like a finished one. Catch only the errors you can "
                        "recover from, or re-raise after logging."
                    )
                elif skipped is not None and _continues(handler):
                    message = (
                        f"`{caught}` catches every error of the forward pass in this `try` and "
                        f"`continue`s past the training step at line {skipped.line} "
                        f"(`{_short(skipped.text)}`): a batch whose forward fails (a shape "
                        "error, NaN check, a bug in the model) is silently not trained on, "
                        "and a run that skipped most batches looks like one that finished. "
                        "Catch only the errors you can recover from, or re-raise after logging."
                    )
                    data["skipped_step_line"] = skipped.line
                else:
                    continue
                self.report(handler, message, region=try_node, data=data)

    def _called_without_autograd(self, try_node: cst.CSTNode, step: StepSite) -> bool:
        """The ``try`` runs inside ``with torch.no_grad():`` (or ``inference_mode``) and its
        step is a call of a function that trains (a loop shared by the training and
        validation phases): with autograd off that call builds no graph to step on, so it
        is the validation phase, not a training step."""
        func = step.node.func
        if isinstance(func, cst.Attribute) and (func.attr.value in BACKWARD_METHODS
                                                or func.attr.value.startswith("step")):
            return False
        child: cst.CSTNode = try_node
        for anc in self.flow.ancestors(try_node):
            if isinstance(anc, cst.FunctionDef):
                return False
            if isinstance(anc, cst.With) and child is anc.body and any(
                    _turns_autograd_off(item.item, self) for item in anc.items):
                return True
            child = anc
        return False

    def _loop_in_try(self, try_node: cst.Try | cst.TryStar, step: StepSite) -> cst.CSTNode | None:
        """The outermost loop of the step's function that runs inside the ``try`` body, when
        no loop of that function runs around the ``try``: an error then ends that loop
        rather than one of its iterations."""
        containers = step.containers
        at = next((i for i, c in enumerate(containers) if c is try_node.body), None)
        if at is None:
            return None
        start = max((i for i, c in enumerate(containers[:at]) if isinstance(c, cst.FunctionDef)),
                    default=-1)
        if any(c in self._loop_bodies for c in containers[start + 1:at]):
            return None  # a loop around the try goes on with its next iteration
        return next((self._loop_bodies[c] for c in containers[at + 1:] if c in self._loop_bodies),
                    None)

    def _wrapper_steps(self) -> dict[cst.CSTNode, StepSite]:
        """Containers that step through an optimizer wrapper: ``optimizer.step_*()``, or a
        method of a same-module class that steps (``sched_opt.update()``), called on an
        optimizer-named receiver, and the functions that call them (to a fixed point)."""
        found: dict[cst.CSTNode, StepSite] = {}
        for method, node, containers in self._wrapper_calls:
            if method.startswith("step_") or any(
                self.training.trains(f) for f in self.training.callees(method, True)
            ):
                site = StepSite(node, containers, self.flow)
                for container in containers:
                    found.setdefault(container, site)
        calls = self.training.calls_by_key()
        reached = self.training.keys_of(found)  # one lookup per call, not a scan of its callees
        changed = True
        while changed:
            changed = False
            for key, site in calls:
                if key in reached:
                    for container in site.containers:
                        if container not in found:
                            found[container] = site
                            reached |= self.training.keys_of([container])
                            changed = True
        return found

    def _skipped_step(self, try_node: cst.Try | cst.TryStar,
                      wrapped: dict[cst.CSTNode, StepSite]) -> StepSite | None:
        """The training step a ``continue`` in the handler would skip: the ``try`` is a
        statement of a loop body that trains after it, and its body runs the forward (a
        call of a model-named callee, or the loss the step back-propagates)."""
        body = self.flow.parent(try_node)
        if body not in self._loop_bodies:
            return None
        step = _first(self.training.trains(body), wrapped.get(body))
        end = self.flow.range(try_node).end.line
        if step is None or step.line <= end:
            return None
        statements = list(body.body)  # type: ignore[union-attr]
        after = statements[statements.index(try_node) + 1:]
        backward = _Backwards()
        for stmt in after:
            stmt.visit(backward)
        forward = _Forward(backward.receivers)
        try_node.body.visit(forward)
        return step if forward.found else None

    def span_of(self, node: cst.CSTNode) -> Span:
        # An ``except`` clause is shown by its header, up to the colon (no comment).
        span = super().span_of(node)
        if isinstance(node, (cst.ExceptHandler, cst.ExceptStarHandler)):
            line = self.context.lines[span.start.line - 1] if self.context.lines else ""
            header = line.split("#", 1)[0].rstrip()
            return Span(span.start, Position(span.start.line, len(header) + 1))
        return span

    def _broad(self, handler: cst.ExceptHandler | cst.ExceptStarHandler) -> str | None:
        """How the handler is written when it catches everything, else ``None``."""
        kind = handler.type
        if kind is None:
            return "except:"
        elements = [e.value for e in kind.elements] if isinstance(kind, cst.Tuple) else [kind]
        for element in elements:
            if isinstance(element, cst.Name) and element.value in BROAD:
                names = qualified_names(self, element)
                if not names or names & {f"builtins.{b}" for b in BROAD}:
                    return f"except {element.value}"
        return None


#: Context managers under which no call records a graph.
AUTOGRAD_OFF = frozenset({
    "torch.no_grad", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad",
    "torch.inference_mode", "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.inference_mode",
})


def _turns_autograd_off(expr: cst.BaseExpression, rule: Rule) -> bool:
    callee = expr.func if isinstance(expr, cst.Call) else expr
    return bool(qualified_names(rule, callee) & AUTOGRAD_OFF)


def _first(*sites: StepSite | None) -> StepSite | None:
    found = [s for s in sites if s is not None]
    return min(found, key=lambda s: s.line) if found else None


def _continues(handler: cst.CSTNode) -> bool:
    """The handler runs ``continue`` for the loop around the ``try`` (not one of its own)."""
    finder = _ContinueFinder()
    handler.body.visit(finder)
    return finder.found


class _ContinueFinder(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def visit_Continue(self, node: cst.Continue) -> None:
        self.found = True

    def _own_scope(self, node: cst.CSTNode) -> bool:
        return False  # a ``continue`` in a nested loop or function is not the handler's

    visit_For = visit_While = visit_FunctionDef = visit_ClassDef = _own_scope  # type: ignore[assignment]


class _Backwards(cst.CSTVisitor):
    """Receivers of ``x.backward()`` and arguments of ``accelerator.backward(x)``."""

    def __init__(self) -> None:
        self.receivers: set[str] = set()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in BACKWARD_METHODS:
            for expr in (func.value, *(a.value for a in node.args[:1])):
                name = dotted_name(expr)
                if name:
                    self.receivers.add(name)


class _Forward(cst.CSTVisitor):
    """A forward pass: a call of a model-named callee (``model(x)``, ``self.net.forward(x)``)
    or an assignment of a name the loop back-propagates afterwards (``loss = ...``)."""

    def __init__(self, backward_receivers: set[str]) -> None:
        self.receivers = backward_receivers
        self.found = False

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "forward":
            func = func.value
        name = dotted_name(func)
        if name and is_model_name(name):
            self.found = True

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        targets = node.target.elements if isinstance(node.target, (cst.Tuple, cst.List)) else [node.target]
        for t in targets:
            name = dotted_name(t.value if isinstance(t, cst.Element) else t)
            if name and name in self.receivers:
                self.found = True

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False


#: Calls that print or log the current exception's traceback.
_TRACEBACK_CALLS = frozenset({
    "traceback.print_exc", "traceback.print_exception", "traceback.format_exc",
    "traceback.format_exception", "logging.exception",
})


def _prints_traceback(handler: cst.ExceptHandler | cst.ExceptStarHandler, rule: Rule) -> bool:
    """The handler prints or logs the traceback (``traceback.print_exc()``,
    ``logger.exception(...)``)."""
    for call in nodes_of(handler.body, cst.Call):
        if qualified_names(rule, call.func) & _TRACEBACK_CALLS:
            return True
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "exception" and (
                "log" in (dotted_name(func.value) or "").lower()):
            return True
    return False


def _leaves(handler: cst.CSTNode, rule: Rule) -> bool:
    """The handler re-raises (any ``raise``) or ends the process (``sys.exit``...)."""
    finder = _ExitFinder(rule)
    handler.body.visit(finder)
    return finder.found


class _ExitFinder(cst.CSTVisitor):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.found = False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False  # a raise in a nested function does not run here

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_Raise(self, node: cst.Raise) -> None:
        self.found = True

    def visit_Call(self, node: cst.Call) -> None:
        names = qualified_names(self.rule, node.func)
        if names & EXITS or (isinstance(node.func, cst.Name) and node.func.value in ("exit", "quit")):
            self.found = True


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SwallowedTrainingErrorProbe(Probe):
    """Injects one error into the flagged ``try`` body and watches whether training goes on.

    The main run has nothing to measure (the script may never fail there), so the probe
    settles at once. In the fault-injection run it raises ``InjectedFault`` from the first
    ``backward()`` or optimizer step taken while the flagged ``try`` is on the stack, then
    counts what still happens: optimizer steps, the ``try`` entered again (next batch), or
    code after the ``try`` statement running (the script carried on after the loop).
    """

    fault_injection = True
    #: Lines after the ``try`` statement watched for "the script carried on".
    LINES_AFTER = 4

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.injected_step: int | None = None
        self.injected_line: int | None = None
        self.steps_after = 0
        self.reentered = 0
        self.handler_ran = False
        self.after_line: int | None = None

    def install(self) -> None:
        if not self.rt.fault_run:
            return
        data = self.finding.data
        path = self.finding.path
        region = self.finding.region or self.finding.span
        if "skipped_step_line" in data:
            # The try guards the forward only: fail the first module call made inside it.
            self.rt.add_forward_pre_hook(lambda module, args: self._inject("the forward"))
        else:
            self.rt.on_backward(lambda tensor: self._inject("backward()"))
            self.rt.add_step_pre_hook(lambda optimizer: self._inject("optimizer.step()"))
        self.rt.add_step_post_hook(self._stepped)
        self.rt.on_line(path, data.get("try_line", region.start.line), self._try_entered)
        self.rt.on_line(path, data.get("handler_line", self.finding.line), self._handler)
        for line in range(region.end.line + 1, region.end.line + 1 + self.LINES_AFTER):
            self.rt.on_line(path, line, self._after)

    def _inject(self, what: str) -> None:
        if self.injected_step is not None or self.rt.stack_in(self.finding) is None:
            return
        frame = self.rt.user_frame()
        self.injected_step = self.rt.step
        self.injected_line = frame.f_lineno if frame is not None else None
        raise InjectedFault(
            f"mllint --verify: injected failure of {what} at step {self.rt.step} "
            f"inside the try at line {self.finding.data.get('try_line')}"
        )

    def _stepped(self, optimizer: Any) -> None:
        if self.injected_step is not None:
            self.steps_after += 1

    def _try_entered(self, frame: Any) -> None:
        if self.injected_step is not None:
            self.reentered += 1

    def _handler(self, frame: Any) -> None:
        if self.injected_step is not None:
            self.handler_ran = True

    def _after(self, frame: Any) -> None:
        if self.injected_step is not None and self.after_line is None:
            self.after_line = frame.f_lineno

    def _went_on(self) -> bool:
        return bool(self.steps_after or self.reentered or self.after_line is not None)

    def settled(self) -> bool:
        return not self.rt.fault_run or self._went_on()

    def verdict(self) -> Verdict | None:
        if not self.rt.fault_run or self.injected_step is None:
            return None
        figures = {
            "injected_at_step": self.injected_step,
            "injected_line": self.injected_line,
            "steps_after": self.steps_after,
            "try_entered_again": self.reentered,
            "handler_line": self.finding.data.get("handler_line"),
            "handler_ran": self.handler_ran,
        }
        injected = f"an error injected at step {self.injected_step}" + (
            f" (line {self.injected_line})" if self.injected_line else "")
        if self.steps_after or self.reentered:
            return self.confirmed(
                f"{injected} was caught by the except at line {self.finding.line} and "
                f"training went on: {self.steps_after} more optimizer step(s) ran after it",
                **figures,
            )
        if self.after_line is not None:
            return self.confirmed(
                f"{injected} was caught by the except at line {self.finding.line} and the "
                f"script carried on after the try (line {self.after_line} ran) as if "
                "training had finished",
                after_line=self.after_line, **figures,
            )
        return self.refuted(
            f"{injected} propagated: no optimizer step and no code after the try ran once "
            "it was raised, so the failure was not swallowed",
            **figures,
        )


# -- fix (mllint.fixes) ----------------------------------------------------------------------

from mllint.fixes import FixSpec  # noqa: E402

SwallowedTrainingError.FIX = FixSpec(safety="""
    No automatic fix. Adding `raise` to the handler would stop runs that today survive a
    recoverable error on purpose (a corrupt sample skipped and logged), and narrowing the
    `except` needs to know which errors you mean to recover from.
    """)
