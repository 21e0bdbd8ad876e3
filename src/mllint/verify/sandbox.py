"""What a ``--verify`` run is kept from doing, and what it may still do.

Note "verify-safety" (cited by the harness, the bootstrap and the README):

Guaranteed, and tested:
- Copy-on-write (``mllint.verify.cow``): writes to existing files, and any write inside
  the project (the working directory and the script's directory), go to a scratch copy
  that later reads in the same run see; deletions, renames and new directories happen
  to copies; all of it is discarded with the run, so every file of the project is
  byte-identical afterwards. On Linux, where mount and user namespaces allow it, the
  working directory is also mounted as an overlay whose upper layer is scratch, which
  catches writes from C extensions and subprocesses too. What can still escape the
  Python layer alone is listed in that module's docstring.
- ``torch.save(obj, f)`` shows the probes ``obj`` and writes to a copy-on-write copy (a
  path) or to the file object the script opened (already redirected if it was the
  user's); ``torch.load`` reads the run's copy back. Pickling errors surface where they
  would.
- ``torch.utils.tensorboard`` / ``tensorboardX`` ``SummaryWriter`` logs go to a scratch
  directory that is deleted after the run, whatever ``log_dir`` the script passes.
- Experiment trackers are kept offline or off through their environment variables
  (``ENVIRONMENT`` below): Weights & Biases disabled, MLflow tracking into the scratch
  directory, Comet and ClearML offline, Neptune in debug mode (no files), and the Hugging
  Face hub offline (so nothing is pushed; models not already cached cannot be fetched).
- No ``__pycache__`` is written next to the user's modules (``PYTHONDONTWRITEBYTECODE``).
- With ``--device cpu`` no GPU is visible (``CUDA_VISIBLE_DEVICES=""``; MPS reported
  unavailable); a script that calls ``.cuda()`` unconditionally then crashes, as it would
  on a CPU machine.
- stdin is closed (``input()`` raises ``EOFError`` instead of waiting), matplotlib uses the
  non-interactive Agg backend, and at the timeout the whole process group is killed,
  including DataLoader workers and any process the script started.

Not prevented: the script runs with the user's permissions. New files outside the project
are created for real (in the temporary directory, a data directory elsewhere); without
the overlay, writes that bypass Python's file functions (C/C++/Rust writers such as
``safetensors`` or ``cv2.imwrite``, subprocesses) reach the disk; network connections
(downloads, custom HTTP calls, distributed rendezvous) and processes it starts are not
stopped. Everything it does stops at the step budget or the timeout.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any, Callable, Mapping

#: Environment set for the child (the user may override any of these explicitly).
ENVIRONMENT: Mapping[str, str] = {
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "COMET_MODE": "offline",
    "NEPTUNE_MODE": "debug",
    "CLEARML_OFFLINE_MODE": "1",
    "MPLBACKEND": "Agg",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}


def child_environment(
    base: Mapping[str, str], scratch: str, device: str, overrides: Mapping[str, str] | None
) -> dict[str, str]:
    env = dict(base)
    env.update(ENVIRONMENT)
    env["MLFLOW_TRACKING_URI"] = "file://" + os.path.join(scratch, "mlruns")
    env["COMET_OFFLINE_DIRECTORY"] = os.path.join(scratch, "comet")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(overrides or {})
    return env


# -- child side -------------------------------------------------------------------------


class AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``fn(module)`` right after a named module is first imported.

    Used to redirect ``SummaryWriter`` without importing tensorboard up front (that import
    costs seconds and most scripts never make it).
    """

    def __init__(self, callbacks: Mapping[str, Callable[[Any], None]]) -> None:
        self._callbacks = dict(callbacks)

    def install(self) -> Callable[[], None]:
        for name in list(self._callbacks):
            if name in sys.modules:
                self._callbacks.pop(name)(sys.modules[name])
        sys.meta_path.insert(0, self)
        return lambda: sys.meta_path.remove(self) if self in sys.meta_path else None

    def find_spec(self, name: str, path: Any, target: Any = None):
        fn = self._callbacks.get(name)
        if fn is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _CallbackLoader(spec.loader, self._callbacks.pop(name))
                return spec
        return None


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, inner: Any, fn: Callable[[Any], None]) -> None:
        self._inner = inner
        self._fn = fn

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        self._fn(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def redirect_summary_writer(
    module: Any, scratch: str, patch: Callable[[Any, str, Any], None], keyword: str
) -> None:
    """Make ``module.SummaryWriter`` log under ``scratch`` whatever directory it is given."""
    writer = getattr(module, "SummaryWriter", None)
    if writer is None:
        return
    original = writer.__init__
    counter = [0]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        counter[0] += 1
        target = os.path.join(scratch, "tensorboard", str(counter[0]))
        if args:
            args = (target, *args[1:])
        else:
            kwargs[keyword] = target
        original(self, *args, **kwargs)

    patch(writer, "__init__", __init__)
