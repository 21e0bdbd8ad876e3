"""The cache trusts nothing it did not write itself, here, for this user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import hostile_cases as hc
from mllint import cache as cache_mod
from mllint import manifest
from mllint.cache import Cache, clear, sign
from mllint.engine import lint_text
from mllint.registry import all_rules

MLLINT = shutil.which("mllint") or pytest.fail("the mllint console script is not installed")
SECRET = b"k" * 32


def _mllint(tmp_path, *args, cwd=None):
    env = {**os.environ, "MLLINT_NO_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    return subprocess.run([MLLINT, "--format", "json", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.fixture()
def train(tmp_path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(hc.TRAIN)
    return path


def _entry(cache_dir: Path) -> Path:
    [entry] = list(cache_dir.rglob("*.json"))
    return entry


def _user_secret(tmp_path) -> bytes:
    return (tmp_path / "xdg" / "mllint" / "secret").read_bytes() + cache_mod._machine()


def _resign(entry: Path, secret: bytes, payload: object) -> None:
    text = json.dumps(payload, sort_keys=True)
    key = entry.parent.name + entry.stem
    entry.write_text(json.dumps({"payload": text, "mac": sign(secret, key.encode(), text.encode())}))


def _findings(proc) -> list[tuple[str, int]]:
    return [(d["code"], d["line"]) for d in json.loads(proc.stdout) if d["code"]]


@pytest.mark.parametrize("tamper", ["planted-empty", "flipped-bit", "foreign-secret",
                                    "wrong-shape-signed", "not-json"])
def test_untrusted_entry_is_ignored_and_rewritten(tmp_path, train, tamper):
    cache_dir = tmp_path / "cache"
    first = _mllint(tmp_path, "--cache-dir", str(cache_dir), str(train))
    assert _findings(first) == [hc.TRAIN_FINDING]
    entry = _entry(cache_dir)
    good = entry.read_bytes()
    raw = json.loads(good)
    if tamper == "planted-empty":  # hides the finding: exit 0, were it believed
        raw["payload"] = json.dumps({"findings": [], "errors": []})
        entry.write_text(json.dumps(raw))
    elif tamper == "flipped-bit":
        data = bytearray(good)
        i = good.index(b'line\\": 9') + len(b'line\\": ')
        data[i] ^= 0x01  # 9 -> 8
        entry.write_bytes(bytes(data))
    elif tamper == "foreign-secret":  # e.g. a committed cache made on another machine
        _resign(entry, b"x" * 32, {"findings": [], "errors": []})
    elif tamper == "wrong-shape-signed":
        _resign(entry, _user_secret(tmp_path), {"findings": [{"line": "nine"}], "errors": []})
    else:
        entry.write_text("{not json")
    second = _mllint(tmp_path, "--cache-dir", str(cache_dir), str(train))
    assert second.returncode == 1 and _findings(second) == [hc.TRAIN_FINDING], second.stderr
    assert entry.read_bytes() == good  # rewritten with the true result


def test_findings_always_name_the_linted_file(tmp_path):
    cache = Cache(tmp_path / "c", ("ML001",), secret=SECRET)
    result = lint_text("/etc/passwd", hc.TRAIN, all_rules())
    key = cache.key("train.py", hc.TRAIN.encode())
    cache.put(key, result)
    assert "passwd" not in _entry(tmp_path / "c").read_text()
    back = cache.get(key, "train.py")
    assert back is not None and {f.path for f in back.findings} == {"train.py"}


def test_cache_made_by_another_user_secret_is_not_read(tmp_path):
    result = lint_text("a.py", hc.TRAIN, all_rules())
    mine = Cache(tmp_path / "c", ("ML001",), secret=SECRET)
    theirs = Cache(tmp_path / "c", ("ML001",), secret=b"t" * 32)
    key = mine.key("a.py", hc.TRAIN.encode())
    theirs.put(key, result)
    assert mine.get(key, "a.py") is None and theirs.get(key, "a.py") == result


def test_tags_only_in_a_directory_mllint_created(tmp_path, train):
    made = tmp_path / "made"
    _mllint(tmp_path, "--cache-dir", str(made), str(train))
    assert (made / ".gitignore").exists() and (made / "CACHEDIR.TAG").exists()
    own = tmp_path / "own"
    own.mkdir()
    (tmp_path / "link").symlink_to(own)
    for given in (own, tmp_path / "link"):
        proc = _mllint(tmp_path, "--cache-dir", str(given), str(train))
        assert _findings(proc) == [hc.TRAIN_FINDING]
        assert not (own / ".gitignore").exists() and not (own / "CACHEDIR.TAG").exists()
    proc = _mllint(tmp_path, "--cache-dir", ".", "train.py", cwd=tmp_path)
    assert not (tmp_path / ".gitignore").exists()


def test_clear_cache_empties_only_an_mllint_cache(tmp_path, train):
    cache_dir = tmp_path / "cache"
    _mllint(tmp_path, "--cache-dir", str(cache_dir), str(train))
    entry = _entry(cache_dir)
    entry.write_text("{}")
    proc = _mllint(tmp_path, "--cache-dir", str(cache_dir), "--clear-cache", str(train))
    assert _findings(proc) == [hc.TRAIN_FINDING]
    assert json.loads(_entry(cache_dir).read_text()) != {}
    assert clear(cache_dir) == 1 and list(cache_dir.rglob("*.json")) == []
    mine = tmp_path / "mine"
    (mine / "ab").mkdir(parents=True)
    (mine / "ab" / "x.json").write_text("{}")
    assert clear(mine) == 0 and (mine / "ab" / "x.json").exists()


def test_old_and_surplus_entries_are_pruned(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c", ("ML001",), secret=SECRET)
    result = lint_text("a.py", hc.TRAIN, all_rules())
    keys = [cache.key(f"f{i}.py", b"") for i in range(5)]
    for key in keys:
        cache.put(key, result)
    now = time.time()
    old = cache._file(keys[0])
    os.utime(old, (now - cache_mod.MAX_AGE_SECONDS - 10,) * 2)
    monkeypatch.setattr(cache_mod, "MAX_ENTRIES", 3)
    assert cache.prune(now) == 2
    assert not old.exists() and len(list((tmp_path / "c").rglob("*.json"))) == 3
    assert cache.prune(now + 60) == 0  # at most once a day


# -- the rules manifest -----------------------------------------------------------------

def test_planted_manifest_cannot_switch_rules_off(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    manifest.rule_infos.cache_clear()
    try:
        want = manifest.rule_infos()
        [path] = list((tmp_path / "mllint").glob("rules-*.json"))
        for planted in ([], json.dumps({"payload": "[]", "mac": "0" * 128})):
            path.write_text(json.dumps(planted) if isinstance(planted, list) else planted)
            manifest.rule_infos.cache_clear()
            assert manifest.rule_infos() == want
        # Even signed with this user's secret, an empty rule list is not a manifest.
        secret = (tmp_path / "mllint" / "secret").read_bytes() + cache_mod._machine()
        path.write_text(json.dumps({"payload": "[]",
                                    "mac": sign(secret, path.name.encode(), b"[]")}))
        manifest.rule_infos.cache_clear()
        assert manifest.rule_infos() == want
    finally:
        manifest.rule_infos.cache_clear()


def test_no_cache_writes_no_manifest(tmp_path, train):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run([MLLINT, "--no-cache", str(train)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert not (tmp_path / "xdg").exists()


def test_a_warm_run_answers_hits_without_workers(tmp_path, train, monkeypatch):
    """Hits are looked up in the parent (a warm run makes no round trip per file); only
    a changed file goes to a worker, and both come back with the same findings."""
    from mllint import runner
    from mllint.config import Settings
    from mllint.files import Target
    from mllint.manifest import rule_infos

    infos = tuple(rule_infos(write=False))
    cache = Cache(tmp_path / "c", tuple(i.code for i in infos), secret=SECRET)
    opts = runner.RunOptions(rules=infos, settings=Settings(root=tmp_path), jobs=1, cache=cache)
    other = tmp_path / "other.py"
    other.write_text(hc.TRAIN)
    targets = [Target(str(train)), Target(str(other))]
    cold = {r.path: [(f.code, f.line) for f in r.findings] for r in runner.lint_targets(targets, opts)}
    assert cold[str(train)] == cold[str(other)] and cold[str(train)]  # TRAIN has a finding

    sent: list[tuple] = []

    class Pool(runner.WorkerPool):
        def submit_early(self, path):
            taken = super().submit_early(path)
            sent.append(("early", path, taken))
            return taken

        def run(self, paths, while_waiting=None):
            sent.append(("run", list(paths)))
            return super().run(paths, while_waiting)

    monkeypatch.setattr(runner, "WorkerPool", Pool)
    warm = {r.path: [(f.code, f.line) for f in r.findings] for r in runner.lint_targets(targets, opts)}
    assert warm == cold and sent == []
    other.write_text(hc.TRAIN + "\n# changed\n")
    again = {r.path: [(f.code, f.line) for f in r.findings] for r in runner.lint_targets(targets, opts)}
    # The changed file went to the prestarted worker as soon as the walk found it.
    assert again == cold and sent == [("early", str(other), True), ("run", [])]


# -- the stat index: unchanged files are not read again ----------------------------------

def _run(targets, opts):
    from mllint import runner
    found = {r.path: [(f.code, f.line) for f in r.findings] for r in runner.lint_targets(targets, opts)}
    opts.cache.save_stat_index()
    return found


def _stat_index_setup(tmp_path):
    from mllint import runner
    from mllint.config import Settings
    from mllint.files import Target
    from mllint.manifest import rule_infos

    infos = tuple(rule_infos(write=False))
    make = lambda: Cache(tmp_path / "c", tuple(i.code for i in infos), secret=SECRET)  # noqa: E731
    paths = []
    for name in ("a.py", "b.py"):
        paths.append(tmp_path / name)
        paths[-1].write_text(hc.TRAIN)
    targets = [Target(str(p)) for p in paths]
    opts = lambda: runner.RunOptions(rules=infos, settings=Settings(root=tmp_path), jobs=1,  # noqa: E731
                                     cache=make())
    return paths, targets, opts


def _count_reads(monkeypatch) -> list[str]:
    from mllint import runner
    reads: list[str] = []
    real = runner.read_bytes

    def counting(path, *args):
        reads.append(path)
        return real(path, *args)

    monkeypatch.setattr(runner, "read_bytes", counting)
    return reads


def test_a_warm_run_reads_no_unchanged_file(tmp_path, monkeypatch):
    paths, targets, opts = _stat_index_setup(tmp_path)
    cold = _run(targets, opts())
    _run(targets, opts())  # all hits, read and hashed once: the index is written
    reads = _count_reads(monkeypatch)
    assert _run(targets, opts()) == cold and reads == []


def test_a_file_rewritten_with_its_old_size_and_mtime_is_read_again(tmp_path, monkeypatch):
    paths, targets, opts = _stat_index_setup(tmp_path)
    _run(targets, opts())
    _run(targets, opts())
    st = paths[0].stat()
    fixed = hc.TRAIN.replace("optimizer.step()", "print(optimizer)")  # same length
    assert len(fixed) == len(hc.TRAIN)
    time.sleep(0.01)
    paths[0].write_text(fixed)
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves
    reads = _count_reads(monkeypatch)
    again = _run(targets, opts())
    assert str(paths[0]) in reads and str(paths[1]) not in reads
    assert again[str(paths[0])] != again[str(paths[1])]


@pytest.mark.parametrize("tamper", ["edit", "garbage", "other_salt"])
def test_an_untrusted_stat_index_is_ignored(tmp_path, monkeypatch, tamper):
    paths, targets, opts = _stat_index_setup(tmp_path)
    cold = _run(targets, opts())
    _run(targets, opts())
    index = tmp_path / "c" / "stat-index"
    raw = json.loads(index.read_text())
    if tamper == "edit":  # point a.py at another file's key: must not be believed
        data = json.loads(raw["payload"])
        data["files"][str(paths[0])][4] = "0" * 40
        raw["payload"] = json.dumps(data)
        index.write_text(json.dumps(raw))
    elif tamper == "garbage":
        index.write_bytes(b"\xff{not json")
    else:  # a cache of another rule set (or mllint version) does not read this index
        other = Cache(tmp_path / "c", ("ML001",), secret=SECRET)
        assert other.known_key(str(paths[0]), paths[0].stat()) is None
        return
    reads = _count_reads(monkeypatch)
    assert _run(targets, opts()) == cold and sorted(reads) == sorted(map(str, paths))


def _opened_entries(monkeypatch) -> list[str]:
    """Names of the signed files the cache opens from now on (entries and the index)."""
    opened: list[str] = []
    real = cache_mod.read_signed

    def recording(path, *args):
        opened.append(path.name)
        return real(path, *args)

    monkeypatch.setattr(cache_mod, "read_signed", recording)
    return opened


def test_a_warm_run_answers_clean_files_from_the_stat_index_alone(tmp_path, monkeypatch):
    from mllint.files import Target

    paths, targets, opts = _stat_index_setup(tmp_path)
    clean = tmp_path / "clean.py"
    clean.write_text("import os\nprint(os.getcwd())\n")  # nothing any rule could flag
    targets = [*targets, Target(str(clean))]
    cold = _run(targets, opts())
    _run(targets, opts())  # all hits: the index notes which entries are empty
    entry = lambda p: opts().cache.key(str(p), p.read_bytes())[2:] + ".json"  # noqa: E731
    opened = _opened_entries(monkeypatch)
    assert _run(targets, opts()) == cold
    assert cold[str(clean)] == [] and cold[str(paths[0])] == [hc.TRAIN_FINDING]
    assert entry(paths[0]) in opened and entry(paths[1]) in opened
    assert entry(clean) not in opened


def test_per_file_ignores_do_not_make_an_entry_clean(tmp_path):
    """A finding hidden by this run's per-file ignores is still in the stored result: the
    next run, without the ignore, reports it from the cache."""
    from dataclasses import replace as _replace

    paths, targets, opts = _stat_index_setup(tmp_path)
    _run(targets, opts())
    hiding = opts()
    hiding = _replace(hiding, settings=_replace(hiding.settings, per_file_ignores={"a.py": ("ML001",)}))
    hidden = _run(targets, hiding)  # hits, noted in the index
    assert hidden[str(paths[0])] == [] and hidden[str(paths[1])] == [hc.TRAIN_FINDING]
    assert _run(targets, opts())[str(paths[0])] == [hc.TRAIN_FINDING]


def _warm_up_marker(monkeypatch, tmp_path) -> Path:
    """Make the worker's warm-up leave a file behind (the worker is forked, so it runs
    the patched function)."""
    from mllint import runner
    marker = tmp_path / "warmed"
    monkeypatch.setattr(runner, "_warm_up", lambda: marker.write_text("warmed"))
    return marker


@pytest.mark.parametrize("warm_up", [True, False])
def test_files_named_on_the_command_line_skip_the_libcst_warm_up(tmp_path, monkeypatch, warm_up):
    from mllint import runner
    from mllint.config import Settings
    from mllint.files import Target
    from mllint.manifest import rule_infos

    plain = tmp_path / "plain.py"
    plain.write_text("import os\nprint(os.getcwd())\n")
    marker = _warm_up_marker(monkeypatch, tmp_path)
    opts = runner.RunOptions(rules=tuple(rule_infos(write=False)), settings=Settings(root=tmp_path))
    [result] = list(runner.lint_targets([Target(str(plain))], opts, warm_up=warm_up))
    assert result.path == str(plain) and not result.findings and not result.errors
    # With the warm-up, the worker runs it before it takes the file.
    assert marker.exists() is warm_up


@pytest.mark.parametrize("target, warm_up", [("train.py", False), (".", True)])
def test_the_cli_warms_up_only_when_it_walks_a_directory(tmp_path, monkeypatch, train, target, warm_up):
    from click.testing import CliRunner

    from mllint import cli, runner

    seen: list[bool] = []
    real = runner.lint_targets

    def recording(targets, opts, while_waiting=None, warm_up=True):
        seen.append(warm_up)
        return real(targets, opts, while_waiting, warm_up)

    monkeypatch.setattr(runner, "lint_targets", recording)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.cli, ["check", "--no-cache", target])
    assert result.exit_code == 1, result.output  # TRAIN's ML001
    assert seen == [warm_up]
