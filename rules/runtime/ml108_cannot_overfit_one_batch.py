"""ML108 (with --overfit-batch): the model cannot drive the loss down on a single batch."""

from __future__ import annotations

import math
from typing import Any

from mllint.runtime_check import CheckWatcher, RuntimeCheck

#: The loss must fall below this share of its first value.
TARGET = 0.5
#: Steps (at least) before the curve is judged.
MIN_STEPS = 10


class CannotOverfitOneBatch(RuntimeCheck):
    """
    ## What it does
    Only with `--overfit-batch [N]` (N defaults to 50): every DataLoader replays its
    first batch, the run takes N optimizer steps on it, and the check reports when the
    training loss did not fall by a large factor, with the curve.

    ## Why is this bad?
    Any model worth training can memorise one small batch. If it cannot, something
    between the data and the update is broken: inputs that carry no information (a
    normalisation over the wrong axis, a wrong channel order turning images to noise),
    targets misaligned with inputs, gradients that never reach the weights, a learning
    rate of zero, a loss that does not depend on the outputs. This is the cheapest test
    that the whole pipeline can learn at all, and practitioners run it first.

    ## Threshold
    The lowest loss of the last three steps must be below half the first loss after at
    least 10 steps. A broken pipeline stays flat (the triggering fixture: 1.37 to 1.34
    in 30 steps, 98%), while a healthy one keeps falling: the ResNet-style CNN of the
    tests (SGD 0.1, momentum 0.9, batch norm) went from 2.43 to 1.02 (42%) in 30 steps
    on one batch of random images, and much lower by 50. Halving is the most that such a
    fresh, momentum-warming setup reliably reaches in 30 steps; use N >= 30.

    ## Known problems
    A loss whose floor is far from zero (a regularised objective, a KL term, label
    smoothing on few classes) may not halve; nor may a heavily regularised model or one
    with a learning-rate warm-up longer than N steps. Raise N in those cases.

    ## How --verify measures it
    The DataLoaders are patched to return each loader's first batch at every draw (the
    usual budgets still count them), the step budget becomes N and the per-pass batch
    cut at least N; the loss of every `backward()` is recorded by the training monitor.

    ## When it is settled
    Never before the end: the curve is judged on all N steps, so a run with
    `--overfit-batch N` always takes its N steps (or ends with the script).
    """

    code = "ML108"
    name = "cannot-overfit-one-batch"
    summary = "The model cannot drive the loss down on a single replayed batch (--overfit-batch)"
    hint = ("Something between data and update is broken: check that inputs carry signal, "
            "that targets match inputs, that gradients reach the weights, and the "
            "learning rate.")
    WATCHER = "mllint.rules.runtime.ml108_cannot_overfit_one_batch:CannotOverfitOneBatchWatcher"
    OPT_IN = True


class _Replay:
    """A DataLoader pass that returns the loader's first batch at every draw."""

    def __init__(self, inner: Any, loader: Any, cache: dict[int, Any]) -> None:
        self._inner, self._loader, self._cache = inner, loader, cache

    def __iter__(self) -> "_Replay":
        return self

    def __next__(self) -> Any:
        batch = next(self._inner)
        return self._cache.setdefault(id(self._loader), batch)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CannotOverfitOneBatchWatcher(CheckWatcher):
    check = CannotOverfitOneBatch

    def install(self) -> None:
        self.monitor = self.rt.monitor()
        loader_class = self.rt.torch.utils.data.DataLoader
        current = loader_class.__iter__
        cache: dict[int, Any] = {}
        self._loaders: list[Any] = []  # keeps cached ids valid while the run lasts

        def __iter__(loader: Any) -> Any:
            self._loaders.append(loader)
            return _Replay(current(loader), loader, cache)

        self.rt.patch(loader_class, "__iter__", __iter__)

    def findings(self) -> list:
        losses = [value for _, value in self.monitor.losses]
        site = self.monitor.loss_site
        if len(losses) < MIN_STEPS or site is None:
            return []
        first, last = losses[0], min(losses[-3:])
        if not (math.isfinite(first) and first > 0):
            return []
        if math.isfinite(last) and last <= TARGET * first:
            return []
        marks = sorted({0, len(losses) // 4, len(losses) // 2, 3 * len(losses) // 4,
                        len(losses) - 1})
        curve = ", ".join(f"{losses[i]:.4g}" for i in marks)
        return [self.finding(
            site.path, site.line,
            f"Trained on one batch for {len(losses)} steps, the loss only went from "
            f"{first:.4g} to {last:.4g}: a model that cannot memorise a single batch cannot "
            "learn, so the data, the targets, the gradients or the learning rate are broken.",
            f"loss on the replayed first batch over {len(losses)} steps: {curve} "
            f"(steps {', '.join(str(i + 1) for i in marks)}); needed below "
            f"{TARGET:.0%} of the first",
            first=first, last=last, steps=len(losses), curve=[losses[i] for i in marks],
        )]
