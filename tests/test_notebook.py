"""Jupyter notebooks: code cells linted as one module, positions reported per cell."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import FIXTURES
from mllint.engine import lint_path
from mllint.notebook import read_notebook
from mllint.registry import all_rules
from test_cli import run

NOTEBOOK = FIXTURES / "notebooks" / "bad_training_loop.ipynb"
_EXPECT = re.compile(r"#\s*expect:\s*(ML\d{3}(?:\s*,\s*ML\d{3})*)")


def notebook(*cells: str, markdown_first: bool = False) -> str:
    """A notebook as nbformat writes it: one JSON string per source line, indent 1."""
    def code(src: str) -> dict:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                "source": src.splitlines(keepends=True)}
    out = [code(c) for c in cells]
    if markdown_first:
        out.insert(0, {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n"]})
    doc = {"cells": out, "metadata": {"language_info": {"name": "python"}},
           "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(doc, indent=1) + "\n"


def expected_cells(path: Path) -> set[tuple[str, int, int]]:
    """(code, cell, line in cell) marked with ``# expect:`` in a notebook's code cells."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = set()
    cells = [c for c in doc["cells"] if c["cell_type"] == "code"]
    for n, cell in enumerate(cells, start=1):
        for i, line in enumerate("".join(cell["source"]).splitlines(), start=1):
            m = _EXPECT.search(line)
            if m:
                out |= {(c.strip(), n, i) for c in m.group(1).split(",")}
    return out


def file_line_of(path: Path, needle: str) -> int:
    (n,) = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return n


def test_magics_and_shell_escapes_are_masked_line_for_line():
    raw = notebook(
        "%matplotlib inline\n!pip install torch\nfiles = !ls\nx = 1\ny = x != 2\nz = x % 2\nhelp?",
        "%%bash\necho (not python\n",
        "%%time\nfor i in range(3):\n    !echo hi\n    w = i\n",
    )
    nb = read_notebook("n.ipynb", raw)
    lines = nb.text.splitlines()
    assert lines[:7] == ["pass  # IPython", "pass  # IPython", "pass  # IPython", "x = 1",
                         "y = x != 2", "z = x % 2", "pass  # IPython"]
    assert lines[7:9] == ["pass  # IPython cell magic", ""]  # %%bash: the whole cell
    # %%time runs Python: only its first line is masked; an escape keeps its indentation.
    assert lines[9:13] == ["pass  # IPython cell magic", "for i in range(3):",
                           "    pass  # IPython", "    w = i"]
    compile(nb.text, "n.ipynb", "exec")
    assert [(w.cell, w.line) for w in nb.lines][6:10] == [(1, 7), (2, 1), (2, 2), (3, 1)]


def test_wildcard_help_is_masked_and_arithmetic_is_not():
    nb = read_notebook("n.ipynb", notebook("torch.*Tensor?\nnp.*load*??\ny = 2*3\n"))
    assert nb.text.splitlines() == ["pass  # IPython", "pass  # IPython", "y = 2*3"]
    assert nb.broken == ()


def test_fixture_findings_are_mapped_to_their_cells():
    result = lint_path(str(NOTEBOOK), all_rules())
    assert result.errors == ()
    got = {(f.code, f.cell, f.line) for f in result.findings}
    assert got == expected_cells(NOTEBOOK) == {("ML001", 4, 7), ("ML004", 4, 8)}
    ml001 = next(f for f in result.findings if f.code == "ML001")
    assert ml001.notebook_line == file_line_of(NOTEBOOK, "optimizer.step()  # expect: ML001")


@pytest.fixture()
def nb_copy(tmp_path) -> Path:
    dst = tmp_path / "train nb.ipynb"
    shutil.copy(NOTEBOOK, dst)
    return dst


def test_every_output_format_names_the_cell(nb_copy):
    items = json.loads(run("--format", "json", nb_copy.name, cwd=nb_copy.parent).stdout)
    assert {(d["code"], d["cell"], d["line"]) for d in items} == expected_cells(NOTEBOOK)
    full = run(nb_copy.name, cwd=nb_copy.parent)
    assert full.returncode == 1
    assert "train nb.ipynb:cell 4:line 7: ML001 missing-zero-grad\n" in full.stdout
    assert ">7 │         optimizer.step()  # expect: ML001" in full.stdout  # the cell's frame
    concise = run("--format", "concise", nb_copy.name, cwd=nb_copy.parent).stdout
    assert "train nb.ipynb:cell 4:8:9: ML004 " in concise
    step_line = file_line_of(NOTEBOOK, "optimizer.step()  # expect: ML001")
    github = run("--format", "github", nb_copy.name, cwd=nb_copy.parent).stdout
    assert f"::error file=train nb.ipynb,line={step_line},title=ML001 missing-zero-grad::" \
           "cell 4, line 7: " in github
    sarif = json.loads(run("--format", "sarif", nb_copy.name, cwd=nb_copy.parent).stdout)
    (result,) = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "ML001"]
    loc = result["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "train%20nb.ipynb", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": step_line}
    assert result["properties"] == {"cell": 4, "cellLine": 7, "cellColumn": 9}


def test_noqa_applies_per_line_in_a_cell(tmp_path):
    (tmp_path / "nb.ipynb").write_text(NOTEBOOK.read_text().replace(
        "optimizer.step()  # expect: ML001", "optimizer.step()  # noqa: ML001"))
    items = json.loads(run("--format", "json", "nb.ipynb", cwd=tmp_path).stdout)
    assert [(d["code"], d["cell"], d["line"]) for d in items] == [("ML004", 4, 8)]


def test_noqa_warnings_name_the_cell(tmp_path):
    (tmp_path / "nb.ipynb").write_text(NOTEBOOK.read_text().replace(
        "optimizer.step()  # expect: ML001", "optimizer.step()  # noqa: ML0001"))
    proc = run("--format", "json", "nb.ipynb", cwd=tmp_path)
    assert "warning: nb.ipynb: cell 4, line 7: unknown rule `ML0001`" in proc.stderr


def test_lines_named_in_a_message_are_lines_of_the_cells(tmp_path):
    (tmp_path / "nb.ipynb").write_text(notebook(
        "import torch\nfrom torch import nn\nmodel = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5))\n",
        "def test(loader):\n    hits = 0\n    for x, y in loader:\n"
        "        hits += (model(x).argmax(1) == y).sum().item()\n    return hits\n",
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nfor x, y in train_loader:\n"
        "    opt.zero_grad()\n    nn.functional.cross_entropy(model(x), y).backward()\n"
        "    opt.step()\nprint(test(val_loader))\n",
    ))
    items = json.loads(run("--format", "json", "nb.ipynb", cwd=tmp_path).stdout)
    ml003 = next(d for d in items if d["code"] == "ML003")
    assert (ml003["cell"], ml003["line"]) == (2, 4)
    # The joined text's lines 6 and 14: the loop in the finding's cell, the call in another.
    assert "in the loop on line 3 with autograd on (its call on line 6 of cell 3 runs" \
        in ml003["message"]


def test_directory_walk_lints_notebooks_and_skips_checkpoints(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / "a.ipynb")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb")
    items = json.loads(run("--format", "json", ".", cwd=tmp_path).stdout)
    assert {d["path"] for d in items} == {"./a.ipynb"}
    assert {(d["code"], d["cell"]) for d in items} == {("ML001", 4), ("ML004", 4)}


def test_cache_covers_notebooks(tmp_path):
    nb = tmp_path / "nb.ipynb"
    shutil.copy(NOTEBOOK, nb)
    args = ("--format", "json", "--cache-dir", str(tmp_path / "cache"), "nb.ipynb")
    env = {"MLLINT_NO_CACHE": ""}
    first = json.loads(run(*args, cwd=tmp_path, env=env).stdout)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1
    assert json.loads(run(*args, cwd=tmp_path, env=env).stdout) == first  # read back
    nb.write_text(nb.read_text().replace("        total += loss  # expect: ML004\\n",
                                         "        total += loss.item()\\n"))
    changed = json.loads(run(*args, cwd=tmp_path, env=env).stdout)
    assert [(d["code"], d["cell"], d["line"]) for d in changed] == [("ML001", 4, 7)]
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2


def test_broken_notebooks_are_reported_not_called_clean(tmp_path):
    (tmp_path / "bad_json.ipynb").write_text('{"cells": [')
    (tmp_path / "bad_cell.ipynb").write_text(notebook(
        "import torch\nloss.backward()", "x = (\noptimizer.step()", markdown_first=True))
    proc = run("--format", "json", "bad_json.ipynb", "bad_cell.ipynb", cwd=tmp_path)
    assert proc.returncode == 2
    by_path = {d["path"]: d for d in json.loads(proc.stdout)}
    assert by_path["bad_json.ipynb"]["name"] == "syntax-error"
    assert "not a notebook: invalid JSON" in by_path["bad_json.ipynb"]["message"]
    broken = by_path["bad_cell.ipynb"]
    assert (broken["code"], broken["cell"], broken["line"]) == (None, 2, 1)


_EXERCISE = (
    "import torch\nfrom torch import nn\nmodel = nn.Linear(4, 2)\n"
    "optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)\n"
    "criterion = nn.CrossEntropyLoss()",
    "## TODO: define the scheduler\nscheduler = ",
    "for epoch in range(3):\n    for x, y in loader:\n        loss = criterion(model(x), y)\n"
    "        loss.backward()\n        optimizer.step()",
    "    print('indented by mistake')",
)


def test_a_cell_python_cannot_parse_is_left_out_and_the_others_are_linted(tmp_path):
    # Jupyter compiles each cell alone: an exercise's blank (cell 2) and a stray indent
    # (cell 4) stop only their own cells, so cell 3's missing zero_grad is still found.
    (tmp_path / "exercise.ipynb").write_text(notebook(*_EXERCISE))
    proc = run("--format", "json", "--no-cache", "exercise.ipynb", cwd=tmp_path)
    assert proc.returncode == 2  # a syntax error is still an error of the run
    got = {(d["code"], d["name"], d["cell"], d["line"]) for d in json.loads(proc.stdout)}
    assert got == {("ML001", "missing-zero-grad", 3, 5), (None, "syntax-error", 2, 2),
                   (None, "syntax-error", 4, 1)}
    messages = [d["message"] for d in json.loads(proc.stdout) if d["code"] is None]
    assert all(m.endswith("this cell is left out, the others are linted") for m in messages)


def test_a_left_out_cell_keeps_every_other_line_in_place():
    nb = read_notebook("n.ipynb", notebook(*_EXERCISE))
    lines = nb.text.splitlines()
    assert lines[5:7] == ["", ""]  # cell 2, blank
    assert lines[11] == "        optimizer.step()" and nb.locate(12).cell == 3
    assert [(e.cell, e.position.line, e.partial) for e in nb.broken] == [(2, 2, True), (4, 1, True)]


def test_a_notebook_with_a_left_out_cell_counts_as_checked_also_from_the_cache(tmp_path):
    (tmp_path / "exercise.ipynb").write_text(notebook(*_EXERCISE))
    for _ in range(2):  # the second run reads the cache
        proc = run("--cache-dir", str(tmp_path / "cache"), "exercise.ipynb", cwd=tmp_path)
        assert "exercise.ipynb:cell 3:line 5: ML001" in proc.stdout
        assert "(1 file checked)." in proc.stdout and "could not be linted" not in proc.stdout


def test_cells_that_each_fail_are_each_reported():
    nb = read_notebook("n.ipynb", notebook("x = (", "y = 1", "z = [\n"))
    assert [(e.cell, e.position.line) for e in nb.broken] == [(1, 1), (3, 1)]
    assert nb.text == "\ny = 1\n\n"


def test_when_leaving_cells_out_does_not_help_the_notebook_error_stands(monkeypatch):
    # Should the rest still not parse, nothing is dropped: the whole notebook's syntax
    # error is reported, as for any file Python cannot parse.
    import mllint.notebook as nbs

    monkeypatch.setattr(nbs, "_syntax_error", lambda text: SyntaxError("always"))
    nb = read_notebook("n.ipynb", notebook("x = (", "y = 1"))
    assert nb.broken == () and nb.text == "x = (\ny = 1\n"


@pytest.mark.slow
def test_verify_runs_the_notebook_cells_from_its_own_directory(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "helper.py").write_text("SEED = 0\n")
    raw = NOTEBOOK.read_text().replace('"torch.manual_seed(0)\\n"',
                                       '"from helper import SEED\\n",\n    "torch.manual_seed(SEED)\\n"')
    assert "from helper import SEED" in raw
    (folder / "nb.ipynb").write_text(raw)
    before = sorted(p.name for p in folder.iterdir())
    proc = run("--verify", "--format", "json", "notebooks/nb.ipynb", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    items = json.loads(proc.stdout)["diagnostics"]  # with --verify: beside the run summary
    got = {(d["code"], d["cell"], d["line"], d["verification"]["status"]) for d in items}
    assert got == {("ML001", 4, 7, "confirmed"), ("ML004", 4, 8, "confirmed")}
    ml004 = next(d for d in items if d["code"] == "ML004")
    assert "(cell 4, line 8)" in ml004["verification"]["evidence"]
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written there
    assert (folder / "nb.ipynb").read_text() == raw
