"""SARIF 2.1.0, as GitHub code scanning and other viewers read it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from mllint import __version__
from mllint.registry import all_rules
from mllint.reporters import Report

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
#: Where each rule's documentation is read online (the README's rule table).
DOCS = "https://pypi.org/project/mllint-torch/"
SRCROOT = "%SRCROOT%"


def _location(path: str) -> dict:
    """An artifact location: percent-encoded, relative to ``%SRCROOT%`` (the working
    directory) when the file is under it, else an absolute ``file:`` URI."""
    p = Path(os.path.abspath(path))
    try:
        rel = p.relative_to(Path.cwd())
    except ValueError:
        # Bytes, so that a file name that is not UTF-8 is percent-encoded as it is.
        return {"uri": "file://" + quote(os.fsencode(p.as_posix()), safe="/")}
    return {"uri": quote(os.fsencode(rel.as_posix()), safe="/"), "uriBaseId": SRCROOT}


def _directory_uri() -> str:
    uri = Path(os.getcwd()).as_uri()
    return uri if uri.endswith("/") else uri + "/"


def _level(severity) -> str:
    return "error" if severity.value == "error" else "warning"


def _region(f) -> dict:
    if f.cell is not None:  # a notebook: the .ipynb line that holds the source line
        return {"startLine": f.notebook_line or 1}
    return {
        "startLine": f.span.start.line,
        "startColumn": f.span.start.column,
        "endLine": f.span.end.line,
        "endColumn": f.span.end.column,
    }


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
                "helpUri": f"{DOCS}#what-it-finds",
                "defaultConfiguration": {"level": _level(r.severity)},
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
            "level": "note" if d.refuted else _level(f.severity),
            "message": {"text": f.message},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": _location(f.path),
                    "region": _region(f),
                }
            }],
        }
        if f.code in index:
            result["ruleIndex"] = index[f.code]
        properties = {}
        if f.cell is not None:
            properties.update(cell=f.cell, cellLine=f.span.start.line,
                              cellColumn=f.span.start.column)
        if d.verdict is not None:
            properties["verification"] = d.verdict.to_dict()
        if properties:
            result["properties"] = properties
        results.append(result)
    notifications = [
        {
            "level": "error",
            "message": {"text": f"{e.kind.value}: {e.message}"},
            "locations": [{"physicalLocation": {
                "artifactLocation": _location(e.path),
                **({"region": {"startLine": e.position.line, "startColumn": e.position.column}}
                   if e.position and e.cell is None else {}),
            }}],
            **({"properties": {"cell": e.cell}} if e.cell is not None else {}),
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
            "originalUriBaseIds": {SRCROOT: {"uri": _directory_uri()}},
            # libcst counts columns in code points, not UTF-16 units.
            "columnKind": "unicodeCodePoints",
            "invocations": [{
                "executionSuccessful": not report.errors and not (run and run.failed),
                **({"properties": {"verify": run.to_dict()}} if run is not None else {}),
                "toolExecutionNotifications": notifications,
                "workingDirectory": {"uri": _directory_uri()},
            }],
            "results": results,
        }],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
