"""Which data a validation pass iterates: training data or held-out data (ML007).

Each iterable of a validation pass is followed back - through its assignments, through
the ``DataLoader(...)`` that built it to that loader's dataset, and from a parameter of an
evaluation helper to what its callers pass - until something tells what it holds:

* how it was built: ``MNIST(..., train=True)``, ``load_dataset(..., split="train")`` are
  training data; ``Subset(ds, idx)``, ``random_split`` parts, a ``sampler=`` are splits;
* being the very loader (or the dataset of the loader) that a training loop iterates;
* otherwise its name (``train_loader`` vs ``val_loader``).

A pass whose iterable is *named* like held-out data but turns out to be training data is
the copy-paste bug (``val_loader = DataLoader(train_ds)``) and is reported where the
training data comes in. A pass that iterates data named or used as training data is
reported only when nothing held-out is evaluated anywhere in the file: measuring
training accuracy *in addition* to validation accuracy is fine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import libcst as cst

from mllint.analysis import dotted_name
from mllint.analysis_validation import ValidationAnalysis
from mllint.analysis_validation_facts import CallRec, FlowRec, Scope
from mllint.analysis_validation_names import (
    SPLITTERS,
    Pos,
    is_eval_function,
    is_train_name,
    is_val_name,
)

_DEPTH = 5
_SPLIT_KEYWORDS = ("split", "subset", "mode", "phase", "set", "stage", "partition")
_TRAIN_VALUES = ("train", "training", "trn")


class Kind(enum.Enum):
    TRAIN = "train"
    HELDOUT = "held-out"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Source:
    """What one iterable of a pass holds, and where that was decided."""

    kind: Kind
    #: The name the pass (or the outermost caller) iterates or passes.
    name: str
    #: The training data it was found to be (``train_ds``, ``train_loader``).
    train_name: str | None = None
    #: The call that brings training data in (``DataLoader(train_ds)``, ``MNIST(train=True)``).
    culprit: CallRec | None = None
    #: The outermost call of an evaluation helper that passed the data in.
    call_site: CallRec | None = None
    why: str = ""


class DataAnalysis:
    def __init__(self, va: ValidationAnalysis) -> None:
        self.va = va
        self._training: set[tuple[int, str]] | None = None
        self._training_flows: set[int] = set()

    # -- what training iterates ----------------------------------------------------------

    def training_keys(self) -> tuple[set[tuple[int, str]], set[int]]:
        """Identities of the loaders (and their datasets) that training loops iterate."""
        if self._training is not None:
            return self._training, self._training_flows
        keys: set[tuple[int, str]] = set()
        flows: set[int] = set()
        for scope in self.va.facts.scopes:
            for loop in scope.loops:
                if not loop.trains and not self.va.loop_trains(loop):
                    continue
                for name in loop.iterables:
                    for s, n, pos in self._outward(scope, name, loop.pos, 0):
                        self._mark(s, n, pos, keys, flows, 0)
        self._training, self._training_flows = keys, flows
        return keys, flows

    def _mark(self, scope: Scope, name: str, pos: Pos, keys, flows, depth: int) -> None:
        keys.add(self._key(scope, name))
        for s, f in self.va.origins(scope, name, pos):
            flows.add(id(f))
            call = self.va._call_rec(s, f.value)
            if call is not None and _is_loader(call) and not _has_sampler(call) and depth < _DEPTH:
                ds = _dataset_arg(call.node)
                d = dotted_name(ds) if ds is not None else None
                if d:
                    self._mark(s, d, f.pos, keys, flows, depth + 1)

    def _key(self, scope: Scope, name: str) -> tuple[int, str]:
        """Where ``name`` lives: the scope that assigns it (a global lives in the module;
        ``self.x`` lives in the class, shared by its methods)."""
        s: Scope | None = scope
        root, dot, rest = name.partition(".")
        if scope.cls is not None and root == scope.self_name and dot:
            return (id(scope.cls), f"self.{rest}")
        while s is not None:
            if s.assigned(name) or s.assigned(root) or root in s.params:
                return (id(s), name)
            s = s.parent
        return (id(self.va.module), name)

    def _outward(self, scope: Scope, name: str, pos: Pos, depth: int):
        """``(scope, name, pos)`` for ``name`` and, when it is a helper's parameter, for
        what every same-module caller passes in its place."""
        root = name.split(".", 1)[0]
        if root in scope.params and not scope.assigned(root) and depth < _DEPTH:
            callers = self.va.callers(scope)
            if callers:
                for c in callers:
                    for mapped in self.va.map_names(scope, c, {name}, inward=False):
                        yield from self._outward(c.scope, mapped, c.pos, depth + 1)
                return
        yield scope, name, pos

    # -- classifying one iterable ----------------------------------------------------------

    def sources(self, scope: Scope, name: str, pos: Pos) -> list[Source]:
        out = []
        for s, n, p in self._outward(scope, name, pos, 0):
            site = None
            if s is not scope:
                site = self._outermost_site(scope, s, p)
            src = self.classify(s, n, p, 0)
            out.append(Source(src.kind, n, src.train_name, src.culprit, site, src.why))
        return out

    def _outermost_site(self, inner: Scope, outer: Scope, pos: Pos) -> CallRec | None:
        for c in outer.calls:
            if c.pos == pos:
                return c
        return None

    def classify(self, scope: Scope, name: str, pos: Pos, depth: int) -> Source:
        keys, flows = self.training_keys()
        origins = self.va.origins(scope, name, pos)
        for s, f in origins:
            built = self._built(s, f, name, depth)
            if built is not None:
                return built
        if self._key(scope, name) in keys or any(id(f) in flows for _, f in origins):
            return Source(Kind.TRAIN, name, name, None, None,
                          "the training loop iterates it")
        if is_train_name(name):
            return Source(Kind.TRAIN, name, name, None, None, f"`{name}` is the training data")
        if is_val_name(name):
            return Source(Kind.HELDOUT, name)
        return Source(Kind.UNKNOWN, name)

    def _built(self, scope: Scope, flow: FlowRec, name: str, depth: int) -> Source | None:
        """What the assignment ``flow`` of ``name`` says it holds, if it says."""
        value = flow.value
        if value is None or depth > _DEPTH:
            return None
        if isinstance(value, (cst.Name, cst.Attribute)):
            d = dotted_name(value)
            if d and d != name:
                inner = self.classify(scope, d, flow.pos, depth + 1)
                return inner if inner.kind is not Kind.UNKNOWN else None
            return None
        call = self.va._call_rec(scope, value)
        if call is None:
            return None
        if flow.index is not None or call.qnames & SPLITTERS:
            return None  # a part of a split: its own name tells which part
        if _is_loader(call):
            if _has_sampler(call):
                return Source(Kind.UNKNOWN, name)  # a sampler picks a subset
            ds = _dataset_arg(call.node)
            if ds is None:
                return None
            d = dotted_name(ds)
            if d:
                inner = self.classify(scope, d, flow.pos, depth + 1)
            else:
                inner = self._constructed(self.va._call_rec(scope, ds), d or "")
            if inner is None:
                return None
            if inner.kind is Kind.TRAIN:
                # The slip is where the data stops being what its name says: a dataset
                # not named for training but built from the training split
                # (``val_ds = MNIST(train=True)``), else this ``DataLoader(train_ds)``.
                held = d is not None and not is_train_name(d)
                culprit = inner.culprit if held and inner.culprit else call
                return Source(Kind.TRAIN, name, inner.train_name or d, culprit, None, inner.why)
            return inner
        return self._constructed(call, name)

    def _constructed(self, call: CallRec | None, name: str) -> Source | None:
        """A dataset built with ``train=True`` / ``split="train"`` (or the opposite)."""
        if call is None:
            return None
        for arg in call.node.args:
            kw = arg.keyword.value if arg.keyword is not None else None
            if kw == "train" and isinstance(arg.value, cst.Name) and arg.value.value in ("True", "False"):
                if arg.value.value == "True":
                    return Source(Kind.TRAIN, name, name, call, None,
                                  f"`{name}` is built with `train=True` on line {call.line}")
                return Source(Kind.HELDOUT, name)
            text = _string(arg.value)
            if text is None or (kw is not None and kw not in _SPLIT_KEYWORDS):
                continue
            # ``"train[90%:]"`` is a slice of the training split, often the held-out one.
            if text.lower() in _TRAIN_VALUES:
                return Source(Kind.TRAIN, name, name, call, None,
                              f"`{name}` is built from the \"{text}\" split on line {call.line}")
            if is_val_name(text) or "[" in text:
                return Source(Kind.HELDOUT, name)
        return None

    # -- evaluation helpers outside the module -------------------------------------------------

    def external_evaluations(self) -> list[CallRec]:
        """Calls of evaluation-named functions not defined in the file (``evaluate(...)``)."""
        out = []
        for scope in self.va.facts.scopes:
            if self.va.framework_owned(scope):
                continue
            for c in scope.calls:
                if c.func is None or self.va.helper_of(c) is not None or not c.node.args:
                    continue
                last = c.func.rpartition(".")[2]
                if is_eval_function(last):
                    out.append(c)
        return out


def _is_loader(call: CallRec) -> bool:
    if any(q.endswith("DataLoader") for q in call.qnames):
        return True
    last = (call.func or "").rpartition(".")[2]
    return last.endswith(("DataLoader", "Loader")) and last[:1].isupper()


def _has_sampler(call: CallRec) -> bool:
    return any(a.keyword is not None and a.keyword.value in ("sampler", "batch_sampler")
               for a in call.node.args)


def _dataset_arg(call: cst.Call) -> cst.BaseExpression | None:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "dataset":
            return a.value
    for a in call.args:
        if a.keyword is None and not a.star:
            return a.value
    return None


def _string(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.SimpleString):
        return expr.evaluated_value if isinstance(expr.evaluated_value, str) else None
    return None
