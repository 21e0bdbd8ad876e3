"""ML002 eval-mode-missing: a validation pass runs with the model still in training mode."""

from __future__ import annotations

from typing import Any

from mllint.analysis.validation.facts import Mode
from mllint.analysis.validation.names import EVAL_SIGNS, NO_GRAD_SIGNS, or_flag_pass
from mllint.analysis.validation.passes import ValidationAnalysis, ValidationRule
from mllint.rule import Invalid, Valid
from mllint.types import Verdict
from mllint.verify.pass_watch import (
    RegionForwards,
    batch_norm_shift,
    batch_norm_state,
    mode_dependent_layers,
    tensors_in,
)
from mllint.verify.probe import Probe


class EvalModeMissing(ValidationRule):
    """
    ## What it does
    Flags the model's forward call inside a validation pass (a loop or evaluation function
    whose forward outputs are only measured, never back-propagated) when nothing on the
    path to it puts the model in eval mode: no `model.eval()` / `model.train(False)` in
    the function before the pass, in the same-module helpers it calls first, or - for an
    evaluation helper - at every call site. A model built in the module starts in
    training mode (unless built with `.eval()` chained on), and `model.train()` in the
    training loop keeps it there. A shared train/eval loop switched by a flag
    (`run_epoch(loader, train=False)` around `if train: loss.backward()`) is checked on
    the path that call takes. The forward may be a method of the model's own class
    (`model.predict(x)`) or a helper of the file that runs the model and returns the
    output (`self._forward_pass(x)`), checked along the validation loop that calls it.

    ## Why is this bad?
    In training mode dropout keeps zeroing activations and batch norm normalises each
    batch with its own statistics and folds the validation data into its running
    averages. Validation metrics come out noisy and pessimistic, model selection and
    early stopping act on them, and the batch-norm statistics the model is saved with are
    polluted by validation data - all without an error.

    ## Known problems
    A helper whose returned outputs a caller in the file back-propagates (an
    actor-critic's `evaluate(states, actions)`) computes a training signal and is no
    pass, whatever its name. Training mode set in another function counts only for the
    same object: not for a same-named local variable there, nor for `self.x` of another
    class. Callers in other modules of the project are followed one level: an evaluation
    helper whose callers there all put the model in eval mode first is not reported, one
    called there right after `model.train()` is (evaluation helpers nobody in the
    project calls are reported only when their file puts the model in training mode).
    Only top-level functions are matched across modules, not methods. Models whose
    class holds no dropout or batch-norm layers (in the file or in another module of
    the project) are not reported, since the mode changes nothing for them; that holds
    too for a model every caller in the file hands to the evaluation helper, and for
    the PyTorch Geometric and Opacus layers known by name (`GCNConv` has no such
    layer, `GATConv(..., dropout=0.6)` or `GCN(..., norm="batch_norm")` does). Lightning modules and Hugging Face `Trainer`
    subclasses are skipped: the framework sets the mode. A pass is recognised by a sign
    of evaluation - held-out data named on the loop's `for` line (`val_loader`,
    `X_test`, `loaders["val"]`), an evaluation-named function (`evaluate`, `validate`,
    `test`, `val_one_epoch`), a forward on held-out data, or a loop over batches inside
    `with torch.no_grad()` - so a loop with none of these is not checked.

    ## How --verify confirms it
    A forward pre-hook watches forwards called from the flagged pass. It confirms when the
    model ran in training mode and holds mode-dependent layers (it names them: dropout,
    batch norm, ...), and says whether batch-norm running statistics changed during the
    pass, i.e. were updated with validation data. It refutes when the model was in eval
    mode there, or when it has no mode-dependent layers (then the mode changes nothing).
    """

    code = "ML002"
    name = "eval-mode-missing"
    summary = "Validation pass runs while the model is still in training mode (no model.eval())"
    hint = "Call `model.eval()` before evaluating and `model.train()` before training resumes."
    # A pass needs a sign of evaluation: a loop over held-out-looking data, an
    # evaluation-named function, a forward on held-out data, or a no_grad block - or a
    # shared train/eval loop switched by a flag.
    REQUIRES = or_flag_pass((*EVAL_SIGNS, *NO_GRAD_SIGNS))
    PROBE = "mllint.rules.ml002_eval_mode_missing:EvalModeProbe"

    INVALID = [
        Invalid(  # a loop over a progress bar made first: `pbar = tqdm(val_loader)`
            """
            import torch
            from tqdm import tqdm

            model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.2))
            optimizer = torch.optim.Adam(model.parameters())
            for epoch in range(3):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                with torch.no_grad():
                    pbar = tqdm(val_loader)
                    for x, y in pbar:
                        acc = (model(x).argmax(1) == y).float().mean()
            """,
            lines=(15,),
        ),
        Invalid(  # a second model handed in as a parameter, left in training mode
            """
            import torch
            from torch import nn

            def train(encoder, predictor, loader, opt):
                encoder.train()
                predictor.train()
                for x, y in loader:
                    opt.zero_grad()
                    nn.functional.mse_loss(predictor(encoder(x)), y).backward()
                    opt.step()

            @torch.no_grad()
            def test(encoder, predictor, val_loader):
                encoder.eval()
                return [predictor(encoder(x)) for x, _ in val_loader]

            def main(loader, val_loader):
                encoder = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
                head = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 1))
                opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()])
                for epoch in range(10):
                    train(encoder, head, loader, opt)
                    test(encoder, head, val_loader)
            """,
            lines=(15,),
        ),
        Invalid(  # a graph attention layer with dropout, in a model handed to a helper
            """
            import torch
            from torch import nn
            from torch_geometric.nn import GATConv

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = GATConv(16, 4, heads=1, dropout=0.6)

                def forward(self, x):
                    return self.conv(x, edges)

            def test(model, loader):
                with torch.no_grad():
                    return [model(x).argmax(-1) for x, _ in loader]

            net = Net()
            opt = torch.optim.Adam(net.parameters())
            for epoch in range(3):
                for x, y in train_loader:
                    opt.zero_grad()
                    nn.functional.cross_entropy(net(x), y).backward()
                    opt.step()
                test(net, val_loader)
            """,
            lines=(15,),
        ),
        Invalid(  # the parameter's name says nothing: what the callers pass does
            """
            import torch
            from torch import nn

            def fit(net, loader, opt):
                net.train()
                for x, y in loader:
                    opt.zero_grad()
                    nn.functional.mse_loss(net(x), y).backward()
                    opt.step()

            @torch.no_grad()
            def score(predictor, val_loader):
                return [predictor(x) for x, _ in val_loader]

            def main(loader, val_loader):
                head = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 1))
                opt = torch.optim.Adam(head.parameters())
                for epoch in range(10):
                    fit(head, loader, opt)
                    score(head, val_loader)
            """,
            lines=(13,),
        ),
        Invalid(
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 2))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

            for epoch in range(3):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                with torch.no_grad():
                    for x, y in val_loader:
                        correct = (model(x).argmax(1) == y).sum().item()
            """,
            lines=(15,),
        ),
        Invalid(
            """
            import torch

            def train_one_epoch(model, loader, optimizer):
                model.train()
                for x, y in loader:
                    optimizer.zero_grad()
                    model(x).sum().backward()
                    optimizer.step()

            @torch.no_grad()
            def evaluate(model, loader):
                total = 0.0
                for x, y in loader:
                    total += (model(x).argmax(1) == y).float().mean().item()
                return total

            def main(model, train_loader, val_loader, optimizer):
                for epoch in range(10):
                    train_one_epoch(model, train_loader, optimizer)
                    print(evaluate(model, val_loader))
            """,
            lines=(14,),
        ),
        Invalid(
            # A shared train/eval loop whose flag reaches the batch function one level down.
            """
            import torch

            def run_batch(model, optimizer, x, y, train):
                with torch.set_grad_enabled(train):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                if train:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                return loss.item()

            def run_epoch(model, optimizer, loader, train):
                for x, y in loader:
                    run_batch(model, optimizer, x, y, train)

            def main(model, optimizer, train_loader, test_loader):
                for epoch in range(10):
                    model.train()
                    run_epoch(model, optimizer, train_loader, train=True)
                    run_epoch(model, optimizer, test_loader, train=False)
            """,
            lines=(5,),
        ),
        Invalid(  # models returned by helpers: a linear layer has nothing mode-dependent,
            # a Sequential with dropout does
            """
            import torch
            from torch import nn

            loss = nn.MSELoss()


            def get_net(feature_num):
                net = nn.Linear(feature_num, 1)
                for param in net.parameters():
                    nn.init.normal_(param, mean=0, std=0.01)
                return net


            def get_dropout_net(feature_num):
                return nn.Sequential(nn.Linear(feature_num, 8), nn.Dropout(0.5), nn.Linear(8, 1))


            def train(net, features, labels, num_epochs, lr):
                dataset = torch.utils.data.TensorDataset(features, labels)
                train_iter = torch.utils.data.DataLoader(dataset, 64, shuffle=True)
                optimizer = torch.optim.Adam(net.parameters(), lr=lr)
                for epoch in range(num_epochs):
                    for X, y in train_iter:
                        l = loss(net(X), y)
                        optimizer.zero_grad()
                        l.backward()
                        optimizer.step()


            def train_and_pred(train_features, test_features, train_labels):
                net = get_net(train_features.shape[1])
                train(net, train_features, train_labels, 10, 0.1)
                preds = net(test_features).detach().numpy()
                return preds


            def train_and_pred_dropout(train_features, test_features, train_labels):
                net = get_dropout_net(train_features.shape[1])
                train(net, train_features, train_labels, 10, 0.1)
                preds = net(test_features).detach().numpy()
                return preds
            """,
            lines=(40,),
        ),
        Invalid(  # a method that switches to eval mode and turns autograd off itself evaluates
            # correctly (`generate`); one that does neither (`sample`) does not
            """
            import torch
            from torch import nn


            class Model(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.rnn = nn.GRU(8, 8, batch_first=True)
                    self.drop = nn.Dropout(0.1)
                    self.fc = nn.Linear(8, 4)

                def forward(self, x):
                    return self.fc(self.drop(self.rnn(x)[0]))

                def generate(self, mels):
                    self.eval()
                    with torch.no_grad():
                        out = self.fc(self.rnn(mels)[0])
                    self.train()
                    return out

                def sample(self, mels):
                    return self.fc(self.rnn(mels)[0])


            model = Model()
            optimiser = torch.optim.Adam(model.parameters())


            def train(loader, epochs):
                for e in range(epochs):
                    for x, y in loader:
                        loss = nn.functional.mse_loss(model(x), y)
                        optimiser.zero_grad()
                        loss.backward()
                        optimiser.step()


            def generate(test_mels):
                outputs = []
                for mel in test_mels:
                    outputs.append(model.generate(mel))
                return outputs


            def sample(test_mels):
                outputs = []
                for mel in test_mels:
                    outputs.append(model.sample(mel))
                return outputs


            train(loader, 10)
            generate(test_mels)
            sample(test_mels)
            """,
            lines=(49,),
        ),
    ]
    VALID = [
        Valid(
            """
            import torch

            def run_batch(model, optimizer, x, y, train):
                with torch.set_grad_enabled(train):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                if train:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                return loss.item()

            def run_epoch(model, optimizer, loader, train):
                if not train:
                    model.eval()
                for x, y in loader:
                    run_batch(model, optimizer, x, y, train)

            def main(model, optimizer, train_loader, test_loader):
                for epoch in range(10):
                    model.train()
                    run_epoch(model, optimizer, train_loader, train=True)
                    run_epoch(model, optimizer, test_loader, train=False)
            """
        ),
        Valid(
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 2))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

            for epoch in range(3):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    for x, y in val_loader:
                        correct = (model(x).argmax(1) == y).sum().item()
            """
        ),
        Valid(
            # The caller switches modes around an evaluation helper.
            """
            import torch

            @torch.no_grad()
            def validate(model, loader):
                hits = 0
                for x, y in loader:
                    hits += (model(x).argmax(1) == y).sum().item()
                return hits

            def fit(model, train_loader, val_loader, optimizer):
                for epoch in range(10):
                    model.train()
                    for x, y in train_loader:
                        optimizer.zero_grad()
                        model(x).sum().backward()
                        optimizer.step()
                    model.train(False)
                    validate(model, val_loader)
            """
        ),
        Valid(
            # Lightning owns the loop: it calls eval() and no_grad around validation_step.
            """
            import lightning as L
            import torch.nn.functional as F

            class Classifier(L.LightningModule):
                def validation_step(self, batch, batch_idx):
                    x, y = batch
                    self.log("val_acc", (self.model(x).argmax(1) == y).float().mean())
            """
        ),
        Valid(
            # An inference script: eval() at load time.
            """
            import torch
            from transformers import AutoModelForSequenceClassification

            model = torch.load("model.pt")
            model.eval()
            with torch.inference_mode():
                for batch in test_loader:
                    preds = model(batch).argmax(-1)
            """
        ),
        Valid(
            # eval() chained on construction.
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 2)).eval()
            model.load_state_dict(torch.load("model.pt"))
            with torch.no_grad():
                for x, y in test_loader:
                    print((model(x).argmax(1) == y).float().mean().item())
            """
        ),
        Valid(  # activations and linear layers compute the same in both modes
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for epoch in range(3):
                for x, y in train_loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                with torch.no_grad():
                    for x, y in val_loader:
                        print((model(x).argmax(1) == y).float().mean().item())
            """
        ),
        Valid(  # models without dropout or batch norm, handed to an evaluation helper
            """
            import torch
            from torch import nn
            from opacus import PrivacyEngine
            from opacus.layers import DPLSTM
            from torch_geometric.nn import GCN, GCNConv


            class Tagger(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.embedding = nn.Embedding(100, 16)
                    self.lstm = DPLSTM(16, 32, batch_first=True)
                    self.out = nn.Linear(32, 4)

                def forward(self, x):
                    return self.out(self.lstm(self.embedding(x))[0][:, -1])


            class Graph(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = GCNConv(16, 4)  # the same in training and eval mode

                def forward(self, x):
                    return self.conv(x, edges)


            def fit(model, loader, optimizer):
                for x, y in loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()


            def test(model, loader):
                with torch.no_grad():
                    return [model(x).argmax(-1) for x, _ in loader]


            tagger = Tagger()
            engine = PrivacyEngine()
            tagger, opt, train_loader = engine.make_private(
                module=tagger, optimizer=torch.optim.SGD(tagger.parameters(), lr=0.1),
                data_loader=train_loader, noise_multiplier=1.0, max_grad_norm=1.0)
            graph = Graph()
            gnn = GCN(16, 32, 2, 4)
            for epoch in range(3):
                fit(tagger, train_loader, opt)
                test(tagger, val_loader)
                fit(graph, graph_loader, torch.optim.Adam(graph.parameters()))
                test(graph, graph_val_loader)
                fit(gnn, graph_loader, torch.optim.Adam(gnn.parameters()))
                test(gnn, graph_val_loader)
            """
        ),
    ]

    def decide(self, analysis: ValidationAnalysis) -> None:
        reported: set[int] = set()
        for vp in analysis.passes():
            if id(vp.forward) in reported:
                continue  # a shared loop evaluated from two calls
            state = analysis.pass_mode(vp)
            if state.value is not Mode.TRAIN:
                continue
            if analysis.deliberate_train(vp, state):
                continue
            if analysis.pass_layers(vp) is False:
                continue
            reported.add(id(vp.forward))
            where = vp.where
            self.report(
                vp.forward.node,
                f"`{vp.model}` is evaluated in {where} while still in training mode "
                f"({state.why}): dropout stays active and batch norm normalises with batch "
                "statistics and updates its running averages with this data, so the "
                f"metrics are noisy and wrong. Call `{vp.model}.eval()` before the pass "
                f"and `{vp.model}.train()` before training resumes.",
                region=vp.region,
                data={
                    "model": vp.model,
                    "loop_line": vp.loop_line,
                    "forward_line": vp.forward.line,
                    "mode_line": state.line,
                    "evidence": sorted(e.name for e in vp.evidence),
                },
            )


class EvalModeProbe(Probe):
    """Watches the flagged model's forwards from the validation pass: its mode, its
    mode-dependent layers, and whether batch-norm statistics moved during the pass."""

    #: Forwards from the pass after which the verdict cannot change.
    ENOUGH = 3

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.forwards = RegionForwards(finding, runtime)
        self.calls = 0
        self.train_calls = 0
        self.model_class = ""
        self.layers: list[tuple[str, str]] = []
        self.bn_shift: float | None = None
        self._bn_before: dict | None = None
        #: Training-mode forwards replayed in eval mode, and how many computed otherwise.
        self.compared = 0
        self.differed = 0
        self.max_difference = 0.0

    def install(self) -> None:
        self.rt.add_forward_pre_hook(self._pre)
        self.rt.add_forward_hook(self._post)

    def _pre(self, module: Any, args: tuple) -> None:
        if self.forwards.enter(module) is None:
            return
        torch = self.rt.torch
        if not self.calls:
            self.model_class = type(module).__name__
            self.layers = mode_dependent_layers(torch, module)
        self.calls += 1
        if module.training:
            self.train_calls += 1
            self._bn_before = batch_norm_state(torch, module)

    def _post(self, module: Any, args: tuple, output: Any) -> None:
        if not self.forwards.leave(module) or self._bn_before is None:
            return
        shift = batch_norm_shift(self.rt.torch, module, self._bn_before)
        self._bn_before = None
        if shift is not None:
            self.bn_shift = shift if self.bn_shift is None else max(self.bn_shift, shift)
        if self.layers and self.compared < self.ENOUGH:
            self._compare_with_eval(module, args, output)

    def _compare_with_eval(self, module: Any, args: tuple, output: Any) -> None:
        """Run the same batch through the model in eval mode (no grad, no probe sees it,
        every submodule's mode and the RNG state restored) and compare the outputs: the
        bug is real only when the two modes compute differently on this input."""
        torch = self.rt.torch
        modes = [(m, m.training) for m in module.modules()]
        rng = torch.get_rng_state()
        try:
            with self.rt.quiet(), torch.no_grad():
                module.eval()
                replay = module(*args)
        except Exception:  # noqa: BLE001 - e.g. a forward that needs keyword arguments
            return
        finally:
            for m, training in modes:
                m.training = training
            torch.set_rng_state(rng)
        trained = [t for t in tensors_in(output, torch) if t.is_floating_point()]
        evaluated = [t for t in tensors_in(replay, torch) if t.is_floating_point()]
        if not trained or len(trained) != len(evaluated):
            return
        self.compared += 1
        gap = 0.0
        for a, b in zip(trained, evaluated):
            if a.shape != b.shape:
                gap = float("inf")
                break
            gap = max(gap, float((a.detach().float() - b.float()).abs().max()))
        self.max_difference = max(self.max_difference, gap)
        if gap > 1e-6:
            self.differed += 1

    def settled(self) -> bool:
        return self.calls >= self.ENOUGH

    def verdict(self) -> Verdict | None:
        if not self.calls:
            return None
        model = f"`{self.finding.data.get('model') or self.model_class}` ({self.model_class})"
        kinds = sorted({kind for _, kind in self.layers})
        figures = {
            "forwards": self.calls,
            "train_mode_forwards": self.train_calls,
            "mode_dependent_layers": ", ".join(f"{n} ({k})" for n, k in self.layers[:8]),
            "batch_norm_updated": self.bn_shift is not None,
            "batch_norm_mean_shift": self.bn_shift,
        }
        where = f"line {self.finding.line}"
        if not self.train_calls:
            return self.refuted(
                f"{model} was in eval mode in all {self.calls} forward(s) at {where}",
                **figures,
            )
        if not self.layers:
            return self.refuted(
                f"{model} ran {self.train_calls} of {self.calls} forward(s) at {where} in "
                "training mode, but it has no dropout or batch-norm layers, so the mode "
                "changes nothing (it would once such a layer is added)",
                **figures,
            )
        names = ", ".join(f"{n or '<model>'} ({k})" for n, k in self.layers[:4])
        more = f" and {len(self.layers) - 4} more" if len(self.layers) > 4 else ""
        figures.update(compared_with_eval=self.compared, differed_from_eval=self.differed,
                       max_difference=self.max_difference)
        if self.compared and not self.differed:
            return self.refuted(
                f"{model} ran {self.train_calls} of {self.calls} forward(s) at {where} in "
                f"training mode, but on {self.compared} of those batches eval mode computed "
                f"the same outputs (largest difference {self.max_difference:.2g}): its "
                f"mode-dependent layers {names}{more} change nothing here (e.g. dropout "
                "with p=0)",
                **figures,
            )
        bn = ""
        if any("Norm" in k for k in kinds):
            bn = (
                f"; validation batches changed the batch-norm running statistics (running "
                f"mean moved by up to {self.bn_shift:.3g})" if self.bn_shift is not None
                else "; the batch-norm running statistics did not change"
            )
        return self.confirmed(
            f"{model} ran {self.train_calls} of {self.calls} validation forward(s) at "
            f"{where} in training mode, with mode-dependent layers {names}{more}{bn}",
            **figures,
        )


# -- fix (mllint.fixes) ----------------------------------------------------------------------

from mllint.fixes import FixSpec  # noqa: E402

EvalModeMissing.FIX = FixSpec(safety="""
    No automatic fix. `model.eval()` belongs before the validation pass and
    `model.train()` before training resumes, and where training resumes (the next epoch,
    a caller, a callback) is a decision about your loop that a source edit cannot make
    safely: a missing `model.train()` would silently train with dropout and batch-norm
    updates off.
    """)
