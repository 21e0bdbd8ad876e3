"""ML007 validation-on-train-data: the validation pass iterates the training data."""

from __future__ import annotations

from typing import Any

from mllint.analysis.validation.data import DataAnalysis, Kind, Source
from mllint.analysis.validation.flags import chosen_name
from mllint.analysis.validation.names import (
    BATCH_RE,
    CALL_VAL,
    EVAL_SIGNS,
    GUARDED_NO_GRAD_SIGN,
    MODE_SIGNS,
    NO_GRAD_SIGNS,
    TRAIN_WORD,
    is_train_name,
    is_val_name,
    or_flag_pass,
)
from mllint.analysis.validation.passes import ValidationAnalysis, ValidationRule
from mllint.analysis.validation.places import Places, Site
from mllint.gates.resolve import dotted as dotted_name
from mllint.prefilter import any_layout
from mllint.rule import Invalid, Valid
from mllint.types import Verdict
from mllint.verify.pass_watch import SampleKeys, data_source
from mllint.verify.probe import Probe


class ValidationOnTrainData(ValidationRule):
    """
    ## What it does
    Flags a validation pass that iterates the training data: a loader named like
    held-out data but built from the training set (`val_loader = DataLoader(train_ds)`,
    `test_set = MNIST(root, train=True)`) or with the training sampler, or an evaluation
    fed the training loader (`evaluate(model, train_loader)`, a `no_grad` accuracy loop
    over `train_loader`) while nothing held-out is evaluated in the file - or the
    held-out evaluation never runs in that training loop: only on another branch
    (`if args.evaluate: ...; return`), or only at another stage while the per-epoch
    number selects the model. Loaders are followed to their datasets (through
    `accelerator.prepare`, `iter(...)`, `.__iter__()`, torchtext iterators and the
    same-module helpers that build and return them; a loop over `range(n)` that draws
    its batches with `next(it)` iterates `it`) and evaluation helpers to their
    callers; a shared train/eval loop switched by a flag is checked on the data its
    evaluation call passes (`run_epoch(model, train_loader, train=False)`). A loop
    that runs the model under `no_grad` inside a test of held-out data (`if val_ds is
    not None:`) but iterates what the training loop iterates is flagged too.

    ## Why is this bad?
    The model is measured on examples it was fitted to. Validation accuracy then tracks
    training accuracy: it overstates how the model does on new data, cannot show
    overfitting, and early stopping, checkpoint selection and hyper-parameter search all
    optimise the wrong number - with no error anywhere.

    ## Known problems
    Training accuracy computed *in addition* to a held-out evaluation in the same
    training loop is fine and not reported, and so is a per-epoch training accuracy
    beside a final test unless it selects the model; so are splits made with
    `random_split`, `Subset`, samplers, or datasets built with `train=False` /
    `split="val"`. Loaders that sample one graph (PyTorch Geometric's `NeighborLoader`,
    `RandomNodeLoader`, ...) serve every split of it: they are judged by their
    `input_nodes` (reported when that names the training nodes or repeats the training
    loader's), and one without it by its name, since the split is then chosen by masking
    the outputs. Data prepared in another module is judged by its name only, and a
    held-out evaluation the file's own calls do not place (a function called from
    elsewhere) excuses the training-data one.

    ## How --verify confirms it
    Records which loader and dataset objects, and which samples (by content hash), the
    training steps consume and which ones the flagged validation pass consumes. It confirms
    when the pass iterates the very loader or dataset training uses, or when its samples
    were also trained on (it reports the fraction), and refutes when the two are disjoint.
    """

    code = "ML007"
    name = "validation-on-train-data"
    summary = "Validation pass iterates the training data (no held-out data is evaluated beside it)"
    hint = "Evaluate on a held-out split: build the validation loader from the validation dataset."
    # A validation pass (any sign of evaluation) or a call of an evaluation-named
    # function; training data is named like it, built with train=True/split="train",
    # or is what a training loop (backward/step/autograd) iterates.
    REQUIRES = (
        *or_flag_pass((*EVAL_SIGNS, *NO_GRAD_SIGNS, GUARDED_NO_GRAD_SIGN, *MODE_SIGNS, CALL_VAL)),
        any_layout(rf"{TRAIN_WORD}|backward|step|autograd"),  # words: no layout splits one
    )
    PROBE = "mllint.rules.ml007_validation_on_train_data:TrainDataProbe"

    INVALID = [
        Invalid(  # a graph's validation loader sampling around the training nodes
            """
            import torch
            import torch.nn.functional as F
            from torch_geometric.loader import NeighborLoader

            data = dataset[0]
            train_loader = NeighborLoader(data, input_nodes=data.train_mask, shuffle=True)
            val_loader = NeighborLoader(data, input_nodes=data.train_mask)

            @torch.no_grad()
            def test(loader):
                model.eval()
                hits = 0
                for batch in loader:
                    out = model(batch.x, batch.edge_index)[: batch.batch_size]
                    hits += int((out.argmax(-1) == batch.y[: batch.batch_size]).sum())
                return hits

            for epoch in range(10):
                model.train()
                for batch in train_loader:
                    optimizer.zero_grad()
                    out = model(batch.x, batch.edge_index)[: batch.batch_size]
                    F.cross_entropy(out, batch.y[: batch.batch_size]).backward()
                    optimizer.step()
                print(test(val_loader))
            """,
            lines=(7,),
        ),
        Invalid(
            """
            import torch
            from torch.utils.data import DataLoader, random_split

            train_ds, val_ds = random_split(dataset, [800, 200])
            train_loader = DataLoader(train_ds, batch_size=32, shuffle=True)
            val_loader = DataLoader(train_ds, batch_size=32)

            for epoch in range(5):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    loss_fn(model(x), y).backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    for x, y in val_loader:
                        acc = (model(x).argmax(1) == y).float().mean().item()
            """,
            lines=(6,),
        ),
        Invalid(
            """
            import torch

            @torch.no_grad()
            def evaluate(model, loader):
                model.eval()
                hits = 0
                for x, y in loader:
                    hits += (model(x).argmax(1) == y).sum().item()
                return hits / len(loader.dataset)

            def main(model, train_loader, optimizer):
                for epoch in range(5):
                    model.train()
                    for x, y in train_loader:
                        optimizer.zero_grad()
                        model(x).logsumexp(1).mean().backward()
                        optimizer.step()
                    print("accuracy", evaluate(model, train_loader))
            """,
            lines=(18,),
        ),
        Invalid(
            """
            from torchvision.datasets import MNIST
            from torch.utils.data import DataLoader

            train_set = MNIST("data", train=True, download=True)
            test_set = MNIST("data", train=True, download=True)
            test_loader = DataLoader(test_set, batch_size=256)

            def test(model):
                model.eval()
                for images, labels in test_loader:
                    print((model(images).argmax(1) == labels).float().mean())
            """,
            lines=(5,),
        ),
        Invalid(
            # The held-out data is evaluated only when the script is run with --evaluate.
            """
            import torch

            @torch.no_grad()
            def validate(model, loader):
                model.eval()
                return sum((model(x).argmax(1) == y).sum().item() for x, y in loader)

            def main(args, model, train_loader, val_loader, train_one_epoch):
                if args.evaluate:
                    validate(model, val_loader)
                    return
                for epoch in range(args.epochs):
                    train_one_epoch(model, train_loader)
                    acc = validate(model, train_loader)
            """,
            lines=(14,),
        ),
        Invalid(
            # The loop is sized by the test set but draws its batches from the training loader.
            """
            import torch

            def fit(model, optimizer, train_loader, test_loader, epochs):
                for epoch in range(epochs):
                    model.train()
                    for x, y in train_loader:
                        optimizer.zero_grad()
                        model(x).logsumexp(1).mean().backward()
                        optimizer.step()
                    model.eval()
                    batches = iter(train_loader)
                    with torch.no_grad():
                        for _ in range(len(test_loader)):
                            x, y = next(batches)
                            print((model(x).argmax(1) == y).float().mean().item())
            """,
            lines=(13,),
        ),
        Invalid(
            # The validation loss, computed only when there is held-out data, on the training data.
            """
            import torch

            def fit(net, optimizer, data, val_data=None, epochs=3):
                for epoch in range(epochs):
                    for x, y in data:
                        optimizer.zero_grad()
                        net(x, y).backward()
                        optimizer.step()
                    if val_data is not None:
                        with torch.no_grad():
                            val_loss = sum(net(x, y).item() for x, y in data)
            """,
            lines=(11,),
        ),
        Invalid(  # runners iterate the loader each instance was built with: only the class
            # that evaluates the instance it trains (`fit`) evaluates training data
            """
            import torch


            class BaseRunner:
                def __init__(self, model, dataloader, device, optimizer=None):
                    self.model = model
                    self.dataloader = dataloader
                    self.device = device
                    self.optimizer = optimizer


            class SupervisedRunner(BaseRunner):
                def train_epoch(self, epoch_num=None):
                    self.model = self.model.train()
                    for i, batch in enumerate(self.dataloader):
                        X, targets = batch
                        loss = self.model(X.to(self.device)).sub(targets).pow(2).mean()
                        self.optimizer.zero_grad()
                        loss.backward()
                        self.optimizer.step()

                def evaluate(self, epoch_num=None):
                    self.model = self.model.eval()
                    total = 0.0
                    with torch.no_grad():
                        for i, batch in enumerate(self.dataloader):
                            X, targets = batch
                            total += self.model(X.to(self.device)).sub(targets).pow(2).mean().item()
                    return total


            class Trainer(BaseRunner):
                def train_epoch(self):
                    self.model.train()
                    for X, targets in self.dataloader:
                        loss = self.model(X).sub(targets).pow(2).mean()
                        self.optimizer.zero_grad()
                        loss.backward()
                        self.optimizer.step()

                def evaluate(self):
                    self.model.eval()
                    total = 0.0
                    with torch.no_grad():
                        for X, targets in self.dataloader:
                            total += self.model(X).sub(targets).pow(2).mean().item()
                    return total

                def fit(self, epochs):
                    for epoch in range(epochs):
                        self.train_epoch()
                        print(self.evaluate())


            def validate(val_evaluator, epoch):
                return val_evaluator.evaluate(epoch)
            """,
            lines=(52,),
        ),
    ]
    VALID = [
        Valid(  # the name the training loop iterated is rebound to the test split first
            """
            import torch

            def step(net, idx, split):
                xs, ys = split.batch(idx)
                return ys, net(xs)

            def run(net, opt, train_split, test_split):
                net.train()
                chunks = train_split.chunks()
                for idx in chunks:
                    opt.zero_grad()
                    ys, out = step(net, idx, train_split)
                    torch.nn.functional.cross_entropy(out, ys).backward()
                    opt.step()
                net.eval()
                chunks = test_split.chunks()
                with torch.no_grad():
                    for idx in chunks:
                        ys, out = step(net, idx, test_split)
            """
        ),
        Valid(  # placeholders passed for both loaders are not one loader
            """
            import torch

            def run(model, loader, val_loader, optimizer):
                for epoch in range(3):
                    model.train()
                    for x, y in loader:
                        optimizer.zero_grad()
                        torch.nn.functional.mse_loss(model(x), y).backward()
                        optimizer.step()
                    model.eval()
                    with torch.no_grad():
                        for x, y in val_loader:
                            acc = (model(x).argmax(1) == y).float().mean().item()

            if __name__ == "__main__":
                run(None, None, None, None)
            """
        ),
        Valid(
            """
            import torch
            from torch.utils.data import DataLoader, random_split

            train_ds, val_ds = random_split(dataset, [800, 200])
            train_loader = DataLoader(train_ds, batch_size=32, shuffle=True)
            val_loader = DataLoader(val_ds, batch_size=32)

            for epoch in range(5):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    loss_fn(model(x), y).backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    for x, y in val_loader:
                        acc = (model(x).argmax(1) == y).float().mean().item()
            """
        ),
        Valid(
            # Training accuracy in addition to validation accuracy.
            """
            import torch

            @torch.no_grad()
            def evaluate(model, loader):
                model.eval()
                return sum((model(x).argmax(1) == y).sum().item() for x, y in loader)

            def main(model, train_loader, val_loader, optimizer):
                for epoch in range(5):
                    model.train()
                    for x, y in train_loader:
                        optimizer.zero_grad()
                        model(x).logsumexp(1).mean().backward()
                        optimizer.step()
                    print("train", evaluate(model, train_loader))
                    print("val", evaluate(model, val_loader))
            """
        ),
        Valid(
            # The same dataset object split by indices: Subset and samplers hold out data.
            """
            import torch
            from torch.utils.data import DataLoader, Subset, SubsetRandomSampler
            from torchvision.datasets import CIFAR10

            train_set = CIFAR10("data", train=True, transform=augment)
            val_set = CIFAR10("data", train=True, transform=plain)
            val_set = Subset(val_set, val_idx)
            val_loader = DataLoader(val_set, batch_size=64)
            probe_loader = DataLoader(train_set, sampler=SubsetRandomSampler(val_idx))

            def validate(model):
                model.eval()
                with torch.no_grad():
                    for x, y in val_loader:
                        model(x)
                    for x, y in probe_loader:
                        model(x)
            """
        ),
        Valid(
            """
            import torch

            def fit(net, optimizer, data, val_data=None, epochs=3):
                for epoch in range(epochs):
                    for x, y in data:
                        optimizer.zero_grad()
                        net(x, y).backward()
                        optimizer.step()
                    if val_data is not None:
                        with torch.no_grad():
                            val_loss = sum(net(x, y).item() for x, y in val_data)
            """
        ),
        Valid(  # node loaders over one graph: the split is the seed nodes, or a mask on the outputs
            """
            import torch
            import torch.nn.functional as F
            from torch_geometric.loader import NeighborLoader, RandomNodeLoader

            split_idx = dataset.get_idx_split()
            data = dataset[0]
            train_loader = NeighborLoader(data, input_nodes=split_idx["train"], shuffle=True)
            val_nodes = ("paper", data["paper"].val_mask)
            val_loader = NeighborLoader(data, input_nodes=val_nodes)
            test_loader = NeighborLoader(data, input_nodes=split_idx["test"])
            full_loader = RandomNodeLoader(data, num_parts=5)

            @torch.no_grad()
            def test(loader):
                model.eval()
                hits = 0
                for batch in loader:
                    out = model(batch.x, batch.edge_index)[: batch.batch_size]
                    hits += int((out.argmax(-1) == batch.y[: batch.batch_size]).sum())
                return hits

            @torch.no_grad()
            def test_masked():
                model.eval()
                hits = 0
                for batch in full_loader:
                    out = model(batch.x, batch.edge_index)
                    hits += int((out[batch.test_mask].argmax(-1) == batch.y[batch.test_mask]).sum())
                return hits

            for epoch in range(10):
                model.train()
                for batch in train_loader:
                    optimizer.zero_grad()
                    out = model(batch.x, batch.edge_index)[: batch.batch_size]
                    F.cross_entropy(out, batch.y[: batch.batch_size]).backward()
                    optimizer.step()
                print(test(val_loader), test(test_loader), test_masked())
            """
        ),
    ]

    def decide(self, analysis: ValidationAnalysis) -> None:
        data = DataAnalysis(analysis)
        # Where held-out data is evaluated: the pass's loop or forward, or the outermost
        # call that hands the data in.
        heldout: list[Site] = []
        candidates: list[tuple[object, object, Source, Site]] = []
        done: set[int] = set()
        guarded = data.guarded_evaluations()
        for vp in [*analysis.passes(), *guarded]:
            key = id(vp.region)
            if key in done:
                continue
            done.add(key)
            if vp.loop is not None:
                names = analysis.unwrapped_iterables(vp.loop)
                pos = vp.loop.pos
            else:
                names = [d for a in vp.forward.args if (d := dotted_name(a.value))]
                pos = vp.forward.pos
            ec = vp.outer or vp.via  # the call that takes the loop's evaluation path
            if ec is not None:
                # ``loader = self.tr_loader if not cross_valid else self.cv_loader``
                loop_scope = vp.loop.scope if vp.loop is not None else vp.scope
                picked = [chosen_name(analysis, ec, loop_scope, n, pos) for n in names]
                names = [p if p is not None else n for p, n in zip(picked, names) if p != ""]
            for name in names:
                via = ec.call if ec is not None else None
                scope = vp.loop.scope if vp.loop is not None else vp.scope
                for src in data.sources(scope, name, pos, via):
                    site = src.call_site or vp.loop or vp.forward
                    if src.kind is not Kind.TRAIN:
                        if not src.per_instance:
                            heldout.append(site)
                        continue
                    if is_val_name(src.name) and not is_train_name(src.name):
                        # Meant to be held out, built from training data: always a bug.
                        self._report_copy_paste(src, vp)
                    else:
                        candidates.append((self._where(src, vp), vp, src, site))
        for call in data.external_evaluations():
            for arg in call.args:
                d = dotted_name(arg.value)
                if not d or analysis.is_model(call.scope, d):
                    continue
                src = data.classify(call.scope, d, call.pos, 0)
                if src.kind is Kind.TRAIN and not is_val_name(d):
                    candidates.append((call.node, None, src, call))
                elif src.kind is Kind.HELDOUT or is_val_name(d) or (
                        src.kind is not Kind.TRAIN and BATCH_RE.search(d)):
                    # ``test(model, train_loader, vali_loader)``: another loader that is
                    # not training data goes in too (the training one may only give inputs).
                    heldout.append(call)
        places = Places(analysis)
        reported: set[int] = set()
        for at, vp, src, site in candidates:
            if id(at) in reported:
                continue
            if heldout:
                apart = places.held_out_apart(site, heldout)
                if apart is None:
                    continue  # held-out data is evaluated alongside: training accuracy too
                elsewhere = f"; {apart}"
            else:
                elsewhere = " and nothing held-out is evaluated in this file"
            reported.add(id(at))
            self.report(
                at,
                f"This evaluation iterates `{src.name}`, the training data ({src.why})"
                f"{elsewhere}: the number it reports is training accuracy, which cannot "
                "show overfitting and overstates how the model does on new data. Evaluate "
                "a validation or test split as well.",
                region=vp.region if vp is not None else None,
                data={
                    "loader": src.name,
                    "train_loader": src.train_name,
                    "loop_line": vp.loop_line if vp is not None else None,
                },
            )

    @staticmethod
    def _where(src: Source, vp) -> object:
        """Report an evaluation of training data where it is fed: the helper's call, else
        the loop (or the forward of a loop-less pass)."""
        if src.call_site is not None:
            return src.call_site.node
        return vp.loop.node if vp.loop is not None else vp.forward.node

    def _report_copy_paste(self, src: Source, vp) -> None:
        at = src.culprit.node if src.culprit else (vp.loop.node if vp.loop else vp.forward.node)
        if any(f.span == self.span_of(at) for f in self.findings):
            return
        self.report(
            at,
            f"`{src.name}` is meant to hold out data, but {_because(src)}: the validation pass "
            f"(line {vp.loop_line or vp.forward.line}) measures the model on examples it "
            "was trained on, so validation accuracy overstates real performance and "
            "early stopping or model selection cannot see overfitting. Build it from the "
            "validation split.",
            region=vp.region,
            data={
                "loader": src.name,
                "train_loader": src.train_name,
                "loop_line": vp.loop_line,
            },
        )


def _because(src: Source) -> str:
    if src.culprit is not None and src.train_name and src.why == "the training loop iterates it":
        return f"it is built from `{src.train_name}`, which the training loop iterates"
    if src.train_name and src.train_name != src.name and "is built" not in src.why:
        return f"it is built from `{src.train_name}`, the training data"
    return src.why


class TrainDataProbe(Probe):
    """Compares the data the flagged pass iterates with the data training steps consume.

    A batch counts as trained on once a ``backward()`` or optimizer step follows it;
    batches consumed inside the finding's region are the pass's. Identity is checked on
    three levels: the loader object, the dataset object under any ``Subset``/sampler
    (with the indices each side may read), and the samples' content.
    """

    #: Pass batches after which the verdict cannot change much.
    ENOUGH = 2

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.pass_batches = 0
        self.trained_batches = 0
        self._pending: list[tuple[Any, list]] = []
        self._train_loaders: set[int] = set()
        self._train_sources: dict[int, tuple[Any, frozenset[int] | None, str]] = {}
        self._train_samples: set = set()
        self._pass_loaders: set[int] = set()
        self._pass_sources: dict[int, tuple[Any, frozenset[int] | None, str]] = {}
        self._pass_samples: set = set()
        self._keys: SampleKeys | None = None

    def install(self) -> None:
        self.rt.on_batch(self._batch)
        self.rt.on_backward(lambda tensor: self._commit())
        self.rt.add_step_post_hook(lambda optimizer: self._commit())

    def _source(self, loader: Any) -> tuple[Any, frozenset[int] | None, str]:
        dataset, indices = data_source(loader)
        kind = type(dataset).__name__
        try:
            kind += f" of {len(dataset)} samples"
        except TypeError:
            pass
        return dataset, indices, kind

    def _batch(self, loader: Any, batch: Any) -> None:
        if self._keys is None:
            self._keys = SampleKeys(self.rt.torch)
        hashes = self._keys(batch)
        if self.rt.stack_in(self.finding) is not None:
            self.pass_batches += 1
            self._pass_loaders.add(id(loader))
            if id(loader) not in self._pass_sources:
                self._pass_sources[id(loader)] = self._source(loader)
            self._pass_samples.update(hashes)
            return
        # A batch outside the pass is training data once backward/step follows it; a
        # newer batch of the same loader with none in between was not trained on.
        self._pending = [(lo, hs) for lo, hs in self._pending if lo is not loader]
        self._pending.append((loader, hashes))

    def _commit(self) -> None:
        for loader, hashes in self._pending:
            self.trained_batches += 1
            self._train_loaders.add(id(loader))
            if id(loader) not in self._train_sources:  # once: it is read at every step
                self._train_sources[id(loader)] = self._source(loader)
            self._train_samples.update(hashes)
        self._pending = []

    def settled(self) -> bool:
        return self.pass_batches >= self.ENOUGH and self.trained_batches > 0

    def _shared_dataset(self) -> tuple[str, int | None] | None:
        """The dataset both sides read from, and how many indices they share (None: the
        whole dataset is open to both)."""
        for ds, idx, kind in self._pass_sources.values():
            for tds, tidx, _ in self._train_sources.values():
                if ds is None or ds is not tds:
                    continue
                if idx is None or tidx is None:
                    return kind, None
                common = len(idx & tidx)
                if common:
                    return kind, common
        return None

    def verdict(self) -> Verdict | None:
        if not self.pass_batches:
            return None
        loader = self.finding.data.get("loader") or "the pass's data"
        shared = self._pass_samples & self._train_samples
        fraction = len(shared) / len(self._pass_samples) if self._pass_samples else 0.0
        figures = {
            "pass_batches": self.pass_batches,
            "training_batches": self.trained_batches,
            "pass_samples": len(self._pass_samples),
            "training_samples": len(self._train_samples),
            "shared_samples": len(shared),
            "shared_fraction": round(fraction, 4),
            "same_loader": bool(self._pass_loaders & self._train_loaders),
        }
        if not self.trained_batches:
            return None  # nothing was trained on while the run lasted: nothing to compare
        dataset = self._shared_dataset()
        figures["same_dataset"] = dataset is not None
        seen = (
            f"{len(shared)} of the {len(self._pass_samples)} samples it evaluated "
            f"({fraction:.0%}) were among the {len(self._train_samples)} training samples "
            "seen so far"
        )
        if figures["same_loader"]:
            return self.confirmed(
                f"the pass at line {self.finding.line} iterates `{loader}`, the very "
                f"DataLoader training steps consume; {seen}",
                **figures,
            )
        if dataset is not None:
            kind, common = dataset
            part = "the whole dataset" if common is None else f"{common} shared indices"
            return self.confirmed(
                f"`{loader}` reads the same {kind} that training reads ({part}); {seen}",
                **figures,
            )
        if shared:
            return self.confirmed(f"`{loader}`: {seen}", **figures)
        return self.refuted(
            f"`{loader}` is not the training loader and reads different data: none of the "
            f"{len(self._pass_samples)} samples the pass evaluated were among the "
            f"{len(self._train_samples)} training samples seen",
            **figures,
        )


# -- fix (mllint.fixes) ----------------------------------------------------------------------

from mllint.fixes import FixSpec  # noqa: E402

ValidationOnTrainData.FIX = FixSpec(safety="""
    No automatic fix: which data is held out (a validation split, a separate file, a
    `random_split` of the training set) is a decision about your experiment, not a
    source edit.
    """)
