"""The project object rules ask about code outside their own file.

``project_for(path)`` gives a ``ProjectView``: the project of ``path`` seen from that
file. Each answer reads other modules' summaries (built once per process and remembered
by file size and modification time) and the view records every file an answer depended
on, with its digest, so a cached result can be checked against them later.

Nothing here imports or runs project code: modules are read as text and parsed with
``ast``. A file that cannot be read or parsed simply contributes nothing.
"""

from __future__ import annotations

import ast
import os
import re
import unicodedata
import warnings
from array import array
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from mllint.project.layout import (
    MAX_LISTED_FILES,
    find_root,
    python_files,
    resolve_module,
)
from mllint.gates.resolve import drop_caches
from mllint.project.roles import Role
from mllint.project.summaries import (
    RESUME_WORDS,
    CallSite,
    ClassSummary,
    FunctionSummary,
    LoadSite,
    ModuleSummary,
    Value,
    call_sites,
    digest_of,
    summarize,
)

#: Modules larger than this are not summarised (generated code, vendored bundles).
MAX_SUMMARY_BYTES = 2_000_000
#: How many module summaries a project keeps: memory stays flat however large the tree.
MAX_SUMMARIES = 256
#: How many modules' outlines, and (module, name) call lists, ``callers_elsewhere`` keeps.
MAX_OUTLINES = 4096
#: And how much source those summaries may stand for: a summary keeps its module's tree,
#: some 30 to 50 times the size of the source (256 large modules would be gigabytes).
MAX_SUMMARY_SOURCE = 3_000_000
#: Every word of a file, and whether a call follows it (``name(``: ``files_calling``).
_WORD = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")
_UNICODE_WORD = re.compile(r"\w+")
#: ``from . import x``, ``from .. import y``: an import of the package's own ``__init__``.
_RELATIVE_IMPORT = re.compile(rb"\bfrom[\s\\]*\.[\s\\.]*import\b")
#: How many factory calls deep a returned value is followed.
MAX_FOLLOW = 4
#: Calls that take an optimizer or a loss without clearing any gradient.
NEVER_CLEARS = frozenset({
    "step", "backward", "unscale_", "update", "scale", "clip_grad_norm_", "clip_grad_value_",
    "append", "print", "format", "log", "info", "debug", "warning", "len", "str", "repr",
    "isinstance", "getattr", "hasattr", "item", "state_dict", "load_state_dict",
})
#: Imported modules that never clear a user's gradients when handed an object.
_LIBRARIES = ("torch", "numpy", "math", "logging", "wandb", "tensorboard", "tqdm", "json",
              "os", "time", "builtins", "pickle", "random", "sys", "copy", "collections",
              "functools", "itertools", "typing", "dataclasses", "einops", "warnings", "re",
              "inspect", "operator")


_PLAIN_MODULE = frozenset({"torch.nn.Module", "torch.nn.modules.module.Module"})
#: Libraries of numbers, signals and images that build no torch module: a call of theirs
#: in a model class (``librosa.filters.mel(...)`` for a mel basis) adds no layer.
_NO_MODULE_LIBRARIES = ("numpy", "scipy", "librosa", "sklearn", "pandas", "PIL", "cv2",
                        "soundfile", "math", "random")


def _qualified(module: ModuleSummary, dotted: str) -> set[str]:
    """What ``dotted`` names through the module's imports (``nn.Module`` ->
    ``torch.nn.Module``)."""
    head, _, rest = dotted.partition(".")
    return {f"{q}.{rest}" if rest else q for q in module.imports.get(head, ())}


def _library(module: ModuleSummary, callee: str, libraries: tuple[str, ...] = _LIBRARIES) -> bool:
    """``callee`` comes from one of ``libraries`` (by this module's imports)."""
    head = callee.partition(".")[0]
    return any(q.lstrip(".").partition(".")[0] in libraries for q in module.imports.get(head, ()))


class LoadingModule:
    """A module of the project with checkpoint loads (``Project.load_sites``): what the
    questions about its loads read of it, without its tree."""

    __slots__ = ("delegates_training", "digest", "inference_script", "path", "trains")

    def __init__(self, summary: ModuleSummary) -> None:
        self.path = summary.path
        self.digest = summary.digest
        self.inference_script = summary.inference_script
        #: Its own code back-propagates or steps an optimizer.
        self.trains = summary.trains
        #: It calls a function of another module that does (made when first asked).
        self.delegates_training: bool | None = None


class _Outline:
    """What resolving a name in a module reads of it (``ProjectView._definition``): its
    path, imports and the names it defines, without its tree."""

    __slots__ = ("classes", "digest", "functions", "imports", "path")

    def __init__(self, summary: ModuleSummary) -> None:
        self.path = summary.path
        self.digest = summary.digest
        self.imports = summary.imports
        self.functions = frozenset(summary.functions)
        self.classes = frozenset(summary.classes)


class _TextIndex:
    """What the project's files say as text, read once: the names each calls, the words
    each holds that name a module or package of the project (so that the modules able to
    import a given one are found without parsing every file), its digest, and which files
    may hold checkpoint loads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Directories the listing leaves out that an import may still reach (``build``,
        #: a symlinked folder): their modules are not read, so they may import anything.
        self.hidden: list[Path] = []
        listing = list(python_files(root, self.hidden))
        #: The listing stopped short (``MAX_LISTED_FILES``): no file may be ruled out.
        self.complete = len(listing) < MAX_LISTED_FILES
        #: Every name an import of a project module may be written with (the parts of
        #: its path below the root): the only words ``importers`` looks up.
        self.names = {part for path in [*listing, *self.hidden]
                      for part in path.relative_to(root).parts}
        self.names |= {name[:-3] for name in self.names if name.endswith(".py")}
        ascii_names = {name.encode("ascii") for name in self.names if name.isascii()}
        self.files: list[Path] = []
        self.ids: dict[Path, int] = {}
        #: Each file's directory, as a string ending in a separator.
        self.dirs: list[str] = []
        self.digests: list[str] = []
        self.calls: dict[str, list[Path]] = {}
        words: dict[str, list[int]] = {}
        self.relative: list[int] = []  # files with ``from . import x``
        #: Files that may hold a load site (``load`` in their text): with whether their
        #: words already show a ``torch.load``.
        self.loading: list[tuple[Path, bool]] = []
        for path in listing:
            try:
                if path.stat().st_size > MAX_SUMMARY_BYTES:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            index = len(self.files)
            self.files.append(path)
            self.ids[path] = index
            self.dirs.append(str(path.parent) + os.sep)
            self.digests.append(digest_of(data))
            pairs = set(_WORD.findall(data))
            for word in {w for w, call in pairs if call}:
                self.calls.setdefault(word.decode("ascii"), []).append(path)
            everything = {w for w, _ in pairs}
            mine = {w.decode("ascii") for w in everything & ascii_names}
            if not data.isascii():
                text = unicodedata.normalize("NFKC", data.decode("utf-8", "replace"))
                mine.update(w for w in _UNICODE_WORD.findall(text) if w in self.names)
            for word in mine:
                words.setdefault(word, []).append(index)
            if _RELATIVE_IMPORT.search(data) or not data.isascii():
                self.relative.append(index)
            if b"load" in data:
                self.loading.append((path, _may_load_torch(data, everything)))
        self.words = {w: array("I", ids) for w, ids in words.items()}

    def importers(self, keys: set[tuple[Path, str | None]]) -> set[int]:
        """Files that may import a module importable by one of ``keys`` (see
        ``_import_keys``), as ``layout.resolve_module`` resolves an import: each import
        names the module from a directory above the importing file (or the project's
        ``src``), by a dotted path of identifiers whose first part is written in the
        importing file."""
        out: set[int] = set()
        src = self.root / "src"
        dirs = self.dirs
        for base, word in keys:
            if word is not None and word not in self.names:
                return set(range(len(self.files)))  # a module outside the listing
            candidates = self.relative if word is None else self.words.get(word, ())
            if base == src and word is not None:
                out.update(candidates)
                continue
            prefix = str(base) + os.sep
            out.update(i for i in candidates if dirs[i].startswith(prefix))
        return out


def _import_keys(root: Path, module: Path) -> list[tuple[Path, str | None]]:
    """The directories ``module`` can be imported from, each with the first part of the
    dotted name it is imported by there (``None``: ``from . import x`` in its package)."""
    keys: list[tuple[Path, str | None]] = []
    directory = module.parent
    if module.name == "__init__.py":
        if _inside(directory, root):
            keys.append((directory, None))
        name = directory.name
        directory = directory.parent
    elif module.name.endswith(".py"):
        name = module.name[:-3]
    else:
        return keys
    while name.isidentifier() and _inside(directory, root):
        keys.append((directory, name))
        if directory == root:
            break
        name = directory.name
        directory = directory.parent
    return keys


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


#: What joins two pieces of one string: implicit concatenation (``"res" "ume"``, also
#: across lines and comments in brackets) or a backslash line continuation in a string.
_STRING_GAP = re.compile(
    rb"""["']{1,3}(?:[ \t\f\r\n]|\\\r?\n|\#[^\r\n]*(?![^\r\n]))*[rRbBuUfF]{0,2}["']{1,3}"""
    rb"""|\\\r?\n""")
#: The words of ``RESUME_WORDS``, spelt out (each a fast substring test), for text
#: turned to lower case (as ``re.IGNORECASE`` matches ASCII letters).
_RESUME_LITERALS = tuple(sorted({
    spelt.encode("ascii") for alternative in RESUME_WORDS.pattern.split("|")
    for spelt in (alternative.replace("_?", "_"), alternative.replace("_?", ""))}))
#: Escapes that may spell any letter in a string (``"\x72esume"``).
_LETTER_ESCAPE = re.compile(rb"\\[0-7xuUN]")


#: A call of something named ``load`` (``torch.load(``, also ``(torch.load)(``).
_LOAD_CALL = re.compile(rb"\bload(?:[ \t\f\r\n\\)]|#[^\r\n]*(?![^\r\n]))*\(")
_GAP_WORDS = rb"(?:[ \t\f\r\n\\]|#[^\r\n]*(?![^\r\n]))+"
#: Names an import binds to torch or its ``serialization`` module (``import torch as T``),
#: and an import of ``load`` under another name (``from torch import load as L``).
_TORCH_ALIAS = re.compile(rb"\b(?:torch|serialization)" + _GAP_WORDS + rb"as" + _GAP_WORDS
                          + rb"([A-Za-z_][A-Za-z0-9_]*)")
_LOAD_ALIAS = re.compile(rb"\bload" + _GAP_WORDS + rb"as\b")
_FROM_TORCH = re.compile(rb"\bfrom(?:[ \t\f]|\\\r?\n)+torch\b")
_IDENTIFIER_END = re.compile(rb"[A-Za-z0-9_]+$")


def _may_load_torch(data: bytes, words: set[bytes]) -> bool:
    """The file may call ``torch.load`` (``summaries._loads``): a call of ``load``
    through a name an import binds to torch (``torch.load(``, ``T.load(``,
    ``serialization.load(``), a bare ``load(`` or a call of a name ``load`` is imported
    as. Anything written otherwise (a chain across lines, a call of a call's result) is
    taken to be one. ``words``: the file's words."""
    if not data.isascii():
        # Names are read as Python reads them (``ｔｏｒｃｈ`` is ``torch``).
        data = unicodedata.normalize("NFKC", data.decode("utf-8", "replace")).encode(
            "utf-8", "replace")
        words = {w for w, _ in _WORD.findall(data)}
    if b"torch" not in words or b"load" not in words:
        return False
    if _LOAD_ALIAS.search(data):
        return True  # ``from torch import load as L``: ``L(...)`` may load
    heads = {b"torch", b"serialization", *_TORCH_ALIAS.findall(data)}
    for match in _LOAD_CALL.finditer(data):
        # What precedes ``load``, on its line: ``torch.load``, ``T.serialization.load``.
        start = match.start()
        line = data[max(0, start - 512):start]
        cut = max(line.rfind(b"\n"), line.rfind(b"\r"))
        if cut < 0 and start > 512:
            return True  # a very long line: not read here
        chain = line[cut + 1:].rstrip(b" \t\f")
        if not chain.strip():
            return True  # what precedes ``load`` is on another line: not read here
        if not chain.endswith(b"."):
            # A bare ``load(``: ``torch.load`` only if imported from torch (as itself: an
            # import under another name is taken above).
            if re.search(rb"(^|[ \t\f])def$", chain) or not _FROM_TORCH.search(data):
                continue
            return True
        chain = chain[:-1]
        while True:
            chain = chain.rstrip(b" \t\f")
            word = _IDENTIFIER_END.search(chain)
            if word is None or word.group()[:1].isdigit():
                return True  # ``f().load(``, or a chain across lines: not read here
            rest = chain[:word.start()].rstrip(b" \t\f")
            if rest.endswith(b"."):
                chain = rest[:-1]
                continue
            if rest[-1:] in (b")", b"]", b"}", b"\\", b"'", b'"') or word.group() in heads:
                return True
            break
    return False


def _may_resume(data: bytes) -> bool:
    """The file may speak of resuming in an ``if`` (``summaries._resume_paths``): a word of
    ``RESUME_WORDS`` in its text, also once the pieces of its strings are joined."""
    lower = data.lower()
    if any(word in lower for word in _RESUME_LITERALS) or _LETTER_ESCAPE.search(data):
        return True
    joined = _STRING_GAP.sub(b"", lower)
    if any(word in joined for word in _RESUME_LITERALS):
        return True
    if data.isascii():
        return False
    # A word with a letter only Unicode matches (``ſ`` for ``s``), or a name Python reads
    # in its normal form: on the lines that are not ASCII.
    for line in data.splitlines():
        if not line.isascii():
            text = line.decode("utf-8", "replace")
            if RESUME_WORDS.search(text) or RESUME_WORDS.search(
                    unicodedata.normalize("NFKC", text)):
                return True
    return False


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        #: Least recently used first; at most ``MAX_SUMMARIES``, standing for at most
        #: ``MAX_SUMMARY_SOURCE`` bytes of source (each keeps its tree). Values: the
        #: file's (size, mtime), its summary, and whether the tree is the project's own
        #: (read here, not seeded by the linter).
        self._summaries: OrderedDict[
            Path, tuple[tuple[int, int], ModuleSummary | None, bool]] = OrderedDict()
        self._held = 0  # bytes of source behind the kept summaries
        self._load_sites: list[tuple[LoadingModule, LoadSite]] | None = None
        #: What callers_elsewhere reads of a module, kept without the tree (``sites_named``).
        self._outlines: OrderedDict[Path, _Outline] = OrderedDict()
        self._named: OrderedDict[tuple[Path, str], tuple[
            tuple[int, int], tuple[_Outline, tuple[CallSite, ...]] | None]] = OrderedDict()
        self._text: _TextIndex | None = None
        #: target path -> the files that may reach it through imports (``_reaching``).
        self._reach: OrderedDict[Path, set[Path] | None] = OrderedDict()
        #: Bumped when a module already read is found changed (a process that lints the
        #: same project again, e.g. an editor's): the project-wide indexes are remade.
        self._changes = 0
        self._indexed_at = 0
        #: (module digest, dotted name) -> module path or None: import resolution probes
        #: the filesystem, and the same few names are asked about again and again.
        self.module_paths: dict[tuple[str, str, int], Path | None] = {}

    def summary(self, path: Path) -> ModuleSummary | None:
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        known = self._summaries.get(path)
        if known is not None and known[0] == stamp:
            self._summaries.move_to_end(path)
            return known[1]
        summary = _read(path) if st.st_size <= MAX_SUMMARY_BYTES else None
        self._remember(path, stamp, summary, True)
        return summary

    def _remember(self, path: Path, stamp: tuple[int, int], summary: ModuleSummary | None,
                  owned: bool) -> None:
        known = self._summaries.pop(path, None)
        if known is not None:
            if known[0] != stamp:
                self._changes += 1
            self._forget(known)
        self._summaries[path] = (stamp, summary, owned)
        if summary is not None:
            self._held += stamp[0]
        while len(self._summaries) > 1 and (len(self._summaries) > MAX_SUMMARIES
                                            or self._held > MAX_SUMMARY_SOURCE):
            self._forget(self._summaries.popitem(last=False)[1])

    def _forget(self, entry: tuple[tuple[int, int], ModuleSummary | None, bool]) -> None:
        stamp, summary, owned = entry
        if summary is None:
            return
        self._held -= stamp[0]
        if owned:
            # The tree's node caches (``gates.resolve.nodes``) hold the tree itself: drop
            # them, so that the tree goes with its summary instead of waiting for the
            # cycle collector (hundreds of megabytes of trees, on a large project).
            drop_caches(summary.tree)

    def call_sites(self, summary: ModuleSummary) -> tuple[CallSite, ...]:
        """The calls of ``summary``'s module (``summaries.call_sites``), read once."""
        found = getattr(summary, "_call_sites", None)
        if found is None:
            found = summary._call_sites = tuple(call_sites(summary.tree))  # type: ignore[attr-defined]
        return found

    def seed(self, path: Path, tree: ast.Module, text: str) -> None:
        """The summary of ``path`` from a tree already parsed (the prefilter's), so the
        file being linted is not read and parsed a second time."""
        try:
            st = path.stat()
        except OSError:
            return
        stamp = (st.st_size, st.st_mtime_ns)
        known = self._summaries.get(path)
        if known is None or known[0] != stamp:
            digest = digest_of(text.encode("utf-8", "surrogateescape"))
            self._remember(path, stamp, summarize(str(path), tree, digest), False)

    def sites_named(self, path: Path, method: str,
                    ) -> tuple[_Outline, tuple[CallSite, ...]] | None:
        """The module at ``path`` (what name resolution reads of it) and its calls of
        something named ``method`` (``x.method(...)``, ``method(...)``, or a name an import
        binds to a ``method``: ``from engine import evaluate as ev``), in their order; made
        from its summary once and kept without its tree (``None``: it cannot be read)."""
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        key = (path, method)
        known = self._named.get(key)
        if known is not None and known[0] == stamp:
            self._named.move_to_end(key)
            return known[1]
        summary = self.summary(path)
        found = None
        if summary is not None:
            outline = self._outlines.get(path)
            if outline is None or outline.digest != summary.digest:
                outline = self._outlines[path] = _Outline(summary)
            self._outlines.move_to_end(path)
            while len(self._outlines) > MAX_OUTLINES:
                self._outlines.popitem(last=False)
            aliases = {alias for alias, names in summary.imports.items()
                       if any(n.rsplit(".", 1)[-1] == method for n in names)}
            found = outline, tuple(
                site for site in self.call_sites(summary)
                if site.callee.rsplit(".", 1)[-1] == method or site.callee in aliases)
        self._named[key] = (stamp, found)
        while len(self._named) > MAX_OUTLINES:
            self._named.popitem(last=False)
        return found

    def _text_index(self) -> _TextIndex:
        """The text of every file, read once (on the first whole-project question)."""
        self._drop_stale_indexes()
        if self._text is None:
            self._text = _TextIndex(self.root)
        return self._text

    def files_calling(self, name: str) -> list[Path]:
        """Files of the project whose text calls something named ``name`` (an index of
        call names built on the first question, one read of every file)."""
        return self._text_index().calls.get(name, [])

    def digest(self, path: Path) -> str | None:
        """The digest of a file of the project as the text index read it."""
        text = self._text_index()
        index = text.ids.get(path)
        return None if index is None else text.digests[index]

    def reaching(self, target: Path) -> set[Path] | None:
        """The files of the project whose imports may lead to ``target`` (through at
        most ``MAX_FOLLOW`` re-exporting modules): only from these can a name resolve to
        a definition of ``target`` (``ProjectView._definition``). ``None``: any file may
        (the listing of the project stopped short)."""
        text = self._text_index()
        if target in self._reach:
            self._reach.move_to_end(target)
            return self._reach[target]
        found: set[Path] | None = None
        if text.complete:
            # Modules the listing does not show may import anything: whoever may import
            # one of them is taken to reach ``target`` as well.
            keys = {key for hidden in text.hidden
                    for key in _import_keys(self.root, hidden / "__init__.py")}
            keys.update(_import_keys(self.root, target))
            seen_keys = set(keys)
            ids: set[int] = set()
            for _ in range(MAX_FOLLOW + 1):
                frontier = text.importers(keys) - ids
                if not frontier:
                    break
                ids |= frontier
                keys = {key for i in frontier for key in _import_keys(self.root, text.files[i])
                        } - seen_keys
                seen_keys |= keys
            found = {text.files[i] for i in ids}
        self._reach[target] = found
        while len(self._reach) > 16:
            self._reach.popitem(last=False)
        return found

    def load_sites(self) -> list[tuple[LoadingModule, LoadSite]]:
        """Every ``torch.load`` of the project (files that cannot hold one are not
        parsed); each with what is asked of its module, without the module's tree."""
        text = self._text_index()
        if self._load_sites is None:
            sites = []
            for path, loads_torch in text.loading:
                # Load sites are ``torch.load`` calls (their words are in the file's text)
                # and files named in an ``if`` that speaks of resuming.
                if not loads_torch:
                    try:
                        if not _may_resume(path.read_bytes()):
                            continue
                    except OSError:
                        continue
                summary = self.summary(path)
                if summary is not None and summary.loads:
                    module = LoadingModule(summary)
                    sites.extend((module, site) for site in summary.loads)
            self._load_sites = sites
        self._indexed_at = self._changes  # what was read while indexing is current
        return self._load_sites

    def _drop_stale_indexes(self) -> None:
        if self._indexed_at != self._changes:
            self._load_sites = self._text = None
            self._reach.clear()
            self._indexed_at = self._changes


class ProjectView:
    """The project as seen from one of its files; records what each answer read."""

    def __init__(self, project: Project, path: Path) -> None:
        self.project = project
        self.path = path
        #: Files (other than this one) whose content an answer depended on -> digest.
        self.read: dict[str, str] = {}

    def _summary(self, path: Path) -> ModuleSummary | None:
        summary = self.project.summary(path)
        if summary is not None and path != self.path:
            self.read[str(path)] = summary.digest
        return summary

    # -- functions ---------------------------------------------------------------------

    def function(self, dotted: str) -> tuple[ModuleSummary, FunctionSummary] | None:
        """The project function a call of ``dotted`` (as written in this file) runs."""
        own = self._summary(self.path)
        return None if own is None else self._resolve(own, dotted, MAX_FOLLOW)

    def _resolve(self, summary: ModuleSummary, dotted: str,
                 depth: int) -> tuple[ModuleSummary, FunctionSummary] | None:
        found = self._definition(summary, dotted, depth)
        if found is None or found[1] not in found[0].functions:
            return None
        return found[0], found[0].functions[found[1]]

    def _class(self, summary: ModuleSummary, dotted: str) -> tuple[ModuleSummary, ClassSummary] | None:
        found = self._definition(summary, dotted, MAX_FOLLOW)
        if found is None or found[1] not in found[0].classes:
            return None
        return found[0], found[0].classes[found[1]]

    def _definition(self, summary: ModuleSummary, dotted: str,
                    depth: int) -> tuple[ModuleSummary, str] | None:
        """The module defining what ``dotted`` names in ``summary``'s module, and its
        qualified name there (a function, a method or a class)."""
        if dotted in summary.functions or dotted in summary.classes:
            return summary, dotted
        head, _, rest = dotted.partition(".")
        for qualified in sorted(summary.imports.get(head, ())):
            full = qualified + ("." + rest if rest else "")
            level = len(full) - len(full.lstrip("."))
            parts = full.lstrip(".").split(".")
            for cut in range(len(parts) - 1, -1 if level else 0, -1):
                module = self._module(summary, ".".join(parts[:cut]), level)
                if module is None:
                    continue
                target = self._summary(module)
                if target is None:
                    break
                name = ".".join(parts[cut:])
                if name in target.functions or name in target.classes:
                    return target, name
                if depth > 0 and name.partition(".")[0] in target.imports:
                    # Re-exported: ``models/__init__.py`` doing ``from .factory import build``.
                    return self._definition(target, name, depth - 1)
                break
        return None

    def _module(self, summary: ModuleSummary, name: str, level: int) -> Path | None:
        key = (summary.path, name, level)
        paths = self.project.module_paths
        if key not in paths:
            paths[key] = resolve_module(self.project.root, Path(summary.path), name, level)
        return paths[key]

    def returned_losses(self, dotted: str) -> frozenset[int]:
        """Positions of what a call of ``dotted`` returns that hold a loss tensor
        (``FunctionSummary.loss_positions``); empty when the project does not tell."""
        found = self.function(dotted)
        return frozenset() if found is None else found[1].loss_positions

    def returned_roles(self, dotted: str) -> tuple[frozenset[Role], ...]:
        """The roles of what a call of ``dotted`` returns, one entry per tuple position
        (one entry for a plain value); empty when the project does not tell."""
        return tuple(frozenset(v.role for v in values if v.role is not None)
                     for values in self.returned_values(dotted))

    def returned_values(self, dotted: str) -> tuple[frozenset[Value], ...]:
        """Like ``returned_roles``, with each role's constructor (``Value.kind``)."""
        found = self.function(dotted)
        if found is None:
            return ()
        return self._returned(found[0], found[1], MAX_FOLLOW)

    def _returned(self, module: ModuleSummary, func: FunctionSummary,
                  depth: int) -> tuple[frozenset[Value], ...]:
        if depth <= 0 or not func.returns:
            return ()
        width = max(len(r) for r in func.returns)
        out: list[set[Value]] = [set() for _ in range(width)]
        for returned in func.returns:
            if len(returned) != width:
                continue
            for i, values in enumerate(returned):
                for value in values:
                    out[i] |= self._values_of(module, value, depth)
        return tuple(frozenset(s) for s in out)

    def _values_of(self, module: ModuleSummary, value: Value, depth: int) -> set[Value]:
        """The role-bearing values ``value`` stands for."""
        if value.role is not None:
            return {value}
        if value.call is not None:
            target = self._resolve(module, value.call, MAX_FOLLOW)
            if target is not None:
                values = self._returned(target[0], target[1], depth - 1)
                if value.position is not None:
                    return set(values[value.position]) if value.position < len(values) else set()
                return set(values[0]) if len(values) == 1 else set()
            if value.position is not None:
                return set()
            return set(module.globals.get(value.call, ()))
        return set()

    def may_clear_gradients(self, dotted: str) -> bool | None:
        """Whether the project function a call of ``dotted`` runs may clear gradients,
        itself or through what it hands its parameters to; ``None`` when the call runs
        no function of the project (a library's may do anything)."""
        found = self.function(dotted)
        if found is None:
            return None
        return self._may_clear(found[0], found[1], MAX_FOLLOW, set())

    def _may_clear(self, module: ModuleSummary, func: FunctionSummary, depth: int,
                   seen: set[tuple[str, str]]) -> bool:
        if func.clears:
            return True
        seen.add((module.path, func.qualname))
        for callee in func.forwards:
            if callee.rsplit(".", 1)[-1] in NEVER_CLEARS:
                continue
            target = self._resolve(module, callee, MAX_FOLLOW)
            if target is None:
                if not _library(module, callee):
                    return True  # code the project does not show may clear
                continue
            if (target[0].path, target[1].qualname) in seen or depth <= 0:
                continue
            if self._may_clear(target[0], target[1], depth - 1, seen):
                return True
        return False

    def callers_elsewhere(self, qualname: str) -> list[tuple[ModuleSummary, CallSite]]:
        """Calls, in other modules of the project, of this file's top-level function
        ``qualname``, or of its method ``Class.method`` on an instance built there
        (``executor = Executor(); executor.train(model, optimizer, loader)``)."""
        owner, _, method = qualname.rpartition(".")
        if "." in owner:
            return []  # a method of a nested class, or a function nested in a function
        out = []
        # A call resolves to this file only in a module whose imports lead here: the
        # others are not parsed, only their digests recorded (as if read, so that a
        # cached result still depends on them).
        reaching = self.project.reaching(self.path)
        for path in self.project.files_calling(method):
            if path == self.path:
                continue
            if reaching is not None and path not in reaching:
                digest = self.project.digest(path)
                if digest is not None:
                    self.read[str(path)] = digest
                continue
            found_sites = self.project.sites_named(path, method)
            if found_sites is None:
                continue
            outline, sites = found_sites
            self.read[str(path)] = outline.digest
            for site in sites:
                if owner:
                    calls = site.callee.rsplit(".", 1)[-1] == method and \
                        self._instance_of(outline, site, owner)
                else:
                    found = self._definition(outline, site.callee, MAX_FOLLOW)
                    calls = found is not None and Path(found[0].path) == self.path \
                        and found[1] == qualname
                # The whole summary (read again if it was let go) for what callers ask.
                caller = self.project.summary(path) if calls else None
                if caller is not None:
                    out.append((caller, site))
        return out

    def _instance_of(self, summary: ModuleSummary, site: CallSite, owner: str) -> bool:
        """The receiver of the method call ``site`` is built by this file's class
        ``owner`` (every value it may hold is a call of that class)."""
        if "." not in site.callee or not site.receiver:
            return False
        for value in site.receiver:
            found = self._definition(summary, value.call, MAX_FOLLOW) if value.call else None
            if found is None or Path(found[0].path) != self.path or found[1] != owner:
                return False
        return True

    def called_in_loop_elsewhere(self, qualname: str) -> bool:
        """Another module of the project calls this file's top-level function
        ``qualname`` inside a loop (``for epoch in ...: fit_one_epoch(...)``)."""
        return any(site.in_loop for _, site in self.callers_elsewhere(qualname))

    def param_roles(self, qualname: str, index: int, name: str) -> frozenset[Role]:
        """The roles of what callers in other modules pass for parameter ``name`` (at
        ``index``) of this file's top-level function ``qualname``."""
        return frozenset(v.role for v in self.param_values(qualname, index, name)
                         if v.role is not None)

    def param_values(self, qualname: str, index: int, name: str) -> frozenset[Value]:
        """The role-bearing values (with their constructors) that callers in other
        modules pass for parameter ``name`` (at ``index``) of this file's top-level
        function ``qualname``."""
        found: set[Value] = set()
        for module, site in self.callers_elsewhere(qualname):
            values = dict(site.kwarg_values).get(name)
            if values is None and index < len(site.arg_values):
                values = site.arg_values[index]
            for value in values or ():
                found |= self._values_of(module, value, MAX_FOLLOW)
        return frozenset(found)

    def relative(self, path: str) -> str:
        """``path`` as shown in messages: relative to the project root."""
        try:
            return str(Path(path).relative_to(self.project.root))
        except ValueError:
            return path

    # -- models --------------------------------------------------------------------------

    def class_mode_dependent(self, dotted: str) -> bool | None:
        """Whether instances of the project class ``dotted`` (as written in this file)
        compute differently in training and eval mode: True (a dropout or batch-norm
        layer, or ``self.training``, in it or in a project class it is built from), False
        (a plain ``nn.Module`` built only from torch layers without such behaviour), None
        (not a project class, or built from code the project does not show)."""
        own = self._summary(self.path)
        found = None if own is None else self._class(own, dotted)
        if found is None:
            return None
        return self._mode_dependent(found[0], found[1], MAX_FOLLOW, set())

    def class_derives(self, dotted: str, pred: Callable[[frozenset[str]], bool]) -> bool | None:
        """Whether the project class ``dotted`` (as written in this file) has a base class
        whose qualified names satisfy ``pred`` (``nn.Module``), itself or through project
        base classes; None when it is no project class or a base is out of sight."""
        own = self._summary(self.path)
        found = None if own is None else self._class(own, dotted)
        if found is None:
            return None
        return self._derives(*found, pred, MAX_FOLLOW)

    def _derives(self, module: ModuleSummary, cls: ClassSummary,
                 pred: Callable[[frozenset[str]], bool], depth: int) -> bool | None:
        if pred(cls.base_qualified):
            return True
        result: bool | None = False
        for base in cls.bases:
            inner = self._class(module, base) if depth > 0 else None
            sub = None if inner is None else self._derives(*inner, pred, depth - 1)
            if sub:
                return True
            if sub is None:
                result = None
        return result

    def _mode_dependent(self, module: ModuleSummary, cls: ClassSummary, depth: int,
                        seen: set[tuple[str, str]]) -> bool | None:
        if cls.mode_layers:
            return True
        if depth <= 0 or (module.path, cls.qualname) in seen:
            return None
        seen.add((module.path, cls.qualname))
        result: bool | None = False
        for base in cls.bases:
            if _qualified(module, base) & _PLAIN_MODULE:
                continue
            inner = self._class(module, base)
            sub = None if inner is None else self._mode_dependent(*inner, depth - 1, seen)
            if sub:
                return True
            if sub is None:
                result = None
        for part in cls.parts:
            if _library(module, part) or _library(module, part, _NO_MODULE_LIBRARIES):
                continue
            inner = self._class(module, part)
            sub = None if inner is None else self._mode_dependent(*inner, depth - 1, seen)
            if sub:
                return True
            if sub is None:
                result = None
        return result

    # -- checkpoints -------------------------------------------------------------------

    def resuming_loads(self) -> list[tuple[LoadingModule, LoadSite]]:
        """Checkpoint loads in code that resumes training: in a module that trains, in a
        function (or top-level script) that speaks of resuming or loads before it trains."""
        out = []
        for module, site in self.project.load_sites():
            if Path(module.path) != self.path:
                self.read[module.path] = module.digest
            if (site.resumes or site.before_training) and not module.inference_script \
                    and self._trains(module):
                out.append((module, site))
        return out

    def inference_loads(self, wanted: Callable[[LoadSite], bool] = lambda site: True,
                        ) -> list[tuple[LoadingModule, LoadSite]]:
        """Checkpoint loads in scripts that only use a trained model (of those ``wanted``
        picks: whether a module trains through another module's function is asked only of
        the loads that matter)."""
        return [(m, site) for m, site in self.project.load_sites()
                if wanted(site) and (m.inference_script or not self._trains(m))]

    def _trains(self, module: LoadingModule) -> bool:
        """The module trains: its own code back-propagates or steps, or it calls a
        function of another module of the project that does (``train.py`` running
        ``utils.fit_one_epoch(...)`` every epoch)."""
        if module.trains:
            return True
        known = module.delegates_training
        if known is None:
            known = False
            summary = self.project.summary(Path(module.path))
            for site in self.project.call_sites(summary) if summary is not None else ():
                found = self._resolve(summary, site.callee, MAX_FOLLOW)
                if found is not None and found[0] is not summary and found[1].trains:
                    known = True
                    break
            module.delegates_training = known
        return known


def _read(path: Path) -> ModuleSummary | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    tree = _tree(data)
    return None if tree is None else summarize(str(path), tree, digest_of(data))


def _tree(data: bytes) -> ast.Module | None:
    try:
        text = data.decode("utf-8-sig")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None


_PROJECTS: dict[Path, Project] = {}


def project_for(path: str | os.PathLike[str], tree: ast.Module | None = None,
                text: str | None = None) -> ProjectView | None:
    """The project of the file at ``path``; ``None`` for a path that is no file. ``tree``
    and ``text``, when given, are the file's own, already parsed."""
    real = Path(os.path.abspath(path))
    if not real.is_file():
        return None
    root = find_root(real)
    project = _PROJECTS.get(root)
    if project is None:
        project = _PROJECTS[root] = Project(root)
    if tree is not None and text is not None:
        project.seed(real, tree, text)
    return ProjectView(project, real)
