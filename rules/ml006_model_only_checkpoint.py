"""ML006 model-only-checkpoint: a training checkpoint without the optimizer's state."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import libcst as cst

from mllint.analysis import dotted_name, keyword_arg, positional_arg, qualified_names
from mllint.analysis_flow import FLOW_METADATA, Flow, source_of
from mllint.analysis_training import Optimizer, TrainingMap, looks_like_optimizer
from mllint.gates.training import SAVE_FUNCTIONS
from mllint.rule import FileContext, Invalid, Rule, Valid
from mllint.types import Verdict
from mllint.verify.probe import Probe

DEEPCOPY = frozenset({"copy.deepcopy", "copy.copy"})
DICT = frozenset({"builtins.dict", "collections.OrderedDict"})
#: Methods of frameworks that write a full, resumable checkpoint themselves
#: (``accelerator.save_state``, Lightning's ``trainer.save_checkpoint``).
FRAMEWORK_SAVES = frozenset({"save_state", "save_checkpoint"})

# What a path or function name says about the file it writes.
_RESUME_WORDS = re.compile(r"ckpt|checkpoint|resume|last", re.IGNORECASE)
_EXPORT_WORDS = re.compile(r"best|final|export|inference|deploy", re.IGNORECASE)
_CHECKPOINT_FUNCTION = re.compile(r"ckpt|checkpoint", re.IGNORECASE)
_OPTIMIZER_KEY = re.compile(r"optim|(^|_)opt($|_)", re.IGNORECASE)
_NOT_MODEL = re.compile(r"sched|scaler|sampler|loader|dataset", re.IGNORECASE)
_EPOCH = re.compile(r"epoch", re.IGNORECASE)


@dataclass(frozen=True)
class Payload:
    """What a ``torch.save`` payload holds, as far as the module shows."""

    weights: str | None = None  # the model whose weights it holds
    optimizer: bool = False  # it (may) hold the optimizer's state
    unknown: bool = False  # built somewhere the module does not show

    def __or__(self, other: "Payload") -> "Payload":
        return Payload(self.weights or other.weights, self.optimizer or other.optimizer,
                       self.unknown or other.unknown)

    @property
    def weights_only(self) -> bool:
        return self.weights is not None and not self.optimizer and not self.unknown


@dataclass(frozen=True)
class _Save:
    call: cst.Call
    payload: Payload
    path_text: str
    containers: tuple[cst.CSTNode, ...]


class ModelOnlyCheckpoint(Rule):
    """
    ## What it does
    Flags a `torch.save` that writes a checkpoint during training (inside the training
    loop or an epoch loop, in a function called from it, in a function named like
    `save_checkpoint`, or to a path named `ckpt`/`checkpoint`/`resume`/`last`) whose
    payload holds the model's weights but not the optimizer's state, in a module that
    builds an optimizer, when no full checkpoint is written during training.

    ## Why is this bad?
    Optimizers carry state: momentum buffers (SGD), first and second moments (Adam,
    AdamW), step counts. A checkpoint without it cannot resume training faithfully: the
    resumed run restarts the optimizer from zero, the first updates are far too large
    (Adam's bias correction starts over), the loss spikes, and the "resumed" run is not
    the run that was interrupted. Nothing fails; the curves just differ.

    ## Known problems
    Weights saved for inference (a "best" or "final" model) inside the loop are fine when
    a full checkpoint is also written; they are flagged only when they are the sole
    checkpoint of the run. Payloads built by functions of other modules are trusted.
    A plain `torch.optim.SGD` (momentum absent or a literal 0) keeps no state, so when
    every optimizer the checkpoint concerns is one, nothing is lost and nothing is
    flagged; momentum given as a variable is assumed non-zero.

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
    # ``torch.save`` (however imported: ``torch.save`` or an import naming ``save``) and an
    # optimizer constructor: the import that makes a name resolve to one of those
    # ``analysis.is_optimizer_constructor`` accepts spells "optim" as a word (torch.optim,
    # timm.optim, bitsandbytes.optim), "optimizers" (apex), "torch_optimizer", or
    # transformers' AdamW / Adafactor. The gate then resolves both calls through imports.
    # (Written literal-first, ``save(?<!\wsave)`` for ``\bsave``, so ``re`` can skip ahead.)
    REQUIRES = (r"save(?<!\wsave)(?!\w)",
                r"optim(?<!\woptim)(?!\w)|optimizers|torch_optimizer|AdamW|Adafactor")
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
    ]
    VALID = [
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
        self._saves: list[tuple[cst.Call, tuple[cst.CSTNode, ...]]] = []
        self._framework_saves: list[tuple[str, tuple[cst.CSTNode, ...]]] = []
        # ``name["key"] = value`` and ``name.update(...)``: entries added to a dict later.
        self._dict_items: dict[
            tuple[int, str], list[tuple[cst.CSTNode | None, cst.BaseExpression]]
        ] = {}

    # -- gathering -----------------------------------------------------------------------

    def visit_Module(self, node: cst.Module) -> None:
        self.training.enter(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.training.enter(node)

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
        self.training.finish()
        if not self.training.optimizers:
            return  # nothing to lose: the module trains no optimizer it builds
        in_training = self._functions_run_during_training()
        saves = []
        for call, containers in self._saves:
            payload_arg = keyword_arg(call, "obj") or positional_arg(call, 0)
            path_arg = keyword_arg(call, "f") or positional_arg(call, 1)
            if payload_arg is None:
                continue
            payload = self._payload(payload_arg.value, 5)
            path_text = source_of(path_arg.value) if path_arg is not None else ""
            if path_arg is not None:
                path_text = " ".join([path_text, *self._path_strings(path_arg.value)])
            saves.append(_Save(call, payload, path_text, containers))
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
            stateful = [o for o in self.training.optimizers_for(save.payload.weights)
                        if not o.stateless]
            if not stateful:
                continue  # SGD without momentum: its state_dict holds nothing to lose
            optimizer = stateful[0]
            opt_name = (optimizer.target or optimizer.kind) if optimizer else "optimizer"
            model = save.payload.weights
            self.report(
                save.call,
                f"This checkpoint, written during training, holds `{model}`'s weights but "
                f"not the state of `{opt_name}` ({_state_of(optimizer)}): "
                "resuming from it silently restarts the optimizer, so the resumed run "
                f"diverges from the interrupted one. Save `{opt_name}.state_dict()` "
                "alongside the weights and load both when resuming.",
                data={"model": model, "optimizer": opt_name},
            )

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
        found: set[cst.FunctionDef] = set()
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

    def _path_strings(self, expr: cst.BaseExpression) -> list[str]:
        """String values a path variable was given (``path = "ckpt/last.pt"``)."""
        return [source_of(v) for v in self.flow.resolve(expr, 3) if v is not expr]

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
        return Payload(p.weights, p.optimizer or self._mentions_optimizer(value), False)

    def _dict_payload(self, items, splats, depth: int) -> Payload:
        result = Payload()
        for key, value in items:
            key_text = _key_text(key)
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

    def install(self) -> None:
        import weakref

        self.optimizers = weakref.WeakSet()
        self.rt.add_step_post_hook(self.optimizers.add)
        self.rt.on_save(self._save)

    def _save(self, obj: Any, f: Any) -> None:
        if self.rt.stack_in(self.finding) is None:
            return
        self.saves += 1
        if self._holds_optimizer_state(obj, self.MAX_DEPTH):
            self.kept = True
            return
        self.saves_without_state += 1
        live = [self._state_size(opt) for opt in list(self.optimizers)]
        live = [entry for entry in live if entry[1]]
        if live:
            biggest = max(live, key=lambda entry: entry[2])
            if self.lost is None or biggest[2] > self.lost[2]:
                self.lost = biggest

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
        if self.lost is not None:
            name, tensors, size = self.lost
            return self.confirmed(
                f"{where} wrote a payload without optimizer state while {name} held "
                f"{tensors} state tensor(s) ({_bytes(size)}): resuming from this file "
                "restarts the optimizer",
                optimizer=name, state_tensors=tensors, state_bytes=size, saves=self.saves,
            )
        if self.kept:
            return self.refuted(f"the payload of {where} holds the optimizer's state",
                                saves=self.saves)
        names = sorted({type(o).__name__ for o in list(self.optimizers)}) or ["no optimizer"]
        return self.refuted(
            f"{where} wrote no optimizer state, but {', '.join(names)} held none to lose "
            "when it was called (e.g. plain SGD keeps no state)",
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
    optimizer, model = finding.data.get("optimizer"), finding.data.get("model")
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
