"""Project hygiene: environment.yml matches pyproject.toml's student set; the public API is
explicit; the README's quick start is the two make commands."""

import re
import tomllib
from pathlib import Path

import neuralode_helpers as nh

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    # environment.yml is the student environment: pyproject's dependencies, without the
    # test-only extras (a developer adds those with pip install -e ".[test]").
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]}
    conda_names = set()
    deps = (ROOT / "environment.yml").read_text().split("\ndependencies:", 1)[1]
    for line in deps.splitlines():
        item = line.split("#")[0].strip()
        if not item.startswith("- ") or item.endswith(":"):
            continue
        entry = item[2:].strip()
        if entry.startswith("-e") or _name(entry) in {"python", "pip"}:
            continue
        conda_names.add(CONDA_TO_PIP.get(_name(entry), _name(entry)))
    assert conda_names == pip_names


def test_public_api_is_explicit():
    assert sorted(nh.__all__) == sorted(set(nh.__all__))
    for name in nh.__all__:
        assert hasattr(nh, name), name
    for name in ("odeint", "odeint_adjoint", "ODENet", "SolverError", "train", "Stats"):
        assert name in nh.__all__


def test_makefile_pins_torch_and_readme_quick_start_has_two_commands():
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make \w+", quick, flags=re.M)
    assert commands == ["make lab", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
