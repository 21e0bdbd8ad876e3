"""Which libcst versions mllint's fast paths are tested against, and the fallback outside.

``engine.scope``, ``engine.positions`` and ``engine.traversal`` stand in for libcst's own metadata
providers and batched visit. They import libcst's private modules and read the source
of its node classes, so they give libcst's answers only for the libcst versions the
test suite ran against (``TESTED``, also the bounds of the dependency in
``pyproject.toml``). With any other version the engine uses libcst's own providers and
traversal (slower, never wrong), and the command line says so once.
"""

from __future__ import annotations

import functools
import re
import threading

#: Lowest and highest libcst release the test suite ran against (both inclusive).
TESTED = ((1, 1, 0), (1, 9, 0))


def _parse(version: str) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return None if m is None else tuple(int(g or 0) for g in m.groups())


def installed_version() -> str | None:
    try:
        # Written into the package by its build: no scan of the installed distributions,
        # which costs a one-file run (pre-commit) about a twentieth of its time.
        from libcst._version import __version__
        return str(__version__)
    except ImportError:
        pass
    import importlib.metadata
    try:
        return importlib.metadata.version("libcst")
    except importlib.metadata.PackageNotFoundError:
        return None


def is_tested(version: str | None) -> bool:
    parsed = None if version is None else _parse(version)
    low, high = TESTED
    # A patch release of the highest tested minor is the same code to us.
    return parsed is not None and low <= parsed and parsed[:2] <= high[:2]


def warning(version: str | None) -> str | None:
    """The one-line warning for an untested libcst, else ``None``."""
    if is_tested(version):
        return None
    low, high = (".".join(map(str, v)) for v in TESTED)
    return (f"mllint: libcst {version} is outside the tested range {low} to {high}; "
            "using libcst's own (slower) metadata providers and traversal")


@functools.lru_cache(maxsize=1)
def fast_paths_enabled() -> bool:
    """Whether the engine may use ``engine.scope``, ``engine.positions`` and ``engine.traversal``."""
    if not is_tested(installed_version()):
        return False
    try:
        from mllint.engine import positions, scope, traversal  # noqa: F401
    except ImportError:  # a private module moved: fall back rather than fail
        return False
    return True


def _unchecked(self: object) -> None:
    """A node's ``__post_init__`` that leaves out libcst's ``_validate``."""


_parsing = threading.Lock()


def parse_module(text: str):  # -> libcst.Module (libcst is imported only when parsing)
    """``libcst.parse_module(text)``, without checking each node as it is built.

    libcst validates every node in ``CSTNode.__post_init__`` (a sixth of the parse: the
    tree of a large module is hundreds of thousands of nodes). The checks are for trees
    that code builds by hand; the parser builds only what the grammar allows (libcst's
    own source notes the check could be skipped for a parsed file), and mllint parses
    only what Python's parser accepted first. With a tested libcst (see above) the check
    is off while the parser runs, and back on after; nodes other threads build in that
    moment are not checked either (mllint's own threads build none meanwhile).
    """
    import libcst as cst

    if not fast_paths_enabled():
        return cst.parse_module(text)
    base = cst.CSTNode
    with _parsing:
        checked = base.__dict__["__post_init__"]
        base.__post_init__ = _unchecked  # type: ignore[method-assign]
        try:
            return cst.parse_module(text)
        finally:
            base.__post_init__ = checked  # type: ignore[method-assign]
