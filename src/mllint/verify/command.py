"""What to run: a script, or a ``--run "python ..."`` command line, resolved to a ``Target``.

A ``--run`` command must start with ``python`` (any ``pythonX.Y``): its ``python`` becomes
the interpreter the harness was told to use, unless the command names one by path. Python
options before the target are skipped (``-u``, ``-O``, ``-X opt``...), leading ``NAME=value``
words become environment variables, and ``-c`` or launchers (torchrun, accelerate) are
refused with a message saying why.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from mllint.verify.errors import VerifyError

_PYTHON_RE = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$")
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Target:
    python: str
    mode: str  # "script" (a file run as __main__) or "module" (python -m)
    target: str  # the script's real path, or the module name
    args: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)


def resolve_target(
    *, script: str | None, script_args: tuple[str, ...], run: str | None, python: str,
    cwd: str | None,
) -> Target:
    workdir = os.path.abspath(cwd or os.getcwd())
    if not os.path.isdir(workdir):
        raise VerifyError(f"working directory not found: {workdir}")
    if (script is None) == (run is None):
        raise VerifyError("give either a script to run or a --run command (not both)")
    if script is not None:
        path = os.path.realpath(os.path.join(workdir, script))
        if not os.path.isfile(path):
            raise VerifyError(f"script not found: {script}")
        return Target(python, "script", path, tuple(script_args), workdir)
    return _parse_run(run or "", tuple(script_args), python, workdir)


def _parse_run(command: str, extra: tuple[str, ...], python: str, cwd: str) -> Target:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise VerifyError(f"cannot parse --run {command!r}: {exc}") from None
    env: dict[str, str] = {}
    while words and _ASSIGNMENT_RE.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or not _PYTHON_RE.match(os.path.basename(words[0])):
        got = words[0] if words else ""
        raise VerifyError(
            f"--run must start with python (got {got!r}): mllint runs `python script.py "
            "...` or `python -m module ...` under its probes; launchers such as torchrun "
            "or accelerate are not supported, run the training module directly")
    interpreter = words[0] if os.sep in words[0] else python
    rest = words[1:]
    while rest and rest[0].startswith("-") and rest[0] != "-m":
        flag = rest.pop(0)
        if flag == "-c":
            raise VerifyError("--run with `python -c` is not supported; use a script or -m")
        if flag in ("-W", "-X") and rest:
            rest.pop(0)
    if not rest:
        raise VerifyError(f"--run {command!r} names no script or module")
    # `mllint --verify --run CMD -- more args`: the extra arguments come last.
    if rest[0] == "-m":
        if len(rest) < 2:
            raise VerifyError(f"--run {command!r}: -m needs a module name")
        return Target(interpreter, "module", rest[1], (*rest[2:], *extra), cwd, env)
    path = os.path.realpath(os.path.join(cwd, rest[0]))
    if not os.path.isfile(path):
        raise VerifyError(f"script not found: {rest[0]} (in {cwd})")
    return Target(interpreter, "script", path, (*rest[1:], *extra), cwd, env)
