"""Peak memory and time of the project model on one large project: a whole tree taken
as a single project (its nested repositories' markers ignored), with every file asking
the whole-project questions rules ask (who calls my functions, who loads checkpoints).

Usage: python tests/bench/bench_project.py TREE [--files N] [--cli MLLINT ...]

In-process (default): ``Project(TREE)`` directly, for up to N files spread over the tree
(50 by default): each file's top-level functions (``--methods``: and methods) go to
``callers_elsewhere`` and every file asks ``resuming_loads``. Prints wall seconds, peak
RSS and what the model holds at the end. ``--cli``: also run each given ``mllint`` on a
copy of TREE made one project (``pyproject.toml`` at its top, nested markers removed),
reporting wall seconds and the peak RSS of the largest process (a worker, usually).
Memory should stay flat in the number of files: a few hundred MB for thousands.
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

MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", ".git")


def in_process(tree: Path, files: int | None, methods: bool) -> None:
    from mllint.project import model
    from mllint.project.layout import python_files

    project = model.Project(tree)
    paths = list(python_files(tree))
    if files and files < len(paths):
        step = len(paths) / files
        paths = [paths[int(i * step)] for i in range(files)]
    parses = 0
    read = model._read

    def counted(path):
        nonlocal parses
        parses += 1
        return read(path)

    model._read = counted
    questions = 0
    start = time.perf_counter()
    try:
        for done, path in enumerate(paths):
            if done and done % 500 == 0:
                print(f"  {done} files, {time.perf_counter() - start:.1f} s", flush=True)
            view = model.ProjectView(project, path)
            summary = project.summary(path)
            if summary is None:
                continue
            names = [q for q in summary.functions if q.count(".") <= (1 if methods else 0)]
            for qualname in names:
                view.callers_elsewhere(qualname)
            view.resuming_loads()
            questions += len(names) + 1
    finally:
        model._read = read
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"in-process: {len(paths)} files, {questions} questions, {parses} parses, "
          f"{seconds:.1f} s, peak {peak:.0f} MB")
    print(f"  kept: {len(project._summaries)} summaries ({project._held / 1e6:.1f} MB of "
          f"source), {len(project._load_sites or ())} load sites, "
          f"{len(project._outlines)} outlines")


def one_project(tree: Path, into: Path) -> Path:
    copy = into / "project"
    shutil.copytree(tree, copy, symlinks=True)
    for directory, dirs, names in os.walk(copy):
        if Path(directory) == copy:
            continue
        for marker in MARKERS:
            found = Path(directory, marker)
            if marker == ".git" and found.is_dir():
                shutil.rmtree(found)
                dirs.remove(marker)
            elif found.exists():
                found.unlink()
    (copy / "pyproject.toml").write_text("")
    return copy


def cli(mllint: str, tree: Path) -> None:
    cmd = [mllint, "check", "--no-cache", "--format", "json", "."]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    # ru_maxrss of a waited child: the largest single process of its tree.
    print(f"{mllint}: exit {os.waitstatus_to_exitcode(status)}, {seconds:.1f} s, "
          f"peak {usage.ru_maxrss / 1024:.0f} MB (largest process)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", type=Path)
    parser.add_argument("--files", type=int, default=50,
                        help="files asking, spread over the tree (0: all; each question about a "
                             "common name parses the candidates that may import the asker)")
    parser.add_argument("--methods", action="store_true",
                        help="also ask about methods (Class.method), as ML001 may")
    parser.add_argument("--cli", action="append", default=[], help="an mllint executable")
    args = parser.parse_args()
    tree = args.tree.resolve()
    if args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            copy = one_project(tree, Path(tmp))
            for mllint in args.cli:
                cli(mllint, copy)
    in_process(tree, args.files, args.methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
