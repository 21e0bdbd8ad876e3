"""``mllint`` run as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, expected

MLLINT = shutil.which("mllint") or pytest.fail("the mllint console script is not installed")
BAD = sorted(FIXTURES.glob("ml00*/bad_*.py"))


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    full_env = {**base, "MLLINT_NO_CACHE": "1", **(env or {})}
    return subprocess.run([MLLINT, *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=120)


@pytest.fixture()
def bad_copy(tmp_path) -> tuple[Path, set[tuple[str, int]]]:
    """One buggy fixture copied outside the repository (so no repo config applies)."""
    src = BAD[0]
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    return dst, expected(src)


def test_json_lists_every_expected_finding_and_exits_1(bad_copy):
    path, want = bad_copy
    proc = run("--format", "json", str(path))
    assert proc.returncode == 1, proc.stderr
    items = json.loads(proc.stdout)
    assert {(d["code"], d["line"]) for d in items} == want
    for d in items:
        assert set(d) >= {"path", "line", "column", "end_line", "end_column", "code", "name",
                          "message", "severity"}
        assert d["path"] == str(path)


def test_full_format_shows_frame_message_and_hint_without_color_when_piped(bad_copy):
    path, want = bad_copy
    code, line = sorted(want)[0]
    proc = run(str(path))
    assert proc.returncode == 1
    assert f"{path}:{line}:" in proc.stdout and code in proc.stdout
    assert "hint:" in proc.stdout and f">{line} │" in proc.stdout.replace(" >", ">")
    assert "\x1b[" not in proc.stdout  # not a tty: no escape codes


def test_force_color_honoured_but_no_color_wins(bad_copy):
    path, _ = bad_copy
    colored = run(str(path), env={"FORCE_COLOR": "1"})
    plain = run(str(path), env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" in colored.stdout
    assert "\x1b[" not in plain.stdout


def test_concise_and_github_formats(bad_copy):
    path, want = bad_copy
    code, line = sorted(want)[0]
    concise = run("--format", "concise", str(path)).stdout.splitlines()
    assert any(l.startswith(f"{path}:{line}:") and f" {code} " in l for l in concise)
    gh = run("--format", "github", str(path)).stdout.splitlines()
    assert len(gh) == len(want)
    assert any(l.startswith(f"::error file={path},line={line},") and f"title={code} " in l
               for l in gh)


def test_sarif_is_2_1_0_with_rules_and_results(bad_copy):
    path, want = bad_copy
    doc = json.loads(run("--format", "sarif", str(path)).stdout)
    assert doc["version"] == "2.1.0"
    run0 = doc["runs"][0]
    rule_ids = [r["id"] for r in run0["tool"]["driver"]["rules"]]
    assert {f"ML00{i}" for i in range(1, 9)} <= set(rule_ids)
    got = {(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
           for r in run0["results"]}
    assert got == want
    for r in run0["results"]:
        assert rule_ids[r["ruleIndex"]] == r["ruleId"]


def test_exit_zero_select_and_ignore(bad_copy):
    path, want = bad_copy
    code = sorted(want)[0][0]
    assert run("--exit-zero", str(path)).returncode == 0
    ignored = run("--ignore", ",".join(c for c, _ in want), "--format", "json", str(path))
    assert ignored.returncode == 0 and json.loads(ignored.stdout) == []
    selected = run("--select", code, "--format", "json", str(path))
    assert {d["code"] for d in json.loads(selected.stdout)} == {code}


def test_unknown_selector_is_a_usage_error(bad_copy):
    path, _ = bad_copy
    proc = run("--select", "ML999", str(path))
    assert proc.returncode == 2 and "unknown rule selector: ML999" in proc.stderr


def test_pyproject_config_select_exclude_and_per_file_ignores(tmp_path, bad_copy):
    path, want = bad_copy
    codes = sorted({c for c, _ in want})
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "skipme").mkdir()
    shutil.copy(path, proj / "src" / "train.py")
    shutil.copy(path, proj / "src" / "test_train.py")
    shutil.copy(path, proj / "skipme" / "train.py")
    (proj / "pyproject.toml").write_text(
        '[tool.mllint]\nexclude = ["skipme/"]\n'
        f'[tool.mllint.per-file-ignores]\n"test_*.py" = {json.dumps(codes)}\n')
    proc = run("--format", "json", "src", "skipme", cwd=proj)
    items = json.loads(proc.stdout)
    assert {d["path"] for d in items} == {os.path.join("src", "train.py")}
    assert {(d["code"], d["line"]) for d in items} == want


def test_noqa_suppresses_on_the_reported_line(tmp_path, bad_copy):
    path, want = bad_copy
    code, line = sorted(want)[0]
    lines = path.read_text().splitlines()
    lines[line - 1] = lines[line - 1].split("#")[0].rstrip() + f"  # noqa: {code}"
    path.write_text("\n".join(lines) + "\n")
    items = json.loads(run("--format", "json", str(path)).stdout)
    assert (code, line) not in {(d["code"], d["line"]) for d in items}
    assert {(d["code"], d["line"]) for d in items} == want - {(code, line)}


def test_bad_inputs_are_reported_and_the_run_goes_on(tmp_path, bad_copy):
    path, want = bad_copy
    # Files are parsed only when some rule could flag them, so the broken file holds a
    # training step (a file that cannot hold a finding is never parsed, see README).
    (tmp_path / "broken.py").write_text(
        "import torch\ndef f(:\n    loss.backward()\n    optimizer.step()\n")
    (tmp_path / "latin.py").write_bytes(b"x = '\xe9'\nloss.backward()\n")
    proc = run("--format", "json", str(tmp_path), str(tmp_path / "missing.py"))
    assert proc.returncode == 2
    items = json.loads(proc.stdout)
    errors = {(os.path.basename(d["path"]), d["name"], d["line"]) for d in items if d["code"] is None}
    assert errors == {("broken.py", "syntax-error", 2), ("latin.py", "decode-error", 1),
                      ("missing.py", "missing-path", None)}
    assert {(d["code"], d["line"]) for d in items if d["code"]} == want


def test_clean_fixture_exits_0(tmp_path):
    good = sorted(FIXTURES.glob("ml00*/good_*.py"))[0]
    proc = run(str(good))
    assert proc.returncode == 0, proc.stdout
    assert "No problems found" in proc.stdout


def test_rules_and_rule_docs():
    listing = run("rules")
    assert listing.returncode == 0
    codes = [l.split()[0] for l in listing.stdout.splitlines()]
    static = [c for c in codes if c.startswith("ML0")]
    assert static == [f"ML00{i}" for i in range(1, len(static) + 1)]
    # The runtime checks follow the rules (tests/test_runtime_checks.py covers them).
    assert codes[len(static):] == [f"ML10{i}" for i in range(1, len(codes) - len(static) + 1)]
    doc = run("rule", "ML001")
    assert doc.returncode == 0 and doc.stdout.startswith("# ML001 missing-zero-grad")
    assert "## How --verify confirms it" in doc.stdout
    assert run("rule", "ML999").returncode == 2


def test_cache_is_used_on_the_second_run(tmp_path, bad_copy):
    path, want = bad_copy
    cache = tmp_path / "cache"
    env = {"MLLINT_NO_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first = run("--format", "json", "--cache-dir", str(cache), str(path), env=env)
    [entry] = list(cache.rglob("*.json"))
    # A cache hit returns exactly what was stored: re-sign an edited entry with this
    # user's own secret, as only mllint itself could.
    from mllint.cache import sign
    secret = (tmp_path / "xdg" / "mllint" / "secret").read_bytes() + _machine_suffix()
    data = json.loads(entry.read_text())
    payload = json.loads(data["payload"])
    payload["findings"][0]["message"] = "FROM THE CACHE"
    data["payload"] = json.dumps(payload, sort_keys=True)
    key = entry.parent.name + entry.stem
    data["mac"] = sign(secret, key.encode(), data["payload"].encode())
    entry.write_text(json.dumps(data))
    second = run("--format", "json", "--cache-dir", str(cache), str(path), env=env)
    assert "FROM THE CACHE" not in first.stdout
    assert [d["message"] for d in json.loads(second.stdout)].count("FROM THE CACHE") == 1
    third = run("--format", "json", "--no-cache", str(path), env=env)
    assert {(d["code"], d["line"]) for d in json.loads(third.stdout)} == want


def _machine_suffix() -> bytes:
    from mllint.cache import _machine
    return _machine()


def test_jobs_give_identical_results():
    serial = run("--format", "json", "-j", "1", str(FIXTURES))
    parallel = run("--format", "json", "-j", "2", str(FIXTURES))
    assert serial.stdout == parallel.stdout
    assert json.loads(serial.stdout), "fixtures must produce findings"


def test_never_imports_torch_or_the_linted_code(tmp_path):
    target = tmp_path / "evil.py"
    target.write_text("import torch\nopen('PWNED', 'w').write('x')\nloss.backward()\n")
    code = ("import sys, runpy; sys.argv=['mllint', %r];\n"
            "try:\n    runpy.run_module('mllint', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n") % str(target)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "MLLINT_NO_CACHE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "PWNED").exists()


def test_a_file_no_rule_can_flag_costs_no_libcst_import(tmp_path):
    """The pre-commit case: the prefilter runs from the manifest, nothing is parsed."""
    target = tmp_path / "utils.py"
    target.write_text("def add(a, b):\n    return a + b\n")
    code = ("import sys, runpy; sys.argv=['mllint', %r];\n"
            "try:\n    runpy.run_module('mllint', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'libcst' not in sys.modules, 'libcst imported'\n") % str(target)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    # The first run (with a cache) writes the manifest; the second, without a result
    # cache to answer from, only reads it.
    for no_cache in ("", "1"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=tmp_path, env={**env, "MLLINT_NO_CACHE": no_cache})
    assert proc.returncode == 0, proc.stderr


def test_cache_is_consulted_before_the_prefilters(tmp_path, bad_copy):
    """An unchanged file that no rule can flag is answered from the cache too."""
    from mllint.cache import sign
    path, want = bad_copy
    plain = tmp_path / "utils.py"
    plain.write_text("def add(a, b):\n    return a + b\n")
    cache = tmp_path / "cache"
    env = {"MLLINT_NO_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert run("--cache-dir", str(cache), str(plain), env=env).returncode == 0
    [entry] = list(cache.rglob("*.json"))
    data = json.loads(entry.read_text())
    payload = json.loads(data["payload"])
    assert payload["findings"] == []
    # Plant a finding, signed as mllint signs: only a cache hit, before any prefilter,
    # can report it.
    donor = json.loads(run("--format", "json", str(path)).stdout)[0]
    donor.update(region=None, data={})
    del donor["path"]
    payload["findings"] = [donor]
    data["payload"] = json.dumps(payload, sort_keys=True)
    secret = (tmp_path / "xdg" / "mllint" / "secret").read_bytes() + _machine_suffix()
    data["mac"] = sign(secret, (entry.parent.name + entry.stem).encode(), data["payload"].encode())
    entry.write_text(json.dumps(data))
    hit = run("--format", "json", "--cache-dir", str(cache), str(plain), env=env)
    assert [(d["path"], d["code"]) for d in json.loads(hit.stdout)] == [(str(plain), donor["code"])]


def _training_script(tmp_path: Path, expression: str) -> Path:
    """A training loop (which rules must analyse) whose line 7 assigns ``expression``."""
    path = tmp_path / "train.py"
    path.write_text(
        "import torch\n"
        "def train(model, loader):\n"
        "    opt = torch.optim.Adam(model.parameters())\n"
        "    for x, y in loader:\n"
        "        model(x).sum().backward()\n"
        "        opt.step()\n"
        f"        z = {expression}\n",
        encoding="utf-8",
    )
    return path


def test_brackets_nested_beyond_python_are_a_syntax_error_not_a_crash(tmp_path):
    """Python refuses more than 200 nested brackets; libcst's native parser does not, and
    at 2,000 it crashes the process. Such a file is reported as Python reports it."""
    path = _training_script(tmp_path, "(" * 2000 + "x" + ")" * 2000)
    proc = run("--no-cache", "--format", "json", str(path))
    assert proc.returncode == 2, proc.stderr
    (error,) = json.loads(proc.stdout)
    assert (error["line"], error["name"]) == (7, "syntax-error")
    assert "too many nested parentheses" in error["message"]


def test_code_too_deep_for_pythons_parser_is_reported_not_hung_on(tmp_path):
    """A 30,000-term sum makes Python's parser give up (RecursionError) and libcst's run
    for minutes: reported at once as a file Python cannot compile."""
    path = _training_script(tmp_path, "+".join(["x"] * 30000))
    proc = subprocess.run([MLLINT, "--no-cache", "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    (error,) = json.loads(proc.stdout)
    assert error["name"] == "syntax-error"
    assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("args, status", [(["--version"], 0), (["--no-such-option"], 2),
                                          (["--format", "json", "{bad}"], 1)])
def test_the_quick_exit_keeps_the_status_the_output_and_the_exit_handlers(args, status, bad_copy):
    """``console_main`` leaves with ``os._exit``: the exit status, everything written to
    the (piped) output and ``atexit`` handlers must survive that."""
    path, want = bad_copy
    args = [str(path) if a == "{bad}" else a for a in args]
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
            f"sys.argv = ['mllint', *{args!r}]\n"
            "from mllint.cli import console_main\n"
            "console_main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MLLINT_NO_CACHE": "1"}, timeout=120)
    assert proc.returncode == status, proc.stderr
    assert proc.stderr.rstrip().endswith("handler ran")
    if status == 1:
        assert {(d["code"], d["line"]) for d in json.loads(proc.stdout)} == want
