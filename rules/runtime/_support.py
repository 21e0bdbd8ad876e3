"""Wording shared by the runtime checks' messages."""

from __future__ import annotations

from typing import Any


def name_list(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def optimizer_label(record_or_optimizer: Any, monitor: Any) -> str:
    """``SGD (built at train.py:40)``."""
    cls = getattr(record_or_optimizer, "class_name", None) or type(record_or_optimizer).__name__
    site = getattr(record_or_optimizer, "site", None) or monitor.site_of(record_or_optimizer)
    return f"`{cls}`" + (f" (built at {site.short()})" if site is not None else "")


def numel(params: list[Any]) -> int:
    return sum(int(p.numel()) for p in params)


# Note "settle-windows": when a ``--verify`` run may stop before ``--max-steps``.
#
# The run stops early only once every static finding's probe and every runtime check's
# watcher says it is settled (``Watcher.settled``). A runtime check looks for a bug that
# may show at any step, so "settled" cannot mean "proven absent"; it means what a
# practitioner accepts from a short run: the check has seen what its threshold is judged
# on, and what it saw is clear-cut enough that more steps of the budget would not change
# the verdict. Each check documents its window under "When it is settled":
#
# - ML106 after the first training loss (the first backward), ML105 after the first
#   optimizer step (the loader feeding it is known), ML103 after its looks at steps 1,
#   2 and 4 (the optimizers and the trained models are built by then);
# - ML102 once every held parameter either had a gradient or went 3 measured steps
#   without; ML104 after 5 measured steps (steps 1-4 and 8) when each group's ratio is
#   either already flagged or clear of the lower threshold by two orders of magnitude;
#   ML107 after 3 measured batches (steps 1, 5 and 9) when each layer is either flagged
#   or has under 10% of its units silent;
# - ML101 cannot be proven absent at all: it is settled after 8 steps, and so ends the
#   run only when the others are settled too.
#
# A healthy run therefore stops after 9 steps; a borderline figure (a layer with 10-50%
# silent units, a group's update ratio between 1e-6 and 1e-4) keeps it going to the
# budget, where the full-length window decides. A run with no optimizer (weights updated
# by hand) settles none of the step windows and runs to its budget. ML108
# (``--overfit-batch N``) needs its N steps and never settles early.
