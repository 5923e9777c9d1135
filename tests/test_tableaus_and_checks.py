"""The closure check (tensors func depends on that the adjoint would not differentiate), the
Butcher tableaus (consistency, order, gradients) and per-step checkpointing's memory."""

import warnings
from functools import cache
from math import prod

import numpy as np
import pytest
import torch
from torch import nn

import neuralode_helpers as nh
from neuralode_helpers.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, TABLEAUS
from neuralode_helpers.solvers.odeint import solve
from neuralode_helpers.solvers.rk import dense_output, rk_step
from neuralode_helpers.solvers.tableaus import FEHLBERG2_ORDER3_WEIGHTS, ButcherTableau
from neuralode_helpers.solvers.trajectory import Trajectory

F64 = torch.float64
T01 = torch.tensor([0.0, 1.0], dtype=F64)


def _backprop_grads(f, inputs, make):
    """Gradients of sum z(T) by backprop through odeint (tight dopri5), w.r.t. ``inputs``
    as rebuilt by ``make`` from fresh leaves."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    f_, z0, t = make(*leaves)
    nh.odeint(f_, z0, t, rtol=1e-11, atol=1e-13)[-1].sum().backward()
    return [x.grad for x in leaves]


# ---- closure check: tensors sharing storage with z0 or t -------------------------------------

def _case_view_of_param(P):
    """(a) z0 is a view of a parameter vector whose other entry is a rate in f."""
    return (lambda t, z: -P[1] * z), P[:1], T01


def _case_field_uses_z0(z0):
    """(b) f reads the initial state: dz/dt = -z sum(z0)."""
    return (lambda t, z: -z * z0.sum()), z0, T01


def _case_field_uses_t(t):
    """(c) f reads the final time: dz/dt = -z T."""
    return (lambda tt, z: -z * t[-1]), torch.ones(2, dtype=F64), t


CASES = {
    "view_of_param": (_case_view_of_param, torch.tensor([1.0, 0.5], dtype=F64)),
    "field_uses_z0": (_case_field_uses_z0, torch.tensor([1.0, -0.3], dtype=F64)),
    "field_uses_t": (_case_field_uses_t, T01),
}


@pytest.mark.parametrize("case", list(CASES))
def test_closure_sharing_storage_with_inputs_is_refused(case):
    make, x = CASES[case]
    f, z0, t = make(x.clone().requires_grad_())
    with pytest.raises(ValueError, match="not in params"):
        nh.odeint_adjoint(f, z0, t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_closure_sharing_storage_with_inputs_in_params_gets_its_gradient(case):
    make, x = CASES[case]
    leaf = x.clone().requires_grad_()
    f, z0, t = make(leaf)
    nh.odeint_adjoint(f, z0, t, params=[leaf], rtol=1e-10, atol=1e-12)[-1].sum().backward()
    (expected,) = _backprop_grads(None, [x], make)
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-6, atol=1e-9)


def test_view_of_param_gradient_is_exact():
    # z(1) = P0 exp(-P1): dL/dP = (exp(-P1), -P0 exp(-P1)).
    P = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    f, z0, t = _case_view_of_param(P)
    nh.odeint_adjoint(f, z0, t, params=[P], rtol=1e-10, atol=1e-12)[-1].sum().backward()
    e = torch.exp(torch.tensor(-0.5, dtype=F64))
    torch.testing.assert_close(P.grad, torch.stack([e, -e]), rtol=1e-7, atol=1e-10)


def test_field_marking_its_input_as_requiring_grad_passes():
    """A divergence field makes its own input a leaf (z.requires_grad_() on what it is given,
    or z.detach().requires_grad_()): that is func's own business, not a lost closure."""
    lin = nn.Linear(2, 2).double()

    def in_place(t, z):
        z.requires_grad_(True)
        return lin(z)

    def detached(t, z):
        return lin(z.detach().requires_grad_(True))

    for f in (in_place, detached):
        z0 = torch.tensor([[1.0, 0.5]], dtype=F64)
        nh.odeint_adjoint(f, z0, T01, params=list(lin.parameters()))[-1].sum().backward()


# ---- closure check: per-call leaves ----------------------------------------------------------

class PerCallTime(nn.Module):
    """A CNF library's idiom: t is made a fresh leaf on every call, so that the field can
    differentiate with respect to it. Not a closure: nothing holds it between calls."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()

    def forward(self, t, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.tensor(tensor) copies
            t = torch.tensor(t).type_as(y)
        t.requires_grad_(True)
        return self.lin(y) * (1 + 0.1 * t)


def test_per_call_leaf_is_not_a_closure():
    torch.manual_seed(0)
    f = PerCallTime()
    z0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    nh.odeint_adjoint(f, z0, T01, rtol=1e-10, atol=1e-12)[-1].sum().backward()
    got = [p.grad.clone() for p in f.parameters()]
    f.zero_grad()
    nh.odeint(f, z0, T01, rtol=1e-11, atol=1e-13)[-1].sum().backward()
    for g, e in zip(got, (p.grad for p in f.parameters())):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)


def test_real_closure_next_to_per_call_leaf_still_raises():
    f = PerCallTime()
    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)
    z0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    with pytest.raises(ValueError, match=r"1 tensor\(s\)"):
        nh.odeint_adjoint(lambda t, z: scale * f(t, z), z0, T01,
                          params=list(f.parameters()))


# ---- Butcher tableaus ------------------------------------------------------------------------

NEW_METHODS = ("heun2", "heun3", "fehlberg2", "dopri8")


@cache
def _trees(n):
    """Rooted trees with n nodes, a tree being the sorted tuple of its root's subtrees."""
    return tuple(sorted(set(_forests(n - 1)))) if n > 1 else ((),)


@cache
def _forests(m):
    """Multisets of trees with m nodes in all, as sorted tuples."""
    if m == 0:
        return ((),)
    out = set()
    for k in range(1, m + 1):
        for tree in _trees(k):
            for rest in _forests(m - k):
                out.add(tuple(sorted(rest + (tree,))))
    return tuple(sorted(out))


def _order_residuals(tab, b, order, power=None):
    """max over the trees of each order r <= ``order`` of |sum_i b_i Phi_i(tree) - 1/gamma|:
    Phi_i(tree) = prod over subtrees u of sum_j a_ij Phi_j(u); gamma(tree) = |tree| prod
    gamma(u) (Butcher's order conditions). With ``power`` m, b holds the coefficients of
    theta^m in dense-output weights b_i(theta), and the target is 1/gamma for trees of
    order m, else 0 (sum_i b_i(theta) Phi_i = theta^r / gamma at every theta)."""
    s = len(tab.c)
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i, :len(row)] = row

    @cache
    def phi(tree):
        return np.prod([A @ phi(u) for u in tree], axis=0) if tree else np.ones(s)

    def size(tree):
        return 1 + sum(size(u) for u in tree)

    def gamma(tree):
        return size(tree) * prod(gamma(u) for u in tree)

    def target(tree, r):
        if power is None:
            return 1 / gamma(tree)
        return (1 / gamma(tree)) if power == r else 0.0

    return {r: max(abs(float(np.dot(b, phi(tree))) - target(tree, r)) for tree in _trees(r))
            for r in range(1, order + 1)}


def test_rooted_tree_counts():
    assert [len(_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]


def test_method_lists_come_from_the_table():
    assert set(FIXED_STEP_METHODS) | set(ADAPTIVE_METHODS) == set(TABLEAUS)
    assert all(TABLEAUS[m].e is None for m in FIXED_STEP_METHODS)
    assert set(NEW_METHODS) <= set(TABLEAUS)
    assert set(TABLEAUS) <= set(nh.solvers.METHODS)


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_tableau_is_consistent_and_of_its_order(name):
    tab = TABLEAUS[name]
    for ci, row in zip(tab.c, tab.a):
        assert sum(row) == pytest.approx(ci, abs=1e-14) if row else ci == 0.0
    res = _order_residuals(tab, tab.b, tab.order)
    assert all(v < 1e-13 for v in res.values()), res
    if tab.order < 8:
        # and no higher: the order claimed is the order (a sharper claim would be a typo)
        assert _order_residuals(tab, tab.b, tab.order + 1)[tab.order + 1] > 1e-6
    if tab.e is not None:
        assert abs(sum(tab.e)) < 1e-14
        # the embedded solution b - e is one order lower
        b_hat = [bi - ei for bi, ei in zip(tab.b, tab.e)]
        res = _order_residuals(tab, b_hat, tab.order - 1)
        assert all(v < 1e-13 for v in res.values()), res
    if tab.dense is not None:
        # the dense output ends at the step's solution: b_i(1) = b_i
        for row, bi in zip(tab.dense, tab.b):
            assert sum(row) == pytest.approx(bi, abs=1e-14)


def test_fsal_invariant_is_checked_when_a_tableau_is_built():
    ok = dict(c=(0.0, 1.0, 1.0), a=((), (1.0,), (0.5, 0.5)), b=(0.5, 0.5, 0.0))
    ButcherTableau("ok", 2, fsal=True, **ok)
    for bad in (dict(ok, a=((), (1.0,), (0.4, 0.6))),  # last row is not b
                dict(ok, c=(0.0, 1.0, 0.9)),  # last stage not at t + h
                dict(ok, b=(0.5, 0.4, 0.1))):  # the last stage has a weight
        with pytest.raises(ValueError, match="fsal"):
            ButcherTableau("bad", 2, fsal=True, **bad)
    with pytest.raises(ValueError, match="stages"):
        ButcherTableau("bad", 2, c=(0.0, 1.0), a=((),), b=(0.5, 0.5))


def _fixed_error(method, n):
    """|z_N - e^{-1}| for dz/dt = -z, z(0) = 1, after n equal steps to t = 1."""
    zs = nh.odeint(lambda t, z: -z, torch.ones(1, dtype=F64), T01, method=method,
                   options={"step_size": 1.0 / n})
    return abs(zs[-1, 0].item() - np.exp(-1.0))


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_fixed_method_converges_at_its_order(method):
    order = TABLEAUS[method].order
    errs = [_fixed_error(method, n) for n in (8, 16, 32)]
    observed = [np.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(abs(o - order) < 0.25 for o in observed), observed


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_adaptive_method_reaches_a_tight_tolerance(method):
    # dz/dt = cos(t) z, z = exp(sin t). The tolerance bounds each step's local error, so the
    # global error may be some tens of times larger over many steps.
    t = torch.tensor([0.0, 3.0], dtype=F64)
    tol = {"adaptive_heun": 1e-7, "fehlberg2": 1e-7, "bosh3": 1e-8}.get(method, 1e-10)
    stats = nh.Stats()
    zs = nh.odeint(lambda tt, z: torch.cos(tt) * z, torch.ones(1, dtype=F64), t,
                   method=method, rtol=tol, atol=tol, stats=stats)
    err = abs(zs[-1, 0].item() - np.exp(np.sin(3.0)))
    assert err < 100 * tol, (err, stats.forward)


def _dense_error(method, h):
    """One step of size h from 0, outputs inside it: the error of the dense output."""
    t = torch.tensor([0.0, 0.23 * h, 0.5 * h, 0.71 * h, 0.9 * h, h], dtype=F64)
    zs = nh.odeint(lambda tt, z: torch.cos(tt) * z, torch.ones(1, dtype=F64), t,
                   method=method, rtol=1e3, atol=1e3,
                   options={"first_step": h, "ifactor": 1.0, "dfactor": 1.0, "safety": 1.0})
    return (zs[1:-1, 0] - torch.exp(torch.sin(t[1:-1]))).abs().max().item()


DENSE_ORDERS = {"adaptive_heun": 2, "fehlberg2": 2, "bosh3": 3, "dopri5": 4, "tsit5": 4,
                "dopri8": 5}


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_dense_output_satisfies_the_order_conditions(method):
    """The cubic Hermite interpolant has order min(3, order); dopri5's and tsit5's published
    ones order 4; dopri8's (derived here) order 5."""
    tab = TABLEAUS[method]
    q = DENSE_ORDERS[method]
    for m in range(1, len(tab.dense[0]) + 1):
        coeffs = [row[m - 1] for row in tab.dense]
        res = _order_residuals(tab, coeffs, q, power=m)
        assert all(v < 1e-12 for v in res.values()), (m, res)


def _interpolant_error(method, h):
    """One step of size h from 0 by rk_step, the dense output at 4 points inside it: its
    error (what the adjoints' trajectory reads; odeint's dopri8 outputs land instead)."""
    tab = TABLEAUS[method]
    f = lambda tt, z: torch.cos(tt) * z  # noqa: E731
    t0 = torch.tensor(0.0, dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    _, ks = rk_step(f, tab, t0, h, y0)
    errs = [(dense_output(tab, y0, ks, h, th) - np.exp(np.sin(th * h))).abs().item()
            for th in (0.23, 0.5, 0.71, 0.9)]
    return max(errs)


@pytest.mark.parametrize("method,expected", [("fehlberg2", 3), ("dopri8", 6)])
def test_new_adaptive_methods_dense_output_order(method, expected):
    # fehlberg2: cubic Hermite through (y, f) at both ends, but its own solution is 2nd
    # order, so the local error h^3 dominates. dopri8: an order-5 interpolant, local error
    # h^6 (the step's own error, h^9, is far below); read from the step directly, since
    # odeint's dopri8 lands on every output time.
    hs = (0.8, 0.4, 0.2) if method == "dopri8" else (0.4, 0.2, 0.1)
    error = _interpolant_error if method == "dopri8" else _dense_error
    errs = [error(method, h) for h in hs]
    observed = [np.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(o > expected - 0.4 for o in observed), (observed, errs)


def test_dopri8_lands_on_every_output_time():
    # Its quintic dense output is far less accurate than its 8th-order steps, so odeint ends
    # a step on every output time (tableau flag land_on_outputs): one step per output at
    # least, and outputs with the steps' own error.
    assert TABLEAUS["dopri8"].land_on_outputs
    assert not any(TABLEAUS[m].land_on_outputs for m in ADAPTIVE_METHODS if m != "dopri8")
    t = torch.linspace(0, 1, 9, dtype=F64)
    stats = nh.Stats()
    zs = nh.odeint(lambda tt, z: torch.cos(tt) * z, torch.ones(1, dtype=F64), t,
                   method="dopri8", rtol=1e-6, atol=1e-8, stats=stats)
    assert stats.forward.n_steps >= 8
    assert (zs[:, 0] - torch.exp(torch.sin(t))).abs().max() < 1e-8


def test_dopri8_trajectory_between_steps_is_sampled():
    # What the interpolated and quadrature adjoints read z(t) from: with the field, each
    # dopri8 step is sampled at 1/3 and 2/3 (26 more evaluations, counted) and read by a
    # degree-7 Hermite interpolant: within the tolerance where the quintic was ~100 rtol off.
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=F64)
    z0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.tensor([0.0, 0.23, 0.61, 1.37, 1.9, 3.1, 4.0], dtype=F64)
    f = lambda tt, z: A @ z  # noqa: E731
    errors, counts = {}, {}
    for sampled in (False, True):
        traj, stats = Trajectory(TABLEAUS["dopri8"]), nh.Stats().forward
        if sampled:
            traj.use_field(f, stats)
        solve(f, z0, t, method="dopri8", rtol=1e-8, atol=1e-11, options={}, stats=stats,
              on_step=traj.record)
        assert len(traj.samples) == (len(traj.steps) if sampled else 0)
        counts[sampled] = (stats.nfe, stats.n_steps)
        worst = 0.0
        for t_start, _, h, *_ in traj.steps:
            for th in (0.1, 0.3, 0.5, 0.7, 0.9):
                tq = t_start + th * h
                exact = torch.linalg.matrix_exp(A * tq) @ z0
                worst = max(worst, (traj(tq) - exact).abs().max().item())
        errors[sampled] = worst / 1e-8
    assert errors[True] < 1 and errors[False] > 10, errors
    (nfe, n_steps), (nfe_sampled, n_steps_sampled) = counts[False], counts[True]
    assert n_steps_sampled == n_steps and nfe_sampled == nfe + 26 * n_steps


def test_fehlberg2_error_estimate_compares_with_an_order_3_solution():
    # Fehlberg's estimate h (k3 - k1)/512 is that of his 1st-order solution's h^2 term only;
    # ours compares the propagated 2nd-order solution with the 3rd-order one of the same
    # stages, so it is that solution's own leading error.
    tab = TABLEAUS["fehlberg2"]
    b3 = [bi - ei for bi, ei in zip(tab.b, tab.e)]
    assert b3 == pytest.approx(FEHLBERG2_ORDER3_WEIGHTS, abs=1e-14)
    res = _order_residuals(tab, b3, 3)
    assert all(v < 1e-13 for v in res.values()), res
    assert _order_residuals(tab, b3, 4)[4] > 1e-3


@pytest.mark.parametrize("rate", [-56.8, -500.0])
@pytest.mark.parametrize("rtol", [1e-1, 1e-2, 1e-4])
def test_fehlberg2_fast_decay_ends_at_the_absolute_tolerance(rate, rtol):
    # dz/dt = rate z from 1 over [0, 1]: exact z(1) < 1e-24; with Fehlberg's estimate it
    # ended at 1.8e9 (rate -56.8, rtol 1e-2; torchdiffeq's fehlberg2: 2.2e9). An explicit
    # method cannot do better than settle at the absolute tolerance's scale.
    zs = nh.odeint(lambda tt, z: rate * z, torch.ones(1, dtype=F64), T01, method="fehlberg2",
                   rtol=rtol, atol=1e-6)
    assert abs(zs[-1, 0].item()) < 1e-5


def _exact_grads(A, z0, t, w):
    Ae, z0e, te = (x.detach().clone().requires_grad_() for x in (A, z0, t))
    (nh.linear_solution(Ae, z0e, te) * w).sum().backward()
    return Ae.grad, z0e.grad, te.grad


GRAD_CASES = {  # settings, relative tolerance on dL/dA, dL/dz0, dL/dt
    "heun2": (dict(options={"step_size": 1e-3}), 1e-5),
    "heun3": (dict(options={"step_size": 4e-3}), 1e-6),
    "fehlberg2": (dict(rtol=1e-7, atol=1e-9), 1e-4),
    "dopri8": (dict(rtol=1e-11, atol=1e-13), 5e-7),  # backprop: dL/dt through dense output
}


@pytest.mark.parametrize("adjoint", [True, False], ids=["adjoint", "backprop"])
@pytest.mark.parametrize("method", list(GRAD_CASES))
def test_new_methods_give_exact_gradients(method, adjoint, linear_problem):
    """dL/dA, dL/dz0, dL/dt against autograd through matrix_exp, for odeint_adjoint and for
    backprop through odeint."""
    A, z0, t = linear_problem
    kw, tol = GRAD_CASES[method]
    w = torch.randn(len(t), *z0.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    model = nh.LinearODE(A)
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    solve = nh.odeint_adjoint if adjoint else nh.odeint
    (solve(model, z0a, ta, method=method, **kw) * w).sum().backward()
    for g, e in zip((model.A.grad, z0a.grad, ta.grad), _exact_grads(A, z0, t, w)):
        assert ((g - e).norm() / e.norm()).item() < tol


# ---- checkpoint="steps": memory O(steps x state) --------------------------------------------

def _mlp_field(width=256):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, 2))


class _Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp_field()

    def forward(self, t, z):
        return self.net(z)


STEP_CASES = {"euler": {"step_size": 0.05}, "midpoint": {"step_size": 0.05},
              "rk4": {"step_size": 0.05},
              # 20 steps of 0.05: no error control (huge tolerances) and a given first step
              "dopri5": {"first_step": 0.05, "ifactor": 1.0, "dfactor": 1.0, "safety": 1.0}}


def _saved_and_grads(f, z0, method, checkpoint):
    params = list(f.parameters())
    opts = STEP_CASES[method]
    kw = dict(rtol=1e3, atol=1e3) if method == "dopri5" else {}
    stats = nh.Stats()
    loss, nbytes = nh.saved_tensor_bytes(
        lambda: nh.odeint(f, z0, T01.float(), method=method, options=opts, stats=stats,
                          checkpoint=checkpoint, **kw)[-1].square().sum(), exclude=params)
    grads = torch.autograd.grad(loss, params)
    return nbytes, grads, stats.forward


@pytest.mark.parametrize("method", list(STEP_CASES))
def test_checkpointed_steps_keep_little_and_give_plain_gradients(method):
    """Per-step checkpointing keeps each step's (t, h, z) (and an FSAL method's first stage),
    not every evaluation's activations: far below plain backprop, same gradient."""
    f = _Field()
    z0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    plain, g_plain, s_plain = _saved_and_grads(f, z0, method, None)
    ckpt, g_ckpt, s_ckpt = _saved_and_grads(f, z0, method, "steps")
    n_steps = s_plain.n_steps
    assert s_ckpt.n_steps == n_steps >= 20
    # A few states per step; an FSAL method's first evaluation (before the first step) keeps
    # its activations once: about one evaluation's share of plain backprop's memory.
    state = z0.numel() * 4
    once = plain / s_plain.nfe if TABLEAUS[method].fsal else 0
    assert ckpt <= 3 * state * (n_steps + 2) + once, (ckpt, plain, n_steps)
    assert ckpt < plain / 50, (ckpt, plain)
    for a, b in zip(g_ckpt, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- the scipy refusal (odeint.py) uses the same check ---------------------------------------

def test_scipy_refuses_a_closure_that_z0_is_a_detached_view_of():
    P = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="black box"):
        nh.odeint(lambda t, z: -P[1] * z, P[:1].detach(), T01, method="scipy:RK45")


def test_scipy_accepts_a_per_call_leaf():
    f = PerCallTime().requires_grad_(False)
    nh.odeint(f, torch.tensor([[1.0, -0.5]], dtype=F64), T01, method="scipy:RK45")
