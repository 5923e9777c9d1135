"""Set-up on the laptops students bring: the Makefile's checks before it creates .venv, the
student and developer environments, and one stated Python requirement everywhere.

The Makefile is run in a temporary copy with fake interpreters (small shell scripts that
answer the version question and "create" a venv), so nothing is installed."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None or shutil.which("sh") is None,
                                reason="needs make and a POSIX shell")

FAKE_PYTHON = """#!/bin/sh
# Answers the Makefile's version question; "python -m venv DIR" makes DIR/bin/python.
case "$1" in
  -c) echo "{version}" ;;
  -m) mkdir -p "$3/bin"; printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python";
      chmod +x "$3/bin/python" ;;
esac
"""


@pytest.fixture
def project(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def fake_python(folder, version):
    path = folder / f"python{version}"
    path.write_text(FAKE_PYTHON.format(version=version))
    path.chmod(0o755)
    return path


def make(folder, *args):
    return subprocess.run([MAKE, "--no-print-directory", *args], cwd=folder,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("version", ["3.9", "3.10", "2.7"])
def test_a_python_too_old_stops_before_creating_the_venv(project, version):
    result = make(project, "venv", f"PYTHON={fake_python(project, version)}")
    assert result.returncode != 0
    assert f"is Python {version}" in result.stderr
    assert "needs Python 3.11 or newer" in result.stderr
    assert not (project / ".venv").exists()


def test_no_python_at_all_is_named(project):
    result = make(project, "venv", f"PYTHON={project / 'no-such-python'}")
    assert result.returncode != 0
    assert "no Python to run" in result.stderr and "3.11 or newer" in result.stderr
    assert not (project / ".venv").exists()


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13", "3.14"])
def test_a_python_new_enough_creates_the_venv(project, version):
    result = make(project, "venv", f"PYTHON={fake_python(project, version)}")
    assert result.returncode == 0, result.stderr
    assert (project / ".venv" / "bin" / "python").is_file()


def test_a_half_built_venv_is_removed_and_rebuilt(project):
    # An earlier `make lab` stopped part-way (no network, ensurepip missing, ...): a .venv
    # without an "installed" stamp.
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "lib" / "leftover").write_text("")
    result = make(project, "venv", f"PYTHON={fake_python(project, '3.11')}")
    assert result.returncode == 0, result.stderr
    assert "half-built" in result.stdout
    assert not (project / ".venv" / "lib" / "leftover").exists()
    assert (project / ".venv" / "bin" / "python").is_file()


def test_a_venv_whose_python_no_longer_runs_is_rebuilt(project):
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (project / ".venv" / ".installed-student").write_text("")
    (bin_dir / "python").write_text("#!/bin/sh\nexit 127\n")  # e.g. its Python was upgraded
    (bin_dir / "python").chmod(0o755)
    result = make(project, "venv", f"PYTHON={fake_python(project, '3.12')}")
    assert result.returncode == 0, result.stderr
    assert "half-built" in result.stdout
    assert not (project / ".venv" / ".installed-student").exists()


@pytest.mark.parametrize("stamp", [".installed-student", ".installed"])
def test_a_finished_venv_is_kept(project, stamp):
    make(project, "venv", f"PYTHON={fake_python(project, '3.11')}")
    (project / ".venv" / stamp).write_text("")
    (project / ".venv" / "mine").write_text("")
    result = make(project, "venv", f"PYTHON={fake_python(project, '3.11')}")
    assert result.returncode == 0, result.stderr
    assert "half-built" not in result.stdout
    assert (project / ".venv" / "mine").exists()


def _pip_lines(project, target):
    result = make(project, "-n", target, f"PYTHON={fake_python(project, '3.11')}")
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "pip install" in line]


def test_make_lab_installs_the_student_set_and_make_test_the_developer_set(project):
    lab = _pip_lines(project, "lab")
    assert any("torch==2.13.0" in line for line in lab)
    assert any(line.rstrip().endswith("-e .") for line in lab)
    assert not any("[test]" in line for line in lab)
    test = _pip_lines(project, "test")
    assert any("torch==2.13.0" in line for line in test)
    assert any('-e ".[test]"' in line for line in test)


def test_the_cpu_only_torch_index_can_be_named(project):
    lab = _pip_lines(project, "lab")
    assert not any("--index-url" in line for line in lab)
    url = "https://download.pytorch.org/whl/cpu"
    result = make(project, "-n", "lab", f"TORCH_INDEX={url}",
                  f"PYTHON={fake_python(project, '3.11')}")
    assert f"torch==2.13.0 --index-url {url}" in result.stdout


def test_test_only_packages_stay_out_of_the_student_set():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    student = " ".join(project["dependencies"]).lower()
    for name in ("playwright", "ruff", "pytest", "hypothesis", "nbval", "torchdiffeq"):
        assert name not in student, name
        assert any(r.lower().startswith(name) for r in project["optional-dependencies"]["test"])


def test_one_python_requirement_everywhere():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert "PY_MIN := 3.11" in (ROOT / "Makefile").read_text()
    assert re.search(r"^\s+- python>=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.11 or newer" in readme


def test_readme_documents_windows_conda_and_troubleshooting():
    readme = (ROOT / "README.md").read_text()
    for text in ("PowerShell", "python -m venv", "pip install", "jupyter lab",
                 "conda env create -f environment.yml", "conda activate neuralode",
                 "download.pytorch.org/whl/cpu", "## Troubleshooting", "--allow-root",
                 "kernel", "widget", "port"):
        assert text in readme, text
