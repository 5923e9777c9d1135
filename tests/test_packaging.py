"""Project hygiene: environment.yml matches pyproject.toml's student set, names and versions;
the public API is explicit; the README's quick start is the two make commands; the licence."""

import re
import tomllib
from pathlib import Path

import neuralode_helpers as nh

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _conda_specs() -> dict[str, str]:
    """environment.yml's conda packages as {pip name: version spec}, python and pip included."""
    specs = {}
    deps = (ROOT / "environment.yml").read_text().split("\ndependencies:", 1)[1]
    for line in deps.splitlines():
        item = line.split("#")[0].strip()
        if not item.startswith("- ") or item.endswith(":"):
            continue
        entry = item[2:].strip()
        if entry.startswith("-e"):
            continue
        name = _name(entry)
        specs[CONDA_TO_PIP.get(name, name)] = entry[len(name):].strip()
    return specs


def _pip_specs() -> dict[str, list[str]]:
    """pyproject's student dependencies as {name: [version specs]} (markers kept apart)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs: dict[str, list[str]] = {}
    for requirement in project["dependencies"]:
        name = _name(requirement)
        spec = requirement.split(";")[0][len(name):].strip()
        specs.setdefault(name, []).append(spec)
    return specs


def _bounds(spec: str) -> dict[str, tuple[int, ...]]:
    """">=2.2.2,<=2.13.0" -> {">=": (2, 2, 2), "<=": (2, 13, 0)}; conda's "=3.11" is "==" ."""
    found = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        op, version = re.match(r"(>=|<=|==|=|<|>)(.+)", part).groups()
        found["==" if op == "=" else op] = tuple(int(x) for x in version.split(".") if x.isdigit())
    return found


def test_environment_yml_lists_the_same_packages_as_pyproject():
    # environment.yml is the student environment: pyproject's dependencies, without the
    # test-only extras (a developer adds those with pip install -e ".[test]").
    conda_names = set(_conda_specs()) - {"python", "pip"}
    assert conda_names == set(_pip_specs())


def test_environment_yml_and_pyproject_agree_on_versions():
    # Same lower bound for every package; conda's extra upper bound on torch is the newest
    # torch tested (the Makefile's TORCH_NEWEST), its lower bound the oldest (TORCH_OLDEST).
    conda, pip = _conda_specs(), _pip_specs()
    for name, specs in pip.items():
        lower = [_bounds(s)[">="] for s in specs if ">=" in _bounds(s)]
        assert lower and _bounds(conda[name]).get(">=") == lower[0], (name, conda[name], specs)
    makefile = (ROOT / "Makefile").read_text()
    oldest = re.search(r"^TORCH_OLDEST := (\S+)", makefile, re.M).group(1)
    newest = re.search(r"^TORCH_NEWEST := (\S+)", makefile, re.M).group(1)
    torch = _bounds(conda["torch"])
    assert torch[">="] == _bounds(">=" + oldest)[">="]
    assert torch["<="] == _bounds("<=" + newest)["<="]
    assert pip["torch"] == [">=" + oldest]
    # Python: conda pins the version CI tests (.ci/run), inside pyproject's requirement.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert _bounds(conda["python"])["=="] >= _bounds(requires)[">="]
    assert "Python 3.11" in (ROOT / ".ci" / "run").read_text()
    assert _bounds(conda["python"])["=="] == (3, 11)


def test_numpy_1_where_torch_stops_at_2_2():
    # numpy 2 needs torch 2.3+; Intel Macs' last torch is 2.2.2, so numpy stays below 2 there.
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("numpy<2;") and "x86_64" in d and "darwin" in d
               for d in deps)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^NUMPY_OLDEST := 1\.", makefile, re.M)


def test_license_is_the_one_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "2026 the course authors" in text


def test_public_api_is_explicit():
    assert sorted(nh.__all__) == sorted(set(nh.__all__))
    for name in nh.__all__:
        assert hasattr(nh, name), name
    for name in ("odeint", "odeint_adjoint", "ODENet", "SolverError", "train", "Stats"):
        assert name in nh.__all__


def test_makefile_tests_a_torch_range_and_readme_quick_start_has_two_commands():
    makefile = (ROOT / "Makefile").read_text()
    assert 'TORCH_RANGE := "torch>=$(TORCH_OLDEST),<=$(TORCH_NEWEST)"' in makefile
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make \w+", quick, flags=re.M)
    assert commands == ["make lab", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test-oldest" in ci
