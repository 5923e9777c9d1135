"""RNODE's kinetic and Jacobian terms, STEER's end times, bounded fields, train's options.

The closed forms come from the linear field dz/dt = A z: z(t) = e^{At} z0, so the kinetic
term is the integral of |A z(t)|^2 (computed here by Gauss-Legendre quadrature of the exact
solution) and the Jacobian is A everywhere, so its Frobenius term is T ||A||_F^2.
"""

import numpy as np
import pytest
import torch

import neuralode_helpers as nh

F64 = torch.float64


def _linear_case(dtype=F64, B=4, D=3):
    g = torch.Generator().manual_seed(0)
    A = nh.random_stable_matrix(D, g, dtype=dtype, max_real=-0.2)
    z0 = torch.randn(B, D, generator=g, dtype=dtype)
    return A, z0


def _exact_kinetic(A, z0, T, n=40):
    """int_0^T |A z(t)|^2 dt per sample, by n-point Gauss-Legendre on the exact solution."""
    x, w = np.polynomial.legendre.leggauss(n)
    t = torch.tensor(T / 2 * (x + 1), dtype=A.dtype)
    w = torch.tensor(T / 2 * w, dtype=A.dtype)
    order = torch.argsort(t)
    z = nh.linear_solution(A, z0, torch.cat([t.new_zeros(1), t[order]]))[1:]  # (n, B, D)
    speed2 = (z @ A.T).square().sum(-1)  # (n, B)
    return (w[order, None] * speed2).sum(0)


@pytest.mark.parametrize("solver", ["odeint", "odeint_adjoint"])
def test_kinetic_and_exact_frobenius_match_closed_forms_on_linear_field(solver):
    A, z0 = _linear_case()
    T = 1.5
    field = nh.RegularisedField(nh.LinearODE(A), eps=None)
    t = torch.tensor([0.0, T], dtype=F64)
    solve = getattr(nh, solver)
    z, k, b = solve(field, nh.initial_state(z0), t, rtol=1e-10, atol=1e-12)
    assert torch.allclose(z[-1], nh.linear_solution(A, z0, t)[-1], rtol=1e-8, atol=1e-10)
    assert torch.allclose(k[-1], _exact_kinetic(A, z0, T), rtol=1e-8)
    frob = T * A.square().sum()
    assert torch.allclose(b[-1], frob.expand(len(z0)), rtol=1e-8)


def test_hutchinson_mean_over_many_probes_tends_to_the_frobenius_norm():
    A, _ = _linear_case()
    T = 2.0
    n_probes = 20000
    z0 = torch.zeros(n_probes, 3, dtype=F64)  # one probe per sample; J = A everywhere
    g = torch.Generator().manual_seed(1)
    exact = (T * A.square().sum()).item()
    for eps in (nh.rademacher(z0.shape, g, F64), torch.randn(z0.shape, generator=g, dtype=F64)):
        field = nh.RegularisedField(nh.LinearODE(A), eps=eps)
        _, _, b = nh.odeint(field, nh.initial_state(z0), torch.tensor([0.0, T], dtype=F64),
                            rtol=1e-8, atol=1e-10)
        est = b[-1]
        # the estimate is unbiased: its mean is within 4 standard errors of the exact value
        stderr = est.std().item() / n_probes ** 0.5
        assert abs(est.mean().item() - exact) < 4 * stderr
        assert stderr < 0.02 * exact


def test_jacobian_frobenius_single_probe_is_exact_per_sample_formula():
    A, z0 = _linear_case()
    z = z0.clone().requires_grad_(True)
    f = z @ A.T
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    est = nh.jacobian_frobenius(f, z, eps)
    assert torch.allclose(est, (eps @ A).square().sum(-1), rtol=1e-12)
    exact = nh.jacobian_frobenius(f, z)
    assert torch.allclose(exact, A.square().sum().expand(len(z0)), rtol=1e-12)
    assert torch.allclose(nh.kinetic_energy(f), f.square().sum(-1))


def test_float32_agrees_with_float64():
    A, z0 = _linear_case()
    t = torch.tensor([0.0, 1.0])
    field = nh.RegularisedField(nh.LinearODE(A.float()), eps=None)
    z, k, b = nh.odeint(field, nh.initial_state(z0.float()), t, rtol=1e-6, atol=1e-7)
    assert z.dtype == k.dtype == b.dtype == torch.float32
    assert torch.allclose(k[-1].double(), _exact_kinetic(A, z0, 1.0), rtol=1e-4)
    assert torch.allclose(b[-1].double(), A.square().sum().expand(4), rtol=1e-4)


def test_gradients_of_the_terms_through_the_adjoint_match_backprop():
    A, z0 = _linear_case()
    eps = nh.rademacher(z0.shape, torch.Generator().manual_seed(3), F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    grads = []
    for solve in (nh.odeint, nh.odeint_adjoint):
        model = nh.LinearODE(A)
        z, k, b = solve(nh.RegularisedField(model, eps), nh.initial_state(z0), t,
                        rtol=1e-10, atol=1e-12)
        (z[-1].square().sum() + 0.3 * k[-1].sum() + 0.2 * b[-1].sum()).backward()
        grads.append(model.A.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-8)
    # the Jacobian term's gradient in A: d/dA of 0.2 sum_b |eps_b^T A|^2 = 0.4 A^T... nonzero
    assert grads[0].abs().max() > 0


def test_steer_end_times_cover_their_range_and_only_it():
    g = torch.Generator().manual_seed(0)
    ends = np.array([nh.sample_end_time(0.0, 1.0, 0.5, g) for _ in range(4000)])
    assert ends.min() >= 0.5 and ends.max() <= 1.5
    assert ends.min() < 0.52 and ends.max() > 1.48  # the whole range is reached
    assert abs(ends.mean() - 1.0) < 0.02  # centred on t1 (sd of the mean: 0.0046)
    assert nh.sample_end_time(0.0, 1.0, 0.0, g) == 1.0
    back = [nh.sample_end_time(1.0, 0.0, 0.3, g) for _ in range(200)]  # reverse direction
    assert min(back) >= -0.3 and max(back) <= 0.3


@pytest.mark.parametrize("b, error", [(None, TypeError), ("0.1", TypeError), (True, TypeError),
                                      (-0.1, ValueError), (1.0, ValueError),
                                      (float("nan"), ValueError)])
def test_steer_rejects_bad_b(b, error):
    with pytest.raises(error, match="steer b"):
        nh.sample_end_time(0.0, 1.0, b)


def test_bad_inputs_name_the_argument():
    A, z0 = _linear_case()
    with pytest.raises(TypeError, match="f must be"):
        nh.kinetic_energy(None)
    with pytest.raises(TypeError, match="z must be"):
        nh.jacobian_frobenius(z0, [1.0])
    with pytest.raises(ValueError, match="z must require grad"):
        nh.jacobian_frobenius(z0, z0)
    z = z0.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="eps must have the shape"):
        nh.jacobian_frobenius(z @ A.T, z, torch.ones(2, 3, dtype=F64))
    with pytest.raises(TypeError, match="field must be callable"):
        nh.RegularisedField(None)
    with pytest.raises(TypeError, match="z0 must be"):
        nh.initial_state(np.ones((2, 3)))
    with pytest.raises(TypeError, match="kinetic must be a number"):
        nh.RNODE(kinetic=None)
    with pytest.raises(ValueError, match="jacobian must be finite and >= 0"):
        nh.RNODE(jacobian=-1.0)
    with pytest.raises(ValueError, match="probe"):
        nh.RNODE(probe="normal")
    with pytest.raises(TypeError, match="net must be an nn.Module"):
        nh.BoundedField(lambda t, z: z)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        nh.BoundedField(nh.ODENet(), scale=0.0)
    with pytest.raises(TypeError, match="t1 must be a number"):
        nh.sample_end_time(0.0, None, 0.1)


def test_bounded_field_is_bounded_by_its_learnt_scale():
    torch.manual_seed(0)
    net = nh.ODENet(state_dim=2)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50.0)  # a wild network
    field = nh.BoundedField(net, scale=0.7)
    assert torch.isclose(field.scale, torch.tensor(0.7))
    z = 10 * torch.randn(500, 2)
    f = field(torch.tensor(0.3), z)
    assert f.abs().max() <= 0.7 + 1e-6
    assert f.abs().max() > 0.6  # and the bound is reached by the wild net
    f.sum().backward()
    assert field.rho.grad is not None  # the scale is learnt


def test_train_records_regularisation_terms_and_steer_end_times():
    common = dict(steps=6, batch_size=8, progress=False, seed=3, rtol=1e-3, atol=1e-4)
    torch.manual_seed(0)
    reg = nh.train(nh.ODENet(hidden=(16,)), regulariser=nh.RNODE(kinetic=0.1, jacobian=0.1),
                   **common)
    assert len(reg.kinetic) == len(reg.jacobian) == len(reg.losses) == 6
    assert min(reg.kinetic) > 0 and min(reg.jacobian) > 0
    assert all(np.isfinite(reg.losses)) and reg.end_times == []
    torch.manual_seed(0)
    steer = nh.train(nh.ODENet(hidden=(16,)), steer=0.5, **common)
    assert len(steer.end_times) == 6 and steer.kinetic == []
    assert all(0.5 <= e <= 1.5 for e in steer.end_times)
    assert len(set(steer.end_times)) == 6
    torch.manual_seed(0)
    bounded = nh.train(nh.BoundedField(nh.ODENet(hidden=(16,)), 2.0),
                       regulariser=nh.RNODE(kinetic=0.1, probe="exact"), **common)
    assert len(bounded.kinetic) == 6 and max(bounded.jacobian) == 0.0  # weight 0: not computed


def test_train_kinetic_term_is_the_batch_mean_of_the_integral():
    """The recorded kinetic term equals a direct computation on the first step's windows."""
    torch.manual_seed(0)
    model = nh.ODENet(hidden=(16,)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = nh.train(model, steps=1, batch_size=5, progress=False, seed=4,
                   regulariser=nh.RNODE(kinetic=1e-3, probe="exact"), rtol=1e-9, atol=1e-11)
    model.load_state_dict(before)
    t0, c = nh.training.sample_windows(5, torch.Generator().manual_seed(4), (-1.0, 9.0),
                                       (0.0, 0.0), F64)
    s = torch.linspace(0, 1, 201, dtype=F64)
    with torch.no_grad():
        field = nh.WindowedField(model, t0, 1.0)
        z = nh.odeint(field, nh.toy_solution(t0)[:, None], s, rtol=1e-10, atol=1e-12)
        speed2 = torch.stack([field(s[i], z[i]).square().sum(-1) for i in range(len(s))])
    simpson = (s[1] - s[0]) / 3 * (speed2[0] + 4 * speed2[1:-1:2].sum(0)
                                   + 2 * speed2[2:-1:2].sum(0) + speed2[-1])
    assert res.kinetic[0] == pytest.approx(simpson.mean().item(), rel=1e-6)


def test_train_rejects_bad_options():
    with pytest.raises(TypeError, match="regulariser must be an RNODE"):
        nh.train(nh.ODENet(), steps=1, regulariser={"kinetic": 1.0}, progress=False)
    with pytest.raises(TypeError, match="steer b must be a number"):
        nh.train(nh.ODENet(), steps=1, steer="0.2", progress=False)
    with pytest.raises(ValueError, match="steer b must satisfy"):
        nh.train(nh.ODENet(), steps=1, steer=1.5, progress=False)


def test_steer_and_regulariser_leave_the_windows_unchanged():
    """Same seed, same windows: the first step's loss is identical with and without."""
    kw = dict(steps=1, batch_size=8, progress=False, seed=5)
    torch.manual_seed(0)
    plain = nh.train(nh.ODENet(hidden=(16,)), **kw)
    torch.manual_seed(0)
    reg = nh.train(nh.ODENet(hidden=(16,)), regulariser=nh.RNODE(kinetic=1.0), **kw)
    assert reg.losses[0] == pytest.approx(plain.losses[0], rel=1e-3)


def test_terms_left_out_of_the_norm_cost_no_extra_steps():
    """With in_norm=False only z's error sets the step: the same steps as the plain solve."""
    torch.manual_seed(0)
    model = nh.ODENet(hidden=(16,))
    t0 = torch.linspace(-1, 9, 20)
    c = torch.zeros(20)
    eps = nh.rademacher((20, 1), torch.Generator().manual_seed(0))
    counts = {}
    for label, reg in (("plain", None), ("out", nh.RNODE(1.0, 1.0)),
                       ("in", nh.RNODE(1.0, 1.0, in_norm=True))):
        stats = nh.Stats()
        with torch.no_grad():
            mse, _, _ = nh.regularised_window_loss(model, t0, c, regulariser=reg, eps=eps,
                                                   adjoint=False, stats=stats, rtol=1e-6,
                                                   atol=1e-8)
        counts[label] = stats.forward.nfe, mse.item()
    assert counts["out"][0] == counts["plain"][0]
    assert counts["out"][1] == pytest.approx(counts["plain"][1], rel=1e-6)  # the same z path
    assert counts["in"][0] >= counts["plain"][0]


# --- RNODE on a continuous normalizing flow ---------------------------------------------

from neuralode_helpers.regularisers import (  # noqa: E402
    RegularisedCNFField,
    cnf_initial_state,
    cnf_nll,
)
from neuralode_helpers.training import train_cnf  # noqa: E402


class _LinearCNF(torch.nn.Module):
    """A CNFField stand-in with the linear net f = A z: trace tr A, Frobenius ||A||_F^2."""

    def __init__(self, A):
        super().__init__()
        self.dim = A.shape[0]
        self.net = nh.LinearODE(A)

    def forward(self, t, s):
        return nh.CNFField.forward(self, t, s)


def _cnf_case(dtype=F64, B=5):
    g = torch.Generator().manual_seed(3)
    A = nh.random_stable_matrix(2, g, dtype=dtype, max_real=-0.3)
    x = torch.randn(B, 2, generator=g, dtype=dtype)
    return A, x


def test_cnf_channels_match_the_closed_forms_of_a_linear_field():
    A, x = _cnf_case()
    T = 1.3
    field = _LinearCNF(A)
    nll, kinetic, jacobian = cnf_nll(field, x, regulariser=nh.RNODE(1.0, 1.0, probe="exact"),
                                     end=T, adjoint=False, rtol=1e-10, atol=1e-12)
    # z(0) = e^{-AT} x and log p(x) = log N(z(0)) - T tr A
    z0 = nh.linear_solution(A, x, torch.tensor([T, 0.0], dtype=F64))[-1]
    exact_nll = -(nh.standard_normal_logprob(z0) - T * torch.trace(A)).mean()
    assert torch.allclose(nll, exact_nll, rtol=1e-8)
    # the backward path from x is the forward path from z(0): the kinetic integral is the same
    assert torch.allclose(kinetic, _exact_kinetic(A, z0, T).mean(), rtol=1e-8)
    assert torch.allclose(jacobian, T * A.square().sum(), rtol=1e-8)


def test_cnf_nll_is_the_same_with_and_without_the_regulariser_channels():
    torch.manual_seed(0)
    field = nh.CNFField(2, hidden=16).double()
    x = nh.two_moons(40, seed=2, dtype=F64)
    plain, k0, b0 = cnf_nll(field, x, adjoint=False, rtol=1e-6, atol=1e-6)
    stats_plain, stats_reg = nh.Stats(), nh.Stats()
    with torch.no_grad():
        cnf_nll(field, x, adjoint=False, rtol=1e-6, atol=1e-6, stats=stats_plain)
        reg, k, b = cnf_nll(field, x, regulariser=nh.RNODE(1.0, 1.0, probe="exact"),
                            adjoint=False, rtol=1e-6, atol=1e-6, stats=stats_reg)
    assert k0 is None and b0 is None
    assert torch.allclose(plain, reg, rtol=1e-12)
    # left out of the norm, the two channels cost no extra steps
    assert stats_reg.forward.nfe == stats_plain.forward.nfe
    assert k > 0 and b > 0
    # and the NLL is CNF.log_prob's, solved accurately
    s = nh.odeint(field, torch.cat([x, x.new_zeros(40, 1)], 1),
                  torch.tensor([1.0, 0.0], dtype=F64), rtol=1e-10, atol=1e-10)[-1]
    assert torch.allclose(plain, -(nh.standard_normal_logprob(s[:, :2]) - s[:, 2]).mean(),
                          rtol=1e-5)


def test_cnf_field_with_probes_gives_hutchinson_estimates_of_both_terms():
    A, x = _cnf_case()
    eps = nh.rademacher(x.shape, torch.Generator().manual_seed(5), F64)
    field = RegularisedCNFField(_LinearCNF(A), eps)
    ds, k, b = field(torch.tensor(0.0, dtype=F64), cnf_initial_state(x))
    row = eps @ A  # eps^T J per sample
    assert torch.allclose(ds[:, :2], x @ A.T)
    assert torch.allclose(-ds[:, 2], (row * eps).sum(-1))
    assert torch.allclose(b, row.square().sum(-1))
    assert torch.allclose(k, (x @ A.T).square().sum(-1))
    exact = RegularisedCNFField(_LinearCNF(A))(torch.tensor(0.0, dtype=F64),
                                               cnf_initial_state(x))
    assert torch.allclose(-exact[0][:, 2], torch.trace(A).expand(5))
    assert torch.allclose(exact[2], A.square().sum().expand(5))


def test_cnf_gradients_through_the_adjoint_match_backprop():
    torch.manual_seed(1)
    field = nh.CNFField(2, hidden=8).double()
    x = nh.two_moons(16, seed=3, dtype=F64)
    reg = nh.RNODE(0.5, 0.5, probe="exact")
    grads = []
    for adjoint in (True, False):
        field.zero_grad()
        nll, k, b = cnf_nll(field, x, regulariser=reg, end=0.8, adjoint=adjoint, rtol=1e-9,
                            atol=1e-9)
        (nll + 0.5 * k + 0.5 * b).backward()
        grads.append([p.grad.clone() for p in field.parameters()])
    assert nh.relative_error(grads[0], grads[1]) < 1e-5


def test_train_cnf_records_nfe_terms_and_end_times_and_learns():
    data = nh.two_moons(500, seed=0)
    common = dict(steps=12, batch_size=64, lr=3e-2, rtol=1e-3, atol=1e-3, progress=False,
                  seed=1)
    torch.manual_seed(0)
    plain = train_cnf(nh.CNFField(2, hidden=16), data, **common)
    assert len(plain.losses) == len(plain.nfe_forward) == len(plain.nfe_backward) == 12
    assert min(plain.nfe_forward) > 0 and min(plain.nfe_backward) > 0
    assert plain.kinetic == [] and plain.end_times == [] and plain.seconds > 0
    assert np.mean(plain.losses[-4:]) < plain.losses[0] - 0.1
    torch.manual_seed(0)
    reg = train_cnf(nh.CNFField(2, hidden=16), data, regulariser=nh.RNODE(0.1, 0.1),
                    steer=0.5, **common)
    assert len(reg.kinetic) == len(reg.jacobian) == len(reg.end_times) == 12
    assert min(reg.kinetic) > 0 and min(reg.jacobian) > 0
    assert all(0.5 <= e <= 1.5 for e in reg.end_times)
    # the probes have their own stream: the first batch is the plain run's, and so is its NLL
    # with exact terms (probes would estimate the trace too); float64, so that round-off
    # cannot flip a step-size decision between the two
    one = {**common, "steps": 1}
    firsts = []
    for reg in (None, nh.RNODE(0.1, 0.1, probe="exact")):
        torch.manual_seed(0)
        firsts.append(train_cnf(nh.CNFField(2, hidden=16).double(), data.double(),
                                regulariser=reg, **one).losses[0])
    assert firsts[1] == pytest.approx(firsts[0], rel=1e-10)


def test_cnf_helpers_reject_bad_inputs():
    field = nh.CNFField(2, hidden=8)
    data = nh.two_moons(20, seed=0)
    with pytest.raises(TypeError, match="CNFField"):
        train_cnf(nh.ODENet(2), data, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\)"):
        train_cnf(field, data[:, :1], steps=1, progress=False)
    with pytest.raises(TypeError, match="RNODE"):
        train_cnf(field, data, steps=1, regulariser={"kinetic": 1.0}, progress=False)
    with pytest.raises(ValueError, match="steer"):
        train_cnf(field, data, steps=1, steer=1.0, progress=False)
    with pytest.raises(TypeError, match="steps must be an int"):
        train_cnf(field, data, steps=2.0, progress=False)
    with pytest.raises(TypeError, match="CNFField"):
        cnf_nll(nh.ODENet(2), data)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        cnf_nll(field, data[:, :1])
    with pytest.raises(ValueError, match="end must be"):
        cnf_nll(field, data, end=0.0)
    with pytest.raises(ValueError, match="eps must have shape"):
        RegularisedCNFField(field, torch.ones(3, 3))
    with pytest.raises(TypeError, match="tuple"):
        RegularisedCNFField(field)(torch.tensor(0.0), torch.zeros(3, 3))


def test_train_cnf_takes_float64_data_for_a_float32_field():
    # The data meet the field's dtype: the same NLLs as with float32 data.
    data = nh.two_moons(200, seed=0)
    runs = []
    for x in (data, data.double()):
        torch.manual_seed(0)
        runs.append(train_cnf(nh.CNFField(2, hidden=8), x, steps=2, batch_size=16, rtol=1e-3,
                              atol=1e-3, progress=False).losses)
    assert runs[0] == runs[1]


class _ExactToyField(torch.nn.Module):
    """The toy problem's own dynamics (c = 0), with one parameter so that it trains."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, t, z):
        return self.gain * nh.toy_dynamics(t[:, None], z)


def test_steer_compares_the_state_at_the_sampled_end_with_the_fixed_target():
    # STEER (Ghosh et al. 2020): the solve ends at a sampled t1', the target stays at t1.
    # With the exact dynamics the loss at end = 1 is round-off, and at end = 1.2 it is the
    # squared gap between the true curve at t0 + 1.2Δ and at t0 + Δ, not 0 (as it was when
    # the targets moved with the end time).
    from neuralode_helpers.training import regularised_window_loss

    model = _ExactToyField()
    t0 = torch.tensor([0.5, 2.0, 4.0], dtype=F64)
    kw = dict(adjoint=False, rtol=1e-10, atol=1e-12, window=1.0)
    at_one, _, _ = regularised_window_loss(model, t0, 0.0, end=1.0, **kw)
    assert at_one.item() < 1e-16
    moved, _, _ = regularised_window_loss(model, t0, 0.0, end=1.2, **kw)
    gap = (nh.toy_solution(t0 + 1.2) - nh.toy_solution(t0 + 1.0)).square().mean()
    assert torch.allclose(moved, gap, rtol=1e-6)
    # With several observation points only the last solve time moves.
    three, _, _ = regularised_window_loss(model, t0, 0.0, end=1.2, n_obs=3, **kw)
    assert torch.allclose(three, gap / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="end must be above"):
        regularised_window_loss(model, t0, 0.0, end=0.4, n_obs=3, **kw)


def test_train_refuses_a_steer_b_that_reaches_the_previous_observation():
    with pytest.raises(ValueError, match="steer b must satisfy 0 <= b < 0.5"):
        nh.train(nh.ODENet(), steps=1, steer=0.6, n_obs=3, progress=False)
