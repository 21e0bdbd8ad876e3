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

import ast

from mllint.analysis.pyast.syntax import FUNCTIONS, args_of, first_positional
from mllint.analysis.validation.facts import (
    CallRec,
    Evidence,
    FlowRec,
    Grad,
    Loop,
    Scope,
    _words,
)
from mllint.analysis.validation.names import (
    IF_VAL_RE,
    SPLITTERS,
    WITH_NO_GRAD_RE,
    Pos,
    is_eval_function,
    is_train_name,
    is_val_name,
)
from mllint.analysis.validation.passes import ValidationAnalysis, ValidationPass
from mllint.gates.resolve import dotted as dotted_name

_DEPTH = 5
_SPLIT_KEYWORDS = ("split", "subset", "mode", "phase", "set", "stage", "partition")
_TRAIN_VALUES = ("train", "training", "trn")
#: Names that are values, not variables: no two uses of them are the same data.
_CONSTANTS = frozenset({"None", "True", "False"})


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
    #: Which data this is depends on the instance the method runs on (``_per_instance``):
    #: neither training data nor evidence of a held-out evaluation.
    per_instance: bool = False


class DataAnalysis:
    def __init__(self, va: ValidationAnalysis) -> None:
        self.va = va
        self._training: set[tuple[int, str]] | None = None
        self._training_flows: set[int] = set()
        self._samplers: set[str] | None = None
        self._selectors: set[str] | None = None
        self._returns: dict[int, list[ast.Return]] = {}

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
                    for s, n, pos in self._outward(scope, name, loop.pos, 0, training=True):
                        self._mark(s, n, pos, keys, flows, 0)
        self._training, self._training_flows = keys, flows
        return keys, flows

    def _mark(self, scope: Scope, name: str, pos: Pos, keys, flows, depth: int) -> None:
        keys.add(self._key(scope, name))
        for s, f in self.va.origins(scope, name, pos):
            flows.add(id(f))
            call = self.va._call_rec(s, f.value)
            if call is None or depth >= _DEPTH:
                continue
            passed = _passed_through(call, f.index)
            if passed is not None:
                # ``train_dl, model = accelerator.prepare(train_dl, model)``, ``iter(dl)``
                d = dotted_name(passed)
                if d:  # the same name rebound (``dl = accelerator.prepare(dl)``) too
                    self._mark(s, d, f.pos, keys, flows, depth + 1)
            elif _is_loader(call) and not _has_sampler(call):
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

    def _outward(self, scope: Scope, name: str, pos: Pos, depth: int,
                 only: CallRec | None = None, training: bool = False):
        """``(scope, name, pos)`` for ``name`` and, when it is a helper's parameter, for
        what every same-module caller passes in its place: only ``only``, when given
        (the call taking a shared train/eval loop's evaluation path); for a training
        loop (``training``), not the calls that take its evaluation path."""
        root = name.split(".", 1)[0]
        if root in scope.params and not scope.assigned(root) and depth < _DEPTH:
            callers = self.va.callers(scope) if only is None else [only]
            if training:
                evaluating = {id(e.call) for e in self.va.flags.eval_calls(scope)}
                callers = [c for c in callers if id(c) not in evaluating]
            if callers:
                for c in callers:
                    for mapped in self.va.map_names(scope, c, {name}, inward=False):
                        if mapped.partition(".")[0] not in _CONSTANTS:
                            # ``None`` passed for two loaders is no shared data
                            yield from self._outward(c.scope, mapped, c.pos, depth + 1)
                return
        yield scope, name, pos

    # -- classifying one iterable ----------------------------------------------------------

    def sources(self, scope: Scope, name: str, pos: Pos,
                only: CallRec | None = None) -> list[Source]:
        out = []
        for s, n, p in self._outward(scope, name, pos, 0, only):
            site = None
            if s is not scope:
                site = self._outermost_site(scope, s, p)
            src = self.classify(s, n, p, 0)
            out.append(Source(src.kind, n, src.train_name, src.culprit, site, src.why,
                              src.per_instance))
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
        # The assignment that reaches here decides when there is one: a name rebound to
        # the test split after the training loop (``slices = test.batches()``) is no
        # longer what that loop iterated. Without one (a parameter, an attribute set
        # elsewhere), the name's own identity does.
        trained = any(id(f) in flows for _, f in origins) if origins else \
            self._key(scope, name) in keys
        if trained:
            if self._per_instance(scope, name):
                return Source(Kind.UNKNOWN, name, per_instance=True)
            return Source(Kind.TRAIN, name, name, None, None,
                          "the training loop iterates it")
        if is_train_name(name):
            return Source(Kind.TRAIN, name, name, None, None, f"`{name}` is the training data")
        if is_val_name(name):
            return Source(Kind.HELDOUT, name)
        return Source(Kind.UNKNOWN, name)

    def _per_instance(self, scope: Scope, name: str) -> bool:
        """``self.dataloader`` of a runner class, set from a constructor argument: each
        instance iterates the loader it was built with (``trainer = Runner(train_loader)``,
        ``evaluator = Runner(val_loader)``). The training method iterating it says nothing
        about the instance this method evaluates, unless the class itself runs this
        method (``self.evaluate()``), on the instance it trains."""
        cls = scope.cls
        root, dot, attr = name.partition(".")
        if cls is None or not dot or root != scope.self_name or "." in attr:
            return False
        if not any(name in loop.iterables for loop in scope.loops):
            return False  # asked at a call of the evaluation in the class: the same instance
        # Assigned in the class or its bases of this module (``BaseRunner.__init__``).
        assigned = [f for c in self.va.lineage(cls) for f in c.attrs.get(attr, [])]
        if not assigned or not all(
                isinstance(f.value, ast.Name) and f.scope is not None
                and f.value.id in f.scope.params for f in assigned):
            return False
        return not any(c.scope.cls is cls for c in self.va.callers(scope))

    def _built(self, scope: Scope, flow: FlowRec, name: str, depth: int) -> Source | None:
        """What the assignment ``flow`` of ``name`` says it holds, if it says."""
        value = flow.value
        if value is None or depth > _DEPTH:
            return None
        if isinstance(value, (ast.Name, ast.Attribute)) or _is_constant_name(value):
            d = dotted_name(value) if not _is_constant_name(value) else repr(value.value)  # type: ignore[union-attr]
            if d and d != name:
                inner = self.classify(scope, d, flow.pos, depth + 1)
                return inner if inner.kind is not Kind.UNKNOWN else None
            return None
        call = self.va._call_rec(scope, value)
        if call is None:
            return None
        passed = _passed_through(call, flow.index)
        if passed is not None:
            return self._passed(scope, flow, call, passed, name, depth)
        helper = self.va.helper_of(call)
        if helper is not None and not helper.is_module:
            return self._returned(helper, call, flow.index, name, depth)
        if flow.index is not None or call.qnames & SPLITTERS:
            return None  # a part of a split: its own name tells which part
        if _is_loader(call):
            if _selects_nodes(call):
                return self._selected(call, name)
            if _has_sampler(call):
                return self._sampled(scope, flow, call, name, depth)
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

    def _passed(self, scope: Scope, flow: FlowRec, call: CallRec, passed: ast.expr,
                name: str, depth: int) -> Source | None:
        """``eval_dl = accelerator.prepare(x)`` / ``iter(x)`` holds what ``x`` holds; when a
        held-out name gets training data this way, the call is where it slips in."""
        d = dotted_name(passed)
        if not d:
            if not isinstance(passed, ast.Call):
                return None
            # ``batches = iter(DataLoader(train_ds))``: what the inner call builds.
            return self._built(scope, FlowRec(flow.where, flow.targets, passed, None, flow.scope),
                               name, depth + 1)
        # ``dl = accelerator.prepare(dl)``: the value before this assignment.
        inner = self.classify(scope, d, flow.pos, depth + 1)
        if inner.kind is Kind.UNKNOWN:
            return None
        if inner.kind is Kind.TRAIN and is_train_name(d) and not is_train_name(name):
            return Source(Kind.TRAIN, name, d, call, None, f"it is `{d}`, the training data")
        return inner

    def _sampled(self, scope: Scope, flow: FlowRec, call: CallRec, name: str,
                 depth: int) -> Source:
        """A loader with a sampler iterates the sampler's subset: the training subset when
        the sampler is named for training or is the one the training loader uses, and the
        dataset is not itself held-out."""
        sampler = next((a.value for a in call.args if a.keyword is not None
                        and a.keyword in ("sampler", "batch_sampler")), None)
        s = dotted_name(sampler) if sampler is not None else None
        if not s:
            return Source(Kind.UNKNOWN, name)
        if is_val_name(s):
            return Source(Kind.HELDOUT, name)
        if not (is_train_name(s) or s in self._training_samplers()):
            return Source(Kind.UNKNOWN, name)
        ds = _dataset_arg(call.node)
        d = dotted_name(ds) if ds is not None else None
        if d and self.classify(scope, d, flow.pos, depth + 1).kind is Kind.HELDOUT:
            return Source(Kind.UNKNOWN, name)
        return Source(Kind.TRAIN, name, s, call, None,
                      f"it is built with `{s}`, the training sampler, on line {call.line}")

    def _selected(self, call: CallRec, name: str) -> Source | None:
        """A loader that samples nodes or edges of one graph (PyG's ``NeighborLoader(data,
        input_nodes=data.val_mask)``) serves every split of that graph: which one it
        measures is its ``input_nodes``, not its data. Without a selector it walks the
        whole graph, and the split is picked afterwards by masking the outputs."""
        selector = next((a.value for a in call.args if a.keyword is not None
                         and a.keyword in _NODE_SELECTORS), None)
        if selector is None:
            return None
        words = list(_words(selector, self.va.facts.text))
        if any(is_val_name(w) for w in words):
            return Source(Kind.HELDOUT, name)
        text = self.va.facts.text.one_line(selector)
        if any(is_train_name(w) for w in words) or text in self._training_selectors():
            return Source(Kind.TRAIN, name, text, call, None,
                          f"it is built to sample around `{text}`, the training nodes")
        return None

    def _training_selectors(self) -> set[str]:
        """The node selectors of the loaders that training loops iterate."""
        if self._selectors is None:
            self._selectors = {self.va.facts.text.one_line(v)
                               for v in self._training_loader_args(_NODE_SELECTORS)}
        return self._selectors

    def _training_samplers(self) -> set[str]:
        """Names of the samplers the loaders that training loops iterate are built with."""
        if self._samplers is None:
            self._samplers = {d for v in self._training_loader_args(("sampler", "batch_sampler"))
                              if (d := dotted_name(v))}
        return self._samplers

    def _training_loader_args(self, keywords) -> list[ast.expr]:
        """The arguments under ``keywords`` of the loaders that training loops iterate."""
        _, flows = self.training_keys()
        found: list[ast.expr] = []
        for scope in self.va.facts.scopes:
            for f in scope.flows:
                call = self.va._call_rec(scope, f.value) if id(f) in flows else None
                if call is not None and _is_loader(call):
                    found += [a.value for a in call.args
                              if a.keyword is not None and a.keyword in keywords]
        return found

    def _returned(self, helper: Scope, call: CallRec, index: int | None, name: str,
                  depth: int) -> Source | None:
        """What a same-module helper that builds data returns (``train_dl, val_dl =
        get_loaders()``, ``val_dl = make_loader(train_ds)``), judged in the helper and,
        for its parameters, by what this call passes."""
        if depth >= _DEPTH or not isinstance(helper.node, FUNCTIONS):
            return None
        found: Source | None = None
        key = id(helper.node)
        if key not in self._returns:
            self._returns[key] = [r for r in self.va.own_returns(helper) if r.value is not None]
        for ret in self._returns[key]:
            expr = ret.value
            if index is not None:
                if not isinstance(expr, (ast.Tuple, ast.List)) or index >= len(expr.elts) or any(
                        isinstance(e, ast.Starred) for e in expr.elts):
                    return None
                expr = expr.elts[index]
            src = self._helper_value(helper, call, expr, depth + 1)
            if src is None or src.kind is Kind.UNKNOWN:
                return None  # one return the analysis cannot tell decides nothing
            if found is not None and found.kind is not src.kind:
                return None
            found = found or src
        if found is None:
            return None
        if found.kind is Kind.TRAIN:
            return Source(Kind.TRAIN, name, found.train_name, found.culprit or call, None, found.why)
        return found

    def _helper_value(self, helper: Scope, call: CallRec, expr: ast.expr,
                      depth: int) -> Source | None:
        end = (10**9, 0)  # the helper's last assignments: returns come at its end
        d = dotted_name(expr)
        if d:
            if d.split(".", 1)[0] in helper.params and not helper.assigned(d.split(".", 1)[0]):
                mapped = self.va.map_names(helper, call, {d}, inward=False)
                for m in sorted(mapped):
                    return self.classify(call.scope, m, call.pos, depth + 1)
                return None
            return self.classify(helper, d, end, depth + 1)
        inner = self.va._call_rec(helper, expr)
        if inner is None or not _is_loader(inner) or _has_sampler(inner):
            return None
        ds = _dataset_arg(inner.node)
        dd = dotted_name(ds) if ds is not None else None
        if not dd:
            return self._constructed(self.va._call_rec(helper, ds), "") if ds is not None else None
        src = self._helper_value(helper, call, ds, depth + 1)
        if src is not None and src.kind is Kind.TRAIN:
            # A generic builder given training data: the slip is at the call.
            given = dd.split(".", 1)[0] in helper.params and not helper.assigned(dd.split(".", 1)[0])
            return Source(Kind.TRAIN, src.name, src.train_name or dd,
                          call if given else (src.culprit or inner), None, src.why)
        return src

    def _constructed(self, call: CallRec | None, name: str) -> Source | None:
        """A dataset built with ``train=True`` / ``split="train"`` (or the opposite)."""
        if call is None:
            return None
        for arg in call.args:
            kw = arg.keyword
            if kw == "train" and isinstance(arg.value, ast.Constant) and isinstance(arg.value.value, bool):
                if arg.value.value is True:
                    return Source(Kind.TRAIN, name, name, call, None,
                                  f"`{name}` is built with `train=True` on line {call.line}")
                return Source(Kind.HELDOUT, name)
            text = self.va.facts.text.string_literal(arg.value)
            text = text if isinstance(text, str) else None
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
                if c.func is None or self.va.helper_of(c) is not None or not c.args:
                    continue
                last = c.func.rpartition(".")[2]
                if is_eval_function(last):
                    out.append(c)
        return out

    # -- evaluations under a held-out guard ----------------------------------------------

    def guarded_evaluations(self) -> list[ValidationPass]:
        """Loops that run the model with autograd off under a test of held-out data, over
        what a training loop iterates: ``if val_data is not None: with torch.no_grad():
        for x, y in data: model(x)``. The loop's own name gives no sign of evaluation, so
        they are no validation passes (nothing there for ML002/ML003 to judge); the guard
        says the loop stands for the held-out evaluation, and only training data that the
        training loop itself iterates counts against it."""
        out: list[ValidationPass] = []
        keys, flows = self.training_keys()
        for scope in self.va.facts.scopes:
            if self.va.framework_owned(scope):
                continue
            for loop in scope.loops:
                if not loop.iterables or not any(self._tests_held_out(i) for i in loop.ifs):
                    continue
                if loop.trains or self.va.loop_trains(loop):
                    continue
                if not any(self._key(scope, n) in keys for n in loop.iterables):
                    continue
                found = self._guarded_forward(loop)
                if found is not None:
                    call, model = found
                    out.append(ValidationPass(scope, loop, call, model,
                                              frozenset({Evidence.NO_GRAD})))
        return out

    def _tests_held_out(self, node: ast.If) -> bool:
        """``if val_dataset is not None:``: a test of held-out data (and of no training
        data), named on the ``if`` line, as the prefilter reads it."""
        words = list(_words(node.test, self.va.facts.text))
        if not any(is_val_name(w) for w in words) or any(is_train_name(w) for w in words):
            return False
        where = self.va.facts.ifs.get(id(node))
        return where is not None and self.va.facts.line_matches(where.pos, IF_VAL_RE)

    def _guarded_forward(self, loop: Loop) -> tuple[CallRec, str] | None:
        """A forward of the model directly in ``loop`` (and the model), inside a ``with``
        block around the loop that switches autograd off, whose output is not
        back-propagated."""
        for call in loop.calls:
            ctx = call.grad
            if call.loops[-1] is not loop or ctx is None or ctx.state is not Grad.OFF:
                continue
            if not isinstance(ctx.node, (ast.With, ast.AsyncWith)) or ctx.pos >= loop.pos:
                continue
            if not self.va.facts.line_matches(ctx.pos, WITH_NO_GRAD_RE):
                continue  # read off its line, as the prefilter reads it
            model = self.va.model_forward(call)
            if model is None or self.va._synthetic_input(call):
                continue
            if self.va._backpropagated(call) or self.va._caller_backpropagates(call):
                continue
            return call, model
        return None


def _is_loader(call: CallRec) -> bool:
    """``DataLoader(ds)`` and kin, and torchtext's iterators (``BucketIterator(ds)``)."""
    if any(q.endswith("DataLoader") for q in call.qnames):
        return True
    last = (call.func or "").rpartition(".")[2]
    return last.endswith(("DataLoader", "Loader", "Iterator")) and last[:1].isupper()


#: Calls that hand back the data they are given: ``accelerator.prepare(model, opt, dl)``
#: (each argument at its position), ``fabric.setup_dataloaders(dl)``, ``iter(dl)``.
_PASS_METHODS = frozenset({"prepare", "setup_dataloaders", "prepare_data_loader"})


def _passed_through(call: CallRec, index: int | None) -> ast.expr | None:
    node = call.node
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "__iter__" and index is None:
        return func.value
    if call.func in ("iter",) and index is None:
        return first_positional(node)
    if call.attr not in _PASS_METHODS:
        return None
    positional = [a.value for a in call.args if a.keyword is None]
    if any(a.star for a in call.args):
        return None
    i = 0 if index is None else index
    if index is None and len(positional) != 1:
        return None
    return positional[i] if i < len(positional) else None


#: Keywords by which a graph loader picks the nodes or edges it serves batches around.
_NODE_SELECTORS = frozenset({"input_nodes", "input_edges", "edge_label_index", "node_idx"})
#: Loaders that sample parts of one graph (node- or link-level), not examples of a dataset.
_GRAPH_SAMPLERS = frozenset({
    "NeighborLoader", "LinkNeighborLoader", "HGTLoader", "RandomNodeLoader", "ClusterLoader",
    "ShaDowKHopSampler", "NeighborSampler", "GraphSAINTNodeSampler", "GraphSAINTEdgeSampler",
    "GraphSAINTRandomWalkSampler", "NodeLoader", "LinkLoader",
})


def _selects_nodes(call: CallRec) -> bool:
    """A loader over the nodes or edges of one graph."""
    last = (call.func or "").rpartition(".")[2]
    return last in _GRAPH_SAMPLERS or any(
        a.keyword is not None and a.keyword in _NODE_SELECTORS for a in call.args)


def _has_sampler(call: CallRec) -> bool:
    return any(a.keyword is not None and a.keyword in ("sampler", "batch_sampler")
               for a in call.args)


def _dataset_arg(call: ast.Call) -> ast.expr | None:
    args = args_of(call)
    for a in args:
        if a.keyword is not None and a.keyword == "dataset":
            return a.value
    for a in args:
        if a.keyword is None and not a.star:
            return a.value
    return None


def _is_constant_name(value: ast.AST | None) -> bool:
    """``None``, ``True`` or ``False``: names in libcst's tree, constants in ``ast``'s."""
    return isinstance(value, ast.Constant) and (value.value is None or isinstance(value.value, bool))
