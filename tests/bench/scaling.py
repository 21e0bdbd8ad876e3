"""Wall time and peak memory of one cold ``mllint`` run per file size, side by side for
one or more installs, with each size's growth over the previous size.

Usage: python tests/bench/scaling.py [--mllint PATH ...] [--sizes 100,200,400,1000]
                                     [--shape functions|classes]

``functions`` is the hostile case of ``tests/hostile_cases.py`` (``TRAIN`` then small
training functions); ``classes`` is ``many_trainers`` (same-named methods, helpers handed
an optimizer, evaluation under ``no_grad``). Linear cost: time and memory ratios near the
size ratios. Pass two ``--mllint`` paths (e.g. an old and a new virtualenv's) to compare
them in one run. ``test_scaling.py`` checks linearity without a clock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import hostile_cases  # noqa: E402

SHAPES = {
    "functions": lambda size: hostile_cases.TRAIN + "\n\n" + hostile_cases.many_training_functions(size),
    "classes": hostile_cases.many_trainers,
}


def run(mllint: str, path: Path, timeout: float) -> tuple[int | None, float, float]:
    """Exit code (``None``: killed after ``timeout``), wall seconds, peak MB."""
    cmd = [mllint, "--no-cache", "--file-timeout", "0", "--format", "json", str(path)]
    env = {**os.environ, "MLLINT_NO_CACHE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return None, time.perf_counter() - start, usage.ru_maxrss / 1024
        time.sleep(0.05)
    # ru_maxrss: the largest single process of the run's tree (mllint or a worker).
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mllint", action="append", help="an mllint executable (repeatable)")
    parser.add_argument("--sizes", default="100,200,400,1000", help="file sizes in KB")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="functions")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    args = parser.parse_args()
    installs = args.mllint or [shutil.which("mllint") or "mllint"]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"shape: {args.shape}")
    for n, mllint in enumerate(installs):
        print(f"[{n}] {mllint}")
    print(f"{'size':>8}  " + "  ".join(
        f"[{n}] {'exit':>4} {'seconds':>8} {'x':>5} {'peak MB':>8} {'x':>5}" for n in range(len(installs))))
    previous: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kb in sizes:
            path = Path(tmp) / f"{args.shape}_{kb}kb.py"
            path.write_text(SHAPES[args.shape](kb * 1000))
            cells = []
            for n, mllint in enumerate(installs):
                code, seconds, peak = run(mllint, path, args.timeout)
                before = previous.get(n)
                grow_t = f"{seconds / before[0]:5.1f}" if before else f"{'':>5}"
                grow_m = f"{peak / before[1]:5.1f}" if before else f"{'':>5}"
                previous[n] = (seconds, peak)
                shown = "kill" if code is None else str(code)
                cells.append(f"[{n}] {shown:>4} {seconds:8.2f} {grow_t} {peak:8.1f} {grow_m}")
            print(f"{kb:>5} KB  " + "  ".join(cells), flush=True)
    print("x: growth over the previous size (size ratio for linear cost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
