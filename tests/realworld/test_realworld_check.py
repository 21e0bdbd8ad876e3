"""The real-world benchmark's matching and metrics, on synthetic data (no network, no mirrors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import check
from check import Entry, Finding

GIT = shutil.which("git")


def entry(line, verdict="true", code="ML001", path="train.py", text="", function="", repo="o/r"):
    return Entry(repo, "c0ffee", path, line, code, "why", verdict, text, function)


def finding(line, code="ML001", path="train.py", text="", function="", repo="o/r"):
    return Finding(repo, path, line, code, text, function, "msg")


def test_exact_line_matches_and_nothing_is_new_or_lost():
    pairs, lost, new = check.match([entry(10)], [finding(10)])
    assert [(e.line, f.line) for e, f in pairs] == [(10, 10)]
    assert lost == [] and new == []


def test_moved_line_matches_by_its_text():
    e = entry(10, text="optimizer.step()", function="train")
    f = finding(57, text="optimizer.step()", function="other")
    pairs, lost, new = check.match([e], [f])
    assert [(p.line, q.line) for p, q in pairs] == [(10, 57)]


def test_same_function_matches_only_within_the_window():
    near = finding(10 + check.FUNCTION_WINDOW, text="loss.backward()", function="train")
    far = finding(11 + check.FUNCTION_WINDOW, text="loss.backward()", function="train")
    e = entry(10, text="optimizer.step()", function="train")
    assert len(check.match([e], [near])[0]) == 1
    pairs, lost, new = check.match([e], [far])
    assert pairs == [] and lost == [e] and new == [far]


def test_a_span_matches_any_line_inside_it_and_nothing_outside():
    e = Entry("o/r", "c", "train.py", 46, "ML007", "why", None, "", "", (46, 127))
    inside, outside = finding(127, code="ML007"), finding(128, code="ML007")
    assert len(check.match([e], [inside])[0]) == 1
    assert check.match([e], [outside])[0] == []


def test_a_span_must_hold_its_line(tmp_path):
    bad = tmp_path / "triage.toml"
    bad.write_text('[[missed]]\nrepo = "o/r"\ncommit = "c"\npath = "a.py"\nline = 9\n'
                   'code = "ML001"\nwhy = "x"\nspan = [10, 20]\n')
    with pytest.raises(SystemExit, match="span must be"):
        check.load_triage(bad)


def test_code_path_and_repo_must_agree():
    e = entry(10, text="x")
    for f in (finding(10, code="ML002", text="x"), finding(10, path="eval.py", text="x"),
              finding(10, repo="o/other", text="x")):
        pairs, lost, new = check.match([e], [f])
        assert pairs == [] and lost == [e] and new == [f]


def test_matching_is_one_to_one_and_prefers_the_exact_line():
    # Two findings with the same text (same line, two arguments) and two entries for them.
    e1, e2 = entry(250, text="loss(a) + loss(b)"), entry(250, text="loss(a) + loss(b)")
    f1, f2, f3 = (finding(250, text="loss(a) + loss(b)"), finding(250, text="loss(a) + loss(b)"),
                  finding(300, text="loss(a) + loss(b)"))
    pairs, lost, new = check.match([e1, e2], [f3, f1, f2])
    assert sorted(f.line for _, f in pairs) == [250, 250]
    assert lost == [] and new == [f3]


def test_notebook_findings_match_only_in_their_cell(tmp_path):
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# title"]},
        {"cell_type": "code", "source": ["import torch\n", "model = Net()\n"]},
        {"cell_type": "code", "source": "for x in val_loader:\n    out = model(x)\n"},
    ]}
    (tmp_path / "a.ipynb").write_text(json.dumps(nb))
    assert check.source_context(tmp_path, "a.ipynb", 2, {}, 2) == ("out = model(x)", "<module>")
    assert check.source_context(tmp_path, "a.ipynb", 2, {}, 1) == ("model = Net()", "<module>")
    assert check.notebook_cell(json.dumps(nb), 3) == ""
    in_cell_2 = Entry("o/r", "c0ffee", "a.ipynb", 2, "ML003", "why", "true", cell=2)
    pairs, lost, new = check.match([in_cell_2], [
        Finding("o/r", "a.ipynb", 2, "ML003", cell=1), Finding("o/r", "a.ipynb", 2, "ML003", cell=2)])
    assert [(e.cell, f.cell) for e, f in pairs] == [(2, 2)]
    assert lost == [] and [f.cell for f in new] == [1]
    text = check.skeleton(new, {"o/r": "c0ffee"})
    assert tomllib.loads(text)["finding"][0]["cell"] == 1


def test_compare_splits_new_lost_and_missed_bugs_found():
    triaged = [entry(10, "true"), entry(20, "false"), entry(30, "debatable", code="ML003")]
    missed = [entry(40, None, code="ML002", text="out = model(x)"),
              entry(90, None, code="ML004")]
    findings = [finding(10), finding(30, code="ML003"),
                finding(41, code="ML002", text="out = model(x)"), finding(70, code="ML005")]
    cmp = check.compare(triaged, missed, findings)
    assert [e.line for e in cmp.lost] == [20]
    assert [f.line for f in cmp.new] == [70]
    assert [(e.line, f.line) for e, f in cmp.missed_found] == [(40, 41)]
    assert [e.line for e in cmp.missed_still] == [90]


def test_figures_precision_excludes_debatable_and_recall_counts_missed_bugs():
    triaged = [entry(1, "true"), entry(2, "true"), entry(3, "false"), entry(4, "debatable"),
               entry(5, "true", code="ML006"), entry(6, "true", code="ML006")]
    missed = [entry(7, None), entry(8, None, code="ML004")]
    # Line 2 (true) is no longer reported: lost, and a known bug not found any more.
    findings = [finding(1), finding(3), finding(4), finding(5, code="ML006"),
                finding(6, code="ML006")]
    figs = check.figures(check.compare(triaged, missed, findings), triaged, missed)
    ml001 = figs["ML001"]
    assert (ml001.true, ml001.false, ml001.debatable) == (1, 1, 1)
    assert ml001.precision == pytest.approx(0.5)
    assert (ml001.known_bugs, ml001.bugs_found) == (3, 1)          # lines 1, 2 and missed 7
    assert figs["ML004"].precision is None and figs["ML004"].recall == 0.0
    assert figs["ML006"].precision == 1.0 and figs["ML006"].recall == 1.0
    total = figs["all"]
    assert (total.true, total.false, total.debatable) == (3, 1, 1)
    assert total.precision == pytest.approx(0.75)
    assert (total.known_bugs, total.bugs_found) == (6, 3)
    assert total.recall == pytest.approx(0.5)


def test_enclosing_function_names_the_innermost_def_and_its_decorators():
    src = textwrap.dedent("""\
        import torch
        class Trainer:
            @torch.no_grad()
            def evaluate(self):
                def inner():
                    return 1
                return inner()
        x = 1
        """)
    tree = check.ast.parse(src)
    assert check.enclosing_function(tree, 3) == "Trainer.evaluate"
    assert check.enclosing_function(tree, 6) == "Trainer.evaluate.inner"
    assert check.enclosing_function(tree, 7) == "Trainer.evaluate"
    assert check.enclosing_function(tree, 8) == "<module>"


def test_triage_rejects_an_unknown_verdict(tmp_path):
    bad = tmp_path / "triage.toml"
    bad.write_text('[[finding]]\nrepo = "o/r"\ncommit = "c"\npath = "a.py"\nline = 1\n'
                   'code = "ML001"\nverdict = "maybe"\nwhy = "x"\n')
    with pytest.raises(SystemExit, match="verdict must be one of"):
        check.load_triage(bad)


def test_skeleton_is_valid_toml_that_loads_back(tmp_path):
    f = finding(12, text='print("a \\\\ b")', function="main")
    text = check.skeleton([f], {"o/r": "abc"}).replace('verdict = "?"', 'verdict = "false"')
    (tmp_path / "t.toml").write_text(text)
    [e], missed = check.load_triage(tmp_path / "t.toml")
    assert (e.repo, e.commit, e.path, e.line, e.code, e.text, e.function) == (
        "o/r", "abc", "train.py", 12, "ML001", 'print("a \\\\ b")', "main")
    assert missed == []


def test_the_checked_in_manifest_and_triage_agree():
    repos = {r.name: r.commit for r in check.load_manifest()}
    assert len(repos) >= 40
    triaged, missed = check.load_triage()
    for e in triaged + missed:
        where = f"{e.repo} {e.path}:{e.line}"
        assert repos.get(e.repo) == e.commit, f"{where} is not at the pinned commit"
        assert e.text and e.function, f"{where} lacks the source text or function it is matched by"
        assert len(e.why) > 20, f"{where} says too little about why"


@pytest.mark.skipif(GIT is None, reason="needs git")
def test_end_to_end_on_a_local_mirror_with_a_stand_in_linter(tmp_path):
    """Extraction at the pinned commit, the JSON read back, --strict on new and lost findings."""
    work = tmp_path / "o+r" / "repo"
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "train.py").write_text("def train():\n    a = 1\n    optimizer.step()\n")
    (work / "data.bin").write_bytes(b"\0" * 10)

    def git(*args):
        return subprocess.run([GIT, "-C", str(work), *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    commit = git("rev-parse", "HEAD")
    # A later commit must not leak into the extracted tree.
    (work / "pkg" / "train.py").write_text("changed = True\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "y")

    # Stands in for mllint: reports ML001 on the line holding `optimizer.step()` in what it sees.
    fake = tmp_path / "fake_mllint.py"
    fake.write_text(textwrap.dedent("""\
        import json, pathlib
        out = []
        for p in sorted(pathlib.Path('.').rglob('*.py')):
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if 'optimizer.step()' in line:
                    out.append({'path': str(p), 'line': i, 'code': 'ML001', 'message': 'm'})
        assert not pathlib.Path('data.bin').exists()
        print(json.dumps(out))
        """))
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[repo]]\nname = "o/r"\ncommit = "{commit}"\n')

    def run(triage_text, *extra):
        (tmp_path / "triage.toml").write_text(triage_text)
        proc = subprocess.run(
            [sys.executable, str(Path(check.__file__)), str(tmp_path), "--manifest", str(manifest),
             "--triage", str(tmp_path / "triage.toml"), *extra],
            capture_output=True, text=True, env={**os.environ, "MLLINT": f"{sys.executable} {fake}"})
        return proc.returncode, proc.stdout + proc.stderr

    triaged = (f'[[finding]]\nrepo = "o/r"\ncommit = "{commit}"\npath = "pkg/train.py"\nline = 3\n'
               'code = "ML001"\nverdict = "true"\nwhy = "w"\n')
    rc, out = run(triaged, "--strict", "--json", str(tmp_path / "cur.json"))
    assert rc == 0, out
    assert "new: 0, lost: 0" in out
    [got] = json.loads((tmp_path / "cur.json").read_text())
    assert (got["path"], got["line"], got["text"], got["function"]) == (
        "pkg/train.py", 3, "optimizer.step()", "train")

    rc, out = run(triaged.replace("line = 3", "line = 9").replace('code = "ML001"', 'code = "ML002"'),
                  "--strict", "--skeleton", str(tmp_path / "skel.toml"))
    assert rc == 1
    assert "NEW findings (1)" in out and "LOST findings (1)" in out
    skel = tomllib.loads((tmp_path / "skel.toml").read_text())
    assert skel["finding"][0]["line"] == 3 and skel["finding"][0]["commit"] == commit

    rc, out = run(triaged.replace('code = "ML001"', 'code = "ML002"'))
    assert rc == 0, "without --strict a difference is reported, not fatal"
