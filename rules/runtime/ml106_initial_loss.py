"""ML106: the first classification loss is far above its chance level."""

from __future__ import annotations

import math
from typing import Any

from mllint.runtime_check import CheckWatcher, RuntimeCheck

#: Flagged when the first loss exceeds chance by more than max(1 nat, chance itself).
MARGIN_NATS = 1.0


class InitialLoss(RuntimeCheck):
    """
    ## What it does
    Compares the run's first classification loss with the loss of a model that knows
    nothing yet, which predicts every class alike: `ln(C)` for cross-entropy or NLL over
    `C` classes, `ln(2)` per element for binary cross-entropy. The evidence gives both.

    ## Why is this bad?
    A freshly initialised classifier should start at chance. Starting far above it means
    the outputs are confidently wrong before any training: logits scaled up (a missing
    normalisation, a final layer with a large init or a temperature applied the wrong way),
    inputs not normalised, or labels that do not match the outputs. The first steps are
    then spent undoing the initialisation, and training is often unstable ("hockey stick"
    loss curves) or stalls.

    ## Threshold
    The first loss is reported when it exceeds chance by more than max(1 nat, chance):
    above 4.6 for 10 classes, 2.4 for 2 classes, 1.4 per element for binary
    cross-entropy. Default PyTorch initialisations on normalised inputs start within a few
    tenths of chance. A first loss *below* chance is never reported: resuming from a
    checkpoint or fine-tuning a pretrained model starts there legitimately.

    ## Known problems
    Only `reduction="mean"` losses called as `F.cross_entropy`, `F.nll_loss`,
    `F.binary_cross_entropy(_with_logits)` or through their `nn` modules are checked, and
    `pos_weight` / per-element weights of binary cross-entropy skip the check.

    ## How --verify measures it
    The first call of one of those losses with autograd on is evaluated once more, under
    `no_grad`, to read its value; `C` is the size of the class dimension of its input.
    Only a loss computed before the run's first `backward()` (or first optimizer step)
    is an initial loss: a classification loss first met later (after a regression
    phase, say) is not judged, since the model has been trained by then.

    ## When it is settled
    At the first `backward()` of a scalar loss (or the first optimizer step, whichever
    comes first): the first loss has been measured by then, or the run's first loss is
    not a classification loss and there is nothing to judge.
    """

    code = "ML106"
    name = "initial-loss"
    summary = "The first classification loss is far above its chance level"
    hint = ("Check the model's output scale at initialisation (a final layer with a small "
            "init, normalised inputs) and that the targets match the outputs.")
    WATCHER = "mllint.rules.runtime.ml106_initial_loss:InitialLossWatcher"


_LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
           "binary_cross_entropy")


class InitialLossWatcher(CheckWatcher):
    check = InitialLoss

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.first: dict[str, Any] | None = None

    def install(self) -> None:
        self.monitor = self.rt.monitor()
        functional = self.rt.torch.nn.functional
        for name in _LOSSES:
            self.rt.on_call(functional, name, self._callback(functional, name))

    def _callback(self, functional: Any, name: str):
        def seen(*args: Any, **kwargs: Any) -> None:
            if not self.settled():
                self._judge(getattr(functional, name), name, args, kwargs)

        return seen

    def _judge(self, wrapper: Any, name: str, args: tuple, kwargs: dict) -> None:
        torch = self.rt.torch
        if len(args) < 2 or not torch.is_grad_enabled():
            return
        logits = args[0]
        if not isinstance(logits, torch.Tensor) or not logits.requires_grad:
            return
        if kwargs.get("reduction", "mean") != "mean" or len(args) > 2 or any(
            kwargs.get(k) is not None for k in ("size_average", "reduce")
        ):
            return
        if name.startswith("binary"):
            if kwargs.get("weight") is not None or kwargs.get("pos_weight") is not None:
                return
            chance, classes = math.log(2.0), 2
        else:
            classes = int(logits.shape[1] if logits.dim() >= 2 else logits.shape[0])
            if classes < 2:
                return
            chance = math.log(classes)
        original = getattr(wrapper, "__wrapped__", wrapper)
        with torch.no_grad():
            value = float(original(*args, **kwargs))
        self.first = {"loss": name, "value": value, "chance": chance, "classes": classes,
                      "site": self.rt.user_site(), "step": self.rt.step + 1}

    def settled(self) -> bool:
        return (self.first is not None or bool(self.monitor.losses)
                or self.rt.step >= 1)

    def findings(self) -> list:
        first = self.first
        if first is None or first["site"] is None or not math.isfinite(first["value"]):
            return []  # a non-finite first loss is ML101's
        value, chance = first["value"], first["chance"]
        if value <= chance + max(MARGIN_NATS, chance):
            return []
        site = first["site"]
        what = (f"ln({first['classes']}) = {chance:.3f} for {first['classes']} classes"
                if not first["loss"].startswith("binary") else f"ln(2) = {chance:.3f} per element")
        return [self.finding(
            site.path, site.line,
            f"The first loss of the run is {value:.4g}, far above the {chance:.3g} of a model "
            "that predicts every class alike: the untrained model is confidently wrong, so "
            "its output scale or its targets are off.",
            f"first {first['loss']} at step {first['step']}: {value:.4g}; chance level "
            f"{what}; flagged above {chance + max(MARGIN_NATS, chance):.3g}",
            loss=first["loss"], value=value, expected=chance, classes=first["classes"],
        )]
