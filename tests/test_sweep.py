"""neuralode_helpers/sweep.py (the gradient-method sweep) and its command line,
benchmarks/sweep_gradients.py: the core function on a tiny case, the interleaved timing, the
distinct points, the report, and the committed report shipped as package data.

No timing is asserted: only the structure of the result and that the six gradients agree."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from neuralode_helpers import sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    case = sweep.Case(dim=2, width=6, batch=3, rtol=1e-8, n_obs=4, t_end=1.0)
    return case, sweep.measure_case(case, repeats=1)


def test_every_method_measured(tiny):
    _, res = tiny
    assert list(res) == list(sweep.METHODS) and len(res) == 6
    for name, r in res.items():
        assert {"seconds", "wall_seconds", "cpu_share", "nfe_fwd", "nfe_bwd", "steps", "bytes",
                "error", "grads"} <= set(r)
        assert r["seconds"] > 0 and r["nfe_fwd"] > 0 and r["steps"] > 0 and r["bytes"] > 0
        assert 0 < r["cpu_share"] <= 1.5
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


def test_methods_are_timed_interleaved(monkeypatch):
    # after the reference and one untimed run per method, each round times every method
    # once, the order rotated by one method per round
    calls = []
    loss = sweep._loss

    def spy(name, *args):
        calls.append(name)
        return loss(name, *args)

    monkeypatch.setattr(sweep, "_loss", spy)
    case = sweep.Case(dim=2, width=4, batch=2, rtol=1e-4, n_obs=3, t_end=0.5)
    sweep.measure_case(case, repeats=3)
    names = list(sweep.METHODS)
    assert calls[1:7] == names
    timed = calls[7:]
    assert timed == names + names[1:] + names[:1] + names[2:] + names[:2]


def test_thirteen_distinct_points():
    points = sweep.distinct_points(sweep.BASE, sweep.FACTORS)
    assert sum(map(len, sweep.FACTORS.values())) == 16
    assert len(points) == 13 and len({case for _, case in points}) == 13
    assert points[0] == ("base", sweep.BASE)


def test_a_busy_point_is_measured_again(monkeypatch):
    shares = iter([0.3, 0.6, 0.95])
    measured = []

    def fake(case, repeats):
        measured.append(case)
        return {"backprop": {"cpu_share": next(shares)}}

    monkeypatch.setattr(sweep, "measure_case", fake)
    rows = sweep.sweep(sweep.QUICK_BASE, {}, repeats=1, retries=1, progress=False)
    assert len(measured) == 2 and rows[0][2]["backprop"]["cpu_share"] == 0.6


def test_report_and_figure(tiny, tmp_path):
    case, res = tiny
    quiet = {name: dict(r, cpu_share=1.0) for name, r in res.items()}
    busy = {name: dict(r, cpu_share=0.5) for name, r in res.items()}
    other = replace(case, dim=3)
    rows = [("base", case, quiet), ("dim = 3", other, busy)]
    text = sweep.report(rows, case, 1, 1.0, "a machine")
    assert text.count("| base |") == 1 + 6 and text.count("| dim = 3 |") == 1 + 6
    assert "2 distinct points" in text and "shared 2-core machine" in text
    assert "marked ⚠ (dim = 3)" in text and "| 0.50 ⚠ |" in text
    sweep.figure(rows, case, {"dim": [2, 3]}, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_the_committed_report_ships_with_the_package():
    text = sweep.committed_report()
    assert text == (ROOT / "benchmarks" / "sweep_latest.md").read_text(encoding="utf-8")
    assert "13 distinct points" in text and "shared 2-core machine" in text
    rows = sweep.committed_rows()
    assert len(rows) == 13 * 6
    assert {r["method"] for r in rows} == set(sweep.METHODS)
    assert len({r["point"] for r in rows}) == 13


def test_the_command_line_wraps_the_package():
    spec = importlib.util.spec_from_file_location("sweep_gradients",
                                                  ROOT / "benchmarks" / "sweep_gradients.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_gradients"] = module
    spec.loader.exec_module(module)
    assert module.sweep is sweep.sweep and module.report is sweep.report
    assert module.PACKAGE_DATA == ROOT / "neuralode_helpers" / "data"
