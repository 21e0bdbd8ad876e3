"""``--verify`` overhead on a training step: the same script, plain and under the probes.

Usage: python tests/bench/bench_verify_overhead.py [--epochs N] [--repeat R] [--each]

Runs ``overhead_train.py`` (one bug of every rule, so every rule's probe is installed on a
finding of its own) in one sitting: plainly (``python overhead_train.py``) and under
``verify()`` with the findings mllint makes on it, the budgets lifted and
``stop_when_settled=False`` so that both runs take the same steps. A step's time is the
interval between consecutive optimizer steps within an epoch (the validation pass and the
checkpoint between epochs are left out); the first epoch is warm-up. Prints the step time
of each (see ``step_ms``), in wall time and in main-thread CPU time (torch runs single-threaded,
so CPU time stays meaningful on a busy machine), and their ratio (target: under 1.3x).
It also runs the harness with no probe (its own cost: budgets, hooks, the torch.save guard)
and reports the time each probe's callbacks took per step; ``--each`` runs every finding's
probe alone as well. With ``--repeat`` the runs alternate and the best median of each is
kept; each ratio is also given as the median over rounds of that round's ratio (each round
runs plain first, so a change in the machine's load between rounds cancels out), which is
the figure to quote on a shared machine.

To compare two versions of mllint, run this script with each one's Python in turn
(alternating, the same arguments): the plain runs are the common reference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mllint.engine import lint_path
from mllint.registry import all_rules
from mllint.verify.harness import VerifyOptions, verify

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "overhead_train.py"


def _times_dir(workdir: Path) -> Path:
    """Outside the run's working directory: writes inside it go to a copy-on-write
    scratch area that is discarded with the run."""
    times = workdir.parent / f"{workdir.name}-times"
    times.mkdir(exist_ok=True)
    return times


#: Steps per cycle: the checks measure one step in 4 (``monitor.MEASURE_EVERY``,
#: ML107's ``SAMPLE_EVERY``), so every cycle holds the same work.
CYCLE = 4


def step_ms(times_file: Path) -> tuple[float, float]:
    """(wall, CPU) milliseconds per step: the lower quartile, over the cycles of ``CYCLE``
    consecutive steps within an epoch, of the cycle's time, divided by ``CYCLE``.

    A cycle holds every periodic cost once, so nothing the checks do one step in four is
    left out; the lower quartile rather than the median keeps out the steps another
    process on a busy machine slowed down, which is most of the noise here."""
    epochs = json.loads(times_file.read_text())[1:]  # the first epoch warms up
    cycles = [(stamps[i + CYCLE], stamps[i]) for stamps in epochs
              for i in range(0, len(stamps) - CYCLE, CYCLE)]
    return tuple(statistics.quantiles([(b[k] - a[k]) for b, a in cycles], n=4)[0]
                 * 1000 / CYCLE for k in (0, 1))


def plain(workdir: Path, epochs: int) -> tuple[float, float]:
    times = _times_dir(workdir) / "plain.json"
    subprocess.run([sys.executable, str(SCRIPT), "--epochs", str(epochs), "--times",
                    str(times)], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return step_ms(times)


def under_verify(workdir: Path, epochs: int, findings,
                 checks: bool = True) -> tuple[tuple[float, float], object]:
    """``checks``: the runtime checks ML101-ML107 run too (as in every ``--verify``)."""
    times = _times_dir(workdir) / "verify.json"
    options = VerifyOptions(
        script=str(SCRIPT), script_args=("--epochs", str(epochs), "--times", str(times)),
        max_batches=10**6, max_steps=10**6, timeout=900, cwd=str(workdir),
        stop_when_settled=False, watch=None if checks else (),
    )
    report = verify(findings, options)
    if report.run.exit_code != 0:
        raise SystemExit(f"the instrumented run failed: {report.run}")
    return step_ms(times), report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--each", action="store_true",
                        help="also measure every finding's probe on its own")
    args = parser.parse_args()

    findings = list(lint_path(str(SCRIPT), all_rules()).findings)
    workdir = Path(tempfile.mkdtemp(prefix="mllint-bench-"))
    each: dict[int, list[tuple[float, float]]] = {}
    try:
        plain_ms, verify_ms, bare_ms, report = [], [], [], None
        probes_ms, checks_ms = [], []
        for _ in range(args.repeat):
            plain_ms.append(plain(workdir, args.epochs))
            ms, report = under_verify(workdir, args.epochs, findings)
            verify_ms.append(ms)
            probes_ms.append(under_verify(workdir, args.epochs, findings, checks=False)[0])
            checks_ms.append(under_verify(workdir, args.epochs, [])[0])
            bare_ms.append(under_verify(workdir, args.epochs, [], checks=False)[0])
            for i, finding in enumerate(findings if args.each else ()):
                each.setdefault(i, []).append(under_verify(workdir, args.epochs,
                                                           [finding])[0])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(_times_dir(workdir), ignore_errors=True)

    base = tuple(min(run[k] for run in plain_ms) for k in (0, 1))
    instrumented = tuple(min(run[k] for run in verify_ms) for k in (0, 1))
    print(f"script: {SCRIPT.name}, {args.epochs} epochs of 64 steps, "
          f"{len(findings)} findings ({', '.join(sorted({f.code for f in findings}))})")
    steps = report.run.steps or 1
    spent = dict(report.run.probe_seconds)
    for i, (finding, verdict) in enumerate(zip(findings, report.verdicts)):
        print(f"  {finding.code} line {finding.line}: {verdict.status.value}; its callbacks "
              f"took {spent.get(i, 0.0) * 1000 / steps:.3f} ms/step")
    for i, runs in each.items():
        cpu = min(run[1] for run in runs)
        print(f"  {findings[i].code} probe alone: {cpu:.3f} ms/step CPU, "
              f"{cpu / base[1]:.2f}x")
    def per_round(runs: list[tuple[float, float]], k: int = 1) -> str:
        ratios = [run[k] / plain_run[k] for run, plain_run in zip(runs, plain_ms)]
        return (f"per-round median {statistics.median(ratios):.2f}x "
                f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")

    for label, runs in (("the harness alone (no probe, no check)", bare_ms),
                        ("the probes without the runtime checks", probes_ms),
                        ("the runtime checks ML101-ML107 alone", checks_ms),
                        ("all probes and checks", verify_ms)):
        best = min(run[1] for run in runs)
        print(f"  {label}: {best:.3f} ms/step CPU, {best / base[1]:.2f}x; "
              f"{per_round(runs)}")
    runtime = sorted(report.runtime_findings, key=lambda fv: fv[0].code)
    print(f"  runtime findings: {', '.join(f'{f.code}:{f.line}' for f, _ in runtime) or 'none'}")
    for k, kind in enumerate(("wall", "CPU")):
        print(f"{kind:>4}: plain {base[k]:.3f} ms/step, all probes and checks {instrumented[k]:.3f} "
              f"ms/step, ratio {instrumented[k] / base[k]:.2f}x; {per_round(verify_ms, k)} "
              "(target < 1.3x)")


if __name__ == "__main__":
    main()
