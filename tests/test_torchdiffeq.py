"""A drop-in for torchdiffeq's common calls: the same code with only the import changed gives
the same answers within tolerance (torchdiffeq is a test-only dependency)."""

import pytest
import torch
from torch import nn

import neuralode_helpers as nh

torchdiffeq = pytest.importorskip("torchdiffeq", reason="pip install torchdiffeq")

F64 = torch.float64


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()

    def forward(self, t, z):
        return self.net(z) * torch.cos(t)


def _run(odeint, f, z0, t, w, **kw):
    f.zero_grad()
    z0r, tr = z0.clone().requires_grad_(), t.clone().requires_grad_()
    zs = odeint(f, z0r, tr, **kw)
    (zs * w).sum().backward()
    return [zs.detach(), z0r.grad, tr.grad] + [p.grad.clone() for p in f.parameters()]


@pytest.fixture
def problem():
    torch.manual_seed(0)
    z0 = torch.randn(64, 2, dtype=F64)
    t = torch.linspace(0, 2, 6, dtype=F64)
    return Field(), z0, t, torch.randn(len(t), 64, 2, dtype=F64)


def test_values_and_gradients_agree_with_torchdiffeq(problem):
    f, z0, t, w = problem
    kw = dict(rtol=1e-9, atol=1e-11)
    ours = _run(nh.odeint_adjoint, f, z0, t, w, **kw)
    theirs = _run(torchdiffeq.odeint_adjoint, f, z0, t, w, **kw)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
def test_adaptive_methods_and_their_options(problem, method):
    f, z0, t, w = problem
    # Low-order methods need many steps at tight tolerances: keep them quick.
    tol = {"dopri5": (1e-9, 1e-11), "bosh3": (1e-7, 1e-9), "adaptive_heun": (1e-5, 1e-7)}
    rtol, atol = tol[method]
    agree = {"dopri5": 1e-4, "bosh3": 1e-3, "adaptive_heun": 1e-2}[method]
    opts = dict(first_step=0.01, max_num_steps=100_000, safety=0.9, ifactor=5.0, dfactor=0.3)
    kw = dict(method=method, rtol=rtol, atol=atol, options=opts,
              adjoint_params=tuple(f.parameters()),
              adjoint_options={"norm": "seminorm"})
    ours = _run(nh.odeint_adjoint, f, z0, t, w, **kw)
    theirs = _run(torchdiffeq.odeint_adjoint, f, z0, t, w, **kw)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=agree, atol=agree * 1e-2)


@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_fixed_grid_without_step_size_is_the_grid_of_t(problem, method):
    f, z0, t, w = problem
    with torch.no_grad():
        ours = nh.odeint(f, z0, t, method=method)
        theirs = torchdiffeq.odeint(f, z0, t, method=method)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_rk4_with_step_size(problem):
    # torchdiffeq's rk4 is Kutta's 3/8 rule on a grid from t0; ours is the classic RK4 with a
    # whole number of steps per interval: both 4th order, equal to ~h^4.
    f, z0, t, _ = problem
    with torch.no_grad():
        ours = nh.odeint(f, z0, t, method="rk4", options={"step_size": 0.01})
        theirs = torchdiffeq.odeint(f, z0, t, method="rk4", options={"step_size": 0.01})
    assert torch.allclose(ours, theirs, rtol=1e-7, atol=1e-8)


def test_tuple_state_single_time_and_mixed_dtypes():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]])

    def f(t, state):
        z, logp = state
        return z @ A.T, -A.trace() * torch.ones_like(logp)

    z0, logp0 = torch.randn(5, 2), torch.zeros(5, 1)
    t = torch.linspace(0, 1, 4, dtype=F64)  # float64 times with a float32 state
    ours = nh.odeint(f, (z0, logp0), t)
    theirs = torchdiffeq.odeint(f, (z0, logp0), t)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    one = torch.tensor([0.5])
    assert torch.equal(nh.odeint(f, (z0, logp0), one)[0], torchdiffeq.odeint(f, (z0, logp0),
                                                                             one)[0])


def test_tuple_state_adjoint(problem):
    f, z0, t, _ = problem

    def g(tt, state):
        z, s = state
        return f(tt, z), (z * z).sum(-1, keepdim=True)

    grads = []
    for odeint in (nh.odeint_adjoint, torchdiffeq.odeint_adjoint):
        f.zero_grad()
        z0r = z0.clone().requires_grad_()
        zs, ss = odeint(g, (z0r, torch.zeros(64, 1, dtype=F64)), t, rtol=1e-9, atol=1e-11,
                        adjoint_params=tuple(f.parameters()))
        (zs.sum() + ss[-1].sum()).backward()
        grads.append([z0r.grad] + [p.grad.clone() for p in f.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_scipy_solver_spelling_and_custom_norm(problem):
    f, z0, t, _ = problem
    with torch.no_grad():
        ours = nh.odeint(f, z0, t, method="scipy_solver", options={"solver": "LSODA"},
                         rtol=1e-9, atol=1e-11)
        theirs = torchdiffeq.odeint(f, z0, t, method="scipy_solver",
                                    options={"solver": "LSODA"}, rtol=1e-9, atol=1e-11)
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-8)
        # A max norm at default tolerances: both within tolerance of a tight solution.
        ref = nh.odeint(f, z0, t, rtol=1e-11, atol=1e-13)
        max_norm = lambda x: x.abs().max()  # noqa: E731
        for odeint in (nh.odeint, torchdiffeq.odeint):
            assert (odeint(f, z0, t, options={"norm": max_norm}) - ref).abs().max() < 1e-6
