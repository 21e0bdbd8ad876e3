"""ML008 swallowed-training-error: fixtures, broad handlers, re-raising, what counts as training."""

from __future__ import annotations

import textwrap

import pytest

from helpers import FIXTURES, expected
from mllint.engine import lint_path, lint_text
from mllint.rules.ml008_swallowed_training_error import SwallowedTrainingError
from mllint.types import Position, Span

FIXTURE_FILES = sorted((FIXTURES / "ml008").glob("*.py"))


def lint(code: str):
    result = lint_text("t.py", textwrap.dedent(code).lstrip("\n"), [SwallowedTrainingError])
    assert result.errors == ()
    return result.findings


def step_with_handler(handler: str, body: str = "pass") -> str:
    return (
        "import sys, os, torch\n"
        "def train(model, loader, optimizer):\n"
        "    for x, y in loader:\n"
        "        try:\n"
        "            optimizer.zero_grad()\n"
        "            model(x).sum().backward()\n"
        "            optimizer.step()\n"
        f"        {handler}\n"
        + "".join(f"            {line}\n" for line in body.split(";"))
    )


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_markers(path):
    got = {(f.code, f.line) for f in lint_path(str(path), [SwallowedTrainingError]).findings}
    assert got == {m for m in expected(path) if m[0] == "ML008"}


def test_span_is_the_except_line_and_region_the_try():
    (finding,) = lint_path(str(FIXTURES / "ml008" / "bad_skip_failed_step.py"),
                           [SwallowedTrainingError]).findings
    assert finding.span == Span(Position(24, 9), Position(24, 33))
    assert finding.region == Span.lines(18, 27)
    assert finding.data == {"handler_line": 24, "try_line": 18}
    assert "line 21" in finding.message and "`except Exception`" in finding.message


@pytest.mark.parametrize("handler", [
    "except:", "except Exception:", "except Exception as e:", "except BaseException:",
    "except (ValueError, Exception) as e:", "except (KeyboardInterrupt, BaseException):",
])
def test_broad_handlers_without_reraise_are_flagged(handler):
    assert [f.line for f in lint(step_with_handler(handler, "print('skip');continue"))] == [8]


@pytest.mark.parametrize("handler,body", [
    ("except Exception:", "raise"),
    ("except Exception as e:", "raise RuntimeError('step') from e"),
    ("except Exception as e:", "if 'out of memory' in str(e):;    torch.cuda.empty_cache();else:;    raise"),
    ("except BaseException:", "sys.exit(1)"),
    ("except Exception:", "os._exit(2)"),
    ("except KeyboardInterrupt:", "torch.save({}, 'x.pt')"),
    ("except RuntimeError:", "continue"),
    ("except torch.cuda.OutOfMemoryError:", "continue"),
])
def test_reraising_exiting_or_narrow_handlers_are_not_flagged(handler, body):
    assert lint(step_with_handler(handler, body)) == ()


def test_raise_only_in_a_nested_function_does_not_count():
    code = step_with_handler("except Exception:", "def later():;    raise;later_cb = later")
    assert [f.line for f in lint(code)] == [8]


def test_a_shadowed_exception_name_is_not_broad():
    code = "class Exception(ValueError): pass\n" + step_with_handler("except Exception:", "pass")
    assert lint(code) == ()


def test_training_through_same_module_functions_and_methods():
    assert [f.line for f in lint("""
        class Trainer:
            def step(self, batch):
                self.optimizer.zero_grad()
                self.model(batch).mean().backward()
                self.optimizer.step()
            def epoch(self, loader):
                for batch in loader:
                    self.step(batch)
            def fit(self, loader):
                try:
                    self.epoch(loader)
                except Exception as e:
                    self.log(e)
        """)] == [12]


@pytest.mark.parametrize("code", [
    # data loading only
    """
    def load(loader):
        try:
            return next(iter(loader))
        except Exception:
            return None
    def train(model, opt, batch):
        opt.zero_grad(); model(batch).sum().backward(); opt.step()
    """,
    # a scheduler's or an environment's step is not a training step
    """
    def tick(scheduler, env, action):
        try:
            scheduler.step()
            env.step(action)
        except Exception:
            pass
    """,
    # a training step in the handler or finally is not guarded by the try
    """
    def f(model, opt, x):
        try:
            y = model(x)
        except Exception:
            y = None
        finally:
            opt.step()
    """,
])
def test_tries_without_training_are_not_flagged(code):
    assert lint(code) == ()


def test_prefilter():
    may = SwallowedTrainingError.may_match
    assert may("try:\n loss.backward()\nexcept: pass")
    assert may("try:\n opt .step ()\nexcept: pass")
    assert may("from torch.autograd import (\n backward as bw)\ntry:\n bw(l)\nexcept: pass")
    assert not may("try:\n x()\nexcept: pass")
    # words in comments or names are not calls
    assert not may("# backward compatible, one step at a time\ntry:\n train_step(b)\nexcept: pass")


def test_aliased_autograd_backward_is_a_training_step():
    assert [f.line for f in lint("""
        from torch.autograd import backward as bw
        def f(loss, optimizer):
            try:
                bw(loss)
            except Exception:
                pass
            optimizer.step()
        """)] == [5]


def test_backward_without_an_optimizer_step_in_reach_is_not_training():
    # Profiling a layer's backward pass (as benchmarking utilities do).
    code = """
        import torch
        def profile(module, x, n=10):
            for _ in range(n):
                try:
                    module(x).sum().backward()
                except Exception:
                    pass
        def build(model):
            return torch.optim.SGD(model.parameters(), lr=0.1)
        """
    assert lint(code) == ()
    # ...but it is once an optimizer steps after it, or in its caller.
    stepped = code + """
        def train(model, batches, opt):
            for x in batches:
                profile(model, x, 1)
                opt.step()
        """
    assert [f.line for f in lint(stepped)] == [6]


def test_deepspeed_engine_step_is_training():
    assert [f.line for f in lint("""
        def train(model_engine, loader):
            for batch in loader:
                try:
                    loss = model_engine(batch)
                    model_engine.backward(loss)
                    model_engine.step()
                except Exception:
                    continue
        """)] == [7]
    for path in FIXTURE_FILES:
        text = path.read_text()
        assert lint_text(str(path), text, [SwallowedTrainingError]).findings == lint_text(
            str(path), text, [SwallowedTrainingError], prefilter=False).findings


SKIP_LOOP = """
    import torch
    def train(model, loader, optimizer, criterion):
        for x, y in loader:
            try:
                out = model(x)
                loss = criterion(out, y)
            {handler}
                print("skip", exc)
                continue
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    """


def test_broad_handler_around_the_forward_that_continues_past_the_step():
    (finding,) = lint(SKIP_LOOP.format(handler="except Exception as exc:"))
    assert finding.line == 7
    assert "line 11 (`loss.backward()`)" in finding.message
    assert finding.data == {"handler_line": 7, "try_line": 4, "skipped_step_line": 11}


@pytest.mark.parametrize("code", [
    # a narrow handler: recovering from a known error is a choice
    SKIP_LOOP.format(handler="except RuntimeError as exc:"),
    # no ``continue``: the handler falls through to the step
    SKIP_LOOP.replace("                continue\n", "                loss = None\n").format(
        handler="except Exception as exc:"),
    # the ``continue`` belongs to a loop of the handler's own
    SKIP_LOOP.replace("                continue\n", "                for _ in range(3):\n"
                      "                    continue\n").format(handler="except Exception as exc:"),
    # the step comes before the try (a logging forward after it)
    """
    def train(model, loader, optimizer, criterion, log):
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
            try:
                log(model(x))
            except Exception:
                continue
    """,
])
def test_skipping_handlers_that_are_not_flagged(code):
    assert lint(code) == ()


def test_a_loss_computed_by_a_helper_in_the_try_is_the_forward():
    code = """
        def train(net_fn, loader, opt):
            for batch in loader:
                try:
                    loss = compute_loss(net_fn, batch)
                except Exception:
                    continue
                loss.backward()
                opt.step()
        """
    assert [f.line for f in lint(code)] == [5]
    # A value the step does not use is data, not the forward.
    assert lint(code.replace("loss = compute_loss", "batch = prepare")
                .replace("loss.backward()", "net_fn(batch).backward()")) == ()


def test_steps_through_an_optimizer_wrapper():
    wrapper = """
        class ScheduledOptim:
            def __init__(self, optimizer):
                self._optimizer = optimizer
            def update(self):
                self._optimizer.step()

        def train(model, loader, optimizer):
            for x in loader:
                try:
                    model(x).sum().backward()
                    optimizer.update()
                except Exception:
                    pass
        """
    assert [f.line for f in lint(wrapper)] == [12]
    code = textwrap.dedent(wrapper).lstrip("\n")
    assert SwallowedTrainingError.may_match(code)
    from mllint.gates.training import swallow_may_flag
    from mllint.prefilter import python_tree
    assert swallow_may_flag(python_tree(code))
    # a scheduler's ``step_update`` and a method of the optimizer that does not step
    assert lint("""
        def train(model, loader, optimizer, lr_scheduler, n):
            for x in loader:
                try:
                    model(x)
                    lr_scheduler.step_update(n)
                    optimizer.zero_grad()
                except Exception:
                    pass
        """) == ()


WHOLE_LOOP = """
    import traceback
    def main(model, loader, optimizer):
        try:
            for epoch in range(10):
                for x, y in loader:
                    optimizer.zero_grad()
                    model(x).sum().backward()
                    optimizer.step()
        except Exception as exc:
            {handler}
        print("finished")
"""


def test_a_handler_around_the_whole_loop_is_said_to_end_the_loop():
    [finding] = lint(WHOLE_LOOP.format(handler="print(exc)"))
    assert finding.line == 9
    assert "ends the loop on line 4" in finding.message
    assert "script exits 0" in finding.message


@pytest.mark.parametrize("handler", ["traceback.print_exc()",
                                     "print(traceback.format_exc())",
                                     "logger.exception('training failed')"])
def test_a_handler_around_the_whole_loop_that_prints_the_traceback_is_not_flagged(handler):
    assert lint(WHOLE_LOOP.format(handler=handler)) == ()


def test_a_printed_traceback_does_not_excuse_skipping_steps():
    # ``import traceback`` in the handler so the call resolves: the printing is seen.
    code = step_with_handler("except Exception:", "import traceback;traceback.print_exc();continue")
    [finding] = lint(code)
    assert finding.line == 8 and "a failing step is skipped" in finding.message
