"""SARIF 2.1.0, as GitHub code scanning and other viewers read it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from mllint import __version__
from mllint.registry import all_rules
from mllint.reporters import Report, printable_path

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _uri(path: str) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_uri()
    if printable_path(path) != path:
        # A file name that is not UTF-8: its bytes percent-encoded, as URIs carry them.
        return quote(os.fsencode(p.as_posix()), safe="/")
    return p.as_posix()


def render(report: Report, out: TextIO) -> None:
    rules = all_rules()
    index = {r.code: i for i, r in enumerate(rules)}
    driver = {
        "name": "mllint",
        "version": __version__,
        "informationUri": "https://pypi.org/project/mllint-torch/",
        "rules": [
            {
                "id": r.code,
                "name": r.name,
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": r.doc_sections().get("What it does", r.summary)},
                "help": {"text": r.summary, "markdown": r.documentation()},
                "defaultConfiguration": {"level": "error" if r.severity.value == "error" else "warning"},
            }
            for r in rules
        ],
    }
    results = []
    for d in report.diagnostics:
        f = d.finding
        result = {
            "ruleId": f.code,
            # A refuted finding is a note: the run showed the bug does not happen.
            "level": "note" if d.refuted else (
                "error" if f.severity.value == "error" else "warning"),
            "message": {"text": f.message},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": _uri(f.path)},
                    "region": {
                        "startLine": f.span.start.line,
                        "startColumn": f.span.start.column,
                        "endLine": f.span.end.line,
                        "endColumn": f.span.end.column,
                    },
                }
            }],
        }
        if f.code in index:
            result["ruleIndex"] = index[f.code]
        if d.verdict is not None:
            result["properties"] = {"verification": d.verdict.to_dict()}
        results.append(result)
    notifications = [
        {
            "level": "error",
            "message": {"text": f"{e.kind.value}: {e.message}"},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": _uri(e.path)},
                **({"region": {"startLine": e.position.line, "startColumn": e.position.column}}
                   if e.position else {}),
            }}],
        }
        for e in report.errors
    ]
    run = report.verify_summary
    if run is not None:
        notifications.append({"level": "error" if run.failed else "note",
                              "message": {"text": run.text()}})
    doc = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": driver},
            "invocations": [{
                "executionSuccessful": not report.errors and not (run and run.failed),
                **({"properties": {"verify": run.to_dict()}} if run is not None else {}),
                "toolExecutionNotifications": notifications,
                "workingDirectory": {"uri": Path(os.getcwd()).as_uri() + "/"},
            }],
            "results": results,
        }],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
