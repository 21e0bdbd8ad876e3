"""Linting cost grows linearly with the size of a file, measured without a clock.

A file four times as long (four times as many small training functions or classes) must
make every function of mllint run about four times as often. A lookup that scans the
whole module on every question (the call-site and instance-class lookups that made a
1 MB file take minutes and gigabytes) makes its callee run sixteen times as often, and
fails here by name. ``tests/bench/scaling.py`` prints the wall time and peak memory.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path
from types import CodeType

import hostile_cases as hc
import mllint.rules
import pytest

import mllint
from mllint.analysis.pyast.grads import GradEvents
from mllint.engine import lint_text
from mllint.registry import all_rules

#: Sizes: small enough to run under a Python-level profile hook in seconds, large enough
#: that one lookup per function over every function of the module shows (16x vs 4x).
SMALL = 6_000
FACTOR = 4
#: Allowed growth of a call count for FACTOR times the input: linear plus slack for
#: per-file work that is not exactly proportional (the last partial function, imports).
MAX_RATIO = FACTOR * 1.3
#: Functions called fewer times than this on the large input are too rare to judge.
MIN_CALLS = 200

#: Where mllint's code lies (the rules may be installed apart from the engine).
OURS = (str(Path(mllint.__file__).parent), str(Path(mllint.rules.__file__).parent))


def call_counts(text: str, path: Path) -> Counter[CodeType]:
    """How many times each function of mllint (engine, analyses, rules, project model)
    runs while linting ``text`` as the file ``path``."""
    path.write_text(text)
    counts: Counter[CodeType] = Counter()

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(OURS):
            counts[frame.f_code] += 1

    # The engine lints on a thread of its own (a deep stack): hook new threads too.
    threading.setprofile(hook)
    sys.setprofile(hook)
    try:
        result = lint_text(str(path), text, all_rules(), file=str(path))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert result.errors == ()
    assert result.findings, "the generated file must exercise the rules"
    return counts


def training_functions(size: int) -> str:
    """The hostile case: ``TRAIN`` (one finding), then small training functions."""
    return hc.TRAIN + "\n\n" + hc.many_training_functions(size)


def _superlinear(small: Counter[CodeType], large: Counter[CodeType]) -> list[str]:
    out = []
    for code, n in large.items():
        if n >= MIN_CALLS and n > MAX_RATIO * max(small.get(code, 0), 1):
            out.append(f"{code.co_name} ({Path(code.co_filename).name}:{code.co_firstlineno}): "
                       f"{small.get(code, 0)} calls -> {n} for {FACTOR}x the input")
    return sorted(out)


@pytest.mark.parametrize("generate", [training_functions, hc.many_trainers],
                         ids=["functions", "classes"])
def test_every_function_of_mllint_runs_about_linearly_often(generate, tmp_path):
    # Once first: what the process computes once and keeps (compiled prefilter patterns,
    # their search plans) is no per-file cost.
    call_counts(generate(FACTOR * SMALL), tmp_path / "warm.py")
    small = call_counts(generate(SMALL), tmp_path / "small.py")
    large = call_counts(generate(FACTOR * SMALL), tmp_path / "large.py")
    assert _superlinear(small, large) == []


def test_the_check_names_a_lookup_that_scans_the_module_per_question(tmp_path, monkeypatch):
    """The measure itself: with ML001's per-function event index rebuilt on every
    question (a scan of every event of the module, as before it was indexed), the
    check fails and names the function that runs quadratically often."""
    indexed = GradEvents.in_function

    def rescanning(self, func):
        self._by_function = None
        return indexed(self, func)

    monkeypatch.setattr(GradEvents, "in_function", rescanning)
    small = call_counts(training_functions(SMALL), tmp_path / "small.py")
    large = call_counts(training_functions(FACTOR * SMALL), tmp_path / "large.py")
    found = _superlinear(small, large)
    assert any(line.startswith("group (grads.py:") for line in found), found
