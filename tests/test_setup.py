"""Set-up on the laptops students bring: the Makefile's checks before it creates .venv, the
student and developer environments, which torch each machine gets and from where, the
reinstall only when requirements change, the offline wheel folder, the oldest-torch
environment, and one stated Python requirement everywhere.

The Makefile is run in a temporary copy with fake interpreters (small shell scripts that
answer the version question and "create" a venv) and stand-ins for the machine (UNAME_S,
UNAME_M), for nvidia-smi (NVIDIA_SMI) and for the question "does PyTorch's CPU index answer?"
(INDEX_PROBE), so nothing is installed or downloaded. What the stand-ins cannot show: a real
NVIDIA GPU, and the CPU index itself (unreachable from the CI machine)."""

import json
import os
import re
import shutil
import subprocess
import sys
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


def _pip_lines(project, target, *extra):
    result = make(project, "-n", target, f"PYTHON={fake_python(project, '3.11')}", *extra)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "pip install" in line]


def test_make_lab_installs_the_student_set_and_make_test_the_developer_set(project):
    lab = _pip_lines(project, "lab")
    dry = make(project, "-n", "lab", f"PYTHON={fake_python(project, '3.11')}").stdout
    assert any(line.startswith("args=$(") for line in dry.splitlines())  # the torch choice
    assert any(line.rstrip().endswith("-e .") for line in lab)
    assert not any("[test]" in line for line in lab)
    test = _pip_lines(project, "test")
    assert any('-e ".[test]"' in line for line in test)


def test_large_downloads_show_progress(project):
    # torch is 70 MB to 2.5 GB: a silent pip looks hung. Only pip's own upgrade is quiet.
    for line in _pip_lines(project, "lab") + _pip_lines(project, "test"):
        if "--upgrade pip" in line:
            continue
        assert "--quiet" not in line and "--progress-bar on" in line, line


def torch_choice(project, *args):
    result = make(project, "torch-choice", f"PYTHON={fake_python(project, '3.11')}", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


CPU = "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("machine", [("Linux", "x86_64"), ("Windows_NT", "AMD64"),
                                     ("Darwin", "arm64"), ("Linux", "aarch64")])
def test_every_machine_but_an_intel_mac_gets_the_tested_torch_range(project, machine):
    args, _ = torch_choice(project, f"UNAME_S={machine[0]}", f"UNAME_M={machine[1]}",
                           "NVIDIA_SMI=true")
    assert args == "torch>=2.2.2,<=2.13.0"


def test_an_intel_mac_gets_the_last_torch_it_has_with_numpy_1(project):
    args, _ = torch_choice(project, "UNAME_S=Darwin", "UNAME_M=x86_64", "INDEX_PROBE=true")
    assert args == "torch>=2.2.2,<=2.13.0 numpy<2"  # pip finds 2.2.2 only; no CPU index


def test_linux_without_nvidia_gpu_prefers_the_cpu_only_build(project):
    args, said = torch_choice(project, "UNAME_S=Linux", "NVIDIA_SMI=false", "INDEX_PROBE=true")
    assert args.endswith(f"--index-url {CPU}")
    assert "no NVIDIA GPU" in said and "190 MB" in said


def test_linux_with_an_nvidia_gpu_keeps_the_cuda_build(project):
    args, said = torch_choice(project, "UNAME_S=Linux", "NVIDIA_SMI=true", "INDEX_PROBE=true")
    assert "--index-url" not in args and "NVIDIA GPU answers" in said


def test_an_unreachable_cpu_index_falls_back_to_the_default_index_and_says_so(project):
    args, said = torch_choice(project, "UNAME_S=Linux", "NVIDIA_SMI=false", "INDEX_PROBE=false")
    assert "--index-url" not in args and "does not answer" in said and "2.5 GB" in said


def test_the_torch_index_can_be_named_or_switched_off(project):
    url = "https://example.org/simple"
    args, _ = torch_choice(project, "UNAME_S=Linux", "NVIDIA_SMI=false", "INDEX_PROBE=true",
                           f"TORCH_INDEX={url}")
    assert args.endswith(f"--index-url {url}")
    args, _ = torch_choice(project, "UNAME_S=Linux", "NVIDIA_SMI=false", "INDEX_PROBE=true",
                           "TORCH_INDEX=")
    assert "--index-url" not in args


def test_an_intel_mac_with_a_python_torch_has_no_wheel_for_stops(project):
    bad = make(project, "venv", "UNAME_S=Darwin", "UNAME_M=x86_64",
               f"PYTHON={fake_python(project, '3.13')}")
    assert bad.returncode != 0 and "Intel Mac" in bad.stderr and "3.11 and 3.12" in bad.stderr
    assert not (project / ".venv").exists()
    good = make(project, "venv", "UNAME_S=Darwin", "UNAME_M=x86_64",
                f"PYTHON={fake_python(project, '3.12')}")
    assert good.returncode == 0, good.stderr


def _stamp_line(project, target, stamp, *extra):
    lines = make(project, "-n", target, f"PYTHON={fake_python(project, '3.11')}",
                 *extra).stdout.splitlines()
    return next(line for line in lines if line.endswith(f"> .venv/{stamp}"))


def _finished_venv(project):
    make(project, "venv", f"PYTHON={fake_python(project, '3.11')}")
    for stamp in (".installed-student", ".installed"):
        line = _stamp_line(project, "test", stamp)
        (project / ".venv" / stamp).write_text(line.split('"')[1] + "\n")


def test_make_lab_reinstalls_only_when_the_requirements_change(project):
    _finished_venv(project)
    assert _pip_lines(project, "lab") == [] and _pip_lines(project, "test") == []
    # A newer pyproject.toml (a git pull) that changes nothing the install needs: offline.
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('description = "', 'description = "A '))
    assert _pip_lines(project, "lab") == []
    # A changed requirement: reinstall.
    (project / "pyproject.toml").write_text(text.replace('"tqdm>=4.60"', '"tqdm>=4.66"'))
    assert any("-e ." in line for line in _pip_lines(project, "lab"))
    # A changed test tool: the developer set only.
    (project / "pyproject.toml").write_text(text.replace('"pytest>=7"', '"pytest>=8"'))
    assert _pip_lines(project, "lab") == []
    assert any(".[test]" in line for line in _pip_lines(project, "test"))


def test_a_stamp_from_the_old_makefile_reinstalls_once(project):
    make(project, "venv", f"PYTHON={fake_python(project, '3.11')}")
    (project / ".venv" / ".installed-student").write_text("")  # `touch` of earlier versions
    assert _pip_lines(project, "lab")


def test_make_lab_from_a_wheelhouse_uses_no_index(project):
    lab = _pip_lines(project, "lab", "WHEELHOUSE=/media/usb/wheels")
    assert lab
    for line in lab:
        assert '--no-index --find-links "/media/usb/wheels"' in line, line
    out = make(project, "-n", "lab", "WHEELHOUSE=/w", f"PYTHON={fake_python(project, '3.11')}")
    assert "download.pytorch.org" not in out.stdout  # no probe either


def _wheelhouse(project, *args):
    return make(project, "-n", "wheelhouse", "WHEELHOUSE=/tmp/w",
                f"PYTHON={fake_python(project, '3.11')}", *args).stdout


@pytest.mark.parametrize("platform, uv, numpy1", [
    ("win_amd64", "x86_64-pc-windows-msvc", False),
    ("macosx_12_0_x86_64", "x86_64-apple-darwin", True),
    ("macosx_14_0_arm64", "aarch64-apple-darwin", False),
    ("manylinux_2_28_x86_64", "x86_64-manylinux_2_28", False),
])
def test_a_wheelhouse_for_another_platform_is_resolved_for_that_platform(project, platform, uv,
                                                                         numpy1):
    out = _wheelhouse(project, f"PLATFORM={platform}", "PYTHON_VERSION=3.12")
    assert f"--python-platform {uv}" in out and "--python-version 3.12" in out
    assert f"--platform {platform}" in out and "--only-binary=:all:" in out
    assert ('"numpy<2"' in out) == numpy1
    assert ("MACOSX_DEPLOYMENT_TARGET=" + platform.split("_")[1] + ".") in out or \
        not platform.startswith("macosx")


def test_a_wheelhouse_for_this_machine_uses_pip_alone(project):
    out = _wheelhouse(project)
    assert "pip download" in out and "uv pip compile" not in out
    assert "setuptools>=64" in out  # the offline editable install builds with it


def test_wheelhouse_needs_a_folder_and_a_known_platform(project):
    result = make(project, "wheelhouse", f"PYTHON={fake_python(project, '3.11')}")
    assert result.returncode != 0 and "name the folder" in result.stderr
    result = make(project, "wheelhouse", f"WHEELHOUSE={project / 'w'}", "PLATFORM=amiga_m68k",
                  f"PYTHON={fake_python(project, '3.11')}")
    assert result.returncode != 0 and "is not one of" in result.stderr


def test_test_oldest_tests_torch_2_2_2_with_numpy_1_on_notebooks_00_to_03(project):
    (project / "notebooks").mkdir()
    for name in ("00-a", "01-b", "02-c", "03-d", "04-e", "09-f"):
        (project / "notebooks" / f"{name}.ipynb").write_text("{}")
    out = make(project, "-n", "test-oldest", f"PYTHON={fake_python(project, '3.11')}").stdout
    assert "-m venv .venv-oldest" in out
    assert "torch==2.2.2 numpy==1.26.4" in out
    nbval = next(line for line in out.splitlines() if "--nbval" in line)
    assert all(f"notebooks/{n}.ipynb" in nbval for n in ("00-a", "01-b", "02-c", "03-d"))
    assert "04-e" not in nbval and "09-f" not in nbval
    unit = next(line for line in out.splitlines() if "bin/pytest" in line and "--nbval" not in line)
    for skipped in ("test_browser.py", "test_setup.py", "test_lesson_plan.py"):
        assert f"--ignore=tests/{skipped}" in unit
    assert unit.endswith(" tests")


def test_the_makefile_looks_for_every_supported_python():
    makefile = (ROOT / "Makefile").read_text()
    for version in ("3.11", "3.12", "3.13", "3.14"):
        assert f"command -v python{version}" in makefile, version


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
    assert re.search(r"^\s+- python=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.11 or newer" in readme


def test_readme_documents_windows_conda_and_troubleshooting():
    readme = (ROOT / "README.md").read_text()
    for text in ("PowerShell", "python -m venv", "pip install", "jupyter lab",
                 "conda env create -f environment.yml", "conda activate neuralode",
                 "download.pytorch.org/whl/cpu", "## Troubleshooting", "--allow-root",
                 "kernel", "widget", "port", "xcode-select --install", "make wheelhouse",
                 "WHEELHOUSE=", "Binder", "Colab", "neuralode_helpers.doctor",
                 "### Platforms"):
        assert text in readme, text


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """The package installed from its wheel into a folder of its own (not editable, so a
    module or data file missing from the wheel fails here)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    site = tmp / "site"
    wheel = next((tmp / "dist").glob("neuralode_helpers-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return site


@pytest.mark.parametrize("name", ["01-deriving-the-adjoint.ipynb",
                                  "08-every-way-to-differentiate-a-solve.ipynb"])
def test_a_notebook_copied_out_of_the_repository_runs(tmp_path, wheel_site, name):
    # Colab, or a student's own folder: the notebook alone, and the package installed from its
    # wheel. Notebook 01 imports only the package; notebook 08 also reads the committed
    # gradient-method sweep, which ships as package data (neuralode_helpers/data/).
    source = ROOT / "notebooks" / name
    text = source.read_text()
    assert "../" not in text and "sys.path" not in text
    copy = tmp_path / "elsewhere" / source.name
    copy.parent.mkdir()
    copy.write_text(text)
    # The wheel's copy comes first on the path (the editable install's finder comes last).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(wheel_site)}
    where = subprocess.run([sys.executable, "-c", "import neuralode_helpers.solvers as s, "
                            "neuralode_helpers.sweep as w; print(s.__file__); "
                            "print(len(w.committed_rows()))"], cwd=copy.parent, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    module, n_rows = where.stdout.split()
    assert module.startswith(str(wheel_site)), where.stdout + where.stderr
    assert int(n_rows) == 13 * 6  # the committed sweep, read from the wheel's data
    jupyter = Path(sys.executable).with_name("jupyter")
    result = subprocess.run(
        [str(jupyter), "nbconvert", "--to", "notebook", "--execute", "--inplace",
         "--ExecutePreprocessor.timeout=600", copy.name],
        cwd=copy.parent, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_committed_report_ships_in_the_wheel(wheel_site):
    # Notebooks 04, 05, 08 and 09 show reports of runs too long for a notebook; a copy of the
    # notebook anywhere reads them from the installed package.
    from neuralode_helpers.reports import REPORTS

    code = ("from neuralode_helpers.reports import REPORTS, committed_report; "
            "print(sum(len(committed_report(n)) > 200 for n in REPORTS))")
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=wheel_site.parent, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout) == len(REPORTS)


def test_no_notebook_reads_the_repository_around_it():
    # No "../benchmarks", no sys.path edits: a notebook opened from anywhere finds all it needs
    # in the installed package (reports through neuralode_helpers.reports).
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                assert "../" not in source and "sys.path" not in source, (path.name, source)
