"""ML003 no-grad-missing: a validation pass runs with autograd on."""

from __future__ import annotations

from typing import Any

import ast

import libcst as cst

from mllint.analysis.pyast.syntax import args_of, nodes_under
from mllint.gates.resolve import dotted as dotted_name
from mllint.analysis.validation.facts import Grad
from mllint.analysis.validation.names import EVAL_SIGNS, MODE_SIGNS, or_flag_pass
from mllint.analysis.validation.passes import ValidationAnalysis, ValidationRule
from mllint.rule import Invalid, Valid
from mllint.types import Verdict
from mllint.verify.pass_watch import (
    RegionForwards,
    graph_size,
    human_bytes,
    storage_ptr,
    tensors_in,
)
from mllint.verify.probe import Probe


class NoGradMissing(ValidationRule):
    """
    ## What it does
    Flags the first model forward inside a validation pass (a loop or evaluation function
    whose forward outputs are only measured, never back-propagated) when autograd is on
    there: no `torch.no_grad()` / `torch.inference_mode()` / `torch.set_grad_enabled(False)`
    around it, as a `with` block or as a decorator, on the function or on every caller
    that reaches it in the same file. `torch.enable_grad()` inside such a block turns
    autograd back on. Aliases (`from torch import no_grad`) are resolved. A shared
    train/eval loop switched by a flag (`self._run_one_epoch(epoch, cross_valid=True)`
    around `if not cross_valid: loss.backward()`) is checked on the path that call takes
    (`torch.set_grad_enabled(train)` there switches autograd off with it). The forward
    may be a method of the model's own class (`model.predict(x)`) or a helper of the
    file that runs the model and returns the output (`self._forward_pass(x)`).

    ## Why is this bad?
    With autograd on, every forward records its graph and keeps each layer's
    activations alive for a backward pass that never comes. Validation then needs several
    times the memory it should (often the cause of an out-of-memory error during
    validation only, or of a batch size cut for nothing) and runs slower. Anything
    accumulated from the outputs without `.item()` keeps those graphs alive across batches.

    ## Known problems
    A helper whose returned outputs a caller in the file back-propagates (an
    actor-critic's `evaluate(states, actions)`) is no pass, whatever its name.
    Callers in other modules of the project are followed one level: an evaluation
    helper whose callers there all run it under `no_grad` is not reported, one called
    there at a script's top level or from a module that trains is. Only top-level
    functions are matched across modules, not methods. A model
    whose parameters were frozen with `model.requires_grad_(False)` records no graph and
    is not reported, nor is a pass that computes gradients of its own (an adversarial
    attack such as `adversary.perturb(x, y)`, inputs set to `requires_grad_()`).
    A single forward of a model the file builds and only ever calls (never trains,
    loads, moves or hands on: a shape check on random weights) evaluates nothing and is
    not reported. Lightning modules and Hugging Face `Trainer` subclasses are skipped. A forward on
    `Variable(x, volatile=True)` inputs is not reported: that was PyTorch 0.3's way of
    switching autograd off, and code written for it is right for its version (current
    PyTorch ignores `volatile` with a warning).
    A pass is recognised by a sign of evaluation (held-out data named on the loop's `for`
    line, an evaluation-named function, or a loop over batches after `model.eval()`), so
    a loop with none of these is not checked.

    ## How --verify confirms it
    A forward hook watches forwards called from the flagged pass. It confirms when they
    ran with `torch.is_grad_enabled()` and returned tensors that require grad, and reports
    how many autograd graph nodes one forward kept alive and the bytes of the tensors
    those nodes save. It refutes when autograd was off there, or when no output required
    grad (e.g. frozen parameters).
    """

    code = "ML003"
    name = "no-grad-missing"
    summary = "Validation pass runs with autograd on (no torch.no_grad() / inference_mode)"
    hint = "Wrap the evaluation in `with torch.no_grad():` or decorate it with `@torch.no_grad()`."
    # A pass needs a sign of evaluation other than no_grad (a no_grad block as the only
    # sign cannot lack no_grad): held-out-looking data, an evaluation-named function, or
    # `model.eval()` / `model.train(False)` - or a shared train/eval loop switched by a flag.
    REQUIRES = or_flag_pass((*EVAL_SIGNS, *MODE_SIGNS))
    PROBE = "mllint.rules.ml003_no_grad_missing:NoGradProbe"

    INVALID = [
        Invalid(  # a helper shared with training, handed the test split by an untrained loop
            """
            import torch

            def step(net, idx, split):
                xs, ys = split.batch(idx)
                return ys, net(xs)

            def run(net, opt, train_split, test_split):
                net.train()
                for idx in train_split.chunks():
                    opt.zero_grad()
                    ys, out = step(net, idx, train_split)
                    torch.nn.functional.cross_entropy(out, ys).backward()
                    opt.step()
                net.eval()
                hits = []
                slices = test_split.chunks()
                for idx in slices:
                    ys, out = step(net, idx, test_split)
                    hits.append((out.argmax(1) == ys).float().mean().item())
                return sum(hits) / len(hits)
            """,
            lines=(5,),
        ),
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
                model.eval()
                pbar = tqdm(val_loader, desc="val")
                for x, y in pbar:
                    acc = (model(x).argmax(1) == y).float().mean()
            """,
            lines=(15,),
        ),
        Invalid(  # the evaluation path of a shared loop over `data_iter = tqdm(enumerate(loader))`
            """
            import torch
            import tqdm

            class Trainer:
                def __init__(self, model, train_data, test_data):
                    self.model, self.train_data, self.test_data = model, train_data, test_data
                    self.optim = torch.optim.Adam(self.model.parameters())

                def train(self, epoch):
                    self.iteration(epoch, self.train_data)

                def test(self, epoch):
                    self.iteration(epoch, self.test_data, train=False)

                def iteration(self, epoch, data_loader, train=True):
                    data_iter = tqdm.tqdm(enumerate(data_loader), desc=f"epoch {epoch}")
                    for i, batch in data_iter:
                        loss = self.model(batch["input"]).mean()
                        if train:
                            self.optim.zero_grad()
                            loss.backward()
                            self.optim.step()
            """,
            lines=(18,),
        ),
        Invalid(  # a full-graph evaluation: one forward of the whole dataset after model.eval()
            """
            import torch
            import torch.nn.functional as F

            model = Net(dataset.num_features, 16, dataset.num_classes)
            optimizer = torch.optim.Adam(model.parameters(), lr=0.01)


            def train():
                model.train()
                optimizer.zero_grad()
                out = model(data.x, data.edge_index)
                F.nll_loss(out[data.train_mask], data.y[data.train_mask]).backward()
                optimizer.step()


            def test():
                model.eval()
                out, accs = model(data.x, data.edge_index), []
                for _, mask in data("train_mask", "val_mask", "test_mask"):
                    pred = out[mask].argmax(1)
                    accs.append(int((pred == data.y[mask]).sum()) / int(mask.sum()))
                return accs


            for epoch in range(1, 401):
                train()
                print(test())
            """,
            lines=(18,),
        ),
        Invalid(  # the module `model` shadowed by the model it builds
            """
            import torch
            import torch.nn as nn

            import model

            model = model.RNNModel(10000, 200)
            criterion = nn.CrossEntropyLoss()
            optimizer = torch.optim.SGD(model.parameters(), lr=20)


            def evaluate(data_source):
                model.eval()
                total_loss = 0.0
                hidden = None
                for i in range(0, data_source.size(0) - 1, 35):
                    data, targets = get_batch(data_source, i)
                    output, hidden = model(data, hidden)
                    total_loss += criterion(output.view(-1, 10000), targets).item()
                return total_loss


            def train():
                model.train()
                hidden = None
                for i in range(0, train_data.size(0) - 1, 35):
                    data, targets = get_batch(train_data, i)
                    optimizer.zero_grad()
                    output, hidden = model(data, hidden)
                    criterion(output.view(-1, 10000), targets).backward()
                    optimizer.step()


            for epoch in range(40):
                train()
                val_loss = evaluate(val_data)
            """,
            lines=(17,),
        ),
        Invalid(  # the same single forward of a model whose weights are loaded
            """
            import numpy as np
            import torch
            from torch import nn


            class RNN(nn.Module):
                def __init__(self, hidden):
                    super().__init__()
                    self.rnn = nn.RNN(1, hidden, batch_first=True)
                    self.fc = nn.Linear(hidden, 1)

                def forward(self, x, h):
                    out, h = self.rnn(x, h)
                    return self.fc(out), h


            test_rnn = RNN(10)
            test_input = torch.Tensor(np.sin(np.linspace(0, np.pi, 20))).view(1, 20, 1)
            test_rnn.load_state_dict(torch.load("rnn.pt"))
            test_out, test_h = test_rnn(test_input, None)
            print("Output size:", test_out.size())

            rnn = RNN(32)
            optimizer = torch.optim.Adam(rnn.parameters(), lr=0.01)
            for step in range(100):
                x = torch.Tensor(np.sin(np.linspace(step, step + 1, 21))).view(1, 21, 1)
                prediction, _ = rnn(x[:, :-1], None)
                loss = nn.functional.mse_loss(prediction, x[:, 1:])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            """,
            lines=(20,),
        ),
        Invalid(
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
            optimizer = torch.optim.Adam(model.parameters())

            for epoch in range(3):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                model.eval()
                for x, y in val_loader:
                    val_loss = nn.functional.cross_entropy(model(x), y).item()
            """,
            lines=(15,),
        ),
        Invalid(
            """
            import torch

            def evaluate(net, loader):
                net.eval()
                correct = 0
                for inputs, labels in loader:
                    outputs = net(inputs)
                    correct += (outputs.argmax(1) == labels).sum().item()
                return correct

            def main(net, train_loader, test_loader, opt):
                for epoch in range(5):
                    net.train()
                    for inputs, labels in train_loader:
                        opt.zero_grad()
                        net(inputs).sum().backward()
                        opt.step()
                    print(evaluate(net, test_loader))
            """,
            lines=(7,),
        ),
        Invalid(  # a periodic evaluation on held-out data inside the training loop
            """
            import torch

            model = torch.nn.Linear(8, 2)
            optimizer = torch.optim.Adam(model.parameters())
            for step, (x, y) in enumerate(train_loader):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                if step % 50 == 0:
                    accuracy = (model(test_x).argmax(1) == test_y).float().mean()
            """,
            lines=(10,),
        ),
        Invalid(  # a Variable without volatile=True records the graph as any tensor does
            """
            from torch.autograd import Variable

            net.eval()
            for inputs, targets in test_loader:
                inputs, targets = Variable(inputs).cuda(), Variable(targets)
                loss = criterion(net(inputs), targets)
            """,
            lines=(6,),
        ),
    ]
    VALID = [
        Valid(  # the same helper, its test loop under no_grad
            """
            import torch

            def step(net, idx, split):
                xs, ys = split.batch(idx)
                return ys, net(xs)

            def run(net, opt, train_split, test_split):
                net.train()
                for idx in train_split.chunks():
                    opt.zero_grad()
                    ys, out = step(net, idx, train_split)
                    torch.nn.functional.cross_entropy(out, ys).backward()
                    opt.step()
                net.eval()
                slices = test_split.chunks()
                with torch.no_grad():
                    for idx in slices:
                        ys, out = step(net, idx, test_split)
            """
        ),
        Valid(  # one full-graph forward, once after training: a one-off, not a pass per epoch
            """
            import torch
            import torch.nn.functional as F

            model = Net(dataset.num_features, 16, dataset.num_classes)
            optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

            def train():
                model.train()
                optimizer.zero_grad()
                out = model(data.x, data.edge_index)
                F.nll_loss(out[data.train_mask], data.y[data.train_mask]).backward()
                optimizer.step()

            def test():
                model.eval()
                out = model(data.x, data.edge_index)
                return int((out[data.test_mask].argmax(1) == data.y[data.test_mask]).sum())

            for epoch in range(1, 401):
                train()
            print(test())
            """
        ),
        Valid(  # a model built only to print the shape of its output: it is never trained
            """
            import numpy as np
            import torch
            from torch import nn


            class RNN(nn.Module):
                def __init__(self, hidden):
                    super().__init__()
                    self.rnn = nn.RNN(1, hidden, batch_first=True)
                    self.fc = nn.Linear(hidden, 1)

                def forward(self, x, h):
                    out, h = self.rnn(x, h)
                    return self.fc(out), h


            # the shapes test_rnn gives, before any training
            test_rnn = RNN(10)
            test_input = torch.Tensor(np.sin(np.linspace(0, np.pi, 20))).view(1, 20, 1)
            test_out, test_h = test_rnn(test_input, None)
            print("Output size:", test_out.size())

            rnn = RNN(32)
            optimizer = torch.optim.Adam(rnn.parameters(), lr=0.01)
            for step in range(100):
                x = torch.Tensor(np.sin(np.linspace(step, step + 1, 21))).view(1, 21, 1)
                prediction, _ = rnn(x[:, :-1], None)
                loss = nn.functional.mse_loss(prediction, x[:, 1:])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            """
        ),
        Valid(  # ``torch`` comes from a star import of a helper module that imports it
            """
            from utils import *

            model.eval()
            with torch.no_grad():
                for images, labels in test_loader:
                    scores = model(images)
            """
        ),
        Valid(  # PyTorch 0.3 code: volatile inputs were its no_grad
            """
            from torch.autograd import Variable

            net.eval()
            for inputs, targets in test_loader:
                if use_cuda:
                    inputs = Variable(inputs, volatile=True).cuda()
                else:
                    inputs = Variable(inputs, volatile=True)
                loss = criterion(net(inputs), Variable(targets))
            for images, _ in test_loader:
                outputs = net(Variable(images, volatile=True))
            """
        ),
        Valid(
            """
            import torch
            from torch import nn

            model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
            optimizer = torch.optim.Adam(model.parameters())

            for epoch in range(3):
                model.train()
                for x, y in train_loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    for x, y in val_loader:
                        val_loss = nn.functional.cross_entropy(model(x), y).item()
            """
        ),
        Valid(
            # no_grad set by the caller of the evaluation helper, or as a decorator.
            """
            import torch
            from torch import inference_mode

            def evaluate(net, loader):
                net.eval()
                return [net(x).argmax(1) for x, _ in loader]

            @inference_mode()
            def test(net, loader):
                net.eval()
                for x, y in loader:
                    print((net(x).argmax(1) == y).float().mean().item())

            def main(net, train_loader, val_loader, test_loader, opt):
                for epoch in range(5):
                    net.train()
                    for x, y in train_loader:
                        opt.zero_grad()
                        net(x).sum().backward()
                        opt.step()
                    with torch.no_grad():
                        evaluate(net, val_loader)
                test(net, test_loader)
            """
        ),
        Valid(
            # Gradients are the point: an attack evaluated on the test set back-propagates.
            """
            import torch

            def evaluate_robustness(model, test_loader, eps=0.03):
                model.eval()
                for x, y in test_loader:
                    x.requires_grad_(True)
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    grad, = torch.autograd.grad(loss, x)
                    adv = x + eps * grad.sign()
                    print((model(adv).argmax(1) == y).float().mean().item())
            """
        ),
        Valid(
            # Actor-critic: evaluate() scores the actions taken, and the update trains on
            # what it returns, so autograd must stay on.
            """
            import torch

            def evaluate(policy, states, actions):
                dist = torch.distributions.Categorical(logits=policy(states))
                return dist.log_prob(actions), dist.entropy()

            def ppo_update(policy, optimizer, states, actions, advantages, old_logprobs):
                policy.train()
                for _ in range(4):
                    logprobs, entropy = evaluate(policy, states, actions)
                    ratio = torch.exp(logprobs - old_logprobs)
                    loss = -(ratio * advantages).mean() - 0.01 * entropy.mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            """
        ),
        Valid(  # the same periodic evaluation, under no_grad
            """
            import torch

            model = torch.nn.Linear(8, 2)
            optimizer = torch.optim.Adam(model.parameters())
            for step, (x, y) in enumerate(train_loader):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                if step % 50 == 0:
                    with torch.no_grad():
                        accuracy = (model(test_x).argmax(1) == test_y).float().mean()
            """
        ),
    ]

    def decide(self, analysis: ValidationAnalysis) -> None:
        reported: set[int] = set()
        for vp in analysis.passes():
            key = id(vp.region)
            if key in reported:
                continue
            state = analysis.pass_grad(vp)
            if state.value is not Grad.ON:
                continue
            names = analysis.aliases(vp.scope, vp.model)
            if analysis.frozen(vp.scope, names, vp.forward.pos) or analysis.needs_grad(vp):
                continue
            if _volatile_inputs(vp.forward.node, vp.region):
                continue
            reported.add(key)
            where = vp.where
            self.report(
                vp.forward.node,
                f"`{vp.model}` is evaluated in {where} with autograd on ({state.why}): "
                "every forward records its graph and keeps its activations alive for a "
                "backward pass that never comes, multiplying validation memory and time. "
                "Wrap the pass in `with torch.no_grad():` (or `torch.inference_mode()`).",
                region=vp.region,
                data={
                    "model": vp.model,
                    "loop_line": vp.loop_line,
                    "forward_line": vp.forward.line,
                    "evidence": sorted(e.name for e in vp.evidence),
                },
            )


#: ``Variable`` as PyTorch 0.3 code calls it.
_VARIABLE = frozenset({"Variable", "autograd.Variable", "torch.autograd.Variable"})
#: Methods that hand back a Variable in the same autograd state (``.cuda()``).
_SAME_STATE = frozenset({"cuda", "cpu", "to", "float", "long", "half", "double"})


def _volatile(expr: ast.AST) -> bool:
    """``Variable(x, volatile=True)``, possibly moved (``.cuda()``)."""
    while (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
           and expr.func.attr in _SAME_STATE):
        expr = expr.func.value
    return (isinstance(expr, ast.Call) and dotted_name(expr.func) in _VARIABLE
            and any(a.keyword == "volatile" and isinstance(a.value, ast.Constant)
                    and a.value.value is True for a in args_of(expr)))


def _volatile_inputs(forward: ast.Call, region: ast.AST) -> bool:
    """Some input of the forward is a volatile Variable: built in the call, or assigned in
    the pass (``x = Variable(x, volatile=True).cuda()``, ``x, y = Variable(x,
    volatile=True), Variable(y)``)."""
    names = set()
    for arg in args_of(forward):
        if _volatile(arg.value):
            return True
        if isinstance(arg.value, ast.Name):
            names.add(arg.value.id)
    if not names:
        return False
    for assign in nodes_under(region, ast.Assign):
        for target in assign.targets:
            pairs = [(target, assign.value)]
            if (isinstance(target, ast.Tuple) and isinstance(assign.value, ast.Tuple)
                    and len(target.elts) == len(assign.value.elts)):
                pairs = list(zip((_unstarred(e) for e in target.elts),
                                 (_unstarred(e) for e in assign.value.elts)))
            if any(isinstance(t, ast.Name) and t.id in names and _volatile(v)
                   for t, v in pairs):
                return True
    return False


def _unstarred(expr: ast.expr) -> ast.expr:
    return expr.value if isinstance(expr, ast.Starred) else expr


class NoGradProbe(Probe):
    """Watches the flagged model's forwards from the validation pass: whether autograd
    was on, and how much graph one forward kept alive."""

    ENOUGH = 3

    def __init__(self, finding: Any, runtime: Any) -> None:
        super().__init__(finding, runtime)
        self.forwards = RegionForwards(finding, runtime)
        self.calls = 0
        self.grad_calls = 0
        self.graph_calls = 0
        self.nodes = 0
        self.saved_bytes = 0
        self.model_class = ""
        self._grad_now = False

    def install(self) -> None:
        self.rt.add_forward_pre_hook(self._pre)
        self.rt.add_forward_hook(self._post)

    def _pre(self, module: Any, args: tuple) -> None:
        if self.forwards.enter(module) is None:
            return
        self.calls += 1
        self.model_class = type(module).__name__
        self._grad_now = bool(self.rt.torch.is_grad_enabled())
        self.grad_calls += self._grad_now

    def _post(self, module: Any, args: tuple, output: Any) -> None:
        if not self.forwards.leave(module) or not self._grad_now:
            return
        torch = self.rt.torch
        outs = [t for t in tensors_in(output, torch) if t.requires_grad]
        if not outs:
            return
        self.graph_calls += 1
        if self.graph_calls == 1:
            params = {storage_ptr(p) for p in module.parameters()}
            self.nodes, self.saved_bytes = graph_size(torch, outs, params)

    def settled(self) -> bool:
        return self.calls >= self.ENOUGH

    def verdict(self) -> Verdict | None:
        if not self.calls:
            return None
        model = f"`{self.finding.data.get('model') or self.model_class}` ({self.model_class})"
        where = f"line {self.finding.line}"
        figures = {
            "forwards": self.calls,
            "grad_enabled_forwards": self.grad_calls,
            "graph_forwards": self.graph_calls,
            "graph_nodes": self.nodes,
            "saved_bytes": self.saved_bytes,
        }
        if not self.grad_calls:
            return self.refuted(
                f"autograd was off in all {self.calls} forward(s) of {model} at {where}",
                **figures,
            )
        if not self.graph_calls:
            return self.refuted(
                f"autograd was on in {self.grad_calls} forward(s) of {model} at {where}, but "
                "no output required grad (its parameters are frozen), so no graph was kept",
                **figures,
            )
        return self.confirmed(
            f"{self.graph_calls} of {self.calls} validation forward(s) of {model} at {where} "
            f"ran with autograd on and recorded a graph: one forward kept {self.nodes} "
            f"autograd node(s) holding {human_bytes(self.saved_bytes)} of saved activations "
            "alive until its outputs were dropped",
            **figures,
        )


# -- fix (mllint.fixes): kept apart from the check above -------------------------------------

from mllint.fixes import Fix, FixFile, FixSpec  # noqa: E402


def _fix(file: FixFile, finding) -> Fix | None:
    forward = file.node_for(finding, cst.CSTNode)
    if forward is None or not file.binds("torch"):
        return None
    function = next((a for a in file.ancestors(forward) if isinstance(a, cst.FunctionDef)), None)
    if function is None:
        return None  # a pass at module level: wrap it in `with torch.no_grad():` yourself
    body = file.code(function)
    if ".backward(" in body or ".step(" in body:
        return None  # it trains too: a decorator would turn autograd off for that as well
    first = function.decorators[0] if function.decorators else function
    line = file.positions[first].start.line
    edit = file.insert_line_before(line, "@torch.no_grad()")
    return Fix(f"Decorate `{function.name.value}` with `@torch.no_grad()`", False, (edit,))


NoGradMissing.FIX = FixSpec(
    safety="""
    When the evaluation runs in a function that neither back-propagates nor steps an
    optimizer, the fix decorates that function with `@torch.no_grad()` (when the module
    imports `torch`). It is unsafe: a caller may back-propagate through what the function
    returns (a validation loss used as a training signal, a function shared by training
    and evaluation), and under `no_grad` that backward pass fails. An evaluation at module
    level, or in a function that also trains, has no fix: wrap the pass in
    `with torch.no_grad():` yourself.
    """,
    make=_fix,
)
