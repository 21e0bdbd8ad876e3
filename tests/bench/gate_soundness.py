"""Soundness of the ast gates on real code: every file a gate turns away must be one its
rule does not flag.

For each Python file under the trees, and each rule whose stage 1 passes the file and
whose gate then turns it away, the rule lints the file unfiltered (no prefilter at all).
Any finding there is a finding the gate would have lost. Run it over a large tree (the
benchmark corpus, the real-world mirrors) after changing a gate; the test suite runs it
on the fixtures.

Usage: python tests/bench/gate_soundness.py TREE [TREE ...] [--rules ML006,ML008]

Prints, per rule, how many files the gate admitted and turned away, then every lost
finding; exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    admitted: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    #: (path, rule code, lines the rule flags there)
    lost: list[tuple[str, str, list[int]]] = field(default_factory=list)


def check(trees: list[str], codes: set[str] | None = None) -> Report:
    from mllint import prefilter
    from mllint.engine.lint import lint_text
    from mllint.manifest import rule_infos
    from mllint.registry import all_rules
    from mllint.source import decode, read_bytes

    rules = {r.code: r for r in all_rules()}
    infos = [i for i in rule_infos(write=False)
             if i.gate and (codes is None or i.code in codes)]
    report = Report()
    for tree in trees:
        for path in sorted(Path(tree).rglob("*.py")):
            text = decode(str(path), read_bytes(str(path)))
            if not isinstance(text, str):
                continue
            passed = prefilter._stage1(infos, text)
            tree_ = prefilter.python_tree(text) if passed else None
            if tree_ is None:
                continue
            project = prefilter._LazyProject(str(path), tree_, text)
            for info in passed:
                if prefilter._gate_admits(info.gate, tree_, project):
                    report.admitted[info.code] += 1
                    continue
                report.rejected[info.code] += 1
                found = lint_text(str(path), text, [rules[info.code]], prefilter=False,
                                  file=str(path)).findings
                if found:
                    report.lost.append((str(path), info.code, [f.line for f in found]))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rules", help="comma-separated codes (default: every gated rule)")
    args = parser.parse_args()
    codes = set(args.rules.split(",")) if args.rules else None
    report = check(args.trees, codes)
    for code in sorted(set(report.admitted) | set(report.rejected)):
        print(f"{code}: admitted {report.admitted[code]}, turned away {report.rejected[code]}")
    for path, code, lines in report.lost:
        print(f"LOST {code} {path}: lines {lines}")
    print(f"{len(report.lost)} lost finding(s)")
    sys.exit(1 if report.lost else 0)


if __name__ == "__main__":
    main()
