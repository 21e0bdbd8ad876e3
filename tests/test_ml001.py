"""ML001 missing-zero-grad: exact lines on real-world shapes of training code."""

from __future__ import annotations

import textwrap

import pytest

from mllint.engine import lint_text
from mllint.registry import rule_by_code

RULE = rule_by_code("ML001")


def findings(code: str):
    result = lint_text("train.py", textwrap.dedent(code).lstrip("\n"), [RULE])
    assert result.errors == ()
    return result.findings


def lines(code: str) -> list[int]:
    return [f.line for f in findings(code)]


FLAGGED = {
    "accelerate": (
        """
        import torch
        from accelerate import Accelerator

        accelerator = Accelerator()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
        """,
        [10],
    ),
    "annotated_parameter": (
        """
        from torch.optim import Optimizer

        def train(model, opt: Optimizer, loader):
            for x, y in loader:
                model(x).sub(y).pow(2).mean().backward()
                opt.step()
        """,
        [6],
    ),
    "parameter_passed_by_caller": (
        """
        import torch

        def train(model, optimizer, loader):
            for x, y in loader:
                loss = torch.nn.functional.l1_loss(model(x), y)
                loss.backward()
                optimizer.step()

        def main():
            model = torch.nn.Linear(2, 1)
            train(model, torch.optim.SGD(model.parameters(), lr=0.1), [])
        """,
        [7],
    ),
    "factory_function": (
        """
        import torch

        def build_optimizer(model):
            return torch.optim.Adam(model.parameters())

        opt = build_optimizer(model)
        for x in data:
            model(x).sum().backward()
            opt.step()
        """,
        [9],
    ),
    "scaler_step": (
        """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler()
        for x in data:
            scaler.scale(model(x).sum()).backward()
            scaler.step(opt)
            scaler.update()
        """,
        [7],
    ),
    "autograd_backward_function": (
        """
        import torch
        from torch.autograd import backward

        opt = torch.optim.RMSprop(model.parameters())
        while True:
            backward(model(x).sum())
            opt.step()
        """,
        [7],
    ),
    "custom_optimizer_class": (
        """
        import torch

        class Sign(torch.optim.Optimizer):
            pass

        opt = Sign(model.parameters(), {})
        for x in data:
            model(x).sum().backward()
            opt.step()
        """,
        [9],
    ),
    "step_in_helper_called_from_loop": (
        """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def train_step(x):
            loss = model(x).sum()
            loss.backward()
            opt.step()
            return loss.item()

        for x in data:
            train_step(x)
        """,
        [8],
    ),
    "gan_one_optimizer_never_cleared": (
        """
        import torch

        opt_d = torch.optim.Adam(disc.parameters())
        opt_g = torch.optim.Adam(gen.parameters())
        for real in data:
            opt_d.zero_grad()
            disc(real).mean().backward()
            opt_d.step()
            disc(gen(noise())).mean().backward()
            opt_g.step()
        """,
        [10],
    ),
    "zero_redundancy_optimizer": (
        """
        import torch
        from torch.distributed.optim import ZeroRedundancyOptimizer

        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.Adam)
        for x in data:
            model(x).sum().backward()
            opt.step()
        """,
        [7],
    ),
    "name_used_for_an_optimizer_elsewhere": (
        """
        def warmup(model, optimizer, x):
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()

        def train(model, optimizer, data):
            for x in data:
                model(x).sum().backward()
                optimizer.step()
        """,
        [9],
    ),
    "between_model_zero_grad": (
        """
        import torch

        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            model.zero_grad()
            optimizer.step()
        """,
        [9],
    ),
    "between_through_helper_and_with": (
        """
        import torch

        def clear(model):
            for p in model.parameters():
                p.grad = None

        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data:
            model(x).sum().backward()
            clear(model)
            with lock:
                optimizer.step()
        """,
        [12],
    ),
    # A GAN whose generator step follows only the discriminator's model.zero_grad().
    "gan_other_model_zero_grad": (
        """
        import torch
        from torch import nn

        netG = nn.Linear(8, 4)
        netD = nn.Linear(4, 1)
        opt_g = torch.optim.Adam(netG.parameters())
        opt_d = torch.optim.Adam([{"params": netD.parameters()}], lr=2e-4)
        for real in data:
            netD.zero_grad()
            fake = netG(noise())
            (netD(real) - netD(fake.detach())).mean().backward()
            opt_d.step()
            netD.zero_grad()
            (-netD(fake)).mean().backward()
            opt_g.step()
        """,
        [15],
    ),
    # LBFGS: the closure clears the gradients its own backward() just computed.
    "lbfgs_closure_clears_after_backward": (
        """
        import torch

        opt = torch.optim.LBFGS(model.parameters())

        def closure():
            loss = model(x).sum()
            loss.backward()
            opt.zero_grad()
            return loss

        for _ in range(10):
            opt.step(closure)
        """,
        [12],
    ),
}


@pytest.mark.parametrize("name", FLAGGED)
def test_flagged(name):
    code, expected = FLAGGED[name]
    assert lines(code) == expected


NOT_FLAGGED = {
    "name_alone_is_not_enough": """
        def train(model, optimizer, data):
            for x in data:
                model(x).sum().backward()
                optimizer.step()
        """,
    "unknown_closure": """
        import torch

        def fit(opt: torch.optim.Optimizer, closure, n):
            for _ in range(n):
                closure().backward()
                opt.step(closure)
        """,
    "optimizer_handed_to_external_code": """
        import torch
        from utils import optimizer_step

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data:
            model(x).sum().backward()
            optimizer_step(opt)
            opt.step()
        """,
    "deepspeed_engine": """
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=model, config=cfg)
        for batch in loader:
            loss = engine(batch)
            engine.backward(loss)
            engine.step()
        """,
    "external_zero_grads_helper": """
        import torch
        from helpers import zero_grads

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data:
            zero_grads(model)
            model(x).sum().backward()
            opt.step()
        """,
    "in_place_zeroing": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.data.zero_()
            model(x).sum().backward()
            opt.step()
        for x in data:
            torch._foreach_zero_([p.grad for p in model.parameters()])
            model(x).sum().backward()
            opt.step()
        for x in data:
            for p in model.parameters():
                del p.grad
            model(x).sum().backward()
            opt.step()
        """,
    "gan_other_networks_zero_grad_between": """
        import torch

        opt_d = torch.optim.Adam(disc.parameters())
        opt_g = torch.optim.Adam(gen.parameters())
        for real in data:
            disc.zero_grad()
            disc(real).mean().backward()
            gen.zero_grad()
            opt_d.step()
            gen(noise()).mean().backward()
            opt_g.step()
        """,
    "step_in_function_never_called_in_a_loop": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def one_step(x):
            model(x).sum().backward()
            opt.step()
        """,
    "outer_loop_clears_per_guarded_step": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(100):
            opt.zero_grad()
            for micro, x in enumerate(chunks):
                model(x).sum().backward()
                if micro == len(chunks) - 1:
                    opt.step()
        """,
    "backward_outside_the_stepping_loop": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x).sum().backward()
        for _ in range(3):
            opt.step()
        """,
    "zero_grad_in_finally": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data:
            try:
                model(x).sum().backward()
                opt.step()
            finally:
                opt.zero_grad()
        """,
    "trainer_model_zero_grad": """
        import torch

        class Trainer:
            def __init__(self, model):
                self.model = model
                self.optimizer = torch.optim.AdamW(model.parameters())

            def fit(self, loader):
                for batch in loader:
                    self.model(batch).sum().backward()
                    self.optimizer.step()
                    self.model.zero_grad()
        """,
    "closure_through_lambda": """
        import torch

        opt = torch.optim.LBFGS(model.parameters())

        def evaluate():
            opt.zero_grad()
            loss = model(x).sum()
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(lambda: evaluate())
        """,
    "fake_gradients_filled_in": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in data:
            opt.zero_grad()
            model(x).sum().backward()
            for p in model.parameters():
                p.grad.fill_(0.01)
            opt.step()
        """,
    "scheduler_step_only": """
        import torch

        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
        for x in data:
            model(x).sum().backward()
            sched.step()
        """,
    "accumulate_then_step_and_clear_after_loop_of_micro_batches": """
        import torch

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for batch in loader:
            for chunk in batch.split(4):
                model(chunk).sum().backward()
            opt.step()
            opt.zero_grad()
        """,
    # The cleared model wraps or holds the optimizer's: its zero_grad reaches them.
    "gan_wrapper_holds_the_generator": """
        import torch
        from torch import nn

        netG = nn.Linear(8, 4)
        gan = GAN(netG, nn.Linear(4, 1))
        opt_g = torch.optim.Adam(netG.parameters())
        for real in data:
            gan.zero_grad()
            gan(real).mean().backward()
            opt_g.step()
        """,
    "optimizer_over_a_model_built_from_the_cleared_one": """
        import torch
        from torch import nn

        netD = nn.Linear(4, 1)
        head = netD.head
        opt = torch.optim.SGD(head.parameters(), lr=0.1)
        for real in data:
            netD.zero_grad()
            netD(real).mean().backward()
            opt.step()
        """,
    # Parameters from elsewhere: the cleared model may hold them.
    "optimizer_over_unknown_parameters": """
        import torch
        from torch import nn

        netD = nn.Linear(4, 1)
        opt = torch.optim.SGD(params, lr=0.1)
        for real in data:
            netD.zero_grad()
            netD(real).mean().backward()
            opt.step()
        """,
    "lbfgs_closure_clears_before_backward": """
        import torch

        opt = torch.optim.LBFGS(model.parameters())

        def closure():
            opt.zero_grad()
            loss = model(x).sum()
            loss.backward()
            return loss

        for _ in range(10):
            opt.step(closure)
        """,
}


@pytest.mark.parametrize("name", NOT_FLAGGED)
def test_not_flagged(name):
    assert lines(NOT_FLAGGED[name]) == []


def test_data_for_the_probe_never_cleared():
    (f,) = findings(FLAGGED["step_in_helper_called_from_loop"][0])
    assert f.data["kind"] == "never-cleared"
    assert f.data["optimizer"] == "opt"
    assert f.data["loss"] == "loss"
    assert f.data["backward_line"] == 7
    assert f.region is not None and (f.region.start.line, f.region.end.line) == (11, 12)
    assert "`opt`" in f.message and "opt.zero_grad()" in f.message


def test_data_for_the_probe_cleared_before_step():
    (f,) = findings(FLAGGED["between_model_zero_grad"][0])
    assert f.data == {
        "kind": "cleared-before-step",
        "optimizer": "optimizer",
        "loss": "loss",
        "step_line": 9,
        "backward_line": 6,
        "clear_line": 8,
    }
    assert (f.region.start.line, f.region.end.line) == (4, 9)
    assert "`model.zero_grad()` (line 8)" in f.message


def test_scaler_step_names_the_optimizer():
    (f,) = findings(FLAGGED["scaler_step"][0])
    assert f.data["optimizer"] == "opt"
    assert "`scaler.step(opt)`" in f.message


def test_prefilter_needs_backward_and_step():
    assert RULE.may_match("x.backward()\nopt.step()")
    assert not RULE.may_match("opt.step()")
    assert not RULE.may_match("loss.backward()")
