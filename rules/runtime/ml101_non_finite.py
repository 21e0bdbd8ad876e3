"""ML101: a loss, gradient or parameter becomes NaN or infinite during the run."""

from __future__ import annotations

import math
from typing import Any

from mllint.runtime_check import CheckWatcher, RuntimeCheck


class NonFinite(RuntimeCheck):
    """
    ## What it does
    Watches every training step for the first NaN or infinity: in a layer's forward
    output, in the loss, in a parameter's gradient, or in a parameter after the update.
    It names the first module (forward or backward) or the update that produced it, and
    the step.

    ## Why is this bad?
    One NaN spreads to every weight within a step or two and the run is lost, yet many
    scripts go on printing `loss nan` for hours. Where it first appears says why: a
    forward output (a `log` of zero, a division, an overflow in half precision), the loss
    (a log of a probability that reached zero), a backward (an unstable gradient such as
    `sqrt` at zero) or the update (a learning rate so large that weights overflow).

    ## Threshold
    Any non-finite value at all: there is no healthy amount of NaN. The first event of
    the run is reported; later ones are its consequences.

    ## Known problems
    Mixed-precision training with `GradScaler` produces infinite gradients on purpose
    while it searches for its scale; the scaler then skips `optimizer.step()`, which this
    check never sees, so those are not reported. Values computed outside modules (plain
    tensor code in the training loop) are attributed to the loss line.

    ## How --verify measures it
    The loss is tested at every `backward()`, and the monitor's per-parameter gradient
    and update norms (one fused norm per step) catch the backward and the update. A
    forward hook tests the outputs of the leaf modules (`torch.isfinite(...).all()`) in
    the first 3 steps, and again from the moment any non-finite value is seen, to name
    the layer. The earliest event wins; a layer is blamed only while the weights are
    still finite (otherwise it merely carries the NaN the update wrote).

    ## When it is settled
    The absence of a NaN can never be proven: a run may diverge at any step. So with
    nothing seen, ML101 counts as settled after 8 optimizer steps, and the run stops
    only once the other checks are settled too (note "settle-windows" in
    `mllint.rules.runtime._support`). A too-large learning rate or a log of zero shows
    within those first steps; a slow divergence later in training is only seen with a
    longer `--max-steps` (or by training). Once a non-finite value is seen, the check is
    settled when the layer that produced it is named, or 2 steps after the first event.
    """

    code = "ML101"
    name = "non-finite"
    summary = "A loss, gradient or parameter becomes NaN or infinite during the run"
    hint = ("Find what produced the first non-finite value (named in the evidence): guard "
            "logs and divisions with an epsilon, lower the learning rate, clip gradients, "
            "or compute the loss from logits.")
    WATCHER = "mllint.rules.runtime.ml101_non_finite:NonFiniteWatcher"


#: Steps whose module outputs are always checked (later ones only once armed).
EAGER_STEPS = 3

#: Steps after which the check is settled when no non-finite value was seen.
SETTLE_STEPS = 8
#: Steps after the first non-finite event given to the forward hook to name the layer.
BLAME_STEPS = 2

#: Order of events within one step: forward, loss, backward, update.
_FORWARD, _LOSS, _BACKWARD, _UPDATE = range(4)


class NonFiniteWatcher(CheckWatcher):
    check = NonFinite

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        #: (step, phase, description, site) of the first non-finite loss.
        self.first: tuple[int, int, str, Any] | None = None
        #: (step, module, "NaN"/"infinite") of the first non-finite module output seen
        #: once armed: the layer that produces (or, with non-finite weights, carries) it.
        self.forward_seen: tuple[int, Any, str] | None = None

    def install(self) -> None:
        self.monitor = self.rt.monitor()
        self.rt.on_backward(self._backward)
        self.rt.add_step_post_hook(self._after_step)
        self._armed = False
        self._armed_at = 0
        self._unhook: Any = self.rt.add_forward_hook(self._forward)

    def _arm(self) -> None:
        """Once a non-finite loss, gradient or weight is seen, watch the module outputs
        of the following forwards too, to name the layer. Otherwise outputs are checked
        only in the first ``EAGER_STEPS`` steps (where initialisation and data problems
        show), and the forward hook is removed after them: checking every output of
        every step, or merely having a global hook, costs more than the budget allows."""
        if not self._armed:
            self._armed_at = self.rt.step
        self._armed = True
        if self._unhook is None and self.forward_seen is None:
            self._unhook = self.rt.add_forward_hook(self._forward)

    def _after_step(self, optimizer: Any) -> None:
        if self.monitor.first_nonfinite_step is not None and not self._armed:
            self._arm()
        done = self.forward_seen is not None or (self.rt.step >= EAGER_STEPS
                                                 and not self._armed)
        if done and self._unhook is not None:
            self._unhook()
            self._unhook = None

    def _note(self, step: int, phase: int, what: str, site: Any) -> None:
        if self.first is None or (step, phase) < self.first[:2]:
            self.first = (step, phase, what, site)

    def _forward(self, module: Any, args: tuple, output: Any) -> None:
        if self.forward_seen or (self.rt.step >= EAGER_STEPS and not self._armed):
            return
        torch = self.rt.torch
        if not torch.is_grad_enabled() or next(iter(module.children()), None) is not None:
            return
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for t in outputs:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                if not bool(torch.isfinite(t.detach()).all()):
                    kind = "NaN" if bool(torch.isnan(t.detach()).any()) else "infinite"
                    self.forward_seen = (self.rt.step + 1, module, kind)
                    return

    def _backward(self, tensor: Any) -> None:
        torch = self.rt.torch
        if self.first is not None or not isinstance(tensor, torch.Tensor):
            return
        if tensor.numel() == 1 and tensor.is_floating_point():
            value = float(tensor.detach())
            if not math.isfinite(value):
                self._note(self.rt.step + 1, _LOSS, f"the loss was {value}",
                           self.rt.user_site())
                self._arm()

    def settled(self) -> bool:
        if self.forward_seen is not None:
            return True
        if self._armed:
            return self.rt.step >= self._armed_at + BLAME_STEPS
        return self.rt.step >= SETTLE_STEPS

    def findings(self) -> list:
        events = []
        if self.first is not None:
            events.append(self.first)
        names = None
        for pid, record in self.monitor.params.items():
            for step, phase, attr in ((record.nonfinite_grad_step, _BACKWARD, "gradient"),
                                      (record.nonfinite_value_step, _UPDATE, "value")):
                if step is None:
                    continue
                names = names if names is not None else self.monitor.param_names()
                name, root = names.get(pid, ("a parameter", None))
                owner = _owner(root, name)
                what = (f"the backward gave `{name}` a non-finite gradient" if phase == _BACKWARD
                        else f"the optimizer step made `{name}` non-finite")
                site = self.monitor.site_of(owner) if owner is not None else None
                if phase == _UPDATE:
                    site = self._optimizer_site_of(pid) or site
                events.append((step, phase, what, site))
        if not events:
            return []
        step, phase, what, site = min(events, key=lambda e: (e[0], e[1]))
        if self.forward_seen is not None and phase in (_LOSS, _BACKWARD):
            # The loss or a gradient went first; a module output was caught soon after:
            # a layer producing non-finite values from finite weights is the cause.
            at, module, kind = self.forward_seen
            weights_ok = all(r.nonfinite_value_step is None or r.nonfinite_value_step >= at
                             for r in self.monitor.params.values())
            if weights_ok and self.monitor.site_of(module) is not None:
                what += (f"; the forward of {_describe(module, self.monitor)} produced "
                         f"{kind} values (seen at step {at})")
                phase, site = _FORWARD, self.monitor.site_of(module)
        site = site or self.monitor.loss_site
        if site is None:
            return []
        where = {_FORWARD: "forward", _LOSS: "loss", _BACKWARD: "backward",
                 _UPDATE: "update"}[phase]
        return [self.finding(
            site.path, site.line,
            f"A NaN or infinity first appeared at step {step}, in the {where}: {what}. "
            "From there it spreads to every weight and the run is lost.",
            f"at step {step} {what} (first non-finite value of the run, in the {where})",
            step=step, phase=where,
        )]

    def _optimizer_site_of(self, pid: int) -> Any:
        for optimizer in self.monitor.optimizers():
            if any(id(p) == pid for p in self.monitor.optimizer_params(optimizer)):
                return self.monitor.site_of(optimizer)
        return None


def _owner(root: Any, name: str) -> Any:
    if root is None:
        return None
    path = name.rpartition(".")[0]
    try:
        return root.get_submodule(path) if path else root
    except AttributeError:
        return None


def _describe(module: Any, monitor: Any) -> str:
    site = monitor.site_of(module)
    where = f" (built at {site.short()})" if site is not None else ""
    return f"`{type(module).__name__}`{where}"
