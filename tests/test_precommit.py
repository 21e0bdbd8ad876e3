"""The pre-commit hook, installed from this repository with ``pre-commit try-repo``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from helpers import FIXTURES, ROOT, expected

pytestmark = pytest.mark.slow


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit not installed")
def test_hook_from_this_repo_blocks_a_buggy_file_and_passes_a_clean_one(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of mllint")
    bad = sorted(FIXTURES.glob("ml00*/bad_*.py"))[0]
    good = sorted(FIXTURES.glob("ml00*/good_*.py"))[0]
    proj = tmp_path / "proj"
    proj.mkdir()
    _git("init", "-q", cwd=proj)
    shutil.copy(bad, proj / "train_bad.py")
    shutil.copy(good, proj / "train_good.py")
    shutil.copy(FIXTURES / "notebooks" / "bad_training_loop.ipynb", proj / "explore.ipynb")
    _git("add", ".", cwd=proj)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pc-home"), "MLLINT_NO_CACHE": "1"}

    def hook(*files):
        return subprocess.run(
            ["pre-commit", "try-repo", str(ROOT), "mllint", "--files", *files],
            cwd=proj, capture_output=True, text=True, env=env, timeout=900)

    failing = hook("train_bad.py")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    for code, line in expected(bad):
        assert f"train_bad.py:{line}:" in failing.stdout and code in failing.stdout
    passing = hook("train_good.py")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    # Notebooks are the hook's too (types_or: jupyter); one process, so one summary.
    both = hook("explore.ipynb", "train_bad.py")
    assert both.returncode == 1, both.stdout + both.stderr
    assert "explore.ipynb:cell 4:line 7: ML001" in both.stdout
    assert both.stdout.count("Found ") == 1, both.stdout


def test_hook_definition_covers_notebooks_and_runs_one_process():
    import yaml  # pre-commit's own dependency

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["types_or"] == ["python", "pyi", "jupyter"]
    assert "types" not in hook  # would be ANDed with types_or
    assert hook["require_serial"] is True
    assert hook["entry"] == "mllint --force-exclude"  # files come by name; exclude applies
    # types_or needs pre-commit 2.9.0.
    assert tuple(int(p) for p in hook["minimum_pre_commit_version"].split(".")) >= (2, 9, 0)
