"""The training monitor: what the runtime checks (ML101-ML108) and the report share.

One monitor per run, made on the first ``Runtime.monitor()`` call (before the script
starts). It records, once for every check:

- where the user built each module, optimizer and DataLoader (the line a runtime finding
  points at): the first user frame outside the chain of ``__init__`` calls;
- per measured optimizer step (the first three, then one in four: ``measured``) and
  parameter group: learning rate, gradient norm, update norm and weight norm (fused
  norms, two host syncs per measured step: note "monitor-cost"), and per parameter
  whether it ever had a non-zero gradient or a non-finite one;
- the loss of every ``backward()`` and the loader whose batch preceded each step;
- the memory in use at each measured step (the CUDA allocator on GPU, the RSS on CPU).

``series()`` is the per-step record that ``--format json`` and ``--report`` show.

Its callbacks run inside the user's code, so each is guarded like a probe's: an
exception switches the monitor off (``error``) and the run goes on.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mllint.verify.runtime import Runtime


@dataclass(frozen=True)
class Site:
    """A user line: where an object was built or a call was made."""

    path: str
    line: int

    def short(self) -> str:
        return f"{os.path.basename(self.path)}:{self.line}"


@dataclass
class GroupStep:
    """One parameter group at one optimizer step."""

    lr: float | None
    grad_norm: float
    update_norm: float
    weight_norm: float

    @property
    def ratio(self) -> float | None:
        """||update|| / ||weight|| (None while the group's weights are all zero)."""
        return self.update_norm / self.weight_norm if self.weight_norm > 0 else None


@dataclass
class ParamRecord:
    """What the run saw of one parameter held by an optimizer."""

    steps_seen: int = 0
    #: Steps at which it had a non-zero gradient.
    grad_steps: int = 0
    #: The first step at which its gradient or its value was not finite.
    nonfinite_grad_step: int | None = None
    nonfinite_value_step: int | None = None


@dataclass
class OptimizerRecord:
    ref: Any
    class_name: str
    site: Site | None
    steps: int = 0
    #: Measured steps only (see ``measured``): their run-wide numbers, and per step the
    #: groups.
    step_numbers: list[int] = field(default_factory=list)
    groups: list[list[GroupStep]] = field(default_factory=list)  # [step][group]


class TrainingMonitor:
    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.torch = rt.torch
        self.error: str | None = None
        self._sites: "weakref.WeakKeyDictionary[Any, Site]" = weakref.WeakKeyDictionary()
        # Held strongly until the run ends: the checks judge them after the script has
        # returned and dropped its own references (the child exits right after).
        self._modules: list[Any] = []
        self._optimizers: list[Any] = []
        self._loaders: list[Any] = []
        self.optimizer_records: dict[int, OptimizerRecord] = {}
        self.params: dict[int, ParamRecord] = {}
        self._param_refs: dict[int, Any] = {}
        #: Per optimizer: the weights before the step being measured, in copies reused
        #: from one measured step to the next (note "monitor-cost").
        self._before: dict[int, list[Any]] = {}
        self._copies: dict[int, list[Any]] = {}
        #: Per optimizer: (gradient norms, weight norms) before the step being measured.
        self._pre_norms: dict[int, tuple[list[float | None], list[float | None]]] = {}
        #: (step, loss) of each backward of a scalar loss.
        self.losses: list[tuple[int, float]] = []
        self.loss_site: Site | None = None
        #: Memory in use after each step (bytes).
        self.memory: list[tuple[int, int]] = []
        #: Loaders whose batch was the last one drawn before an optimizer step, by id.
        self._training_loaders: dict[int, Any] = {}
        self._last_loader: Any = None
        #: The first step at which a gradient or an update was not finite, if any.
        self.first_nonfinite_step: int | None = None
        #: Called with (step, optimizer record) after every recorded step.
        self.step_listeners: list[Callable[[int, OptimizerRecord], None]] = []
        self._statm: int | None = None

    # -- installing ---------------------------------------------------------------------

    def install(self) -> None:
        torch = self.torch
        self._record_construction(torch.nn.Module, self._modules)
        self._record_construction(torch.optim.Optimizer, self._optimizers)
        self._record_construction(torch.utils.data.DataLoader, self._loaders)
        self.rt.add_step_pre_hook(self._guard(self._before_step))
        self.rt.add_step_post_hook(self._guard(self._after_step))
        self.rt.on_backward(self._guard(self._on_backward))
        self.rt.on_batch(self._guard(self._on_batch))

    def _guard(self, fn: Callable) -> Callable:
        def guarded(*args: Any) -> None:
            if self.error is not None:
                return
            try:
                fn(*args)
            except Exception as exc:  # isolation: the user's run goes on
                self.error = f"training monitor failed: {type(exc).__name__}: {exc}"

        return guarded

    def _record_construction(self, cls: type, into: list[Any]) -> None:
        original = cls.__init__
        monitor = self

        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:
            original(obj, *args, **kwargs)
            if monitor.error is None and obj not in monitor._sites:
                try:
                    into.append(obj)
                    site = monitor._construction_site(obj, sys._getframe(1))
                    if site is not None:
                        monitor._sites[obj] = site
                except Exception as exc:  # noqa: BLE001 - see _guard
                    monitor.error = f"training monitor failed: {type(exc).__name__}: {exc}"

        functools.update_wrapper(__init__, original)
        self.rt.patch(cls, "__init__", __init__)

    def _construction_site(self, obj: Any, frame: FrameType | None) -> Site | None:
        """The first user frame that is not one of ``obj``'s own ``__init__`` calls."""
        while frame is not None:
            code = frame.f_code
            if code.co_name == "__init__" and frame.f_locals.get("self") is obj:
                frame = frame.f_back
                continue
            if self.rt.is_user_file(code.co_filename):
                return Site(self.rt.realpath(code.co_filename), frame.f_lineno)
            frame = frame.f_back
        return None

    # -- queries ------------------------------------------------------------------------

    def site_of(self, obj: Any) -> Site | None:
        try:
            return self._sites.get(obj)
        except TypeError:
            return None

    def modules(self) -> list[Any]:
        return list(self._modules)

    def optimizers(self) -> list[Any]:
        return list(self._optimizers)

    def training_loaders(self) -> list[Any]:
        return list(self._training_loaders.values())

    def root_modules(self) -> list[Any]:
        """Built modules that are no other built module's submodule."""
        modules = self.modules()
        children = {id(c) for m in modules for c in m.children()}
        return [m for m in modules if id(m) not in children]

    def param_names(self) -> dict[int, tuple[str, Any]]:
        """id(parameter) -> (qualified name within its root module, root module)."""
        out: dict[int, tuple[str, Any]] = {}
        for root in self.root_modules():
            for name, p in root.named_parameters():
                out.setdefault(id(p), (name, root))
        return out

    def optimizer_params(self, optimizer: Any) -> list[Any]:
        return [p for g in optimizer.param_groups for p in g["params"]]

    def user_site(self, start: FrameType | None = None) -> Site | None:
        frame = self.rt.user_frame(start or sys._getframe(1))
        if frame is None:
            return None
        return Site(self.rt.realpath(frame.f_code.co_filename), frame.f_lineno)

    # -- callbacks ----------------------------------------------------------------------

    def _on_batch(self, loader: Any, batch: Any) -> None:
        self._last_loader = loader

    def _on_backward(self, tensor: Any) -> None:
        torch = self.torch
        if not isinstance(tensor, torch.Tensor) or tensor.numel() != 1:
            return
        if not tensor.is_floating_point():
            return
        if self.loss_site is None:
            self.loss_site = self.user_site()
        self.losses.append((self.rt.step, float(tensor.detach())))

    def _before_step(self, optimizer: Any) -> None:
        torch = self.torch
        if self._last_loader is not None:
            self._training_loaders.setdefault(id(self._last_loader), self._last_loader)
        if not measured(self.rt.step + 1):
            return
        params = self.optimizer_params(optimizer)
        with torch.no_grad():
            before = self._before[id(optimizer)] = self._copy(optimizer, params)
            grads = [p.grad for p in params]
            both = _norms(torch, grads + before)
        norms = both[: len(params)]
        self._pre_norms[id(optimizer)] = (norms, both[len(params):])
        for p, g, n in zip(params, grads, norms):
            record = self.params.get(id(p))
            if record is None:
                record = self.params[id(p)] = ParamRecord()
                self._param_refs[id(p)] = weakref.ref(p)
            record.steps_seen += 1
            if n is None:
                continue
            if n != 0.0:
                record.grad_steps += 1
            if not math.isfinite(n) and record.nonfinite_grad_step is None:
                record.nonfinite_grad_step = self.rt.step + 1
                if self.first_nonfinite_step is None:
                    self.first_nonfinite_step = self.rt.step + 1

    def _after_step(self, optimizer: Any) -> None:
        torch = self.torch
        before = self._before.pop(id(optimizer), None)
        pre_norms = self._pre_norms.pop(id(optimizer), None)
        if before is None or pre_norms is None:
            return
        pre, weights = pre_norms
        record = self.optimizer_records.get(id(optimizer))
        if record is None:
            record = self.optimizer_records[id(optimizer)] = OptimizerRecord(
                weakref.ref(optimizer), type(optimizer).__name__, self.site_of(optimizer))
        params = self.optimizer_params(optimizer)
        if len(params) != len(before):
            return  # the groups changed during the step (add_param_group)
        with torch.no_grad():
            # In place: the copies now hold minus the update (the weights before it,
            # against which ML104 takes the ratio, were measured in ``_before_step``).
            _subtract(torch, before, params)
            updates = _norms(torch, before)
        step = self.rt.step
        groups: list[GroupStep] = []
        start = 0
        for group in optimizer.param_groups:
            n = len(group["params"])
            sl = slice(start, start + n)
            start += n
            lr = group.get("lr")
            groups.append(GroupStep(
                lr=float(lr) if isinstance(lr, (int, float)) or _is_scalar(torch, lr) else None,
                grad_norm=_combine(pre[sl]),
                update_norm=_combine(updates[sl]),
                weight_norm=_combine(weights[sl]),
            ))
        for p, u in zip(params, updates):
            rec = self.params.get(id(p))
            # A finite weight plus a non-finite change is a non-finite weight.
            if (rec is not None and u is not None and not math.isfinite(u)
                    and rec.nonfinite_value_step is None):
                rec.nonfinite_value_step = step
                if self.first_nonfinite_step is None:
                    self.first_nonfinite_step = step
        record.steps += 1
        record.step_numbers.append(step)
        record.groups.append(groups)
        self.memory.append((step, self._memory_in_use()))
        for listener in self.step_listeners:
            listener(step, record)

    def _copy(self, optimizer: Any, params: list[Any]) -> list[Any]:
        """The weights copied into this optimizer's buffers (made anew when its
        parameters changed)."""
        copies = self._copies.get(id(optimizer))
        if copies is None or len(copies) != len(params) or any(
                c.shape != p.shape or c.dtype != p.dtype or c.device != p.device
                for c, p in zip(copies, params)):
            copies = self._copies[id(optimizer)] = [p.detach().clone() for p in params]
            return copies
        try:
            self.torch._foreach_copy_(copies, [p.detach() for p in params])
        except (RuntimeError, TypeError, AttributeError):
            for c, p in zip(copies, params):
                c.copy_(p.detach())
        return copies

    def _memory_in_use(self) -> int:
        torch = self.torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.memory_allocated())
        try:
            if self._statm is None:  # kept open: read again at every measured step
                self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
            return int(os.pread(self._statm, 256, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    # -- the series -----------------------------------------------------------------------

    def series(self) -> dict[str, Any]:
        """Per-step series for the report and ``--format json`` (JSON scalars only)."""
        optimizers = []
        for record in self.optimizer_records.values():
            groups = []
            count = max((len(g) for g in record.groups), default=0)
            for index in range(count):
                steps = [g[index] for g in record.groups if index < len(g)]
                groups.append({
                    "group": index,
                    "lr": [s.lr for s in steps],
                    "grad_norm": [_finite(s.grad_norm) for s in steps],
                    "update_ratio": [_finite(s.ratio) for s in steps],
                })
            optimizers.append({
                "optimizer": record.class_name,
                "site": None if record.site is None else record.site.short(),
                "steps": list(record.step_numbers),
                "groups": groups,
            })
        return {
            "loss": [[step, _finite(value)] for step, value in self.losses],
            "memory_bytes": [[step, value] for step, value in self.memory],
            "memory_kind": "cuda" if self.torch.cuda.is_available()
            and self.torch.cuda.is_initialized() else "rss",
            "optimizers": optimizers,
            **({"monitor_error": self.error} if self.error else {}),
        }


#: Steps measured one by one at the start (initialisation problems show there), then one
#: in ``MEASURE_EVERY``: copying the weights and taking norms at every step would cost
#: more than the step budget allows on small models.
#:
#: Note "monitor-cost": a measured step costs one copy of the weights into buffers kept
#: from one measured step to the next (allocating fresh copies every time page-faulted
#: their memory in again, the largest part of the cost on CPU), two fused norms (gradients
#: and weights before the step together, the update after it, computed in place in the
#: copies) and two host syncs.
MEASURE_FIRST, MEASURE_EVERY = 3, 4


def measured(step: int) -> bool:
    """Whether the monitor measures optimizer step ``step`` (1-based, run-wide)."""
    return step <= MEASURE_FIRST or step % MEASURE_EVERY == 0


def _norms(torch: Any, tensors: list[Any]) -> list[float | None]:
    """L2 norm of each tensor (None for None), with one host sync per device and dtype."""
    out: list[float | None] = [None] * len(tensors)
    tensors = list(tensors)
    by_device: dict[Any, list[int]] = {}
    for i, t in enumerate(tensors):
        if t is None:
            continue
        if t.is_sparse:
            t = t.coalesce()._values()
            tensors[i] = t
        by_device.setdefault((t.device, t.dtype), []).append(i)
    for indices in by_device.values():
        group = [tensors[i] for i in indices]
        try:
            # In float32 whatever the tensors' type: a half-precision norm above 65504
            # would read as infinite (a false ML101).
            norms = torch._foreach_norm(group, 2, dtype=torch.float32)
        except (RuntimeError, TypeError, AttributeError):
            norms = [torch.linalg.vector_norm(t, dtype=torch.float32) for t in group]
        values = torch.stack(norms).cpu().tolist()
        for i, value in zip(indices, values):
            out[i] = value
    return out


def _subtract(torch: Any, copies: list[Any], params: list[Any]) -> None:
    """``copies[i] -= params[i]`` for every i, fused where torch can."""
    try:
        torch._foreach_sub_(copies, [p.detach() for p in params])
    except (RuntimeError, TypeError, AttributeError):
        for c, p in zip(copies, params):
            c.sub_(p.detach())


def _combine(norms: list[float | None]) -> float:
    """The norm of several tensors together from their norms (a NaN stays NaN)."""
    return math.sqrt(sum(n * n for n in norms if n is not None))


def _is_scalar(torch: Any, value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() == 1


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: they become None (the checks see the real value)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 8) if abs(value) >= 1e-8 else value
