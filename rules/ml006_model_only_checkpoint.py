"""ML006 model-only-checkpoint: a training checkpoint without the optimizer's state."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

import libcst as cst

from mllint.analysis.flow import FLOW_METADATA, Flow, source_of
from mllint.analysis.syntax import (
    dotted_name,
    keyword_arg,
    positional_arg,
    qualified_names,
)
from mllint.analysis.training import Optimizer, TrainingMap, looks_like_optimizer
from mllint.gates.training import CHECKPOINT_CALL, SAVE_FUNCTIONS
from mllint.prefilter import GAP, any_layout
from mllint.project.summaries import path_words
from mllint.rule import FileContext, Invalid, Rule, Valid
from mllint.types import Verdict
from mllint.verify.probe import Probe

DEEPCOPY = frozenset({"copy.deepcopy", "copy.copy"})
DICT = frozenset({"builtins.dict", "collections.OrderedDict"})
#: Methods of frameworks that write a full, resumable checkpoint themselves
#: (``accelerator.save_state``, Lightning's ``trainer.save_checkpoint``).
FRAMEWORK_SAVES = frozenset({"save_state", "save_checkpoint"})

# What a path or function name says about the file it writes.
_RESUME_WORDS = re.compile(r"ckpt|checkpoint|resume|last|latest", re.IGNORECASE)
_EXPORT_WORDS = re.compile(r"best|final|export|inference|deploy", re.IGNORECASE)
#: Payload keys that are only there to resume a run: where it stopped and the state of
#: everything that evolves with the steps.
_RESUME_FIELD = re.compile(r"epoch|step|iter|sched|scaler|amp|best", re.IGNORECASE)
#: An ``if`` around the save that keeps the best model so far.
_BEST_TEST = re.compile(r"best|improv|lowest|highest|(^|\W)(min|max)", re.IGNORECASE)
#: An ``if`` that picks the last epoch: ``epoch == args.epochs - 1``.
_FINAL_TEST = re.compile(r"(==|>=).*(epochs|num_?epoch|n_?epoch|max_?epoch|total|last|final)"
                         r"|(epochs|num_?epoch|n_?epoch|max_?epoch|total|last|final).*(==|<=)",
                         re.IGNORECASE)
#: Paths nobody can find again to resume from.
_RANDOM_PATH = re.compile(r"uuid|random|tempfile|mkstemp|mkdtemp|(^|\W)tmp", re.IGNORECASE)
#: Payload keys any file holds; sharing them proves nothing either.
_GENERIC_KEYS = frozenset({"model", "state_dict", "net", "weights", "params"})
_CHECKPOINT_FUNCTION = re.compile(r"ckpt|checkpoint", re.IGNORECASE)
_OPTIMIZER_KEY = re.compile(r"optim|(^|_)opt($|_)", re.IGNORECASE)
_NOT_MODEL = re.compile(r"sched|scaler|sampler|loader|dataset", re.IGNORECASE)
_EPOCH = re.compile(r"epoch", re.IGNORECASE)
#: Networks that follow another one instead of being trained by an optimizer.
_COPY_NAME = re.compile(r"target|ema|averag|swa|teacher|momentum_|_momentum|shadow", re.IGNORECASE)


@dataclass(frozen=True)
class Payload:
    """What a ``torch.save`` payload holds, as far as the module shows."""

    weights: str | None = None  # the model whose weights it holds
    optimizer: bool = False  # it (may) hold the optimizer's state
    unknown: bool = False  # built somewhere the module does not show
    keys: frozenset[str] = frozenset()  # the keys of a dict payload

    def __or__(self, other: "Payload") -> "Payload":
        return Payload(self.weights or other.weights, self.optimizer or other.optimizer,
                       self.unknown or other.unknown, self.keys | other.keys)

    @property
    def weights_only(self) -> bool:
        return self.weights is not None and not self.optimizer and not self.unknown


@dataclass(frozen=True)
class _Save:
    call: cst.Call
    payload: Payload
    path_text: str
    containers: tuple[cst.CSTNode, ...]
    #: The path arguments and the values assigned to them, for matching with loads.
    path_exprs: tuple[cst.BaseExpression, ...] = ()
    #: What identifies the file when a helper of another module builds its path
    #: (``FunctionSummary.weights_path_words``).
    words: frozenset[str] = frozenset()


class ModelOnlyCheckpoint(Rule):
    """
    ## What it does
    Flags a `torch.save` (or a call of a project helper that `torch.save`s its argument,
    in this module or another) that writes a checkpoint during training (inside the
    training loop or an epoch loop, in a function called from it, or in a function named
    like `save_checkpoint`) whose payload holds the model's weights but not the
    optimizer's state, when something says the file is meant to resume training from:
    - the project loads it back in code that resumes (`--resume`, `start_epoch`), matched
      by the path (the same option, variable or file name) or by the payload's keys;
    - the payload carries resume fields (`epoch`, `step`, `iteration`, scheduler or scaler
      state, the best metric) but no optimizer state;
    - it is written periodically under a checkpoint name (`checkpoint`, `ckpt`, `last`,
      `latest`, `resume`).
    The optimizer may be built in the module, returned by a factory of the project
    (`optimizer = build_optimizer(cfg, model)`, in this module or another, also as one
    element of a returned tuple or picked from a dict of optimizers by an option), or
    handed in on a parameter by every caller in another module
    (`fit_one_epoch(model, ..., optimizer)` called from `train.py`; an epoch function
    called inside another module's loop saves once per epoch). A helper of another module
    that writes only the `state_dict()` of the model it is given
    (`save_model(args, model, optimizer)`) is a weights-only save where it is called.
    A save in the script's own top-level code before any optimizer is built (the initial
    weights) is not a training checkpoint.

    ## Why is this bad?
    Optimizers carry state: momentum buffers (SGD), first and second moments (Adam,
    AdamW), step counts. A checkpoint without it cannot resume training faithfully: the
    resumed run restarts the optimizer from zero, the first updates are far too large
    (Adam's bias correction starts over), the loss spikes, and the "resumed" run is not
    the run that was interrupted. Nothing fails; the curves just differ.

    ## Known problems
    Exports are not flagged: the best model so far (saved under a metric-improvement test
    such as `if acc > best_acc:` or to a `best`-named path, unless the project resumes
    from that very file), the final model (after the loop, or under `if epoch ==
    args.epochs - 1:`), files only scripts that never train read (`test.py`, `sample.py`),
    and files at random or temporary paths. Weights-only saves are also left alone when
    a full checkpoint is written during training, or when a framework writes one
    (`accelerator.save_state`). A plain `torch.optim.SGD` (momentum absent or a literal 0)
    keeps no state, so when every optimizer the checkpoint concerns is one, nothing is
    lost; momentum given as a variable is assumed non-zero. An optimizer that only
    arrives as a parameter whose callers the project does not show (or that some caller
    fills with something else) is not known to keep state, and its checkpoints are not
    judged. Payloads built by functions of other modules are trusted.

    ## How --verify confirms it
    Intercepts `torch.save` at the flagged line (the file is never written to the user's
    path) and inspects the payload for optimizer state (a nested dict with `state` and
    `param_groups`, or an optimizer object) while a live optimizer holds state. The
    evidence names the optimizer class and the size of the state that would be lost.
    """

    code = "ML006"
    name = "model-only-checkpoint"
    summary = "A training checkpoint saves the model's weights but not the optimizer's state"
    hint = (
        "Save a dict with `model.state_dict()` and `optimizer.state_dict()` (and the "
        "scheduler's and scaler's, the epoch) and restore all of them when resuming."
    )
    # With factories (``optimizer = build_optimizer(cfg)``, ``opt = make(cfg)``) and
    # checkpoint helpers of other modules (``utils.save_checkpoint(state)``), the words
    # the gate looks for: a save or checkpoint call, and an optimizer-like name
    # (``looks_like_optimizer``: opt, optim, engine) or a library optimizer class.
    # (Literal-first, so ``re`` can skip ahead: ``save(?<![A-Za-z0-9]save)`` is a ``save``
    # no letter or digit precedes; ``save_pretrained`` exports are no checkpoint helper.)
    # The gate needs a call: of a name ``CHECKPOINT_CALL`` matches (``torch.save(``,
    # ``utils.save_checkpoint (``), or of what ``from torch import save as S`` binds.
    # (Names are runs of word characters no layout splits; ``GAP`` before the ``(``.)
    REQUIRES = (any_layout(rf"(?:save(?<![A-Za-z0-9]save)(?![A-Za-z0-9])(?!_pretrained)|Save"
                           rf"|checkpoint|Checkpoint|ckpt|snapshot)\w*{GAP}\("
                           rf"|save(?<![A-Za-z0-9]save){GAP}as(?![A-Za-z0-9_])"),
                any_layout(r"optim|Optim|OPTIM|opt(?<![A-Za-z0-9]opt)(?![a-z])"
                           r"|Opt(?<![A-Za-z0-9]Opt)(?![a-z])|OPT(?<![A-Za-z0-9]OPT)(?![A-Z])"
                           r"|engine|Engine|ENGINE|AdamW|Adafactor"))
    GATE = "mllint.gates.training:checkpoint_may_flag"
    PROBE = "mllint.rules.ml006_model_only_checkpoint:ModelOnlyCheckpointProbe"
    METADATA_DEPENDENCIES = FLOW_METADATA

    INVALID = [
        Invalid(
            """
            import torch

            model = torch.nn.Linear(4, 2)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for epoch in range(10):
                for x, y in loader:
                    optimizer.zero_grad()
                    torch.nn.functional.mse_loss(model(x), y).backward()
                    optimizer.step()
                torch.save(model.state_dict(), f"checkpoints/epoch_{epoch}.pt")
            """,
            lines=(10,),
        ),
        Invalid(
            """
            import torch

            def save_checkpoint(state, path="checkpoints/last.pt"):
                torch.save(state, path)

            def main(model, loader):
                opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
                for epoch in range(5):
                    train_one_epoch(model, loader, opt)
                    save_checkpoint({"epoch": epoch, "state_dict": model.state_dict()})
            """,
            lines=(4,),
        ),
        Invalid(  # momentum from a variable may be non-zero; the other optimizer keeps state
            """
            import torch

            class Trainer:
                def __init__(self, model, gen, args):
                    self.model = model
                    self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=args.momentum)
                    self.opt_g = torch.optim.SGD(gen.parameters(), 0.1)

                def train(self, loader, epochs):
                    for epoch in range(epochs):
                        for x, y in loader:
                            self.optimizer.zero_grad()
                            self.model(x).sum().backward()
                            self.optimizer.step()
                        torch.save(self.model.state_dict(), "checkpoints/last.pt")
            """,
            lines=(15,),
        ),
        Invalid(  # the initial weights, written before the optimizer exists, are not flagged
            """
            import os
            import torch
            from model import Net

            MODEL_PATH = "checkpoints/model.pyt"
            model = Net()
            if not os.path.exists(MODEL_PATH):
                torch.save(model.state_dict(), MODEL_PATH)
            model.load_state_dict(torch.load(MODEL_PATH))


            def train(model, optimiser, epochs, loader):
                for e in range(epochs):
                    for x, y in loader:
                        loss = model(x).mean()
                        optimiser.zero_grad()
                        loss.backward()
                        optimiser.step()
                    torch.save(model.state_dict(), MODEL_PATH)


            optimiser = torch.optim.Adam(model.parameters())
            train(model, optimiser, 10, loader)
            """,
            lines=(19,),
        ),
    ]
    VALID = [
        Valid(  # snapshots for evaluation; the file loaded before training only shares their extension
            """
            import torch
            import torch.nn.functional as F

            teacher = QNetwork()
            teacher.load_state_dict(torch.load(f"{args.teacher_name}.cleanrl_model"))
            student = QNetwork()
            optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
            for step in range(100_000):
                obs, target = replay.sample()
                loss = F.mse_loss(student(obs), teacher(obs).detach())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step % 10_000 == 0:
                    model_path = f"runs/{run_name}/{args.exp_name}-{step}.cleanrl_model"
                    torch.save(student.state_dict(), model_path)
                    print(evaluate(model_path))
            """
        ),
        Valid(
            """
            import torch

            model = torch.nn.Linear(4, 2)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for epoch in range(10):
                for x, y in loader:
                    optimizer.zero_grad()
                    torch.nn.functional.mse_loss(model(x), y).backward()
                    optimizer.step()
                torch.save({"epoch": epoch, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict()}, "checkpoints/last.pt")
            torch.save(model.state_dict(), "checkpoints/model_final.pt")
            """
        ),
        Valid(
            """
            import torch

            def fit(model, loader, optimizer, evaluate):
                best = 0.0
                for epoch in range(10):
                    for x, y in loader:
                        optimizer.zero_grad()
                        model(x).sum().backward()
                        optimizer.step()
                    ckpt = {"model": model.state_dict(), "epoch": epoch}
                    ckpt["optimizer"] = optimizer.state_dict()
                    torch.save(ckpt, "checkpoints/last.pt")
                    if evaluate(model) > best:
                        torch.save(model.state_dict(), "checkpoints/best.pt")
            """
        ),
        Valid(
            """
            import torch

            model = torch.nn.Linear(4, 2)
            for epoch in range(3):
                torch.save(model.state_dict(), f"checkpoints/epoch_{epoch}.pt")
            """
        ),
        Valid(
            """
            import torch
            from accelerate import Accelerator

            def train(model, loader, accelerator: Accelerator):
                optimizer = torch.optim.AdamW(model.parameters())
                for step, (x, y) in enumerate(loader):
                    accelerator.backward(model(x).sum())
                    optimizer.step()
                    optimizer.zero_grad()
                    if step % 100 == 0:
                        accelerator.save_state("checkpoints/")
                        torch.save(accelerator.unwrap_model(model).state_dict(), "weights_best.pt")
            """
        ),
        Valid(  # plain SGD (no momentum, or a literal 0) keeps no state: nothing to lose
            """
            import torch

            def load_train_objs(model):
                return torch.optim.SGD(model.parameters(), lr=1e-3)

            class Trainer:
                def __init__(self, model, optimizer):
                    self.model = model
                    self.optimizer = optimizer
                    self.opt_head = torch.optim.SGD(model.head.parameters(), 0.1, 0, weight_decay=1e-4)
                    self.opt_tail = torch.optim.SGD(model.tail.parameters(), lr=0.1, momentum=0.0)

                def train(self, loader, epochs):
                    for epoch in range(epochs):
                        for x, y in loader:
                            self.optimizer.zero_grad()
                            self.model(x).sum().backward()
                            self.optimizer.step()
                        ckp = self.model.module.state_dict()
                        torch.save(ckp, "checkpoint.pt")
            """
        ),
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self.flow = Flow(self)
        self.training = TrainingMap(self.flow)
        self._loops: list[cst.For | cst.While] = []
        self._top_functions: list[cst.FunctionDef] = []
        self._saves: list[tuple[cst.Call, tuple[cst.CSTNode, ...]]] = []
        self._framework_saves: list[tuple[str, tuple[cst.CSTNode, ...]]] = []
        #: Calls named like saving, which may run another module's checkpoint helper.
        self._helper_calls: list[tuple[cst.Call, tuple[cst.CSTNode, ...]]] = []
        #: Every call by the callee's last name (``save_model`` for ``self.save_model(m)``).
        self._calls_by_name: dict[str, list[cst.Call]] = {}
        # ``name["key"] = value`` and ``name.update(...)``: entries added to a dict later.
        self._dict_items: dict[
            tuple[int, str], list[tuple[cst.CSTNode | None, cst.BaseExpression]]
        ] = {}

    # -- gathering -----------------------------------------------------------------------

    def visit_Module(self, node: cst.Module) -> None:
        self.training.enter(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.training.enter(node)
        if isinstance(self.flow.parent(node), cst.Module):
            self._top_functions.append(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.training.exit(original_node)

    def visit_For(self, node: cst.For) -> None:
        self._loops.append(node)
        self.training.enter(node)

    def leave_For(self, original_node: cst.For) -> None:
        self.training.exit(original_node)

    def visit_While(self, node: cst.While) -> None:
        self._loops.append(node)
        self.training.enter(node)

    def leave_While(self, original_node: cst.While) -> None:
        self.training.exit(original_node)

    def visit_Call(self, node: cst.Call) -> None:
        self.training.call(node)
        self.training.constructor(node)
        func = node.func
        last = func.attr.value if isinstance(func, cst.Attribute) else (
            func.value if isinstance(func, cst.Name) else None)
        if last is not None:
            self._calls_by_name.setdefault(last, []).append(node)
        if isinstance(func, cst.Attribute) and func.attr.value in ("save", "update"):
            if func.attr.value == "update":
                self._note_update(func.value, node)
            elif qualified_names(self, func) & SAVE_FUNCTIONS:
                self._saves.append((node, self.training.containers))
        elif isinstance(func, cst.Name) and "save" in func.value:
            if qualified_names(self, func) & SAVE_FUNCTIONS:
                self._saves.append((node, self.training.containers))
        if isinstance(func, cst.Attribute) and func.attr.value in FRAMEWORK_SAVES:
            self._framework_saves.append((func.attr.value, self.training.containers))
        elif (isinstance(func, (cst.Name, cst.Attribute)) and node.args
              and CHECKPOINT_CALL.search(func.attr.value if isinstance(func, cst.Attribute)
                                         else func.value)):
            self._helper_calls.append((node, self.training.containers))

    def visit_Assign(self, node: cst.Assign) -> None:
        self.training.assign([t.target for t in node.targets], node.value)
        for t in node.targets:
            # ``ckpt["optimizer"] = optimizer.state_dict()`` adds to a dict built earlier.
            target = t.target
            if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
                index = target.slice[0].slice
                key = index.value if isinstance(index, cst.Index) else index
                self._note_item(target.value, key, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.training.assign([node.target], node.value)

    def _note_item(self, name: cst.Name, key: cst.BaseExpression | None,
                   value: cst.BaseExpression) -> None:
        scope = self.flow.scope(name)
        self._dict_items.setdefault((id(scope), name.value), []).append((key, value))

    def _note_update(self, receiver: cst.BaseExpression, call: cst.Call) -> None:
        if isinstance(receiver, cst.Name):
            for arg in call.args:
                self._note_item(receiver, arg.keyword, arg.value)

    # -- deciding ------------------------------------------------------------------------

    def leave_Module(self, original_node: cst.Module) -> None:
        # Optimizers handed in on parameters, asked only of the functions that save
        # themselves (each question reads the callers in other modules).
        saving = {id(c) for _, containers in self._saves for c in containers}
        for func in self._top_functions:
            if id(func) in saving:
                self.training.parameters(func)
        self.training.finish()
        if not self.training.optimizers:
            return  # nothing to lose: the module trains no optimizer it builds or gets
        in_training = self._functions_run_during_training()
        saves = [self._save(call, 0, containers) for call, containers in self._saves]
        saves += self._helper_saves()
        saves = [s for s in saves if s is not None]
        during = [s for s in saves if self._during_training(s, in_training)]
        full = [s for s in during if not s.payload.weights_only and (
            s.payload.optimizer or s.payload.unknown)]
        framework = [f for f, containers in self._framework_saves
                     if not self._defined_here(f)]
        if full or framework:
            return  # a resumable checkpoint exists; weights-only files are exports
        for save in during:
            if not save.payload.weights_only:
                continue
            if self._never_optimized(save.payload.weights):
                continue  # a target or averaged copy: no optimizer updates it
            stateful = [o for o in self.training.optimizers_for(save.payload.weights)
                        if not o.stateless]
            if not stateful:
                continue  # SGD without momentum: its state_dict holds nothing to lose
            if self._before_every_optimizer(save, stateful):
                continue  # the initial weights, written before any optimizer exists
            evidence = self._resume_evidence(save, during)
            if evidence is None:
                continue  # an export: nothing says this file is meant to resume from
            optimizer = stateful[0]
            opt_name = optimizer.target or "optimizer"
            model = save.payload.weights
            self.report(
                save.call,
                f"This checkpoint, written during training, holds `{model}`'s weights but "
                f"not the state of `{opt_name}` ({_describe(optimizer)}), and {evidence}: "
                "resuming from it silently restarts the optimizer, so the resumed run "
                f"diverges from the interrupted one. Save `{opt_name}.state_dict()` "
                "alongside the weights and load both when resuming.",
                data={"model": model, "optimizer": opt_name, "evidence": evidence},
            )

    def _before_every_optimizer(self, save: _Save, optimizers: list[Optimizer]) -> bool:
        """A save in the module's own top-level code (a notebook cell, a script's body),
        on a line before every optimizer is built: it runs before there is any optimizer
        state to keep (``if not exists(path): torch.save(model.state_dict(), path)`` right
        after building the model)."""
        if any(isinstance(c, (cst.FunctionDef, cst.ClassDef, cst.For, cst.While))
               for c in save.containers):
            return False
        line = self.flow.line(save.call)
        return all(o.line > line for o in optimizers)

    def _save(self, call: cst.Call, payload_position: int,
              containers: tuple[cst.CSTNode, ...], payload_keyword: str = "obj") -> _Save | None:
        payload_arg = keyword_arg(call, payload_keyword) or positional_arg(call, payload_position)
        if payload_arg is None:
            return None

        def is_flag(value: cst.BaseExpression) -> bool:
            values = [v for v in self.flow.resolve(value, 3) if v is not value]
            return _is_flag(value) or bool(values) and all(_is_flag(v) for v in values)

        # ``save_checkpoint(state, is_best, path)``: a flag (``is_best = top1 > best``)
        # says where else the file is copied, not what this file is.
        others = [a.value for a in call.args if a is not payload_arg and not is_flag(a.value)]
        resolved = [v for value in others for v in self.flow.resolve(value, 3) if v is not value]
        path_text = " ".join(source_of(v) for v in [*others, *resolved])
        return _Save(call, self._payload(payload_arg.value, 5), path_text, containers,
                     tuple(others + resolved))

    def _helper_saves(self) -> list[_Save | None]:
        """Calls of another module's function that writes its argument with
        ``torch.save`` (``utils.save_checkpoint(state, path)``): the argument is the
        payload, the call site is where it is saved."""
        view = self.context.project
        if view is None:
            return []
        out = []
        for call, containers in self._helper_calls:
            callee = dotted_name(call.func)
            found = view.function(callee) if callee is not None else None
            if found is None or found[0].path == str(view.path):
                continue
            summary = found[1]
            params = summary.params
            shift = 1 if params and params[0] in ("self", "cls") else 0
            if summary.saved_params:
                position = min(summary.saved_params) - shift
                if position >= 0:
                    out.append(self._save(call, position, containers,
                                          params[min(summary.saved_params)]))
            elif summary.saved_weights:
                out.append(self._weights_save(call, min(summary.saved_weights), shift, params,
                                              containers, summary.weights_path_words))
        return out

    def _weights_save(self, call: cst.Call, index: int, shift: int, params: tuple[str, ...],
                      containers: tuple[cst.CSTNode, ...],
                      words: frozenset[str]) -> _Save | None:
        """``save_model(args, model, optimizer)`` whose body writes only
        ``model.state_dict()``: the weights of what this call passes for ``model``,
        to the file the helper names (even when it is handed the optimizer too)."""
        arg = keyword_arg(call, params[index]) or positional_arg(call, index - shift)
        model = dotted_name(arg.value) if arg is not None else None
        if model is None:
            return None
        others = [a.value for a in call.args if a is not arg]
        path_text = " ".join([*(source_of(v) for v in others), *sorted(words)])
        return _Save(call, Payload(weights=model), path_text, containers, (), words)

    def _resume_evidence(self, save: _Save, saves: list[_Save] = ()) -> str | None:
        """Why this weights-only file is meant to resume training from, if anything says
        so; ``None`` for an export (best or final model, a file only inference reads)."""
        if _RANDOM_PATH.search(save.path_text) or self._under_test(save, _FINAL_TEST):
            return None
        best = self._is_best(save)
        # A best model's payload keys (``epoch``, ``acc``) match the resume code's reads
        # also when another checkpoint of the same keys, written regardless of the
        # metric (``_last``), is the one resumed from: then only its path could tell.
        others = any(o is not save and not self._is_best(o) and o.payload.keys & save.payload.keys
                     for o in saves)
        same_file, into_model, inference_only = self._loaded_back(save, by_keys=not (best and others))
        if inference_only:
            return None
        if same_file:
            return same_file
        if best:
            return None
        if into_model:
            return into_model
        fields = sorted(k for k in save.payload.keys if _RESUME_FIELD.search(k))
        if fields:
            return f"its payload carries {', '.join(f'`{k}`' for k in fields)} for resuming"
        if _RESUME_WORDS.search(save.path_text):
            return "it is written periodically under a checkpoint name"
        return None

    def _never_optimized(self, model: str | None) -> bool:
        """``self.critic_target``, ``ema_model``: named as a copy that follows another
        network (target networks, weight averages, teachers), and no optimizer of the
        module is built over it."""
        if model is None or not _COPY_NAME.search(model.rpartition(".")[2]):
            return False
        return model not in self.training.model_names()

    def _is_best(self, save: _Save) -> bool:
        """Saved under a metric-improvement test or to a ``best``/``final``-named path."""
        return self._under_test(save, _BEST_TEST) or bool(_EXPORT_WORDS.search(save.path_text))

    def _under_test(self, save: _Save, pattern: re.Pattern[str]) -> bool:
        """Whether an ``if`` around the save (in its function) tests what ``pattern``
        describes, or, for a save in a helper of this module, one around every call of
        the helper (``if best_acc < acc: save_model(model)``)."""
        return self._tested(save.call, pattern, helper=True)

    def _tested(self, node: cst.CSTNode, pattern: re.Pattern[str], helper: bool) -> bool:
        for anc in self.flow.ancestors(node):
            if isinstance(anc, cst.FunctionDef):
                calls = self._calls_by_name.get(anc.name.value, []) if helper else []
                return bool(calls) and all(self._tested(c, pattern, helper=False) for c in calls)
            if isinstance(anc, cst.If) and pattern.search(source_of(anc.test)):
                return True
        return False

    def _loaded_back(self, save: _Save, by_keys: bool = True) -> tuple[str | None, str | None, bool]:
        """How the project loads this file to resume training, if it does: matched as
        the same file (path words or the payload's keys), or - in this script - by the
        model the state is loaded into before training starts
        (``netG.load_state_dict(torch.load(opt.netG))``); and whether only scripts that
        use a trained model load it."""
        view = self.context.project
        if view is None:
            return None, None, False
        words: set[str] = set(save.words)
        for expr in save.path_exprs:
            try:
                words |= path_words(ast.parse(source_of(expr).strip(), mode="eval"))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
        keys = save.payload.keys - _GENERIC_KEYS if by_keys else frozenset()

        def same_file(site) -> bool:
            return bool(site.words & words) or bool(site.keys & keys)

        into = None
        # The saving script's own loads first: they are the ones the message should cite
        # when several scripts resume files of the same kind.
        loads = sorted(view.resuming_loads(), key=lambda ms: ms[0].path != str(view.path))
        for module, site in loads:
            where = f"{view.relative(module.path)}:{site.line}"
            if same_file(site):
                return f"the project loads it back to resume training ({where})", None, False
            names_other_file = any(w.startswith("'") or _PRETRAINED.search(w) for w in site.words)
            if (into is None and module.path == str(view.path)
                    and (site.before_training or site.resumes)
                    and save.payload.weights in site.into and not names_other_file):
                into = (f"the script loads `{save.payload.weights}`'s weights back before "
                        f"training (line {site.line})")
        inference = bool(view.inference_loads(same_file))
        return None, into, inference and into is None

    # -- when is a save a training checkpoint? ------------------------------------------

    def _is_training_loop(self, node: cst.CSTNode) -> bool:
        if isinstance(node, (cst.For, cst.While)):
            if self.training.trains(node) is not None:
                return True
            if isinstance(node, cst.For):
                head = source_of(node.target) + " " + source_of(node.iter)
                return bool(_EPOCH.search(head))
        return False

    def _functions_run_during_training(self) -> set[cst.FunctionDef]:
        """Functions called (directly or through others) from inside a training loop."""
        found: set[cst.FunctionDef] = set(self._epochs_run_elsewhere())
        changed = True
        calls = self.training.calls()
        while changed:
            changed = False
            for callees, site in calls:
                inside = any(self._is_training_loop(c) or c in found for c in site.containers)
                if not inside:
                    continue
                for f in callees:
                    if f not in found:
                        found.add(f)
                        changed = True
        return found

    def _epochs_run_elsewhere(self) -> list[cst.FunctionDef]:
        """Top-level functions that train (an epoch's loop over batches, with its
        optimizer steps) and that another module of the project calls inside its own loop
        (``for epoch in ...: fit_one_epoch(...)``): what they save after their loop is
        saved every epoch, while training goes on."""
        view = self.context.project
        if view is None:
            return []
        saving = {id(c) for _, containers in self._saves for c in containers}
        return [f for f in self._top_functions
                if id(f) in saving and self.training.trains(f) is not None
                and view.called_in_loop_elsewhere(f.name.value)]

    def _during_training(self, save: _Save, in_training: set[cst.FunctionDef]) -> bool:
        if any(self._is_training_loop(c) or c in in_training for c in save.containers):
            return True
        # The names below say "checkpoint", but only a module that trains writes one
        # during training (a test that builds a legacy checkpoint file does not).
        module = save.containers[0] if save.containers else None
        if module is None or self.training.trains(module) is None:
            return False
        if any(isinstance(c, cst.FunctionDef) and _CHECKPOINT_FUNCTION.search(c.name.value)
               for c in save.containers):
            return True
        # Named for resuming, e.g. saved from a callback the module does not call itself;
        # but not a final export written after this function's own training loop.
        if _RESUME_WORDS.search(save.path_text) and not _EXPORT_WORDS.search(save.path_text):
            owner = next(c for c in reversed(save.containers)
                         if isinstance(c, (cst.FunctionDef, cst.Module)))
            return not self._has_training_loop(owner)
        return False

    def _has_training_loop(self, owner: cst.CSTNode) -> bool:
        return any(
            self._is_training_loop(loop) and self._inside(loop, owner) for loop in self._loops
        )

    def _inside(self, node: cst.CSTNode, owner: cst.CSTNode) -> bool:
        for anc in self.flow.ancestors(node):
            if anc is owner:
                return True
            if isinstance(anc, cst.FunctionDef):
                return False
        return isinstance(owner, cst.Module)

    def _defined_here(self, name: str) -> bool:
        return bool(self.training.callees(name, True) or self.training.callees(name, False))

    # -- what does a payload hold? -------------------------------------------------------

    def _payload(self, expr: cst.BaseExpression, depth: int) -> Payload:
        if depth <= 0:
            return Payload(unknown=True)
        if isinstance(expr, cst.Dict):
            return self._dict_payload(
                [(e.key, e.value) for e in expr.elements if isinstance(e, cst.DictElement)],
                [e.value for e in expr.elements if isinstance(e, cst.StarredDictElement)],
                depth,
            )
        if isinstance(expr, cst.Call):
            func = expr.func
            names = qualified_names(self, func)
            if isinstance(func, cst.Attribute) and func.attr.value == "state_dict":
                return self._state_dict_payload(func.value)
            if names & DEEPCOPY and expr.args:
                return self._payload(expr.args[0].value, depth - 1)
            if names & DICT:
                return self._dict_payload(
                    [(a.keyword, a.value) for a in expr.args if a.keyword is not None],
                    [a.value for a in expr.args if a.keyword is None],
                    depth,
                )
            # Built by a helper: trust it when it is handed the optimizer.
            return Payload(optimizer=self._mentions_optimizer(expr), unknown=True)
        if isinstance(expr, (cst.Name, cst.Attribute)):
            dotted = dotted_name(expr)
            if dotted is not None and self.training.is_optimizer(dotted):
                return Payload(optimizer=True)
            if dotted is not None and dotted in self.training.model_names():
                return Payload(weights=dotted)
            values = self.flow.values(expr) if (
                isinstance(expr, cst.Name) or self.flow.is_self(expr.value)
            ) else []
            if not values:
                return Payload(unknown=True)
            result = Payload()
            for v in values:
                if self._builds_module(v):
                    result = result | Payload(weights=dotted or source_of(expr))
                else:
                    result = result | self._payload(v, depth - 1)
            if isinstance(expr, cst.Name):
                items = self._dict_items.get((id(self.flow.scope(expr)), expr.value), [])
                result = result | self._dict_payload(
                    [(k, v) for k, v in items if k is not None],
                    [v for k, v in items if k is None],
                    depth,
                )
            return result
        return Payload(unknown=True)

    def _payload_item(self, value: cst.BaseExpression, depth: int) -> Payload:
        """A dict value: only its weights or optimizer state matter, not epochs or losses."""
        p = self._payload(value, depth)
        return Payload(p.weights, p.optimizer or self._mentions_optimizer(value), False, p.keys)

    def _dict_payload(self, items, splats, depth: int) -> Payload:
        result = Payload()
        for key, value in items:
            key_text = _key_text(key)
            if key_text:
                result = result | Payload(keys=frozenset({key_text}))
            if _OPTIMIZER_KEY.search(key_text):
                result = result | Payload(optimizer=True)
            result = result | self._payload_item(value, depth - 1)
        for splat in splats:
            result = result | self._payload(splat, depth - 1)
        return result

    def _state_dict_payload(self, receiver: cst.BaseExpression) -> Payload:
        dotted = dotted_name(receiver) or source_of(receiver)
        if self.training.is_optimizer(dotted):
            return Payload(optimizer=True)
        if _NOT_MODEL.search(dotted.rsplit(".", 1)[-1]) or self._is_scheduler(receiver):
            return Payload()
        return Payload(weights=dotted)

    def _builds_module(self, value: cst.BaseExpression) -> bool:
        """``Net(...)`` of a same-module class or ``torch.nn.X(...)``: the model object."""
        while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and (
            value.func.attr.value in ("to", "cuda", "cpu", "float", "double", "half")
        ):
            value = value.func.value
        if not isinstance(value, cst.Call):
            return False
        if self.flow.class_of(value.func) is not None:
            return True
        return any(n.startswith("torch.nn.") and n.rsplit(".", 1)[-1][:1].isupper()
                   for n in qualified_names(self, value.func))

    def _is_scheduler(self, receiver: cst.BaseExpression) -> bool:
        if not isinstance(receiver, cst.Name):
            return False
        for v in self.flow.resolve(receiver, 2):
            if isinstance(v, cst.Call):
                names = qualified_names(self, v.func)
                if any("lr_scheduler" in n or n.endswith("GradScaler") for n in names):
                    return True
        return False

    def _mentions_optimizer(self, expr: cst.CSTNode) -> bool:
        finder = _NameFinder()
        expr.visit(finder)
        return any(self.training.is_optimizer(n) or looks_like_optimizer(n) for n in finder.names)


#: Words of a path that names weights to start from, not a run to go on with.
_PRETRAINED = re.compile(r"pre_?train|teacher|imagenet|backbone|init", re.IGNORECASE)


def _is_flag(expr: cst.BaseExpression) -> bool:
    """A truth value: a comparison, ``and``/``or``/``not``, ``True``/``False``."""
    if isinstance(expr, cst.Name):
        return expr.value in ("True", "False")
    return isinstance(expr, (cst.Comparison, cst.BooleanOperation)) or (
        isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not))


def _describe(optimizer: Optimizer) -> str:
    """The optimizer's class (or the factory that built it) and what it keeps."""
    if " or " in optimizer.kind:  # one of several classes, as a caller's option picks
        names = " or ".join(f"`{k.rsplit('.', 1)[-1]}`" for k in optimizer.kind.split(" or "))
        return f"{names}, as the caller picks: its per-parameter state (moments, momentum)"
    cls = optimizer.kind.rsplit(".", 1)[-1]
    if not cls[:1].isupper():
        return f"built by `{optimizer.kind}()`: {_state_of(optimizer)}"
    article = "an" if cls[:1] in "AEIOU" else "a"
    return f"{article} `{cls}`: {_state_of(optimizer)}"


def _state_of(optimizer: Optimizer | None) -> str:
    """What an optimizer keeps between steps, for messages; never claims momentum
    buffers for an SGD built without momentum."""
    kind = optimizer.kind if optimizer is not None else ""
    cls = kind.rsplit(".", 1)[-1].lower()
    if cls.startswith("sgd"):
        if optimizer.maybe_momentum:
            return "its momentum buffers, if momentum is non-zero"
        return "its momentum buffers"
    if "adam" in cls or cls in ("lamb", "nadam", "radam", "adamax"):
        return "its first and second moments and step counts"
    return "its per-parameter state, e.g. momentum"


def _key_text(key: cst.CSTNode | None) -> str:
    if isinstance(key, cst.SimpleString):
        value = key.evaluated_value
        return value if isinstance(value, str) else ""
    if isinstance(key, cst.Name):
        return key.value
    return "" if key is None else source_of(key)


class _NameFinder(cst.CSTVisitor):
    """Dotted names mentioned in an expression."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        name = dotted_name(node)
        if name is not None:
            self.names.append(name)
            return False
        return True

    def visit_Name(self, node: cst.Name) -> None:
        self.names.append(node.value)


class ModelOnlyCheckpointProbe(Probe):
    """Inspects each payload saved at the flagged line for the optimizer's state.

    Optimizers are learnt from the step hook (every optimizer that steps), held weakly.
    The payload counts as holding optimizer state when it contains, at any depth, an
    ``Optimizer`` object or a dict with both ``state`` and ``param_groups`` keys (the
    shape of ``Optimizer.state_dict()``).
    """

    #: How deep the payload's dicts/lists are searched.
    MAX_DEPTH = 6

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.optimizers: Any = None
        self.saves = 0
        self.saves_without_state = 0
        self.lost: tuple[str, int, int] | None = None  # class, tensors, bytes at a save
        self.kept = False
        #: Class of the optimizer the finding names, once found at a save.
        self.named_class: str | None = None

    def install(self) -> None:
        import weakref

        self.optimizers = weakref.WeakSet()
        self.rt.add_step_post_hook(self.optimizers.add)
        self.rt.on_save(self._save)

    def _save(self, obj: Any, f: Any) -> None:
        frame = self.rt.stack_in(self.finding)
        if frame is None:
            return
        self.saves += 1
        if self._holds_optimizer_state(obj, self.MAX_DEPTH):
            self.kept = True
            return
        self.saves_without_state += 1
        named = self._named_optimizer(frame)
        if named is not None:
            # The finding names this optimizer: its state is what the payload loses.
            self.named_class = type(named).__name__
            entry = self._state_size(named)
            if entry[1] and (self.lost is None or entry[2] > self.lost[2]):
                self.lost = entry
            return
        live = [self._state_size(opt) for opt in list(self.optimizers)]
        live = [entry for entry in live if entry[1]]
        if live:
            biggest = max(live, key=lambda entry: entry[2])
            if self.lost is None or biggest[2] > self.lost[2]:
                self.lost = biggest

    def _named_optimizer(self, frame: Any) -> Any:
        """The optimizer the finding names, looked up in the saving frame (or the
        frames around it, up to the training loop), else None."""
        name = self.finding.data.get("optimizer")
        if not name:
            return None
        while frame is not None:
            try:
                found = self.rt.object_of(frame, name)
            except LookupError:
                frame = frame.f_back
                continue
            return found if isinstance(found, self.rt.torch.optim.Optimizer) else None
        return None

    def _holds_optimizer_state(self, obj: Any, depth: int) -> bool:
        if depth <= 0:
            return False
        if isinstance(obj, self.rt.torch.optim.Optimizer):
            return True
        if isinstance(obj, dict):
            if "state" in obj and "param_groups" in obj:
                return True
            return any(self._holds_optimizer_state(v, depth - 1) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return any(self._holds_optimizer_state(v, depth - 1) for v in obj)
        return False

    def _state_size(self, optimizer: Any) -> tuple[str, int, int]:
        """(class name, tensors, bytes) of what ``optimizer.state`` holds now."""
        torch = self.rt.torch
        tensors = size = 0
        for per_param in list(optimizer.state.values()):
            for value in per_param.values() if isinstance(per_param, dict) else ():
                if isinstance(value, torch.Tensor):
                    tensors += 1
                    size += value.numel() * value.element_size()
        return type(optimizer).__name__, tensors, size

    def settled(self) -> bool:
        return self.lost is not None or self.kept

    def verdict(self) -> Verdict | None:
        if not self.saves:
            return None
        where = f"torch.save at line {self.finding.line}"
        var = self.finding.data.get("optimizer")
        if self.lost is not None:
            name, tensors, size = self.lost
            who = f"`{var}` ({name})" if var and self.named_class == name else name
            return self.confirmed(
                f"{where} wrote a payload without optimizer state while {who} held "
                f"{tensors} state tensor(s) ({_bytes(size)}): resuming from this file "
                "restarts the optimizer",
                optimizer=name, state_tensors=tensors, state_bytes=size, saves=self.saves,
            )
        if self.kept:
            return self.refuted(f"the payload of {where} holds the optimizer's state",
                                saves=self.saves)
        if self.named_class is not None:
            held = f"`{var}` ({self.named_class}) held"
        else:
            names = sorted({type(o).__name__ for o in list(self.optimizers)})
            held = (f"{', '.join(names)} held" if names
                    else "no optimizer had stepped yet, so there was")
        return self.refuted(
            f"{where} wrote no optimizer state, but {held} no state to lose when it ran "
            "(e.g. plain SGD without momentum keeps none)",
            saves=self.saves,
        )


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


# -- fix (mllint.fixes): kept apart from the check above -------------------------------------

from mllint.fixes import Fix, FixFile, FixSpec  # noqa: E402

_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def _fix(file: FixFile, finding) -> Fix | None:
    optimizer = finding.data.get("optimizer")
    save = file.node_for(finding, cst.Call)
    if save is None or not save.args or not isinstance(optimizer, str):
        return None
    root = optimizer.split(".")[0]
    if not _DOTTED.match(optimizer) or not (root == "self" or file.binds(root)):
        return None  # a class name, not a variable the checkpoint can read
    payload = save.args[0].value
    state = f"{optimizer}.state_dict()"
    if isinstance(payload, cst.Dict) and payload.elements:
        keys = {e.key.value.strip("'\"") for e in payload.elements
                if isinstance(e, cst.DictElement) and isinstance(e.key, cst.SimpleString)}
        key = next(k for k in ("optimizer", "optimizer_state_dict", "optim") if k not in keys)
        edit = file.append_item(payload.elements, f'"{key}": {state}')
        return Fix(f"Save `{state}` in the checkpoint", False, (edit,))
    if isinstance(payload, cst.Call) and file.source(payload).endswith(".state_dict()"):
        weights = file.source(payload)
        new = f'{{"model": {weights}, "optimizer": {state}}}'
        return Fix(f"Save `{state}` in the checkpoint", False, (file.replace(payload, new),))
    return None


ModelOnlyCheckpoint.FIX = FixSpec(
    safety="""
    The fix adds the optimizer's state to the checkpoint: `"optimizer":
    opt.state_dict()` in the dict passed to `torch.save`, or, when only
    `model.state_dict()` is saved, a dict `{"model": ..., "optimizer": ...}` in its place.
    It is always unsafe: the code that loads the checkpoint must change with it (read
    `ckpt["model"]`, call `opt.load_state_dict(ckpt["optimizer"])`), and the file grows by
    the optimizer's state (twice the model's size for Adam). A checkpoint built in a
    variable, or an optimizer the rule knows only by its class, has no fix.
    """,
    make=_fix,
)
