"""What a validation pass is, and the facts ML002/ML003/ML007 decide from.

A *validation pass* is a forward pass of a model whose output is only measured (metrics,
loss values, argmax), never back-propagated, in a place that says it evaluates:

* the innermost loop around the forward call, when neither that loop nor any same-module
  helper it calls runs ``backward()``/``step()``; or, without a loop, the body of a
  function that never trains;
* and at least one sign that it evaluates (``Evidence``): the loop iterates something named
  like held-out data (``val_loader``, ``testloader``, ``loaders["val"]``, ``X_test``), the
  function is named like an evaluation (``evaluate``, ``validate``, ``test``), the forward
  runs under ``torch.no_grad()``/``inference_mode``, or ``model.eval()`` was called.

The *model* is a called object that is an ``nn.Module`` by how it was built: a class of the
module that subclasses ``nn.Module``, a ``torch.nn`` layer, torchvision/timm/hub builders,
``from_pretrained``, wrappers (``DataParallel``, ``torch.compile``, ``.to(device)``), or -
when what built it is out of sight (imported builders, parameters) - a name that says it
(``model``, ``net``, ``self.model``, ``netG``...). ``self.x`` inside an ``nn.Module`` class is
a submodule whose mode belongs to the outer module, so it is never the model of a pass.

The facts are gathered in one walk of the module's ``ast`` (``facts.collect``, shared by
the three rules), then ``ValidationAnalysis`` answers, per pass, "which mode is the model in here?",
"is autograd on here?" and "which data does this pass iterate?", following same-module
helpers into their bodies and evaluation helpers back to their call sites.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

from mllint.analysis.pyast.index import ModuleIndex
from mllint.analysis.pyast.syntax import (
    FUNCTIONS,
    SourceText,
    args_of,
    is_none,
    is_number,
    is_string,
    nodes_under,
)
from mllint.analysis.pyast.syntax import literal_flag as _is_false_literal
from mllint.analysis.validation.facts import (
    CallRec,
    ClassInfo,
    Evidence,
    Facts,
    FlowRec,
    Grad,
    Loop,
    Mode,
    Scope,
    State,
    _is_training_call,
    _iterables,
    _words,
    collect,
    names_in,
)
from mllint.analysis.validation.flags import EvalCall, Flags, flag_test
from mllint.analysis.validation.names import (
    _FRAMEWORK_HOOKS,
    ARG_VAL_RE,
    ARGS_VAL_RE,
    AUTOGRAD_CALLS,
    FOR_DATA_RE,
    FOR_VAL_RE,
    GRAD_OFF,
    GRAD_SET,
    MODULE_PASSTHROUGH,
    SYNTHETIC,
    ITER_WRAPPERS,
    WHILE_VAL_RE,
    WITH_NO_GRAD_RE,
    WRAPPED_DATA_RE,
    WRAPPED_VAL_RE,
    WRAPPERS,
    Pos,
    is_eval_function,
    is_framework_base,
    is_loss_class,
    is_model_name,
    is_module_base,
    is_module_constructor,
    is_train_name,
    is_val_name,
)
from mllint.gates.resolve import dotted as dotted_name, returns_of
from mllint.project.model import ProjectView
from mllint.project.roles import NESTING_LAYERS, UNKNOWN, mode_dependent_layer
from mllint.rule import AstRule, FileContext
from mllint.source import STRING_OR_COMMENT


_ANALYSIS_KEY = "validation-analysis"
_FACTS_KEY = "validation-facts"


def module_facts(context: FileContext, tree: ast.Module) -> Facts:
    """The facts of the module ``tree`` is parsed from, gathered once for ML002, ML003
    and ML007 (they run on the same tree, one after the other)."""
    kept = context.shared.get(_FACTS_KEY)
    if kept is not None and kept[0] is tree:
        return kept[1]
    index = ModuleIndex(tree, context.source, context.project, context.star_imports)
    facts = collect(tree, index, SourceText(context.source), context.path, context.lines)
    context.shared[_FACTS_KEY] = (tree, facts)
    return facts


class ValidationRule(AstRule):
    """Base of ML002/ML003/ML007: gathers ``Facts`` in one walk of the module's ``ast``
    (shared by the three), then decides in ``decide(analysis)``, which subclasses
    implement."""

    abstract = True

    def check(self, tree: ast.Module) -> None:
        self.facts = module_facts(self.context, tree)
        self.decide(self._analysis(self.facts))

    def _analysis(self, facts: Facts) -> ValidationAnalysis:
        """One analysis of the module for ML002, ML003 and ML007: what it works out
        (the passes, modes, callers) depends only on the facts and the project, so the
        rules that decide after the first reuse it instead of repeating it."""
        shared = self.context.shared
        analysis = shared.get(_ANALYSIS_KEY)
        if analysis is None or analysis.facts is not facts:
            analysis = shared[_ANALYSIS_KEY] = ValidationAnalysis(facts, self.context.project)
        return analysis

    def decide(self, analysis: ValidationAnalysis) -> None:
        raise NotImplementedError



# -- the analysis ------------------------------------------------------------------------------


@dataclass(eq=False)
class ValidationPass:
    """One model's forward inside one validation pass."""

    scope: Scope
    loop: Loop | None
    forward: CallRec
    model: str
    evidence: frozenset[Evidence]
    #: The training loop a periodic evaluation runs inside (``if step % 50 == 0:``).
    training_loop: Loop | None = None
    #: For the evaluation path of a shared train/eval loop: the call that takes it.
    via: EvalCall | None = None
    #: For a forward in a helper that a validation loop calls (``self._forward_pass(x)``):
    #: that call; the loop is the caller's.
    helper_call: CallRec | None = None
    #: When the flag reaches the forward's function through the loop's function
    #: (``_run_epoch(loader, train=False)`` calls ``_run_batch(x, y, train)``): the call
    #: that takes the loop's evaluation path; ``via`` is then the call in the loop.
    outer: EvalCall | None = None

    @property
    def through(self) -> CallRec | None:
        """The call whose path is checked: mode and autograd are what hold there."""
        return self.via.call if self.via is not None else self.helper_call

    @property
    def where(self) -> str:
        """Where the pass is, for messages."""
        if self.outer is not None and self.via is not None and self.loop is not None:
            return (f"the loop on line {self.loop.pos[0]} when {self.outer.describe()} runs "
                    f"it on line {self.outer.call.line} (through `{self.via.call.func}(...)` "
                    f"on line {self.via.call.line})")
        if self.via is not None and self.loop is not None:
            return (f"the loop on line {self.loop.pos[0]} when {self.via.describe()} runs "
                    f"it on line {self.via.call.line}")
        if self.helper_call is not None and self.loop is not None:
            return (f"`{self.helper_call.func}(...)`, which the loop on line "
                    f"{self.loop.pos[0]} calls on line {self.helper_call.line}")
        if self.loop is not None:
            return f"the loop on line {self.loop.pos[0]}"
        if self.training_loop is not None:
            return f"a periodic evaluation inside the training loop on line {self.training_loop.pos[0]}"
        return "this evaluation"

    @property
    def region(self) -> ast.AST:
        if self.loop is not None:
            return self.loop.node
        if not self.scope.is_module and self.forward.with_node is None:
            return self.scope.node
        return self.forward.with_node or self.forward.node

    @property
    def loop_line(self) -> int | None:
        return None if self.loop is None else self.loop.pos[0]


_MAX_DEPTH = 4
_NEEDS_GRAD = re.compile(r"(?i)perturb|attack|adversar|fgsm|pgd")


class ValidationAnalysis:
    def __init__(self, facts: Facts, project: ProjectView | None = None) -> None:
        self.facts = facts
        #: The rest of the project, for models whose classes other modules define.
        self.project = project
        self.module = facts.module
        self._callers: dict[Scope, list[CallRec]] | None = None
        self._trains_cache: dict[Scope, bool] = {}
        self._passes: list[ValidationPass] | None = None
        self._uncommented: str | None = None  # the source without its comments
        self._model_cache: dict[tuple[int, str], bool] = {}
        self._wrapped: dict[tuple[int, str], list[CallRec]] = {}
        self._recs: dict[int, CallRec] | None = None
        #: Shared train/eval loops switched by a flag.
        self.flags = Flags(self)
        base = os.path.basename(facts.path)
        self.is_test_file = base.startswith("test_") or base.endswith("_test.py") or base == "conftest.py"

    def own_returns(self, scope: Scope) -> list[ast.Return]:
        """The ``return`` statements of the function ``scope`` itself, in source order
        (from the walk the module index shares)."""
        if scope.is_module:
            return []
        found = returns_of(self.facts.index.tree, scope.node)  # type: ignore[arg-type]
        return sorted(found, key=lambda r: (r.lineno, r.col_offset))

    # -- loops ----------------------------------------------------------------------------

    def wrapped_iterables(self, loop: Loop) -> list[CallRec]:
        """The wrapper calls (``ITER_WRAPPERS``) the names a ``for`` iterates are bound to:
        ``tqdm(val_loader)`` for ``for x, y in pbar`` after ``pbar = tqdm(val_loader)``."""
        return [c for name in loop.iterables for c in self._wrapped_calls(loop, name)]

    def unwrapped_iterables(self, loop: Loop) -> list[str]:
        """``loop.iterables`` with a name bound to a wrapper's call replaced by what the
        call wraps: ``val_loader`` for ``pbar`` after ``pbar = tqdm(val_loader)``. (The
        iterators a loop draws from with ``next`` are judged as they are.)"""
        if loop.draws:
            return list(loop.iterables)
        out: list[str] = []
        for name in loop.iterables:
            inner = [n for c in self._wrapped_calls(loop, name) for n in _iterables(c.node, self.facts.text)]
            out.extend(inner or [name])
        return list(dict.fromkeys(out))

    def _wrapped_calls(self, loop: Loop, name: str) -> list[CallRec]:
        key = (id(loop), name)
        found = self._wrapped.get(key)
        if found is None:
            found = []
            if not isinstance(loop.node, ast.While):
                for scope, f in self.origins(loop.scope, name, loop.kw_pos):
                    call = self._call_rec(scope, f.value)
                    if call is not None and (call.func or "").rpartition(".")[2] in ITER_WRAPPERS:
                        found.append(call)
            self._wrapped[key] = found
        return found

    def over_batches(self, loop: Loop) -> bool:
        """The loop iterates batches of data, by ``FOR_DATA`` on its line or
        ``WRAPPED_DATA`` where the wrapped iterable it loops over is made."""
        return self.facts.line_matches(loop.kw_pos, FOR_DATA_RE) or any(
            self.facts.line_matches(c.pos, WRAPPED_DATA_RE) for c in self.wrapped_iterables(loop))

    def held_out_loop(self, loop: Loop) -> bool:
        """The loop iterates held-out data by its names (not training data), read off its
        line (``FOR_VAL``/``WHILE_VAL``) or where the wrapped iterable it loops over is
        made (``WRAPPED_VAL``)."""
        sign = WHILE_VAL_RE if isinstance(loop.node, ast.While) else FOR_VAL_RE
        if _held_out(loop.iter_words) and self.facts.line_matches(loop.kw_pos, sign):
            return True
        return any(_held_out(tuple(_words(c.node, self.facts.text))) and self.facts.line_matches(c.pos, WRAPPED_VAL_RE)
                   for c in self.wrapped_iterables(loop))

    # -- structure ------------------------------------------------------------------------

    def helper_of(self, call: CallRec) -> Scope | None:
        """The same-module function ``call`` calls: ``f(...)`` or ``self.f(...)``."""
        func = call.func
        if func is None:
            return None
        scope = call.scope
        if "." not in func:
            s: Scope | None = scope
            while s is not None:
                if func in s.children:
                    return s.children[func]
                s = s.parent
            return None
        recv, _, meth = func.rpartition(".")
        if scope.cls is not None and recv == scope.self_name:
            return scope.cls.methods.get(meth)
        return None

    def callers(self, scope: Scope) -> list[CallRec]:
        if self._callers is None:
            self._callers = {}
            for s in self.facts.scopes:
                for c in s.calls:
                    target = self.helper_of(c)
                    if target is not None and target is not s:
                        self._callers.setdefault(target, []).append(c)
        return self._callers.get(scope, [])

    def trains(self, scope: Scope, depth: int = 0) -> bool:
        """``scope`` back-propagates or steps, itself or through same-module helpers."""
        if scope in self._trains_cache:
            return self._trains_cache[scope]
        self._trains_cache[scope] = scope.trains
        if not scope.trains and depth < _MAX_DEPTH:
            for c in scope.calls:
                h = self.helper_of(c)
                if h is not None and h is not scope and self.trains(h, depth + 1):
                    self._trains_cache[scope] = True
                    break
        return self._trains_cache[scope]

    def loop_trains(self, loop: Loop) -> bool:
        if loop.trains:
            return True
        return any((h := self.helper_of(c)) is not None and self.trains(h) for c in loop.calls)

    def framework_owned(self, scope: Scope) -> bool:
        """Hooks a framework calls inside its own loop, with its own mode and no_grad."""
        s: Scope | None = scope
        while s is not None and not s.is_module:
            if s.cls is not None:
                if _FRAMEWORK_HOOKS.match(s.name) or self.class_is(s.cls, is_framework_base):
                    return True
            if self.is_test_file and s.name.startswith("test_"):
                return True  # a pytest test, not an evaluation
            s = s.parent
        return False

    def class_is(self, cls: ClassInfo, pred, depth: int = 0) -> bool:
        if pred(cls.base_qnames):
            return True
        if depth >= _MAX_DEPTH:
            return False
        return any(
            (b in self.facts.classes and self.class_is(self.facts.classes[b], pred, depth + 1))
            for b in cls.base_names
        )

    # -- models -------------------------------------------------------------------------------

    def assignments(self, scope: Scope, name: str, before: Pos | None = None) -> list[FlowRec]:
        """Assignments of ``name`` in ``scope``: the last one before ``before`` when there is
        one, else all of them (a use at the top of a loop may see a later one)."""
        found = [f for f in scope.flows if name in f.targets and (len(f.targets) == 1)]
        if before is not None:
            earlier = [f for f in found if f.pos < before]
            if earlier:
                return [earlier[-1]]
        return found

    def origins(self, scope: Scope, name: str, before: Pos | None = None) -> list[tuple[Scope, FlowRec]]:
        """Where ``name`` (read in ``scope``) got its value: local, self attribute or global."""
        if scope.self_name and name.startswith(scope.self_name + ".") and scope.cls is not None:
            attr = name[len(scope.self_name) + 1:]
            return [(f.scope or scope, f) for f in scope.cls.attrs.get(attr, [])]
        root = name.split(".", 1)[0]
        if scope.assigned(name) or (root != name and scope.assigned(root)):
            return [(scope, f) for f in self.assignments(scope, name, before)]
        if root in scope.params:
            return []
        s = scope.parent
        while s is not None:
            if s.assigned(name):
                return [(s, f) for f in self.assignments(s, name)]
            s = s.parent
        return []

    def _is_model_cached(self, scope: Scope, name: str) -> bool:
        key = (id(scope), name)
        if key not in self._model_cache:
            self._model_cache[key] = self.is_model(scope, name)
        return self._model_cache[key]

    def is_model(self, scope: Scope, name: str, depth: int = 0) -> bool:
        root = name.split(".", 1)[0]
        if scope.cls is not None and root == scope.self_name:
            if self.class_is(scope.cls, is_module_base):
                return False  # a submodule: its mode is the outer module's
            if name.count(".") != 1:
                return False
        origins = self.origins(scope, name)
        if not origins:
            if root in scope.params and name == root:
                return is_model_name(name) or self._passed_models(scope, name, depth)
            return is_model_name(name) and "." not in name.replace(f"{scope.self_name}.", "", 1)
        for s, f in origins:
            verdict = self.is_model_value(s, f, depth + 1)
            if verdict is not None:
                return verdict
        return is_model_name(name)

    def _passed_models(self, scope: Scope, param: str, depth: int) -> bool:
        """Every same-module call of the function passes a model for ``param``
        (``test(model, predictor)`` called with ``predictor = LinkPredictor(...)``)."""
        if depth >= _MAX_DEPTH:
            return False
        callers = self.callers(scope)
        if not callers:
            return False
        for call in callers:
            passed = self.map_names(scope, call, {param}, inward=False)
            if not passed or not all(self.is_model(call.scope, p, depth + 1) for p in passed):
                return False
        return True

    def is_model_value(self, scope: Scope, flow: FlowRec, depth: int) -> bool | None:
        """True/False when how ``flow``'s value was built says, None when it does not."""
        value = flow.value
        if value is None or depth > _MAX_DEPTH:
            return None
        if flow.index is not None:
            # ``model, opt = accelerator.prepare(model, opt)``: the i-th argument comes back.
            if isinstance(value, ast.Tuple) and flow.index < len(value.elts):
                part = value.elts[flow.index]
                if isinstance(part, ast.Starred):
                    part = part.value
                return self.is_model_value(scope, FlowRec(flow.where, flow.targets, part), depth + 1)
            if isinstance(value, ast.Call):
                d = _returned_name(value, flow.index)
                if d:
                    return self.is_model(scope, d, depth + 1)
            return None
        call = self._call_rec(scope, value)
        if is_none(value):
            return None  # a placeholder (``self.unet = None``) filled by a later assignment
        if isinstance(value, (ast.Name, ast.Attribute)):
            d = dotted_name(value)
            return self.is_model(scope, d, depth + 1) if d else None
        if call is None:
            return False if (is_string(value) or is_number(value) or _is_bool(value) or isinstance(
                value, (ast.JoinedStr, ast.Dict, ast.List, ast.Tuple, ast.Lambda))) else None
        return self.call_builds_model(call, depth)

    def call_builds_model(self, call: CallRec, depth: int) -> bool | None:
        if is_module_constructor(call.qnames):
            return True
        if call.qnames & WRAPPERS or call.attr in MODULE_PASSTHROUGH:
            if call.qnames & WRAPPERS:
                inner = _first_arg(call.node)
            else:
                inner = call.node.func.value  # type: ignore[attr-defined]
            d = dotted_name(inner) if inner is not None else None
            if d and call.attr in MODULE_PASSTHROUGH and _param_attribute(call.scope, d) \
                    and is_model_name(d):
                # ``self.model = args.model.to(device)``: an object moved to a device and
                # named a model, handed in on a parameter.
                return True
            if d:
                return self.is_model(call.scope, d, depth + 1)
            sub = self._call_rec(call.scope, inner) if inner is not None else None
            return None if sub is None else self.call_builds_model(sub, depth + 1)
        if call.attr == "from_pretrained":
            recv = (call.receiver or "").lower()
            return not any(w in recv for w in ("token", "processor", "config", "extractor",
                                                "scheduler", "pipeline"))
        if call.func and is_loss_class(call.func):
            return False
        if call.func and "." not in call.func:
            cls = self.facts.classes.get(call.func)
            if cls is not None:
                return self.class_is(cls, is_module_base)
            helper = self.helper_of(call)
            if helper is not None:
                return self._returns_model(helper, depth + 1)
        if call.func and self.project is not None:
            # A class of another module of the project: ``from model.model import UNet``.
            return self.project.class_derives(call.func, is_module_base)
        return None

    def _returns_model(self, helper: Scope, depth: int) -> bool | None:
        if not helper.name.startswith(("build", "create", "make", "get", "load", "init")):
            return None
        # The function's own assignments decide: ``m = Net(); return m``.
        for f in helper.flows:
            if f.targets and self.is_model_value(helper, f, depth):
                return True
        # ``return nn.Sequential(...)``.
        for ret in self.own_returns(helper):
            sub = self._call_rec(helper, _strip_passthrough(ret.value)) if ret.value else None
            if sub is not None and depth < _MAX_DEPTH and self.call_builds_model(sub, depth + 1):
                return True
        return None

    def _call_rec(self, scope: Scope, node: ast.AST | None) -> CallRec | None:
        """The record of the call ``node`` made in ``scope``."""
        if not isinstance(node, ast.Call):
            return None
        if self._recs is None:
            self._recs = {id(c.node): c for s in self.facts.scopes for c in s.calls}
        rec = self._recs.get(id(node))
        return rec if rec is not None and rec.scope is scope else None

    def aliases(self, scope: Scope, name: str) -> set[str]:
        """Names in ``scope`` (and globals) bound to the same module object as ``name``."""
        out = {name}
        changed = True
        scopes = [scope] + ([self.module] if scope is not self.module else [])
        while changed:
            changed = False
            for s in scopes:
                for f in s.flows:
                    if len(f.targets) != 1 or f.value is None:
                        continue
                    src = _alias_source(f)
                    t = f.targets[0]
                    if src is None:
                        continue
                    if src in out and t not in out:
                        out.add(t)
                        changed = True
                    elif t in out and src not in out:
                        out.add(src)
                        changed = True
        return out

    # -- passes -------------------------------------------------------------------------------

    def passes(self) -> list[ValidationPass]:
        if self._passes is not None:
            return self._passes
        out: list[ValidationPass] = []
        seen: set[tuple[int, str]] = set()
        for scope in self.facts.scopes:
            if self.framework_owned(scope):
                continue
            for call in scope.calls:
                model = self.model_forward(call)
                if model is None:
                    continue
                vp = self._as_pass(call, model)
                if vp is None:
                    continue
                key = (id(vp.loop.node if vp.loop else vp.region), model)
                if key in seen:
                    continue
                seen.add(key)
                out.append(vp)
        out.extend(self._flag_passes())
        self._passes = out
        return out

    def _flag_passes(self) -> list[ValidationPass]:
        """The loops over batches of a shared train/eval loop, on its evaluation path."""
        out: list[ValidationPass] = []
        for scope in self.facts.scopes:
            if scope.is_module or not scope.loops or self.framework_owned(scope):
                continue
            calls = self.flags.eval_calls(scope)
            if not calls:
                continue
            for call in scope.calls:
                if not call.loops:
                    continue
                loop = call.loops[-1]
                if not self.over_batches(loop):
                    continue
                model = self.model_forward(call)
                if model is None:
                    out.extend(self._forwarded_passes(call, loop, calls))
                    continue
                if self._synthetic_input(call):
                    continue
                for ec in calls:
                    if self.flags.runs(call, ec.switch.param, ec.value) is False:
                        continue
                    out.append(ValidationPass(scope, loop, call, model,
                                              frozenset({Evidence.EVAL_FLAG}), via=ec))
        return out

    def _forwarded_passes(self, call: CallRec, loop: Loop,
                          calls: list[EvalCall]) -> list[ValidationPass]:
        """The forwards of a switched batch function that the loop calls handing on its
        own flag (``self._run_batch(x, y, train)``), on each evaluation path."""
        forwarded = self.flags.forwarded(call)
        if forwarded is None:
            return []
        inner, param = forwarded
        out: list[ValidationPass] = []
        for ec in calls:
            if ec.switch.param != param or self.flags.runs(call, param, ec.value) is False:
                continue
            via = EvalCall(inner, call, ec.value)
            for h in inner.scope.calls:
                model = self.model_forward(h)
                if model is None or self._synthetic_input(h):
                    continue
                if self.flags.runs(h, inner.param, ec.value) is False:
                    continue
                out.append(ValidationPass(inner.scope, loop, h, model,
                                          frozenset({Evidence.EVAL_FLAG}), via=via, outer=ec))
        return out

    def model_forward(self, call: CallRec) -> str | None:
        """The model ``call`` runs forward: ``model`` in ``model(x)``, ``model.forward(x)``
        and in a method its own class defines (``model.predict(x)``, ``model.infer(x)``,
        ``model.generate(x)``), or None."""
        model = self.forward_target(call)
        if model is None:
            return None
        recv = call.receiver
        method = self._own_method(call.scope, recv, call.attr or "") \
            if recv and call.attr != "forward" else None
        if method is not None:
            if self._evaluates_itself(method):
                return None
            return recv if self._is_model_cached(call.scope, recv) else None
        if self._is_callable_definition(call) or not self._is_model_cached(call.scope, model):
            return None
        return model

    def _own_method(self, scope: Scope, name: str, method: str) -> Scope | None:
        """The method ``name.method(...)`` runs, when ``name`` holds an instance of a
        module class of this file that defines ``method`` (itself or through a base
        class of this file)."""
        for s, f in self.origins(scope, name):
            value = _strip_passthrough(f.value) if f.value is not None else None
            built = self._call_rec(s, value)
            cls = self.facts.classes.get(built.func or "") if built is not None else None
            if cls is not None and self.class_is(cls, is_module_base):
                return next((c.methods[method] for c in self.lineage(cls)
                             if method in c.methods), None)
        return None

    @staticmethod
    def _evaluates_itself(method: Scope) -> bool:
        """``method`` switches its own module to eval mode (``self.eval()``) and turns
        autograd off (``with torch.no_grad():`` or a decorator): a ``generate`` or
        ``predict`` method that evaluates correctly whoever calls it."""
        if method.self_name is None:
            return False
        to_eval = any(c.receiver == method.self_name and c.attr == "eval" for c in method.calls)
        grad_off = (method.decorator is not None and method.decorator.state is Grad.OFF) or any(
            c.grad is not None and c.grad.state is Grad.OFF for c in method.calls)
        return to_eval and grad_off

    def lineage(self, cls: ClassInfo) -> list[ClassInfo]:
        """``cls`` and its base classes defined in this file, depth first, each once."""
        out: list[ClassInfo] = []

        def visit(c: ClassInfo, depth: int) -> None:
            if any(o is c for o in out):
                return
            out.append(c)
            if depth < _MAX_DEPTH:
                for b in c.base_names:
                    if b in self.facts.classes:
                        visit(self.facts.classes[b], depth + 1)

        visit(cls, 0)
        return out

    def _is_callable_definition(self, call: CallRec) -> bool:
        """``create_model(...)``, ``Net(...)``: calling an imported or defined function or
        class builds something; it is no forward, whatever the name says."""
        if call.attr == "forward" or call.func is None:
            return False
        if call.imported:
            return True
        return self.helper_of(call) is not None or call.func in self.facts.classes

    @staticmethod
    def forward_target(call: CallRec) -> str | None:
        """The callee of a module forward: ``model`` in ``model(x)`` / ``model.forward(x)``."""
        if call.func is None or not call.args:
            return None
        if call.attr == "forward":
            return call.receiver
        return call.func

    def _as_pass(self, call: CallRec, model: str) -> ValidationPass | None:
        scope = call.scope
        loop = call.loops[-1] if call.loops else None
        training_loop = None
        evidence: set[Evidence] = set()
        if loop is not None and self.loop_trains(loop):
            # A forward on held-out data inside the training loop (``if step % 50 == 0:
            # out = model(test_x)``) whose output is never back-propagated is a periodic
            # evaluation: the pass is that forward alone.
            if not self._val_args(call) or self._backpropagated(call):
                return None
            training_loop, loop = loop, None
            evidence.add(Evidence.DATA_NAME)
        if loop is not None:
            cur: Loop | None = loop
            while cur is not None and not self.loop_trains(cur):
                if self.held_out_loop(cur):
                    evidence.add(Evidence.DATA_NAME)
                cur = cur.parent
        elif self._val_args(call):
            evidence.add(Evidence.DATA_NAME)
        if not scope.is_module and is_eval_function(scope.name) and not self.trains(scope):
            # ``def test():`` demoing an untrained network on one input evaluates nothing:
            # an evaluation gets its data passed in or loops over batches.
            inputs = [p for p in scope.params if p != scope.self_name]
            if inputs or (loop is not None and self.over_batches(loop)):
                evidence.add(Evidence.FUNCTION_NAME)
            elif loop is None and self._switched_to_eval(scope, model, call) and any(
                    c.loops and self.loop_trains(c.loops[-1]) for c in self.callers(scope)):
                # ``def test(): model.eval(); out = model(data.x, data.edge_index)``, called
                # every epoch: a full-batch evaluation of the model being trained.
                evidence.add(Evidence.FUNCTION_NAME)
        if loop is None and not evidence:
            # A lone forward in a function of no telling name: could be anything, unless
            # a validation loop calls the function for it (``self._forward_pass(x)``).
            return self._helper_pass(call, model)
        if self._synthetic_input(call):
            return None  # ``net(torch.randn(1, 3, 32, 32))``: a smoke test of shapes
        if loop is None and training_loop is None and self._throwaway(scope, model):
            return None
        if self._backpropagated(call) or self._caller_backpropagates(call):
            return None
        # Autograd or mode switched off are signs of evaluation only around a loop over
        # batches: optimizers, initialisers and generation code switch them off too.
        over_batches = loop is not None and self.over_batches(loop)
        ctx = call.grad
        if (
            over_batches and ctx is not None and ctx.state is Grad.OFF
            and self.facts.line_matches(ctx.pos, WITH_NO_GRAD_RE)
        ):
            evidence.add(Evidence.NO_GRAD)
        if over_batches:
            mode = self.mode_local(scope, self.aliases(scope, model), call.pos)
            if mode is not None and mode.value is Mode.EVAL:
                evidence.add(Evidence.EVAL_MODE)
        if not evidence:
            return None
        return ValidationPass(scope, loop, call, model, frozenset(evidence), training_loop)

    def _switched_to_eval(self, scope: Scope, model: str, call: CallRec) -> bool:
        """The function itself puts ``model`` in eval mode before ``call``."""
        names = self.aliases(scope, model)
        return any(
            c.receiver in names and self.mode_call(c) is Mode.EVAL and c.pos < call.pos
            for c in scope.calls
        )

    def _throwaway(self, scope: Scope, model: str) -> bool:
        """``test_rnn = RNN(...)`` then ``test_rnn(test_input)`` to print the output's
        shape: a model built here that the file only ever calls (never trains, loads,
        moves, hands on or reads an attribute of) holds random weights, and a forward
        of it evaluates nothing."""
        if "." in model or not any(
            f.index is None and isinstance(f.value, ast.Call)
            and (self.call_builds_model(c, 0) if (c := self._call_rec(s, f.value)) else False)
            for s, f in self.origins(scope, model)
        ):
            return False
        uses = re.compile(rf"(?<![\w.]){re.escape(model)}\b(?!\s*(?:\(|=(?!=)))")
        if self._uncommented is None:
            self._uncommented = STRING_OR_COMMENT.sub(
                lambda m: "" if m.group(0)[0] == "#" else m.group(0), "\n".join(self.facts.lines))
        return uses.search(self._uncommented) is None

    def _helper_pass(self, call: CallRec, model: str) -> ValidationPass | None:
        """A helper that runs the model and returns the output, called from a loop with
        a sign of evaluation that does not train: the pass is that loop, checked along
        that call."""
        scope = call.scope
        if scope.is_module or self.trains(scope) or self._synthetic_input(call):
            return None
        if self._backpropagated(call) or not self._returns_output(call):
            return None
        for c in self.callers(scope):
            if not c.loops or not c.args or self.framework_owned(c.scope):
                continue
            if self.loop_trains(c.loops[-1]) or self._backpropagated(c):
                continue
            evidence = self._loop_evidence(c, self.map_names(scope, c, {model}, inward=False))
            if evidence:
                return ValidationPass(scope, c.loops[-1], call, model, frozenset(evidence),
                                      helper_call=c)
        return None

    def _loop_evidence(self, call: CallRec, models: set[str]) -> set[Evidence]:
        """The signs of evaluation of the loops around ``call`` (a loop that does not
        train), as ``_as_pass`` reads them for a forward there."""
        evidence: set[Evidence] = set()
        cur: Loop | None = call.loops[-1]
        while cur is not None and not self.loop_trains(cur):
            if self.held_out_loop(cur):
                evidence.add(Evidence.DATA_NAME)
            cur = cur.parent
        if self._val_call_args(call):
            evidence.add(Evidence.DATA_NAME)
        scope = call.scope
        loop = call.loops[-1]
        if not scope.is_module and is_eval_function(scope.name) and not self.trains(scope):
            if self.over_batches(loop):
                evidence.add(Evidence.FUNCTION_NAME)
        if self.over_batches(loop):
            ctx = call.grad
            if ctx is not None and ctx.state is Grad.OFF and self.facts.line_matches(ctx.pos, WITH_NO_GRAD_RE):
                evidence.add(Evidence.NO_GRAD)
            names = set().union(*(self.aliases(scope, m) for m in models)) if models else set()
            mode = self.mode_local(scope, names, call.pos) if names else None
            if mode is not None and mode.value is Mode.EVAL:
                evidence.add(Evidence.EVAL_MODE)
        return evidence

    def _synthetic_input(self, call: CallRec) -> bool:
        if not call.args:
            return False
        value: ast.AST | None = call.args[0].value
        name = dotted_name(value) if value is not None else None
        if name:
            found = self.origins(call.scope, name, call.pos)
            value = found[-1][1].value if found else None
        rec = self._call_rec(call.scope, value)
        return rec is not None and bool(rec.qnames & SYNTHETIC)

    def _val_args(self, call: CallRec) -> bool:
        """``model(X_test)``: the first argument, on the call's line, is held-out data."""
        if not call.args:
            return False
        first = dotted_name(call.args[0].value)
        if first is None or not is_val_name(first) or is_train_name(first):
            return False
        return self.facts.line_matches(call.pos, ARG_VAL_RE)

    def _val_call_args(self, call: CallRec) -> bool:
        """``score(model, i, test_data)`` in a loop: the call hands the helper held-out
        data, as a plain argument on the call's line, and no training data."""
        names = [dotted_name(a.value) for a in call.args if a.keyword is None]
        if any(n is not None and is_train_name(n) for n in names):
            return False
        if not any(n is not None and is_val_name(n) for n in names):
            return False
        return self.facts.line_matches(call.pos, ARGS_VAL_RE)

    def _backpropagated(self, call: CallRec) -> bool:
        """The forward's output reaches a ``backward()``/``autograd.grad`` in its scope."""
        scope = call.scope
        if call.flow is None or not call.flow.targets:
            return False
        tainted = self._tainted(call)
        for c in scope.calls:
            if c.pos < call.pos:
                continue
            if c.attr in ("backward", "manual_backward") or c.qnames & AUTOGRAD_CALLS:
                reads = names_in(c.node)
                if reads & tainted:
                    return True
        return False

    def _caller_backpropagates(self, call: CallRec, depth: int = 0) -> bool:
        """The forward's output is returned, and a caller in this module back-propagates
        what it gets back: ``logprobs, values = policy.evaluate(states, actions)`` and then
        ``loss.backward()`` in a PPO update. Such a helper computes a training signal,
        whatever its name says."""
        scope = call.scope
        if scope.is_module or depth > 1 or not self._returns_output(call):
            return False
        for c in self._calls_of(scope):
            if self._backpropagated(c) or self._caller_backpropagates(c, depth + 1):
                return True
        return False

    def _returns_output(self, call: CallRec) -> bool:
        tainted = self._tainted(call) if call.flow is not None and call.flow.targets else set()
        for ret in self.own_returns(call.scope):
            if ret.value is None:
                continue
            if names_in(ret.value) & tainted or self.facts.index.within(call.node, ret.value):
                return True
        return False

    def _calls_of(self, scope: Scope) -> list[CallRec]:
        """Calls of ``scope`` in this module: resolved ones, and for a method, any
        ``x.method(...)`` (the receiver's class is rarely in sight: ``self.policy``)."""
        found = list(self.callers(scope))
        if scope.cls is not None:
            seen = {id(c) for c in found}
            for s in self.facts.scopes:
                for c in s.calls:
                    if c.attr == scope.name and id(c) not in seen and c.scope is not scope:
                        found.append(c)
        return found

    def _tainted(self, call: CallRec) -> set[str]:
        """Names that hold the forward's output, or values computed from it, after it."""
        scope = call.scope
        assert call.flow is not None
        tainted = set(call.flow.targets)
        for f in scope.flows:
            if f.pos <= call.flow.pos or f.value is None or f.index is not None:
                continue
            if names_in(f.value) & tainted:
                tainted |= set(f.targets)
            elif isinstance(f.stmt, (ast.Assign, ast.AnnAssign)):
                tainted -= set(f.targets)  # reassigned from something else: a new value
        return tainted

    # -- mode -------------------------------------------------------------------------------

    @staticmethod
    def mode_call(call: CallRec) -> Mode | None:
        attr = call.attr
        if attr == "eval" and not call.args:
            return Mode.EVAL
        if attr == "train":
            if not call.args:
                return Mode.TRAIN
            arg = call.args[0]
            if arg.keyword is not None and arg.keyword != "mode":
                return None
            flag = _is_false_literal(arg.value)
            return Mode.UNKNOWN if flag is None else (Mode.EVAL if flag else Mode.TRAIN)
        return None

    @staticmethod
    def _matches(receiver: str | None, names: set[str]) -> bool:
        if not receiver:
            return False
        for n in names:
            if receiver == n or n.startswith(receiver + ".") or receiver.startswith(n + "."):
                return True
        return False

    def mode_local(self, scope: Scope, names: set[str], before: Pos, depth: int = 0) -> State | None:
        """The last mode ``scope`` sets on ``names`` before ``before`` (helpers followed)."""
        last: State | None = None
        for c in scope.calls:
            if c.pos >= before:
                break
            m = self.mode_call(c)
            if m is not None and self._matches(c.receiver, names):
                last = State(m, c.line, f"{_show(c, self.facts.text)} on line {c.line}")
                continue
            if depth < _MAX_DEPTH:
                helper = self.helper_of(c)
                if helper is not None and helper is not scope:
                    mapped = self.map_names(helper, c, names, inward=True)
                    if mapped:
                        effect = self.mode_local(helper, mapped, (10**9, 0), depth + 1)
                        if effect is not None:
                            last = State(effect.value, c.line,
                                         f"`{c.func}(...)` on line {c.line} calls {effect.why}")
        return last

    def map_names(self, callee: Scope, call: CallRec, names: set[str], inward: bool) -> set[str]:
        """Translate names across ``call``: the caller's names to the callee's (``inward``),
        or the callee's names back to the caller's. Arguments map to their parameters;
        ``self.x`` maps across ``self.method(...)``; globals keep their names."""
        bound = _bind_params(callee, call)
        caller = call.scope
        same_self = (
            callee.self_name is not None and caller.self_name is not None
            and call.func is not None and call.func.startswith(caller.self_name + ".")
        )
        out: set[str] = set()
        for n in names:
            root, dot, rest = n.partition(".")
            if inward:
                for p, d in bound.items():
                    if n == d or n.startswith(d + "."):
                        out.add(p + n[len(d):])
                if same_self and root == caller.self_name:
                    out.add(f"{callee.self_name}{dot}{rest}")
                elif caller.is_module or root not in caller.params and not caller.assigned(root):
                    if root not in callee.params and not callee.assigned(root):
                        out.add(n)  # a global seen by both
            else:
                if root in bound:
                    out.add(bound[root] + dot + rest)
                elif same_self and root == callee.self_name:
                    out.add(f"{caller.self_name}{dot}{rest}")
                elif root not in callee.params and not callee.assigned(root) and root != callee.self_name:
                    out.add(n)
        return out

    def mode_at(self, scope: Scope, names: set[str], before: Pos, depth: int = 0) -> State:
        """The model's mode at ``before`` in ``scope``: what this scope sets, else what the
        callers set, else how the model was built."""
        local = self.mode_local(scope, names, before)
        if local is not None:
            return local
        if depth < _MAX_DEPTH and not scope.is_module and self._comes_from_outside(scope, names):
            callers = self.callers(scope)
            if callers:
                states = []
                for c in callers:
                    mapped = self.map_names(scope, c, names, inward=False)
                    if not mapped:
                        states.append(State(Mode.UNKNOWN))
                        continue
                    caller_aliases = set().union(*(self.aliases(c.scope, m) for m in mapped))
                    s = self.mode_at(c.scope, caller_aliases, c.pos, depth + 1)
                    if s.value is Mode.TRAIN:
                        return State(Mode.TRAIN, c.line,
                                     f"it is called on line {c.line}, after {s.why}")
                    states.append(s)
                if all(s.value is Mode.EVAL for s in states):
                    return states[0]
                return State(Mode.UNKNOWN)
            elsewhere = self._mode_from_other_modules(scope, names)
            if elsewhere is not None:
                return elsewhere
            demo = self.demonstrated_train(scope, names)
            return demo if demo is not None else State(Mode.UNKNOWN)
        return self.origin_mode(scope, names, before)

    def pass_mode(self, vp: ValidationPass) -> State:
        """The model's mode at the pass's forward (on the evaluation path, for a shared
        train/eval loop: what the loop sets there, else what holds at the call)."""
        names = self.aliases(vp.scope, vp.model)
        through = vp.through
        if through is None:
            names = names | self._param_aliases(vp.scope, vp.model)
            return self.mode_at(vp.scope, names, vp.forward.pos)
        last = self._path_mode(vp.scope, names, vp.forward.pos, vp.via)
        if last is not None:
            return last
        outer = self._caller_names(vp)
        if vp.outer is not None and outer:
            # The loop's function, on its own evaluation path, then the call that takes it.
            last = self._path_mode(through.scope, outer, through.pos, vp.outer)
            if last is not None:
                return last
            outer = self._names_across(through.scope, vp.outer.call, outer)
            through = vp.outer.call
        if not outer:
            return State(Mode.UNKNOWN)
        s = self.mode_at(through.scope, outer, through.pos)
        if s.value is Mode.TRAIN:
            return State(Mode.TRAIN, through.line, f"it is called on line {through.line}, "
                         f"after {s.why}")
        return s

    def _param_aliases(self, scope: Scope, model: str) -> set[str]:
        """Parameters of ``scope`` that every same-module caller fills with ``model``
        itself, which ``scope`` reads from outside: ``def val(net, ...)`` calls
        ``net.eval()`` and runs the global ``crnn``; its one call is ``val(crnn, ...)``."""
        if scope.is_module or model.split(".", 1)[0] in scope.params:
            return set()
        callers = self.callers(scope)
        if not callers:
            return set()
        out = set()
        for param in scope.params:
            if param == scope.self_name:
                continue
            if all((passed := self.map_names(scope, call, {param}, inward=False))
                   and passed <= self.aliases(call.scope, model) for call in callers):
                out.add(param)
        return out

    def _path_mode(self, scope: Scope, names: set[str], before: Pos,
                   ec: EvalCall | None) -> State | None:
        """The last mode ``scope`` sets on ``names`` before ``before`` on the path ``ec``
        takes (every call, when None)."""
        last: State | None = None
        for c in scope.calls:
            if c.pos >= before:
                break
            runs = True if ec is None else self.flags.runs(c, ec.switch.param, ec.value)
            if runs is False:
                continue
            state: State | None = None
            m = self.mode_call(c)
            if m is not None and self._matches(c.receiver, names):
                state = State(m, c.line, f"{_show(c, self.facts.text)} on line {c.line}")
            elif (helper := self.helper_of(c)) is not None and helper is not scope:
                mapped = self.map_names(helper, c, names, inward=True)
                effect = self.mode_local(helper, mapped, (10**9, 0), 1) if mapped else None
                if effect is not None:
                    state = State(effect.value, c.line,
                                  f"`{c.func}(...)` on line {c.line} calls {effect.why}")
            if state is not None:
                # Under some other condition it may or may not run.
                last = state if runs or not c.ifs else State(Mode.UNKNOWN)
        return last

    def _caller_names(self, vp: ValidationPass) -> set[str]:
        call = vp.through
        assert call is not None
        return self._names_across(vp.scope, call, self.aliases(vp.scope, vp.model))

    def _names_across(self, scope: Scope, call: CallRec, names: set[str]) -> set[str]:
        """What ``call``'s function calls ``names`` (of ``scope``), as its caller names them."""
        mapped = self.map_names(scope, call, names, inward=False)
        return set().union(*(self.aliases(call.scope, m) for m in mapped)) if mapped else set()

    def pass_grad(self, vp: ValidationPass) -> State:
        """Autograd at the pass's forward (on the evaluation path, for a shared loop)."""
        through = vp.through
        if through is None:
            return self.grad_at(vp.forward)
        local = self.grad_local(vp.forward)
        if local is not None:
            if local.value is Grad.UNKNOWN and vp.via is not None:
                return self._flag_grad(vp.forward, vp.via) or local
            return local
        if vp.outer is not None:
            local = self.grad_local(through)
            if local is not None:
                if local.value is Grad.UNKNOWN:
                    return self._flag_grad(through, vp.outer) or local
                return local
            through = vp.outer.call
        s = self.grad_at(through)
        if s.value is Grad.ON:
            return State(Grad.ON, through.line,
                         f"its call on line {through.line} runs with autograd on")
        return s

    def _flag_grad(self, call: CallRec, ec: EvalCall) -> State | None:
        """``with torch.set_grad_enabled(train):`` around ``call``, on the path taken."""
        ctx = call.grad
        if ctx is None or not isinstance(ctx.node, (ast.With, ast.AsyncWith)):
            return None
        for item in ctx.node.items:
            c = self._call_rec(call.scope, item.context_expr)
            if c is None or not c.qnames & GRAD_SET or not c.args:
                continue
            test = flag_test(c.args[0].value, (ec.switch.param,), self.facts.text)
            if test is None or test.equals is not None:
                continue
            on = test.body_runs(ec.value)
            text = self.facts.text.code(item.context_expr)
            return State(Grad.ON if on else Grad.OFF, c.line, f"`{text}` with "
                         f"`{ec.switch.param}={ec.value!r}`")
        return None

    def pass_layers(self, vp: ValidationPass) -> bool | None:
        """Whether the pass's model holds mode-dependent layers (see
        ``mode_dependent_layers``); a shared loop's model is also looked up at its call."""
        names = self.aliases(vp.scope, vp.model)
        found = self.mode_dependent_layers(vp.scope, names, vp.forward.pos)
        through = vp.through
        if found is None and through is not None:
            outer = self._caller_names(vp)
            if outer:
                found = self.mode_dependent_layers(through.scope, outer, through.pos)
            if found is None and outer and vp.outer is not None:
                outer = self._names_across(through.scope, vp.outer.call, outer)
                call = vp.outer.call
                if outer:
                    found = self.mode_dependent_layers(call.scope, outer, call.pos)
        if found is None and through is None and self._comes_from_outside(vp.scope, names):
            found = self._callers_layers(vp.scope, names)
        return found

    def _callers_layers(self, scope: Scope, names: set[str]) -> bool | None:
        """``test(model, loader)``: the layers of what every caller in the module passes
        for the parameter (None when a caller's model is not in sight, or none calls)."""
        callers = self.callers(scope)
        found: bool | None = False if callers else None
        for call in callers:
            outer = self._names_across(scope, call, names)
            inner = self.mode_dependent_layers(call.scope, outer, call.pos) if outer else None
            if inner:
                return True
            if inner is None:
                found = None
        return found

    def _comes_from_outside(self, scope: Scope, names: set[str]) -> bool:
        for n in names:
            root = n.split(".", 1)[0]
            if root in scope.params or not scope.assigned(root):
                if not scope.assigned(n):
                    return True
        return False

    def origin_mode(self, scope: Scope, names: set[str], before: Pos) -> State:
        """The mode the model was built in, when no code on the path sets one."""
        for n in sorted(names):
            for s, f in self.origins(scope, n, before):
                chained = _chained_mode(f.value) if f.index is None else None
                if chained is not None:
                    # ``model = Net().eval()``: the last mode call of the chain decides.
                    mode, text = chained
                    return State(mode, f.pos[0], f"`{n}` is built with `{text}` on line {f.pos[0]}")
                value = _strip_passthrough(f.value) if f.value is not None else None
                call = self._call_rec(s, value)
                if call is None or f.index is not None:
                    continue  # an alias (its source is among ``names``) or unknown
                if call.qnames & WRAPPERS:
                    continue
                if call.attr == "from_pretrained" and self.call_builds_model(call, 0):
                    return State(Mode.EVAL, f.pos[0], f"`from_pretrained` (line {f.pos[0]}) "
                                 "returns the model in eval mode")
                helper = self.helper_of(call)
                if helper is not None:
                    # A builder helper: the last mode it sets is the mode it returns.
                    modes = [(c, m) for c in helper.calls if (m := self.mode_call(c)) is not None]
                    if modes:
                        c, m = modes[-1]
                        return State(m, f.pos[0], f"`{call.func}()` returns it after {_show(c, self.facts.text)} "
                                     f"on line {c.line}")
                built = self.call_builds_model(call, 0)
                if built or (built is None and (call.func or "").rpartition(".")[2][:1].isupper()):
                    return State(Mode.TRAIN, f.pos[0],
                                 f"`{n}` is built on line {f.pos[0]} and a new module starts "
                                 "in training mode")
        return self.demonstrated_train(scope, names) or State(Mode.UNKNOWN)

    def mode_dependent_layers(self, scope: Scope, names: set[str], before: Pos) -> bool | None:
        """Whether the model holds layers that behave differently in eval mode (dropout,
        batch norm...): True/False when its construction is in sight, else None."""
        for n in sorted(names):
            for s, f in self.origins(scope, n, before):
                value = _strip_passthrough(f.value) if f.value is not None else None
                if f.index is not None and isinstance(value, ast.Call):
                    # ``model, opt, dl = privacy_engine.make_private(module=model, ...)``
                    d = _returned_name(value, f.index)
                    if d:
                        return self.mode_dependent_layers(s, self.aliases(s, d), f.pos)
                call = self._call_rec(s, value)
                if call is None or f.index is not None or call.qnames & WRAPPERS:
                    continue
                return self._call_mode_dependent(call, 0)
        return None

    def _call_mode_dependent(self, call: CallRec, depth: int) -> bool | None:
        if depth > _MAX_DEPTH:
            return None
        known = [_mode_dependent_layer(q, call.node) for q in call.qnames]
        if True in known:
            return True
        if False in known and not is_module_constructor(call.qnames):
            # A layer known by name (``nn.ReLU()``, ``GCNConv(...)``); ``GINConv(
            # nn.Sequential(...))`` computes what the modules passed to it compute.
            if (call.func or "").rpartition(".")[2] not in NESTING_LAYERS:
                return False
            built_elsewhere = any(  # ``GINConv(mlp)``: a module built elsewhere
                not (isinstance(a.value, ast.Call) or _int_or_float(a.value)
                     or self.facts.text.string_literal(a.value) is not None)
                for a in call.args)
            found = self._argument_layers(call, depth)
            return None if found is False and built_elsewhere else found
        if is_module_constructor(call.qnames):
            if not any(q.startswith("torch.nn.") for q in call.qnames):
                return None  # torchvision/timm/hub: not in sight
            # ``nn.Sequential(...)``: its layers are the calls among its arguments.
            return self._argument_layers(call, depth)
        cls = self.facts.classes.get(call.func or "")
        if cls is not None and self.class_is(cls, is_module_base):
            return self._class_mode_dependent(cls, depth + 1)
        helper = self.helper_of(call) if cls is None else None
        if helper is not None:
            return self._returned_mode_dependent(helper, depth + 1)
        if cls is None and call.func and self.project is not None:
            return self.project.class_mode_dependent(call.func)  # a class of another module
        return None

    def _returned_mode_dependent(self, helper: Scope, depth: int) -> bool | None:
        """Whether what a same-module function returns holds mode-dependent layers
        (``def get_net(n): net = nn.Linear(n, 1); ...; return net``): False only when
        every ``return`` gives a model whose construction is in sight and has none."""
        returns = [r for r in self.own_returns(helper) if r.value is not None]
        if not returns or depth > _MAX_DEPTH:
            return None
        found: bool | None = False
        for ret in returns:
            value = _strip_passthrough(ret.value)
            d: bool | None = None
            name = dotted_name(value)
            if name is not None:
                d = self.mode_dependent_layers(helper, self.aliases(helper, name), (10**9, 0))
            else:
                sub = self._call_rec(helper, value)
                d = None if sub is None else self._call_mode_dependent(sub, depth)
            if d:
                return True
            if d is None:
                found = None
        return found

    def _argument_layers(self, call: CallRec, depth: int) -> bool | None:
        """Whether the layers built among ``call``'s arguments depend on the mode (True
        when one does, None when one is not in sight)."""
        found: bool | None = False
        for sub in self._nested_calls(call):
            d = self._call_mode_dependent(sub, depth + 1)
            if d:
                return True
            if d is None:
                found = None
        return found

    def _nested_calls(self, call: CallRec) -> list[CallRec]:
        inside: set[int] = set()
        stack: list[ast.AST] = [a.value for a in call.args]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Call):
                inside.add(id(node))
                stack.extend(a.value for a in args_of(node))
            elif isinstance(node, (ast.List, ast.Tuple)):
                stack.extend(e.value if isinstance(e, ast.Starred) else e for e in node.elts)
        # Direct children only: a layer's own arguments are not layers.
        direct = {id(a.value) for a in call.args}
        return [c for c in call.scope.calls if id(c.node) in inside and id(c.node) in direct]

    def _class_mode_dependent(self, cls: ClassInfo, depth: int) -> bool | None:
        if depth > _MAX_DEPTH:
            return None
        if _reads_training(cls.node, self.facts.text):
            return True  # ``self.training`` / ``F.dropout(training=...)``: mode decides
        result: bool | None = False
        if not any(q in ("torch.nn.Module", "torch.nn.modules.module.Module") for q in cls.base_qnames):
            result = None
            for b in cls.base_names:
                if b in self.facts.classes:
                    result = self._class_mode_dependent(self.facts.classes[b], depth + 1)
        for method in cls.methods.values():
            for c in method.calls:
                if any(_mode_dependent_layer(q, c.node) for q in c.qnames):
                    return True
                if c.flow is None or not any(t.startswith(f"{method.self_name}.") for t in c.flow.targets):
                    continue
                if c.flow.value is not c.node:
                    continue
                d = self._call_mode_dependent(c, depth + 1)
                if d:
                    return True
                if d is None and not _is_known_stateless(c):
                    result = None
        return result

    def deliberate_train(self, vp: ValidationPass, state: State) -> bool:
        """``model.train()`` right before a no-backward pass, with no training in between,
        is deliberate (re-estimating batch-norm statistics, MC dropout)."""
        if vp.through is not None:
            return False
        scope = vp.scope
        set_at = None
        for c in scope.calls:
            if c.line == state.line and self.mode_call(c) is Mode.TRAIN:
                set_at = c.pos
        if set_at is None or set_at >= vp.forward.pos:
            return False
        for c in scope.calls:
            if set_at < c.pos < vp.forward.pos:
                h = self.helper_of(c)
                if _is_training_call(c) or (h is not None and self.trains(h)):
                    return False
        # The pass's loop header may come before ``train()`` inside it, or after.
        return not (vp.loop is not None and self.loop_trains(vp.loop))

    def demonstrated_train(self, scope: Scope, names: set[str]) -> State | None:
        """The module puts the model (as ``scope`` names it) in training mode somewhere
        (``model.train()``)."""
        for s in self.facts.scopes:
            for c in s.calls:
                if (
                    self.mode_call(c) is Mode.TRAIN and self._matches(c.receiver, names)
                    and self._may_be_same(scope, s, c.receiver or "")
                ):
                    return State(Mode.TRAIN, c.line,
                                 f"the module puts `{c.receiver}` in training mode on line "
                                 f"{c.line} and nothing switches it to eval mode before this pass")
        return None

    @staticmethod
    def _binding(scope: Scope, root: str) -> str:
        """How ``root`` is bound in ``scope``: "self", "param", "local" or "global"."""
        if scope.is_module:
            return "global"
        if root == scope.self_name:
            return "self"
        if root in scope.params:
            return "param"
        return "local" if scope.assigned(root) else "global"

    def _may_be_same(self, scope: Scope, other: Scope, receiver: str) -> bool:
        """``receiver`` in ``other`` may be the object ``scope`` names the same way: not a
        local variable of another function, nor ``self.x`` of another class."""
        if other is scope:
            return True
        root = receiver.split(".", 1)[0]
        mine, theirs = self._binding(scope, root), self._binding(other, root)
        if mine == "self" or theirs == "self":
            return mine == theirs and scope.cls is other.cls
        if theirs == "local":
            return _encloses(other, scope)  # a closure reads its function's local
        if mine == "local":
            return _encloses(scope, other)
        return True  # parameters and globals: the object may well be passed along

    # -- autograd ---------------------------------------------------------------------------

    def grad_local(self, call: CallRec) -> State | None:
        """Autograd state set inside the call's own scope (with-blocks, set_grad_enabled
        statements, decorator), or ``None`` when the scope leaves it to its caller."""
        if call.grad is not None:
            g = call.grad
            return State(g.state, self._line_of(call.scope, g.node), f"`{g.text}`")
        last = None
        for c in call.scope.calls:
            if c.pos >= call.pos:
                break
            if c.qnames & GRAD_SET and c.args and c.grad is None and _is_statement(c):
                flag = _is_false_literal(c.args[0].value)
                state = Grad.UNKNOWN if flag is None else (Grad.OFF if flag else Grad.ON)
                last = State(state, c.line, f"`torch.set_grad_enabled(...)` on line {c.line}")
            elif c.qnames & GRAD_OFF and not _in_with_items(c) and not _is_decorator(c):
                # ``stack.enter_context(torch.no_grad())``, ``ctx = torch.no_grad()``: its
                # extent is not visible, so autograd may well be off here.
                last = State(Grad.UNKNOWN, c.line, "")
        if last is not None:
            return last
        if call.scope.decorator is not None:
            d = call.scope.decorator
            return State(d.state, None, f"`@{d.text}`")
        return None

    def _line_of(self, scope: Scope, node: ast.AST) -> int | None:
        for c in scope.calls:
            if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                    c.node is i.context_expr for i in node.items):
                return c.line
        return None

    def needs_grad(self, vp: ValidationPass) -> str | None:
        """A call in the pass that computes gradients of its own (an adversarial attack:
        ``adversary.perturb(x, y)``, ``pgd_attack(...)``): the pass cannot run under
        ``no_grad`` as a whole. Returns the callee."""
        calls = vp.loop.calls if vp.loop is not None else vp.scope.calls
        for c in calls:
            if c.func and _NEEDS_GRAD.search(c.func):
                return c.func
            if c.attr == "requires_grad_" and not (
                c.args and _is_false_literal(c.args[0].value)
            ):
                return c.func
        return None

    def frozen(self, scope: Scope, names: set[str], before: Pos) -> bool:
        """``model.requires_grad_(False)``, or ``for p in model.parameters():
        p.requires_grad = False``, before the pass: no graph is recorded."""
        for s in {scope, self.module}:
            for c in s.calls:
                if s is scope and c.pos >= before:
                    break
                if c.attr == "requires_grad_" and self._matches(c.receiver, names):
                    if c.args and _is_false_literal(c.args[0].value):
                        return True
            for loop in s.loops:
                # The whole model, unconditionally (``vgg16.features`` leaves the head).
                if (s is not scope or loop.pos < before) and _frozen_parameters(loop.node) in names:
                    return True
        return False

    def grad_at(self, call: CallRec, depth: int = 0) -> State:
        local = self.grad_local(call)
        if local is not None:
            return local
        scope = call.scope
        if scope.is_module:
            return State(Grad.ON, None, "autograd is on by default")
        if depth >= _MAX_DEPTH:
            return State(Grad.UNKNOWN)
        callers = self.callers(scope)
        if not callers:
            elsewhere = self._grad_from_other_modules(scope)
            if elsewhere is not None:
                return elsewhere
            # Nobody in the project calls it: autograd is on unless its caller elsewhere
            # switches it off. Say so only when the file trains (it runs as a script
            # with autograd on) or the function itself switches autograd off elsewhere.
            manages = any(c.grad is not None and c.grad.state is Grad.OFF for c in scope.calls)
            if self.module_trains() or manages:
                return State(Grad.ON, None, "autograd is on by default and nothing on the "
                             "path to it switches it off")
            return State(Grad.UNKNOWN)
        states = []
        for c in callers:
            s = self.grad_at(c, depth + 1)
            if s.value is Grad.ON:
                return State(Grad.ON, c.line, f"its call on line {c.line} runs with autograd on")
            states.append(s)
        if all(s.value is Grad.OFF for s in states):
            return states[0]
        return State(Grad.UNKNOWN)

    def _grad_from_other_modules(self, scope: Scope) -> State | None:
        """Autograd at the calls of this file's function in other modules of the
        project: on at a call made at a script's top level or in a module that trains,
        off where the call runs under ``no_grad``; ``None`` when nobody calls it there
        or the calls do not tell."""
        if self.project is None or scope.parent is None or not scope.parent.is_module:
            return None
        states = []
        for module, site in self.project.callers_elsewhere(scope.name):
            where = f"{self.project.relative(module.path)}:{site.line}"
            if site.no_grad:
                states.append(State(Grad.OFF, None, f"its call in {where} runs under no_grad"))
            elif not site.function or module.trains:
                return State(Grad.ON, None, f"its call in {where} runs with autograd on")
            else:
                states.append(State(Grad.UNKNOWN))
        if states and all(st.value is Grad.OFF for st in states):
            return states[0]
        return None

    def _mode_from_other_modules(self, scope: Scope, names: set[str]) -> State | None:
        """The model's mode at the calls of this file's function in other modules: the
        last ``.eval()``/``.train()`` each caller made on what it passes for the model."""
        if self.project is None or scope.parent is None or not scope.parent.is_module:
            return None
        roots = {n.split(".", 1)[0] for n in names}
        positions = [i for i, p in enumerate(scope.params) if p in roots]
        states = []
        for module, site in self.project.callers_elsewhere(scope.name):
            passed = [site.args[i] for i in positions if i < len(site.args)]
            passed += [v for k, v in site.kwargs if k in roots]
            modes = dict(site.modes)
            where = f"{self.project.relative(module.path)}:{site.line}"
            found = {modes.get(p) for p in passed if p is not None}
            if found == {"train"}:
                return State(Mode.TRAIN, None, f"it is called in {where} after "
                             f"`{passed[0]}.train()`")
            if found == {"eval"}:
                states.append(State(Mode.EVAL, None, f"its caller in {where} sets eval mode"))
            else:
                states.append(State(Mode.UNKNOWN))
        if states and all(st.value is Mode.EVAL for st in states):
            return states[0]
        return None

    def module_trains(self) -> bool:
        return any(s.trains for s in self.facts.scopes)


def _mode_dependent_layer(qname: str, node: ast.Call) -> bool | None:
    """A known layer/function that computes differently in training and eval mode (True),
    one that does not (False), or a callee not known by name (None)."""
    args = args_of(node)
    positional = sum(99 if a.star else 1 for a in args if a.keyword is None)
    kwargs = {a.keyword: _literal(a.value) for a in args if a.keyword is not None}
    if any(a.star == "**" for a in args):
        kwargs["dropout"] = kwargs["norm"] = UNKNOWN
    return mode_dependent_layer(qname, kwargs, positional)


def _literal(value: ast.AST) -> object:
    if _int_or_float(value):
        return float(value.value)  # type: ignore[attr-defined]
    if isinstance(value, ast.Constant) and (value.value is None or isinstance(value.value, bool)):
        return value.value
    return UNKNOWN


def _int_or_float(value: ast.AST) -> bool:
    return isinstance(value, ast.Constant) and type(value.value) in (int, float)


def _is_bool(value: ast.AST) -> bool:
    return isinstance(value, ast.Constant) and isinstance(value.value, bool)


def _param_attribute(scope: Scope, name: str) -> bool:
    """``name`` is ``p.x`` for a parameter ``p`` of ``scope`` (not ``self``)."""
    root, dot, rest = name.partition(".")
    return bool(dot) and "." not in rest and root in scope.params and root != scope.self_name \
        and not scope.assigned(root)


def _encloses(outer: Scope, inner: Scope) -> bool:
    s: Scope | None = inner
    while s is not None:
        if s is outer:
            return True
        s = s.parent
    return False


def _reads_training(cls: ast.ClassDef, text: SourceText) -> bool:
    """The class reads a ``.training`` attribute or passes ``training=`` (not merely
    says "training" in a comment or docstring)."""
    first = min([cls.lineno, *(d.lineno for d in cls.decorator_list)])
    lines = text.lines[first - 1:cls.end_lineno]
    if not any("training" in line for line in lines):
        return False
    return any(a.attr == "training" for a in nodes_under(cls, ast.Attribute)) or any(
        k.arg == "training" for k in nodes_under(cls, ast.keyword))


def _is_known_stateless(call: CallRec) -> bool:
    return any(q.startswith("torch.") or _mode_dependent_layer(q, call.node) is False
               for q in call.qnames)


def _bind_params(callee: Scope, call: CallRec) -> dict[str, str]:
    """Parameter of ``callee`` -> dotted name the caller passes for it."""
    params = callee.params
    offset = 1 if callee.cls is not None and call.func and "." in call.func else 0
    bound: dict[str, str] = {}
    positional = [a for a in call.args if a.keyword is None]
    for i, a in enumerate(positional):
        if a.star:
            break
        if i + offset < len(params):
            d = dotted_name(_strip_passthrough(a.value))
            if d:
                bound[params[i + offset]] = d
    for a in call.args:
        if a.keyword is not None:
            d = dotted_name(_strip_passthrough(a.value))
            if d:
                bound[a.keyword] = d
    return bound


def _alias_source(flow: FlowRec) -> str | None:
    """``src`` when ``flow`` is ``t = src`` / ``src.to(...)`` / ``DataParallel(src)``..."""
    value = flow.value
    inner = _strip_passthrough(value) if value is not None else None
    if inner is not value or isinstance(value, (ast.Name, ast.Attribute)):
        return dotted_name(inner) if inner is not None else None
    if isinstance(value, ast.Call):
        func = dotted_name(value.func) or ""
        if func.rpartition(".")[2] in ("DataParallel", "DistributedDataParallel", "DDP",
                                       "compile", "script", "AveragedModel"):
            a = _first_arg(value)
            return dotted_name(_strip_passthrough(a)) if a is not None else None
    return None


#: Calls that hand back, as a tuple, the objects passed under these keywords.
_RETURNED_KEYWORDS = {
    "make_private": ("module", "optimizer", "data_loader"),
    "make_private_with_epsilon": ("module", "optimizer", "data_loader"),
}


def _returned_name(call: ast.Call, index: int) -> str | None:
    """The argument element ``index`` of ``call``'s tuple hands back: by position
    (``accelerator.prepare(model, opt)``) or, for opacus' ``make_private``, by keyword."""
    func = call.func
    keywords = _RETURNED_KEYWORDS.get(func.attr) if isinstance(func, ast.Attribute) else None
    if keywords is not None and index < len(keywords):
        for a in args_of(call):
            if a.keyword is not None and a.keyword == keywords[index]:
                return dotted_name(a.value)
    args = [a.value for a in args_of(call) if a.keyword is None]
    return dotted_name(args[index]) if index < len(args) else None


def _strip_passthrough(expr: ast.AST) -> ast.AST:
    while (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr in MODULE_PASSTHROUGH
    ):
        expr = expr.func.value
    return expr


def _chained_mode(expr: ast.AST | None) -> tuple[Mode, str] | None:
    """The mode set by the outermost ``.eval()``/``.train(...)`` in a chain of module
    pass-through calls (``Net().to(device).eval()``), or None when there is none."""
    while (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr in MODULE_PASSTHROUGH
    ):
        attr = expr.func.attr
        args = args_of(expr)
        if attr == "eval" and not args:
            return Mode.EVAL, ".eval()"
        if attr == "train":
            if not args:
                return Mode.TRAIN, ".train()"
            arg = args[0]
            if arg.keyword is None or arg.keyword == "mode":
                flag = _is_false_literal(arg.value)
                if flag is None:
                    return Mode.UNKNOWN, ".train(...)"
                return (Mode.EVAL, ".train(False)") if flag else (Mode.TRAIN, ".train(True)")
        expr = expr.func.value
    return None


def _first_arg(call: ast.Call) -> ast.AST | None:
    for a in args_of(call):
        if a.keyword is None and not a.star:
            return a.value
        if a.keyword is not None and a.keyword in ("model", "module"):
            return a.value
    return None


def _show(call: CallRec, text: SourceText) -> str:
    args = call.args
    shown = "" if not args else "..." if len(args) > 1 else _arg_code(call.node, text)
    return f"`{call.receiver}.{call.attr}({shown})`"


def _arg_code(call: ast.Call, text: SourceText) -> str:
    """The code of a call's only argument as written (``mode=False``, ``*a``)."""
    node: ast.AST = call.keywords[0] if call.keywords else call.args[0]
    return text.code(node).strip()


def _is_decorator(call: CallRec) -> bool:
    node = call.scope.node
    return isinstance(node, FUNCTIONS) and any(call.node is d for d in node.decorator_list)


def _in_with_items(call: CallRec) -> bool:
    ctx = call.grad
    return ctx is not None and isinstance(ctx.node, (ast.With, ast.AsyncWith)) and any(
        call.node is i.context_expr for i in ctx.node.items
    )


def _is_statement(call: CallRec) -> bool:
    """A call standing alone as a statement (its result unused)."""
    return call.flow is None


def _held_out(words: tuple[str, ...]) -> bool:
    """Names (and strings) that name held-out data and no training data."""
    return any(is_val_name(w) for w in words) and not any(is_train_name(w) for w in words)


def _frozen_parameters(node: ast.AST) -> str | None:
    """``model`` for ``for p in model.parameters(): p.requires_grad = False`` (also over
    ``named_parameters()`` with ``for name, p in ...``), else ``None``."""
    if not isinstance(node, (ast.For, ast.AsyncFor)) or not isinstance(node.iter, ast.Call):
        return None
    func = node.iter.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("parameters", "named_parameters")):
        return None
    target = node.target
    if isinstance(target, ast.Tuple) and len(target.elts) == 2:
        target = target.elts[1]
        if isinstance(target, ast.Starred):
            target = target.value
    # An indented body, not a body on the ``for`` line itself.
    if not isinstance(target, ast.Name) or node.body[0].lineno == node.lineno:
        return None
    for stmt in node.body:
        # Only plain statements: ``if name not in head: p.requires_grad = False`` freezes a part.
        if (isinstance(stmt, ast.Assign) and _is_false_literal(stmt.value) and any(
                isinstance(t, ast.Attribute) and t.attr == "requires_grad"
                and isinstance(t.value, ast.Name) and t.value.id == target.id
                for t in stmt.targets)):
            return dotted_name(func.value)
    return None
