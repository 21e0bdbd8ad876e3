"""The roles a value plays in training code, and what makes a value play one.

A role comes from how the value is built (a constructor torch or a training library
defines) or from how the code uses it (``x.step()`` and ``x.zero_grad()`` on the same
name: an optimizer). Factories of the project itself are followed by ``model.Project``.
Plain string logic over qualified names, so the ast side and the libcst side agree.
"""

from __future__ import annotations

import enum
import re

from mllint.optimizer_names import is_optimizer_constructor


class Role(str, enum.Enum):
    OPTIMIZER = "optimizer"
    MODEL = "model"
    LOADER = "loader"
    DATASET = "dataset"
    SAMPLER = "sampler"
    LOSS = "loss"
    METER = "meter"
    SCALER = "scaler"
    ACCELERATOR = "accelerator"
    SCHEDULER = "scheduler"


#: Methods that hand back the object they are called on (or a copy of it in the same
#: role): ``model.to(device)``, ``nn.CrossEntropyLoss().cuda()``, ``model.train()``.
ROLE_KEEPING_METHODS = frozenset({
    "to", "cuda", "cpu", "float", "double", "half", "bfloat16", "train", "eval",
    "requires_grad_", "share_memory",
})
#: Calls whose result plays the role of their first argument.
ROLE_KEEPING_WRAPPERS = frozenset({
    "torch.nn.parallel.DistributedDataParallel", "torch.nn.DataParallel",
    "torch.nn.parallel.DataParallel", "torch.nn.parallel.distributed.DistributedDataParallel",
    "torch.compile", "torch.jit.script", "copy.deepcopy", "tqdm.tqdm", "tqdm.auto.tqdm",
    "tqdm.notebook.tqdm", "builtins.iter",
})

SGD_CONSTRUCTORS = frozenset({"torch.optim.SGD", "torch.optim.sgd.SGD"})
#: ``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov, ...)``
SGD_MOMENTUM_POSITION = 2

_LOSS_CLASS = re.compile(r"Loss$")
_FRAMEWORK_ROLES = {
    "torch.utils.data.DataLoader": Role.LOADER,
    "torch.utils.data.dataloader.DataLoader": Role.LOADER,
    "torch.cuda.amp.GradScaler": Role.SCALER,
    "torch.amp.GradScaler": Role.SCALER,
    "torch.cuda.amp.grad_scaler.GradScaler": Role.SCALER,
    "accelerate.Accelerator": Role.ACCELERATOR,
    "lightning.Fabric": Role.ACCELERATOR,
    "lightning.fabric.Fabric": Role.ACCELERATOR,
}


def constructor_role(qualified: set[str] | frozenset[str]) -> Role | None:
    """The role of what a call of a class or factory with these qualified names builds."""
    if is_optimizer_constructor(set(qualified)):
        return Role.OPTIMIZER
    for name in qualified:
        role = _FRAMEWORK_ROLES.get(name)
        if role is not None:
            return role
        parts = name.split(".")
        if "lr_scheduler" in parts:
            return Role.SCHEDULER
        if name.startswith("torch.utils.data.") and parts[-1].endswith("Sampler"):
            return Role.SAMPLER
        if name.startswith("torch.nn.") and parts[-1][:1].isupper():
            if _LOSS_CLASS.search(parts[-1]):
                return Role.LOSS
            if len(parts) == 3 or parts[2] == "modules":
                return Role.MODEL
    return None


def usage_role(methods: set[str]) -> Role | None:
    """The role implied by the methods and attributes used on one name."""
    if "param_groups" in methods or {"step", "zero_grad"} <= methods:
        return Role.OPTIMIZER
    if methods & {"parameters", "named_parameters", "state_dict"} and methods & {"train", "eval"}:
        return Role.MODEL
    return None


#: Layers and functions that compute differently in training and eval mode.
MODE_LAYERS = re.compile(r"Dropout|BatchNorm|^Transformer|^dropout|^alpha_dropout|^batch_norm")
#: Keyword arguments whose value is unknown (not a literal).
UNKNOWN = object()


#: Layers of graph and privacy libraries known by name: the keywords that make them
#: compute differently in training mode (dropout, or a norm for PyG's ready-made GNNs),
#: and how many leading positional arguments come before the first of them. Layers that
#: take other modules as arguments (``GINConv(nn.Sequential(...))``) are in ``NESTING_LAYERS``.
_KNOWN_LAYERS: dict[str, dict[str, tuple[tuple[str, ...], int]]] = {
    "torch_geometric.nn.": {
        **dict.fromkeys(
            ("GCNConv", "SAGEConv", "GraphConv", "ChebConv", "SGConv", "SSGConv", "TAGConv",
             "SplineConv", "GatedGraphConv", "ResGatedGraphConv", "GMMConv", "LEConv",
             "ClusterGCNConv", "RGCNConv", "FastRGCNConv", "CGConv", "GCN2Conv", "FeaStConv",
             "GravNetConv", "SignedConv", "MFConv", "FiLMConv", "EGConv", "LGConv", "AGNNConv",
             "WLConv", "Linear", "HeteroLinear", "TopKPooling", "SAGPooling", "PANPooling",
             "GraphNorm", "LayerNorm", "PairNorm", "GINConv", "GINEConv", "NNConv", "EdgeConv",
             "DynamicEdgeConv", "PointNetConv", "PPFConv", "PointTransformerConv"),
            ((), 99)),
        **dict.fromkeys(("GATConv", "GATv2Conv", "SuperGATConv"), (("dropout",), 5)),
        "TransformerConv": (("dropout",), 5),
        "APPNP": (("dropout",), 2),
        "ARMAConv": (("dropout",), 6),
        "HypergraphConv": (("dropout",), 7),
        "DNAConv": (("dropout",), 3),
        "EdgePooling": (("dropout",), 2),
        "ASAPooling": (("dropout",), 3),
        "DeepGCNLayer": (("dropout",), 4),
        **dict.fromkeys(("GCN", "GraphSAGE", "GIN", "GAT", "PNA", "EdgeCNN"),
                        (("dropout", "norm"), 4)),
        "AttentiveFP": (("dropout",), 6),
    },
    "opacus.layers.": {
        **dict.fromkeys(("DPLSTM", "DPGRU", "DPRNN"), (("dropout",), 5)),
        "DPMultiheadAttention": (("dropout",), 2),
    },
}
#: Known layers whose computation is that of the modules passed to them.
NESTING_LAYERS = frozenset({"GINConv", "GINEConv", "NNConv", "EdgeConv", "DynamicEdgeConv",
                            "PointNetConv", "PPFConv", "PointTransformerConv", "DeepGCNLayer"})


def mode_dependent_layer(qname: str, kwargs: dict[str, object], positional: int = 0) -> bool | None:
    """Whether the layer ``qname(*positional, **kwargs)`` computes differently in training
    and eval mode: True or False for torch's layers and the graph and privacy layers known
    by name, None for any other callee. ``kwargs`` maps each keyword to its literal value,
    or ``UNKNOWN``; ``positional`` counts the positional arguments."""
    last = qname.rsplit(".", 1)[-1]
    if not qname.startswith("torch.nn."):
        for prefix, layers in _KNOWN_LAYERS.items():
            if qname.startswith(prefix) and last in layers:
                if MODE_LAYERS.search(last):
                    return True
                keywords, before = layers[last]
                if keywords and positional > before:
                    return True  # a mode keyword given by position: assume it is set
                return any(_set(kwargs.get(k)) for k in keywords)
            if qname.startswith(prefix) and MODE_LAYERS.search(last):
                return True  # ``torch_geometric.nn.BatchNorm``
        return None
    if MODE_LAYERS.search(last):
        return True
    if last.startswith(("InstanceNorm", "LazyInstanceNorm")):
        return "track_running_stats" in kwargs and kwargs["track_running_stats"] is not False
    if last in ("RNN", "LSTM", "GRU", "MultiheadAttention"):
        return _set(kwargs.get("dropout"))
    return False


def _set(value: object) -> bool:
    """A dropout probability or norm argument that switches the behaviour on (an unknown
    value counts as on; absent, ``0`` and ``None`` as off)."""
    return value is not None and not (isinstance(value, (int, float)) and float(value) == 0)
