"""When a ``--verify`` run may stop before ``--max-steps``: each runtime check's settling
window (note "settle-windows" in ``mllint.rules.runtime._support``).

In-process tests drive one check's watcher over a small training loop and record the
step at which it first says it is settled; end-to-end tests read the run summary of
``--format json``: a healthy script stops with "settled", a borderline one goes on to
the step budget."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from helpers import ROOT
from mllint.rules.runtime import (
    ml101_non_finite,
    ml102_parameter_without_gradient,
    ml103_parameter_not_optimized,
    ml104_update_ratio,
    ml105_unshuffled_training_loader,
    ml106_initial_loss,
    ml107_dead_units,
)
from mllint.verify.runtime import ProbeRuntime, Runtime, Slot

RUNTIME = ROOT / "fixtures" / "runtime"


class Trace:
    """One check's watcher installed on an in-process ``Runtime``; ``settled_at`` is the
    optimizer step after which ``settled()`` first said True (0: before any step)."""

    def __init__(self, watcher_class: type) -> None:
        self.rt = Runtime(torch, max_batches=1000, max_steps=1000)
        self.rt.install_core()
        self.slot = Slot(None, watcher_class.__name__)
        self.watcher = self.slot.probe = watcher_class(ProbeRuntime(self.rt, self.slot))
        self.watcher.install()
        self.settled_at: int | None = None

    def check(self) -> None:
        if self.settled_at is None and self.watcher.settled():
            self.settled_at = self.rt.step

    def close(self) -> list:
        try:
            findings = self.watcher.findings()
        finally:
            self.rt.close()
        assert self.slot.error is None, self.slot.error
        return findings


def train(trace: Trace, steps: int, *, model=None, optimizer=None, bias: float = 0.0,
          dead: int = 0, lr: float = 0.05, before_step=None) -> None:
    """``steps`` SGD steps of a 16-64-4 ReLU classifier on shuffled random data, calling
    ``trace.check()`` after each backward and each step. ``dead`` hidden units get a bias
    of -10 (silent from the start)."""
    torch.manual_seed(0)
    xs, ys = torch.randn(256, 16), torch.randint(0, 4, (256,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys),
                                         batch_size=32, shuffle=True)
    if model is None:
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 4))
        with torch.no_grad():
            model[0].bias.fill_(bias)
            model[0].bias[:dead] = -10.0
    optimizer = optimizer(model) if optimizer else torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9)
    done = 0
    while done < steps:
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            trace.check()
            if before_step is not None:
                before_step(model, optimizer, done + 1)
            optimizer.step()
            done += 1
            trace.check()
            if done == steps:
                break


def settles(watcher_class: type, steps: int = 20, **kw) -> tuple[int | None, list]:
    trace = Trace(watcher_class)
    try:
        train(trace, steps, **kw)
    finally:
        findings = trace.close()
    return trace.settled_at, [f.code for f, _ in findings]


# -- each check's window, in process ---------------------------------------------------------


def confident_wrong_loss() -> None:
    logits = torch.zeros(8, 10)
    logits[:, 0] = 50.0
    torch.nn.functional.cross_entropy(logits.requires_grad_(), torch.ones(8, dtype=torch.long))


@pytest.mark.parametrize("regression_first", [False, True])
def test_ml106_judges_only_a_loss_before_the_first_backward_then_settles(regression_first):
    trace = Trace(ml106_initial_loss.InitialLossWatcher)
    try:
        if regression_first:
            out = torch.randn(8, 10, requires_grad=True)
            torch.nn.functional.mse_loss(out, torch.zeros(8, 10)).backward()
        trace.check()
        confident_wrong_loss()
        trace.check()
    finally:
        findings = trace.close()
    assert trace.settled_at == 0
    assert [f.code for f, _ in findings] == ([] if regression_first else ["ML106"])


def test_ml106_settles_at_the_first_backward_of_a_training_loop():
    assert settles(ml106_initial_loss.InitialLossWatcher) == (0, [])


def test_ml106_still_reports_a_bad_first_loss_when_settled():
    def scaled(model):
        with torch.no_grad():
            model[2].weight.mul_(200.0)
        return torch.optim.SGD(model.parameters(), lr=0.01)

    assert settles(ml106_initial_loss.InitialLossWatcher, optimizer=scaled) == (0, ["ML106"])


def test_ml105_settles_after_the_first_optimizer_step():
    assert settles(ml105_unshuffled_training_loader.UnshuffledTrainingLoaderWatcher) == (1, [])


def test_ml103_settles_after_its_look_at_the_fourth_step():
    assert settles(ml103_parameter_not_optimized.ParameterNotOptimizedWatcher) == (4, [])


def test_ml102_settles_at_once_when_every_parameter_has_a_gradient():
    assert settles(ml102_parameter_without_gradient.ParameterWithoutGradientWatcher) == (1, [])


def test_ml102_waits_three_measured_steps_for_a_parameter_without_gradient():
    class WithUnused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, 4))
            self.unused = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.net(x)

    assert settles(ml102_parameter_without_gradient.ParameterWithoutGradientWatcher,
                   model=WithUnused()) == (3, ["ML102"])


def test_ml104_settles_after_five_measured_steps_when_the_ratio_is_clear():
    # Measured steps 1, 2, 3, 4 and 8 (mllint.verify.monitor.measured).
    assert settles(ml104_update_ratio.UpdateRatioWatcher) == (8, [])


def test_ml104_settles_on_a_too_large_first_update_and_reports_it():
    adamw = lambda model: torch.optim.AdamW(model.parameters(), lr=20.0)  # noqa: E731
    assert settles(ml104_update_ratio.UpdateRatioWatcher, optimizer=adamw) == (8, ["ML104"])


def test_ml104_keeps_watching_a_ratio_near_the_lower_threshold():
    # SGD at lr 1e-4 without momentum moves the weights by about 1e-5 of their size per
    # step: healthy by the threshold (1e-6) but within two orders of magnitude of it.
    tiny = lambda model: torch.optim.SGD(model.parameters(), lr=1e-4)  # noqa: E731
    assert settles(ml104_update_ratio.UpdateRatioWatcher, optimizer=tiny) == (None, [])


def test_ml104_keeps_watching_a_ratio_that_falls_in_the_window():
    # A learning rate decayed to nothing from step 4 on: the first measured steps look
    # healthy, the median over the budget's measured steps (1-4, 8, 12, 16, 20) is below
    # 1e-6. The run must not stop before the budget shows it.
    def decay(model, optimizer, step):
        if step == 4:
            for group in optimizer.param_groups:
                group["lr"] = 1e-9

    plain = lambda model: torch.optim.SGD(model.parameters(), lr=0.05)  # noqa: E731
    assert settles(ml104_update_ratio.UpdateRatioWatcher, optimizer=plain,
                   before_step=decay) == (None, ["ML104"])


def test_ml107_settles_after_three_measured_batches_for_clear_cut_layers():
    assert settles(ml107_dead_units.DeadUnitsWatcher) == (9, [])
    assert settles(ml107_dead_units.DeadUnitsWatcher, dead=64) == (9, ["ML107"])


def test_ml107_keeps_watching_a_layer_between_ten_and_fifty_percent_silent():
    assert settles(ml107_dead_units.DeadUnitsWatcher, dead=20) == (None, [])


def test_ml101_settles_after_eight_steps_without_a_nan():
    assert settles(ml101_non_finite.NonFiniteWatcher) == (8, [])


def test_ml101_settles_soon_after_the_first_nan():
    def poison(model, optimizer, step):
        if step == 2:
            with torch.no_grad():
                model[0].weight[0, 0] = math.nan

    at, codes = settles(ml101_non_finite.NonFiniteWatcher, before_step=poison)
    assert codes == ["ML101"] and at is not None and 2 <= at <= 2 + ml101_non_finite.BLAME_STEPS


# -- the run, end to end -------------------------------------------------------------------


def verify_json(script, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "mllint", "--verify", "--format", "json", *args, str(script)],
        cwd=script.parent, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLLINT_NO_CACHE": "1"})
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_a_healthy_run_stops_once_every_check_is_settled():
    doc = verify_json(RUNTIME / "healthy" / "resnet_sgd.py", "--max-steps", "20")
    run = doc["verify"]
    assert doc["diagnostics"] == []
    assert (run["stop_reason"], run["steps"], run["max_steps"]) == ("settled", 9, 20)


@pytest.mark.slow
def test_a_check_that_needs_more_steps_keeps_the_run_going_to_the_budget():
    doc = verify_json(RUNTIME / "settling" / "borderline_dead_units.py", "--max-steps", "20")
    run = doc["verify"]
    assert doc["diagnostics"] == []  # 20 of 64 units silent: below ML107's half
    assert (run["stop_reason"], run["steps"]) == ("steps", 20)
