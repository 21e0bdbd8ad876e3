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
