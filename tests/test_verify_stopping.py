"""Stopping ``--verify``: a signal to mllint kills the whole tree (even a process started
in a session of its own), removes the temporary files and exits 2; a script that dies
suddenly keeps the verdicts and steps it streamed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from helpers import ROOT

pytestmark = pytest.mark.slow
VERIFY = ROOT / "fixtures" / "verify"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_kills_the_tree_removes_temp_files_and_exits_2(signum, tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    shutil.copy(VERIFY / "spawns_and_hangs.py", project)
    pids_file = outside / "pids.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mllint", "--verify", "--format", "json", "--timeout", "300",
         "spawns_and_hangs.py", "--", "--pids", str(pids_file)],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MLLINT_NO_CACHE": "1"})
    deadline = time.monotonic() + 120
    while not (pids_file.exists() and pids_file.read_text().endswith("\n")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    script_pid, helper_pid = map(int, pids_file.read_text().split())
    assert alive(script_pid) and alive(helper_pid)
    # The run's temporary directory holds the spec the child was started with.
    with open(f"/proc/{script_pid}/cmdline", "rb") as fh:
        spec = next(a for a in fh.read().decode().split("\0") if a.endswith(".json"))
    run_dir = Path(spec).parent
    assert run_dir.name.startswith("mllint-verify-") and run_dir.is_dir()

    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 2, err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert json.loads(out) == []  # the static result is still printed
    time.sleep(0.5)
    assert not alive(script_pid) and not alive(helper_pid)
    assert not run_dir.exists()


def test_sudden_death_keeps_streamed_verdicts_and_steps(tmp_path):
    shutil.copy(VERIFY / "dies_suddenly.py", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mllint", "--verify", "--format", "json", "dies_suddenly.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**os.environ, "MLLINT_NO_CACHE": "1"})
    doc = json.loads(proc.stdout)
    (item,) = [d for d in doc["diagnostics"] if d["code"] == "ML001"]
    assert (item["line"], item["verification"]["status"]) == (17, "confirmed")
    run = doc["verify"]
    assert run["stop_reason"] == "crashed" and run["exit_code"] == 3
    assert run["steps"] >= 2
    assert proc.returncode == 1  # something was confirmed
