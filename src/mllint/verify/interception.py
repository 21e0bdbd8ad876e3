"""The torch functions a run intercepts: DataLoader passes, ``torch.save``/``load``, backward.

Each ``install_*`` replaces attributes through ``Runtime.patch`` (so ``Runtime.close``
restores them) and reports to the runtime's dispatchers; none of them changes what the
user's code computes, except that a DataLoader pass ends after ``max_batches`` and that
``torch.save`` writes to memory (note "verify-safety" in ``sandbox``).
"""

from __future__ import annotations

import io
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mllint.verify.runtime import Runtime


def install_dataloader_cut(rt: "Runtime") -> None:
    """Every pass of every ``DataLoader`` yields at most ``rt.max_batches`` batches, and
    ``len(loader)`` says so (schedulers and ``i == len(loader) - 1`` checks agree)."""
    loader_class = rt.torch.utils.data.DataLoader
    original_iter = loader_class.__iter__
    original_len = loader_class.__len__

    def __iter__(loader: Any) -> Any:
        return _CutIterator(original_iter(loader), loader, rt)

    def __len__(loader: Any) -> int:
        return min(original_len(loader), rt.max_batches)

    rt.patch(loader_class, "__iter__", __iter__)
    rt.patch(loader_class, "__len__", __len__)


class _CutIterator:
    """A DataLoader pass that ends after ``max_batches`` batches and reports each one."""

    def __init__(self, inner: Any, loader: Any, rt: "Runtime") -> None:
        self._inner = inner
        self._loader = loader
        self._rt = rt
        self._count = 0

    def __iter__(self) -> "_CutIterator":
        return self

    def __next__(self) -> Any:
        rt = self._rt
        rt.enforce_stop()
        if self._count >= rt.max_batches:
            raise StopIteration
        batch = next(self._inner)
        self._count += 1
        rt.dispatch_batch(self._loader, batch)
        return batch

    def __len__(self) -> int:
        return min(len(self._inner), self._rt.max_batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install_save_guard(rt: "Runtime") -> None:
    """``torch.save`` shows probes the payload and serialises it to memory, never to the
    user's path or file; ``torch.load`` of a path saved during the run reads it back."""
    torch = rt.torch
    original_save = torch.serialization.save
    original_load = torch.serialization.load
    saved_files: dict[str, bytes] = {}

    cow = getattr(rt, "cow", None)

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        rt.dispatch_save(obj, f)
        # Serialise anyway, so an unpicklable payload fails where it would have.
        buffer = f if type(f) is io.BytesIO else io.BytesIO()
        original_save(obj, buffer, *args, **kwargs)
        rt.saves += 1
        if isinstance(f, (str, os.PathLike)):
            if cow is not None:
                # Into the copy-on-write scratch area, where the run's reads find it.
                with open(cow.capture(f), "wb") as fh:
                    fh.write(buffer.getvalue())
            else:
                saved_files[os.path.realpath(os.fspath(f))] = buffer.getvalue()
        elif cow is not None and buffer is not f and callable(getattr(f, "write", None)):
            # A file object the script opened: copy-on-write already sent it to scratch
            # if it was the user's, so the bytes may go there (and be read back).
            f.write(buffer.getvalue())

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)):
            real = os.path.realpath(os.fspath(f))
            saved = cow.read_bytes(real) if cow is not None else saved_files.get(real)
            if saved is not None:
                f = io.BytesIO(saved)
        return original_load(f, *args, **kwargs)

    for owner in (torch, torch.serialization):
        rt.patch(owner, "save", save)
        rt.patch(owner, "load", load)


def install_backward_interception(rt: "Runtime") -> None:
    """``tensor.backward()`` and ``torch.autograd.backward(...)`` report to
    ``rt.dispatch_backward`` before they run (once: the first calls the second)."""
    torch = rt.torch
    tensor_backward = torch.Tensor.backward
    autograd_backward = torch.autograd.backward
    inside = threading.local()

    def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        rt.dispatch_backward(self)
        inside.active = True
        try:
            return tensor_backward(self, *args, **kwargs)
        finally:
            inside.active = False

    def autograd(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(inside, "active", False):
            rt.dispatch_backward(tensors)
        return autograd_backward(tensors, *args, **kwargs)

    backward.__doc__ = tensor_backward.__doc__
    autograd.__doc__ = autograd_backward.__doc__
    rt.patch(torch.Tensor, "backward", backward)
    rt.patch(torch.autograd, "backward", autograd)


def hide_mps_on_cpu(rt: "Runtime") -> None:
    """``--device cpu`` hides CUDA through the environment; MPS needs telling too."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        mps = getattr(getattr(rt.torch, "backends", None), "mps", None)
        if mps is not None and hasattr(mps, "is_available"):
            rt.patch(mps, "is_available", lambda: False)
