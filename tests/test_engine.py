"""The engine on its own: decoding, parse errors, crash isolation, noqa, the cache."""

from __future__ import annotations

import libcst as cst

from mllint.cache import Cache
from mllint.engine import lint_path, lint_text, noqa_map
from mllint.rule import Invalid, Rule, Valid
from mllint.types import ErrorKind, FileResult


class FlagsBackward(Rule):
    """## What it does
    Test rule: flags every `.backward()` call.
    ## Why is this bad?
    It is not; this rule exists for the engine tests.
    ## How --verify confirms it
    It does not.
    """

    code = "ML901"
    name = "test-backward"
    summary = "test rule"
    hint = "none"
    REQUIRES = (r"backward",)
    VALID = [Valid("x = 1")]
    INVALID = [Invalid("loss.backward()", lines=(1,))]

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Attribute) and node.func.attr.value == "backward":
            self.report(node, "backward called")


class Crashes(Rule):
    code = "ML902"
    name = "test-crash"
    summary = "crashes"
    hint = "none"
    REQUIRES = (r"backward",)

    def visit_Call(self, node: cst.Call) -> None:
        raise ValueError("boom")


SRC = "import torch\nloss.backward()\nother.backward()  # noqa: ML901\nthird.backward()  # noqa\n"


def test_reports_exact_line_and_column():
    result = lint_text("f.py", "x = 1\n    \nif True:\n    loss.backward()\n", [FlagsBackward])
    [finding] = result.findings
    assert (finding.code, finding.line, finding.span.start.column) == ("ML901", 4, 5)
    assert finding.span.end.column == 20


def test_noqa_specific_and_blanket():
    result = lint_text("f.py", SRC, [FlagsBackward])
    assert [f.line for f in result.findings] == [2]


def test_noqa_for_other_code_does_not_suppress():
    result = lint_text("f.py", "loss.backward()  # noqa: ML002\n", [FlagsBackward])
    assert [f.line for f in result.findings] == [1]


def test_noqa_map_parses_code_lists():
    m = noqa_map(["a  # noqa: ML001, ML002", "b # NOQA", "c"])
    assert m == {1: frozenset({"ML001", "ML002"}), 2: None}


def test_crashing_rule_becomes_internal_error_and_others_still_report():
    result = lint_text("f.py", SRC, [Crashes, FlagsBackward])
    assert [f.line for f in result.findings] == [2]
    [error] = result.errors
    assert error.kind is ErrorKind.INTERNAL and error.rule == "ML902"
    assert "ValueError: boom" in error.message


def test_syntax_error_reports_position():
    result = lint_text("f.py", "loss.backward(\nx = = 2\n", [FlagsBackward])
    [error] = result.errors
    assert error.kind is ErrorKind.SYNTAX
    assert (error.position.line, error.position.column) == (1, 14)
    assert error.message == "cannot parse: '(' was never closed"


def test_prefilter_skips_parse_entirely():
    # Unparsable text that cannot hold a finding is never parsed, so no error either.
    assert lint_text("f.py", "def (:\n", [FlagsBackward]) == FileResult("f.py")


def test_pep263_latin1_file(tmp_path):
    p = tmp_path / "latin.py"
    p.write_bytes("# -*- coding: latin-1 -*-\n# caf\xe9\nloss.backward()\n".encode("latin-1"))
    result = lint_path(str(p), [FlagsBackward])
    assert result.errors == () and [f.line for f in result.findings] == [3]


def test_invalid_utf8_reports_line_and_column(tmp_path):
    p = tmp_path / "bad.py"
    p.write_bytes(b"x = 1\ny = '\xff'\nloss.backward()\n")
    [error] = lint_path(str(p), [FlagsBackward]).errors
    assert error.kind is ErrorKind.DECODE
    assert (error.position.line, error.position.column) == (2, 6)


def test_binary_and_empty_files(tmp_path):
    b = tmp_path / "b.py"
    b.write_bytes(b"\x00\x01backward")
    e = tmp_path / "e.py"
    e.write_bytes(b"")
    assert lint_path(str(b), [FlagsBackward]).errors[0].kind is ErrorKind.BINARY
    assert lint_path(str(e), [FlagsBackward]) == FileResult(str(e))


def test_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.py"
    p.write_bytes(b"\xef\xbb\xbfloss.backward()\n")
    assert [f.line for f in lint_path(str(p), [FlagsBackward]).findings] == [1]


def test_too_large_file(tmp_path):
    p = tmp_path / "big.py"
    p.write_text("loss.backward()\n" * 100)
    [error] = lint_path(str(p), [FlagsBackward], max_bytes=100).errors
    assert error.kind is ErrorKind.TOO_LARGE


def test_cache_round_trip_and_key_depends_on_content_and_rules(tmp_path):
    cache = Cache(tmp_path / "c", ("ML901",), secret=b"s" * 32)
    result = lint_text("f.py", SRC, [FlagsBackward])
    key = cache.key("f.py", SRC.encode())
    assert cache.get(key, "f.py") is None
    cache.put(key, result)
    assert cache.get(key, "f.py") == result
    assert cache.key("f.py", SRC.encode() + b"\n") != key
    assert Cache(tmp_path / "c", ("ML901", "ML902")).key("f.py", SRC.encode()) != key


def test_cache_skips_results_with_internal_errors(tmp_path):
    cache = Cache(tmp_path / "c", ("ML902",), secret=b"s" * 32)
    result = lint_text("f.py", SRC, [Crashes])
    cache.put("k" * 40, result)
    assert cache.get("k" * 40, "f.py") is None


def test_fast_parent_map_equals_libcst_parent_provider():
    from libcst.metadata import MetadataWrapper, ParentNodeProvider

    from mllint.engine.scope import _parent_map

    module = cst.parse_module(
        "import torch\nclass A:\n    def f(self, x):\n        for i in x:\n"
        "            with y:\n                z = [a for a in i if a]\n        return lambda q: q\n")
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(ParentNodeProvider)
    got = _parent_map(module)
    assert set(got) == set(expected)
    assert all(got[node] is parent for node, parent in expected.items())


def test_seeded_metadata_gives_the_same_findings_as_libcst_providers(monkeypatch):
    """The engine's cheaper parent links and lazy qualified names change no result."""
    from helpers import all_fixtures

    from mllint.engine import lint as engine
    from mllint.registry import all_rules

    rules = all_rules()
    texts = [(str(p), p.read_text(encoding="utf-8")) for p in all_fixtures()]
    seeded = [engine.lint_text(p, t, rules) for p, t in texts]
    monkeypatch.setattr(engine, "_seed_metadata", lambda wrapper, visitors: None)
    plain = [engine.lint_text(p, t, rules) for p, t in texts]
    assert seeded == plain
    assert sum(len(r.findings) for r in plain) > 10


def test_manifest_describes_every_rule_and_its_prefilter(tmp_path, monkeypatch):
    from mllint import manifest
    from mllint.registry import all_rules

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    manifest.rule_infos.cache_clear()
    fresh = manifest.rule_infos()  # made by importing the rules, then stored
    manifest.rule_infos.cache_clear()
    stored = manifest.rule_infos()  # read back from the file
    want = [(r.code, r.name, tuple(r.REQUIRES), r.GATE) for r in all_rules()]
    assert [(i.code, i.name, i.requires, i.gate) for i in fresh] == want
    assert [(i.code, i.name, i.requires, i.gate) for i in stored] == want
    assert len(list((tmp_path / "mllint").glob("rules-*.json"))) == 1
    manifest.rule_infos.cache_clear()


def test_a_failing_gate_admits_the_file(monkeypatch):
    """A gate that raises (deep nesting, a bug) must not lose the file or end the run."""
    from mllint import prefilter

    class Info:
        gate = "json:loads"  # given a tree, not a string: raises TypeError

        def may_match(self, text, memo=None):
            return True

    info = Info()
    assert prefilter.admitted([info], "x = 1\n") == [info]


def test_code_fingerprint_covers_the_gates():
    """A gate decides whether a file is linted at all, so cached results must not
    outlive a change to one."""
    import os
    from pathlib import Path

    from mllint import manifest
    from mllint.gates import training

    path = Path(training.__file__)
    before = manifest.code_fingerprint()
    st = path.stat()
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert manifest.code_fingerprint() != before
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert manifest.code_fingerprint() == before


def test_own_traversal_gives_libcst_traversals_findings(monkeypatch):
    """The engine walks the tree itself (``mllint.engine.traversal``); libcst's own batched
    traversal must give the same findings on every fixture."""
    from pathlib import Path

    from mllint.engine import lint as engine
    from mllint.engine import traversal
    from mllint.registry import all_rules

    rules = all_rules()
    root = Path(__file__).resolve().parent.parent / "fixtures"
    texts = [(str(p), p.read_text(encoding="utf-8")) for p in sorted(root.rglob("*.py"))]
    ours = [engine.lint_text(p, t, rules, prefilter=False) for p, t in texts]
    monkeypatch.setattr(traversal, "visit_batched", lambda wrapper, vs: wrapper.visit_batched(vs))
    theirs = [engine.lint_text(p, t, rules, prefilter=False) for p, t in texts]
    assert ours == theirs
    assert sum(len(r.findings) for r in theirs) > 10


def test_rules_together_find_what_each_finds_alone():
    """Rules in one traversal share work (ML002/ML003/ML007 share their facts); the
    findings must be those of each rule run on its own."""
    from pathlib import Path

    from mllint.engine import lint as engine
    from mllint.registry import all_rules
    from mllint.types import Finding

    rules = all_rules()
    root = Path(__file__).resolve().parent.parent / "fixtures"
    total = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        together = engine.lint_text(str(path), text, rules, prefilter=False).findings
        alone = sorted((f for r in rules
                        for f in engine.lint_text(str(path), text, [r], prefilter=False).findings),
                       key=Finding.sort_key)
        assert list(together) == alone, path.name
        total += len(alone)
    assert total > 10


def test_a_guarded_pattern_runs_only_where_a_guard_literal_occurs():
    from mllint.prefilter import guarded, matches

    pattern = guarded(("no_grad",), r"with\s+\w+")
    assert matches((pattern,), "with torch.no_grad():")
    # The regex alone would match, but no guard literal occurs: the guard says no.
    assert not matches((pattern,), "with open(p) as f:")
    assert not matches((pattern,), "no_grad = 1")  # guard present, regex decides


def test_a_worker_imports_only_the_rules_a_file_needs(tmp_path):
    # A fresh interpreter, as a worker's first file: ML001 alone must not pull in the
    # validation analyses (ML002/ML003/ML007) or any other rule module. The manifest is
    # written first, by another interpreter, as a first run would.
    import os
    import subprocess
    import sys
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "from mllint.manifest import rule_infos; rule_infos()"],
                   env=env, check=True)
    code = (
        "import sys\n"
        "from mllint.manifest import rule_infos\n"
        "from mllint.registry import rule_classes\n"
        "[info] = [i for i in rule_infos(write=False) if i.code == 'ML001']\n"
        "[cls] = rule_classes([info])\n"
        "print(cls.code, info.module)\n"
        "print(sorted(m for m in sys.modules if m.startswith('mllint.rules.')))\n"
        "print('mllint.analysis.validation.passes' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert out == ["ML001 ml001_missing_zero_grad", "['mllint.rules.ml001_missing_zero_grad']",
                   "False"]


def test_rule_classes_fall_back_to_discovery_without_a_module():
    from mllint.manifest import RuleInfo, rule_infos
    from mllint.registry import all_rules, rule_classes
    infos = [RuleInfo(i.code, i.name, i.requires, i.gate) for i in rule_infos(write=False)]
    assert rule_classes(infos) == list(all_rules())


def test_torch_from_a_star_import_resolves_only_when_nothing_binds_it():
    """``from utils import *`` (utils importing torch) leaves ``torch`` unbound for the
    scope analysis: ``torch.x`` then means torch's ``x``, and nothing else does."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, QualifiedNameProvider

    from mllint.analysis.syntax import qualified_names
    from mllint.rule import FileContext

    class Probe(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (QualifiedNameProvider,)

        def __init__(self, source: str) -> None:
            super().__init__()
            self.context = FileContext("t.py", source)
            self.found: dict[str, set[str]] = {}

        def visit_Attribute(self, node: cst.Attribute) -> None:
            self.found[cst.Module([]).code_for_node(node)] = qualified_names(self, node)

    def names(source: str) -> dict[str, set[str]]:
        probe = Probe(source)
        MetadataWrapper(cst.parse_module(source)).visit(probe)
        return probe.found

    star = names("from utils import *\nwith torch.no_grad():\n    np.zeros(1)\n")
    assert star["torch.no_grad"] == {"torch.no_grad"} and star["np.zeros"] == set()
    assert names("with torch.no_grad():\n    pass\n")["torch.no_grad"] == set()
    bound = names("from utils import *\nimport mytorch as torch\ntorch.no_grad()\n")
    assert bound["torch.no_grad"] == {"mytorch.no_grad"}
