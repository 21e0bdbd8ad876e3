"""ML105: the DataLoader that feeds the optimizer steps iterates in a fixed order."""

from __future__ import annotations

from typing import Any

from mllint.runtime_check import CheckWatcher, RuntimeCheck


class UnshuffledTrainingLoader(RuntimeCheck):
    """
    ## What it does
    Finds the DataLoaders whose batches are followed by an optimizer step (the training
    loaders) that draw their samples in the dataset's own order, epoch after epoch: a
    `SequentialSampler` (the default of `shuffle=False`) over a map-style dataset that
    is not itself a shuffled view. The evidence says what it concluded from.

    ## Why is this bad?
    Datasets are often stored sorted (by class, by date, by length, by source). Without
    shuffling every batch is a biased sample, consecutive steps pull the model in the
    same direction, and the last classes seen dominate the end of each epoch; the loss
    curve looks fine while the model generalises worse. Even an unsorted dataset gives
    identical batches every epoch, which loses the regularising effect of SGD's noise.

    ## Threshold
    Reported when the training loader's sampler (or its batch sampler's sampler) is a
    `SequentialSampler` and its dataset is map-style and, if it is a `Subset`, takes its
    indices in increasing order. Not reported for iterable datasets (they order
    themselves), distributed or custom samplers, or a `Subset` in a shuffled order
    (`random_split`): those were chosen on purpose or shuffle elsewhere.

    ## Known problems
    Training on sequences that must stay in order by design (truncated back-propagation
    through time with a recurrent state carried from batch to batch) is reported; keep
    `shuffle=False` there and suppress the finding. A dataset whose `__getitem__` picks a
    random sample itself is reported too.

    ## How --verify measures it
    The monitor notes which loader yielded the last batch before each optimizer step;
    after the run, the check reads that loader's sampler, batch sampler and dataset.

    ## When it is settled
    After the first optimizer step: the loader whose batch fed it is known then, and its
    sampler does not change. A second training loader that only comes into use later
    in the budget (a later training phase) is seen only if the run goes on for another
    check.
    """

    code = "ML105"
    name = "unshuffled-training-loader"
    summary = "The training DataLoader iterates in the same fixed order every epoch"
    hint = "Pass `shuffle=True` to the training DataLoader (or a random / distributed sampler)."
    WATCHER = ("mllint.rules.runtime.ml105_unshuffled_training_loader:"
               "UnshuffledTrainingLoaderWatcher")


class UnshuffledTrainingLoaderWatcher(CheckWatcher):
    check = UnshuffledTrainingLoader

    def install(self) -> None:
        self.monitor = self.rt.monitor()

    def settled(self) -> bool:
        return self.rt.step >= 1

    def findings(self) -> list:
        out = []
        for loader in self.monitor.training_loaders():
            reason = self._fixed_order(loader)
            site = self.monitor.site_of(loader)
            if reason is None or site is None:
                continue
            out.append(self.finding(
                site.path, site.line,
                "This DataLoader feeds the optimizer steps but never shuffles: every epoch "
                "draws the same batches in the dataset's stored order, so batches are "
                "biased when the data is sorted and the steps lose SGD's useful noise.",
                f"its batches preceded optimizer steps; {reason}",
                sampler=type(loader.sampler).__name__,
                dataset=type(loader.dataset).__name__,
            ))
        return out

    def _fixed_order(self, loader: Any) -> str | None:
        """Why the loader's order is fixed, or None when it is not (or may not be)."""
        data = self.rt.torch.utils.data
        dataset = loader.dataset
        if isinstance(dataset, data.IterableDataset):
            return None
        batch_sampler = getattr(loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None) or loader.sampler
        if type(sampler) is not data.SequentialSampler:
            return None
        if type(batch_sampler) not in (data.BatchSampler, type(None)):
            return None
        inner = dataset
        while isinstance(inner, data.Subset):
            indices = list(inner.indices)
            if any(b < a for a, b in zip(indices, indices[1:])):
                return None  # a shuffled view (random_split): its order was drawn once
            inner = inner.dataset
        try:
            size = f" of {len(dataset):,} samples"
        except TypeError:
            size = ""
        return (f"sampler {type(sampler).__name__} (shuffle=False) over "
                f"{type(dataset).__name__}{size}, a map-style dataset taken in index order")
