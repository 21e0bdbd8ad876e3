"""[tool.mllint] is validated by one schema: every bad value is a usage error (exit 2)
naming the file, the key and the expected type, before anything is linted."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from mllint.config import ConfigError, load_settings

MLLINT = shutil.which("mllint") or pytest.fail("the mllint console script is not installed")


def _mllint(cwd, *args):
    env = {**os.environ, "MLLINT_NO_CACHE": "1"}
    return subprocess.run([MLLINT, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("toml,key,expected", [
    ('exclude = 5', "exclude", "a list of strings"),
    ('select = "ML001"', "select", "a list of strings"),
    ('cache-dir = 5', "cache-dir", "a string"),
    ('max-file-size = true', "max-file-size", "a positive integer"),
    ('max-file-size = 0', "max-file-size", "a positive integer"),
    ('file-timeout = "1"', "file-timeout", "a positive number"),
    ('[tool.mllint.per-file-ignores]\n"*" = 5', "'*'", "a list of rule codes"),
    ('[tool.mllint.per-file-ignores]\n"*" = [1]', "'*'", "a list of rule codes"),
    ('per-file-ignores = 5', "per-file-ignores", "a table"),
])
def test_wrongly_typed_value_names_file_key_and_type(tmp_path, toml, key, expected):
    header = "" if toml.startswith("[tool.mllint.") else "[tool.mllint]\n"
    config = tmp_path / "pyproject.toml"
    config.write_text(header + toml + "\n")
    (tmp_path / "a.py").write_text("x = 1\n")
    proc = _mllint(tmp_path, "a.py")
    assert proc.returncode == 2, proc.stderr
    assert str(config) in proc.stderr and key in proc.stderr and expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tool_mllint_that_is_not_a_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool]\nmllint = 5\n")
    with pytest.raises(ConfigError, match=r"\[tool.mllint\] must be a table, not an integer \(5\)"):
        load_settings([str(tmp_path)])


def test_explicit_config_whose_tool_is_not_a_table(tmp_path):
    config = tmp_path / "pyproject.toml"
    config.write_text("tool = 5\n")
    with pytest.raises(ConfigError, match=r"\[tool\] must be a table"):
        load_settings([str(tmp_path)], str(config))


@pytest.mark.parametrize("data,detail", [
    (b"[tool.mllint\nselect = []\n", "invalid TOML"),
    (b"[tool.mllint]\n# caf\xe9\nselect = []\n", "not valid UTF-8"),
])
def test_broken_pyproject_found_walking_up_is_an_error(tmp_path, data, detail):
    config = tmp_path / "pyproject.toml"
    config.write_bytes(data)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    proc = _mllint(tmp_path / "src", "a.py")
    assert proc.returncode == 2
    assert str(config) in proc.stderr and detail in proc.stderr, proc.stderr


def test_unknown_code_in_per_file_ignores_is_an_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mllint.per-file-ignores]\n"tests/*" = ["ML001", "ML0O4"]\n')
    (tmp_path / "a.py").write_text("x = 1\n")
    proc = _mllint(tmp_path, "a.py")
    assert proc.returncode == 2 and "'ML0O4'" in proc.stderr and "per-file-ignores" in proc.stderr


def test_rule_names_and_prefixes_in_per_file_ignores_are_resolved(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mllint.per-file-ignores]\n"a.py" = ["missing-zero-grad"]\n"b.py" = ["ML00"]\n')
    train = (
        "import torch\n\n\ndef train(model, loader):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    for x, y in loader:\n"
        "        loss = torch.nn.functional.mse_loss(model(x), y)\n"
        "        loss.backward()\n        optimizer.step()\n")
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text(train)
    proc = _mllint(tmp_path, "--format", "concise", ".")
    assert proc.returncode == 1, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == ["./c.py"]
