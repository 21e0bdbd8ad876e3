"""The data shim and script table of ``tests/bench/bench_verify_realworld.py`` (the benchmark
itself needs repository mirrors and is run by hand)."""

from __future__ import annotations

import gzip
import pickle
import re
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "tests" / "bench"))
bench = pytest.importorskip("bench_verify_realworld")


def test_every_script_is_pinned_and_named_once():
    names = [s.name for s in bench.SCRIPTS]
    assert len(names) == len(set(names))
    assert len({(s.repo, s.path) for s in bench.SCRIPTS}) >= 10
    for script in bench.SCRIPTS:
        assert re.fullmatch(r"[0-9a-f]{40}", script.commit), script.name
        assert script.path.endswith(".py") and "/" in script.repo, script.name


def test_nanogpt_data_is_what_its_prepare_script_writes(tmp_path):
    np = pytest.importorskip("numpy")
    bench.nanogpt_data(tmp_path)
    folder = tmp_path / "data" / "shakespeare_char"
    meta = pickle.loads((folder / "meta.pkl").read_bytes())
    train = np.fromfile(folder / "train.bin", dtype=np.uint16)
    val = np.fromfile(folder / "val.bin", dtype=np.uint16)
    assert len(train) >= 8 * len(val) > 0  # a 90:10 split, as prepare.py makes
    assert int(max(train.max(), val.max())) == meta["vocab_size"] - 1
    decoded = "".join(meta["itos"][int(i)] for i in train[:200])
    assert decoded == bench._text(200_000)[:200]
    assert {meta["stoi"][c] for c in meta["itos"].values()} == set(range(meta["vocab_size"]))


def test_text_inputs_and_the_diabetes_table(tmp_path):
    bench.input_txt(".")(tmp_path)
    text = (tmp_path / "input.txt").read_text()
    assert len(text) >= 100_000 and text == bench._text(100_000)  # seeded: the same each run
    bench.wikitext(tmp_path)
    folder = tmp_path / "word_language_model" / "data" / "wikitext-2"
    assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    bench.diabetes(tmp_path)
    with gzip.open(tmp_path / "data" / "diabetes.csv.gz", "rt") as fh:
        rows = [line.split(",") for line in fh.read().splitlines()]
    assert len(rows) == 759 and {len(r) for r in rows} == {9}
    assert {r[-1] for r in rows} == {"0.000000", "1.000000"}
