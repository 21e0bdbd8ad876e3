"""Lay out the large tree that the speed benchmark (tests/bench/bench_lint.py) is run on.

Usage: python tests/realworld/build_corpus.py DEST [MIRRORS]

DEST receives the unpacked wheels of the libraries in WHEELS (downloaded with
``pip download --no-deps`` into a temporary directory) and the training repositories in REPOS,
each extracted at its manifest.toml commit from MIRRORS (as for check.py; default
$MLLINT_REALWORLD_MIRRORS, else /work/.mirror). Nothing here is committed: the tree is rebuilt
from these pins. DEST must not exist yet, so an old tree is never mixed into a new one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import check

WHEELS = ("transformers==5.25.0", "timm==1.0.31", "lightning==2.6.6", "pytorch_lightning==2.6.6")
REPOS = (
    "pytorch/examples", "karpathy/nanoGPT", "kuangliu/pytorch-cifar", "facebookresearch/detr",
    "facebookresearch/deit", "facebookresearch/mae", "facebookresearch/dino",
    "facebookresearch/ConvNeXt", "facebookresearch/moco", "eriklindernoren/PyTorch-GAN",
    "yunjey/pytorch-tutorial", "openai/improved-diffusion",
    "lucidrains/denoising-diffusion-pytorch", "ikostrikov/pytorch-a2c-ppo-acktr-gail",
    "jik876/hifi-gan", "kenshohara/3D-ResNets-PyTorch", "clovaai/deep-text-recognition-benchmark",
)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0])
    mirrors = Path(argv[1] if len(argv) > 1 else
                   os.environ.get("MLLINT_REALWORLD_MIRRORS", check.DEFAULT_MIRRORS))
    if dest.exists():
        print(f"{dest} exists; remove it or pick another directory", file=sys.stderr)
        return 2
    commits = {r.name: r.commit for r in check.load_manifest()}
    missing = [name for name in REPOS if check.locate(mirrors, name) is None]
    if missing:
        print(f"no mirror under {mirrors} for: {', '.join(missing)}", file=sys.stderr)
        return 2

    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        *WHEELS], check=True)
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(dest / "wheels" / wheel.name.split("-")[0])
    for name in REPOS:
        check.extract(check.locate(mirrors, name), commits[name],
                      dest / "repos" / name.replace("/", "+"))

    files = list(dest.rglob("*.py"))
    lines = sum(f.read_bytes().count(b"\n") for f in files)
    print(f"{dest}: {len(files)} Python files, {lines:,} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
