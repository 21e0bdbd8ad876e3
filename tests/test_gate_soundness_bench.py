"""The gate-soundness instrument (``tests/bench/gate_soundness.py``) on the fixtures:
no gate turns away a fixture its rule flags, every gate is exercised, and a gate that
turns everything away is caught."""

from __future__ import annotations

import importlib.util
import sys

from helpers import FIXTURES, ROOT

from mllint import prefilter
from mllint.registry import all_rules

_spec = importlib.util.spec_from_file_location(
    "gate_soundness", ROOT / "tests" / "bench" / "gate_soundness.py")
gate_soundness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gate_soundness  # dataclasses look their module up there
_spec.loader.exec_module(gate_soundness)


def test_no_gate_loses_a_fixture_finding():
    report = gate_soundness.check([str(FIXTURES)])
    assert report.lost == []
    # Every gated rule turns some fixture away, so each gate is put to the test.
    gated = {r.code for r in all_rules() if r.GATE}
    assert gated == {"ML006", "ML008"}
    assert gated <= {c for c, n in report.rejected.items() if n}


def test_a_gate_that_turns_everything_away_is_caught(monkeypatch):
    monkeypatch.setattr(prefilter, "_gate_admits", lambda spec, tree, project: False)
    report = gate_soundness.check([str(FIXTURES / "ml006")], {"ML006"})
    assert report.lost and all(code == "ML006" for _, code, _ in report.lost)
    assert any(path.endswith("bad_weights_only_checkpoint.py") for path, _, _ in report.lost)
