"""Side-by-side lint benchmark: mllint against ``ruff check --select ALL`` on one tree.

Usage: python tests/bench/bench_lint.py TREE [--jobs N] [--repeat R]

Runs, in one process and one sitting so the ratios are comparable:
  ruff (no cache), mllint cold (no cache), mllint with a warm cache, mllint with the
  prefilter off on the same tree (parse everything), and mllint start-up on one small file.
Reports best-of-R wall time, peak RSS of each child, and ratios to ruff.

mllint's modules are compiled to bytecode first, as pip does when it installs a wheel: a
checkout (an editable install) run with ``PYTHONDONTWRITEBYTECODE=1`` would otherwise
compile every module from source on every start, about a quarter of a one-file run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(cmd: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds of the command and its children, exit code, stderr tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode, err.decode(errors="replace")[-500:]


def timed(cmd: list[str], repeat: int) -> tuple[float, float, int]:
    """Best-of-``repeat`` wall and CPU seconds, and the peak RSS (MiB) of any child so far."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu, rc, err = run(cmd)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
        if rc not in (0, 1, 2):
            print(f"  ! {' '.join(cmd)} exited {rc}: {err}", file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return best_wall, best_cpu, peak


def compile_package() -> None:
    """Write the bytecode of every mllint module (the rules included) where Python looks
    for it, whatever ``PYTHONDONTWRITEBYTECODE`` says."""
    import compileall

    import mllint
    import mllint.rules

    for package in (mllint, mllint.rules):
        for directory in package.__path__:
            compileall.compile_dir(directory, quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-noprefilter", action="store_true")
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)
    files = [p for p in Path(tree).rglob("*.py")]
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    print(f"tree: {tree}: {len(files)} .py files, {lines:,} lines; jobs={args.jobs}; "
          f"cpus={os.cpu_count()}")
    mllint = [sys.executable, "-m", "mllint"]
    compile_package()
    ruff = shutil.which("ruff")
    cache = tempfile.mkdtemp(prefix="mllint-bench-cache-")
    rows = []
    if ruff:
        rows.append(("ruff check --select ALL (no cache)",
                     timed([ruff, "check", "--select", "ALL", "--no-cache", "--isolated",
                            "--exit-zero", "--quiet", tree], args.repeat)))
    rows.append(("mllint, cold (no cache)",
                 timed(mllint + ["--no-cache", "--exit-zero", "-j", str(args.jobs),
                                 "--format", "concise", tree], args.repeat)))
    # First run fills the cache; the timed second one is what an unchanged CI tree costs.
    run(mllint + ["--cache-dir", cache, "--exit-zero", "-j", str(args.jobs), tree])  # fill
    rows.append(("mllint, warm cache",
                 timed(mllint + ["--cache-dir", cache, "--exit-zero", "-j", str(args.jobs),
                                 "--format", "concise", tree], args.repeat)))
    if not args.skip_noprefilter:
        rows.append(("mllint, prefilter off (parse every file)",
                     timed(mllint + ["--no-cache", "--no-prefilter", "--exit-zero", "-j",
                                     str(args.jobs), "--format", "concise", tree], 1)))
    small = HERE.parent.parent / "fixtures"
    one = next(iter(sorted(small.rglob("good_*.py"))), None)
    if one is not None:
        rows.append((f"mllint start-up, one file ({one.name})",
                     timed(mllint + ["--no-cache", "--exit-zero", str(one)], max(3, args.repeat))))
    shutil.rmtree(cache, ignore_errors=True)
    base = rows[0][1][0] if ruff else None
    print(f"{'what':<46} {'wall s':>8} {'x ruff':>7} {'cpu s':>8} {'peak MiB*':>9}")
    for name, (wall, cpu, peak) in rows:
        ratio = f"{wall / base:.2f}" if base else "-"
        print(f"{name:<46} {wall:>8.2f} {ratio:>7} {cpu:>8.2f} {peak:>9}")
    print("* largest peak RSS of any one child process up to that row (each worker is "
          "its own process)")


if __name__ == "__main__":
    main()
