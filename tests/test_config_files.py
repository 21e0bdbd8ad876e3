"""Configuration discovery and which files a run visits."""

from __future__ import annotations

import os

import pytest

from mllint.config import ConfigError, load_settings, matches_any
from mllint.files import Target, iter_targets
from mllint.types import ErrorKind, FileError


def _tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _targets(paths, settings):
    out = list(iter_targets([str(p) for p in paths], settings))
    return ([os.path.relpath(t.path, settings.root) for t in out if isinstance(t, Target)],
            [t for t in out if isinstance(t, FileError)])


def test_config_found_walking_up_and_applied(tmp_path):
    _tree(tmp_path, {
        "pyproject.toml": '[tool.mllint]\nselect = ["ML001"]\nexclude = ["gen/", "*_pb2.py"]\n'
                          '[tool.mllint.per-file-ignores]\n"tests/*" = ["ML004"]\n',
        "src/pkg/train.py": "", "src/pkg/x_pb2.py": "", "gen/a.py": "",
        ".venv/lib/b.py": "", "env2/pyvenv.cfg": "", "env2/lib/c.py": "",
        "build/d.py": "", "notes.txt": "",
    })
    settings = load_settings([str(tmp_path / "src" / "pkg")])
    assert settings.root == tmp_path.resolve() and settings.select == ("ML001",)
    assert settings.ignored_codes(tmp_path / "tests" / "t.py") == {"ML004"}
    files, errors = _targets([tmp_path], settings)
    assert files == ["src/pkg/train.py"] and errors == []


def test_no_config_means_defaults(tmp_path):
    settings = load_settings([str(tmp_path)])
    assert settings.config_file is None and settings.select == ()


def test_unknown_config_key_is_an_error(tmp_path):
    _tree(tmp_path, {"pyproject.toml": "[tool.mllint]\nselekt = []\n"})
    with pytest.raises(ConfigError, match="selekt"):
        load_settings([str(tmp_path)])


@pytest.mark.parametrize("rel,pattern,hit", [
    ("fixtures/a.py", "fixtures/", True),
    ("src/fixtures/a.py", "fixtures/", True),
    ("src/fixtures.py", "fixtures/", False),
    ("a/b_pb2.py", "*_pb2.py", True),
    ("legacy/old/x.py", "legacy/old", True),
    ("legacy/older/x.py", "legacy/old", False),
])
def test_exclude_patterns(rel, pattern, hit):
    assert matches_any(rel, (pattern,)) is hit


def test_missing_path_and_symlink_loop_are_reported(tmp_path):
    settings = load_settings([str(tmp_path)])
    loop = tmp_path / "loop.py"
    os.symlink(loop, loop)
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d", tmp_path / "d" / "self")  # a directory loop: never followed
    (tmp_path / "d" / "ok.py").write_text("")
    out = list(iter_targets([str(tmp_path / "nope"), str(loop), str(tmp_path / "d")], settings))
    kinds = [o.kind for o in out if isinstance(o, FileError)]
    assert kinds == [ErrorKind.MISSING, ErrorKind.SYMLINK_LOOP]
    assert [os.path.basename(o.path) for o in out if isinstance(o, Target)] == ["ok.py"]


def test_same_file_given_twice_is_linted_once(tmp_path):
    (tmp_path / "a.py").write_text("")
    settings = load_settings([str(tmp_path)])
    out = list(iter_targets([str(tmp_path / "a.py"), str(tmp_path)], settings))
    assert [os.path.basename(t.path) for t in out] == ["a.py"]


def test_a_file_and_a_symlink_to_it_in_the_tree_are_linted_once(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.py").write_text("")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "b.py").symlink_to(tmp_path / "real" / "a.py")
    # A walk through a symlinked parent directory given by name reaches the same files.
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    settings = load_settings([str(tmp_path)])
    out = list(iter_targets([str(tmp_path / "alias"), str(tmp_path)], settings))
    assert [os.path.relpath(t.path, tmp_path) for t in out] == [os.path.join("alias", "a.py")]


@pytest.mark.parametrize("path, rel", [
    ("{root}", "."),
    ("{root}/src/a.py", "src/a.py"),
    ("{root}/src/../b.py", "b.py"),
    ("{root}x/c.py", "{root}x/c.py"),  # a sibling sharing the root's name as a prefix
    ("/elsewhere/d.py", "/elsewhere/d.py"),
])
def test_paths_relative_to_the_config_root(tmp_path, path, rel):
    settings = load_settings([str(tmp_path)])
    root = str(settings.root)
    assert settings.relative(path.format(root=root)) == rel.format(root=root)
