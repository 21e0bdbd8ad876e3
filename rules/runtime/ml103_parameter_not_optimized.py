"""ML103: a trainable parameter of a model being trained is held by no optimizer."""

from __future__ import annotations

from typing import Any

from mllint.rules.runtime._support import name_list, numel, optimizer_label
from mllint.runtime_check import CheckWatcher, RuntimeCheck


class ParameterNotOptimized(RuntimeCheck):
    """
    ## What it does
    For each model whose parameters an optimizer holds (a model being trained), finds
    its trainable parameters that receive gradients but are in no optimizer, and names
    them.

    ## Why is this bad?
    Their gradients are computed at every step and never applied: the layer stays at its
    initial values while the rest trains around it. The usual causes are an optimizer
    built over part of the model (`model.encoder.parameters()`), or built before a layer
    was added or replaced (`model.fc = nn.Linear(...)` after `Adam(model.parameters())`,
    the classic fine-tuning slip).

    ## Threshold
    Any such parameter that had a gradient at one of the run's optimizer steps. Frozen
    parameters (`requires_grad=False`) are never reported, nor are parameters that get no
    gradient either (they are not trained by anything, on purpose or not: see ML102).

    ## Known problems
    A parameter updated by hand (an EMA, a manual update rule) next to an optimizer is
    reported; give it `requires_grad=False` if it needs no gradient.

    ## How --verify measures it
    The monitor knows every module and optimizer the script built. At each step the
    check takes the top-level models sharing a parameter with some optimizer and looks
    for their parameters that hold a gradient but are in no optimizer's param groups.
    It looks at optimizer steps 1, 2, 4, 8, 16... (the layout rarely changes later).

    ## When it is settled
    After its look at the 4th optimizer step (it has looked at steps 1, 2 and 4): by
    then the optimizers and the models they train are built and every parameter the
    forward uses has had a gradient. A layer swapped in or first used later in the
    budget is seen only if the run goes on for another check.
    """

    code = "ML103"
    name = "parameter-not-optimized"
    summary = "A trainable parameter of a model being trained is held by no optimizer"
    hint = ("Build the optimizer after the model is final and over all its trainable "
            "parameters (`model.parameters()`), or freeze the others with "
            "`requires_grad_(False)`.")
    WATCHER = "mllint.rules.runtime.ml103_parameter_not_optimized:ParameterNotOptimizedWatcher"


#: Optimizer steps (all optimizers together) after which the check is settled.
SETTLE_STEPS = 4


class ParameterNotOptimizedWatcher(CheckWatcher):
    check = ParameterNotOptimized

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        #: id(parameter) -> (qualified name, root module, optimizer holding the most of it)
        self.unoptimized: dict[int, tuple[str, Any, Any]] = {}
        self._checked_steps = 0

    def install(self) -> None:
        self.monitor = self.rt.monitor()
        self.rt.add_step_pre_hook(self._before_step)

    def settled(self) -> bool:
        return self._checked_steps >= SETTLE_STEPS

    def _before_step(self, optimizer: Any) -> None:
        self._checked_steps += 1
        if self._checked_steps & (self._checked_steps - 1):
            return  # steps 1, 2, 4, 8, ...: the layout rarely changes after the start
        monitor = self.monitor
        holders: dict[int, Any] = {}
        for opt in monitor.optimizers():
            for p in monitor.optimizer_params(opt):
                holders[id(p)] = opt
        for root in monitor.root_modules():
            named = list(root.named_parameters())
            held = [holders[id(p)] for _, p in named if id(p) in holders]
            if not held:
                continue  # not being trained by any optimizer
            main = max(set(held), key=held.count)
            for name, p in named:
                if (p.requires_grad and id(p) not in holders and p.grad is not None
                        and id(p) not in self.unoptimized):
                    self.unoptimized[id(p)] = (name, root, main)

    def findings(self) -> list:
        monitor = self.monitor
        by_optimizer: dict[int, list[tuple[str, Any, Any]]] = {}
        for entry in self.unoptimized.values():
            by_optimizer.setdefault(id(entry[2]), []).append(entry)
        params_by_id = {id(p): p for root in monitor.root_modules() for p in root.parameters()}
        out = []
        for entries in by_optimizer.values():
            optimizer = entries[0][2]
            site = monitor.site_of(optimizer)
            if site is None:
                continue
            labels = [name for name, _, _ in entries]
            root = type(entries[0][1]).__name__
            tensors = [params_by_id[pid] for pid, e in self.unoptimized.items()
                       if e in entries and pid in params_by_id]
            who = optimizer_label(optimizer, monitor)
            out.append(self.finding(
                site.path, site.line,
                f"`{root}` is trained by {who}, but {len(labels)} of its trainable "
                f"parameter(s) are in no optimizer: {name_list(labels)}. They get "
                "gradients that nothing applies, so they stay at their initial values.",
                f"{name_list(labels)} ({len(labels)} tensor(s), {numel(tensors):,} values) "
                f"of `{root}` had gradients but no optimizer held them; {who} holds the "
                "rest of the model",
                parameters=labels[:20], values=numel(tensors),
            ))
        return out
