"""Forward solves: accuracy against exact solutions, convergence orders, time direction."""

import math

import pytest
import torch

import neuralode_helpers as nh
from neuralode_helpers.solvers import SCIPY_METHODS

F64 = torch.float64

FIXED = {"euler": ({"step_size": 1e-4}, 1e-3), "rk4": ({"step_size": 1e-2}, 1e-8)}


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5", *SCIPY_METHODS])
def test_linear_system_matches_matrix_exponential(method, linear_problem):
    A, z0, t = linear_problem
    options, tol = FIXED.get(method, (None, 1e-6))
    zs = nh.odeint(nh.LinearODE(A), z0, t, method=method, options=options, rtol=1e-9,
                   atol=1e-11)
    assert zs.shape == (len(t), *z0.shape)
    assert torch.equal(zs[0], z0)
    exact = nh.linear_solution(A, z0, t)
    assert (zs - exact).abs().max() < tol


@pytest.mark.parametrize("method", ["rk4", "dopri5", "scipy:LSODA"])
def test_decreasing_time_runs_backwards(method, linear_problem):
    A, z0, _ = linear_problem
    t = torch.tensor([1.0, 0.4, -0.5], dtype=F64)
    options = {"step_size": 1e-2} if method == "rk4" else None
    zs = nh.odeint(nh.LinearODE(A), z0, t, method=method, options=options, rtol=1e-9,
                   atol=1e-11)
    assert (zs - nh.linear_solution(A, z0, t)).abs().max() < 1e-7


def test_toy_problem_is_solved_by_the_stated_ode():
    # The seed's curve solves dz/dt = sin t (z - c), not dz/dt = z e^{-cos t}.
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
    if method == "dopri5":
        # Fix the step: no error control (huge tolerances) and a given first step.
        zs = nh.odeint(f, z0, t, method=method, rtol=1e3, atol=1e3,
                       options={"first_step": h, "max_factor": 1.0, "min_factor": 1.0,
                                "safety": 1.0})
    else:
        zs = nh.odeint(f, z0, t, method=method, options={"step_size": h})
    return abs(zs[-1, 0].item() - math.exp(math.sin(2.0)))


@pytest.mark.parametrize("method,order", [("euler", 1), ("rk4", 4), ("dopri5", 5)])
def test_convergence_order(method, order):
    hs = [0.2, 0.1, 0.05] if method != "euler" else [0.02, 0.01, 0.005]
    errs = [_error_at(method, h) for h in hs]
    observed = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    assert all(abs(o - order) < 0.35 for o in observed), observed


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
