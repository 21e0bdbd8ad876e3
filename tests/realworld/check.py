"""Real-world benchmark: re-lint pinned public repositories and compare with the triage.

Usage:
    python tests/realworld/check.py [MIRRORS] [--repo OWNER/NAME ...] [--strict]
                                    [--keep DIR] [--skeleton FILE] [--json FILE]

MIRRORS is a directory of git mirrors or checkouts (default: $MLLINT_REALWORLD_MIRRORS, else
/work/.mirror). A repository ``owner/name`` is looked for as ``MIRRORS/owner+name/repo``,
``MIRRORS/owner+name``, ``MIRRORS/owner/name`` or ``MIRRORS/name``, bare or with a ``.git``.
Each is extracted at its pinned commit into a temporary directory (only the files mllint and
project discovery read: ``*.py``, ``pyproject.toml``, ``setup.cfg``) and linted on its own, as
a new user would: ``mllint --format json --no-cache .`` from the repository's root, with the
``mllint`` installed beside the Python that runs this script, else on PATH (or $MLLINT).

It prints, on the triaged findings that are still reported: per-rule and overall precision
(true / (true + false); debatable findings are counted apart and kept out of the ratio); recall
on the known bugs (the true findings plus the known missed bugs of triage.toml); every NEW
finding (not in the triage) with its source line, and every LOST one (triaged, no longer
reported). ``--strict`` exits 1 when there is any new or lost finding, or a repository could not
be linted. This needs the mirrors, so it is a benchmark, not a CI test; its matching and
metrics are tested on synthetic data in test_realworld_check.py.

A finding is matched to a triage entry of the same repository, path and code by, in order:
the same line; the same stripped source line (the code moved); the same enclosing function
within ``FUNCTION_WINDOW`` lines (the rule now points at another line of the same construct);
a line inside the entry's optional ``span = [first, last]`` (a bug that spans several places,
e.g. a validation loader built on line 46 and iterated on line 127). Each entry matches at most
one finding.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.toml"
TRIAGE = HERE / "triage.toml"
DEFAULT_MIRRORS = "/work/.mirror"
VERDICTS = ("true", "false", "debatable")
FUNCTION_WINDOW = 30
# What mllint reads from a repository: sources, and the files that say where a project starts.
EXTRACT_SUFFIXES = (".py", ".ipynb")
EXTRACT_NAMES = ("pyproject.toml", "setup.cfg", "setup.py")


@dataclass(frozen=True)
class Repo:
    name: str
    commit: str
    kind: str


@dataclass(frozen=True)
class Finding:
    repo: str
    path: str
    line: int
    code: str
    text: str = ""
    function: str = ""
    message: str = ""
    #: A notebook's code cell (counted from 1, as mllint counts them): ``line`` is in it.
    cell: int | None = None


@dataclass(frozen=True)
class Entry:
    """A triaged finding (verdict set) or a known missed bug (verdict None)."""

    repo: str
    commit: str
    path: str
    line: int
    code: str
    why: str
    verdict: str | None = None
    text: str = ""
    function: str = ""
    span: tuple[int, int] | None = None
    cell: int | None = None


@dataclass
class Comparison:
    matched: list[tuple[Entry, Finding]] = field(default_factory=list)
    new: list[Finding] = field(default_factory=list)
    lost: list[Entry] = field(default_factory=list)
    missed_found: list[tuple[Entry, Finding]] = field(default_factory=list)
    missed_still: list[Entry] = field(default_factory=list)


# ---------------------------------------------------------------- loading


def load_manifest(path: Path = MANIFEST) -> list[Repo]:
    data = tomllib.loads(path.read_text())
    repos = [Repo(r["name"], r["commit"], r.get("kind", "")) for r in data["repo"]]
    dupes = [n for n, c in Counter(r.name for r in repos).items() if c > 1]
    if dupes:
        raise SystemExit(f"{path}: repositories listed twice: {', '.join(dupes)}")
    return repos


def _entry(raw: dict, missed: bool, where: str) -> Entry:
    for key in ("repo", "commit", "path", "line", "code", "why"):
        if key not in raw:
            raise SystemExit(f"{where}: entry without {key!r}: {raw}")
    verdict = None if missed else raw.get("verdict")
    if not missed and verdict not in VERDICTS:
        raise SystemExit(f"{where}: verdict must be one of {VERDICTS}, got {verdict!r}: {raw}")
    span = raw.get("span")
    if span is not None and not (len(span) == 2 and span[0] <= raw["line"] <= span[1]):
        raise SystemExit(f"{where}: span must be [first, last] around line: {raw}")
    return Entry(raw["repo"], raw["commit"], raw["path"], int(raw["line"]), raw["code"],
                 raw["why"], verdict, raw.get("text", ""), raw.get("function", ""),
                 None if span is None else (int(span[0]), int(span[1])), raw.get("cell"))


def load_triage(path: Path = TRIAGE) -> tuple[list[Entry], list[Entry]]:
    """The triaged findings and the known missed bugs."""
    data = tomllib.loads(path.read_text())
    findings = [_entry(r, False, str(path)) for r in data.get("finding", [])]
    missed = [_entry(r, True, str(path)) for r in data.get("missed", [])]
    return findings, missed


# ---------------------------------------------------------------- source context


def enclosing_function(tree: ast.AST, line: int) -> str:
    """Dotted name of the innermost def or class holding ``line``; ``<module>`` outside any."""
    best: list[str] = []

    def walk(node: ast.AST, stack: list[str]) -> None:
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                if start <= line <= (child.end_lineno or child.lineno):
                    best = stack + [child.name]
                    walk(child, best)
                    return
            walk(child, stack)

    walk(tree, [])
    return ".".join(best) or "<module>"


def source_context(root: Path, path: str, line: int, cache: dict | None = None,
                   cell: int | None = None) -> tuple[str, str]:
    """(stripped text of ``line``, enclosing function) of a file under ``root``, or of
    code cell ``cell`` of a notebook."""
    cache = {} if cache is None else cache
    if (path, cell) not in cache:
        try:
            src = (root / path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            src = ""
        if cell is not None:
            src = notebook_cell(src, cell)
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            tree = None
        cache[path, cell] = (src.splitlines(), tree)
    lines, tree = cache[path, cell]
    text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    function = enclosing_function(tree, line) if tree is not None else ""
    return text, function


def notebook_cell(raw: str, cell: int) -> str:
    """The source of a notebook's ``cell``-th code cell ("" when there is none)."""
    try:
        cells = [c for c in json.loads(raw).get("cells", []) if c.get("cell_type") == "code"]
    except (ValueError, AttributeError):
        return ""
    if not 0 < cell <= len(cells):
        return ""
    source = cells[cell - 1].get("source", "")
    text = "".join(source) if isinstance(source, list) else str(source)
    # IPython's ``%magic`` and ``!shell`` lines, as mllint masks them: a statement each.
    return _IPYTHON_LINE.sub(lambda m: m.group(1) + "pass", text)


_IPYTHON_LINE = re.compile(r"^([ \t]*)[%!].*$", re.M)


# ---------------------------------------------------------------- matching and metrics


def _key(x: Finding | Entry) -> tuple[str, str, int | None, str]:
    return (x.repo, x.path, x.cell, x.code)


def _passes():
    yield lambda e, f: e.line == f.line
    yield lambda e, f: bool(e.text) and e.text == f.text
    yield lambda e, f: (bool(e.function) and e.function == f.function
                        and abs(e.line - f.line) <= FUNCTION_WINDOW)
    yield lambda e, f: e.span is not None and e.span[0] <= f.line <= e.span[1]


def match(entries: list[Entry], findings: list[Finding]) -> tuple[list[tuple[Entry, Finding]], list[Entry], list[Finding]]:
    """One-to-one matching: (pairs, entries left, findings left). Closest line wins a tie."""
    by_key: dict[tuple, list[Finding]] = defaultdict(list)
    for f in findings:
        by_key[_key(f)].append(f)
    pairs: list[tuple[Entry, Finding]] = []
    left = list(entries)
    used: set[int] = set()
    for same in _passes():
        still = []
        for e in left:
            cands = [f for f in by_key[_key(e)] if id(f) not in used and same(e, f)]
            if cands:
                f = min(cands, key=lambda f: abs(f.line - e.line))
                used.add(id(f))
                pairs.append((e, f))
            else:
                still.append(e)
        left = still
    return pairs, left, [f for f in findings if id(f) not in used]


def compare(triaged: list[Entry], missed: list[Entry], findings: list[Finding]) -> Comparison:
    """Match findings to the triaged findings first, then what is left to the missed bugs."""
    pairs, lost, rest = match(triaged, findings)
    found, still, new = match(missed, rest)
    return Comparison(pairs, new, lost, found, still)


@dataclass(frozen=True)
class RuleFigures:
    true: int
    false: int
    debatable: int
    known_bugs: int
    bugs_found: int

    @property
    def precision(self) -> float | None:
        n = self.true + self.false
        return self.true / n if n else None

    @property
    def recall(self) -> float | None:
        return self.bugs_found / self.known_bugs if self.known_bugs else None


def figures(cmp: Comparison, triaged: list[Entry], missed: list[Entry]) -> dict[str, RuleFigures]:
    """Per code, plus ``"all"``.

    Precision counts the triaged findings still reported. Known bugs are every triaged finding
    marked true plus every known missed bug; a bug counts as found when a current finding
    matches it.
    """
    verdicts: dict[str, Counter] = defaultdict(Counter)
    for e, _ in cmp.matched:
        verdicts[e.code][e.verdict] += 1
    known: Counter = Counter(e.code for e in triaged if e.verdict == "true")
    known.update(e.code for e in missed)
    found: Counter = Counter(e.code for e, _ in cmp.matched if e.verdict == "true")
    found.update(e.code for e, _ in cmp.missed_found)
    out = {}
    for code in sorted(set(verdicts) | set(known)):
        v = verdicts[code]
        out[code] = RuleFigures(v["true"], v["false"], v["debatable"], known[code], found[code])
    out["all"] = RuleFigures(*(sum(getattr(r, a) for r in out.values()) for a in
                               ("true", "false", "debatable", "known_bugs", "bugs_found")))
    return out


def _ratio(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.2f}"


def render(cmp: Comparison, figs: dict[str, RuleFigures], n_findings: int, errors: list[str]) -> str:
    out = [f"findings reported: {n_findings}  (triaged: {len(cmp.matched)}, new: {len(cmp.new)}, "
           f"lost: {len(cmp.lost)}, known missed bugs now found: {len(cmp.missed_found)})", "",
           "code   true false debatable  precision   known-bugs found  recall"]
    for code, r in figs.items():
        out.append(f"{code:<6} {r.true:>4} {r.false:>5} {r.debatable:>9}  {_ratio(r.precision):>9}"
                   f"   {r.known_bugs:>10} {r.bugs_found:>5}  {_ratio(r.recall):>6}")
    if cmp.new:
        out += ["", f"NEW findings ({len(cmp.new)}), not in the triage:"]
        out += [f"  {f.repo} {_where(f)} {f.code} [{f.function}] {f.text}\n      {f.message}"
                for f in cmp.new]
    if cmp.lost:
        out += ["", f"LOST findings ({len(cmp.lost)}), triaged but no longer reported:"]
        out += [f"  {e.repo} {_where(e)} {e.code} ({e.verdict}) [{e.function}] {e.text}"
                for e in cmp.lost]
    if cmp.missed_found:
        out += ["", f"Known missed bugs now found ({len(cmp.missed_found)}):"]
        out += [f"  {e.repo} {_where(e)} {e.code} -> reported at line {f.line}"
                for e, f in cmp.missed_found]
    if errors:
        out += ["", f"ERRORS ({len(errors)}):"] + [f"  {e}" for e in errors]
    return "\n".join(out)


def _where(x: Finding | Entry) -> str:
    return f"{x.path}:cell {x.cell}:{x.line}" if x.cell is not None else f"{x.path}:{x.line}"


def skeleton(findings: list[Finding], commits: dict[str, str]) -> str:
    """TOML entries to paste into triage.toml for findings not yet triaged (verdict to fill)."""
    out = []
    for f in findings:
        out += ["[[finding]]",
                f"repo = {json.dumps(f.repo)}",
                f"commit = {json.dumps(commits.get(f.repo, ''))}",
                f"path = {json.dumps(f.path)}",
                f"line = {f.line}",
                *([f"cell = {f.cell}"] if f.cell is not None else []),
                f"code = {json.dumps(f.code)}",
                f"text = {json.dumps(f.text)}",
                f"function = {json.dumps(f.function)}",
                'verdict = "?"',
                f"why = {json.dumps('mllint: ' + f.message)}",
                ""]
    return "\n".join(out)


# ---------------------------------------------------------------- repositories


def locate(mirrors: Path, name: str) -> Path | None:
    """The git directory of ``owner/name`` under ``mirrors``."""
    owner, short = name.split("/", 1)
    for cand in (mirrors / f"{owner}+{short}" / "repo", mirrors / f"{owner}+{short}",
                 mirrors / owner / short, mirrors / short):
        for git_dir in (cand / ".git", cand):
            if (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir():
                return git_dir
    return None


def _git(git_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True,
                          capture_output=True, **kw)


def extract(git_dir: Path, commit: str, dest: Path) -> int:
    """Write the files mllint reads at ``commit`` under ``dest``; the number written.

    Snapshots may lack large blobs, so files are read one by one (``cat-file --batch``) rather
    than with ``git archive``, which stops at the first missing object.
    """
    listing = _git(git_dir, "ls-tree", "-r", "-z", commit).stdout.decode()
    wanted = {}
    for item in filter(None, listing.split("\0")):
        meta, path = item.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob" and mode != "120000" and (
                path.endswith(EXTRACT_SUFFIXES) or Path(path).name in EXTRACT_NAMES):
            wanted[sha + "\n"] = wanted.get(sha + "\n", []) + [path]
    if not wanted:
        return 0
    proc = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
                          input="".join(wanted).encode(), capture_output=True, check=True)
    data, pos, written = proc.stdout, 0, 0
    for sha in wanted:
        header_end = data.index(b"\n", pos)
        header = data[pos:header_end].split()
        pos = header_end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[2])
        blob = data[pos:pos + size]
        pos += size + 1
        for path in wanted[sha]:
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            written += 1
    return written


def lint(root: Path, repo: str, mllint: list[str]) -> tuple[list[Finding], list[str]]:
    """Run mllint from the repository's root; (findings, errors) with source context."""
    proc = subprocess.run([*mllint, "--format", "json", "--no-cache", "."], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1, 2):
        return [], [f"{repo}: mllint exited {proc.returncode}: {proc.stderr.strip()[-500:]}"]
    try:
        items = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return [], [f"{repo}: mllint printed no JSON: {proc.stderr.strip()[-500:]}"]
    findings, errors, cache = [], [], {}
    for d in items:
        path = Path(d["path"]).as_posix().removeprefix("./")
        if d["code"] is None:
            cell = f"cell {d['cell']}:" if d.get("cell") is not None else ""
            errors.append(f"{repo} {path}:{cell}{d['line']} {d['name']}: {d['message']}")
            continue
        cell = d.get("cell")
        text, function = source_context(root, path, d["line"], cache, cell)
        findings.append(Finding(repo, path, d["line"], d["code"], text, function, d["message"],
                                cell))
    return findings, errors


# ---------------------------------------------------------------- command line


def default_mllint() -> str:
    """The ``mllint`` beside this Python (its virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / "mllint"
    return str(beside) if beside.is_file() else (shutil.which("mllint") or "mllint")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mirrors", nargs="?",
                    default=os.environ.get("MLLINT_REALWORLD_MIRRORS", DEFAULT_MIRRORS))
    ap.add_argument("--repo", action="append", help="only this repository (repeatable)")
    ap.add_argument("--strict", action="store_true", help="exit 1 on new or lost findings")
    ap.add_argument("--keep", type=Path, help="extract here and keep it (default: a temp dir)")
    ap.add_argument("--skeleton", type=Path, help="write triage entries for new findings here")
    ap.add_argument("--json", type=Path, help="write the current findings here")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--triage", type=Path, default=TRIAGE)
    args = ap.parse_args(argv)

    mllint = shlex.split(os.environ.get("MLLINT", "")) or [default_mllint()]
    repos = load_manifest(args.manifest)
    if args.repo:
        unknown = set(args.repo) - {r.name for r in repos}
        if unknown:
            ap.error(f"not in the manifest: {', '.join(sorted(unknown))}")
        repos = [r for r in repos if r.name in args.repo]
    triaged, missed = load_triage(args.triage)
    mirrors = Path(args.mirrors)

    work = args.keep or Path(tempfile.mkdtemp(prefix="mllint-realworld-"))
    findings: list[Finding] = []
    errors: list[str] = []
    try:
        for r in repos:
            git_dir = locate(mirrors, r.name)
            if git_dir is None:
                errors.append(f"{r.name}: no mirror under {mirrors}")
                continue
            dest = work / r.name.replace("/", "+")
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            try:
                extract(git_dir, r.commit, dest)
            except subprocess.CalledProcessError as e:
                errors.append(f"{r.name}: cannot extract {r.commit}: {e.stderr.decode().strip()}")
                continue
            got, errs = lint(dest, r.name, mllint)
            findings += got
            errors += errs
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    names = {r.name for r in repos}
    triaged = [e for e in triaged if e.repo in names]
    missed = [e for e in missed if e.repo in names]
    cmp = compare(triaged, missed, findings)
    print(f"{len(repos)} repositories, command: {' '.join(mllint)} --format json --no-cache .")
    print(render(cmp, figures(cmp, triaged, missed), len(findings), errors))
    commits = {r.name: r.commit for r in repos}
    if args.skeleton:
        args.skeleton.write_text(skeleton(cmp.new, commits))
    if args.json:
        args.json.write_text(json.dumps([f.__dict__ for f in findings], indent=1))
    if args.strict and (cmp.new or cmp.lost or errors):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
