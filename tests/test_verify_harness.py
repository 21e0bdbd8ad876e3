"""The ``--verify`` harness: runtime contract, budgets, safety, and process handling.

In-process tests drive ``Runtime`` directly; the rest run real child processes on the
fixtures in ``fixtures/verify/`` with the probes of ``verify_test_probes`` (pointed at
through ``probe_override``), so they test the harness, not any rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mllint.types import Finding, Position, Span, VerdictStatus
from mllint.verify.harness import VerifyError, VerifyOptions, verify
from mllint.verify.runtime import ProbeRuntime, Runtime, Slot, StopRun

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "verify"
TESTS = Path(__file__).resolve().parent
PROBES = "verify_test_probes"
#: Tests that start a child process running a training script (a few seconds each).
slow = pytest.mark.slow


def line_of(path: Path, text: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in {path}")


def finding(path: Path, line: int, code: str = "ML999", **data) -> Finding:
    return Finding(str(path), code, "test", "test finding",
                   Span(Position(line, 1), Position(line, 2)), data=data)


def options(script: Path | None = None, probes: dict | None = None, **kw) -> VerifyOptions:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS),
                                                       os.environ.get("PYTHONPATH")]))}
    return VerifyOptions(
        script=None if script is None else str(script),
        probe_override={k: f"{PROBES}:{v}" for k, v in (probes or {}).items()},
        env=env, watch=kw.pop("watch", ()), **kw)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- the runtime, in process ---------------------------------------------------------------


def _loader(n: int = 80) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,)))
    return torch.utils.data.DataLoader(data, batch_size=8)


def _runtime(**kw) -> Runtime:
    rt = Runtime(torch, max_batches=kw.pop("max_batches", 3), max_steps=kw.pop("max_steps", 50),
                 **kw)
    rt.install_core()
    return rt


def test_hooks_fire_and_every_hook_and_patch_is_removed():
    module_hooks = torch.nn.modules.module
    import torch.optim.optimizer as optim_module

    originals = (torch.save, torch.load, torch.Tensor.backward, torch.autograd.backward,
                 torch.utils.data.DataLoader.__iter__, torch.utils.data.DataLoader.__len__)
    rt = _runtime()
    slot = Slot(0, "test")
    facade = ProbeRuntime(rt, slot)
    seen: dict[str, int] = {}

    def count(key):
        return lambda *a: seen.__setitem__(key, seen.get(key, 0) + 1)

    facade.add_forward_pre_hook(count("forward_pre"))
    facade.add_forward_hook(count("forward"))
    facade.add_step_pre_hook(count("step_pre"))
    facade.add_step_post_hook(count("step_post"))
    facade.on_backward(count("backward"))
    facade.on_batch(count("batch"))
    facade.on_call(torch.nn.functional, "cross_entropy", count("cross_entropy"))
    rt.slots = [slot]
    rt.start()
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in _loader():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    rt.close()
    assert seen == {"forward_pre": 3, "forward": 3, "step_pre": 3, "step_post": 3,
                    "backward": 3, "batch": 3, "cross_entropy": 3}
    assert (rt.step, rt.batches) == (3, 3)
    assert not module_hooks._global_forward_pre_hooks
    assert not module_hooks._global_forward_hooks
    assert not optim_module._global_optimizer_pre_hooks
    assert not optim_module._global_optimizer_post_hooks
    assert (torch.save, torch.load, torch.Tensor.backward, torch.autograd.backward,
            torch.utils.data.DataLoader.__iter__,
            torch.utils.data.DataLoader.__len__) == originals
    assert not hasattr(torch.nn.functional.cross_entropy, "_mllint_callbacks")
    assert len(_loader()) == 10 and sum(1 for _ in _loader()) == 10


def test_dataloader_pass_is_cut_at_max_batches_and_len_agrees():
    rt = _runtime(max_batches=3)
    try:
        loader = _loader(80)
        assert len(loader) == 3
        assert len(iter(loader)) == 3
        assert [len(x) for x, _ in loader] == [8, 8, 8]
        assert sum(1 for _ in loader) == 3  # every pass, not only the first
        assert rt.batches == 6
    finally:
        rt.close()


def test_a_failing_probe_callback_marks_only_that_probe():
    rt = _runtime()
    bad, good = Slot(0, "bad probe"), Slot(1, "good probe")
    calls = []
    ProbeRuntime(rt, bad).on_batch(lambda loader, batch: 1 / 0)
    ProbeRuntime(rt, good).on_batch(lambda loader, batch: calls.append(1))
    try:
        assert sum(1 for _ in _loader()) == 3
    finally:
        rt.close()
    assert bad.error is not None and "ZeroDivisionError" in bad.error
    assert "bad probe failed in on_batch" in bad.error
    assert good.error is None and calls == [1, 1, 1]


def test_step_budget_raises_stop_into_the_training_loop():
    rt = _runtime(max_steps=2)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        with pytest.raises(StopRun):
            for _ in range(10):
                model(torch.randn(2, 4)).sum().backward()
                opt.step()
    finally:
        rt.close()
    assert rt.step == 2 and rt.stop_reason == "steps"


LINES_SOURCE = (
    "def run():\n"
    "    out = []\n"
    "    total = 0\n"
    "    for i in range(3):\n"
    "        total = (total +\n"
    "                 i)\n"
    "        out.append(total)\n"
    "    n = 0\n"
    "    while n < 4:\n"
    "        n += 1\n"
    "    return out, n\n")

LOOP_SOURCE = (
    "def run(loader):\n"
    "    failures = 0\n"
    "    for batch in loader:\n"
    "        try:\n"
    "            batch = batch * 2\n"
    "        except Exception:\n"
    "            failures += 1\n"
    "    return failures\n")

#: How a watched file gets its line callbacks: compiled in when it is imported after the
#: lines were registered, or the trace-function fallback when it was imported before.
LINE_MODES = ["rewrite", "trace"]


def _module(tmp_path: Path, source: str, mode: str, register) -> object:
    """Import ``source`` as a fresh module, registering the callbacks before (rewrite) or
    after (trace) the import."""
    import importlib

    name = f"watched_{mode}_{abs(hash(tmp_path))}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        if mode == "rewrite":
            register(str(path))
            return importlib.import_module(name)
        module = importlib.import_module(name)
        register(str(path))
        return module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


@pytest.mark.parametrize("mode", LINE_MODES)
def test_line_callbacks_fire_once_per_statement_and_after_it_finishes(tmp_path, mode):
    rt = _runtime()
    before, after, loop = [], [], []

    def register(path):
        rt.on_line(path, 6, lambda f: before.append(f.f_locals.get("total")))  # inside it
        rt.after_line(path, 5, lambda f: after.append(rt.object_of(f, "total")))
        rt.on_line(path, 9, lambda f: loop.append(f.f_locals["n"]))

    module = _module(tmp_path, LINES_SOURCE, mode, register)
    rt.start()
    try:
        result = module.run()
    finally:
        rt.close()
    assert result == ([0, 1, 3], 4)
    assert before == [0, 0, 1]  # statement of lines 5-6, once per iteration, before it runs
    assert after == [0, 1, 3]  # the value it assigned
    # A loop header fires before the loop and again for each of its 4 iterations (which
    # values it sees differs: the fallback fires at the condition, rewriting at the body).
    assert len(loop) == 5
    assert sys.gettrace() is None


def test_watched_lines_are_compiled_in_without_a_trace_function(tmp_path):
    rt = _runtime()
    traced = []
    module = _module(tmp_path, LINES_SOURCE, "rewrite",
                     lambda path: rt.on_line(path, 7, lambda f: traced.append(sys.gettrace())))
    rt.start()
    try:
        module.run()
        # The injected call keeps the statement's line: tracebacks are unchanged.
        lines = {ln for _, _, ln in module.run.__code__.co_lines()}
    finally:
        rt.close()
    assert traced == [None, None, None]
    assert lines <= set(range(1, 12))
    import builtins

    assert not hasattr(builtins, "__mllint_line__")


def test_a_watched_file_loaded_behind_the_import_system_is_traced_from_the_next_batch(
        tmp_path):
    import importlib.util

    path = tmp_path / "custom_loaded.py"
    path.write_text(
        "def run(loader):\n"
        "    seen = 0\n"
        "    for batch in loader:\n"
        "        seen += 1\n"
        "    return seen\n")
    rt = _runtime(max_batches=3)
    hits = []
    rt.on_line(str(path), 4, lambda frame: hits.append(frame.f_locals["seen"]))
    rt.start()
    # Loaded the way config systems load files: no finder sees it, nothing is rewritten.
    spec = importlib.util.spec_from_file_location("custom_loaded_xyz", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_loaded_xyz"] = module
    try:
        spec.loader.exec_module(module)
        assert module.run(_loader()) == 3
    finally:
        rt.close()
        sys.modules.pop("custom_loaded_xyz")
    assert hits == [0, 1, 2]
    assert sys.gettrace() is None


@pytest.mark.parametrize("mode", LINE_MODES)
def test_a_fault_injected_from_a_line_callback_reaches_the_users_except(tmp_path, mode):
    from mllint.verify.probe import InjectedFault

    rt = _runtime(max_batches=5)
    slot = Slot(0, "fault probe")
    hits = []

    def inject(frame):
        hits.append(frame.f_lineno)
        if len(hits) == 2:
            raise InjectedFault("injected")

    module = _module(tmp_path, LOOP_SOURCE, mode,
                     lambda path: ProbeRuntime(rt, slot).on_line(path, 5, inject))
    rt.start()
    try:
        failures = module.run(_loader(80))
    finally:
        rt.close()
    assert failures == 1 and slot.error is None
    # With the trace function, CPython switches tracing off when the callback raises; it
    # is re-armed at the next batch, so the line is still seen on every one of 5 batches.
    assert hits == [5] * 5


def test_object_of_reads_without_calling_user_code():
    class Holder:
        calls = 0
        limit = 3

        def __init__(self):
            self.model = torch.nn.Sequential(torch.nn.Linear(2, 2))
            self.stats = {"loss": [1.0, 2.0]}

        @property
        def expensive(self):
            Holder.calls += 1
            return 1

    holder = Holder()
    frame = sys._getframe()
    rt = _runtime()
    try:
        assert rt.object_of(frame, "holder.model") is holder.model
        assert rt.object_of(frame, "holder.model.0.weight") is holder.model[0].weight
        assert rt.object_of(frame, 'holder.stats["loss"][1]') == 2.0
        assert rt.object_of(frame, "holder.limit") == 3
        assert rt.object_of(frame, "torch.nn") is torch.nn
        for expr in ("holder.expensive", "holder.missing", "nowhere", "holder.f()"):
            with pytest.raises(LookupError):
                rt.object_of(frame, expr)
    finally:
        rt.close()
    assert Holder.calls == 0


def test_user_frame_skips_torch_and_stack_in_matches_the_finding_lines():
    rt = _runtime()
    here = os.path.realpath(__file__)
    found = {}
    model = torch.nn.Linear(2, 2)

    def hook(module, args):
        caller = sys._getframe(1)  # torch's, which user_frame must walk past
        found["user"] = rt.user_frame(caller)
        line = found["user"].f_lineno
        found["in"] = rt.stack_in(Finding(here, "ML999", "t", "m", Span.lines(line, line)),
                                  caller)
        found["out"] = rt.stack_in(Finding(here, "ML999", "t", "m", Span.lines(1, 2)), caller)

    rt.add_forward_pre_hook(hook)
    try:
        model(torch.randn(1, 2))
    finally:
        rt.close()
    assert found["user"].f_code.co_name == "test_user_frame_skips_torch_and_stack_in_" \
        "matches_the_finding_lines"
    assert found["in"] is found["user"] and found["out"] is None


# -- the harness, on child processes --------------------------------------------------------


@slow
def test_probes_see_the_run_and_report_with_events():
    script = FIXTURES / "train_small.py"
    loss_line = line_of(script, "loss = criterion(model(xb), yb)")
    once = line_of(script, 'parser.add_argument("--samples"')
    events: list[dict] = []
    report = verify(
        [finding(script, loss_line, var="loss"), finding(script, once)],
        options(script, {0: "RecorderProbe", 1: "NeverProbe"}, script_args=("--epochs", "2")),
        on_event=events.append,
    )
    run = report.run
    assert (run.exit_code, run.timed_out, run.crashed, run.stopped_early) == (0, False, None,
                                                                              False)
    assert run.steps == 8 and run.batches == 16  # 2 epochs x (4 train + 4 val) batches
    assert "val accuracy" in run.stdout_tail
    rec = report.verdicts[0]
    assert rec.status is VerdictStatus.CONFIRMED
    f = rec.figures
    assert (f["step_pre"], f["step_post"], f["backward"], f["batch"]) == (8, 8, 8, 16)
    assert f["line"] == 8 and f["after_line"] == 8 and f["assigned"] == "Tensor,Tensor,Tensor"
    assert f["stack_in"] == 0  # backward runs on the next line, outside the finding's span
    assert f["forward_pre"] == f["forward"] > 0
    assert f["user_files"] == "train_small.py" and f["max_batch_rows"] == 8
    assert report.verdicts[1].figures["hits"] == 1
    assert {i for i, seconds in run.probe_seconds if seconds > 0} == {0, 1}
    kinds = [e["type"] for e in events]
    assert kinds[0] == "phase" and "started" in kinds and kinds[-1] == "finished"
    assert [e["steps"] for e in events if e["type"] == "step"] == list(range(1, 9))


@slow
def test_step_budget_ends_the_run_early_with_a_complete_report():
    script = FIXTURES / "train_small.py"
    line = line_of(script, "loss = criterion(model(xb), yb)")
    report = verify([finding(script, line)],
                    options(script, {0: "RecorderProbe"}, script_args=("--epochs", "50"),
                            max_steps=5))
    assert report.run.steps == 5 and report.run.stopped_early
    assert report.run.stop_reason == "steps" and report.run.exit_code == 0
    assert report.verdicts[0].status is VerdictStatus.CONFIRMED
    assert report.verdicts[0].figures["step_post"] == 5


@slow
def test_run_stops_once_every_probe_is_settled():
    script = FIXTURES / "train_small.py"
    events: list[dict] = []
    report = verify([finding(script, 1, steps=3)],
                    options(script, {0: "SettleAfterProbe"}, script_args=("--epochs", "50")),
                    on_event=events.append)
    assert report.run.steps == 3 and report.run.stop_reason == "settled"
    assert report.verdicts[0].status is VerdictStatus.REFUTED
    # The settled event carries the whole verdict (kept if the script dies suddenly).
    (settled,) = [e for e in events if e["type"] == "settled"]
    assert (settled["index"], settled["status"], settled["verdict"]["status"]) == (
        0, "refuted", "refuted")


@slow
def test_probe_failures_become_error_verdicts_and_the_run_goes_on():
    script = FIXTURES / "train_small.py"
    line = line_of(script, "loss = criterion(model(xb), yb)")
    unused = line_of(script, "def make_loader")
    report = verify(
        [finding(script, line), finding(script, line), finding(script, line),
         finding(script, line), finding(script, unused)],
        options(script, {0: "BrokenProbe", 1: "RecorderProbe", 2: "VerdictRaisesProbe",
                         3: "NoSuchProbe"}, script_args=("--epochs", "1")))
    broken, recorder, raises, missing, unprobed = report.verdicts
    assert report.run.exit_code == 0 and report.run.crashed is None
    assert broken.status is VerdictStatus.ERROR
    assert "failed in a forward hook: ValueError: probe bug" in broken.evidence
    assert recorder.status is VerdictStatus.CONFIRMED and recorder.figures["step_post"] == 4
    assert raises.status is VerdictStatus.ERROR and "RuntimeError: verdict bug" in raises.evidence
    assert missing.status is VerdictStatus.ERROR and "NoSuchProbe" in missing.evidence
    # ML999 is no rule: no probe, so nothing could be checked.
    assert unprobed.status is VerdictStatus.NOT_REACHED and "no runtime probe" in unprobed.evidence


@slow
def test_not_reached_says_the_flagged_code_never_ran():
    script = FIXTURES / "train_small.py"
    line = line_of(script, 'print(f"epoch {epoch}')
    report = verify([finding(script, line)],
                    options(script, {0: "NeverProbe"}, script_args=("--epochs", "50"),
                            max_steps=3))
    verdict = report.verdicts[0]
    assert verdict.status is VerdictStatus.NOT_REACHED
    assert f"train_small.py:{line} never ran within the budget (3 optimizer step(s)" in (
        verdict.evidence)


@slow
def test_a_hang_is_killed_with_its_whole_process_group_at_the_timeout():
    script = FIXTURES / "hang.py"
    line = line_of(script, "loss = criterion(model(xb), yb)")
    events: list[dict] = []
    timeout = 20.0
    started = time.monotonic()
    report = verify([finding(script, line)],
                    options(script, {0: "RecorderProbe"}, timeout=timeout),
                    on_event=events.append)
    elapsed = time.monotonic() - started
    run = report.run
    assert run.timed_out and run.exit_code is None and run.crashed is None
    assert elapsed < timeout + 5
    pid = next(e["pid"] for e in events if e["type"] == "started")
    helper = int(run.stdout_tail.split("helper pid ")[1].split()[0])
    deadline = time.monotonic() + 5
    while (alive(pid) or alive(helper)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid) and not alive(helper)
    # Verdicts reached before the hang were written before the kill.
    assert report.verdicts[0].status is VerdictStatus.CONFIRMED
    assert report.verdicts[0].figures["step_post"] == 4
    assert any("timeout" in note for note in run.notes)


@slow
def test_a_crash_is_summarised_and_verdicts_reached_before_it_are_kept():
    script = FIXTURES / "crash.py"
    line = line_of(script, "loss = criterion(model(xb), yb)")
    report = verify([finding(script, line)], options(script, {0: "RecorderProbe"}))
    run = report.run
    assert run.exit_code == 1 and not run.timed_out
    assert run.crashed.startswith("IndexError: Target 5 is out of bounds")
    assert run.crashed.endswith(f"crash.py:{line})")
    assert "Traceback" in run.stderr_tail and "crash.py" in run.stderr_tail
    assert "runpy" not in run.stderr_tail and "mllint/verify" not in run.stderr_tail
    assert report.verdicts[0].status is VerdictStatus.CONFIRMED
    assert report.verdicts[0].figures["step_post"] == 2


@pytest.mark.parametrize("existing", [False, True], ids=["new", "pre-existing"])
@slow
def test_torch_save_never_writes_the_users_path(tmp_path, existing):
    script = tmp_path / "checkpoint.py"
    shutil.copy(FIXTURES / "checkpoint.py", script)
    target = tmp_path / "checkpoints" / "last.pt"
    if existing:
        target.parent.mkdir()
        target.write_bytes(b"the user's real checkpoint")
        before = target.stat().st_mtime_ns
    line = line_of(script, "torch.save(")
    report = verify([finding(script, line)],
                    options(script, {0: "RecorderProbe"}, cwd=str(tmp_path)))
    assert report.run.exit_code == 0 and report.run.crashed is None
    # The script's own reload of the checkpoint read the in-memory copy.
    assert "reloaded ['epoch', 'model', 'optimizer'] epoch 1" in report.run.stdout_tail
    figures = report.verdicts[0].figures
    assert figures["save"] == 2 and figures["saved_keys"] == "epoch,model,optimizer"
    assert figures["save_targets"] == "checkpoints/last.pt,checkpoints/last.pt"
    if existing:
        assert target.read_bytes() == b"the user's real checkpoint"
        assert target.stat().st_mtime_ns == before
    else:
        assert not target.exists()


@slow
def test_missing_torch_is_a_clear_error(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    with pytest.raises(VerifyError, match=r"torch is not installed in .*venv/bin/python"):
        verify([], VerifyOptions(script=str(FIXTURES / "train_small.py"), python=str(python)))


@slow
def test_run_python_dash_m_runs_a_module_from_the_working_directory():
    module_file = FIXTURES / "vpkg" / "train.py"
    line = line_of(module_file, "loss = criterion(model(xb), yb)")
    report = verify([finding(module_file, line)],
                    options(None, {0: "RecorderProbe"}, run="python -m vpkg.train --epochs 1",
                            cwd=str(FIXTURES)))
    assert report.run.exit_code == 0 and report.run.steps == 4
    assert "epoch 0: last loss" in report.run.stdout_tail
    assert report.verdicts[0].figures["line"] == 4


@slow
def test_run_python_script_with_flags_and_environment():
    report = verify([], options(None, run="FOO=1 python -u train_small.py --epochs 9",
                                script_args=("--epochs", "1"), cwd=str(FIXTURES)))
    assert report.run.exit_code == 0 and report.run.steps == 4  # the last --epochs wins


@pytest.mark.parametrize("kw,message", [
    ({"run": "torchrun train_small.py"}, "--run must start with python"),
    ({"run": "python -c 'print(1)'"}, "python -c"),
    ({"run": "python missing.py"}, "script not found: missing.py"),
    ({"script": "missing.py"}, "script not found"),
    ({}, "either a script"),
    ({"script": "train_small.py", "device": "tpu"}, "unknown device"),
    ({"script": "train_small.py", "max_steps": 0}, "at least 1"),
    ({"run": "python -m no_such_module_here"}, "no module named 'no_such_module_here'"),
])
@slow
def test_bad_targets_are_clear_errors(kw, message):
    with pytest.raises(VerifyError, match=message.replace("(", r"\(")):
        verify([], VerifyOptions(cwd=str(FIXTURES), **kw))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@slow
def test_device_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(VerifyError, match=r"--device cuda.*is_available\(\) is False"):
        verify([], VerifyOptions(script=str(FIXTURES / "train_small.py"), device="cuda"))


@slow
def test_fault_injection_runs_a_second_short_run_with_only_those_probes():
    script = FIXTURES / "train_small.py"
    line = line_of(script, "loss = criterion(model(xb), yb)")
    events: list[dict] = []
    report = verify([finding(script, line), finding(script, line)],
                    options(script, {0: "FaultProbe", 1: "RecorderProbe"},
                            script_args=("--epochs", "50")),
                    on_event=events.append)
    assert report.fault_run is not None
    # The injected error escaped the unprotected loop: the script stopped there.
    assert report.fault_run.crashed.startswith("InjectedFault: mllint: injected failure")
    assert report.verdicts[0].status is VerdictStatus.REFUTED
    assert report.verdicts[1].figures["step_post"] == 20  # main run, untouched
    phases = [e["phase"] for e in events if e["type"] == "phase"]
    assert phases == ["main", "fault-injection"]


@slow
def test_a_bare_except_that_swallows_the_stop_cannot_keep_the_run_going(tmp_path):
    script = tmp_path / "swallow.py"
    script.write_text(
        "import torch\n"
        "model = torch.nn.Linear(2, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for step in range(1000):\n"
        "    try:\n"
        "        opt.zero_grad()\n"
        "        model(torch.randn(4, 2)).sum().backward()\n"
        "        opt.step()\n"
        "    except:\n"
        "        pass\n")
    report = verify([], options(script, max_steps=3, timeout=60))
    assert report.run.stop_reason == "steps" and report.run.steps == 3
    assert any("caught mllint's stop signal" in note for note in report.run.notes)


@slow
def test_watcher_reports_runtime_only_findings_unless_a_static_finding_covers_them():
    script = FIXTURES / "train_small.py"
    backward = line_of(script, "loss.backward()")
    watcher = (f"{PROBES}:LossLineWatcher",)
    report = verify([], options(script, watch=watcher, script_args=("--epochs", "1")))
    (found, verdict), = report.runtime_findings
    assert (found.code, found.line, os.path.basename(found.path)) == (
        "ML999", backward, "train_small.py")
    assert verdict.status is VerdictStatus.CONFIRMED
    covered = verify([finding(script, backward)],
                     options(script, {0: "NeverProbe"}, watch=watcher,
                             script_args=("--epochs", "1")))
    assert covered.runtime_findings == ()


@slow
def test_several_findings_get_verdicts_in_order():
    script = FIXTURES / "several_findings.py"
    step = line_of(script, "optimizer.step()")
    val = line_of(script, "correct += ")
    never = line_of(script, 'if __name__ == "__main__":')
    findings = [finding(script, step, "ML001"), finding(script, val, "ML002"),
                finding(script, never, "ML003")]
    report = verify(findings, options(script, {0: "NeverProbe", 1: "NeverProbe",
                                                2: "NeverProbe"}))
    assert [v.figures.get("hits") for v in report.verdicts] == [12, 12, 1]


@slow
def test_the_run_is_sandboxed_offline_and_writes_no_bytecode(tmp_path):
    (tmp_path / "helper_mod.py").write_text("VALUE = 3\n")
    script = tmp_path / "env_script.py"
    script.write_text(
        "import os, sys\n"
        "import helper_mod\n"
        "for name in ('WANDB_MODE', 'HF_HUB_OFFLINE', 'MLFLOW_TRACKING_URI',\n"
        "             'CUDA_VISIBLE_DEVICES', 'NEPTUNE_MODE'):\n"
        "    print(name, repr(os.environ.get(name)))\n"
        "print('stdin', repr(sys.stdin.read()))\n"
        "print('helper', helper_mod.VALUE)\n")
    report = verify([], VerifyOptions(script=str(script), cwd=str(tmp_path)))
    out = report.run.stdout_tail
    assert report.run.exit_code == 0, report.run.stderr_tail
    assert "WANDB_MODE 'disabled'" in out and "HF_HUB_OFFLINE '1'" in out
    assert "CUDA_VISIBLE_DEVICES ''" in out and "NEPTUNE_MODE 'debug'" in out
    assert "MLFLOW_TRACKING_URI 'file://" in out and str(tmp_path) not in out.split(
        "MLFLOW_TRACKING_URI")[1].split("\n")[0]
    assert "stdin ''" in out and "helper 3" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env_script.py", "helper_mod.py"]


def test_summary_writer_logs_are_redirected_to_the_scratch_directory(tmp_path):
    from mllint.verify import sandbox

    package = tmp_path / "fake_board"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "writer.py").write_text(
        "class SummaryWriter:\n"
        "    def __init__(self, log_dir=None, comment=''):\n"
        "        self.log_dir = log_dir\n")
    rt = _runtime()
    hook = sandbox.AfterImport({"fake_board.writer": lambda module: sandbox.
                                redirect_summary_writer(module, str(tmp_path / "scratch"),
                                                        rt.patch, "log_dir")})
    rt.on_close(hook.install())
    sys.path.insert(0, str(tmp_path))
    try:
        from fake_board.writer import SummaryWriter

        positional = SummaryWriter("runs/exp1").log_dir
        keyword = SummaryWriter(log_dir="runs/exp2").log_dir
    finally:
        rt.close()
        sys.path.remove(str(tmp_path))
    assert positional == str(tmp_path / "scratch" / "tensorboard" / "1")
    assert keyword == str(tmp_path / "scratch" / "tensorboard" / "2")
    assert SummaryWriter("runs/exp3").log_dir == "runs/exp3"  # restored after the run
    for name in ("fake_board.writer", "fake_board"):
        sys.modules.pop(name, None)


@slow
def test_an_interpreter_without_mllint_or_libcst_still_runs_the_rules_probes(tmp_path):
    """The user's environment has torch but neither mllint nor libcst (rule modules import
    it): the bootstrap brings mllint, and borrows libcst from the harness's site dirs."""
    site_dir = Path(torch.__file__).resolve().parent.parent
    links = tmp_path / "site"
    links.mkdir()
    for name in ("torch", "torchgen", "functorch", "typing_extensions.py", "sympy", "mpmath",
                 "filelock", "jinja2", "markupsafe", "networkx", "fsspec"):
        if (site_dir / name).exists():
            (links / name).symlink_to(site_dir / name)
    python = tmp_path / "python"  # `-S`: no site-packages, no .pth import hooks
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    env = {"PYTHONPATH": str(links)}
    check = subprocess.run([str(python), "-c", "import libcst"], env={**os.environ, **env},
                           capture_output=True)
    assert check.returncode != 0  # the premise: libcst is not importable there

    script = FIXTURES / "checkpoint.py"
    line = line_of(script, "torch.save(")
    report = verify([finding(script, line, "ML006")],
                    VerifyOptions(script=str(script), python=str(python), env=env,
                                  cwd=str(tmp_path), watch=()))
    assert report.run.exit_code == 0, report.run.stderr_tail
    assert report.verdicts[0].status is not VerdictStatus.ERROR, report.verdicts[0].evidence
