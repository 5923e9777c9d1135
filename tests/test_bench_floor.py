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


def _module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_our_rows_field_is_the_peers_field_and_counts_alike():
    """bench_adjoint's rows of ours run on an ODENet with the peers' CountedMLP weights (the
    field issue #25's fast path recognises), NFE from Stats: the same field, the same counts
    on the autograd path, and fast-path-off rows exactly where the package has the switch."""
    bench = _module("bench_adjoint")
    field, z0, t, target = bench.make_problem()
    ours = bench.ours_field(field)
    with torch.no_grad():
        assert torch.equal(ours(t[0], z0), field(t[0], z0))
    for kind, by_counter, by_stats in bench.count_check(field, ours, z0, t, target):
        assert by_counter == by_stats, kind
        assert by_counter[0] > 10
    names = bench.solvers(bench.RTOL, bench.ATOL)
    assert ("ours adjoint, fast path off" in names) == bench.FAST_ADJOINT
    assert ("ours backprop, fast path off" in names) == bench.FAST_ODEINT
    assert (bench.LEAN_OFF in names) == bench.LEAN
    # where the fast path serves train's field, a no-op forward hook turns it off
    assert not (bench.TRAIN_FAST and bench.TRAIN_FAST_WITH_HOOK)
    # the lean RK step's switch is restored after a row that turns it off
    if bench.LEAN:
        before = bench._rk.LEAN
        run = bench.runner("ours", names[bench.LEAN_OFF][2], field, ours, z0, t, target)
        assert run()[3] > 10 and bench._rk.LEAN == before


def test_bench_compile_hand_written_dynamics_match_autograd():
    """bench_compile's F (by hand, one flat tensor) and one dopri5 step of it equal autograd's
    to float32 round-off; its rational tanh is within a few float32 ulp of tanh."""
    mod = _module("bench_compile")
    field, z0, _, _ = mod.bench.make_problem()
    params = list(field.net.parameters())
    w = [p.detach() for p in params]
    a = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    ref = mod.autograd_flat(field.net, params)(z0, a)
    assert mod.reldiff(mod.make_aug()(z0, a, *w), ref) < 1e-6
    assert mod.reldiff(mod.make_aug(mod.rational_tanh)(z0, a, *w), ref) < 1e-5
    x = torch.linspace(-10, 10, 20001)
    assert (mod.rational_tanh(x).double() - torch.tanh(x.double())).abs().max() < 5e-7
    y = torch.cat([z0.reshape(-1), a.reshape(-1), torch.zeros(sum(p.numel() for p in w))])
    k1 = ref
    h = torch.tensor(-0.05)
    n_za = 2 * z0.numel()
    by_hand = mod.make_step(mod.make_aug(), n_za)(y, k1, h, *w)
    auto = mod.make_step(mod.autograd_flat(field.net, params), n_za)(y, k1, h, *w)
    assert mod.reldiff(by_hand[0], auto[0]) < 1e-6
    # the error estimate is a difference of nearly equal sums: round-off shows at 1e-3
    assert abs(by_hand[2].item() - auto[2].item()) < 1e-2 * auto[2].item()
