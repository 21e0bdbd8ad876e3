"""``--fix``, ``--unsafe-fixes`` and ``--diff``: each fix removes its finding, the fixed file
parses, and nothing else in the file changes."""

from __future__ import annotations

import difflib
import json
import shutil
import textwrap

import libcst as cst
import pytest

from helpers import FIXTURES
from mllint.engine import lint_text
from mllint.fixes import apply, fix_text, fixes_for
from mllint.registry import all_rules
from test_cli import run

RULES = {r.code: r for r in all_rules()}


def lint(text: str):
    return lint_text("train.py", text, list(RULES.values())).findings


def changed_lines(before: str, after: str) -> list[str]:
    """The lines that differ, as ``-old`` / ``+new``."""
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines())
            if line[:2] in ("- ", "+ ")]


def fixed(code: str, *, unsafe: bool):
    text = textwrap.dedent(code).lstrip("\n")
    outcome = fix_text(text, lint, RULES, unsafe)
    cst.parse_module(outcome.text)  # the fixed file parses
    return text, outcome


LOOP = """
    import torch
    import torch.nn.functional as F

    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    total = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy({input}, y)
        loss.backward()
        optimizer.step()
        {accumulate}
    print(f"mean loss {{total / len(loader):.3f}}")
"""


@pytest.mark.parametrize("accumulate,after", [
    ("total += loss  # running sum", "total += loss.item()  # running sum"),
    ("total = total + loss * x.size(0)", "total = total + (loss * x.size(0)).item()"),
])
def test_ml004_safe_fix_when_the_total_is_only_read_as_a_number(accumulate, after):
    text, outcome = fixed(LOOP.format(input="logits", accumulate=accumulate), unsafe=False)
    assert [f.code for f in lint(text)] == ["ML004"]
    assert changed_lines(text, outcome.text) == [f"-     {accumulate}", f"+     {after}"]
    assert lint(outcome.text) == ()


def test_ml004_fix_is_unsafe_when_the_list_is_read_as_tensors():
    code = LOOP.format(input="logits", accumulate="losses.append(loss)").replace(
        "total = 0.0", "losses = []").replace(
        'print(f"mean loss {total / len(loader):.3f}")', "print(torch.stack(losses).mean())")
    text, safe_only = fixed(code, unsafe=False)
    assert safe_only.text == text and safe_only.withheld == 1
    _, unsafe = fixed(code, unsafe=True)
    assert changed_lines(text, unsafe.text) == ["-     losses.append(loss)",
                                                "+     losses.append(loss.item())"]


def test_ml005_inline_softmax_is_removed_safely():
    code = LOOP.format(input="F.softmax(logits, dim=1)", accumulate="total += loss.item()")
    text, outcome = fixed(code, unsafe=False)
    assert [f.code for f in lint(text)] == ["ML005"]
    assert changed_lines(text, outcome.text) == [
        "-     loss = F.cross_entropy(F.softmax(logits, dim=1), y)",
        "+     loss = F.cross_entropy(logits, y)"]
    assert lint(outcome.text) == ()


def test_ml005_trailing_softmax_layer_is_an_unsafe_fix():
    src = FIXTURES / "ml005" / "bad_softmax_last_layer.py"
    text, safe_only = fixed(src.read_text(), unsafe=False)
    assert safe_only.text == text and safe_only.withheld == 1
    _, outcome = fixed(src.read_text(), unsafe=True)
    assert changed_lines(text, outcome.text) == ["-     nn.Softmax(dim=1),"]
    assert lint(outcome.text) == ()


def test_ml001_zero_grad_inserted_before_backward():
    src = FIXTURES / "ml001" / "bad_no_zero_grad.py"
    text, outcome = fixed(src.read_text(), unsafe=False)
    assert changed_lines(text, outcome.text) == ["+             optimizer.zero_grad()"]
    new = outcome.text.splitlines()
    assert new[new.index("            optimizer.zero_grad()") + 1] == "            loss.backward()"
    assert lint(outcome.text) == ()


def test_ml001_cleared_between_backward_and_step_has_no_fix():
    src = FIXTURES / "ml001" / "bad_zero_grad_between_backward_and_step.py"
    text, outcome = fixed(src.read_text(), unsafe=True)
    assert outcome.text == text and outcome.applied == []


def test_ml003_decorates_the_evaluation_function_unsafely():
    src = FIXTURES / "ml003" / "bad_validation_with_autograd.py"
    text, safe_only = fixed(src.read_text(), unsafe=False)
    assert safe_only.text == text and safe_only.withheld == 1
    _, outcome = fixed(src.read_text(), unsafe=True)
    assert changed_lines(text, outcome.text) == ["+ @torch.no_grad()"]
    new = outcome.text.splitlines()
    assert new[new.index("@torch.no_grad()") + 1].startswith("def evaluate(")
    assert [f.code for f in lint(outcome.text)] == []


def test_ml006_adds_the_optimizer_state_to_a_checkpoint_dict():
    code = """
        import torch

        model = torch.nn.Linear(4, 1)
        opt = torch.optim.Adam(model.parameters())
        for epoch in range(3):
            for x, y in loader:
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                opt.step()
            torch.save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),  # the weights
                },
                "ckpt.pt",
            )
    """
    text, safe_only = fixed(code, unsafe=False)
    assert [f.code for f in lint(text)] == ["ML006"]
    assert safe_only.text == text and safe_only.withheld == 1
    _, outcome = fixed(code, unsafe=True)
    assert changed_lines(text, outcome.text) == [
        '+             "optimizer": opt.state_dict(),']
    assert lint(outcome.text) == ()


def test_ml006_weights_only_save_becomes_a_dict_unsafely():
    src = FIXTURES / "ml006" / "bad_weights_only_checkpoint.py"
    text, outcome = fixed(src.read_text(), unsafe=True)
    assert changed_lines(text, outcome.text) == [
        '-     torch.save(model.state_dict(), "checkpoints/last.pt")  # expect: ML006',
        '+     torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, '
        '"checkpoints/last.pt")  # expect: ML006']


def test_overlapping_fixes_are_applied_one_at_a_time():
    from mllint.fixes import Edit, Fix
    a = Fix("a", True, (Edit(0, 5, "AAAAA"),))
    b = Fix("b", True, (Edit(3, 8, "BBBBB"),))
    text, applied = apply("0123456789", [a, b])
    assert text == "AAAAA56789" and applied == [a]


def test_every_rule_documents_its_fix_safety():
    import inspect
    for rule in all_rules():
        doc = rule.documentation()
        section = doc.split("\n## Fix safety\n\n", 1)[1].split("\n## ", 1)[0]
        assert section.strip() == inspect.cleandoc(rule.FIX.safety), rule.code
        # A rule without a fix says so; one with a fix says when it is safe.
        assert section.startswith("No automatic fix") is (rule.FIX.make is None), rule.code


def test_no_fix_offered_for_a_file_libcst_cannot_parse():
    assert fixes_for("def f(:\n", [], RULES, unsafe=True) == ([], 0)


# -- the command line ----------------------------------------------------------------------

@pytest.fixture()
def scripts(tmp_path):
    shutil.copy(FIXTURES / "ml001" / "bad_no_zero_grad.py", tmp_path / "a.py")
    shutil.copy(FIXTURES / "ml005" / "bad_softmax_last_layer.py", tmp_path / "b.py")
    return tmp_path


def test_diff_prints_the_safe_fixes_and_writes_nothing(scripts):
    before = {p.name: p.read_text() for p in scripts.glob("*.py")}
    proc = run("--diff", "a.py", "b.py", cwd=scripts)
    assert proc.returncode == 1
    assert proc.stdout.startswith("--- a/a.py\n+++ b/a.py\n")
    assert "+            optimizer.zero_grad()\n" in proc.stdout and "b.py" not in proc.stdout
    assert "Would fix 1 finding in 1 file. 1 more fix available with --unsafe-fixes." \
        in proc.stderr
    assert {p.name: p.read_text() for p in scripts.glob("*.py")} == before
    unsafe = run("--diff", "--unsafe-fixes", "a.py", "b.py", cwd=scripts)
    assert "-    nn.Softmax(dim=1),\n" in unsafe.stdout


def test_fix_writes_and_reports_what_is_left(scripts):
    proc = run("--fix", "--format", "json", "a.py", "b.py", cwd=scripts)
    assert proc.returncode == 1
    assert [(d["path"], d["code"]) for d in json.loads(proc.stdout)] == [("b.py", "ML005")]
    assert "Fixed 1 finding in 1 file." in proc.stderr
    assert "optimizer.zero_grad()" in (scripts / "a.py").read_text()
    proc = run("--fix", "--unsafe-fixes", "a.py", "b.py", cwd=scripts)
    assert proc.returncode == 0, proc.stdout
    assert "nn.Softmax(dim=1)," not in (scripts / "b.py").read_text()
    assert run("--diff", "a.py", "b.py", cwd=scripts).returncode == 0  # nothing left


@pytest.mark.slow
@pytest.mark.parametrize("fixture", [
    "ml001/bad_no_zero_grad.py", "ml003/bad_validation_with_autograd.py",
    "ml004/bad_loss_accumulated.py", "ml005/bad_softmax_last_layer.py",
    "ml006/bad_weights_only_checkpoint.py",
])
def test_fixed_fixture_runs_and_verify_confirms_nothing(tmp_path, fixture):
    script = tmp_path / "train.py"
    shutil.copy(FIXTURES / fixture, script)
    assert run("--fix", "--unsafe-fixes", "train.py", cwd=tmp_path).returncode == 0
    proc = run("--verify", "--format", "json", "train.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # With --verify the JSON carries the run summary beside the diagnostics.
    assert json.loads(proc.stdout)["diagnostics"] == []
