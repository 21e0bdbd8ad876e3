"""The project model: roots, imports across modules, factory roles, checkpoint loads,
and the files each answer depended on."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mllint.cache import Cache
from mllint.project import Role, project_for
from mllint.project.layout import find_root, resolve_module
from mllint.types import FileResult


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


PROJECT = {
    "pyproject.toml": "",
    "utils/__init__.py": "from .optim import build_optimizer\n",
    "utils/optim.py": """
        import torch
        from torch import nn

        def build_optimizer(cfg, model):
            if cfg.adam:
                opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            else:
                opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
            return opt

        def build(cfg, model):
            criterion = nn.CrossEntropyLoss().cuda()
            return criterion, build_optimizer(cfg, model)

        def save_state(state, path):
            torch.save(state, path)
    """,
    "tools/train.py": """
        import torch
        from utils import build_optimizer
        import utils.optim as uo

        def main(args, model, loader):
            optimizer = build_optimizer(args, model)
            criterion, opt2 = uo.build(args, model)
            if args.resume:
                ckpt = torch.load(args.resume)
                model.load_state_dict(ckpt["model"])
                start_epoch = ckpt["epoch"]
            for x in loader:
                criterion(model(x)).backward()
                optimizer.step()
    """,
    "sample.py": """
        import torch
        state = torch.load("checkpoints/best.pt")
    """,
}


def test_root_is_the_nearest_marker_and_imports_resolve_inside_it(tmp_path):
    write(tmp_path, PROJECT)
    train = tmp_path / "tools" / "train.py"
    assert find_root(train) == tmp_path
    assert resolve_module(tmp_path, train, "utils.optim") == tmp_path / "utils" / "optim.py"
    assert resolve_module(tmp_path, train, "utils") == tmp_path / "utils" / "__init__.py"
    assert resolve_module(tmp_path, tmp_path / "utils" / "optim.py", "", 1) == (
        tmp_path / "utils" / "__init__.py")
    # Installed packages are never the project's.
    assert resolve_module(tmp_path, train, "torch.optim") is None


def test_factory_roles_follow_reexports_and_tuple_positions(tmp_path):
    write(tmp_path, PROJECT)
    view = project_for(tmp_path / "tools" / "train.py")
    assert view.returned_roles("build_optimizer") == (frozenset({Role.OPTIMIZER}),)
    assert view.returned_roles("uo.build") == (frozenset({Role.LOSS}), frozenset({Role.OPTIMIZER}))
    assert view.returned_roles("uo.save_state") == ()
    assert view.returned_roles("print") == ()
    found = view.function("uo.save_state")
    assert found is not None and found[1].saved_params == frozenset({0})
    assert set(view.read) == {str(tmp_path / "utils" / "__init__.py"),
                              str(tmp_path / "utils" / "optim.py")}


def test_resuming_and_inference_loads(tmp_path):
    write(tmp_path, PROJECT)
    view = project_for(tmp_path / "utils" / "optim.py")
    resuming = view.resuming_loads()
    assert [(Path(s.path).name, site.line) for s, site in resuming] == [("train.py", 10)]
    assert resuming[0][1].keys == {"model", "epoch"}
    assert resuming[0][1].words == {"resume"}
    inference = view.inference_loads()
    assert [(Path(s.path).name, site.line) for s, site in inference] == [("sample.py", 3)]
    assert inference[0][1].words == {"'best.pt'"}


def test_a_changed_module_is_read_again(tmp_path):
    write(tmp_path, PROJECT)
    view = project_for(tmp_path / "tools" / "train.py")
    assert view.returned_roles("build_optimizer") == (frozenset({Role.OPTIMIZER}),)
    optim = tmp_path / "utils" / "optim.py"
    optim.write_text(optim.read_text().replace("return opt\n", "return None\n") + "\n")
    assert project_for(tmp_path / "tools" / "train.py").returned_roles("build_optimizer") == (
        frozenset(),)


def test_unparsable_neighbours_contribute_nothing(tmp_path):
    write(tmp_path, {"pyproject.toml": "", "a.py": "from b import f\nx = f()\n",
                     "b.py": "def f(:\n"})
    assert project_for(tmp_path / "a.py").returned_roles("f") == ()


def test_cached_result_is_dropped_when_a_dependency_changes(tmp_path):
    write(tmp_path, PROJECT)
    dep = tmp_path / "utils" / "optim.py"
    view = project_for(tmp_path / "tools" / "train.py")
    view.returned_roles("build_optimizer")
    cache = Cache(tmp_path / "cache", ("ML006",))
    key = cache.key("tools/train.py", b"text")
    cache.put(key, FileResult("tools/train.py", depends_on=view.read))
    assert cache.get(key, "tools/train.py") == FileResult("tools/train.py")
    dep.write_text(dep.read_text() + "# edited\n")
    assert cache.get(key, "tools/train.py") is None


MODELS = {
    "pyproject.toml": "",
    "models/__init__.py": "from .nets import Plain, WithBlock, Opaque\n",
    "models/blocks.py": """
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm = nn.BatchNorm1d(4)
    """,
    "models/nets.py": """
        from collections import OrderedDict

        import timm
        from torch import nn

        from .blocks import Block

        class Plain(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), act=nn.ReLU()))

        class WithBlock(Plain):
            def __init__(self):
                super().__init__()
                self.block = Block()

        class Opaque(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = timm.create_model("resnet18")

        class Gated(nn.Module):
            def forward(self, x):
                return x if self.training else x * 0.5

        class Recurrent(nn.Module):
            def __init__(self, p):
                super().__init__()
                self.lstm = nn.LSTM(4, 4, dropout=0)
                self.gru = nn.GRU(4, 4, dropout=p)
    """,
    "train.py": "from models import Plain, WithBlock, Opaque\nimport models.nets as nets\n",
}


def test_mode_dependence_of_models_defined_in_other_modules(tmp_path):
    write(tmp_path, MODELS)
    view = project_for(tmp_path / "train.py")
    assert view.class_mode_dependent("Plain") is False
    assert view.class_mode_dependent("WithBlock") is True  # batch norm, two modules away
    assert view.class_mode_dependent("Opaque") is None  # built by a library
    assert view.class_mode_dependent("nets.Gated") is True  # branches on self.training
    assert view.class_mode_dependent("nets.Recurrent") is True  # dropout=p may be non-zero
    assert view.class_mode_dependent("Missing") is None


def test_mode_dependence_of_graph_and_privacy_layers_known_by_name(tmp_path):
    write(tmp_path, {
        "pyproject.toml": "",
        "gnn.py": """
            from torch import nn
            from torch_geometric.nn import GATConv, GCN, GCNConv, GINConv
            from opacus.layers import DPLSTM

            class Plain(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = GCNConv(8, 8)
                    self.gat = GATConv(8, 8, heads=2)
                    self.gin = GINConv(nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
                    self.gnn = GCN(8, 16, 2, 4, dropout=0.0)
                    self.lstm = DPLSTM(8, 8, batch_first=True)

            class Attention(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.gat = GATConv(8, 8, heads=2, dropout=0.6)

            class Normed(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.gnn = GCN(8, 16, 2, 4, norm="batch_norm")

            class Positional(nn.Module):
                def __init__(self, p):
                    super().__init__()
                    self.gat = GATConv(8, 8, 2, True, 0.2, p)

            class Wrapped(nn.Module):
                def __init__(self, mlp):
                    super().__init__()
                    self.gin = GINConv(mlp)
        """,
        "train.py": "import gnn\n",
    })
    view = project_for(tmp_path / "train.py")
    assert view.class_mode_dependent("gnn.Plain") is False
    assert view.class_mode_dependent("gnn.Attention") is True  # attention dropout
    assert view.class_mode_dependent("gnn.Normed") is True  # a batch norm between layers
    assert view.class_mode_dependent("gnn.Positional") is True  # dropout given by position
    assert view.class_mode_dependent("gnn.Wrapped") is None  # the MLP is built elsewhere


def test_may_clear_gradients_follows_forwarded_optimizers(tmp_path):
    write(tmp_path, {
        "pyproject.toml": "",
        "helpers.py": """
            import torch
            import accelerate_utils

            def log(optimizer):
                print(optimizer.param_groups[0]["lr"])
                torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 1.0)

            def reset(optimizer):
                clear(optimizer)

            def clear(optimizer):
                optimizer.zero_grad()

            def elsewhere(optimizer):
                accelerate_utils.do(optimizer)
        """,
        "train.py": "import helpers\n",
    })
    view = project_for(tmp_path / "train.py")
    assert view.may_clear_gradients("helpers.log") is False
    assert view.may_clear_gradients("helpers.reset") is True
    assert view.may_clear_gradients("helpers.elsewhere") is True  # code we cannot see
    assert view.may_clear_gradients("torch.optim.SGD") is None


def test_call_sites_in_other_modules_carry_autograd_and_mode(tmp_path):
    write(tmp_path, {
        "pyproject.toml": "",
        "engine.py": "def evaluate(model, loader):\n    return [model(x) for x in loader]\n",
        "main.py": """
            import torch
            import engine
            from engine import evaluate as ev

            @torch.no_grad()
            def report(net, loader):
                return engine.evaluate(net, loader)

            def run(model, loader):
                model.train()
                ev(model, loader)
                model.eval()
                with torch.inference_mode():
                    evaluate_again = engine.evaluate(model, loader=loader)
                with torch.set_grad_enabled(False):
                    ev(model, loader)
        """,
    })
    view = project_for(tmp_path / "engine.py")
    sites = sorted((s.line, s.function, s.no_grad, s.args, s.kwargs, s.modes)
                   for _, s in view.callers_elsewhere("evaluate"))
    assert sites == [
        (8, "report", True, ("net", "loader"), (), ()),
        (12, "run", False, ("model", "loader"), (), (("model", "train"),)),
        (15, "run", True, ("model",), (("loader", "loader"),), (("model", "eval"),)),
        (17, "run", True, ("model", "loader"), (), (("model", "eval"),)),
    ]
    assert view.callers_elsewhere("missing") == []


def test_numeric_libraries_build_no_layers(tmp_path):
    """A feature extractor that computes a mel basis with librosa holds no layer; a class
    built by an unknown library (timm) stays unknown."""
    write(tmp_path, {
        "pyproject.toml": "",
        "features.py": """
            import numpy as np
            import torch
            import torch.nn as nn
            from librosa.filters import mel as librosa_mel_fn
            import timm

            class Audio2Mel(nn.Module):
                def __init__(self):
                    super().__init__()
                    basis = librosa_mel_fn(sr=22050, n_fft=1024, n_mels=80)
                    self.register_buffer("basis", torch.from_numpy(np.asarray(basis)))

            class Backbone(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net = timm.create_model("resnet18")
        """,
        "train.py": "from features import Audio2Mel, Backbone\n",
    })
    view = project_for(tmp_path / "train.py")
    assert view.class_mode_dependent("Audio2Mel") is False
    assert view.class_mode_dependent("Backbone") is None
