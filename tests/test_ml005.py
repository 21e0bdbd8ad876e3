"""ML005 double-softmax: fixtures, name resolution and the must-not-flag patterns."""

from __future__ import annotations

import textwrap

import pytest

from helpers import FIXTURES, expected
from mllint.engine import lint_path, lint_text
from mllint.rules.ml005_double_softmax import DoubleSoftmax

FIXTURE_FILES = sorted((FIXTURES / "ml005").glob("*.py"))


def lint(code: str):
    result = lint_text("t.py", textwrap.dedent(code).lstrip("\n"), [DoubleSoftmax])
    assert result.errors == ()
    return result.findings


def lines(code: str) -> list[int]:
    return [f.line for f in lint(code)]


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_markers(path):
    got = {(f.code, f.line) for f in lint_path(str(path), [DoubleSoftmax]).findings}
    assert got == {m for m in expected(path) if m[0] == "ML005"}


def test_every_bad_fixture_has_a_flagged_twin():
    bad = [p for p in FIXTURE_FILES if p.name.startswith("bad_")]
    assert len(bad) >= 3
    for p in bad:
        assert (p.parent / p.name.replace("bad_", "good_")).exists()
        assert any(c == "ML005" for c, _ in expected(p))


def test_data_names_the_input_and_the_softmax_line():
    (finding,) = lint_path(str(FIXTURES / "ml005" / "bad_softmax_last_layer.py"),
                           [DoubleSoftmax]).findings
    assert finding.data == {"probs": "model(inputs)", "softmax_line": 15}
    (finding,) = lint_path(str(FIXTURES / "ml005" / "bad_trainer_softmax_probs.py"),
                           [DoubleSoftmax]).findings
    assert finding.data == {"probs": "probs", "softmax_line": 27}
    assert "`probs`" in finding.message and "`self.criterion`" in finding.message


def test_aliases_resolve():
    assert lines("""
        import torch.nn.functional as Fn
        from torch.nn import CrossEntropyLoss as CE
        from torch.nn.functional import softmax as sm
        crit = CE(label_smoothing=0.1)
        def step(z, y):
            p = sm(z, dim=1)
            return crit(p, y) + Fn.cross_entropy(p, y)
        """) == [7, 7]


def test_softmax_module_call_and_tensor_method_and_chains():
    assert lines("""
        import torch
        from torch import nn
        def step(z, y):
            a = nn.Softmax(dim=1)(z)
            b = z.softmax(-1).float()
            c = torch.special.softmax(z, 1)
            return (torch.nn.functional.cross_entropy(a, y)
                    + nn.CrossEntropyLoss()(b.view(-1, 3), y)
                    + nn.CrossEntropyLoss()(input=c, target=y))
        """) == [7, 8, 9]


def test_model_passed_as_argument_and_ordered_dict_sequential():
    assert lines("""
        from collections import OrderedDict
        import torch.nn as nn
        import torch.nn.functional as F
        def train(net, x, y):
            return F.cross_entropy(net(x), y)
        model = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 2)), ("sm", nn.Softmax(1))]))
        train(model.to("cpu"), 1, 2)
        """) == [5]


def test_self_criterion_and_lightning_style_self_call():
    assert lines("""
        import torch.nn as nn
        import torch.nn.functional as F
        class Lit(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(4, 2), nn.Softmax(dim=-1))
                self.loss = nn.CrossEntropyLoss()
            def forward(self, x):
                return self.net(x)
            def training_step(self, batch, idx):
                x, y = batch
                return self.loss(self(x), y)
        """) == [12]


@pytest.mark.parametrize("code", [
    # log_softmax + NLL, and log of probabilities (log_softmax is idempotent)
    """
    import torch.nn.functional as F
    def f(z, y):
        return F.nll_loss(F.log_softmax(z, 1), y) + F.cross_entropy(F.softmax(z, 1).log(), y)
    """,
    # probabilities as the target only
    """
    import torch.nn.functional as F
    def f(z, t, y):
        return F.cross_entropy(z, F.softmax(t, 1)) + F.cross_entropy(z, target=t.softmax(1))
    """,
    # a softmax from another library is not torch's
    """
    from scipy.special import softmax
    import torch.nn.functional as F
    def f(z, y):
        return F.cross_entropy(softmax(z), y)
    """,
    # a reassigned name no longer holds the probabilities
    """
    import torch
    import torch.nn.functional as F
    def f(z, y):
        out = torch.softmax(z, 1)
        out = z * 2
        return F.cross_entropy(out, y)
    """,
    # Sequential whose softmax is not the last layer
    """
    from torch import nn
    model = nn.Sequential(nn.Linear(4, 4), nn.Softmax(1), nn.Linear(4, 2))
    crit = nn.CrossEntropyLoss()
    def f(x, y):
        return crit(model(x), y)
    """,
])
def test_not_flagged(code):
    assert lint(code) == ()


def test_prefilter_needs_both_words():
    assert DoubleSoftmax.may_match("F.softmax(x); F.cross_entropy(p, y)")
    assert DoubleSoftmax.may_match("nn.Softmax(); nn.CrossEntropyLoss()")
    assert not DoubleSoftmax.may_match("F.softmax(x); F.nll_loss(p, y)")
    assert not DoubleSoftmax.may_match("F.cross_entropy(p, y)")
    for path in FIXTURE_FILES:
        text = path.read_text()
        assert lint_text(str(path), text, [DoubleSoftmax]).findings == lint_text(
            str(path), text, [DoubleSoftmax], prefilter=False).findings


TUPLE_GAN = """
import torch
import torch.nn as nn
import torch.nn.functional as F

class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.adv_layer = nn.Sequential(nn.Linear(32, 1), nn.Sigmoid())
        self.aux_layer = nn.Sequential(nn.Linear(32, 10), nn.Softmax())
        self.latent_layer = nn.Sequential(nn.Linear(32, 2))

    def forward(self, img):
        out = img.view(img.shape[0], -1)
        validity = self.adv_layer(out)
        label = {label}
        latent_code = self.latent_layer(out)
        return validity, label, latent_code

discriminator = Discriminator()
categorical_loss = torch.nn.CrossEntropyLoss()
for imgs, gt in loader:
    {unpack} = discriminator(imgs)
    info_loss = categorical_loss({fed}, gt)
"""


@pytest.mark.parametrize("label, unpack, fed, flagged", [
    ("self.aux_layer(out)", "_, pred_label, pred_code", "pred_label", True),
    ("F.softmax(self.latent_layer(out), dim=1)", "_, pred_label, pred_code", "pred_label", True),
    ("self.aux_layer(out)", "out", "out[1]", True),
    ("self.aux_layer(out)", "_, pred_label, pred_code", "pred_code", False),
    ("self.latent_layer(out)", "_, pred_label, pred_code", "pred_label", False),
    ("self.aux_layer(out)", "first, *rest", "rest[0]", False),
])
def test_tuple_outputs_are_followed_by_position(label, unpack, fed, flagged):
    code = TUPLE_GAN.format(label=label, unpack=unpack, fed=fed)
    assert lines(code) == ([23] if flagged else [])



def test_softmax_reached_only_through_rare_paths():
    # The scope-free search that spares most inputs the scoped one must keep each of
    # these: a nested class's self(x), a lambda's default, parameters filled by keyword
    # or position, tuple unpacking, :=, a global set in another function, and an
    # OrderedDict Sequential behind DDP(module=...).
    assert lines("""
        import torch.nn as nn
        import torch.nn.functional as F
        from collections import OrderedDict
        from torch.nn.parallel import DistributedDataParallel as DDP

        class Outer(nn.Module):
            def make(self, x, y):
                class Inner(nn.Module):
                    def forward(s2, x):
                        return F.softmax(x, 1)
                    out = nn.CrossEntropyLoss()(self(x), y)
                return Inner

        f = lambda z, p=F.softmax(x, 0): F.cross_entropy(p, z)

        def by_keyword(a, *, probs):
            return F.cross_entropy(probs, a)

        def by_position(a, b):
            return F.cross_entropy(b, a)

        by_keyword(1, probs=F.softmax(x, 1))
        by_position(1, F.softmax(x, 1))
        p1, p2 = F.softmax(x, 1), x
        loss = F.cross_entropy(p1, y)
        if (q := F.softmax(x, 1)) is not None:
            loss = F.cross_entropy(q, y)
        G = None

        def set_g():
            global G
            G = F.softmax(x, 1)

        def use_g():
            return F.cross_entropy(G, y)

        seq = nn.Sequential(OrderedDict([("fc", nn.Linear(3, 3)), ("sm", nn.Softmax(1))]))
        loss = F.cross_entropy(DDP(module=seq)(x), y)
        """) == [11, 14, 17, 20, 25, 27, 35, 38]
