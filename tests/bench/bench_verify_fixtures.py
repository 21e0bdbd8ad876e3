"""Wall time of ``--verify`` on every runnable fixture, with the verdicts it reached.

Usage: python tests/bench/bench_verify_fixtures.py [CODE ...] [--timeout S]

For each ``fixtures/<code>/bad_*.py`` and ``good_*.py`` (all rules' fixtures, or only the
given codes): lint it with every rule, run ``verify()`` on it with the default budgets
(in a scratch working directory, so the fixtures' own relative paths stay untouched), and
print the wall time of the whole verification (both runs when a probe injects faults),
the run's outcome, and each finding's verdict. A bad fixture should come out confirmed,
a good one refuted or without findings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from mllint.engine import lint_path
from mllint.registry import all_rules
from mllint.verify.harness import VerifyOptions, verify

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("codes", nargs="*")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    wanted = {c.lower() for c in args.codes}
    scripts = sorted(
        p for p in (ROOT / "fixtures").glob("ml*/*.py")
        if p.name.startswith(("bad_", "good_")) and (not wanted or p.parent.name in wanted)
    )
    total = 0.0
    for script in scripts:
        findings = list(lint_path(str(script), all_rules()).findings)
        workdir = Path(tempfile.mkdtemp(prefix="mllint-verify-bench-"))
        start = time.perf_counter()
        try:
            report = verify(findings, VerifyOptions(script=str(script), cwd=str(workdir),
                                                    timeout=args.timeout))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.perf_counter() - start
        total += seconds
        run = report.run
        outcome = ("timed out" if run.timed_out else f"crashed: {run.crashed}" if run.crashed
                   else f"{run.steps} steps, stop: {run.stop_reason or 'script ended'}")
        fault = "" if report.fault_run is None else (
            f", fault run {report.fault_run.seconds:.1f}s")
        print(f"{script.relative_to(ROOT)}: {seconds:.1f}s ({outcome}{fault})")
        for finding, verdict in zip(findings, report.verdicts):
            print(f"    {finding.code} line {finding.line}: {verdict.status.value}")
        if not findings:
            print("    no findings")
    print(f"{len(scripts)} fixtures, {total:.1f}s in all")


if __name__ == "__main__":
    main()
