"""Regression tests for the defects the gradient fuzzer (tests/fuzz_gradients.py, issue #20)
found: each one a concrete example with its exact answer, so that it stays fixed.

The exact references are closed forms through ``torch.linalg.matrix_exp`` (float64), as in
the fuzzer: a forced linear system is augmented with the oscillator that generates
sin(ωt), cos(ωt), and the augmented system is linear and autonomous.
"""

import math

import pytest
import torch
from torch import nn

import neuralode_helpers as nh

F64 = torch.float64
F32 = torch.float32


class Linear(nn.Module):
    """dz/dt = A z."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T


class ForcedDecay(nn.Module):
    """dz/dt = -z + θ sin(ωt) (scalar z, learnable θ)."""

    def __init__(self, theta, omega):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=F64))
        self.omega = omega

    def forward(self, t, z):
        return -z + self.theta * torch.sin(self.omega * t)


def exact_forced_decay(theta, omega, z0, T):
    """z(T) and dz(T)/dθ of dz/dt = -z + θ sin(ωt), z(0) = z0, from the matrix exponential of
    [[-1, θ, 0], [0, 0, ω], [0, -ω, 0]] acting on [z, sin ωt, cos ωt]."""
    th = torch.tensor(theta, dtype=F64, requires_grad=True)
    M = torch.zeros(3, 3, dtype=F64)
    M[0, 0], M[1, 2], M[2, 1] = -1.0, omega, -omega
    M = M + torch.zeros(3, 3, dtype=F64).index_put((torch.tensor([0]), torch.tensor([1])),
                                                   th.reshape(1))
    x = torch.linalg.matrix_exp(M * T) @ torch.tensor([z0, 0.0, 1.0], dtype=F64)
    (g,) = torch.autograd.grad(x[0], th)
    return x[0].item(), g.item()


def exact_linear_dA(A, z0, t):
    """dL/dA for L = sum of z(t_i) over every t_i, dz/dt = A z."""
    A = A.clone().requires_grad_()
    zs = torch.stack([torch.linalg.matrix_exp(A * (ti - t[0])) @ z0 for ti in t])
    (g,) = torch.autograd.grad(zs.sum(), A)
    return g


# ---- (1) interpolated and quadrature adjoints on a fast forcing -----------------------------


def test_exact_reference_of_the_forced_problem():
    # dz(T)/dθ = ∫_0^T e^{-(T-s)} sin(ωs) ds in closed form
    T, w = 10.0, 50.0
    closed = (math.sin(w * T) - w * math.cos(w * T) + w * math.exp(-T)) / (1 + w * w)
    assert exact_forced_decay(0.7, w, 1.0, T)[1] == pytest.approx(closed, rel=1e-10)
    assert closed == pytest.approx(1.748e-2, rel=1e-3)


@pytest.mark.parametrize("adjoint", ["interpolated", "quadrature", "backsolve"])
def test_adjoint_on_fast_forcing_has_the_right_sign(adjoint):
    # Found: dL/dθ = -7.4e-3 (interpolated) and -7.9e-3 (quadrature) against the exact
    # +1.748e-2: the wrong sign, at rtol 1e-6.
    theta, omega, T = 0.7, 50.0, 10.0
    _, exact = exact_forced_decay(theta, omega, 1.0, T)
    model = ForcedDecay(theta, omega)
    z0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, T], dtype=F64)
    zs = nh.odeint_adjoint(model, z0, t, rtol=1e-6, atol=1e-8, adjoint=adjoint)
    zs[-1].sum().backward()
    got = model.theta.grad.item()
    assert got == pytest.approx(exact, rel=1e-3), f"dL/dθ = {got:.4g}, exact {exact:.4g}"


# ---- (2) the backsolve adjoint on mildly stiff dynamics ------------------------------------


def test_backsolve_on_mildly_stiff_dynamics():
    # Found: dL/dA00 = 5.4e21 (rtol 1e-6, one interval [0, 2]; exact 0.278 for this loss):
    # the backward reconstruction of z along the fast eigenvalue -40 grows like e^{80}.
    # Either the right gradient or an error that says so; never the silent 5.4e21.
    A = torch.tensor([[-1.0, 0.5], [0.3, -40.0]], dtype=F64)
    z0 = torch.ones(2, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    exact = exact_linear_dA(A, z0, t)
    model = Linear(A)
    try:
        nh.odeint_adjoint(model, z0, t, rtol=1e-6, atol=1e-9).sum().backward()
    except nh.SolverError as e:
        assert "backward" in str(e) or "adjoint" in str(e)
        return
    err = ((model.A.grad - exact).norm() / exact.norm()).item()
    assert err < 1e-4, f"dL/dA = {model.A.grad.tolist()}, exact {exact.tolist()}"


# ---- (3) a callable norm of a tuple state ---------------------------------------------------


class TupleField(nn.Module):
    """The damped rotation of a 3-vector split as (z[:1], z[1:])."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.3, 2.0, 0.0], [-2.0, -0.3, 0.1],
                                            [0.0, 0.0, -1.0]], dtype=F64))

    def forward(self, t, z):
        out = torch.cat(z, -1) @ self.A.T
        return out[..., :1], out[..., 1:]


@pytest.mark.parametrize("checkpoint", [None, "steps", "observations"])
def test_callable_norm_of_a_tuple_state_receives_the_tuple(checkpoint):
    # Found: options={"norm": f} with a tuple state calls f with one flat vector (6,) instead
    # of a tuple shaped like the state, as torchdiffeq does (and as a norm written for the
    # tuple expects).
    seen = []

    def norm(scaled):
        seen.append(scaled)
        if not isinstance(scaled, tuple):
            raise AssertionError(f"norm got {type(scaled).__name__} of shape "
                                 f"{tuple(scaled.shape)}, not a tuple")
        return max(x.pow(2).mean().sqrt() for x in scaled)

    z0 = (torch.tensor([[1.0], [0.5]], dtype=F64), torch.tensor([[0.2, -0.4], [1.0, 0.3]],
                                                                  dtype=F64))
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    out = nh.odeint(TupleField(), z0, t, rtol=1e-7, atol=1e-9,
                    options={"norm": norm}, checkpoint=checkpoint)
    assert seen
    assert all([tuple(p.shape) for p in s] == [(2, 1), (2, 2)] for s in seen)
    A = TupleField().A.detach()
    exact = torch.linalg.matrix_exp(A * 1.5) @ torch.cat(z0, -1).T
    assert torch.allclose(torch.cat([o[-1] for o in out], -1), exact.T, rtol=1e-5, atol=1e-7)


# ---- (4) max_num_steps is per interval of t --------------------------------------------------


def test_max_num_steps_counts_each_interval():
    # Found: max_num_steps limits the whole solve, not each interval of t (torchdiffeq's
    # meaning: the steps to reach the next output time), so adding observation times makes a
    # solve that fits within the limit fail.
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)    # uniform step sizes
    z0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 10.0, 11, dtype=F64)
    stats = nh.Stats()
    nh.odeint(Linear(A), z0, t, rtol=1e-8, atol=1e-10, stats=stats)
    total = stats.forward.n_steps + stats.forward.n_rejected
    per_interval = []
    for i in range(1, len(t)):
        s = nh.Stats()
        nh.odeint(Linear(A), z0, t[i - 1:i + 1], rtol=1e-8, atol=1e-10, stats=s)
        per_interval.append(s.forward.n_steps + s.forward.n_rejected)
    limit = max(per_interval) * 2
    assert limit < total, (limit, total)    # the whole solve needs more than the limit
    out = nh.odeint(Linear(A), z0, t, rtol=1e-8, atol=1e-10,
                    options={"max_num_steps": limit})
    exact = torch.stack([torch.linalg.matrix_exp(A * ti) @ z0 for ti in t])
    assert torch.allclose(out, exact, rtol=1e-6, atol=1e-8)


# ---- (5) float32 times with step_size ---------------------------------------------------------


@pytest.mark.parametrize("times", [[0.0, 0.3], [1.0, 1.7], [0.0, 0.1, 0.3, 0.6]])
def test_float32_times_take_the_whole_number_of_steps(times):
    # Found: float32 t = [0, 0.3] with step_size 0.1 takes 4 steps, not 3: 0.3 in float32 is
    # 0.30000001, and ceil(0.30000001 / 0.1) = 4. The outputs then differ from the same
    # solve in float64 by more than float32 round-off (a different discretisation).
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]])
    z0 = torch.tensor([1.0, 0.5])
    stats32, stats64 = nh.Stats(), nh.Stats()
    t32 = torch.tensor(times, dtype=F32)
    out32 = nh.odeint(Linear(A), z0, t32, method="euler", options={"step_size": 0.1},
                      stats=stats32)
    out64 = nh.odeint(Linear(A.to(F64)), z0.to(F64), torch.tensor(times, dtype=F64),
                      method="euler",
                      options={"step_size": 0.1}, stats=stats64)
    n_expected = sum(round((b - a) / 0.1) for a, b in zip(times, times[1:]))
    assert stats64.forward.n_steps == n_expected
    assert stats32.forward.n_steps == n_expected
    assert torch.allclose(out32.to(F64), out64, rtol=1e-5, atol=1e-6)


# ---- (6) float32: the error norm overflows on a fast field ---------------------------------


@pytest.mark.parametrize("rate", [1e18, 1e20])
def test_float32_error_norm_does_not_overflow(rate):
    # Found by the fuzzer (an interpolated adjoint in float32 whose backward solve starts
    # with a large derivative): the RMS of the scaled error, (f / (atol + rtol |z|))², is
    # inf in float32 once f / (atol + rtol |z|) > 1.8e19, the first step size comes out as
    # 0.01 * d0 / inf = 0, and initial_step divides by it: ZeroDivisionError. The solution,
    # z(t) = 1 + rate * t, is finite in float32, and every Runge-Kutta method is exact on it.
    z0 = torch.ones(1, dtype=F32)
    t = torch.tensor([0.0, 1.0], dtype=F32)
    out = nh.odeint(lambda t, z: torch.full_like(z, rate), z0, t, rtol=1e-3, atol=1e-3)
    assert out[-1].item() == pytest.approx(1.0 + rate, rel=1e-5)


# ---- (7) the backsolve's divergence check at loose tolerances ------------------------------


@pytest.mark.parametrize("A, z0, t, w, method, rtol, atol", [
    ([[-0.897, 0.0], [0.0, -25.699]], [0.02, 0.08], [1.0, 1.94], [0.81, -1.1],
     "dopri5", 1e-3, 1e-5),
    ([[-1.304, 0.0], [0.458, -25.98]], [-0.51, -0.65], [0.0, 1.38], [-1.62, -0.18],
     "scipy:LSODA", 1e-4, 1e-6),
])
def test_backsolve_divergence_is_caught_at_loose_tolerance(A, z0, t, w, method, rtol, atol):
    # Found by the fuzzer (backsolve, mildly stiff): with dopri5 at rtol 1e-3, dL/dA01 =
    # 1650 against the exact 0.0011; with LSODA at rtol 1e-4, 7.8e6 against 0.0105.
    # Rebuilding the fast component (rate -26) backwards grows the forward solve's error by
    # e^24 to e^36, yet the divergence check lets it through: it measures |z - z_i| in units
    # of atol + rtol * max(|z_i|, |z|), and with the rebuilt |z| in the scale the ratio can
    # never exceed about 1/rtol -- at most 1e3 or 1e4, never above DIVERGENCE_FACTOR = 1e4.
    # Wanted: the right gradient (recovered), or a SolverError (scipy cannot recover).
    A, z0, t, w = (torch.tensor(x, dtype=F64) for x in (A, z0, t, w))
    Ae = A.clone().requires_grad_()
    ze = torch.linalg.matrix_exp(Ae * (t[1] - t[0])) @ z0
    (exact,) = torch.autograd.grad((w * ze).sum(), Ae)
    model = Linear(A)
    try:
        zs = nh.odeint_adjoint(model, z0, t, rtol=rtol, atol=atol, method=method)
        (w * zs[-1]).sum().backward()
    except nh.SolverError as e:
        assert "diverged" in str(e)
        return
    err = (model.A.grad - exact).abs().max().item()
    assert err < 0.1 * exact.abs().max().item(), \
        f"dL/dA = {model.A.grad.tolist()}, exact {exact.tolist()}"


# ---- (8) odeint_adjoint: a callable norm of a tuple state -----------------------------------


@pytest.mark.parametrize("adjoint", ["backsolve", "interpolated", "quadrature"])
def test_adjoint_forward_norm_of_a_tuple_state_receives_the_tuple(adjoint):
    # Found by the fuzzer after (3) was fixed for odeint: odeint_adjoint's forward solve still
    # calls options["norm"] with one flat vector for a tuple state.
    seen = []

    def norm(scaled):
        seen.append(scaled)
        if not isinstance(scaled, tuple):
            raise AssertionError(f"norm got {type(scaled).__name__} of shape "
                                 f"{tuple(scaled.shape)}, not a tuple")
        return max(x.pow(2).mean().sqrt() for x in scaled)

    z0 = (torch.tensor([1.0], dtype=F64), torch.tensor([0.2, -0.4], dtype=F64))
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    field = TupleField()
    out = nh.odeint_adjoint(field, z0, t, rtol=1e-7, atol=1e-9, options={"norm": norm},
                            adjoint=adjoint)
    (out[0].sum() + out[1].sum()).backward()
    assert seen and all([tuple(p.shape) for p in s] == [(1,), (2,)] for s in seen)
    A = field.A.detach().clone().requires_grad_()
    ze = torch.stack([torch.linalg.matrix_exp(A * ti) @ torch.cat(z0) for ti in t])
    (exact,) = torch.autograd.grad(ze.sum(), A)
    assert torch.allclose(field.A.grad, exact, rtol=1e-5, atol=1e-7)


# ---- (9) dopri8 between its steps -------------------------------------------------------------


def test_dopri8_outputs_between_steps_meet_the_tolerance():
    # Found by the fuzzer: dopri8 takes few, long steps and gives the outputs inside a step
    # by cubic Hermite interpolation (3rd order), so at rtol 1e-8 the outputs between steps
    # are off by ~80 rtol (and dL/dt by ~500 rtol) while its step ends are within 0.05 rtol;
    # dopri5, with its 4th-order dense output, stays within 0.3 rtol on the same problem.
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=F64)
    z0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.tensor([0.0, 0.23, 0.61, 1.37, 1.9, 3.1, 4.0], dtype=F64)
    exact = torch.stack([torch.linalg.matrix_exp(A * ti) @ z0 for ti in t])
    errors = {}
    for method in ("dopri5", "dopri8"):
        out = nh.odeint(Linear(A), z0, t, rtol=1e-8, atol=1e-11, method=method)
        errors[method] = ((out.detach() - exact).abs().max() / exact.abs().max()).item() / 1e-8
    assert errors["dopri8"] < 10, errors


# ---- (10) fehlberg2 on a fast decay ------------------------------------------------------------


@pytest.mark.parametrize("rtol", [1e-2, 1e-3])
def test_fehlberg2_on_a_fast_decay(rtol):
    # Found by the fuzzer (an interpolated adjoint whose backward solve used fehlberg2 at
    # adjoint_rtol 1e-2 on a mildly stiff problem: dL/dz0 = -7148 against the exact -3.6).
    # Underneath: dz/dt = -56.8 z, z(0) = 1 gives z(1) = 1.8e9 (exact 2e-25) at rtol 1e-2.
    # fehlberg2's error estimate, h (k3 - k1) / 512, is 1/512 of the size of what it
    # should measure, so steps far outside the stability region pass as accurate. Wanted: an
    # answer within the tolerance's reach (|z(1)| well below 1e-3), or an error.
    out = nh.odeint(lambda t, z: -56.8 * z, torch.tensor([1.0], dtype=F64),
                    torch.tensor([0.0, 1.0], dtype=F64), method="fehlberg2", rtol=rtol,
                    atol=1e-6)
    assert abs(out[-1].item()) < 1e-3, f"z(1) = {out[-1].item():.3g}, exact 2e-25"


# ---- (11) backprop through dopri8: dL/dt at observation times inside a step ------------------


class Forced(nn.Module):
    """dz/dt = A z + θ sin(ωt) b."""

    def __init__(self, A, b, theta, omega):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A, dtype=F64))
        self.theta = nn.Parameter(torch.tensor(theta, dtype=F64))
        self.register_buffer("b", torch.tensor(b, dtype=F64))
        self.omega = omega

    def forward(self, t, z):
        return z @ self.A.T + self.theta * torch.sin(self.omega * t) * self.b


def exact_forced_dt(A, b, theta, omega, z0, t, w):
    """dL/dt for L = Σ_i w_i · z(t_i), dz/dt = A z + θ sin(ωt) b, by autograd through the
    matrix exponential of the system augmented with [sin ωt, cos ωt]."""
    D = len(A)
    t = torch.tensor(t, dtype=F64, requires_grad=True)
    M = torch.zeros(D + 2, D + 2, dtype=F64)
    M[:D, :D] = torch.tensor(A, dtype=F64)
    M[:D, D] = theta * torch.tensor(b, dtype=F64)
    M[D, D + 1], M[D + 1, D] = omega, -omega
    x0 = torch.cat([torch.tensor(z0, dtype=F64),
                    torch.stack([torch.sin(omega * t[0]), torch.cos(omega * t[0])])])
    zs = torch.stack([torch.linalg.matrix_exp(M * (ti - t[0])) @ x0 for ti in t])[:, :D]
    (g,) = torch.autograd.grad((torch.tensor(w, dtype=F64) * zs).sum(), t)
    return g


def test_dopri8_backprop_time_gradient_inside_a_step():
    # Found by the fuzzer (backprop, forced at ω = 36.3, rtol 1e-8): dL/dt =
    # [3.51, -2.965, 0.241, -4.423, -2.882] against the exact
    # [-0.522, -3.716, 0.912, -0.311, -2.882] -- right at the last time (a step end), wrong
    # at the observation times inside a step, while z itself was right to 1e-12.
    A = [[-2.154, -0.074, -0.008833333333333334], [0.0545, -2.155, 0.10733333333333334],
         [0.0, 0.021666666666666667, -2.315]]
    b, theta, omega = [1.27, -1.3, 0.04], -1.5, 36.29
    z0 = [0.29, 0.58, 2.36]
    times = [0.0, 0.220446404, 0.705428493, 1.080187379, 1.10223202]
    w = [[-0.24, 1.64, -1.1], [0.81, -0.73, 0.33], [-1.22, -1.24, -0.39], [0.41, 0.27, -0.01],
         [0.12, -2.41, -0.42]]
    exact = exact_forced_dt(A, b, theta, omega, z0, times, w)
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    zs = nh.odeint(Forced(A, b, theta, omega), torch.tensor(z0, dtype=F64), t, rtol=1e-8,
                   atol=1e-9, method="dopri8")
    (torch.tensor(w, dtype=F64) * zs).sum().backward()
    assert torch.allclose(t.grad, exact, rtol=1e-5, atol=1e-6), (t.grad.tolist(),
                                                                 exact.tolist())
