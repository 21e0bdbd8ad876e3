"""Fuzz the linter: generated programs and generated variants of every fixture and rule
example must lint without a crash or an internal error, and the prefiltered run must
report exactly what the unfiltered run reports.

Usage: python tests/bench/fuzz.py [--programs N] [--mutants K] [--seed S] [--jobs J]

- N programs (default 10,000) from hypothesmith's grammar-based generator
  (``pip install -r tests/bench/requirements.txt``);
- every fixture and rule example, each laid out three ways (``tests/layout_variants.py``:
  line continuations, comments inside brackets, spaces between tokens), plus K mutants of
  each (random statements dropped or duplicated, kept when Python still parses them) and
  their layout variants.

All of it is written to a temporary tree and linted through mllint's own runner twice
(prefilter on, prefilter off), in worker processes, so a segfault is reported as a
``crashed`` file instead of ending the fuzzer. Prints the figures; exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import layout_variants  # noqa: E402
from helpers import all_fixtures  # noqa: E402

#: Errors that are the linter's fault, never the input's.
OUR_FAULT = {"internal-error", "crashed", "timeout"}


def hypothesmith_programs(count: int, seed: int) -> list[str]:
    import hypothesmith
    from hypothesis import HealthCheck, given, seed as hseed, settings

    out: list[str] = []

    @hseed(seed)
    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(hypothesmith.from_grammar())
    def collect(source: str) -> None:
        if len(out) < count:
            out.append(source)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collect()
    return out


def mutants(text: str, k: int, rng: random.Random) -> list[str]:
    """Up to ``k`` copies of ``text`` with a few lines dropped or duplicated that Python
    still parses."""
    import ast

    lines = text.splitlines(keepends=True)
    out: list[str] = []
    for _ in range(k * 4):
        if len(out) >= k or not lines:
            break
        copy = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(copy))
            if rng.random() < 0.5:
                del copy[i]
            else:
                copy.insert(i, copy[i])
            if not copy:
                break
        candidate = "".join(copy)
        try:
            ast.parse(candidate)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        out.append(candidate)
    return out


def variant_corpus(k: int, seed: int) -> dict[str, str]:
    """Layout variants and mutants (and their variants) of every fixture and rule example."""
    from mllint.registry import all_rules

    rng = random.Random(seed)
    files: dict[str, str] = {}
    sources = [(p.stem, p.read_text(encoding="utf-8")) for p in all_fixtures()]
    for rule in all_rules():
        for j, example in enumerate([*rule.INVALID, *rule.VALID]):
            sources.append((f"{rule.code}_example_{j}", example.code))
    for n, (name, text) in enumerate(sources):
        for layout, variant in layout_variants.variants(text).items():
            files[f"var/{n:03d}_{name}_{layout}.py"] = variant
        for m, mutant in enumerate(mutants(text, k, rng)):
            files[f"mut/{n:03d}_{name}_m{m}.py"] = mutant
            for layout, variant in layout_variants.variants(mutant).items():
                files[f"mut/{n:03d}_{name}_m{m}_{layout}.py"] = variant
    return files


def lint_all(root: Path, prefilter: bool, jobs: int) -> dict[str, object]:
    from mllint.config import Settings
    from mllint.files import Target
    from mllint.manifest import rule_infos
    from mllint.runner import RunOptions, lint_targets

    opts = RunOptions(rules=rule_infos(write=False), settings=Settings(root=root), jobs=jobs,
                      cache=None, prefilter=prefilter)
    targets = [Target(str(p)) for p in sorted(root.rglob("*.py"))]
    return {r.path: r for r in lint_targets(targets, opts)}


class Tally:
    def __init__(self) -> None:
        self.files = self.findings = self.syntax = 0
        self.seconds = {True: 0.0, False: 0.0}
        self.problems: list[str] = []

    def check(self, files: dict[str, str], jobs: int) -> None:
        """Lint ``files`` twice (prefilter on and off) and record what went wrong."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for rel, text in files.items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text.encode("utf-8", "surrogatepass"))
            results = {}
            for prefilter in (True, False):
                start = time.perf_counter()
                results[prefilter] = lint_all(root, prefilter, jobs)
                self.seconds[prefilter] += time.perf_counter() - start
        self.files += len(files)
        for path, filtered in results[True].items():
            plain = results[False][path]
            rel = str(Path(path).relative_to(root))
            for r in (filtered, plain):
                for e in r.errors:
                    if e.kind.value in OUR_FAULT:
                        self.problems.append(f"{rel}: {e.kind.value}: {e.message}")
            self.syntax += any(e.kind.value in ("syntax-error", "decode-error")
                               for e in plain.errors)
            a = [(f.code, f.line, f.span.start.column) for f in filtered.findings]
            b = [(f.code, f.line, f.span.start.column) for f in plain.findings]
            self.findings += len(b)
            if a != b:
                self.problems.append(f"{rel}: prefiltered {a} != unfiltered {b}")

    def line(self, what: str) -> str:
        return (f"{what}: {self.files} files, {self.findings} findings, {self.syntax} "
                f"not parseable, lint {self.seconds[True]:.0f} s prefiltered / "
                f"{self.seconds[False]:.0f} s unfiltered, {len(self.problems)} problems")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--mutants", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=1000, help="programs per batch")
    args = parser.parse_args()

    variants_tally, programs_tally = Tally(), Tally()
    variants_tally.check(variant_corpus(args.mutants, args.seed), args.jobs)
    print(variants_tally.line("fixture/example variants and mutants"), flush=True)
    made, batch, generating = 0, 0, 0.0
    while made < args.programs:
        n = min(args.chunk, args.programs - made)
        start = time.perf_counter()
        programs = hypothesmith_programs(n, args.seed + batch)
        generating += time.perf_counter() - start
        programs_tally.check({f"gen/p{made + i:05d}.py": src for i, src in enumerate(programs)},
                             args.jobs)
        made += len(programs)
        batch += 1
        print(programs_tally.line(f"hypothesmith programs (generated in {generating:.0f} s)"),
              flush=True)
    problems = variants_tally.problems + programs_tally.problems
    print(f"problems: {len(problems)}")
    for p in problems[:50]:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
