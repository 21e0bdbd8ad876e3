"""The runtime check unit: a health check that only a run can make (codes ML101-ML199).

A runtime check is to ``--verify`` what a rule is to the static pass: one class holds its
code, name, summary, hint and documentation, and names the ``Watcher`` that measures it
during the run. It has no static side: every ``--verify`` run performs every check (an
opt-in one, ``OPT_IN``, only when asked), whether or not the static pass found anything,
and what it finds is reported as a runtime-only finding at the user's line that caused it.

Checks live one per module in ``mllint.rules.runtime`` and are discovered like rules
(``mllint.registry.all_checks``). The class docstring *is* the documentation, under the
headings of ``DOC_HEADINGS``; ``Threshold`` says what is flagged and why that figure, and
``When it is settled`` how many steps the check needs before the run may stop early.
Each check has a triggering script and a healthy twin in ``fixtures/runtime/<code>/``
(``bad_*.py`` / ``good_*.py``), which the tests run end to end.

This module is stdlib-only: ``mllint rule ML101`` must not import torch.
"""

from __future__ import annotations

import linecache
import re
from typing import Any, ClassVar

from mllint.docstrings import sections
from mllint.types import Finding, Position, Severity, Span, Verdict, VerdictStatus
from mllint.verify.probe import Watcher

DOC_HEADINGS = (
    "What it does",
    "Why is this bad?",
    "Threshold",
    "Known problems",
    "How --verify measures it",
    "When it is settled",
)

_CODE_RE = re.compile(r"^ML1\d{2}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class RuntimeCheck:
    """Base class of every runtime check. Subclasses live in ``mllint.rules.runtime``."""

    code: ClassVar[str]
    name: ClassVar[str]
    #: One line: the bad pattern, for ``mllint rules`` and the README table.
    summary: ClassVar[str]
    #: What to do about it, shown under each finding.
    hint: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
    #: The ``Watcher`` that measures it, as ``"module:Class"`` (imported only in the run).
    WATCHER: ClassVar[str]
    #: Performed only when asked for (``--overfit-batch`` for ML108).
    OPT_IN: ClassVar[bool] = False

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split by its ``## Heading`` lines."""
        return sections(cls.__doc__)

    @classmethod
    def documentation(cls) -> str:
        """The check's documentation in Markdown, as ``mllint rule CODE`` prints it."""
        sec = cls.doc_sections()
        out = [f"# {cls.code} {cls.name} (runtime check, `--verify`)", "", cls.summary, ""]
        for heading in DOC_HEADINGS:
            if sec.get(heading):
                out += [f"## {heading}", "", sec[heading], ""]
        out += ["## What to do", "", cls.hint, ""]
        return "\n".join(out).rstrip() + "\n"

    @classmethod
    def validate_definition(cls) -> list[str]:
        """Problems with the check's own definition; the test suite asserts none."""
        problems = []
        if not _CODE_RE.match(getattr(cls, "code", "")):
            problems.append(f"{cls.__name__}: code must look like ML101")
        if not _NAME_RE.match(getattr(cls, "name", "")):
            problems.append(f"{cls.__name__}: name must be kebab-case")
        for attr in ("summary", "hint", "WATCHER"):
            if not getattr(cls, attr, None):
                problems.append(f"{cls.__name__}: missing {attr}")
        sec = cls.doc_sections()
        for heading in DOC_HEADINGS:
            if heading != "Known problems" and not sec.get(heading):
                problems.append(f"{cls.__name__}: docstring lacks '## {heading}'")
        return problems


class CheckWatcher(Watcher):
    """The measuring side of a runtime check: a ``Watcher`` that reports its findings at
    the user's lines. ``check`` is the ``RuntimeCheck`` it measures for."""

    check: ClassVar[type[RuntimeCheck]]

    def finding(self, path: str, line: int, message: str, evidence: str,
                **figures: Any) -> tuple[Finding, Verdict]:
        """A runtime-only finding of ``check`` at ``path:line``, confirmed by the run."""
        text = linecache.getline(path, line).rstrip()
        indent = len(text) - len(text.lstrip())
        span = Span(Position(line, indent + 1), Position(line, max(len(text), indent) + 1))
        check = self.check
        return (
            Finding(path=path, code=check.code, name=check.name, message=message, span=span,
                    severity=check.severity, hint=check.hint),
            Verdict(VerdictStatus.CONFIRMED, evidence, figures),
        )
