"""ML104: the optimizer's updates are orders of magnitude off the healthy size."""

from __future__ import annotations

import math
import statistics
from typing import Any

from mllint.rules.runtime._support import optimizer_label
from mllint.runtime_check import CheckWatcher, RuntimeCheck

#: A ratio above this in one of the first ``EARLY`` steps is flagged (1,000x the usual 1e-3).
HIGH = 1.0
#: A median ratio over the run below this is flagged (1,000x under it).
LOW = 1e-6
#: Steps of a parameter group needed before it is judged; the first ones are the
#: weights' initial scale, where a too-large update shows before it inflates the weights.
MIN_STEPS = EARLY = 3
#: Measured steps of each group before the check may settle (steps 1-4 and 8).
SETTLE_STEPS = 5
#: A group settles as healthy when its median and latest ratios are both above this
#: (100x the lower threshold).
CLEAR = 100 * LOW


class UpdateRatio(RuntimeCheck):
    """
    ## What it does
    Measures, for each parameter group of each optimizer and at every step, the size of
    the update relative to the weights, `||w_after - w_before|| / ||w_before||`, and
    flags a group whose median over the run is orders of magnitude away from the healthy
    band around 1e-3. The evidence gives the figure and the group's learning rate.

    ## Why is this bad?
    The ratio is what the learning rate actually does to the weights. Far above the band
    each step rewrites the weights (an AdamW left at an SGD learning rate such as 20: the
    loss climbs and never comes back, or goes NaN); far below it the model does not move
    (a learning rate of 1e-9 or 0, a scheduler that decayed to nothing, a unit mistake
    such as `lr=3e-4 / 1000`). Both waste the whole run, and neither crashes.

    ## Threshold
    Three orders of magnitude off the ~1e-3 rule of thumb on either side, judged over at
    least 3 steps of the group. Too large: a ratio above 1.0 (a step changes the weights
    by more than their own size) in one of the first 3 steps, while the weights still
    have their initial scale; later the blown-up weights make the ratio look normal again
    (AdamW at lr 20 measured 149, then 0.63, 0.36 ... 0.18). Too small: a median below
    1e-6 over the run. Healthy setups measured by the tests (a ResNet-style CNN with SGD
    0.1 and momentum 0.9, a transformer with AdamW 3e-4 and warm-up, an LSTM language
    model with SGD 20 and clipping) stay between 1e-4 and 6e-2.

    ## Known problems
    A group made only of parameters initialised at zero (biases alone) has a weight norm
    near zero, so its ratio is huge in the first steps; such a group is judged only once
    its weights are no longer zero, and the median over the run still leans high for a
    short run. Learning-rate warm-up from exactly zero pulls the median down over a short
    run; a longer `--max-steps` settles it.

    ## How --verify measures it
    The training monitor copies each group's weights before `optimizer.step()` and takes
    the norms of the change and of those weights (fused norms, one host sync per step),
    at the first three steps and then one step in four; the ratios are also in the
    `--report` plots and the JSON series.

    ## When it is settled
    After 5 measured steps of every group of every optimizer that has stepped (steps 1,
    2, 3, 4 and 8 of a single optimizer), when each group is either flagged as too large
    (that is judged on the first 3 steps alone) or clear of the lower threshold by two
    orders of magnitude: its median ratio and its latest ratio both at least 1e-4. A
    group in between, or one whose latest ratio has dropped under 1e-4 (a scheduler
    decaying to nothing), keeps the run going to `--max-steps`, where the median over
    the whole run decides; so does a learning-rate warm-up that starts near zero. An
    optimizer measured fewer than 5 times in the budget (several optimizers stepped in
    turn share the monitor's schedule) keeps it going too.
    """

    code = "ML104"
    name = "update-ratio"
    summary = "Optimizer updates are orders of magnitude larger or smaller than the weights warrant"
    hint = ("Set the learning rate for this optimizer (AdamW usually 1e-4 to 1e-3, SGD with "
            "momentum 1e-2 to 1e-1) and check the scheduler's first values.")
    WATCHER = "mllint.rules.runtime.ml104_update_ratio:UpdateRatioWatcher"


class UpdateRatioWatcher(CheckWatcher):
    check = UpdateRatio

    def install(self) -> None:
        self.monitor = self.rt.monitor()

    def settled(self) -> bool:
        records = self.monitor.optimizer_records.values()
        if not records:
            return False
        for record in records:
            count = max((len(g) for g in record.groups), default=0)
            for index in range(count):
                ratios = _ratios(record, index)
                if len(ratios) < SETTLE_STEPS:
                    return False
                if max(ratios[:EARLY]) > HIGH:
                    continue  # flagged as too large, on the first steps alone
                if statistics.median(ratios) < CLEAR or ratios[-1] < CLEAR:
                    return False
        return True

    def findings(self) -> list:
        out = []
        for record in self.monitor.optimizer_records.values():
            if record.site is None:
                continue
            count = max((len(g) for g in record.groups), default=0)
            for index in range(count):
                steps = [g[index] for g in record.groups if index < len(g)]
                ratios = _ratios(record, index)
                if len(ratios) < MIN_STEPS:
                    continue
                median = statistics.median(ratios)
                early = max(ratios[:EARLY])
                if median >= LOW and early <= HIGH:
                    continue
                lrs = sorted({s.lr for s in steps if s.lr is not None})
                lr = ("lr " + "..".join(f"{v:g}" for v in (lrs[0], lrs[-1]) if v is not None)
                      if lrs else "its learning rate")
                if len(lrs) == 1:
                    lr = f"lr {lrs[0]:g}"
                who = optimizer_label(record, self.monitor)
                group = f"parameter group {index}" if count > 1 else "its parameters"
                if early > HIGH:
                    size = f"up to {early:.3g} of their size in its first steps"
                    what = ("each step changes the weights by more than their own size, so "
                            "training diverges or thrashes")
                    rule = f"flagged above {HIGH:g} in the first {EARLY} steps"
                else:
                    size = f"{median:.3g} of their size per step (median)"
                    what = "the weights barely move, so the model does not train"
                    rule = f"flagged below a median of {LOW:g}"
                shown = ", ".join(f"{r:.3g}" for r in ratios[:5])
                out.append(self.finding(
                    record.site.path, record.site.line,
                    f"{who} updates {group} by {size} at {lr}; the healthy ratio is about "
                    f"1e-3: {what}.",
                    f"||update||/||weight|| per step for {group} of {who} at {lr}: {shown}"
                    f"{' ...' if len(ratios) > 5 else ''} (median {median:.3g} over "
                    f"{len(ratios)} steps); {rule}",
                    group=index, median_ratio=median, early_ratio=early, steps=len(ratios),
                    lr=lrs[-1] if lrs else None,
                ))
        return out


def _ratios(record: Any, index: int) -> list[float]:
    """The finite update/weight ratios of parameter group ``index``, step by step."""
    return [g[index].ratio for g in record.groups
            if index < len(g) and g[index].ratio is not None and math.isfinite(g[index].ratio)]
