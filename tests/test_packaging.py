"""The distribution ships every package: ``pyproject.toml`` lists them by hand."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    src = ROOT / "src" / "mllint"
    found = {"mllint", "mllint.rules"} | {
        "mllint." + ".".join(p.parent.relative_to(src).parts)
        for p in src.rglob("__init__.py") if p.parent != src
    } | {
        "mllint.rules." + ".".join(p.parent.relative_to(ROOT / "rules").parts)
        for p in (ROOT / "rules").rglob("__init__.py") if p.parent != ROOT / "rules"
    }
    assert found == listed
