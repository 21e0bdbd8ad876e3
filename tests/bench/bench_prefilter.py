"""Side-by-side cost of the textual prefilter (stage 1): on the text as written only, and
as mllint runs it (also on ``token_variants`` where the text fails, so that line
continuations, comments and spacing cannot hide a finding).

Usage: python tests/bench/bench_prefilter.py [TREE ...] [--repeat R]

Default trees: the fixtures and the installed ``click`` package (code no rule targets).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    import click

    from mllint import prefilter
    from mllint.manifest import rule_infos

    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*",
                        default=[str(root / "fixtures"), str(Path(click.__file__).parent)])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    infos = rule_infos(write=False)
    texts = [p.read_text(encoding="utf-8", errors="replace")
             for tree in args.trees for p in sorted(Path(tree).rglob("*.py"))]

    def text_only(text: str) -> list:
        memo: dict[str, bool] = {}
        return [r for r in infos if r.may_match(text, memo)]

    def with_variants(text: str) -> list:
        return prefilter._stage1(infos, text)

    best = {}
    for name, fn in (("text only", text_only), ("text + variants", with_variants)):
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for text in texts:
                fn(text)
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    size = sum(map(len, texts)) / 1e6
    admitted = {name: sum(len(fn(t)) for t in texts)
                for name, fn in (("text only", text_only), ("text + variants", with_variants))}
    print(f"{len(texts)} files, {size:.2f} MB, best of {args.repeat}")
    for name, seconds in best.items():
        print(f"  {name:<16} {seconds * 1000:8.1f} ms  ({seconds / size:.2f} s/MB)  "
              f"{admitted[name]} (file, rule) pairs admitted")
    print(f"  ratio            {best['text + variants'] / best['text only']:.2f}")


if __name__ == "__main__":
    main()
