"""Regression tests for the inputs people really pass: each returned a silently wrong
gradient, crashed inside autograd or spun before; each now gives the right answer or a clear
error (float64 unless the case is about float32)."""

import pytest
import torch
from torch import nn

import neuralode_helpers as nh
from neuralode_helpers import training

F64 = torch.float64


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _exact_dA(A, z0, t, w=None):
    Ae = A.clone().requires_grad_()
    zs = nh.linear_solution(Ae, z0, t)
    (zs.sum() if w is None else (zs * w).sum()).backward()
    return Ae.grad


# ---- 1. contracting dynamics: right by default ----------------------------------------------

def test_contracting_dynamics_default_gradient_is_right():
    A = torch.tensor([[-8.0, 1.0], [0.0, -0.5]], dtype=F64)
    z0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0, 4, 9, dtype=F64)
    exact = _exact_dA(A, z0, t)
    model = nh.LinearODE(A)
    nh.odeint_adjoint(model, z0, t).sum().backward()
    assert _rel(model.A.grad, exact) < 1e-6
    # Turned off, the backward reconstruction of z diverges (what notebook 04 shows), and
    # the divergence is noticed: recovered from (default), raised, or (only when asked
    # for, to show the failure) returned as it is.
    model = nh.LinearODE(A)
    nh.odeint_adjoint(model, z0, t, restore_z=False).sum().backward()
    assert _rel(model.A.grad, exact) < 1e-6
    model = nh.LinearODE(A)
    with pytest.raises(nh.SolverError, match="backward reconstruction of z diverged"):
        nh.odeint_adjoint(model, z0, t, restore_z=False,
                          on_divergence="raise").sum().backward()
    model = nh.LinearODE(A)
    nh.odeint_adjoint(model, z0, t, restore_z=False, on_divergence="ignore").sum().backward()
    assert _rel(model.A.grad, exact) > 0.1


# ---- 2. a closure over a tensor that requires grad ------------------------------------------

def test_closure_without_params_is_a_clear_error():
    W = torch.randn(2, 2, dtype=F64, requires_grad=True)
    z0 = torch.ones(3, 2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"not in params \(shapes \(2, 2\)\).*params=\["):
        nh.odeint_adjoint(lambda tt, z: torch.tanh(z @ W), z0, t)
    # With params it works, and under no_grad nothing needs checking.
    nh.odeint_adjoint(lambda tt, z: torch.tanh(z @ W), z0, t, params=[W]).sum().backward()
    assert W.grad is not None and W.grad.abs().sum() > 0
    with torch.no_grad():
        nh.odeint_adjoint(lambda tt, z: torch.tanh(z @ W), z0, t)


def test_module_with_a_closure_over_an_outside_tensor_is_a_clear_error():
    scale = torch.tensor(2.0, dtype=F64, requires_grad=True)

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2).double()

        def forward(self, t, z):
            return scale * self.lin(z)

    with pytest.raises(ValueError, match="not in params"):
        nh.odeint_adjoint(Field(), torch.ones(2, dtype=F64), torch.linspace(0, 1, 2, dtype=F64))


# ---- 3. odeint with a scipy method on a module whose parameters require grad ---------------

def test_scipy_odeint_refuses_to_drop_parameter_gradients():
    model = nh.LinearODE(torch.tensor([[-1.0, 0.5], [0.0, -2.0]], dtype=F64))
    z0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(ValueError, match="gradient would be silently lost.*odeint_adjoint"):
        nh.odeint(model, z0, t, method="scipy:LSODA")
    with torch.no_grad():
        assert nh.odeint(model, z0, t, method="scipy:LSODA").shape == (3, 2)


# ---- 4. scipy's backward error control does not depend on the number of parameters ---------

class LinearWithUnused(nn.Module):
    """dz/dt = A z, plus ``n_unused`` parameters that the field never uses."""

    def __init__(self, A, n_unused):
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.unused = nn.Parameter(torch.zeros(n_unused, dtype=F64))

    def forward(self, t, z):
        return z @ self.A.T


@pytest.mark.parametrize("method", ["scipy:RK45", "scipy:LSODA"])
def test_scipy_seminorm_is_not_diluted_by_parameter_channels(method):
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=F64)
    t = torch.linspace(0, 2, 3, dtype=F64)
    exact = _exact_dA(A, z0, t)
    errors = {}
    for n_unused in (0, 10_000):
        model = LinearWithUnused(A, n_unused)
        nh.odeint_adjoint(model, z0, t, method=method, rtol=1e-6, atol=1e-8).sum().backward()
        errors[n_unused] = _rel(model.A.grad, exact)
    # Before, 10,000 unused parameters multiplied the error by ~sqrt(N / 2n) = 50.
    assert errors[10_000] < 3 * errors[0] + 1e-9, errors


def test_bdf_backward_jacobian_skips_parameter_channels():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.ones(1, 2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    nfe = {}
    for n_unused in (0, 300):
        stats = nh.Stats()
        model = LinearWithUnused(A, n_unused)
        nh.odeint_adjoint(model, z0, t, method="scipy:BDF", stats=stats).sum().backward()
        nfe[n_unused] = stats.backward.nfe
    # A dense finite-difference Jacobian would cost ~300 evaluations more per Jacobian.
    assert nfe[300] < nfe[0] + 50, nfe


# ---- 5. non-finite at the first point, empty state, NaN weights ----------------------------

@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "rk4", "scipy:RK45"])
def test_field_infinite_at_the_first_point_fails_at_once(method):
    stats = nh.Stats()
    options = {"step_size": 0.1} if method == "rk4" else None
    with pytest.raises(nh.SolverError, match="non-finite|not finite") as info:
        nh.odeint(lambda t, z: z / t, torch.ones(2, dtype=F64),
                  torch.linspace(0, 1, 3, dtype=F64), method=method, options=options,
                  stats=stats)
    assert stats.forward.nfe <= 4
    assert info.value.t_reached == 0.0


def test_empty_state_adjoint():
    z0 = torch.zeros(0, 3, dtype=F64, requires_grad=True)
    zs = nh.odeint_adjoint(lambda t, z: z, z0, torch.linspace(0, 1, 4, dtype=F64))
    assert zs.shape == (4, 0, 3)
    zs.sum().backward()
    assert z0.grad.shape == (0, 3)


def test_training_a_model_with_nan_weights_fails_at_once():
    model = nh.ODENet()
    with torch.no_grad():
        model.net[0].weight.fill_(float("nan"))
    with pytest.raises(nh.SolverError, match="not finite .* at the initial point"):
        nh.train(model, steps=3, progress=False)


# ---- 7, 8, 9. params: not requiring grad, unused, listed twice -----------------------------

def test_params_that_do_not_require_grad_are_skipped():
    W = torch.randn(2, 2, dtype=F64, requires_grad=True)
    frozen = torch.randn(2, dtype=F64)
    z0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    zs = nh.odeint_adjoint(lambda tt, z: torch.tanh(W @ z + frozen), z0, t, params=[W, frozen])
    zs.sum().backward()
    assert W.grad is not None and frozen.grad is None


def test_field_that_depends_on_neither_state_nor_parameters():
    # dz/dt = cos t: z(t) = z0 + sin t - sin t0, so L = Σ_i z(t_i) has closed-form gradients.
    z0 = torch.ones(2, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=F64, requires_grad=True)
    unused = nn.Linear(1, 1).double()
    nh.odeint_adjoint(lambda tt, z: torch.cos(tt).expand(2), z0, t,
                      params=list(unused.parameters())).sum().backward()
    te = t.detach().clone().requires_grad_()
    (z0.detach() + torch.sin(te)[:, None] - torch.sin(te[0])).sum().backward()
    assert torch.allclose(z0.grad, torch.full((2,), 4.0, dtype=F64))
    assert torch.allclose(t.grad, te.grad, atol=1e-8)
    assert all(torch.count_nonzero(p.grad) == 0 for p in unused.parameters())


def test_the_same_tensor_twice_in_params_counts_once():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    Ar = A.clone().requires_grad_()
    nh.odeint_adjoint(lambda tt, z: Ar @ z, z0, t, params=[Ar, Ar]).sum().backward()
    assert _rel(Ar.grad, _exact_dA(A, z0, t)) < 1e-6


def test_params_as_a_single_tensor_or_both_names_is_a_clear_error():
    W = torch.randn(2, 2, dtype=F64, requires_grad=True)
    z0, t = torch.ones(2, dtype=F64), torch.linspace(0, 1, 2, dtype=F64)
    with pytest.raises(TypeError, match="got one tensor"):
        nh.odeint_adjoint(lambda tt, z: W @ z, z0, t, params=W)
    with pytest.raises(ValueError, match="not both"):
        nh.odeint_adjoint(lambda tt, z: W @ z, z0, t, params=[W], adjoint_params=[W])


# ---- 10. smaller ones -----------------------------------------------------------------------

def test_train_checks_the_loss_before_the_optimizer_step(monkeypatch):
    model = nh.ODENet()
    before = [p.detach().clone() for p in model.parameters()]

    def nan_loss(model, *args, **kwargs):
        return sum(p.sum() for p in model.parameters()) * float("nan"), None, None

    monkeypatch.setattr(training, "regularised_window_loss", nan_loss)
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        nh.train(model, steps=3, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("method", ["dopri5", "scipy:RK45", "scipy:LSODA"])
def test_t_reached_is_a_time_the_solver_reached(method):
    with pytest.raises(nh.SolverError) as info:
        nh.odeint(lambda t, z: z * z, torch.ones(1, dtype=F64),
                  torch.tensor([0.0, 2.0], dtype=F64), method=method)
    # z = 1 / (1 - t) blows up at t = 1: no accepted step can lie (much) beyond it.
    assert 0.9 < info.value.t_reached < 1.0001


def test_solver_error_advice_names_the_methods_own_limit():
    with pytest.raises(nh.SolverError) as info:
        nh.odeint(lambda t, z: torch.cos(50 * t) * z, torch.ones(1, dtype=F64),
                  torch.tensor([0.0, 10.0], dtype=F64), method="scipy:RK45",
                  options={"max_nfe": 50})
    assert "options['max_nfe']" in str(info.value) and "max_steps" not in str(info.value)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_step_blow_up_is_an_error_not_nan(method):
    with pytest.raises(nh.SolverError, match="non-finite.*step_size"):
        nh.odeint(lambda t, z: z * z, torch.ones(1, dtype=F64),
                  torch.tensor([0.0, 2.0], dtype=F64), method=method,
                  options={"step_size": 0.01})


def test_other_adjoint_method_does_not_inherit_forward_options():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0, t = torch.ones(2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64)
    model = nh.LinearODE(A)
    nh.odeint_adjoint(model, z0, t, options={"max_num_steps": 1000},
                      adjoint_method="scipy:LSODA").sum().backward()
    assert _rel(model.A.grad, _exact_dA(A, z0, t)) < 1e-4


def test_bad_adjoint_options_name_the_adjoint():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    with pytest.raises(ValueError, match="unknown adjoint_option"):
        nh.odeint_adjoint(nh.LinearODE(A), torch.ones(2, dtype=F64),
                          torch.linspace(0, 1, 2, dtype=F64), adjoint_options={"tol": 1})


# ---- 11. backward steps after landing on an observation time --------------------------------

def test_backward_solve_keeps_its_step_after_landing():
    # Observation times with very short intervals: landing on t_i + 0.001 takes a step of
    # 0.001. Sized from that step, the next few steps were tiny too (up to ~37 evaluations
    # per short interval); keeping the controller's step, each short interval costs one step.
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()
    z0 = torch.randn(16, 2, dtype=F64)
    steps = {}
    for name, times in (("plain", [0.0, 1.0, 2.0, 3.0, 4.0]),
                        ("short", [0.0, 1.0, 1.001, 2.0, 2.001, 3.0, 3.001, 4.0])):
        t = torch.tensor(times, dtype=F64)
        stats = nh.Stats()
        nh.odeint_adjoint(lambda tt, z: f(z), z0, t, params=list(f.parameters()), rtol=1e-6,
                          atol=1e-8, stats=stats).pow(2).sum().backward()
        steps[name] = stats.backward.n_steps
    assert steps["short"] <= steps["plain"] + 3 + 2, steps


def test_scipy_failure_reports_the_last_accepted_time(monkeypatch):
    import numpy as np
    import scipy.integrate

    real_step = scipy.integrate.RK45.step
    calls = []

    def step_then_fail(self):
        calls.append(1)
        if len(calls) > 3:
            raise np.linalg.LinAlgError("singular matrix")
        return real_step(self)

    monkeypatch.setattr(scipy.integrate.RK45, "step", step_then_fail)
    with pytest.raises(nh.SolverError, match="singular matrix") as info:
        nh.odeint(lambda t, z: -z, torch.ones(2, dtype=F64),
                  torch.tensor([0.0, 10.0], dtype=F64), method="scipy:RK45")
    # Three steps were accepted: the error reports where the third one ended, not t0.
    assert info.value.t_reached > 0.0
