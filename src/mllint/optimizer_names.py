"""What names say about optimizers. Plain string logic, no libcst: the ast gates of the
prefilter (``mllint.gates``) and the libcst analyses share it, so both judge a name alike.
"""

from __future__ import annotations

import re

# ``engine``: DeepSpeed's ``model_engine.step()`` applies the update itself.
_OPTIMIZER_NAME = re.compile(r"optim|(^|_)opt($|_|[A-Z0-9])|^opt|engine", re.IGNORECASE)
_NOT_OPTIMIZER = re.compile(r"sched|scaler|warmup|lr_|option", re.IGNORECASE)


def looks_like_optimizer(dotted: str) -> bool:
    """``opt``, ``optimizer_g``, ``self.optim``, ``model_engine``; not ``scheduler``."""
    last = dotted.rsplit(".", 1)[-1]
    return bool(_OPTIMIZER_NAME.search(last)) and not _NOT_OPTIMIZER.search(last)


def is_optimizer_constructor(qualified: set[str]) -> bool:
    """Whether a callee's qualified names denote an optimizer class or factory.

    ``torch.optim.X`` (not schedulers), and the optimizers of libraries users build
    training loops with (transformers, timm, bitsandbytes, apex, torch_optimizer).
    """
    for name in qualified:
        parts = name.split(".")
        if name.startswith("torch.optim.") and "lr_scheduler" not in parts and "swa_utils" not in parts:
            if parts[-1][:1].isupper() and parts[-1] != "Optimizer":
                return True
        if name in {"transformers.AdamW", "transformers.Adafactor", "transformers.optimization.AdamW",
                    "transformers.optimization.Adafactor", "timm.optim.create_optimizer",
                    "timm.optim.create_optimizer_v2"}:
            return True
        if parts[0] in {"bitsandbytes", "apex", "torch_optimizer"} and parts[-1][:1].isupper():
            if "optim" in name or "optimizers" in name:
                return True
    return False
