"""ML107: ReLU units that output zero for every sample of several batches."""

from __future__ import annotations

import collections
import sys
from typing import Any

from mllint.runtime_check import CheckWatcher, RuntimeCheck

#: Batches a unit must stay silent for, in a row, at the end of the run.
WINDOW = 3
#: Share of a layer's units that must be dead for the layer to be reported.
SHARE = 0.5
#: Layers narrower than this are not judged (one unit is a large share of them).
MIN_UNITS = 8
#: ReLU calls are measured in one step out of this many (dead units stay dead, and
#: measuring every call would cost more than the step budget allows).
SAMPLE_EVERY = 4
#: A layer with fewer silent units than this share is taken as healthy for settling.
CLEAR_SHARE = 0.1
#: Optimizer steps that take ``WINDOW`` measured batches (steps 1, 5 and 9).
SETTLE_STEPS = (WINDOW - 1) * SAMPLE_EVERY + 1


class DeadUnits(RuntimeCheck):
    """
    ## What it does
    Watches every ReLU applied in a training forward, as a module (`nn.ReLU`) or a
    function (`F.relu`, `torch.relu`), and reports the layers where most units output zero
    for every sample of the last batches of the run, with the share per layer.

    ## Why is this bad?
    A ReLU unit whose input is negative for every sample passes no gradient back, so it
    never recovers: it is dead. A large share of dead units means the network is much
    smaller than it looks, usually after a learning rate so high that one step pushed
    the biases far negative, or an initialisation or input scale that starts units dead.

    ## Threshold
    A layer (one ReLU call site) with at least 8 units of which at least half were zero
    for every sample of each of the last 3 measured training batches (one batch is
    measured every 4 optimizer steps, so the window spans the last 12 steps). A unit is a channel for 4-D
    and 5-D activations (convolutions) and the last dimension otherwise. Healthy networks
    at initialisation and in their first steps have almost no unit silent for a whole
    batch, let alone three.

    ## Known problems
    `Tensor.relu()` and `nn.ReLU6`/`hardtanh` are not watched; for a 3-D activation of a
    1-D convolution (batch, channels, length) the last dimension is taken as the unit.

    ## How --verify measures it
    Before each ReLU of a measured step runs, the check takes the maximum of its input
    over every dimension but the unit's (one reduction per call) and keeps, per call
    site, which units fired in each of the last three measured training batches.

    ## When it is settled
    After 3 measured batches of every ReLU seen (those of steps 1, 5 and 9), when each
    layer is clear-cut: flagged (half or more of its units silent; a dead unit passes no
    gradient and does not come back) or with fewer than 10% silent units (far from
    half: a healthy layer). A layer in between keeps the run going to `--max-steps`, so
    the last measured batches of the budget decide: a layer dying slowly under a large
    learning rate (28% silent at initialisation, 56% after 20 steps in the dropout
    tutorial of the real-script benchmark) is judged at the end of the budget.
    """

    code = "ML107"
    name = "dead-units"
    summary = "Most units of a ReLU layer output zero for every sample of several batches"
    hint = ("Lower the learning rate, check the input scale and the initialisation, or use "
            "a leaky activation (LeakyReLU, GELU) for this layer.")
    WATCHER = "mllint.rules.runtime.ml107_dead_units:DeadUnitsWatcher"


class DeadUnitsWatcher(CheckWatcher):
    check = DeadUnits

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        #: key -> (label, site, recent "fired" masks, samples per mask)
        self.layers: dict[Any, tuple[str, Any, collections.deque, list[int]]] = {}
        #: ReLU calls measured so far, and their count when ``settled`` last looked.
        self._measured = 0
        self._judged_at = -1

    def install(self) -> None:
        torch = self.rt.torch
        self.monitor = self.rt.monitor()
        self._relu_code = torch.nn.functional.relu.__code__
        for name in ("relu", "relu_"):
            self.rt.on_call(torch, name, self._seen)

    def _seen(self, x: Any, *args: Any, **kwargs: Any) -> None:
        torch = self.rt.torch
        if self.rt.step % SAMPLE_EVERY:
            return
        if (not torch.is_grad_enabled() or not isinstance(x, torch.Tensor)
                or not x.requires_grad or x.dim() < 2 or not x.is_floating_point()):
            return
        key, label, site = self._call_site(sys._getframe(1))
        if key is None:
            return
        unit_dim = 1 if x.dim() >= 4 else x.dim() - 1
        dims = [d for d in range(x.dim()) if d != unit_dim]
        with torch.no_grad():
            fired = x.detach().amax(dim=dims) > 0
        entry = self.layers.get(key)
        if entry is None or entry[2] and entry[2][-1].shape != fired.shape:
            entry = self.layers[key] = (label, site, collections.deque(maxlen=WINDOW), [])
        entry[2].append(fired)
        self._measured += 1
        entry[3].append(x.numel() // max(1, fired.numel()))
        del entry[3][:-WINDOW]

    def _call_site(self, frame: Any) -> tuple[Any, str, Any]:
        """The layer a ReLU call belongs to: the user's line calling it, or else the
        module whose torch code calls it (``nn.ReLU`` itself, a transformer layer...)."""
        module_class = self.rt.torch.nn.Module
        owner_key: Any = None
        owner_name = ""
        while frame is not None:
            code = frame.f_code
            if code is not self._relu_code:
                if self.rt.is_user_file(code.co_filename):
                    site = self.monitor.user_site(frame)
                    if owner_key is not None:
                        return owner_key, f"`{owner_name}` (called at line {site.line})", site
                    return (site.path, site.line), f"the ReLU at line {site.line}", site
                owner = frame.f_locals.get("self")
                if isinstance(owner, module_class):
                    if owner_key is None:
                        owner_key, owner_name = id(owner), type(owner).__name__
                    site = self.monitor.site_of(owner)
                    if site is not None:
                        # A module built by torch itself (a deep copy in a transformer
                        # stack) has no site: the nearest enclosing built one stands in.
                        return owner_key, f"`{owner_name}` (built at line {site.line})", site
            frame = frame.f_back
        return None, "", None

    def settled(self) -> bool:
        if self.rt.step < SETTLE_STEPS:
            return False
        if self._judged_at == self._measured:
            return False  # no batch measured since the last look (asked at every step)
        self._judged_at = self._measured
        for _, _, masks, _ in self.layers.values():
            if len(masks) < WINDOW:
                return False
            dead, units = _silent(masks)
            if units >= MIN_UNITS and CLEAR_SHARE * units <= dead < SHARE * units:
                return False  # borderline: the end of the budget decides
        return True

    def findings(self) -> list:
        out = []
        for label, site, masks, samples in self.layers.values():
            if len(masks) < WINDOW or site is None:
                continue
            dead, units = _silent(masks)
            if units < MIN_UNITS or dead < SHARE * units:
                continue
            share = dead / units
            out.append(self.finding(
                site.path, site.line,
                f"{dead} of {units} units ({share:.0%}) of {label} output zero for every "
                f"sample of the last {WINDOW} measured training batches: they pass no gradient back "
                "and never recover, so the layer has lost most of its capacity.",
                f"{dead} of {units} units ({share:.0%}) of {label} were zero for all "
                f"{' + '.join(str(s) for s in samples)} sample positions of the last "
                f"{WINDOW} measured training batches (one every {SAMPLE_EVERY} steps); "
                f"flagged at {SHARE:.0%} or more",
                dead=dead, units=units, share=round(share, 4),
            ))
        return out


def _silent(masks: Any) -> tuple[int, int]:
    """(units silent in every one of ``masks``, units) of one layer."""
    fired = masks[0]
    for mask in list(masks)[1:]:
        fired = fired | mask
    units = int(fired.numel())
    return units - int(fired.sum()), units
