"""ML102: a parameter handed to an optimizer never receives a gradient."""

from __future__ import annotations


from mllint.rules.runtime._support import name_list, numel, optimizer_label
from mllint.runtime_check import CheckWatcher, RuntimeCheck


class ParameterWithoutGradient(RuntimeCheck):
    """
    ## What it does
    Finds trainable parameters (`requires_grad=True`) held by an optimizer that receive
    no gradient (`.grad` None or exactly zero) at any step of the run, and names them.

    ## Why is this bad?
    Such a parameter never learns: it belongs to a layer the forward does not use, to a
    branch cut from the graph (`.detach()`, `.item()`, a NumPy round trip, a
    `torch.no_grad()` block), or to a module whose output never reaches the loss. The
    model trains anyway, so nothing crashes; it just has less capacity than its author
    thinks, or one of its parts stays at its initial values.

    ## Threshold
    No gradient in every one of at least 3 measured steps of the optimizer that holds
    the parameter (the monitor measures the first three steps, then one in four). A parameter used at all gets a non-zero gradient in its first step; three
    steps leave room for a `zero_grad(set_to_none=False)` pattern and for a step skipped
    now and then.

    ## Known problems
    Parts of a model that train only in some phases (a head enabled after warm-up,
    experts a router did not pick in the first steps, a GAN part stepped by another loss
    than the one that reaches it) are reported if the run is too short to reach those
    phases; a longer `--max-steps` tells them apart.

    ## How --verify measures it
    The training monitor reads every held parameter's gradient norm just before each
    measured optimizer step (one fused norm per step), so a gradient that exists but is
    exactly zero counts as none.

    ## When it is settled
    Once every trainable parameter held by an optimizer that has stepped either had a
    gradient (it can no longer be reported) or went without one for 3 measured steps
    (it is reported): with the monitor's schedule, after step 3 for a single optimizer.
    A parameter that only starts getting gradients later in the budget is then reported
    (see Known problems). Optimizers that have not stepped yet are not waited for.
    """

    code = "ML102"
    name = "parameter-without-gradient"
    summary = "A trainable parameter held by an optimizer never receives a gradient"
    hint = ("Use the layer in the forward pass, remove it, or freeze it with "
            "`requires_grad_(False)`; look for a `.detach()`, `.item()` or `no_grad()` "
            "between it and the loss.")
    WATCHER = "mllint.rules.runtime.ml102_parameter_without_gradient:ParameterWithoutGradientWatcher"


#: Steps of the holding optimizer without any gradient before a parameter is reported.
MIN_STEPS = 3


class ParameterWithoutGradientWatcher(CheckWatcher):
    check = ParameterWithoutGradient

    def install(self) -> None:
        self.monitor = self.rt.monitor()

    def settled(self) -> bool:
        monitor = self.monitor
        if not monitor.optimizer_records:
            return False  # no optimizer step measured yet
        for record in monitor.optimizer_records.values():
            optimizer = record.ref()
            for p in monitor.optimizer_params(optimizer) if optimizer is not None else ():
                if not p.requires_grad:
                    continue
                seen = monitor.params.get(id(p))
                if seen is None or (seen.grad_steps == 0 and seen.steps_seen < MIN_STEPS):
                    return False
        return True

    def findings(self) -> list:
        monitor = self.monitor
        names = monitor.param_names()
        out = []
        for optimizer in monitor.optimizers():
            site = monitor.site_of(optimizer)
            if site is None:
                continue
            starved = []
            steps = 0
            for p in monitor.optimizer_params(optimizer):
                record = monitor.params.get(id(p))
                if record is None or not p.requires_grad:
                    continue
                steps = max(steps, record.steps_seen)
                if record.steps_seen >= MIN_STEPS and record.grad_steps == 0:
                    starved.append(p)
            if not starved:
                continue
            labels = [names.get(id(p), (f"a {tuple(p.shape)} parameter", None))[0]
                      for p in starved]
            roots = {type(names[id(p)][1]).__name__ for p in starved if id(p) in names}
            of = f" of `{'`, `'.join(sorted(roots))}`" if roots else ""
            who = optimizer_label(optimizer, monitor)
            out.append(self.finding(
                site.path, site.line,
                f"{len(starved)} trainable parameter(s){of} held by {who} never received "
                f"a gradient: {name_list(labels)}. They never learn: they are not used in "
                "the forward, or a `.detach()`/`no_grad()` cuts them from the loss.",
                f"{name_list(labels)} ({len(starved)} tensor(s), {numel(starved):,} values) "
                f"had no gradient (None or zero) at any of the {steps} measured step(s) of "
                f"{who}",
                parameters=labels[:20], values=numel(starved), steps=steps,
            ))
        return out
