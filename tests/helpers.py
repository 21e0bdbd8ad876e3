"""Shared by the tests: fixture locations and their ``# expect:`` markers."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>ML\d{3}(?:\s*,\s*ML\d{3})*)")


def expected(path: Path) -> set[tuple[str, int]]:
    """(code, line) pairs marked in a fixture with a trailing ``# expect: ML001``."""
    out = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _EXPECT.search(line)
        if m:
            out |= {(c.strip(), n) for c in m.group("codes").split(",")}
    return out


def all_fixtures() -> list[Path]:
    return sorted(FIXTURES.rglob("*.py"))
