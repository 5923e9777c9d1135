r"""Check my set-up: one screen that says what works, before the first lesson.

From a terminal, in the course's environment::

    python -m neuralode_helpers.doctor          # exit status 0 when every check passes

or in a notebook (notebook 00's second code cell), ``%run -m neuralode_helpers.doctor`` or
``doctor.show()``, which also draw a slider: the one thing this module cannot check for itself
is that JupyterLab's page renders widgets.

Each check gives ``ok``, ``warn`` (works, but read the note) or ``FAIL`` (the series will not
run as it is) and one line of detail: Python, torch (its version within the range the course
supports, and its build), numpy (and whether it works with that torch), the package, the
scientific packages, JupyterLab and ipywidgets, and a small solve with its gradient checked
against the exact answer, timed (it should take well under 2 seconds).
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
import sys
import time
from dataclasses import dataclass

# The course's requirements (pyproject.toml, the Makefile's PY_MIN, TORCH_OLDEST and
# TORCH_NEWEST; tests/test_doctor.py keeps them in step).
PY_MIN = (3, 11)
TORCH_OLDEST = "2.2.2"
TORCH_NEWEST = "2.13.0"
SOLVE_BUDGET_S = 2.0

__all__ = ["Check", "check_all", "report", "show", "main"]


@dataclass
class Check:
    status: str  # "ok", "warn" or "FAIL"
    name: str
    detail: str


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``; leading numbers only."""
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_python(version_info=None) -> Check:
    v = tuple(version_info or sys.version_info)[:3]
    text = ".".join(str(x) for x in v)
    if v[:2] < PY_MIN:
        return Check("FAIL", "python", f"{text}: the series needs Python "
                     f"{PY_MIN[0]}.{PY_MIN[1]} or newer (README: Troubleshooting)")
    return Check("ok", "python", f"{text} ({sys.executable})")


def check_torch(torch_module=None) -> Check:
    try:
        torch = torch_module or importlib.import_module("torch")
    except Exception as error:  # an ImportError, or a broken install's OSError
        return Check("FAIL", "torch", f"cannot import torch: {error} (README: The torch download)")
    version = torch.__version__
    builds = ["CPU"]
    if getattr(torch.version, "cuda", None):
        builds.append(f"CUDA {torch.version.cuda}"
                      + (" (a GPU answers)" if torch.cuda.is_available() else " (no GPU found)"))
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and mps.is_available():
        builds.append("Apple GPU (MPS)")
    detail = f"{version}, build: {', '.join(builds)}"
    if _version_tuple(version) < _version_tuple(TORCH_OLDEST):
        return Check("FAIL", "torch", f"{detail}: the course needs torch {TORCH_OLDEST} or newer")
    if _version_tuple(version) > _version_tuple(TORCH_NEWEST):
        return Check("warn", "torch", f"{detail}: newer than the newest tested ({TORCH_NEWEST}); "
                     "it should work")
    return Check("ok", "torch", f"{detail} (tested: {TORCH_OLDEST} to {TORCH_NEWEST})")


def check_numpy(torch_module=None, numpy_module=None) -> Check:
    try:
        np = numpy_module or importlib.import_module("numpy")
    except Exception as error:
        return Check("FAIL", "numpy", f"cannot import numpy: {error}")
    try:
        torch = torch_module or importlib.import_module("torch")
    except Exception:
        return Check("warn", "numpy", f"{np.__version__} (torch missing: not checked with it)")
    if _version_tuple(np.__version__) >= (2,) and _version_tuple(torch.__version__) < (2, 3):
        return Check("FAIL", "numpy", f"{np.__version__} with torch {torch.__version__}: torch "
                     "older than 2.3 needs numpy 1 (pip install \"numpy<2\")")
    try:
        back = torch.from_numpy(np.arange(3.0)).numpy()
        assert back.tolist() == [0.0, 1.0, 2.0]
    except Exception as error:
        return Check("FAIL", "numpy", f"{np.__version__}: torch and numpy do not exchange arrays "
                     f"({type(error).__name__}: {error})")
    return Check("ok", "numpy", f"{np.__version__}, exchanges arrays with torch")


def check_package() -> Check:
    try:
        nh = importlib.import_module("neuralode_helpers")
    except Exception as error:
        return Check("FAIL", "neuralode_helpers", f"cannot import it: {error} (README: "
                     "Troubleshooting, 'No module named neuralode_helpers')")
    missing = [name for name in nh.__all__ if not hasattr(nh, name)]
    if missing:
        return Check("FAIL", "neuralode_helpers", f"incomplete, missing {missing}")
    where = getattr(nh, "__file__", None) or "?"
    return Check("ok", "neuralode_helpers", f"{nh.__version__} ({where})")


def check_distribution(name: str, purpose: str, needed: bool = True) -> Check:
    version = _dist_version(name)
    if version is None:
        status = "FAIL" if needed else "warn"
        return Check(status, name, f"not installed ({purpose}): pip install {name}")
    return Check("ok", name, f"{version} ({purpose})")


def check_solve(budget_s: float = SOLVE_BUDGET_S) -> Check:
    """A small solve and its adjoint gradient, against the exact answer, timed."""
    try:
        import torch

        from neuralode_helpers import LinearODE, odeint_adjoint
        from neuralode_helpers.problems import linear_solution

        A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
        z0 = torch.tensor([[1.0, 0.0], [0.5, -0.5]], dtype=torch.float64)
        t = torch.linspace(0, 2, 5, dtype=torch.float64)

        def solve_and_gradient():
            field = LinearODE(A)
            zs = odeint_adjoint(field, z0, t, rtol=1e-6, atol=1e-8)
            zs.square().sum().backward()
            return zs.detach(), field.A.grad

        # The first call pays torch's one-time start-up (loading kernels): timed apart.
        start = time.perf_counter()
        solve_and_gradient()
        first = time.perf_counter() - start
        start = time.perf_counter()
        zs, grad = solve_and_gradient()
        elapsed = time.perf_counter() - start
        exact_A = A.clone().requires_grad_(True)
        linear_solution(exact_A, z0, t).square().sum().backward()
        z_error = (zs - linear_solution(A, z0, t)).abs().max().item()
        g_error = (grad - exact_A.grad).abs().max().item()
    except Exception as error:
        return Check("FAIL", "solve", f"{type(error).__name__}: {error}")
    detail = (f"adjoint solve and gradient in {elapsed:.2f} s (first call {first:.2f} s); "
              f"errors against the exact answer: z {z_error:.1e}, dL/dA {g_error:.1e}")
    if not (z_error < 1e-4 and g_error < 1e-3):
        return Check("FAIL", "solve", detail + " (too large: something is broken)")
    if elapsed > budget_s:
        return Check("warn", "solve", detail + f" (over {budget_s:g} s: a slow or busy machine; "
                     "the notebooks will take longer than the README says)")
    return Check("ok", "solve", detail)


def check_all(solve: bool = True) -> list[Check]:
    checks = [
        check_python(),
        check_torch(),
        check_numpy(),
        check_package(),
        check_distribution("scipy", "solvers as black boxes"),
        check_distribution("matplotlib", "every figure"),
        check_distribution("scikit-learn", "notebook 07's digits"),
        check_distribution("tqdm", "progress bars"),
        check_distribution("jupyterlab", "the notebooks' editor"),
        check_distribution("ipywidgets", "sliders, kernel side"),
        check_distribution("jupyterlab_widgets", "sliders, JupyterLab side"),
    ]
    if solve:
        checks.append(check_solve())
    return checks


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<5}{c.name:<{width + 2}}{c.detail}" for c in checks]
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        lines.append(f"Not ready: {', '.join(failed)} (README: Troubleshooting).")
    else:
        lines.append("Ready: everything the series needs works here.")
    return "\n".join(lines)


def _slider_reply(value: int) -> str:
    """The label's text once the kernel has seen the slider move to ``value``."""
    return f"ok  widgets: the kernel saw the slider move to {value}."


def slider_check(ipywidgets):
    """A label over a slider; moving the slider rewrites the label from the kernel's side.

    The reply comes from the kernel, so a changed label shows that both directions work: the
    page sent the move, and the kernel's answer came back."""
    label = ipywidgets.Label("Widgets: drag this slider. If you see text instead of a "
                             "slider, see README: Troubleshooting, 'Widgets do not render'.")
    slider = ipywidgets.IntSlider(value=3, min=0, max=10)
    slider.observe(lambda change: setattr(label, "value", _slider_reply(change["new"])),
                   names="value")
    return ipywidgets.VBox([label, slider])


def show() -> list[Check]:
    """For a notebook: print the report and draw a slider (it must appear as a slider)."""
    checks = check_all()
    print(report(checks))
    try:
        import ipywidgets
        from IPython.display import display

        display(slider_check(ipywidgets))
    except Exception as error:  # no ipywidgets, or not in a notebook
        print(f"(no slider: {type(error).__name__}: {error})")
    return checks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    checks = check_all(solve="--no-solve" not in argv)
    print(report(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _in_a_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "ipykernel" in sys.modules


if __name__ == "__main__":
    # A terminal: the report and an exit status. A notebook (``%run -m
    # neuralode_helpers.doctor``, notebook 00): the report and the slider, no exit.
    if _in_a_notebook():
        show()
    else:
        sys.exit(main())
