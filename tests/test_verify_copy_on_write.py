"""``--verify`` touches nothing of the user's: writes go to a copy-on-write scratch area
that later reads in the run see, and every file of the project is byte-identical after."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from helpers import ROOT
from mllint.verify.harness import VerifyOptions, verify

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "fixtures" / "verify" / "overwrites_its_files.py"


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "python-layer"])
def test_existing_checkpoint_overwritten_and_read_back_leaves_the_project_intact(
        overlay, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(SCRIPT, project / SCRIPT.name)
    (project / "model.pt").write_bytes(b"the user's trained weights, 36 bytes")
    (project / "train.log").write_text("yesterday's log\n")
    (project / "notes.txt").write_text("keep me\n")
    (project / "data.csv").write_text("x,y\n1,2\n")
    before = snapshot(project)

    report = verify([], VerifyOptions(script=str(project / SCRIPT.name), cwd=str(project),
                                      timeout=120, watch=(), overlay=overlay))

    assert report.run.crashed is None, (report.run.crashed, report.run.stderr_tail)
    assert report.run.exit_code == 0 and "finished" in report.run.stdout_tail
    assert snapshot(project) == before
