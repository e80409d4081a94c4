"""The project's set-up: declared dependencies agree, and the Makefile works from a clean clone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]

# conda names for the PyPI packages whose names differ
CONDA_NAME = {"torch": "pytorch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return {CONDA_NAME.get(_name(r), _name(r)): r.replace(" ", "") for r in reqs}


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    return {_name(d): d.replace(" ", "") for d in deps if _name(d) not in {"python", "pip"}}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    py, conda = _pyproject_requirements(), _conda_requirements()
    assert set(py) == set(conda), (
        f"only in pyproject.toml: {sorted(set(py) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(py))}"
    )
    for name, req in py.items():
        version = req[len(_name(req)):]
        conda_version = conda[name][len(name):]
        assert version == conda_version, (
            f"{name}: pyproject {version!r} vs environment.yml {conda_version!r}"
        )


def test_readme_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("##")] if "##" in readme else readme
    assert "make demo" in head and "make test" in head


def test_ci_script_runs_make_test_and_stops_on_failure():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "set -e" in ci


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None,
                    reason="needs git and make")
def test_clean_clone_reuses_the_venv_and_finds_the_data(tmp_path):
    """`make data` in a fresh clone finds Fashion-MNIST (or fetches it)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    venv = Path(sys.prefix)
    # Reuse this venv (already set up); the stamp rule would otherwise reinstall everything.
    stamp = f"{venv}/.installed-stamp"
    out = subprocess.run(["make", "-o", stamp, f"VENV={venv}", f"STAMP={stamp}", "data"],
                         cwd=clone, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fashion-mnist" in out.stdout
    dry = subprocess.run(["make", "-n", "test"], cwd=clone, capture_output=True, text=True)
    assert "pytest" in dry.stdout and "--nbmake" in dry.stdout
