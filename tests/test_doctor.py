"""The set-up check (python -m neuralode_helpers.doctor, and notebook 00's first code cell):
each check on this machine, each failure it must name (with stand-ins for an old Python, an
old torch, numpy 2 under torch 2.2), and its numbers in step with the Makefile and
pyproject.toml."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from neuralode_helpers import doctor

ROOT = Path(__file__).resolve().parents[1]


def _fake_torch(version, cuda=None):
    return SimpleNamespace(__version__=version, version=SimpleNamespace(cuda=cuda),
                           cuda=SimpleNamespace(is_available=lambda: False),
                           backends=SimpleNamespace())


def test_python_too_old_fails_and_names_the_requirement():
    check = doctor.check_python((3, 10, 4))
    assert check.status == "FAIL" and "3.10.4" in check.detail and "3.11 or newer" in check.detail
    assert doctor.check_python((3, 14, 0)).status == "ok"


def test_torch_range_old_fails_tested_ok_newer_warns():
    assert doctor.check_torch(_fake_torch("2.1.2")).status == "FAIL"
    for version in ("2.2.2", "2.13.0+cpu", "2.7.1"):
        assert doctor.check_torch(_fake_torch(version)).status == "ok", version
    newer = doctor.check_torch(_fake_torch("2.16.0", cuda="13.0"))
    assert newer.status == "warn" and "CUDA 13.0" in newer.detail


def test_numpy_2_under_old_torch_fails_with_the_fix():
    numpy2 = SimpleNamespace(__version__="2.1.0")
    check = doctor.check_numpy(_fake_torch("2.2.2"), numpy2)
    assert check.status == "FAIL" and 'numpy<2' in check.detail


def test_a_missing_distribution_is_named_with_its_install_command():
    check = doctor.check_distribution("no-such-package-xyz", "a test")
    assert check.status == "FAIL" and "pip install no-such-package-xyz" in check.detail
    assert doctor.check_distribution("no-such-package-xyz", "a test", needed=False).status == "warn"


def test_every_check_passes_in_the_course_environment():
    checks = doctor.check_all()
    names = [c.name for c in checks]
    for name in ("python", "torch", "numpy", "neuralode_helpers", "jupyterlab", "ipywidgets",
                 "jupyterlab_widgets", "solve"):
        assert name in names
    # "warn" is allowed for the timing only (a busy test machine).
    assert all(c.status == "ok" or (c.status == "warn" and c.name == "solve") for c in checks), \
        doctor.report(checks)
    text = doctor.report(checks)
    assert text.endswith("Ready: everything the series needs works here.")
    assert len(text.splitlines()) <= 24  # one screen


def test_report_says_not_ready_and_main_exits_1_on_a_failure(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "check_python", lambda: doctor.Check("FAIL", "python", "3.9"))
    assert doctor.main(["--no-solve"]) == 1
    assert "Not ready: python" in capsys.readouterr().out


def test_command_line_runs_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "neuralode_helpers.doctor"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ready" in result.stdout and "solve" in result.stdout


def test_requirements_match_the_makefile_and_pyproject():
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH_OLDEST := {doctor.TORCH_OLDEST}" in makefile
    assert f"TORCH_NEWEST := {doctor.TORCH_NEWEST}" in makefile
    assert f"PY_MIN := {doctor.PY_MIN[0]}.{doctor.PY_MIN[1]}" in makefile
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch>={doctor.TORCH_OLDEST}" in deps


def test_notebook_00_runs_the_check_right_after_its_setup_cell():
    import json

    cells = json.loads((ROOT / "notebooks" / "00-introduction.ipynb").read_text())["cells"]
    first_code = [c for c in cells if c["cell_type"] == "code"][1]  # after Setup
    source = "".join(first_code["source"])
    assert re.search(r"^%run -m neuralode_helpers\.doctor$", source, re.M), source
    outputs = first_code["outputs"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "Ready" in text and "solve" in text  # the committed run passed every check
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_the_set_up_slider_answers_from_the_kernel():
    # Notebook 00's slider: moving it rewrites its label (what the browser test waits for).
    ipywidgets = pytest.importorskip("ipywidgets")
    box = doctor.slider_check(ipywidgets)
    label, slider = box.children
    assert "drag this slider" in label.value
    slider.value = 7
    assert label.value == "ok  widgets: the kernel saw the slider move to 7."
