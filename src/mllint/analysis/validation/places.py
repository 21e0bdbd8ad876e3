"""Where an evaluation runs relative to the training loop (ML007).

Training accuracy measured *beside* a held-out evaluation is fine. But a held-out
evaluation elsewhere does not excuse a per-epoch validation on the training data when
it never runs in that training loop:

* on another branch: ``if args.evaluate: validate(val_loader); return`` before the loop,
  or the ``else`` of the ``if`` that holds the loop - the training run itself measures
  only training data;
* at another stage (after the loop, a final test) - then only when the per-epoch number
  is used as a validation: the evaluation is named so (``validate``), its result is
  (``val_acc``), or it selects a model (compared with a ``best`` value, handed to a
  scheduler's or early stopper's ``step``).

The *training loop* of an evaluation is the outermost loop around it that trains
(back-propagates or steps, itself or through same-module helpers) or calls a function
named for training (``train_one_epoch``, ``fit``). Held-out evaluations are placed in
that loop's function by following the same-module calls that reach them; one that
cannot be placed there excuses the evaluation, as before.
"""

from __future__ import annotations

import ast
import re

from mllint.analysis.validation.facts import CallRec, Loop, Scope
from mllint.analysis.validation.names import is_train_name, is_val_name
from mllint.analysis.validation.passes import ValidationAnalysis

#: Where an evaluation happens: the outermost call handing the data in, or the pass's
#: own loop or forward call.
Site = CallRec | Loop

_DEPTH = 4
#: ``train``, ``train_one_epoch``, ``_train_epoch``, ``fit``: what a training loop calls.
_TRAINER = re.compile(r"(?i)^_*(?:train|fit)(?:_|$)")
#: An evaluation named as a validation (not ``evaluate``/``test``, often a final stage).
_VALIDATION = re.compile(r"(?i)^_*(?:run_|do_)?(?:validate|validation|val)(?:_|$)")
#: A result named as a validation metric: ``val_acc``, ``valid_loss``, ``valAcc``.
_VALIDATION_RESULT = re.compile(r"(?:^|_)(?i:val|valid|validation)(?:_|$)|^(?:val|valid)[A-Z0-9]")
#: Lines after the evaluation searched for a use that selects a model.
_SELECTION_WINDOW = 20
_EXITS = frozenset({"sys.exit", "exit", "quit", "os._exit"})


class Places:
    def __init__(self, va: ValidationAnalysis) -> None:
        self.va = va

    def held_out_apart(self, site: Site, heldout: list[Site]) -> str | None:
        """``None`` when some held-out evaluation runs alongside ``site`` (in its training
        loop, or where that cannot be told); else, in words, where they run instead."""
        loop = self.training_loop(site)
        if loop is None:
            return None
        apart: list[tuple[str, Site]] = []
        for h in heldout:
            placed = self._in_scope(h, loop.scope, 0)
            if placed is None or any(_within(p, loop) for p in placed):
                return None
            kind = "branch" if all(self._other_branch(p, loop) for p in placed) else "stage"
            if kind == "stage" and not self._selects(site):
                return None
            apart.append((kind, placed[0]))
        kind, where = min(apart, key=lambda a: a[0] != "branch")
        line = _line(where)
        if kind == "branch":
            return (f"the held-out evaluation (line {line}) runs only on another branch, "
                    f"never in the training loop (line {loop.pos[0]})")
        return (f"the held-out evaluation (line {line}) runs only outside the training loop "
                f"(line {loop.pos[0]}), so this per-epoch validation selects the model on "
                "training data")

    # -- the training loop -----------------------------------------------------------------

    def training_loop(self, site: Site) -> Loop | None:
        """The outermost loop around ``site`` (in its function) that trains."""
        loops = list(site.loops) if isinstance(site, CallRec) else _parents(site)[::-1]
        for loop in loops:  # outermost first
            if self.va.loop_trains(loop) or any(
                c.func and _TRAINER.match(c.func.rpartition(".")[2]) for c in loop.calls
            ):
                return loop
        return None

    def _in_scope(self, site: Site, scope: Scope, depth: int) -> list[Site] | None:
        """``site`` itself if it is in ``scope``, else the calls in ``scope`` that reach it
        through same-module helpers; ``None`` when no call path reaches ``scope``."""
        if site.scope is scope:
            return [site]
        if depth >= _DEPTH:
            return None
        out: list[Site] = []
        for c in self.va.callers(site.scope):
            found = self._in_scope(c, scope, depth + 1)
            if found:
                out += found
        return out or None

    # -- branches --------------------------------------------------------------------------

    def _other_branch(self, site: Site, loop: Loop) -> bool:
        """``site`` is on a branch the run that enters ``loop`` never takes: the other
        branch of an ``if`` holding the loop, or a branch that returns or exits before it."""
        top = loop.scope.node
        loop_path = self._path(loop.node, top)
        child: ast.AST = site.node
        for anc in self._ancestors(site.node, top):
            if isinstance(anc, ast.If):
                if anc in loop_path:
                    # The loop is under the same ``if``: in another branch of it?
                    return _branch(anc, child) != _branch(anc, loop_path[anc])
                if _branch(anc, child) == "body" and anc.body[0].lineno != anc.lineno \
                        and _leaves(anc.body) and anc.lineno < loop.pos[0]:
                    return True  # an indented ``if`` block that leaves before the loop
            child = anc
        return False

    def _ancestors(self, node: ast.AST, top: ast.AST) -> list[ast.AST]:
        """The nodes around ``node``, innermost first, up to ``top`` (included)."""
        out = []
        for anc in self.va.facts.index.ancestors(node):
            out.append(anc)
            if anc is top:
                break
        return out

    def _path(self, node: ast.AST, top: ast.AST) -> dict[ast.AST, ast.AST]:
        """Each node around ``node`` (up to ``top``), with its child on the way down."""
        out: dict[ast.AST, ast.AST] = {}
        child = node
        for anc in self._ancestors(node, top):
            out[anc] = child
            child = anc
        return out

    # -- a validation that selects the model ----------------------------------------------

    def _selects(self, site: Site) -> bool:
        if not isinstance(site, CallRec):
            return False
        if site.func and _VALIDATION.match(site.func.rpartition(".")[2]):
            return True
        flow = site.flow
        targets = [t.rpartition(".")[2] for t in flow.targets] if flow is not None else []
        if any(is_train_name(t) for t in targets):
            return False
        if any(is_val_name(t) or _VALIDATION_RESULT.search(t) for t in targets):
            return True
        lines = self.va.facts.lines
        start = site.line - 1
        for text in lines[start:start + _SELECTION_WINDOW]:
            for t in targets:
                word = re.escape(t)
                compared = re.search(rf"\b{word}\b\s*[<>]|[<>]=?\s*\b{word}\b", text)
                if compared and "best" in text.lower():
                    return True
                if re.search(rf"(?:\.step|stop\w*)\(\s*{word}\b", text):
                    return True
        return False


def _parents(loop: Loop) -> list[Loop]:
    """The loops around ``loop`` in its function, innermost first."""
    out = []
    cur = loop.parent
    while cur is not None:
        out.append(cur)
        cur = cur.parent
    return out


def _within(site: Site, loop: Loop) -> bool:
    if isinstance(site, CallRec):
        return any(l is loop for l in site.loops)
    return any(l is loop for l in _parents(site))


def _line(site: Site) -> int:
    return site.pos[0]


def _branch(node: ast.If, child: ast.AST) -> str:
    """Which part of the ``if`` holds its child ``child``: "body", "orelse" or "test"."""
    if any(s is child for s in node.body):
        return "body"
    if any(s is child for s in node.orelse):
        return "orelse"
    return "test"


def _leaves(block: list[ast.stmt]) -> bool:
    """The block ends by leaving the function or the process (``return``, ``raise``,
    ``sys.exit()``)."""
    if not block:
        return False
    last = block[-1]
    if isinstance(last, (ast.Return, ast.Raise)):
        return True
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
        func = last.value.func
        name = func.id if isinstance(func, ast.Name) else (
            f"{func.value.id}.{func.attr}"
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else "")
        return name in _EXITS
    return False
