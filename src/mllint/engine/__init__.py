"""Linting one file: the prefilter, one libcst parse, one batched traversal of every rule.

- ``lint``: ``lint_text``/``lint_path``, suppressions, errors as results.
- ``traversal``: the rules' single batched traversal, without rebuilding the tree.
- ``scope`` / ``positions``: scope, qualified-name and position metadata, computed cheaply.
- ``libcst_support``: the libcst versions those fast paths are tested against.

The engine knows rules only through ``mllint.rule.Rule``; it never names one. Running many
files (processes, cache) is ``mllint.runner``'s job.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lint_path", "lint_text", "noqa_map"]


def __getattr__(name: str) -> Any:
    # Lazy: ``mllint.engine.libcst_support`` is imported by the CLI, which must not pull
    # in libcst before it knows that some file needs parsing.
    if name in __all__:
        from mllint.engine import lint

        return getattr(lint, name)
    raise AttributeError(f"module 'mllint.engine' has no attribute {name!r}")
