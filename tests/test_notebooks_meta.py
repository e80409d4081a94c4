"""The course notebooks as committed: all there, no outputs, a parameter cell, no algorithm code.

Executing them is ``make test`` (``pytest --nbmake notebooks``, smoke mode); this file checks the
files themselves and that smoke mode is switched by ``MOIT_SMOKE``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = [
    "01_label_noise.ipynb",
    "02_embedding_collapse.ipynb",
    "03_knn_soft_labels.ipynb",
    "04_detection_quality.ipynb",
    "05_moit_and_moit_plus.ipynb",
    "06_your_own_data.ipynb",
]


DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _load(name: str) -> dict:
    path = NOTEBOOK_DIR / name
    assert path.is_file(), f"notebooks/{name} is missing"
    return json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _python(cell: dict) -> str:
    """The cell's source with IPython magics (``%matplotlib inline``) blanked, for ast."""
    return "\n".join("" if line.lstrip().startswith("%") else line
                     for line in _source(cell).splitlines())


def test_the_six_notebooks_and_nothing_unexpected():
    present = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert present == NOTEBOOKS, f"expected exactly {NOTEBOOKS}, found {present}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_valid_nbformat_4(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_outputs_committed(name):
    for i, cell in enumerate(_code_cells(_load(name))):
        assert cell.get("outputs") == [], f"{name}: code cell {i} has outputs; clear them"
        assert cell.get("execution_count") is None, f"{name}: code cell {i} has a count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_is_the_parameters_cell(name):
    cells = _code_cells(_load(name))
    assert cells, f"{name} has no code"
    assert "parameters" in cells[0].get("metadata", {}).get("tags", []), (
        f"{name}: tag the first code cell 'parameters' (papermill style)")
    # parameters are plain assignments, so a tool can override them in a cell after this one
    tree = ast.parse(_source(cells[0]))
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body)
    assert "SMOKE" in {t.id for node in tree.body for t in node.targets if isinstance(t, ast.Name)}
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells) == 1


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_functions_or_classes_in_code_cells(name):
    """Algorithm code belongs in the package; notebooks call it (and share via notebook_runs.py)."""
    for i, cell in enumerate(_code_cells(_load(name))):
        tree = ast.parse(_python(cell))
        defs = [n for n in ast.walk(tree) if isinstance(n, DEFINITIONS)]
        assert not defs, (f"{name}: code cell {i} defines a {type(defs[0]).__name__} (line "
                          f"{defs[0].lineno}); move it into moit_explore/")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_teaches_and_checks(name):
    """Each notebook is a lesson: markdown, figures, and assert cells on the numbers."""
    nb = _load(name)
    md = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    code = "\n".join(_source(c) for c in _code_cells(nb))
    assert _source(md[0]).lstrip().startswith("# "), f"{name} starts with a title"
    assert sum(len(_source(c)) for c in md) > 1500, f"{name}: explain more in markdown"
    assert "figures." in code or "widgets." in code, f"{name} shows no figure"
    assert any("assert " in _source(c) for c in _code_cells(nb)), f"{name} checks nothing"
    assert "notebook_runs." in code, (f"{name}: reach training runs and the smoke switch via "
                                      "notebook_runs")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_figures_show_inline_whatever_the_backend(name):
    """``%matplotlib inline`` in the setup cell, before any figure: a kernel started with
    ``MPLBACKEND=agg`` in its environment (a shell, a Makefile) would otherwise show none."""
    cells = _code_cells(_load(name))
    setup = _source(cells[1])
    assert "%matplotlib inline" in setup.splitlines(), f"{name}: no %matplotlib inline in cell 1"
    assert not any("figures." in _source(c) for c in cells[:1])


def _takeaway_asserts(code: str) -> list[tuple[str, bool]]:
    """(takeaway comment, whether an assert follows it) for each ``# takeaway:`` comment: the
    next statement is an ``assert``, or a ``for`` / ``if`` block whose body asserts."""
    lines = code.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not line.strip().startswith("# takeaway:"):
            continue
        rest = [t for t in lines[i + 1:] if t.strip() and not t.strip().startswith("#")]
        ok = bool(rest) and rest[0].strip().startswith("assert ")
        if rest and rest[0].rstrip().endswith(":") and rest[0].strip().startswith(("for ", "if ")):
            indent = len(rest[0]) - len(rest[0].lstrip())
            body = []
            for t in rest[1:]:
                if len(t) - len(t.lstrip()) <= indent:
                    break
                body.append(t.strip())
            ok = any(t.startswith("assert ") for t in body)
        found.append((line.strip(), ok))
    return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_takeaway_comment_sits_on_an_assert(name):
    """A reader finds the assertion behind each takeaway: a ``# takeaway:`` comment right above
    an ``assert`` on the numbers (docs/course.md, "Where each takeaway is checked")."""
    nb = _load(name)
    pairs = [p for c in _code_cells(nb) for p in _takeaway_asserts(_source(c))]
    assert len(pairs) >= 2, f"{name}: mark the assertions behind its takeaways (# takeaway: ...)"
    for comment, ok in pairs:
        assert ok, f"{name}: {comment!r} is not followed by an assert"
    md = [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert any(m.lstrip().startswith("## Takeaways") for m in md), f"{name}: no Takeaways section"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ends_with_exercises_and_collapsed_answers(name):
    last = _source(_load(name)["cells"][-1])
    assert last.lstrip().startswith("## Exercises"), f"{name}: end with an Exercises section"
    questions, _, answers = last.partition("<details>")
    assert answers and "</details>" in answers and "<summary>" in answers, (
        f"{name}: answers in a collapsed <details> block")
    items = [line for line in questions.splitlines() if line[:2] in ("1.", "2.", "3.", "4.")]
    assert 2 <= len(items) <= 3, f"{name}: two or three exercises, found {len(items)}"
    assert "Predict, then move the widget" in questions, f"{name}: a predict-then-move prompt"
    # the checkable question: the answers name the notebook's own objects in code
    assert answers.count("`") >= 4, f"{name}: answers should show how to check them"


def test_readme_and_docs_list_every_notebook_and_where_takeaways_are_checked():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    course = readme.split("## The course", 1)[1].split("\n## ", 1)[0]
    reference = (ROOT / "docs" / "course.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f"`{name.removesuffix('.ipynb')}`" in course, f"README's course table lacks {name}"
        assert f"`{name.removesuffix('.ipynb')}`" in reference, f"docs/course.md lacks {name}"
    assert "# takeaway:" in reference


def _course_mode(value: str | None) -> tuple[str, str]:
    """(SMOKE, the default preset) in a fresh process with MOIT_SMOKE=value (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "MOIT_SMOKE"}
    if value is not None:
        env["MOIT_SMOKE"] = value
    out = subprocess.run(
        [sys.executable, "-c", "from moit_explore.course import notebook_runs; "
                               "print(notebook_runs.SMOKE, notebook_runs.preset())"],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    smoke, preset = out.stdout.split()
    return smoke, preset


def test_moit_smoke_switches_the_course_to_smoke_mode():
    assert _course_mode("1") == ("True", "digits")
    assert _course_mode(None) == ("False", "cpu-demo")
    assert _course_mode("0") == ("False", "cpu-demo")


def test_parameter_cell_can_force_the_mode():
    from moit_explore.course import notebook_runs
    from moit_explore.training import presets

    assert notebook_runs.preset(True) == "digits"
    assert notebook_runs.preset(False) == "cpu-demo"
    assert "'digits'" in notebook_runs.expected_time("digits")
    assert presets.preset("digits").k < 1437 // 10  # a k that fits the digits' classes


def test_course_noise_file_draws_the_course_flip_map_on_the_digits(tmp_path, monkeypatch):
    """Notebook 4's asymmetric run on the digits (no standard flip map in the trainer) trains on
    a label file: the course's flip map drawn with the preset's noise seed, as notebook 1 draws
    it; written once; Fashion-MNIST needs none (the trainer has its map)."""
    import numpy as np

    from moit_explore.course import notebook_runs
    from moit_explore.maths import noise

    monkeypatch.setenv("MOIT_COURSE_RUNS", str(tmp_path))
    path = notebook_runs.course_noise_file("digits", 0.4)
    assert path is not None and path.parent.parent == tmp_path
    given = np.load(path)
    labels = notebook_runs.preset_data("digits").train_labels
    expected = noise.inject_noise(labels, "asymmetric", 0.4, 10, seed=42,
                                  flip_map=notebook_runs.flip_map("digits")).noisy
    assert np.array_equal(given, expected)
    moved = given != labels
    assert moved.any() and set(np.unique(labels[moved])) <= set(notebook_runs.DIGITS_FLIP_MAP)
    stamp = path.stat().st_mtime_ns
    assert notebook_runs.course_noise_file("digits", 0.4) == path
    assert path.stat().st_mtime_ns == stamp  # not written again
    assert notebook_runs.course_noise_file("cpu-demo", 0.4) is None
