"""The package's layers are folders, and imports go one way: maths <- training <- analysis <-
course <- cli. The maths and training import without the notebook extras."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "moit_explore"
ORDER = ["maths", "training", "analysis", "course", "cli"]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "moit_explore" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ORDER else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if layer in ORDER:
            out.append((layer, path))
    return out


def test_every_module_sits_in_a_layer_folder():
    loose = [p.name for p in PKG.glob("*.py") if p.stem not in {"__init__", "__main__", "cli"}]
    assert loose == [], f"modules outside a layer folder: {loose}"
    assert {layer for layer, _ in _modules()} == set(ORDER)


@pytest.mark.parametrize("layer,path", _modules(), ids=lambda v: str(v).split("moit_explore/")[-1])
def test_nothing_imports_a_layer_above_it(layer, path):
    above = set(ORDER[ORDER.index(layer) + 1:])
    bad = [m for m in _imports(path) if _layer(m) in above]
    assert bad == [], f"{path.relative_to(PKG)} imports a layer above {layer}: {bad}"


def test_maths_and_training_import_without_the_notebook_extras():
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in {'ipywidgets', 'umap', 'matplotlib', 'IPython',"
               " 'faiss'}:\n"
               "            raise ImportError('blocked ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "import pkgutil, importlib, moit_explore.maths, moit_explore.training,"
               " moit_explore.analysis\n"
               "for pkg in (moit_explore.maths, moit_explore.training, moit_explore.analysis):\n"
               "    for m in pkgutil.iter_modules(pkg.__path__):\n"
               "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
               "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
