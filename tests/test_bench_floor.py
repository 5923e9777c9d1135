"""benchmarks/bench_floor.py: its hand-written field and VJP are the field and its VJP, and its
counts of operations and VJPs are what a backprop gradient does. No timings are asserted."""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench_floor():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_floor",
                                                      ROOT / "benchmarks" / "bench_floor.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_hand_written_field_and_vjp_match_autograd():
    floor_mod = _bench_floor()
    field, z0, _, _ = floor_mod.bench.make_problem()
    a = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    floor = floor_mod.Floor(field.net, z0, a)
    assert floor.check(field.net) < 1e-5  # float32: round-off only
    # and the check can fail: a wrong weight gives a large difference
    with torch.no_grad():
        floor.w2t.mul_(1.1)
    assert floor.check(field.net) > 1e-3


def test_count_ops_counts_one_vjp_per_evaluation_with_a_graph():
    floor_mod = _bench_floor()
    bench = floor_mod.bench
    field, z0, t, target = bench.make_problem()
    field.nfe = 0

    def grad():
        z = z0.clone().requires_grad_(True)
        ys = floor_mod.odeint(field, z, t, rtol=bench.RTOL, atol=bench.ATOL)
        bench.loss_fn(ys, target).backward()

    n_ops, n_vjps = floor_mod.count_ops(grad)
    # every evaluation but the one that chooses the first step (no graph) gets its VJP
    assert n_vjps == field.nfe - 1 > 10
    assert n_ops > 10 * n_vjps
