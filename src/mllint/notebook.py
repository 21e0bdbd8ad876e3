"""Jupyter notebooks: their code cells as one Python text, and positions mapped back.

A notebook's code cells run in order in one namespace, so they are linted as one module:
the cells are joined in order, each starting on a new line. IPython syntax that is not
Python is masked line for line, so every line keeps its number: a line magic (``%time``),
a shell escape (``!pip ...``, ``files = !ls``) and help (``obj?``) become ``pass`` at the
same indentation (valid in any block), and a cell magic (``%%bash``) masks its whole cell
(its body is not Python). Comments stay, so ``# noqa`` works per line.

Jupyter compiles each cell on its own, so a cell Python cannot parse (an exercise's
blank, ``model = ``) stops only that cell: when the joined text does not parse, each cell
that does not parse alone is reported as a syntax error of that cell and left out (its
lines blank, so every other line keeps its number), and the other cells are linted.

A diagnostic's line in the joined text is mapped back to its cell (numbered from 1 among
the code cells, as Jupyter's "run" order and ruff count them) and its line in that cell,
and to the line of the ``.ipynb`` file that holds that source line, for viewers that show
the raw file (GitHub annotations, SARIF).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from typing import Iterator

from mllint.types import ErrorKind, FileError, FileResult, Finding, Position, Span

SUFFIX = ".ipynb"

#: ``%magic``, ``!shell``, ``x = !shell``, ``x = %magic``, ``obj?`` / ``obj??`` / ``?obj``,
#: and wildcard search (``torch.*Tensor?``).
_MAGIC_LINE = re.compile(
    r"^(?P<indent>[ \t]*)(?:[%!?]|[A-Za-z_][\w.,\s]*=\s*[%!]|[\w.*]+\?{1,2}\s*$)"
)


def is_notebook(path: str) -> bool:
    return path.lower().endswith(SUFFIX)


@dataclass(frozen=True)
class CellLine:
    """Where a line of the joined text comes from."""

    cell: int  # 1-based, among the code cells
    line: int  # 1-based, within the cell
    file_line: int | None  # 1-based line of the .ipynb file, when it can be found


@dataclass(frozen=True)
class NotebookSource:
    text: str  # the code cells joined, IPython syntax masked
    lines: tuple[CellLine, ...]  # index i: where line i + 1 of ``text`` comes from
    cells: tuple[tuple[str, ...], ...]  # each code cell's original lines, for code frames
    #: Syntax errors of cells left out of ``text`` (positions already in their cells).
    broken: tuple[FileError, ...] = ()

    def locate(self, line: int) -> CellLine | None:
        if 1 <= line <= len(self.lines):
            return self.lines[line - 1]
        return None


def _cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        if not all(isinstance(s, str) for s in src):
            raise ValueError("a cell's source holds something other than text")
        return "".join(src)
    if not isinstance(src, str):
        raise ValueError("a cell's source is neither text nor a list of text")
    return src


#: Cell magics whose body is Python that runs (timed, captured, profiled): only their
#: first line is masked. Every other cell magic (``%%bash``, ``%%writefile``) masks its cell.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "memit"})


def _mask(lines: list[str]) -> list[str]:
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in _PYTHON_CELL_MAGICS:
            return ["pass  # IPython cell magic" if i == 0 else "" for i in range(len(lines))]
        return ["pass  # IPython cell magic", *_mask(lines[1:])]
    out = []
    continued = False
    for line in lines:
        m = _MAGIC_LINE.match(line)
        if continued or (m and not _is_python(line)):
            indent = m.group("indent") if m else re.match(r"[ \t]*", line).group(0)
            out.append(f"{indent}pass  # IPython" if not continued else "")
            continued = line.rstrip().endswith("\\")
        else:
            out.append(line)
    return out


def _is_python(line: str) -> bool:
    """``x = !ls`` is IPython, ``x != y`` and ``a = b % c`` are not: the regex only admits
    candidates, Python's own parser decides."""
    import ast

    try:
        ast.parse(line.strip())
    except SyntaxError:
        return False
    return True


def _source_file_lines(raw: str, cells: list[dict]) -> list[list[int | None]]:
    """For each cell (all cells, in order), the .ipynb line of each of its source lines.

    nbformat writes a cell's source as a JSON list with one string per line, one per file
    line; each guess is checked by decoding that file line. Anything else (a source
    written as one string, a minified file) falls back to the ``"source"`` key's line.
    """
    file_lines = raw.splitlines()
    offsets = [0]
    for fl in file_lines:
        offsets.append(offsets[-1] + len(fl) + 1)

    def line_at(pos: int) -> int:
        lo, hi = 0, len(offsets) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if offsets[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo  # 0-based

    key = re.compile(r'"source"\s*:\s*')
    pos = 0
    out: list[list[int | None]] = []
    for cell in cells:
        src = cell.get("source", "")
        pieces = src if isinstance(src, list) else str(src).splitlines(keepends=True)
        m = key.search(raw, pos)
        if m is None:
            out.append([None] * len(pieces))
            continue
        pos = m.end()
        at = line_at(m.start())
        found: list[int | None] = []
        if isinstance(src, list) and raw[m.end():m.end() + 1] == "[":
            n = line_at(m.end()) + 1
            for piece in pieces:
                decoded = _decode_line(file_lines[n]) if n < len(file_lines) else None
                if decoded != piece:
                    break
                found.append(n + 1)
                n += 1
        if len(found) != len(pieces):
            found = [at + 1] * len(pieces)
        out.append(found)
    return out


def _decode_line(file_line: str) -> str | None:
    s = file_line.strip().rstrip(",")
    try:
        value = json.loads(s)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def read_notebook(path: str, raw: str) -> NotebookSource | FileError:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        pos = getattr(exc, "lineno", None)
        position = Position(pos, getattr(exc, "colno", 1)) if pos else None
        return FileError(path, ErrorKind.SYNTAX, f"not a notebook: invalid JSON: {exc}", position)
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        return FileError(path, ErrorKind.SYNTAX,
                         "not a notebook: no list of cells (nbformat 4 is supported)")
    language = (doc.get("metadata") or {}).get("language_info", {}) or {}
    if isinstance(language, dict) and language.get("name") not in (None, "python"):
        return FileError(path, ErrorKind.SYNTAX,
                         f"notebook language is {language.get('name')!r}, not Python; not linted")
    try:
        sources = [_cell_source(c) for c in cells]
    except ValueError as exc:
        return FileError(path, ErrorKind.SYNTAX, f"not a notebook: {exc}")
    file_lines = _source_file_lines(raw, cells)
    masked: list[list[str]] = []
    where: list[CellLine] = []
    originals: list[tuple[str, ...]] = []
    number = 0
    for cell, src, fls in zip(cells, sources, file_lines):
        if cell.get("cell_type") != "code":
            continue
        number += 1
        lines = src.splitlines()
        originals.append(tuple(lines))
        masked.append(_mask(lines))
        where.extend(CellLine(number, i + 1, fls[i] if i < len(fls) else None)
                     for i in range(len(lines)))
    text = _joined(masked)
    broken: list[FileError] = []
    if _syntax_error(text) is not None:
        kept = list(masked)
        for number, lines in enumerate(masked, 1):
            error = _syntax_error(_joined([lines]))
            if error is not None:
                broken.append(_cell_error(path, number, error))
                kept[number - 1] = [""] * len(lines)
        candidate = _joined(kept)
        # Left out only when that is what was wrong: else the whole text's error stands.
        if broken and _syntax_error(candidate) is None:
            text = candidate
        else:
            broken = []
    return NotebookSource(text, tuple(where), tuple(originals), tuple(broken))


def _joined(cells: list[list[str]]) -> str:
    lines = [line for cell in cells for line in cell]
    return "\n".join(lines) + ("\n" if lines else "")


def _syntax_error(text: str) -> SyntaxError | None:
    from mllint.prefilter import python_syntax_error

    error = python_syntax_error(text)
    if error is None:
        return None
    return error if isinstance(error, SyntaxError) else SyntaxError("nested too deeply")


def _cell_error(path: str, cell: int, error: SyntaxError) -> FileError:
    position = Position(error.lineno or 1, error.offset or 1)
    return FileError(path, ErrorKind.SYNTAX,
                     f"cannot parse: {error.msg}; this cell is left out, the others are linted",
                     position, cell=cell, partial=True)


def cell_lines(nb: NotebookSource, cell: int) -> tuple[str, ...]:
    return nb.cells[cell - 1] if 0 < cell <= len(nb.cells) else ()


def map_result(result: FileResult, nb: NotebookSource) -> FileResult:
    """``result`` (lines of the joined text) with every position moved to its cell."""
    return replace(
        result,
        findings=tuple(_map_finding(f, nb) for f in result.findings),
        errors=(*nb.broken, *(_map_error(e, nb) for e in result.errors)),
        warnings=tuple(_LINE_IN_WARNING.sub(lambda m: _cell_line(m, nb), w)
                       for w in result.warnings),
    )


#: How a warning names its line (``mllint.noqa``): ``path: line 12: ...``.
_LINE_IN_WARNING = re.compile(r"(?<=: )line (\d+)(?=: )")


def _cell_line(m: re.Match, nb: NotebookSource) -> str:
    where = nb.locate(int(m.group(1)))
    return m.group(0) if where is None else f"cell {where.cell}, line {where.line}"


def _map_finding(f: Finding, nb: NotebookSource) -> Finding:
    start = nb.locate(f.span.start.line)
    if start is None:
        return f
    end = nb.locate(f.span.end.line)
    if end is None or end.cell != start.cell:  # a span never leaves its cell; be safe
        end_pos = Position(start.line, f.span.start.column + 1)
    else:
        end_pos = Position(end.line, f.span.end.column)
    region = None
    if f.region is not None:
        a, b = nb.locate(f.region.start.line), nb.locate(f.region.end.line)
        if a is not None and b is not None and a.cell == b.cell:
            region = Span.lines(a.line, b.line)
    return replace(f, span=Span(Position(start.line, f.span.start.column), end_pos),
                   region=region, cell=start.cell, notebook_line=start.file_line,
                   message=_LINE_IN_MESSAGE.sub(lambda m: _line_in_cell(m, nb, start.cell),
                                                f.message))


#: How a message refers to another line of the file (``the loop on line 183``).
_LINE_IN_MESSAGE = re.compile(r"\bline (\d+)\b")


def _line_in_cell(m: re.Match, nb: NotebookSource, cell: int) -> str:
    """``line 183`` of the joined text as a reader of the notebook finds it: ``line 7``
    in the finding's own cell, ``line 7 of cell 12`` in another."""
    where = nb.locate(int(m.group(1)))
    if where is None:
        return m.group(0)
    return f"line {where.line}" if where.cell == cell else f"line {where.line} of cell {where.cell}"


def _map_error(e: FileError, nb: NotebookSource) -> FileError:
    if e.position is None or e.cell is not None:
        return e
    where = nb.locate(e.position.line)
    if where is None:
        return e
    return replace(e, position=Position(where.line, e.position.column), cell=where.cell)


# -- --verify: a notebook run as a script ----------------------------------------------------

@contextlib.contextmanager
def as_script(path: str, nb: NotebookSource) -> Iterator[str]:
    """The notebook's code cells as a script in a temporary directory (never next to the
    notebook: ``--verify`` writes nothing to the user's files), removed afterwards. The
    masked IPython lines are ``pass``: magics and shell escapes are skipped."""
    with tempfile.TemporaryDirectory(prefix="mllint-notebook-") as tmp:
        stem = os.path.splitext(os.path.basename(path))[0]
        script = os.path.join(tmp, f"{stem}.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(nb.text)
        yield script


def joined_line(nb: NotebookSource, cell: int, line: int) -> int | None:
    for i, where in enumerate(nb.lines, start=1):
        if where.cell == cell and where.line == line:
            return i
    return None


def to_script(f: Finding, nb: NotebookSource, script: str) -> Finding:
    """A notebook finding in the coordinates of ``as_script``'s script."""
    if f.cell is None:
        return replace(f, path=script)
    start = joined_line(nb, f.cell, f.span.start.line) or 1
    end = joined_line(nb, f.cell, f.span.end.line) or start
    region = None
    if f.region is not None:
        a = joined_line(nb, f.cell, f.region.start.line)
        b = joined_line(nb, f.cell, f.region.end.line)
        region = Span.lines(a, b) if a and b else None
    return replace(f, path=script, cell=None, notebook_line=None, region=region,
                   span=Span(Position(start, f.span.start.column),
                             Position(end, f.span.end.column)))


def from_script(f: Finding, nb: NotebookSource, path: str) -> Finding:
    """A finding about ``as_script``'s script (one the run found) in notebook terms."""
    return _map_finding(replace(f, path=path), nb)


def cells_in_text(text: str, nb: NotebookSource) -> str:
    """``line N`` (of the script) in a verdict's evidence as ``cell C, line L``."""
    def named(m: re.Match) -> str:
        where = nb.locate(int(m.group(1)))
        return m.group(0) if where is None else f"cell {where.cell}, line {where.line}"
    return re.sub(r"\bline (\d+)\b", named, text)
