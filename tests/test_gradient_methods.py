"""The adjoint's three ways to get z(t) and dL/dθ (backsolve, interpolated, quadrature),
each against exact gradients (matrix exponential) in float64, where the backsolve fails, and
what each keeps in memory."""

import pytest
import torch
from torch import nn

import neuralode_helpers as nh

F64 = torch.float64
ADJOINTS = ["backsolve", "interpolated", "quadrature"]
METHODS = {
    "dopri5": (dict(rtol=1e-10, atol=1e-12), 1e-8),
    "tsit5": (dict(rtol=1e-10, atol=1e-12), 1e-8),
    "bosh3": (dict(rtol=1e-8, atol=1e-10), 1e-6),
    "adaptive_heun": (dict(rtol=1e-5, atol=1e-7), 1e-3),  # 2nd order: kept quick
    "rk4": (dict(options={"step_size": 0.01}), 1e-7),
    "midpoint": (dict(options={"step_size": 0.001}), 1e-4),
}


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _exact(A, z0, t, w):
    Ae, z0e, te = (x.clone().requires_grad_() for x in (A, z0, t))
    (nh.linear_solution(Ae, z0e, te) * w).sum().backward()
    return Ae.grad, z0e.grad, te.grad


def _ours(A, z0, t, w, **kw):
    model = nh.LinearODE(A)
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    (nh.odeint_adjoint(model, z0a, ta, **kw) * w).sum().backward()
    return model.A.grad, z0a.grad, ta.grad


@pytest.mark.parametrize("adjoint", ADJOINTS)
@pytest.mark.parametrize("method", list(METHODS))
def test_every_adjoint_matches_exact_gradients(adjoint, method, linear_problem):
    A, z0, t = linear_problem
    kw, tol = METHODS[method]
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    got = _ours(A, z0, t, w, method=method, adjoint=adjoint, **kw)
    for g, e in zip(got, _exact(A, z0, t, w)):
        assert _rel(g, e) < tol


@pytest.mark.parametrize("adjoint", ["interpolated", "quadrature"])
def test_decreasing_time(adjoint, linear_problem):
    A, z0, _ = linear_problem
    t = torch.tensor([1.5, 1.0, 0.2, -0.4], dtype=F64)
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    got = _ours(A, z0, t, w, adjoint=adjoint, rtol=1e-10, atol=1e-12)
    for g, e in zip(got, _exact(A, z0, t, w)):
        assert _rel(g, e) < 1e-8


def test_no_reconstruction_no_failure_on_contracting_dynamics():
    # The backsolve without restore_z rebuilds z backwards and fails; the interpolated and
    # quadrature adjoints read z from the forward pass and are right.
    A = torch.tensor([[-8.0, 1.0], [0.0, -0.5]], dtype=F64)
    z0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0, 4, 9, dtype=F64)
    w = torch.ones(len(t), 2, dtype=F64)
    exact = _exact(A, z0, t, w)[0]
    errors = {adj: _rel(_ours(A, z0, t, w, adjoint=adj, restore_z=False,
                              **({"on_divergence": "ignore"} if adj == "backsolve" else {}))[0],
                        exact)
              for adj in ADJOINTS}
    assert errors["backsolve"] > 0.1
    assert errors["interpolated"] < 1e-6 and errors["quadrature"] < 1e-6


@pytest.mark.parametrize("adjoint", ["interpolated", "quadrature"])
def test_neural_field_matches_backprop(adjoint):
    torch.manual_seed(1)
    f = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def grads(solver, **kw):
        f.zero_grad()
        z0r = z0.clone().requires_grad_()
        solver(lambda tt, z: f(z), z0r, t, rtol=1e-10, atol=1e-12, **kw).pow(2).sum().backward()
        return [z0r.grad] + [p.grad.clone() for p in f.parameters()]

    ours = grads(nh.odeint_adjoint, params=list(f.parameters()), adjoint=adjoint)
    for a, b in zip(ours, grads(nh.odeint)):
        assert _rel(a, b) < 1e-7


@pytest.mark.parametrize("adjoint", ["interpolated", "quadrature"])
def test_float32_tuple_state(adjoint):
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]])
    model = nh.LinearODE(A)

    def f(tt, state):
        z, s = state
        return model(tt, z), z.pow(2).sum(-1, keepdim=True)

    z0 = torch.ones(4, 2, requires_grad=True)
    zs, ss = nh.odeint_adjoint(f, (z0, torch.zeros(4, 1)), torch.linspace(0, 1, 3),
                               params=list(model.parameters()), rtol=1e-6, atol=1e-7,
                               adjoint=adjoint)
    (zs.sum() + ss.sum()).backward()
    assert z0.grad.dtype == torch.float32 and torch.isfinite(model.A.grad).all()


def test_memory_kept_for_backward_grows_with_steps_only_for_the_dense_adjoints():
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.ones(8, 2, dtype=F64)
    t = torch.linspace(0, 2, 3, dtype=F64)
    kept = {}
    for adj in ADJOINTS:
        for h in (0.1, 0.01):
            model = nh.LinearODE(A)
            _, nbytes = nh.saved_tensor_bytes(
                nh.odeint_adjoint, model, z0, t, method="rk4", options={"step_size": h},
                adjoint=adj, exclude=list(model.parameters()))
            kept[adj, h] = nbytes
    assert kept["backsolve", 0.1] == kept["backsolve", 0.01]
    for adj in ("interpolated", "quadrature"):
        assert kept[adj, 0.01] > 5 * kept[adj, 0.1] > 5 * kept["backsolve", 0.1]


def test_bad_adjoint_choices_are_clear_errors(linear_problem):
    A, z0, t = linear_problem
    with pytest.raises(ValueError, match="adjoint must be 'backsolve', 'interpolated'"):
        nh.odeint_adjoint(nh.LinearODE(A), z0, t, adjoint="checkpointed")
    with pytest.raises(ValueError, match="dense output.*use a torch method"):
        nh.odeint_adjoint(nh.LinearODE(A), z0, t, method="scipy:LSODA", adjoint="interpolated")
    with pytest.raises(ValueError, match="torch adjoint_method"):
        nh.odeint_adjoint(nh.LinearODE(A), z0, t, adjoint="quadrature",
                          adjoint_method="scipy:RK45")


# ---- backprop through the solver, with less memory -----------------------------------------

def _field():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    return net, (lambda tt, z: net(z) * torch.cos(tt))


def _backprop_grads(net, f, z0, t, w, solve):
    net.zero_grad()
    z0r, tr = z0.clone().requires_grad_(), t.clone().requires_grad_()
    ys, nbytes = nh.saved_tensor_bytes(solve, f, z0r, tr, exclude=list(net.parameters()))
    (ys * w).sum().backward()
    return [z0r.grad, tr.grad] + [p.grad.clone() for p in net.parameters()], nbytes


@pytest.mark.parametrize("method,kw", [("dopri5", dict(rtol=1e-6, atol=1e-8)),
                                       ("tsit5", dict(rtol=1e-6, atol=1e-8)),
                                       ("bosh3", dict(rtol=1e-5, atol=1e-7)),
                                       ("rk4", dict(options={"step_size": 0.05}))])
def test_per_step_recomputation_equals_plain_backprop(method, kw):
    net, f = _field()
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0, 1.7], dtype=F64)
    w = torch.randn(4, 5, 2, dtype=F64)
    plain, plain_bytes = _backprop_grads(
        net, f, z0, t, w, lambda *a, **k: nh.odeint(*a, method=method, **kw, **k))
    steps, steps_bytes = _backprop_grads(
        net, f, z0, t, w, lambda *a, **k: nh.odeint(*a, method=method, checkpoint="steps",
                                                     **kw, **k))
    for a, b in zip(steps, plain):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert steps_bytes < plain_bytes / 3


def test_checkpointed_backprop_equals_backprop_through_the_same_interval_solves():
    net, f = _field()
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0, 1.7], dtype=F64)
    w = torch.randn(4, 5, 2, dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-8)

    def by_hand(f_, z0_, t_):
        # One solve per interval, each starting with the step size the previous one
        # proposed at its end (as checkpoint="observations" does).
        from neuralode_helpers.solvers import SolveStats, solve

        out, carry, options = [z0_], {}, {}
        for i in range(1, len(t_)):
            out.append(solve(f_, out[-1], t_[i - 1:i + 1], method="dopri5", options=options,
                             stats=SolveStats(), carry=carry, **kw)[-1])
            options = {"first_step": carry["next_step"]}
        return torch.stack(out)

    reference, plain_bytes = _backprop_grads(net, f, z0, t, w, by_hand)
    got, ckpt_bytes = _backprop_grads(
        net, f, z0, t, w, lambda *a: nh.odeint(*a, checkpoint="observations", **kw))
    for a, b in zip(got, reference):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    # Kept: the states at the observation times (and t), not the stages of the steps.
    assert ckpt_bytes <= (len(t) + 1) * z0.numel() * 8 + len(t) * 8 < plain_bytes / 10


@pytest.mark.parametrize("checkpoint", ["steps", "observations"])
def test_checkpointed_backprop_matches_exact_gradients(checkpoint, linear_problem):
    A, z0, t = linear_problem
    w = torch.randn(len(t), *z0.shape, dtype=F64)
    model = nh.LinearODE(A)
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    (nh.odeint(model, z0a, ta, rtol=1e-10, atol=1e-12, checkpoint=checkpoint) * w).sum()\
        .backward()
    for g, e in zip((model.A.grad, z0a.grad, ta.grad), _exact(A, z0, t, w)):
        assert _rel(g, e) < 1e-8


def test_bad_checkpoint_choices_are_clear_errors(linear_problem):
    A, z0, t = linear_problem
    with pytest.raises(ValueError, match="checkpoint must be None, 'observations' or 'steps'"):
        nh.odeint(nh.LinearODE(A), z0, t, checkpoint=True)
    with torch.no_grad(), pytest.raises(ValueError, match="black box"):
        nh.odeint(nh.LinearODE(A), z0, t, method="scipy:LSODA", checkpoint="steps")


@pytest.mark.parametrize("checkpoint", ["steps", "observations"])
def test_recomputation_is_counted(checkpoint):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    calls = [0]

    def f(t, z):
        calls[0] += 1
        return net(z)

    stats = nh.Stats()
    ys = nh.odeint(f, torch.randn(4, 2, dtype=F64), torch.linspace(0, 1, 4, dtype=F64),
                   checkpoint=checkpoint, stats=stats)
    before = stats.forward.nfe
    assert calls[0] == before
    ys.sum().backward()
    assert calls[0] > before and stats.forward.nfe == calls[0]
