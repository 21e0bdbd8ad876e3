"""The ``--verify`` child process: install the probes, run the user's target, report.

Started by the harness as ``<user's python> <this file> <spec.json>``, by path, so that it
works whether or not mllint is installed in the user's interpreter: it puts the harness's
copy of mllint first on ``sys.path`` only while importing mllint's own (torch-free)
modules, then removes it again before importing torch, so the user's environment decides
which torch and which packages the script sees.

Outcome reporting: everything the parent needs goes into ``RunResult`` at ``spec.results``
(written atomically, once early at ``spec.deadline`` in case the run is about to be
killed, and again at the end); progress events go to ``spec.events_fd`` as JSON lines.
"""

from __future__ import annotations

import json
import sys

if __name__ == "__main__":
    # Run by path, sys.path[0] is mllint/verify; its modules must not shadow the user's.
    del sys.path[0]


def _import_mllint(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as fh:
        mllint_path = json.load(fh)["mllint_path"]
    sys.path.insert(0, mllint_path)
    try:
        import mllint.verify.child  # noqa: F401  (torch-free; imports the rest of mllint)
    finally:
        sys.path.remove(mllint_path)


def main(argv: list[str]) -> None:
    _import_mllint(argv[1])
    from mllint.verify.child import run_child

    run_child(argv[1])


if __name__ == "__main__":
    main(sys.argv)
