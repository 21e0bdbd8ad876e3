"""libcst outside the tested range: libcst's own providers, the same findings, one warning."""

from __future__ import annotations

import pytest
from helpers import all_fixtures

from mllint.engine import libcst_support, lint_text
from mllint.registry import all_rules


@pytest.mark.parametrize("version,tested", [
    ("1.1.0", True), ("1.5.1", True), ("1.9.0", True), ("1.9.3", True),
    ("1.0.1", False), ("1.10.0", False), ("2.0.0", False), ("nonsense", False), (None, False),
])
def test_tested_range(version, tested):
    assert libcst_support.is_tested(version) is tested
    assert (libcst_support.warning(version) is None) is tested


def test_warning_is_one_line_naming_the_version_and_range():
    message = libcst_support.warning("1.10.0")
    assert message is not None and "\n" not in message
    assert "libcst 1.10.0" in message and "1.1.0 to 1.9.0" in message


def test_dependency_bounds_match_the_tested_range():
    import re

    from helpers import ROOT
    text = (ROOT / "pyproject.toml").read_text()
    low, high = libcst_support.TESTED
    assert f'"libcst>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}"' in text
    assert re.search(r'"libcst[^"]*"', text).group(0).count("libcst") == 1


def test_installed_libcst_is_in_the_tested_range():
    assert libcst_support.is_tested(libcst_support.installed_version())


def test_the_fast_paths_are_on_with_a_tested_libcst():
    # Off, nothing breaks and every finding stays the same, only slower: so a moved or
    # renamed fast-path module must fail here, not pass unnoticed.
    libcst_support.fast_paths_enabled.cache_clear()
    try:
        assert libcst_support.fast_paths_enabled()
    finally:
        libcst_support.fast_paths_enabled.cache_clear()


def test_untested_libcst_falls_back_to_its_own_providers_with_the_same_findings(monkeypatch):
    texts = [(str(p), p.read_text(encoding="utf-8")) for p in all_fixtures()[:40]]
    fast = [lint_text(p, t, all_rules()) for p, t in texts]
    from mllint.engine import traversal

    def forbidden(*args, **kwargs):
        raise AssertionError("fast path used with an untested libcst")

    monkeypatch.setattr(libcst_support, "installed_version", lambda: "99.0.0")
    monkeypatch.setattr(traversal, "visit_batched", forbidden)
    libcst_support.fast_paths_enabled.cache_clear()
    try:
        slow = [lint_text(p, t, all_rules()) for p, t in texts]
    finally:
        libcst_support.fast_paths_enabled.cache_clear()
    assert slow == fast
    assert sum(len(r.findings) for r in fast) > 5


def test_no_rule_imports_libcst_matchers():
    """``libcst.matchers`` takes about as long to import as libcst itself (a class per
    node type): a one-file run that needed it would pay that on every commit."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from mllint.registry import all_rules\n"
            "from mllint.engine import lint_text\n"
            "lint_text('t.py', 'import torch\\n', all_rules())\n"
            "print('libcst.matchers' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_parse_without_node_checks_builds_the_same_tree():
    import libcst as cst

    texts = [p.read_text(encoding="utf-8") for p in all_fixtures()]
    assert len(texts) > 40
    for text in texts:
        fast = libcst_support.parse_module(text)
        assert fast.code == text
        assert fast.deep_equals(cst.parse_module(text))


def test_parse_skips_the_node_checks_and_restores_them(monkeypatch):
    import libcst as cst

    checks = []
    original = cst.Name._validate
    monkeypatch.setattr(cst.Name, "_validate", lambda self: checks.append(self) or original(self))
    libcst_support.parse_module("x = y + z\n")
    assert checks == []
    cst.parse_module("x = y + z\n")
    assert len(checks) == 3  # libcst's own parse checks each name
    with pytest.raises(cst.CSTValidationError):
        cst.Name("not a name")  # checked again after the parse


def test_parse_checks_nodes_with_an_untested_libcst(monkeypatch):
    import libcst as cst

    checks = []
    original = cst.Name._validate
    monkeypatch.setattr(cst.Name, "_validate", lambda self: checks.append(self) or original(self))
    monkeypatch.setattr(libcst_support, "installed_version", lambda: "99.0.0")
    libcst_support.fast_paths_enabled.cache_clear()
    try:
        libcst_support.parse_module("x = y\n")
    finally:
        libcst_support.fast_paths_enabled.cache_clear()
    assert len(checks) == 2


def test_the_installed_version_is_the_one_its_distribution_records():
    from importlib.metadata import version

    assert libcst_support.installed_version() == version("libcst")
