"""The project model's memory stays flat and its shortcuts change no answer: kept trees
are bounded by the source they stand for and go as soon as they are let go; the load
index keeps no tree; the text prefilters (which files may load a checkpoint, which may
import a module) never leave out a file whose ast would have answered."""

from __future__ import annotations

import gc
import textwrap
import weakref
from pathlib import Path

import pytest

from mllint.project import model, project_for
from mllint.project.summaries import ModuleSummary


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_kept_summaries_are_bounded_by_source_and_let_go_trees_are_freed(tmp_path, monkeypatch):
    monkeypatch.setattr(model, "MAX_SUMMARY_SOURCE", 20_000)
    body = "".join(f"def f{i}(x):\n    return [x for _ in range(3)]\n\n" for i in range(150))
    write(tmp_path, {"pyproject.toml": "", **{f"m{i}.py": body for i in range(12)}})
    project = model.Project(tmp_path)
    first = project.summary(tmp_path / "m0.py")
    first.loads  # noqa: B018 - fills the tree's node caches (which point back at the tree)
    tree = weakref.ref(first.tree)
    del first
    gc.disable()
    try:
        for i in range(1, 12):
            project.summary(tmp_path / f"m{i}.py")
        assert project._held <= model.MAX_SUMMARY_SOURCE
        assert (tmp_path / "m0.py") not in project._summaries
        assert tree() is None  # freed at once, not left to the cycle collector
    finally:
        gc.enable()


def test_load_index_keeps_no_tree(tmp_path):
    write(tmp_path, {
        "pyproject.toml": "",
        "train.py": """
            import torch
            def main(args, model, opt, loader):
                if args.resume:
                    model.load_state_dict(torch.load(args.resume))
                for x in loader:
                    model(x).backward()
                    opt.step()
        """,
    })
    view = project_for(tmp_path / "train.py")
    loads = view.resuming_loads()
    assert [(Path(m.path).name, site.line) for m, site in loads] == [("train.py", 5)]
    for module, _ in view.project.load_sites():
        assert not isinstance(module, ModuleSummary)
        assert not hasattr(module, "tree") and not hasattr(module, "__dict__")


LOADS = [
    "import torch\nx = torch.load(p)\n",
    "import torch as T\nx = T.load(p)\n",
    "import torch\nx = (torch.  # note\n     load)(p)\n",
    "import torch\nx = torch.serialization.load(p)\n",
    "import torch.serialization as S\nx = S.load(p)\n",
    "from torch import serialization\nx = serialization.load(p)\n",
    "from torch import load\nx = load(p)\n",
    "from torch import (\n    load as restore,  # alias\n)\nx = restore(p)\n",
    "from torch.serialization import load as L\nx = L(p)\n",
    "import torch\nx = [torch\n     .load(p)]\n",
    "import ｔｏｒｃｈ\nx = ｔｏｒｃｈ.load(p)\n",
]
NOT_LOADS = [
    "import torch, json\nx = json.load(f)\n",
    "import torch\nimport numpy as np\nx = np.load(p)\n",
    "import torch\ndef load(p):\n    return p\nx = load(p)\n",
]


@pytest.mark.parametrize("text", LOADS)
def test_every_torch_load_passes_the_load_prefilter(text):
    data = text.encode("utf-8")
    words = {w for w, _ in model._WORD.findall(data)}
    assert model._may_load_torch(data, words)


@pytest.mark.parametrize("text", NOT_LOADS)
def test_other_loads_are_left_out(text):
    data = text.encode("utf-8")
    assert not model._may_load_torch(data, {w for w, _ in model._WORD.findall(data)})


@pytest.mark.parametrize("text", [
    "if args.resume:\n    w = 'a.pt'\n",
    "if cfg.START_EPOCH > 0:\n    w = 'a.pt'\n",
    "if 'res' 'ume' in opts:\n    w = 'a.pt'\n",
    "if ('start_'  # split\n    'epoch') in opts:\n    w = 'a.pt'\n",
    "if '\\x72esume' in opts:\n    w = 'a.pt'\n",
    "if args.reſume:\n    w = 'a.pt'\n",
])
def test_resume_words_pass_the_load_prefilter(text):
    assert model._may_resume(text.encode("utf-8"))


def test_resume_literals_spell_out_the_pattern():
    from mllint.project.summaries import RESUME_WORDS

    for word in model._RESUME_LITERALS:
        assert RESUME_WORDS.fullmatch(word.decode())
    assert len(model._RESUME_LITERALS) == 16


# A project where the callers of ``engine.evaluate`` reach it in every way an import can:
# through a package's re-export under another name, a relative import of the package, a
# ``src`` layout, a script directory's sibling, and a ``build`` folder the listing skips.
CALLERS = {
    "pyproject.toml": "",
    "src/pkg/__init__.py": "from .engine import evaluate as run_eval\n",
    "src/pkg/engine.py": "def evaluate(model, loader):\n    return model\n",
    "src/pkg/sub/__init__.py": "",
    "src/pkg/sub/user.py": "from .. import run_eval\nrun_eval(m, loader)\n",
    "src/pkg/sub/evaluate_user.py": "from .. import run_eval as evaluate\nevaluate(m, l)\n",
    "tools/a.py": "import pkg\npkg.run_eval(m, loader)\n",
    "tools/b.py": "from pkg.engine import evaluate as ev\nev(m, loader)\nevaluate(m, x)\n",
    "tools/c.py": "from helpers import again\nagain.evaluate(m, loader)\n",
    "tools/helpers/__init__.py": "from pkg import engine as again\n",
    "tools/d.py": "from build.shim import evaluate\nevaluate(m, loader)\n",
    "build/shim.py": "from pkg.engine import evaluate\n",
    "other-repo/x.py": "from engine import evaluate\nevaluate(m, loader)\n",
    "other-repo/engine.py": "def evaluate(model, loader):\n    return model\n",
    "unrelated/y.py": "def evaluate(a, b):\n    return a\nevaluate(1, 2)\n",
}


def _callers(root: Path, name: str) -> tuple[list, dict]:
    view = project_for(root / "src" / "pkg" / "engine.py")
    found = sorted((Path(m.path).relative_to(root).as_posix(), s.line)
                   for m, s in view.callers_elsewhere(name))
    return found, dict(view.read)


def test_pruned_callers_are_those_of_a_full_scan(tmp_path, monkeypatch):
    write(tmp_path, CALLERS)
    model._PROJECTS.clear()
    pruned = _callers(tmp_path, "evaluate")
    reaching = model._PROJECTS[tmp_path].reaching(tmp_path / "src" / "pkg" / "engine.py")
    assert tmp_path / "unrelated" / "y.py" not in reaching
    model._PROJECTS.clear()
    monkeypatch.setattr(model.Project, "reaching", lambda self, target: None)
    full = _callers(tmp_path, "evaluate")
    assert pruned == full
    assert ("tools/b.py", 2) in pruned[0] and ("tools/c.py", 2) in pruned[0]
    assert ("other-repo/x.py", 2) not in pruned[0]
    model._PROJECTS.clear()
