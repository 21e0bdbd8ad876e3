"""A JSON list of diagnostics; file errors appear with the same keys and ``"code": null``.

With ``--verify`` the document is an object instead: ``{"diagnostics": [...], "verify":
{...}}``, where ``verify`` is the run summary (steps, stop reason, crash, timeout, the
fault-injection run) and ``verify.series`` the per-step series the run recorded."""

from __future__ import annotations

import json
from typing import TextIO

from mllint.reporters import Report, printable_path


def diagnostics(report: Report) -> list[dict]:
    out = []
    for d in report.diagnostics:
        item = d.finding.to_dict()
        item["path"] = printable_path(item["path"])
        if d.verdict is not None:
            item["verification"] = d.verdict.to_dict()
        if d.runtime_only:
            item["runtime_only"] = True
        out.append(item)
    for e in report.errors:
        # Shaped like a finding (same keys), so a consumer reads both alike: no rule code,
        # the error kind as the name, the crashing rule (if any) in ``data``.
        out.append({
            "path": printable_path(e.path),
            "line": None if e.position is None else e.position.line,
            "column": None if e.position is None else e.position.column,
            "end_line": None,
            "end_column": None,
            "code": None,
            "name": e.kind.value,
            "message": e.message,
            "severity": "error",
            "hint": None,
            "region": None,
            "data": {} if e.rule is None else {"rule": e.rule},
            "cell": e.cell,
        })
    return out


def document(report: Report) -> list | dict:
    if report.verify_summary is None:
        return diagnostics(report)
    return {"diagnostics": diagnostics(report), "verify": report.verify_summary.to_dict()}


def render(report: Report, out: TextIO) -> None:
    json.dump(document(report), out, indent=2)
    out.write("\n")
