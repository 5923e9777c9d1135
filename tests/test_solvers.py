"""Forward solves: accuracy against exact solutions, convergence orders of every method and
of the dense output, time direction, float32, tuple states."""

import math

import pytest
import torch

import neuralode_helpers as nh
from neuralode_helpers.solvers import ADAPTIVE_METHODS, SCIPY_METHODS, TABLEAUS

F64 = torch.float64

FIXED = {"euler": ({"step_size": 1e-4}, 1e-3), "midpoint": ({"step_size": 1e-3}, 1e-5),
         "rk4": ({"step_size": 1e-2}, 1e-8)}
ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4, "adaptive_heun": 2, "bosh3": 3, "dopri5": 5,
          "tsit5": 5}


@pytest.mark.parametrize("method", [*FIXED, *ADAPTIVE_METHODS, *SCIPY_METHODS])
def test_linear_system_matches_matrix_exponential(method, linear_problem):
    A, z0, t = linear_problem
    options, tol = FIXED.get(method, (None, 1e-6))
    # Low-order adaptive methods need very many steps at tight tolerances: keep them quick.
    rtol, atol = {"adaptive_heun": (1e-7, 1e-9), "bosh3": (1e-8, 1e-10)}.get(method,
                                                                              (1e-9, 1e-11))
    with torch.no_grad():  # LinearODE's A is a parameter; scipy refuses to drop its gradient
        zs = nh.odeint(nh.LinearODE(A), z0, t, method=method, options=options, rtol=rtol,
                       atol=atol)
    assert zs.shape == (len(t), *z0.shape)
    assert torch.equal(zs[0], z0)
    exact = nh.linear_solution(A, z0, t)
    assert (zs - exact).abs().max() < tol


@pytest.mark.parametrize("method", ["rk4", "dopri5", "scipy:LSODA"])
def test_decreasing_time_runs_backwards(method, linear_problem):
    A, z0, _ = linear_problem
    t = torch.tensor([1.0, 0.4, -0.5], dtype=F64)
    options = {"step_size": 1e-2} if method == "rk4" else None
    with torch.no_grad():
        zs = nh.odeint(nh.LinearODE(A), z0, t, method=method, options=options, rtol=1e-9,
                       atol=1e-11)
    assert (zs - nh.linear_solution(A, z0, t)).abs().max() < 1e-7


def test_toy_problem_is_solved_by_the_stated_ode():
    # The toy curve solves dz/dt = sin t (z - c), not dz/dt = z e^{-cos t}.
    c = 0.7
    t = torch.linspace(-1, 10, 23, dtype=F64)
    z0 = nh.toy_solution(t[:1], c)
    zs = nh.odeint(lambda tt, z: nh.toy_dynamics(tt, z, c), z0, t, rtol=1e-10, atol=1e-12)
    assert (zs[:, 0] - nh.toy_solution(t, c)).abs().max() < 1e-7
    wrong = nh.odeint(lambda tt, z: z * torch.exp(-torch.cos(tt)), z0, t)
    assert (wrong[:, 0] - nh.toy_solution(t, c)).abs().max() > 1.0


def _error_at(method, h):
    # dz/dt = cos(t) z, z(t) = exp(sin t): nonlinear in t, smooth, closed form.
    f = lambda t, z: torch.cos(t) * z  # noqa: E731
    t = torch.tensor([0.0, 2.0], dtype=F64)
    z0 = torch.ones(1, dtype=F64)
    if method in ADAPTIVE_METHODS:
        # Fix the step: no error control (huge tolerances) and a given first step.
        zs = nh.odeint(f, z0, t, method=method, rtol=1e3, atol=1e3,
                       options={"first_step": h, "ifactor": 1.0, "dfactor": 1.0,
                                "safety": 1.0})
    else:
        zs = nh.odeint(f, z0, t, method=method, options={"step_size": h})
    return abs(zs[-1, 0].item() - math.exp(math.sin(2.0)))


@pytest.mark.parametrize("method,order", list(ORDERS.items()))
def test_convergence_order(method, order):
    hs = {1: [0.02, 0.01, 0.005], 5: [0.1, 0.05, 0.025]}.get(order, [0.2, 0.1, 0.05])
    errs = [_error_at(method, h) for h in hs]
    observed = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    # tsit5's leading error terms are small by design: it approaches 5 from above.
    assert all(order - 0.35 < o < order + 0.75 for o in observed), observed


def test_dense_output_matches_landing_on_each_time(linear_problem):
    # Outputs between steps come from the 4th-order interpolant; with a tight tolerance they
    # agree with the exact solution as well as the step endpoints do.
    A, z0, _ = linear_problem
    t = torch.linspace(0, 3, 200, dtype=F64)
    stats = nh.Stats()
    zs = nh.odeint(nh.LinearODE(A), z0, t, rtol=1e-8, atol=1e-10, stats=stats)
    assert stats.forward.n_steps < 100  # fewer steps than outputs: interpolation was used
    assert (zs - nh.linear_solution(A, z0, t)).abs().max() < 1e-7


def test_stats_count_evaluations(linear_problem):
    A, z0, t = linear_problem
    calls = []

    def f(tt, z):
        calls.append(1)
        return z @ A.T

    stats = nh.Stats()
    nh.odeint(f, z0, t, method="rk4", options={"step_size": 0.1}, stats=stats)
    assert stats.forward.nfe == len(calls) == 4 * stats.forward.n_steps
    stats2 = nh.Stats()
    nh.odeint(f, z0, t, stats=stats2)
    assert stats2.forward.nfe > 0 and stats2.forward.n_steps > 0


def test_backprop_through_dopri5_matches_exact(linear_problem):
    A, z0, t = linear_problem
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    model = nh.LinearODE(A)
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    (nh.odeint(model, z0a, ta, rtol=1e-10, atol=1e-12) * w).sum().backward()
    Ae, z0e, te = (x.clone().requires_grad_() for x in (A, z0, t))
    (nh.linear_solution(Ae, z0e, te) * w).sum().backward()
    assert torch.allclose(model.A.grad, Ae.grad, rtol=1e-6, atol=1e-8)
    assert torch.allclose(z0a.grad, z0e.grad, rtol=1e-6, atol=1e-8)
    assert torch.allclose(ta.grad, te.grad, rtol=1e-6, atol=1e-8)


def test_float32_and_any_state_shape():
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]])
    z0 = torch.randn(4, 3, 2)
    t = torch.linspace(0, 1, 3)
    zs = nh.odeint(nh.LinearODE(A), z0, t, rtol=1e-6, atol=1e-7)
    assert zs.dtype == torch.float32 and zs.shape == (3, 4, 3, 2)
    exact = nh.linear_solution(A.double(), z0.double(), t.double())
    assert (zs.double() - exact).abs().max() < 1e-5


def _dense_error(method, h):
    # One step of size h from 0, outputs at 5 points inside it: the interpolant's error.
    f = lambda t, z: torch.cos(t) * z  # noqa: E731
    t = torch.tensor([0.0, 0.23 * h, 0.5 * h, 0.71 * h, 0.9 * h, h], dtype=F64)
    zs = nh.odeint(f, torch.ones(1, dtype=F64), t, method=method, rtol=1e3, atol=1e3,
                   options={"first_step": h, "ifactor": 1.0, "dfactor": 1.0, "safety": 1.0})
    return (zs[1:-1, 0] - torch.exp(torch.sin(t[1:-1]))).abs().max().item()


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_dense_output_order(method):
    # Local error of the interpolant ~ h^(q+1) for an interpolant of order q: 4 for dopri5
    # and tsit5, 3 (cubic Hermite) for bosh3 and adaptive_heun; adaptive_heun's own solution
    # is only 2nd order, so its local error (h^3) dominates.
    expected = {"dopri5": 5, "tsit5": 5, "bosh3": 4, "adaptive_heun": 3, "fehlberg2": 3,
                "dopri8": 6}[method]
    if TABLEAUS[method].land_on_outputs:
        # dopri8 ends a step on every output time (its quintic interpolant is far less
        # accurate than its steps): nothing is interpolated, the outputs carry the steps' own
        # error. Its dense output's order: test_tableaus_and_checks.py, read from one step.
        assert max(_dense_error(method, h) for h in (0.4, 0.2, 0.1)) < 1e-12
        return
    errs = [_dense_error(method, h) for h in (0.4, 0.2, 0.1)]
    observed = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(o > expected - 0.4 for o in observed), observed


@pytest.mark.parametrize("method", [*FIXED, *ADAPTIVE_METHODS, *SCIPY_METHODS])
def test_f_is_never_evaluated_outside_the_requested_interval(method):
    # A field defined only on [0, 1] (it raises elsewhere) can be solved on [0, 1].
    def f(t, z):
        assert 0.0 <= float(t) <= 1.0, f"f evaluated at t = {float(t)}"
        return torch.sin(3 * t) * z + 1

    t = torch.linspace(0, 1, 4, dtype=F64)
    options = {"step_size": 0.1} if method in FIXED else None
    zs = nh.odeint(f, torch.ones(3, dtype=F64), t, method=method, options=options)
    assert zs.shape == (4, 3) and torch.isfinite(zs).all()


def test_fixed_step_without_step_size_takes_one_step_per_interval():
    t = torch.tensor([0.0, 0.1, 0.3, 0.35], dtype=F64)
    stats = nh.Stats()
    zs = nh.odeint(lambda tt, z: -z, torch.ones(1, dtype=F64), t, method="euler", stats=stats)
    assert stats.forward.n_steps == 3
    expected = torch.cumprod(torch.cat([torch.ones(1, dtype=F64), 1 - torch.diff(t)]), 0)
    assert torch.allclose(zs[:, 0], expected, rtol=0, atol=1e-15)


def test_float32_time_does_not_drift():
    # Many small steps over a long float32 interval: the current time is t0 plus an offset,
    # not a running float32 sum, so the solution at t = 1000 is as good as float32 allows.
    t = torch.tensor([0.0, 1000.0])
    zs = nh.odeint(lambda tt, z: torch.cos(tt).expand_as(z), torch.zeros(1), t,
                   rtol=1e-6, atol=1e-6)
    assert abs(zs[-1, 0].item() - math.sin(1000.0)) < 1e-3


def test_single_time_returns_z0():
    z0 = torch.randn(3, 2, dtype=F64)
    zs = nh.odeint(lambda t, z: -z, z0, torch.tensor([0.5], dtype=F64))
    assert zs.shape == (1, 3, 2) and torch.equal(zs[0], z0)


def test_float64_time_with_float32_state_computes_in_float32():
    zs = nh.odeint(lambda t, z: -z, torch.ones(2), torch.linspace(0, 1, 3, dtype=F64))
    assert zs.dtype == torch.float32
    assert abs(zs[-1, 0].item() - math.exp(-1)) < 1e-6


def test_empty_state_returns_empty_result():
    zs = nh.odeint(lambda t, z: z, torch.zeros(0, 2, dtype=F64), torch.linspace(0, 1, 3,
                                                                           dtype=F64))
    assert zs.shape == (3, 0, 2)


@pytest.mark.parametrize("method", ["rk4", "dopri5", "tsit5", "scipy:LSODA"])
def test_tuple_state_keeps_shapes_and_dtypes(method):
    # dz/dt = A z and d(log p)/dt = -tr A, as a CNF would pass (z, log p).
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.randn(5, 2, dtype=F64)
    logp0 = torch.zeros(5, 1, dtype=torch.float32)

    def f(t, state):
        z, logp = state
        return z @ A.T, torch.full_like(logp, -A.trace().item())

    t = torch.linspace(0, 1, 4, dtype=F64)
    options = {"step_size": 0.01} if method == "rk4" else None
    zs, logps = nh.odeint(f, (z0, logp0), t, method=method, options=options, rtol=1e-9,
                          atol=1e-10)
    assert zs.shape == (4, 5, 2) and zs.dtype == F64
    assert logps.shape == (4, 5, 1) and logps.dtype == torch.float32
    assert (zs - nh.linear_solution(A, z0, t)).abs().max() < 1e-7
    assert torch.allclose(logps[:, 0, 0], (-A.trace() * t).float(), atol=1e-6)
