"""The lean Runge–Kutta path (solvers/rk.py's LeanRK, ErrorNorm.lean): where no graph is
built, the solver combines the stages as matrix products; it must give the readable path's
solutions to round-off, with the same steps, for every method and every way of calling it."""

import pytest
import torch

import neuralode_helpers as nh
from neuralode_helpers.solvers import rk
from neuralode_helpers.solvers.controller import ErrorNorm
from neuralode_helpers.solvers.odeint import solve
from neuralode_helpers.solvers.stats import SolveStats
from neuralode_helpers.solvers.tableaus import TABLEAUS

F64, F32 = torch.float64, torch.float32
FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")
ADAPTIVE = [m for m in TABLEAUS if m not in FIXED]
# Round-off of the two paths after a whole solve, relative to the solution's size.
TOL = {F64: 1e-13, F32: 1e-6}
# Tolerances well above each dtype's round-off (a float32 solve at rtol 1e-6 takes thousands
# of steps of adaptive_heun, whose round-off adds up beyond 1e-6).
RTOL = {F64: 1e-6, F32: 1e-4}


@pytest.fixture
def lean(monkeypatch):
    """Run ``fn`` with the lean path on and off: ``(lean_result, readable_result)``."""

    def both(fn):
        out = []
        for flag in (True, False):
            monkeypatch.setattr(rk, "LEAN", flag)
            out.append(fn())
        return out

    return both


def _field(dtype):
    W = torch.tensor([[0.3, -1.1, 0.4], [0.9, 0.2, -0.5], [-0.4, 0.7, 0.1]], dtype=dtype)

    def f(t, z):
        return torch.tanh(3 * z @ W) + torch.sin(3 * t) * z

    return f


def _z0(dtype):
    return torch.tensor([[0.5, -0.2, 0.8], [-1.0, 0.3, 0.1]], dtype=dtype)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _solve(method, dtype, t, **kw):
    options = {"step_size": 0.05} if method in FIXED else kw.pop("options", {})
    stats = SolveStats()
    with torch.no_grad():
        ys = solve(_field(dtype), _z0(dtype), t, method=method, rtol=RTOL[dtype],
                   atol=RTOL[dtype] / 100, options=options, stats=stats, **kw)
    return ys, (stats.nfe, stats.n_steps, stats.n_rejected)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("method", list(TABLEAUS))
@pytest.mark.parametrize("decreasing", [False, True])
def test_lean_path_gives_the_readable_solution_with_the_same_steps(lean, method, dtype,
                                                                   decreasing):
    t = torch.tensor([0.0, 0.3, 0.35, 1.2, 2.0], dtype=dtype)  # dense outputs in between
    t = t.flip(0) if decreasing else t
    (y_lean, n_lean), (y_read, n_read) = lean(lambda: _solve(method, dtype, t))
    assert _rel(y_lean, y_read) <= _bar(method, dtype)
    if dtype == F64 or method in FIXED:  # float32: a step can flip (see _bar)
        assert n_lean == n_read


def _bar(method, dtype):
    """How far the two paths' solutions may be apart. In float32 an adaptive solve's step
    sizes follow its error estimates, sums of stages that nearly cancel (Σ e_i = 0), whose
    round-off (a few 1e-8 of |k|, different in the two paths) is a visible part of a small
    step's estimate (the first step that initial_step picks: 1e-10). The step sizes then
    differ, and so do the solutions, at the level of the solver's own error: measured up to
    1.8 rtol here. In float64 the same happens a billion times smaller (up to 1.6e-13 for
    dopri8). One step agrees to round-off (test below)."""
    if method in FIXED:
        return TOL[dtype]
    return 10 * RTOL[F32] if dtype == F32 else 1e-12


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_lean_path_lands_and_jumps_as_the_readable_one(lean, method, dtype):
    t = torch.tensor([0.0, 0.4, 0.9, 1.5], dtype=dtype)
    steps = []

    def jump(i, y):
        return y + 0.1 * i  # a jump at every t_i: the first stage is evaluated again

    def on_step(t0, t1, h, y, y1, ks):
        steps.append((t0, t1))

    def run():
        steps.clear()
        ys, counts = _solve(method, dtype, t, callback=jump, on_step=on_step)
        return ys, counts, list(steps)

    (y_lean, n_lean, s_lean), (y_read, n_read, s_read) = lean(run)
    assert _rel(y_lean, y_read) <= _bar(method, dtype)
    if dtype == F64:  # float32: a step can flip (see _bar)
        assert n_lean == n_read
        # The first step (tiny, from initial_step) has an estimate near round-off even in
        # float64: the step sizes after it agree to about 1e-8.
        assert [pytest.approx(s, rel=1e-6) for s in s_lean] == s_read


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_steps_see_the_very_tensors_that_the_field_returned(method):
    # The adjoint's fast path looks the stages up by identity: ks must be f's own outputs.
    returned = set()
    f = _field(F64)

    def field(t, z):
        out = f(t, z)
        returned.add(id(out))
        return out

    seen = []

    def on_step(t0, t1, h, y, y1, ks):
        seen.extend(ks)  # kept alive, so that no id is reused

    options = {"step_size": 0.1} if method == "rk4" else {}
    with torch.no_grad():
        solve(field, _z0(F64), torch.tensor([0.0, 0.5, 1.0], dtype=F64), method=method,
              rtol=1e-6, atol=1e-8, options=options, stats=SolveStats(), on_step=on_step)
    assert seen and all(id(k) in returned for k in seen)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_no_grad_lean_and_grad_readable_agree(dtype):
    # odeint under no_grad takes the lean path; with grad enabled, the readable one.
    f = _field(dtype)
    t = torch.linspace(0, 2, 6, dtype=dtype)
    z0 = _z0(dtype).requires_grad_()
    s_grad, s_lean = nh.Stats(), nh.Stats()
    y_grad = nh.odeint(f, z0, t, rtol=1e-6, atol=1e-8, stats=s_grad)
    with torch.no_grad():
        y_lean = nh.odeint(f, z0, t, rtol=1e-6, atol=1e-8, stats=s_lean)
    assert _rel(y_lean, y_grad.detach()) <= TOL[dtype]
    assert s_grad.forward == s_lean.forward


def test_tuple_state(lean):
    z0 = (torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.5], dtype=F64))

    def f(t, z):
        x, w = z
        return torch.stack([x[1], -x[0]]) * w, -0.3 * w

    def run():
        with torch.no_grad():
            return nh.odeint(f, z0, torch.linspace(0, 3, 5, dtype=F64), rtol=1e-8, atol=1e-10)

    (x_lean, w_lean), (x_read, w_read) = lean(run)
    assert _rel(x_lean, x_read) <= 1e-12 and _rel(w_lean, w_read) <= 1e-12


def test_adjoint_gradient_is_the_same_on_both_paths(lean):
    # The adjoint's forward and backward solves run without a graph: they take the lean path.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 2)).double()
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.linspace(0, 1, 4, dtype=F64)

    def run():
        net.zero_grad()
        stats = nh.Stats()
        ys = nh.odeint_adjoint(lambda tt, z: net(z), z0, t, rtol=1e-7, atol=1e-9,
                               adjoint_params=tuple(net.parameters()), stats=stats)
        ys.square().sum().backward()
        return torch.cat([p.grad.reshape(-1) for p in net.parameters()]), stats

    (g_lean, s_lean), (g_read, s_read) = lean(run)
    assert _rel(g_lean, g_read) <= 1e-12
    assert s_lean.forward == s_read.forward and s_lean.backward == s_read.backward


@pytest.mark.parametrize("segments, n_counted", [(None, None), ([4, 3, 5], 3), ([4, 3, 5], 1),
                                                 ([4, 3, 5], 2), ([12], 1)])
def test_lean_error_norm_is_the_norm(segments, n_counted):
    g = torch.Generator().manual_seed(3)
    err, y0, y1 = (torch.randn(12, generator=g, dtype=F64) for _ in range(3))
    norm = ErrorNorm(1e-3, 1e-5, segments, n_counted)
    expected = norm(err, y0, y1)
    assert norm.lean(err.clone(), y0, y1, y0.shape) == pytest.approx(expected, rel=1e-14)


def test_lean_error_norm_defers_to_a_custom_norm():
    norm = ErrorNorm(1e-3, 1e-5, custom=lambda scaled: scaled.abs().max())
    err, y = torch.tensor([1e-4, -3e-4], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64)
    assert norm.lean(err.clone(), y, y, y.shape) == norm(err, y, y)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("method", list(TABLEAUS))
def test_lean_step_error_and_dense_output_match_the_readable_functions(method, dtype):
    tab = TABLEAUS[method]
    f = _field(dtype)
    eps = torch.finfo(dtype).eps
    y, t = _z0(dtype), torch.tensor(0.2, dtype=dtype)
    for h in (0.15, torch.tensor(-0.15, dtype=dtype)):  # a float, or a landing step's tensor
        y1, ks = rk.rk_step(f, tab, t, h, y)
        stepper = rk.LeanRK(tab)
        y1_lean, ks_lean = stepper.step(f, t, h, y)
        assert _rel(y1_lean, y1) <= 20 * eps
        assert all(_rel(a, b) <= 20 * eps for a, b in zip(ks_lean, ks))
        if tab.e is None:
            continue
        # The estimate is a sum that nearly cancels: its round-off is relative to h |k|.
        err = rk.error_estimate(tab, h, ks).reshape(-1)
        scale = abs(float(h)) * max(k.abs().max() for k in ks) * sum(map(abs, tab.e))
        assert (stepper.error() - err).abs().max() <= 20 * eps * scale
        for theta in (0.0, 0.37, 1.0):
            dense = rk.dense_output(tab, y, ks, h, torch.tensor(theta, dtype=dtype))
            assert _rel(stepper.dense(y, theta), dense) <= 20 * eps


def test_a_solve_with_grad_enabled_keeps_the_readable_path(monkeypatch):
    # Backprop through the solver must be exactly what it was: LeanRK is never built.
    def refuse(*args, **kwargs):
        raise AssertionError("the lean path was taken with a graph being built")

    monkeypatch.setattr(rk.LeanRK, "step", refuse)
    z0 = _z0(F64).requires_grad_()
    nh.odeint(_field(F64), z0, torch.linspace(0, 1, 3, dtype=F64)).sum().backward()
    nh.odeint(_field(F64), z0, torch.linspace(0, 1, 3, dtype=F64), method="rk4",
              options={"step_size": 0.1}).sum().backward()
    nh.odeint(_field(F64), z0, torch.linspace(0, 1, 3, dtype=F64),
              checkpoint="steps").sum().backward()


def test_a_custom_norm_sees_the_state_in_its_shape(lean):
    seen = []

    def norm(scaled):
        seen.append(tuple(scaled.shape))
        return scaled.abs().max()

    def run():
        seen.clear()
        with torch.no_grad():
            ys = nh.odeint(_field(F64), _z0(F64), torch.linspace(0, 1, 3, dtype=F64),
                           rtol=1e-6, atol=1e-8, options={"norm": norm})
        return ys, set(seen)

    (y_lean, s_lean), (y_read, s_read) = lean(run)
    assert s_lean == s_read == {(2, 3)}
    assert _rel(y_lean, y_read) <= 1e-12
