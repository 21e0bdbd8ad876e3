"""Every hostile input of ``tests/hostile_cases.py`` through the ``mllint`` command, one
run per case: exit code, wall time, peak memory (of mllint and its workers), and whether
the run reported what it should.

Usage: python tests/bench/hostile.py [--big] [--mllint PATH]

``--big`` adds files of 100 KB, 200 KB and 1 MB of small training functions (minutes).
Each case runs with the result cache off, so every figure is a cold lint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import hostile_cases  # noqa: E402


def run_case(mllint: str, case: hostile_cases.Case, workdir: Path) -> dict:
    path = workdir / f"{case.name}.py"
    path.write_bytes(case.data)
    cmd = [mllint, "--format", "json", "--no-cache", *case.flags, str(path)]
    env = {**os.environ, "MLLINT_NO_CACHE": "1"}
    # One child per case, reaped with wait4: the rusage is this run's alone (mllint waits
    # for its worker processes, so theirs is in it), not the maximum over earlier cases.
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    try:
        items = json.loads(out)
        found = {(d["code"], d["line"]) for d in items if d["code"]}
        errors = [d["name"] for d in items if not d["code"]]
        ok = found == set(case.findings) and errors == ([case.error] if case.error else [])
        got = ", ".join([f"{c}:{n}" for c, n in sorted(found)] + errors) or "clean"
    except ValueError:
        ok, got = False, f"no JSON: {err.decode(errors='replace').strip()[-200:]}"
    return {"case": case.name, "kb": len(case.data) / 1000, "exit": proc.returncode,
            "seconds": wall, "peak_mb": usage.ru_maxrss / 1024, "ok": ok, "got": got}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="add the megabyte-sized cases")
    parser.add_argument("--mllint", default=shutil.which("mllint") or "mllint")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in hostile_cases.cases(big=args.big):
            rows.append(run_case(args.mllint, case, Path(tmp)))
            r = rows[-1]
            print(f"{r['case']:<26} {r['kb']:>8.1f} KB  exit {r['exit']:>3}  "
                  f"{r['seconds']:>7.2f} s  {r['peak_mb']:>7.1f} MB  "
                  f"{'ok  ' if r['ok'] else 'FAIL'}  {r['got']}", flush=True)
    # Peak memory: ru_maxrss as wait4 reports it, the largest single process of
    # mllint's tree (the command or one worker), not their sum.
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
