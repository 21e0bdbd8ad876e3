"""Hostile but legal inputs, generated here (never third-party code).

Shared by ``test_hostile_input.py`` and the ``tests/bench/hostile.py`` script that prints
exit code, wall time and peak memory per case. Each case is a training loop with one real
ML001 finding (``TRAIN``, line 9) and, after it, something built to break a linter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRAIN = (
    "import torch\n"
    "\n"
    "\n"
    "def train(model, loader):\n"
    "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "    for x, y in loader:\n"
    "        loss = torch.nn.functional.mse_loss(model(x), y)\n"
    "        loss.backward()\n"
    "        optimizer.step()\n"
)
#: The finding ``TRAIN`` holds: (code, line).
TRAIN_FINDING = ("ML001", 9)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    #: (code, line) findings the run must report for this file.
    findings: frozenset = field(default_factory=frozenset)
    #: Error kind (``ErrorKind.value``) the file must be reported with, if any.
    error: str | None = None
    #: Minimum CLI flags (e.g. a tiny time budget) the case needs.
    flags: tuple[str, ...] = ()


def _after_train(tail: str) -> bytes:
    return (TRAIN + "\n\n" + tail).encode()


def and_chain(terms: int = 8000) -> str:
    return "ok = " + " and ".join(f"x{i}" for i in range(terms)) + "\n"


def long_sum(terms: int = 1000) -> str:
    return "total = " + " + ".join(f"v{i}" for i in range(terms)) + "\n"


def many_elifs(branches: int = 1000) -> str:
    body = "".join(f"    elif k == {i}:\n        return {i}\n" for i in range(1, branches))
    return "def pick(k):\n    if k == 0:\n        return 0\n" + body


def chained_calls(calls: int = 250) -> str:
    return "y = x" + "".join(f".m{i}()" for i in range(calls)) + "\n"


def chained_subscripts(subscripts: int = 500) -> str:
    return "y = x" + "[0]" * subscripts + "\n"


def many_training_functions(size: int) -> str:
    """About ``size`` bytes of small, distinct training functions (one file). (Named
    ``fit_*``: no rule's prefilter has much to look at, the cost is the lint itself.)"""
    parts, total, i = [], 0, 0
    while total < size:
        part = (f"def fit_{i}(model_{i}, loader_{i}):\n"
                f"    opt_{i} = torch.optim.SGD(model_{i}.parameters(), lr=0.1)\n"
                f"    for x, y in loader_{i}:\n"
                f"        opt_{i}.zero_grad()\n"
                f"        loss_{i} = model_{i}(x).sum()\n"
                f"        loss_{i}.backward()\n"
                f"        opt_{i}.step()\n\n\n")
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)


def many_trainers(size: int) -> str:
    """About ``size`` bytes of small training classes and helpers (one file): every class
    has the same method names and ``self.optimizer``, every helper is handed an optimizer,
    every ``fit`` evaluates under ``no_grad``, so questions about same-named methods,
    attributes, call sites and evaluation loops all have many candidates."""
    parts, total, i = ["import torch\nimport torch.nn as nn\n\n\n"], 0, 0
    while total < size:
        part = (f"def helper_{i}(opt, loss):\n"
                f"    loss.backward()\n"
                f"    opt.step()\n\n\n"
                f"class Trainer{i}:\n"
                f"    def __init__(self, model, lr):\n"
                f"        self.model = model\n"
                f"        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"
                f"        self.criterion = nn.CrossEntropyLoss()\n\n"
                f"    def _step(self, x, y):\n"
                f"        self.optimizer.zero_grad()\n"
                f"        loss = self.criterion(self.model(x), y)\n"
                f"        loss.backward()\n"
                f"        self.optimizer.step()\n"
                f"        return loss.item()\n\n"
                f"    def fit(self, loader, val_loader):\n"
                f"        running = 0.0\n"
                f"        for x, y in loader:\n"
                f"            running += self._step(x, y)\n"
                f"        self.model.eval()\n"
                f"        with torch.no_grad():\n"
                f"            for x, y in val_loader:\n"
                f"                out = self.model(x)\n"
                f"        return running\n\n\n"
                f"def run_{i}(model, loader):\n"
                f"    Trainer{i}(model, 0.1).fit(loader, loader)\n"
                f"    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                f"    for x, y in loader:\n"
                f"        helper_{i}(opt, model(x).sum())\n\n\n")
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)


#: Characters ``str.splitlines`` breaks a line on but Python's tokenizer does not.
ODD_LINE_BREAKS = ("\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def odd_line_breaks() -> bytes:
    """Every odd line break in a comment and in a docstring, above the real finding."""
    header = ('"""Docs with ' + "".join(ODD_LINE_BREAKS) + ' in them."""\n'
              "# a comment with " + "".join(ODD_LINE_BREAKS) + " in it\n")
    # Two lines more than TRAIN: the finding moves from line 9 to 11.
    return (header + TRAIN).encode()


def nul_after_8k() -> bytes:
    """A valid training loop, padding past 8 KB, then a NUL byte on line 11, column 7."""
    pad = "# " + "x" * 8200 + "\n"
    return (TRAIN + pad + "s = 'a\x00b'\n").encode()


def utf16() -> bytes:
    return TRAIN.encode("utf-16")


def cases(*, big: bool = False) -> list[Case]:
    """Every hostile case; ``big`` adds the slow ones (megabyte files)."""
    found = frozenset({TRAIN_FINDING})
    out = [
        Case("and-chain-8000", _after_train(and_chain()), found),
        Case("sum-1000", _after_train(long_sum()), found),
        Case("elif-1000", _after_train(many_elifs()), found),
        Case("calls-250", _after_train(chained_calls()), found),
        Case("subscripts-500", _after_train(chained_subscripts()), found),
        Case("brackets-2000", _after_train("y = " + "(" * 2000 + "1" + ")" * 2000 + "\n"),
             error="syntax-error"),
        Case("odd-line-breaks", odd_line_breaks(), frozenset({("ML001", 11)})),
        Case("nul-after-8k", nul_after_8k(), error="syntax-error"),
        Case("utf-16", utf16(), error="decode-error"),
        Case("file-timeout", _after_train(many_training_functions(1_500_000)), error="timeout",
             flags=("--file-timeout", "1")),
    ]
    if big:
        for kb in (100, 200, 1000):
            out.append(Case(f"training-functions-{kb}kb",
                            _after_train(many_training_functions(kb * 1000)), found))
    return out
