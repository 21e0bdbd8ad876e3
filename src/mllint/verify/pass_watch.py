"""Runtime helpers for the validation-pass probes (ML002, ML003, ML007).

Nothing here imports torch: everything reaches it through ``runtime.torch``, since rule
modules - and with them this one - are imported by static linting too.

``RegionForwards`` picks, among all ``nn.Module`` forwards, the *top-level* forwards of
the flagged model called from the finding's region (its submodules' forwards and other
modules such as a loss are ignored). The model is the object the static finding names
(``finding.data["model"]``), read from the region's frame without running user code;
when it cannot be read, the first module called from the region that is not inside
another tracked forward stands in for it.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mllint.types import Finding


class RegionForwards:
    def __init__(self, finding: Finding, runtime: Any) -> None:
        self.finding = finding
        self.rt = runtime
        self.name = str((finding.data or {}).get("model") or "")
        self._subs: dict[int, tuple[weakref.ref, frozenset[int]]] = {}
        #: Forwards under way, outermost first: (module id, is it a tracked forward).
        self._open: list[tuple[int, bool]] = []

    def submodule_ids(self, module: Any) -> frozenset[int]:
        cached = self._subs.get(id(module))
        if cached is not None and cached[0]() is module:
            return cached[1]
        ids = frozenset(id(m) for m in module.modules())
        self._subs[id(module)] = (weakref.ref(module), ids)
        return ids

    def enter(self, module: Any) -> FrameType | None:
        """The region's frame when ``module``'s forward (starting now) is a top-level
        forward of the flagged model from the region, else ``None``. Pair with ``leave``.

        Only a top-level forward costs a walk of the stack: the forwards of its
        submodules are recognised as such and skipped, in the region or outside it."""
        for outer, _ in self._open:
            if id(module) in self._subs.get(outer, (None, frozenset()))[1]:
                return None
        frame = self.rt.stack_in(self.finding)
        tracked = frame is not None and self._is_model(module, frame)
        self.submodule_ids(module)
        self._open.append((id(module), tracked))
        return frame if tracked else None

    def leave(self, module: Any) -> bool:
        """True when ``module`` is the tracked forward that ``enter`` accepted."""
        if self._open and self._open[-1][0] == id(module):
            return self._open.pop()[1]
        return False

    def _is_model(self, module: Any, frame: FrameType) -> bool:
        target = self._target(frame)
        if target is not None:
            # Not another module called from the region (a loss, a metric).
            return module is target or id(target) in self.submodule_ids(module)
        loss = self.rt.torch.nn.modules.loss._Loss
        return any(True for _ in module.parameters()) and not isinstance(module, loss)

    def _target(self, frame: FrameType) -> Any:
        if not self.name:
            return None
        try:
            value = self.rt.object_of(frame, self.name)
        except LookupError:
            return None
        return value if isinstance(value, self.rt.torch.nn.Module) else None


# -- what makes a module mode-dependent ----------------------------------------------------


def mode_dependent_layers(torch: Any, model: Any) -> list[tuple[str, str]]:
    """``(qualified name, class name)`` of the submodules that compute differently in
    training and eval mode: dropout, batch norm, instance norm tracking statistics,
    recurrent layers and attention with dropout."""
    out = []
    own_code: dict[type, bool] = {}
    for name, m in model.named_modules():
        kind = type(m)
        if _depends_on_mode(torch.nn, m):
            out.append((name, kind.__name__))
        elif not kind.__module__.startswith("torch."):
            # ``F.dropout(x, training=self.training)`` in the user's own forward.
            if kind not in own_code:
                own_code[kind] = _forward_reads_mode(kind)
            if own_code[kind]:
                out.append((name, f"{kind.__name__}.forward reads self.training"))
    return out


def _forward_reads_mode(kind: type) -> bool:
    try:
        source = inspect.getsource(kind.forward)
    except (OSError, TypeError, AttributeError):
        return False
    return "self.training" in source


def _depends_on_mode(nn: Any, m: Any) -> bool:
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return m.p > 0
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return True
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return bool(m.track_running_stats)
    if isinstance(m, nn.RNNBase):
        return m.dropout > 0 and m.num_layers > 1
    if isinstance(m, nn.MultiheadAttention):
        return m.dropout > 0
    return False


def batch_norm_state(torch: Any, model: Any) -> dict[str, tuple[Any, int]]:
    """Running mean (a copy) and batch counter of every batch-norm layer."""
    state = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            tracked = int(m.num_batches_tracked) if m.num_batches_tracked is not None else 0
            state[name] = (m.running_mean.detach().clone(), tracked)
    return state


def batch_norm_shift(torch: Any, model: Any, before: dict[str, tuple[Any, int]]) -> float | None:
    """Largest change of a running mean since ``before`` (None: nothing changed)."""
    shift = None
    after = batch_norm_state(torch, model)
    for name, (mean, tracked) in before.items():
        now = after.get(name)
        if now is None:
            continue
        if now[1] != tracked or not torch.equal(now[0], mean):
            d = float((now[0].float() - mean.float()).abs().max()) if now[0].numel() else 0.0
            shift = d if shift is None else max(shift, d)
    return shift


# -- autograd graphs -----------------------------------------------------------------------


def tensors_in(value: Any, torch: Any, depth: int = 0) -> Iterator[Any]:
    """Tensors in a forward's output: a tensor, tuple/list, dict or dict-like output."""
    if depth > 4:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v, torch, depth + 1)
    elif isinstance(value, dict) or hasattr(value, "values") and callable(value.values):
        try:
            items = list(value.values())
        except Exception:  # noqa: BLE001 - an exotic output type: nothing to count
            return
        for v in items:
            yield from tensors_in(v, torch, depth + 1)


def graph_size(torch: Any, outputs: list[Any], exclude_ptrs: set[int],
               limit: int = 20000) -> tuple[int, int]:
    """Autograd nodes reachable from ``outputs`` and the bytes of the tensors those nodes
    saved for backward (parameters, in ``exclude_ptrs``, are alive anyway)."""
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    seen: set[int] = set()
    ptrs: set[int] = set()
    saved = 0
    while stack and len(seen) < limit:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        for attr in dir(fn):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(fn, attr)
            except Exception:  # noqa: BLE001 - a freed or unreadable saved value
                continue
            for t in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(t, torch.Tensor) and t.numel():
                    ptr = storage_ptr(t)
                    if ptr and ptr not in ptrs and ptr not in exclude_ptrs:
                        ptrs.add(ptr)
                        saved += tensor_bytes(t)
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return len(seen), saved


def storage_ptr(t: Any) -> int:
    """``data_ptr()`` of a dense tensor; a sparse one has no storage of its own, so the
    address of its values stands in (0 when there is none to read)."""
    if t.is_sparse or _is_compressed(t):
        try:
            return _values(t).data_ptr()
        except (RuntimeError, AttributeError, NotImplementedError):
            return 0
    try:
        return t.data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


def tensor_bytes(t: Any) -> int:
    """Bytes a tensor holds: for a sparse tensor its values and indices, not its shape."""
    if t.is_sparse or _is_compressed(t):
        try:
            parts = [_values(t), *(_indices(t))]
        except (RuntimeError, AttributeError, NotImplementedError):
            return 0
        return sum(p.numel() * p.element_size() for p in parts)
    return t.numel() * t.element_size()


def _is_compressed(t: Any) -> bool:
    return str(getattr(t, "layout", "")) in (
        "torch.sparse_csr", "torch.sparse_csc", "torch.sparse_bsr", "torch.sparse_bsc")


def _values(t: Any) -> Any:
    return t._values() if t.is_sparse else t.values()


def _indices(t: Any) -> list[Any]:
    if t.is_sparse:
        return [t._indices()]
    layout = str(t.layout)
    if layout in ("torch.sparse_csr", "torch.sparse_bsr"):
        return [t.crow_indices(), t.col_indices()]
    return [t.ccol_indices(), t.row_indices()]


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- data identity ---------------------------------------------------------------------------


def first_tensor(batch: Any, torch: Any) -> Any:
    for t in tensors_in(batch, torch):
        return t
    return None


class SampleKeys:
    """A content key per sample of a batch (its first tensor, split on dim 0).

    Vectorised, so that training batches cost a matrix-vector product and no Python loop
    over their bytes: a sample's key is its projection on a fixed random vector and its
    sum. Equal samples get equal keys; different ones collide with negligible odds.
    """

    def __init__(self, torch: Any, limit: int = 512, width: int = 4096) -> None:
        self.torch = torch
        self.limit = limit
        self.width = width
        self._weights: dict[int, Any] = {}

    def __call__(self, batch: Any) -> list[tuple[float, float, tuple[int, ...]]]:
        torch = self.torch
        t = first_tensor(batch, torch)
        if t is None or t.dim() == 0 or t.shape[0] == 0:
            return []
        rows = t.detach()[: self.limit]
        flat = rows.reshape(rows.shape[0], -1)[:, : self.width].to("cpu", torch.float64)
        d = flat.shape[1]
        w = self._weights.get(d)
        if w is None:
            g = torch.Generator().manual_seed(d)
            w = self._weights[d] = torch.randn(d, generator=g, dtype=torch.float64)
        shape = tuple(rows.shape[1:])
        proj = (flat @ w).tolist()
        sums = flat.sum(dim=1).tolist()
        return [(p, s, shape) for p, s in zip(proj, sums)]


def data_source(loader: Any) -> tuple[Any, frozenset[int] | None]:
    """The dataset a loader finally reads and the indices it may read from it (``None``:
    all of them): ``Subset``/``random_split`` parts and index samplers are unwrapped."""
    dataset = getattr(loader, "dataset", None)
    indices: list[int] | None = None
    while dataset is not None and hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        own = [int(i) for i in dataset.indices]
        indices = own if indices is None else [own[i] for i in indices]
        dataset = dataset.dataset
    sampler = getattr(loader, "sampler", None)
    picked = getattr(sampler, "indices", None)
    if picked is not None:
        chosen = [int(i) for i in picked]
        indices = chosen if indices is None else [indices[i] for i in chosen]
    return dataset, None if indices is None else frozenset(indices)
