"""The live display while ``--verify`` runs: steps seen and findings settled (stderr)."""

from __future__ import annotations

import sys
from typing import Any, Mapping

from rich.console import Console
from rich.live import Live
from rich.text import Text


class ProgressDisplay:
    def __init__(self, total_findings: int, *, enabled: bool = True) -> None:
        self.total = total_findings
        self.steps = 0
        self.settled = 0
        self.batches = 0
        self.last = "starting the script"
        self._console = Console(file=sys.stderr)
        self._live: Live | None = None
        self._enabled = enabled and self._console.is_terminal

    def __enter__(self) -> "ProgressDisplay":
        if self._enabled:
            self._live = Live(self._render(), console=self._console, transient=True,
                              refresh_per_second=8)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "step":
            self.steps = int(event.get("steps", self.steps + 1))
            self.last = "training"
        elif kind == "settled":
            self.settled += 1
        elif kind == "batch":
            self.batches += 1
        elif kind in ("phase", "status") and event.get("message"):
            self.last = str(event["message"])
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Text:
        return Text.assemble(
            ("mllint --verify ", "bold"),
            f"{self.last}: {self.steps} optimizer step(s), "
            f"{self.settled}/{self.total} finding(s) settled",
        )
