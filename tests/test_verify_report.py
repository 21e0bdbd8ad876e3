"""``--report report.html``: a self-contained page of a real run, with the same per-step
series as ``--format json``; rendered in headless Chromium where one is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("torch")

from helpers import ROOT

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "fixtures" / "runtime" / "ml104" / "bad_adamw_at_sgd_lr.py"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("report")
    shutil.copy(SCRIPT, tmp / SCRIPT.name)
    proc = subprocess.run(
        [sys.executable, "-m", "mllint", "--verify", "--format", "json", "--report",
         "report.html", SCRIPT.name], cwd=tmp, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLLINT_NO_CACHE": "1"})
    assert proc.returncode == 1, proc.stderr
    return tmp / "report.html", json.loads(proc.stdout)


def test_report_is_self_contained_with_findings_and_plots(run):
    path, doc = run
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    tags = page.tags
    # Nothing is fetched: no scripts, stylesheets, images or frames from anywhere.
    assert not [t for t, a in tags if t in ("script", "link", "img", "iframe")]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    (row,) = [a for t, a in tags if t == "tr" and a.get("class") == "finding"]
    assert (row["data-code"], row["data-status"]) == ("ML104", "confirmed")
    assert "||update||/||weight|| per step" in text
    charts = [a["aria-label"] for t, a in tags if t == "svg"]
    assert charts[0] == "Loss at each backward()"
    assert any(c.startswith("Gradient norm") for c in charts)
    assert any(c.startswith("Update / weight ratio") for c in charts)
    assert any(c.startswith("Learning rate") for c in charts)
    assert any(c.startswith("Memory in use (process RSS") for c in charts)
    # The loss plot has one point per loss the JSON series carries.
    loss_line = next(a for t, a in tags if t == "polyline" and a.get("data-label") == "loss")
    # The run stops once ML104 is flagged and the other checks are settled (9 steps).
    assert (doc["verify"]["stop_reason"], doc["verify"]["steps"]) == ("settled", 9)
    assert len(loss_line["points"].split()) == len(doc["verify"]["series"]["loss"]) == 9


def test_json_carries_the_series_the_report_plots(run):
    _, doc = run
    series = doc["verify"]["series"]
    (optimizer,) = series["optimizers"]
    assert optimizer["optimizer"] == "AdamW" and optimizer["site"] == f"{SCRIPT.name}:13"
    # Measured steps: the first three, then one in four (monitor.measured).
    assert optimizer["steps"] == [1, 2, 3, 4, 8]
    (group,) = optimizer["groups"]
    assert len(group["lr"]) == len(group["grad_norm"]) == len(group["update_ratio"]) == 5
    assert group["lr"][0] == 20.0 and group["update_ratio"][0] > 1.0
    assert [s for s, _ in series["memory_bytes"]] == optimizer["steps"]
    assert series["memory_kind"] == "rss"


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(run, tmp_path):
    path, _ = run
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", path.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert "mllint --verify report" in dom
    assert dom.count("<polyline") >= 5 and 'data-status="confirmed"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1100,2400",
                    path.as_uri()], capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
