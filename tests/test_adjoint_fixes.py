"""Regression tests for gradients the adjoint used to get silently wrong (issue #20), each
against an exact answer: closed forms, `torch.linalg.matrix_exp`, or backprop."""

import math

import pytest
import torch
from torch import nn

import neuralode_helpers as nh

F64 = torch.float64


class Forced(nn.Module):
    """dz/dt = -z + θ sin(ωt): the forcing reaches the gradient only through θ."""

    def __init__(self, omega):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(1.0, dtype=F64))
        self.omega = omega

    def forward(self, t, z):
        return -z + self.theta * torch.sin(self.omega * t)


def forced_exact(omega, T=10.0):
    # z(T) = e^{-T} z0 + θ ∫_0^T e^{-(T-s)} sin(ωs) ds, so dz(T)/dθ is that integral.
    w = omega
    return (math.sin(w * T) - w * math.cos(w * T) + w * math.exp(-T)) / (1 + w * w)


@pytest.mark.parametrize("adjoint", ["backsolve", "interpolated", "quadrature"])
@pytest.mark.parametrize("omega", [20.0, 50.0])
def test_forced_problem_every_adjoint(adjoint, omega):
    # Before the fix: interpolated and quadrature gave -7.4e-3 / -7.9e-3 (wrong sign) at
    # ω = 50, off by 4.6 % and 1.5 % at ω = 20.
    model = Forced(omega)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    z = nh.odeint_adjoint(model, torch.ones(1, dtype=F64), t, rtol=1e-6, atol=1e-9,
                          adjoint=adjoint)
    z[-1].sum().backward()
    exact = forced_exact(omega)
    assert abs(model.theta.grad.item() - exact) / abs(exact) < 1e-4


class Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T


STIFF = torch.tensor([[-1.0, 0.5], [0.3, -40.0]], dtype=F64)


def _exact_dA(A, z0, t):
    A = A.clone().requires_grad_()
    zs = torch.stack([torch.linalg.matrix_exp(A * (ti - t[0])) @ z0 for ti in t])
    zs.sum().backward()
    return A.grad


@pytest.mark.parametrize("times", [[0.0, 2.0], [0.0, 10.0], torch.linspace(0, 2, 5).tolist()])
@pytest.mark.parametrize("restore_z", [True, False])
def test_mildly_stiff_backsolve_recovers(times, restore_z):
    # Before the fix: dL/dA00 = 5.4e21 on [0, 2] (exact -0.363 for this loss), 3e156 on
    # [0, 10], 30 % off with five observation times.
    z0 = torch.ones(2, dtype=F64)
    t = torch.tensor(times, dtype=F64)
    model, stats = Linear(STIFF), nh.Stats()
    nh.odeint_adjoint(model, z0, t, rtol=1e-6, atol=1e-9, restore_z=restore_z,
                      stats=stats).sum().backward()
    exact = _exact_dA(STIFF, z0, t)
    assert ((model.A.grad - exact).norm() / exact.norm()).item() < 1e-4


def test_mildly_stiff_backsolve_raise_and_ignore():
    z0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    with pytest.raises(nh.SolverError, match="adjoint's backward solve.*diverged.*interpolated"):
        nh.odeint_adjoint(Linear(STIFF), z0, t, rtol=1e-6, atol=1e-9,
                          on_divergence="raise").sum().backward()
    model = Linear(STIFF)
    nh.odeint_adjoint(model, z0, t, rtol=1e-6, atol=1e-9,
                      on_divergence="ignore").sum().backward()
    assert model.A.grad.abs().max() > 1e10  # the unguarded algorithm, as asked


def test_recovery_counts_its_work():
    z0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    plain, recovered = nh.Stats(), nh.Stats()
    nh.odeint_adjoint(Linear(STIFF), z0, t, rtol=1e-6, atol=1e-9, stats=plain,
                      adjoint="interpolated").sum().backward()
    nh.odeint_adjoint(Linear(STIFF), z0, t, rtol=1e-6, atol=1e-9,
                      stats=recovered).sum().backward()
    # The second forward solve is counted, and so is the abandoned backsolve's work.
    assert recovered.forward.nfe >= 2 * plain.forward.nfe - 1
    assert recovered.backward.nfe > plain.backward.nfe


def test_tuple_state_custom_adjoint_norm_every_adjoint():
    # Before the fix, a callable adjoint_options["norm"] crashed with the interpolated and
    # quadrature adjoints (split_with_sizes): their backward state is not [z, a, a_θ].
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.square().mean().sqrt() if p.numel() else 0.0 for p in parts)

    for adjoint in ("backsolve", "interpolated", "quadrature"):
        model = Linear(torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=F64))
        z0, t = torch.ones(3, 2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64)
        seen.clear()
        nh.odeint_adjoint(model, z0, t, rtol=1e-9, atol=1e-11, adjoint=adjoint,
                          adjoint_options={"norm": norm}).sum().backward()
        assert seen and seen[-1] == ((3, 2), (3, 2), (4,))
        exact = torch.stack([_exact_dA(model.A.detach(), z, t) for z in z0]).sum(0)
        assert ((model.A.grad - exact).norm() / exact.norm()).item() < 1e-6


def test_backward_solve_errors_say_so():
    # A field that blows up only when solved backwards with its adjoint channels.
    class Blows(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t, z):
            return -self.k * z

    with pytest.raises(nh.SolverError, match="the adjoint's backward solve"):
        nh.odeint_adjoint(Blows(), torch.ones(1, dtype=F64),
                          torch.tensor([0.0, 1.0], dtype=F64), adjoint_method="dopri5",
                          adjoint_options={"max_num_steps": 1}).sum().backward()


def test_single_time_still_checks_arguments():
    model = Linear(STIFF)
    t1 = torch.zeros(1, dtype=F64)
    z0 = torch.ones(2, dtype=F64)
    with pytest.raises(TypeError, match="restore_z must be True or False"):
        nh.odeint_adjoint(model, z0, t1, restore_z="bogus")
    # One meaning per keyword: checkpoint= is odeint's (graph keeping), not odeint_adjoint's.
    for value in (True, False, "steps"):
        with pytest.raises(TypeError, match="takes restore_z=True/False .* not checkpoint="):
            nh.odeint_adjoint(model, z0, t1, checkpoint=value)
    with pytest.raises(ValueError, match="adjoint must be"):
        nh.odeint_adjoint(model, z0, t1, adjoint="bogus")
    with pytest.raises(ValueError, match="on_divergence must be"):
        nh.odeint_adjoint(model, z0, t1, on_divergence="bogus")
    with pytest.raises(ValueError, match="unknown adjoint_method"):
        nh.odeint_adjoint(model, z0, t1, adjoint_method="bogus")
    with pytest.raises(ValueError, match="adjoint_rtol"):
        nh.odeint_adjoint(model, z0, t1, adjoint_rtol=-1.0)
    assert nh.odeint_adjoint(model, z0, t1).shape == (1, 2)


def test_second_derivatives_are_refused_clearly():
    model = Linear(STIFF)
    z = nh.odeint_adjoint(model, torch.ones(2, dtype=F64), torch.tensor([0.0, 0.1], dtype=F64))
    with pytest.raises(RuntimeError, match="does not give second derivatives.*odeint"):
        torch.autograd.grad(z.sum(), [model.A], create_graph=True)


@pytest.mark.parametrize("seed", [0, 2])
def test_rnode_backward_norm_follows_the_forward_channels(seed):
    # The forward norm of RNODE leaves the regulariser channels out; the backward norm must
    # too. Before the fix the backward solve counted them (seed 0: 303 evaluations against
    # 255 unregularised, seed 2: 309 against 279), and the reconstruction check would see
    # the uncontrolled channels as a divergence; now it takes the unregularised steps.
    torch.manual_seed(seed)
    model = nh.ODENet().double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # a field with some dynamics, as after training
    t0 = torch.linspace(0, 8, 16, dtype=F64)
    counts = {}
    for name, reg in (("plain", None), ("rnode", nh.RNODE(kinetic=0.01, jacobian=0.01))):
        stats = nh.Stats()
        eps = None if reg is None else reg.probes((16, 1), dtype=F64)
        mse, k, b = nh.regularised_window_loss(model, t0, 0.0, regulariser=reg, eps=eps,
                                               n_obs=3, window=3.0, rtol=1e-6, atol=1e-8,
                                               stats=stats)
        loss = mse if reg is None else mse + 0.01 * (k + b)
        model.zero_grad()
        loss.backward()
        counts[name] = (stats.forward.nfe, stats.backward.nfe)
    assert counts["rnode"][0] == counts["plain"][0]
    assert counts["rnode"][1] <= 1.05 * counts["plain"][1] + 6


def test_initial_step_survives_an_overflowing_norm():
    # A field so large that the RMS of its scaled value overflows (a model blown up by a huge
    # learning rate): the first step used to be 0 and divide by zero.
    from neuralode_helpers.solvers.controller import ErrorNorm, initial_step

    norm = ErrorNorm(1e-6, 1e-8)
    y0 = torch.ones(3, dtype=F64)
    f0 = torch.full((3,), 1e300, dtype=F64)
    h = initial_step(lambda t, z: f0, torch.tensor(0.0, dtype=F64), y0, f0, 5, norm, 1.0)
    assert math.isfinite(h) and 0 < h <= 1.0
