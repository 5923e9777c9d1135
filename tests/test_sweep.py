"""benchmarks/sweep_gradients.py: its core function on a tiny case, and its report.

No timing is asserted: only the structure of the result and that the six gradients agree."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_gradients",
                                                  ROOT / "benchmarks" / "sweep_gradients.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_gradients"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(sweep):
    case = sweep.Case(dim=2, width=6, batch=3, rtol=1e-8, n_obs=4, t_end=1.0)
    return case, sweep.measure_case(case, repeats=1)


def test_every_method_measured(sweep, tiny):
    _, res = tiny
    assert list(res) == list(sweep.METHODS) and len(res) == 6
    for name, r in res.items():
        assert {"seconds", "nfe_fwd", "nfe_bwd", "steps", "bytes", "error", "grads"} <= set(r)
        assert r["seconds"] > 0 and r["nfe_fwd"] > 0 and r["steps"] > 0 and r["bytes"] > 0
        # backprop replays its graph; every other method evaluates f again in backward
        assert (r["nfe_bwd"] == 0) == (name == "backprop"), name


def test_six_gradients_agree(tiny):
    _, res = tiny
    grads = [torch.cat([g.reshape(-1) for g in r["grads"]]) for r in res.values()]
    for g in grads[1:]:
        assert ((g - grads[0]).norm() / grads[0].norm()).item() < 1e-5
    for name, r in res.items():
        assert r["error"] < 1e-5, name


def test_exact_gradient_of_the_discretisation(tiny):
    # per-step recomputation replays backprop's steps: the same gradient to round-off
    _, res = tiny
    a, b = (torch.cat([g.reshape(-1) for g in res[n]["grads"]])
            for n in ("backprop", "ckpt-steps (ACA)"))
    assert ((a - b).norm() / a.norm()).item() < 1e-12


def test_backprop_keeps_the_most(tiny):
    _, res = tiny
    assert res["backprop"]["bytes"] == max(r["bytes"] for r in res.values())


def test_report_and_figure(sweep, tiny, tmp_path):
    case, res = tiny
    rows = [("dim", 2, res), ("rtol", 1e-8, res)]
    text = sweep.report(rows, case, 1, 1.0, quick=True)
    assert text.count("| dim | 2 |") == 1 + 6 and "logical cores" in text
    sweep.figure(rows, {"dim": [2], "rtol": [1e-8]}, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
