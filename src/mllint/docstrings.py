"""Rule and check documentation lives in class docstrings under ``## Heading`` lines
(Ruff's headings). Shared by static rules and runtime checks; stdlib only."""

from __future__ import annotations

import inspect
import re

_HEADING = re.compile(r"^##\s+(.*\S)\s*$")


def sections(doc: str | None) -> dict[str, str]:
    """``doc`` split by its ``## Heading`` lines: heading -> text below it."""
    out: dict[str, str] = {}
    current = None
    for line in inspect.cleandoc(doc or "").splitlines():
        m = _HEADING.match(line)
        if m:
            current = m.group(1)
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return {k: v.strip("\n") for k, v in out.items()}
