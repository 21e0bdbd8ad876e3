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


def mode_dependent_layer(qname: str, kwargs: dict[str, object]) -> bool:
    """Whether ``torch.nn.X(**kwargs)`` computes differently in training and eval mode.
    ``kwargs`` maps each keyword to its literal value, or ``UNKNOWN``."""
    if not qname.startswith("torch.nn."):
        return False
    last = qname.rsplit(".", 1)[-1]
    if MODE_LAYERS.search(last):
        return True
    if last.startswith(("InstanceNorm", "LazyInstanceNorm")):
        return "track_running_stats" in kwargs and kwargs["track_running_stats"] is not False
    if last in ("RNN", "LSTM", "GRU", "MultiheadAttention"):
        p = kwargs.get("dropout")
        return p is not None and not (isinstance(p, (int, float)) and float(p) == 0)
    return False
