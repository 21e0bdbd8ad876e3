"""``--verify`` on real public training scripts, their code untouched, with synthetic data.

Usage: python tests/bench/bench_verify_realworld.py MIRRORS [NAME ...] [--timeout S]
       [--keep DIR] [--json FILE]

MIRRORS is a directory of git mirrors or checkouts, one per repository, found as
MIRRORS/owner+name/repo, MIRRORS/owner+name, MIRRORS/owner/name or MIRRORS/name (as for
``tests/realworld/check.py``). No third-party code is part of this project: each script is
extracted from its mirror at the pinned commit (its ``*.py`` files only) into a scratch
directory and run from there.

The data shim: nothing in a script is edited. Every input a script reads is made up by
this file before the run, at the path the script reads it from (``train.bin``/``val.bin``
and ``meta.pkl`` for nanoGPT, ``input.txt`` for the character models, the wikitext-2 text
files, a ``diabetes.csv.gz`` of the same shape), small and seeded, so a run never
downloads anything. Scripts whose data is synthetic by design (minGPT's adder,
pytorch/examples' regression, the tutorial scripts) need none. The environment only adds
``MPLBACKEND=Agg`` (plots are drawn off screen) and, for a repository that is a package,
its root on ``PYTHONPATH`` (as its README's ``pip install -e .`` would). Command-line
arguments are those the repository documents for a small CPU run, or fewer DataLoader
workers (``num_workers`` is an argument there), and are listed with each script.

For each script it lints the script (every rule), runs ``verify()`` with the default
budgets, and prints the outcome, every static finding's verdict and every runtime-check
finding (ML101-ML108) with its evidence. ``--json`` writes the same as JSON.
Needs numpy and matplotlib beside torch (torchvision is not needed by any script here).

Left out, and why: pytorch/examples' ``time_sequence_prediction`` (one LBFGS closure, 1,000
float64 LSTM steps over 97 sequences, takes about a minute on a busy CPU even without
mllint, and it ``torch.load``s a pickled numpy array that torch 2.6+ refuses by default);
PyTorchZeroToAll's ``13_2_rnn_classification.py`` (``loss.data[0]``, PyTorch 0.3 code,
crashes on any current torch); scripts that need torchvision, gym or a dataset download.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mllint.engine import lint_path
from mllint.registry import all_rules
from mllint.verify.harness import VerifyOptions, verify

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "realworld"))
from check import extract, locate  # the real-world benchmark's mirror access

# -- the data shim: inputs made up at the paths the scripts read ----------------------------

WORDS = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by",
    "at", "from", "his", "her", "are", "were", "be", "this", "king", "queen", "lord",
    "good", "night", "love", "death", "time", "man", "men", "day", "life", "heart", "eye",
    "hand",
)


def _text(chars: int, seed: int = 0) -> str:
    """English-looking text (a fixed vocabulary, lines of a few words), seeded."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        line = line.capitalize() + rng.choice((".", ",", "!", "?", ";"))
        out.append(line)
        size += len(line) + 1
    return "\n".join(out) + "\n"


def nanogpt_data(root: Path) -> None:
    """``data/shakespeare_char``: what its ``prepare.py`` writes, from synthetic text."""
    import numpy as np

    text = _text(200_000)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    folder = root / "data" / "shakespeare_char"
    folder.mkdir(parents=True, exist_ok=True)
    ids[:cut].tofile(folder / "train.bin")
    ids[cut:].tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as fh:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, fh)


def input_txt(directory: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        (root / directory / "input.txt").write_text(_text(100_000))

    return write


def wikitext(root: Path) -> None:
    folder = root / "word_language_model" / "data" / "wikitext-2"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, size) in enumerate((("train", 60_000), ("valid", 8_000), ("test", 8_000))):
        (folder / f"{split}.txt").write_text(_text(size, seed))


def diabetes(root: Path) -> None:
    """759 rows of 8 features in [-1, 1] and a 0/1 label, like the tutorial's file."""
    rng = random.Random(0)
    rows = []
    for _ in range(759):
        features = [rng.uniform(-1, 1) for _ in range(8)]
        label = 1.0 if sum(features[:3]) + rng.gauss(0, 0.5) > 0 else 0.0
        rows.append(",".join(f"{v:.6f}" for v in (*features, label)))
    (root / "data").mkdir(exist_ok=True)
    with gzip.open(root / "data" / "diabetes.csv.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")


# -- the scripts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    name: str
    repo: str
    commit: str
    #: The script, relative to the repository root.
    path: str
    args: tuple[str, ...] = ()
    #: The directory it runs from, relative to the repository root (default: its own).
    cwd: str | None = None
    data: Callable[[Path], None] | None = None
    #: The repository root goes on PYTHONPATH (a package its README installs).
    package: bool = False
    why_args: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)


NANOGPT = "3adf61e154c3fe3fca428ad6bc3818b27a3b8291"
MINGPT = "37baab71b9abea1b76ab957409a1cc2fbfba8a26"
EXAMPLES = "77f55b912142e11fcfdf5b530231fb9c52f181e8"
ZERO_TO_ALL = "e5a260fac0b4ff1e2ec434fc6f0d962ac97fc289"
MORVAN = "dbe154a9e56635e51c6b0c2ccea8ae36cfb585a7"

SCRIPTS = (
    Script("nanogpt-shakespeare-char", "karpathy/nanoGPT", NANOGPT, "train.py",
           ("config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
            "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
            "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
            "--lr_decay_iters=2000", "--dropout=0.0"),
           data=nanogpt_data, why_args="the README's command for a CPU run"),
    Script("mingpt-adder", "karpathy/minGPT", MINGPT, "projects/adder/adder.py",
           ("--trainer.num_workers=0",), package=True,
           why_args="no DataLoader workers (the budget restarts the endless loader often)"),
    Script("mingpt-chargpt", "karpathy/minGPT", MINGPT, "projects/chargpt/chargpt.py",
           ("--trainer.num_workers=0", "--trainer.batch_size=16",
            "--model.model_type=gpt-nano"), package=True, data=input_txt("projects/chargpt"),
           why_args="no workers, a smaller batch and model: at step 0 it samples 500 "
                    "characters from the model, minutes for gpt-mini on a busy CPU"),
    Script("gpt-lecture-bigram", "karpathy/ng-video-lecture",
           "52201428ed7b46804849dea0b3ccf0de9df1a5c3", "bigram.py", data=input_txt(".")),
    Script("word-language-model", "pytorch/examples", EXAMPLES,
           "word_language_model/main.py", data=wikitext),
    Script("word-language-model-adamw", "pytorch/examples", EXAMPLES,
           "word_language_model/main.py", ("--use-optimizer",), data=wikitext,
           why_args="its documented switch to AdamW (which keeps --lr 20)"),
    Script("regression", "pytorch/examples", EXAMPLES, "regression/main.py"),
    Script("zero-to-all-diabetes-loader", "hunkim/PyTorchZeroToAll", ZERO_TO_ALL,
           "08_2_dataset_loade_logistic.py", data=diabetes),
    Script("zero-to-all-diabetes", "hunkim/PyTorchZeroToAll", ZERO_TO_ALL,
           "07_diabets_logistic.py", data=diabetes),
    Script("morvan-classification", "MorvanZhou/PyTorch-Tutorial", MORVAN,
           "tutorial-contents/302_classification.py"),
    Script("morvan-optimizers", "MorvanZhou/PyTorch-Tutorial", MORVAN,
           "tutorial-contents/306_optimizer.py"),
    Script("morvan-batch-normalization", "MorvanZhou/PyTorch-Tutorial", MORVAN,
           "tutorial-contents/504_batch_normalization.py"),
    Script("morvan-rnn-regressor", "MorvanZhou/PyTorch-Tutorial", MORVAN,
           "tutorial-contents/403_RNN_regressor.py"),
    Script("morvan-dropout", "MorvanZhou/PyTorch-Tutorial", MORVAN,
           "tutorial-contents/503_dropout.py"),
)


# -- running --------------------------------------------------------------------------------


def prepare(script: Script, mirrors: Path, scratch: Path) -> Path:
    """The repository's ``*.py`` files at the pinned commit, plus the shim's data."""
    git_dir = locate(mirrors, script.repo)
    if git_dir is None:
        raise FileNotFoundError(f"no mirror of {script.repo} under {mirrors}")
    root = scratch / script.name
    if not root.exists():
        root.mkdir(parents=True)
        extract(git_dir, script.commit, root)
        if script.data is not None:
            script.data(root)
    return root


def run(script: Script, root: Path, timeout: float) -> dict:
    path = root / script.path
    workdir = root / (script.cwd if script.cwd is not None else Path(script.path).parent)
    findings = list(lint_path(str(path), all_rules()).findings)
    env = {"MPLBACKEND": "Agg", **script.extra_env}
    if script.package:
        env["PYTHONPATH"] = str(root)
    start = time.perf_counter()
    report = verify(findings, VerifyOptions(script=str(path), script_args=script.args,
                                            cwd=str(workdir), timeout=timeout, env=env))
    seconds = time.perf_counter() - start
    run_ = report.run
    outcome = ("timed out" if run_.timed_out else f"crashed: {run_.crashed}" if run_.crashed
               else f"{run_.steps} steps, stopped: {run_.stop_reason or 'script ended'}")
    return {
        "name": script.name, "repo": script.repo, "commit": script.commit,
        "script": script.path, "args": list(script.args), "seconds": round(seconds, 1),
        "outcome": outcome, "steps": run_.steps, "crashed": run_.crashed,
        "timed_out": run_.timed_out, "output_tail": (run_.stderr_tail or "")[-600:],
        "static": [{"code": f.code, "line": f.line, "status": v.status.value,
                    "evidence": v.evidence} for f, v in zip(findings, report.verdicts)],
        "runtime": [{"code": f.code, "path": str(Path(f.path).name), "line": f.line,
                     "message": f.message, "evidence": v.evidence}
                    for f, v in report.runtime_findings],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirrors", type=Path)
    parser.add_argument("names", nargs="*", help="only these scripts (see SCRIPTS)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep", type=Path, help="extract into this directory and keep it")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    unknown = set(args.names) - {s.name for s in SCRIPTS}
    if unknown:
        parser.error(f"unknown script(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in SCRIPTS if not args.names or s.name in args.names]
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="mllint-verify-real-"))
    results = []
    try:
        for script in chosen:
            try:
                root = prepare(script, args.mirrors, scratch)
            except (FileNotFoundError, OSError) as exc:
                print(f"{script.name}: skipped: {exc}")
                continue
            result = run(script, root, args.timeout)
            results.append(result)
            print(f"{script.name} ({script.repo} {script.path} {' '.join(script.args)}): "
                  f"{result['seconds']}s, {result['outcome']}", flush=True)
            for item in result["static"]:
                print(f"    static {item['code']} line {item['line']}: {item['status']}")
            for item in result["runtime"]:
                print(f"    RUNTIME {item['code']} {item['path']}:{item['line']}: "
                      f"{item['evidence']}")
            if result["crashed"] or result["timed_out"]:
                print("    " + result["output_tail"].strip().replace("\n", "\n    "))
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    ran = [r for r in results if not r["crashed"] and not r["timed_out"]]
    scripts = {(r["repo"], r["script"]) for r in ran}
    print(f"{len(ran)} of {len(results)} runs ended normally ({len(scripts)} distinct "
          f"scripts); {sum(len(r['runtime']) for r in results)} runtime findings")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
