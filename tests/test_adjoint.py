"""Adjoint gradients against three independent references, in float64:
exact solutions (autograd through matrix_exp), backprop through the solver, and central
finite differences."""

import pytest
import torch
from torch import nn

import neuralode_helpers as nh
from neuralode_helpers.solvers import SCIPY_METHODS

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-12)
METHOD_CASES = {
    "euler": (dict(options={"step_size": 1e-3}), 1e-2),
    "midpoint": (dict(options={"step_size": 1e-3}), 1e-5),
    "rk4": (dict(options={"step_size": 1e-2}), 1e-7),
    "adaptive_heun": (dict(rtol=1e-5, atol=1e-7), 1e-2),  # 2nd order: keep it quick
    "bosh3": (dict(rtol=1e-8, atol=1e-10), 1e-5),
    "dopri5": (TIGHT, 1e-7),
    "tsit5": (TIGHT, 1e-7),
    **{m: (dict(rtol=1e-10, atol=1e-12), 2e-6) for m in SCIPY_METHODS},
    "scipy:RK23": (dict(rtol=1e-8, atol=1e-10), 2e-5),  # 3rd order: tight tolerances are slow
}


def _exact_grads(A, z0, t, w):
    Ae, z0e, te = (x.detach().clone().requires_grad_() for x in (A, z0, t))
    (nh.linear_solution(Ae, z0e, te) * w).sum().backward()
    return Ae.grad, z0e.grad, te.grad


def _adjoint_grads(A, z0, t, w, **kw):
    model = nh.LinearODE(A)
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    zs = nh.odeint_adjoint(model, z0a, ta, **kw)
    (zs * w).sum().backward()
    return model.A.grad, z0a.grad, ta.grad


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("method", list(METHOD_CASES))
def test_adjoint_matches_exact_gradients(method, linear_problem):
    """Batch of 3, five observation times, a loss on all of them: dL/dA, dL/dz0, dL/dt."""
    A, z0, t = linear_problem
    kw, tol = METHOD_CASES[method]
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    got = _adjoint_grads(A, z0, t, w, method=method, **kw)
    for g, e in zip(got, _exact_grads(A, z0, t, w)):
        assert _rel(g, e) < tol


@pytest.mark.parametrize("method", ["rk4", "dopri5", "scipy:LSODA"])
def test_decreasing_time(method, linear_problem):
    A, z0, _ = linear_problem
    t = torch.tensor([1.5, 1.0, 0.2, -0.4], dtype=F64)
    kw, tol = METHOD_CASES[method]
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    got = _adjoint_grads(A, z0, t, w, method=method, **kw)
    for g, e in zip(got, _exact_grads(A, z0, t, w)):
        assert _rel(g, e) < tol


class Tanh(nn.Module):
    """A small nonlinear, time-dependent field: f = W2 tanh(W1 z + b1 + t u) (float64)."""

    def __init__(self, d=2, h=8):
        super().__init__()
        self.l1 = nn.Linear(d, h).double()
        self.l2 = nn.Linear(h, d).double()
        self.u = nn.Parameter(torch.randn(h, dtype=F64))

    def forward(self, t, z):
        return self.l2(torch.tanh(self.l1(z) + t * self.u))


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5"])
def test_adjoint_matches_backprop_through_solver(method):
    # For a fixed step grid the discretise-then-optimise and optimise-then-discretise
    # gradients agree to the discretisation error; tight settings make that small.
    torch.manual_seed(1)
    f = Tanh()
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    kw, tol = METHOD_CASES[method]
    w = torch.randn(len(t), *z0.shape, dtype=F64)

    def grads(solver):
        f.zero_grad()
        z0r, tr = z0.clone().requires_grad_(), t.clone().requires_grad_()
        (solver(f, z0r, tr, method=method, **kw) * w).sum().backward()
        return [z0r.grad, tr.grad] + [p.grad.clone() for p in f.parameters()]

    for a, b in zip(grads(nh.odeint_adjoint), grads(nh.odeint)):
        assert _rel(a, b) < tol


@pytest.mark.parametrize("method", ["dopri5", "scipy:LSODA"])
def test_adjoint_matches_finite_differences(method):
    torch.manual_seed(2)
    f = Tanh()
    z0 = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([0.1, 0.6, 1.3], dtype=F64)

    def loss(z0_, t_):
        return nh.odeint_adjoint(f, z0_, t_, method=method, **TIGHT).pow(2).sum()

    z0r, tr = z0.clone().requires_grad_(), t.clone().requires_grad_()
    loss(z0r, tr).backward()
    eps = 1e-5
    with torch.no_grad():
        for x, g in ((z0, z0r.grad), (t, tr.grad)):
            fd = torch.zeros_like(x)
            for i in range(x.numel()):
                d = torch.zeros_like(x).view(-1)
                d[i] = eps
                d = d.view_as(x)
                args_p = (z0 + d, t) if x is z0 else (z0, t + d)
                args_m = (z0 - d, t) if x is z0 else (z0, t - d)
                fd.view(-1)[i] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
            assert _rel(g, fd) < 1e-5
    # Parameters: compare the derivative along one random direction in parameter space.
    f.zero_grad()
    loss(z0, t).backward()
    direction = [torch.randn_like(q) for q in f.parameters()]
    analytic = sum((q.grad * d).sum() for q, d in zip(f.parameters(), direction))
    with torch.no_grad():
        for q, d in zip(f.parameters(), direction):
            q.add_(eps * d)
        lp = loss(z0, t)
        for q, d in zip(f.parameters(), direction):
            q.sub_(2 * eps * d)
        lm = loss(z0, t)
        for q, d in zip(f.parameters(), direction):
            q.add_(eps * d)
    assert abs(analytic.item() - ((lp - lm) / (2 * eps)).item()) < 1e-5 * abs(analytic.item())


def test_gradcheck():
    torch.manual_seed(3)
    W = torch.randn(2, 2, dtype=F64) * 0.5

    def run(z0, t, W):
        return nh.odeint_adjoint(lambda tt, z: torch.tanh(z @ W.T) + tt, z0, t, params=[W],
                                 **TIGHT)

    z0 = torch.randn(2, 2, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64, requires_grad=True)
    Wr = W.clone().requires_grad_()
    assert torch.autograd.gradcheck(run, (z0, t, Wr), atol=1e-6, rtol=1e-5)


def test_plain_callable_needs_params_for_parameter_gradients(linear_problem):
    A, z0, t = linear_problem
    Ar = A.clone().requires_grad_()
    zs = nh.odeint_adjoint(lambda tt, z: z @ Ar.T, z0, t, params=[Ar], **TIGHT)
    zs.sum().backward()
    Ae = A.clone().requires_grad_()
    nh.linear_solution(Ae, z0, t).sum().backward()
    assert _rel(Ar.grad, Ae.grad) < 1e-7


def test_forward_values_equal_odeint(linear_problem):
    A, z0, t = linear_problem
    model = nh.LinearODE(A)
    ours = nh.odeint_adjoint(model, z0, t)
    # The adjoint's forward solve builds no graph, as odeint under no_grad: the same steps
    # (the solver's lean path), bit for bit. odeint building a graph takes the readable path:
    # equal to round-off (tests/test_lean_solver.py).
    with torch.no_grad():
        assert torch.equal(ours, nh.odeint(model, z0, t))
    assert torch.allclose(ours, nh.odeint(model, z0, t), rtol=1e-13, atol=0)


def test_seminorm_saves_backward_steps_at_equal_accuracy():
    torch.manual_seed(4)
    f = Tanh(d=2, h=32)
    z0 = torch.randn(16, 2, dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    ref = None
    results = {}
    for semi in (True, False, "ref"):
        f.zero_grad()
        stats = nh.Stats()
        kw = TIGHT if semi == "ref" else dict(rtol=1e-6, atol=1e-8)
        zs = nh.odeint_adjoint(f, z0, t, seminorm=semi is True, stats=stats, **kw)
        zs.pow(2).sum().backward()
        g = torch.cat([p.grad.reshape(-1) for p in f.parameters()])
        if semi == "ref":
            ref = g
        else:
            results[semi] = (stats.backward.nfe, g)
    assert results[True][0] < results[False][0]
    err_semi = _rel(results[True][1], ref)
    err_full = _rel(results[False][1], ref)
    assert err_semi < 1e-4 and err_full < 1e-4


def test_restore_z_option_gives_same_gradients(linear_problem):
    A, z0, t = linear_problem
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    got = _adjoint_grads(A, z0, t, w, restore_z=True, **TIGHT)
    for g, e in zip(got, _exact_grads(A, z0, t, w)):
        assert _rel(g, e) < 1e-7


def test_backward_stats_are_filled(linear_problem):
    A, z0, t = linear_problem
    stats = nh.Stats()
    nh.odeint_adjoint(nh.LinearODE(A), z0, t, stats=stats).sum().backward()
    assert stats.forward.nfe > 0 and stats.backward.nfe > 0 and stats.backward.n_steps > 0


def test_loss_backward_just_works_for_odenet():
    model = nh.ODENet()
    z0 = torch.ones(8, 1)
    zs = nh.odeint_adjoint(model, z0, torch.linspace(0, 1, 4))
    zs.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_full_norm_is_not_diluted_by_parameter_channels():
    # seminorm=False takes the larger of the RMS norms of [z, a] and of the parameter
    # channels, so it can only be stricter than the seminorm: never fewer steps.
    torch.manual_seed(5)
    f = Tanh(d=2, h=64)
    z0 = torch.randn(8, 2, dtype=F64)
    t = torch.linspace(0, 3, 3, dtype=F64)
    nfe = {}
    for semi in (True, False):
        stats = nh.Stats()
        nh.odeint_adjoint(f, z0, t, seminorm=semi, stats=stats, rtol=1e-5,
                          atol=1e-6).pow(2).sum().backward()
        nfe[semi] = stats.backward.nfe
    assert nfe[False] >= nfe[True]


def test_tuple_state_gradients_match_exact(linear_problem):
    # (z, s) with ds/dt = |z|^2 / 2 in float32 beside z in float64: L = Σ w·z + Σ s(t_i).
    A, z0, t = linear_problem
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    model = nh.LinearODE(A)

    def f(tt, state):
        z, _ = state
        return model(tt, z), (0.5 * (z * z).sum(-1, keepdim=True)).float()

    z0a = z0.clone().requires_grad_()
    s0 = torch.zeros(3, 1, requires_grad=True)
    zs, ss = nh.odeint_adjoint(f, (z0a, s0), t, params=list(model.parameters()), **TIGHT)
    assert ss.dtype == torch.float32 and ss.shape == (len(t), 3, 1)
    ((zs * w).sum() + ss.double().sum()).backward()
    # Reference: the same quantities by autograd through the exact solution.
    Ae, z0e = A.clone().requires_grad_(), z0.clone().requires_grad_()
    fine = torch.linspace(0, 1, 201, dtype=F64)
    loss = (nh.linear_solution(Ae, z0e, t) * w).sum()
    for i in range(1, len(t)):  # s(t_i) = ∫ |z|^2 / 2, Simpson's rule on 200 panels
        tau = t[0] + (t[i] - t[0]) * fine
        q = 0.5 * nh.linear_solution(Ae, z0e, tau).pow(2).sum((1, 2))
        wts = torch.ones(201, dtype=F64)
        wts[1:-1:2], wts[2:-1:2] = 4, 2
        loss = loss + (t[i] - t[0]) / 600 * (wts * q).sum()
    loss.backward()
    assert _rel(model.A.grad, Ae.grad) < 1e-5
    assert _rel(z0a.grad, z0e.grad) < 1e-5
    assert torch.allclose(s0.grad, torch.full((3, 1), float(len(t))))


def test_float32_adjoint_is_accurate_to_float32():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]])
    z0 = torch.ones(4, 2)
    t = torch.linspace(0, 2, 5)
    model = nh.LinearODE(A)
    nh.odeint_adjoint(model, z0, t, rtol=1e-6, atol=1e-7).sum().backward()
    assert model.A.grad.dtype == torch.float32
    exact = _exact_grads(A.double(), z0.double(), t.double(), torch.ones(5, 4, 2, dtype=F64))
    assert _rel(model.A.grad.double(), exact[0]) < 1e-4


def test_single_time_adjoint():
    z0 = torch.randn(3, dtype=F64, requires_grad=True)
    zs = nh.odeint_adjoint(lambda t, z: -z, z0, torch.tensor([0.3], dtype=F64))
    assert zs.shape == (1, 3)
    (2 * zs).sum().backward()
    assert torch.equal(z0.grad, torch.full((3,), 2.0, dtype=F64))



# ---- the backward solve's first step (issue #25, route 3) -----------------------------------
def _first_step_run(**kw):
    torch.manual_seed(3)
    field = nh.ODENet(2, hidden=(16, 16), activation=nn.Tanh, time_dependent=False).double()
    z = torch.randn(8, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 6, dtype=F64)
    stats = nh.Stats()
    solve = nh.odeint_adjoint if kw.pop("adjoint", True) else nh.odeint
    ys = solve(field, z, t, stats=stats, **kw)
    (ys * torch.linspace(-1, 1, ys.numel(), dtype=F64).view(ys.shape)).sum().backward()
    grads = torch.cat([z.grad.reshape(-1)] + [p.grad.reshape(-1) for p in field.parameters()])
    return grads, stats


def test_backward_starts_with_the_forward_proposed_step(monkeypatch):
    """The backward solve starts with the step the forward proposed at its end: fewer
    evaluations than selecting a first step, and the same gradient to the tolerance."""
    import neuralode_helpers.adjoint as adjoint_module

    tol = dict(rtol=1e-6, atol=1e-8)
    carried, stats_carried = _first_step_run(**tol)
    real = adjoint_module.solve
    monkeypatch.setattr(adjoint_module, "solve",
                        lambda *a, carry=None, **k: real(*a, **k))  # no carry: selection
    selected, stats_selected = _first_step_run(**tol)
    monkeypatch.undo()
    reference, _ = _first_step_run(adjoint=False, rtol=1e-11, atol=1e-13)
    assert stats_carried.forward.nfe == stats_selected.forward.nfe
    assert stats_carried.backward.nfe < stats_selected.backward.nfe
    for g in (carried, selected):
        assert _rel(g, reference) < 1e-4
    # adjoint_options["first_step"] overrides the carried step.
    tiny, stats_tiny = _first_step_run(adjoint_options={"first_step": 1e-7}, **tol)
    assert stats_tiny.backward.n_steps > stats_carried.backward.n_steps
    assert _rel(tiny, reference) < 1e-4
