"""The project-wide model of the training code: what each module defines, which role each
value plays (optimizer, model, loader, loss, ...), and how modules import one another.

Rules see one file at a time, but training code is spread over ``main.py``, ``engine.py``,
``models/`` and ``utils.py``. This package answers the questions a rule cannot answer from
its own file: "what does ``create_optimizer(args, model)`` return?", "does the project load
this checkpoint back to resume training?". It reads other modules with Python's own
``ast`` (never libcst, never by importing or running them), one summary per module, built
on demand and remembered by content.

- ``layout``: where the project is, and which file an import names.
- ``roles``: the roles a value can play and the evidence for each.
- ``summaries``: one module read into what rules ask of it (functions, returns, loads).
- ``model``: the project object rules query, with the files each answer depended on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Project", "ProjectView", "Role", "project_for"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the stdlib-only gates can import ``project.roles`` without pulling in
    # the model (which imports the gates' constants in turn).
    if name in ("Project", "ProjectView", "project_for"):
        from mllint.project import model

        return getattr(model, name)
    if name == "Role":
        from mllint.project.roles import Role

        return Role
    raise AttributeError(name)
