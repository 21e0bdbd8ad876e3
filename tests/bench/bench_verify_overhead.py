"""``--verify`` overhead on a training step: the same script, plain and under the probes.

Usage: python tests/bench/bench_verify_overhead.py [--workload mlp cnn gpt] [--pairs N]
       [--epochs N] [--parts] [--each]

Runs ``overhead_train.py`` (one bug of every rule, so every rule's probe is installed on a
finding of its own) on each workload: plainly (``python overhead_train.py``) and under
``verify()`` with the findings mllint makes on it and every runtime check (ML101-ML107),
the budgets lifted and ``stop_when_settled=False`` so that both runs take the same steps.

How it keeps a shared machine's noise out of the figure:

- torch runs on one thread in both runs, and a step is measured in process CPU time
  (``time.process_time`` in the training process: every thread of it, start-up
  excluded), which another process on the machine slows far less than wall time;
- only training steps count: the interval between consecutive optimizer steps within an
  epoch (the validation pass and the checkpoint between epochs are left out) and the
  first epoch is warm-up. A run's figure is the median, over the cycles of ``CYCLE``
  consecutive steps, of the cycle's CPU time divided by ``CYCLE`` (a cycle holds every
  cost the checks pay one step in four once);
- the runs alternate, plain then instrumented, ``--pairs`` times (A B A B ...), and the
  ratio is taken within each pair, so a change in the machine's load between pairs
  cancels out; the figure to quote is the median ratio over the pairs, with the spread
  (lowest and highest pair) beside it.

``mlp`` is the worst case (a step of about 2 ms, so the fixed per-step cost of the hooks
weighs most); ``cnn`` and ``gpt`` are representative of real training steps (a small
ResNet on CIFAR-shaped images, nanoGPT's CPU configuration). ``--parts`` adds, in each
pair, runs of the harness alone, the probes alone and the runtime checks alone;
``--each`` runs every finding's probe alone too (mlp only: it is the cheap workload).
Run it niced like anything else on the machine; both sides of a pair get the same nice.
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

#: Steps per cycle: the checks measure one step in 4 (``monitor.MEASURE_EVERY``,
#: ML107's ``SAMPLE_EVERY``), so every cycle holds the same work.
CYCLE = 4

#: Epochs per run (the first is warm-up): about 10 s of training steps for each.
EPOCHS = {"mlp": 8, "cnn": 3, "gpt": 3}


def _times_dir(workdir: Path) -> Path:
    """Outside the run's working directory: writes inside it go to a copy-on-write
    scratch area that is discarded with the run."""
    times = workdir.parent / f"{workdir.name}-times"
    times.mkdir(exist_ok=True)
    return times


def step_ms(times_file: Path) -> tuple[float, float, float]:
    """(wall, CPU, CPU lower quartile) milliseconds per training step: the median (and
    the lower quartile) over the cycles of ``CYCLE`` consecutive steps within an epoch,
    of the cycle's time, divided by ``CYCLE``."""
    epochs = json.loads(times_file.read_text())[1:]  # the first epoch warms up
    cycles = [(stamps[i + CYCLE], stamps[i]) for stamps in epochs
              for i in range(0, len(stamps) - CYCLE, CYCLE)]
    wall, cpu = ([(b[k] - a[k]) * 1000 / CYCLE for b, a in cycles] for k in (0, 1))
    return statistics.median(wall), statistics.median(cpu), statistics.quantiles(cpu, n=4)[0]


def _args(workload: str, epochs: int, times: Path) -> list[str]:
    return ["--workload", workload, "--epochs", str(epochs), "--times", str(times)]


def plain(workdir: Path, workload: str, epochs: int) -> tuple[float, float, float]:
    times = _times_dir(workdir) / "plain.json"
    subprocess.run([sys.executable, str(SCRIPT), *_args(workload, epochs, times)],
                   cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return step_ms(times)


def under_verify(workdir: Path, workload: str, epochs: int, findings,
                 checks: bool = True) -> tuple[tuple[float, float, float], object]:
    """``checks``: the runtime checks ML101-ML107 run too (as in every ``--verify``)."""
    times = _times_dir(workdir) / "verify.json"
    options = VerifyOptions(
        script=str(SCRIPT), script_args=tuple(_args(workload, epochs, times)),
        max_batches=10**6, max_steps=10**6, timeout=900, cwd=str(workdir),
        stop_when_settled=False, watch=None if checks else (),
    )
    report = verify(findings, options)
    if report.run.exit_code != 0:
        raise SystemExit(f"the instrumented run failed: {report.run}")
    return step_ms(times), report


def spread(ratios: list[float]) -> str:
    return (f"median {statistics.median(ratios):.3f}x "
            f"(pairs {min(ratios):.3f}-{max(ratios):.3f}: "
            f"{', '.join(f'{r:.3f}' for r in ratios)})")


def bench(workload: str, pairs: int, epochs: int, parts: bool, each: bool) -> None:
    findings = list(lint_path(str(SCRIPT), all_rules()).findings)
    workdir = Path(tempfile.mkdtemp(prefix="mllint-bench-"))
    variants = {"all probes and checks": (findings, True)}
    if parts:
        variants.update({
            "the harness alone (no probe, no check)": ([], False),
            "the probes without the runtime checks": (findings, False),
            "the runtime checks ML101-ML107 alone": ([], True),
        })
    if each:
        variants.update({f"{f.code} probe alone (line {f.line})": ([f], False)
                         for f in findings})
    plain_ms: list[tuple[float, float, float]] = []
    runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in variants}
    report = None
    try:
        for _ in range(pairs):
            plain_ms.append(plain(workdir, workload, epochs))
            for label, (chosen, checks) in variants.items():
                ms, got = under_verify(workdir, workload, epochs, chosen, checks)
                runs[label].append(ms)
                report = got if label == "all probes and checks" else report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(_times_dir(workdir), ignore_errors=True)

    cpu = [run[1] for run in plain_ms]
    print(f"{workload}: {epochs} epochs per run (the first is warm-up), {pairs} pairs; "
          f"plain {statistics.median(cpu):.3f} ms/step CPU (runs {min(cpu):.3f}-"
          f"{max(cpu):.3f}); {len(findings)} findings "
          f"({', '.join(sorted({f.code for f in findings}))})")
    steps = report.run.steps or 1
    spent = dict(report.run.probe_seconds)
    for i, (finding, verdict) in enumerate(zip(findings, report.verdicts)):
        print(f"  {finding.code} line {finding.line}: {verdict.status.value}; its callbacks "
              f"took {spent.get(i, 0.0) * 1000 / steps:.3f} ms/step")
    for label, measured in runs.items():
        ms = [run[1] for run in measured]
        print(f"  {label}: {statistics.median(ms):.3f} ms/step CPU; CPU ratio "
              f"{spread([m / p for m, p in zip(ms, cpu)])}")
    everything = runs["all probes and checks"]
    quartiles = [run[2] / p[2] for run, p in zip(everything, plain_ms)]
    walls = [run[0] / p[0] for run, p in zip(everything, plain_ms)]
    runtime = sorted(report.runtime_findings, key=lambda fv: fv[0].code)
    print(f"  runtime findings: {', '.join(f'{f.code}:{f.line}' for f, _ in runtime) or 'none'}")
    print(f"  all probes and checks, CPU ratio of each run's lower-quartile step (the steps "
          f"the machine slowed least): {spread(quartiles)}")
    print(f"  all probes and checks, wall-time ratio (noisier): {spread(walls)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", nargs="+", choices=sorted(EPOCHS),
                        default=["mlp", "cnn", "gpt"])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--epochs", type=int, help="per run (default: per workload)")
    parser.add_argument("--parts", action="store_true",
                        help="also measure the harness, the probes and the checks alone")
    parser.add_argument("--each", action="store_true",
                        help="also measure every finding's probe alone (mlp only)")
    args = parser.parse_args()
    for workload in args.workload:
        bench(workload, args.pairs, args.epochs or EPOCHS[workload], args.parts,
              args.each and workload == "mlp")
    print("target: the median CPU ratio of all probes and checks under 1.3x on the "
          "representative workloads (cnn, gpt)")


if __name__ == "__main__":
    main()
