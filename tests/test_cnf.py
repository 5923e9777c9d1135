"""Continuous normalizing flow: divergence, densities that integrate to one, planar flow."""

import pytest
import torch

from neuralode_helpers import (
    CNF,
    CNFField,
    PlanarFlow,
    Stats,
    exact_divergence,
    hutchinson_divergence,
    odeint,
    odeint_adjoint,
    standard_normal_logprob,
    two_moons,
)
from neuralode_helpers.cnf import fit_flow


def _grid(half_width=5.0, h=0.1):
    g = torch.arange(-half_width, half_width + h / 2, h)
    return torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1).reshape(-1, 2), h


def test_divergence_equals_the_trace_of_the_jacobian():
    torch.manual_seed(0)
    field = CNFField(dim=3, hidden=16)
    z = torch.randn(4, 3)
    t = torch.tensor(0.7)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: field.net(t, v), z[b])
                       for b in range(4)])
    trace = jac.diagonal(dim1=1, dim2=2).sum(1)
    zz = z.clone().requires_grad_(True)
    assert torch.allclose(exact_divergence(field.net(t, zz), zz, create_graph=False), trace,
                          atol=1e-5)
    # the field's last channel is minus the divergence, with or without grad mode
    state = torch.cat([z, torch.zeros(4, 1)], dim=1)
    with torch.no_grad():
        out = field(t, state)
    assert torch.allclose(out[:, 3], -trace, atol=1e-5)
    assert torch.allclose(field(t, state)[:, 3], -trace, atol=1e-5)
    # Hutchinson's estimator: exact when averaged over the basis vectors times sqrt(D)
    probes = torch.eye(3).unsqueeze(1).expand(3, 4, 3) * 3 ** 0.5
    est = torch.stack([hutchinson_divergence(field.net(t, zz), zz, e, False) for e in probes])
    assert torch.allclose(est.mean(0), trace, atol=1e-5)


def test_cnf_density_integrates_to_one():
    torch.manual_seed(0)
    cnf = CNF(dim=2, hidden=16, n_steps=10)
    with torch.no_grad():
        for p in cnf.parameters():  # a flow that visibly moves mass
            p.mul_(2.0)
        x, h = _grid()
        logp = cnf.log_prob(x)
        mass = logp.exp().sum() * h * h
        moved = (logp - standard_normal_logprob(x)).abs().max()
    assert moved > 0.1
    assert abs(mass.item() - 1.0) < 5e-3


def test_forward_samples_carry_the_density_that_log_prob_recomputes():
    torch.manual_seed(0)
    cnf = CNF(dim=2, hidden=16, n_steps=10)
    z0 = torch.randn(50, 2)
    with torch.no_grad():
        path = cnf.sample_path(z0, torch.tensor([0.0, 0.5, 1.0]))
        for k, t in ((1, 0.5), (2, 1.0)):
            assert torch.allclose(cnf.log_prob(path[k, :, :2], t1=t), path[k, :, 2], atol=1e-3)


def test_cnf_adjoint_gradient_matches_backprop_through_the_solver():
    torch.manual_seed(0)
    field = CNFField(dim=2, hidden=8)
    s0 = torch.cat([torch.randn(6, 2), torch.zeros(6, 1)], dim=1)
    t = torch.tensor([1.0, 0.0])
    opts = {"step_size": 0.05}

    def loss(solve):
        end = solve(field, s0, t, method="rk4", options=opts)[-1]
        return -(standard_normal_logprob(end[:, :2]) - end[:, 2]).mean()

    g_bp = torch.autograd.grad(loss(odeint), list(field.parameters()))
    g_adj = torch.autograd.grad(loss(odeint_adjoint), list(field.parameters()))
    for a, b in zip(g_adj, g_bp):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_planar_flow_logdet_and_mass():
    torch.manual_seed(0)
    flow = PlanarFlow(dim=2, n_layers=4, init_scale=1.0)
    x = torch.randn(5, 2)
    _, logdet = flow(x)
    for b in range(5):
        J = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0))[0][0], x[b])
        assert torch.allclose(logdet[b], torch.linalg.slogdet(J)[1], atol=1e-5)
    with torch.no_grad():
        g, h = _grid(6.0, 0.05)
        mass = flow.log_prob(g).exp().sum() * h * h
    assert abs(mass.item() - 1.0) < 1e-2


def test_fit_flow_lowers_the_nll_and_repeats_with_the_seed():
    x = two_moons(500, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        flow = PlanarFlow(dim=2, n_layers=8, init_scale=0.5)
        fit = fit_flow(flow, x, steps=60, lr=5e-2, batch_size=64, seed=3, progress=False)
        runs.append(fit.losses)
    assert len(runs[0]) == 60 and runs[0] == runs[1]
    assert sum(runs[0][-10:]) / 10 < sum(runs[0][:10]) / 10 - 0.3
    assert fit.cpu_seconds >= 0 and fit.wall_seconds > 0
    # another batch seed draws other batches
    torch.manual_seed(0)
    flow = PlanarFlow(dim=2, n_layers=8, init_scale=0.5)
    assert fit_flow(flow, x, steps=5, lr=5e-2, batch_size=64, seed=4,
                    progress=False).losses != runs[0][:5]


def test_fit_flow_rejects_bad_input():
    x = two_moons(50, seed=0)
    flow = PlanarFlow(dim=2, n_layers=2)
    with pytest.raises(TypeError, match="log_prob"):
        fit_flow(torch.nn.Linear(2, 2), x, steps=1, lr=1e-2)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_flow(flow, x[0], steps=1, lr=1e-2)
    for kwargs in ({"steps": 0, "lr": 1e-2}, {"steps": 1, "lr": 0.0},
                   {"steps": 1, "lr": 1e-2, "batch_size": 0},
                   {"steps": 1, "lr": 1e-2, "lr_final_ratio": 0.0}):
        with pytest.raises(ValueError, match="need steps >= 1"):
            fit_flow(flow, x, progress=False, **kwargs)

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def log_prob(self, x):
            return self.w + torch.full(x.shape[:1], float("nan"))

    broken = Broken()
    with pytest.raises(FloatingPointError, match="step 0"):
        fit_flow(broken, x, steps=3, lr=1e-2, progress=False)
    assert broken.w.item() == 0.0  # the non-finite loss never reached the weights


def test_cnf_log_prob_counts_field_evaluations():
    torch.manual_seed(0)
    cnf = CNF(dim=2, hidden=8, n_steps=4)
    stats = Stats()
    loss = -cnf.log_prob(torch.randn(5, 2), stats=stats).mean()
    loss.backward()
    # four RK4 steps of four stages, forwards and (the adjoint) backwards
    assert stats.forward.nfe == 16
    assert stats.backward.nfe == 16


def test_fit_flow_takes_float64_data_for_a_float32_model():
    # The data meet the model's dtype: the same losses as with the data cast by hand.
    x = two_moons(200, seed=0)
    runs = []
    for data in (x, x.double()):
        torch.manual_seed(0)
        flow = PlanarFlow(dim=2, n_layers=4, init_scale=0.5)
        runs.append(fit_flow(flow, data, steps=3, lr=5e-2, batch_size=32, progress=False).losses)
    assert runs[0] == runs[1]


def test_densities_check_their_points_and_take_float64_data():
    torch.manual_seed(0)
    cnf, planar = CNF(2, hidden=8, n_steps=2), PlanarFlow(2, n_layers=3)
    x = two_moons(5)
    for model in (cnf, planar):
        with pytest.raises(ValueError, match=r"x must hold points in R\^2, shape \(B, 2\), "
                                             r"got \(5, 3\)"):
            model.log_prob(torch.zeros(5, 3))
        with pytest.raises(TypeError, match="x must be a torch.Tensor of points"):
            model.log_prob(x.numpy())
        with pytest.raises(TypeError, match="x must be floating point"):
            model.log_prob(torch.zeros(5, 2, dtype=torch.int64))
        # float64 data for a float32 model: cast, the same numbers as float32 data
        with torch.no_grad():
            assert torch.equal(model.log_prob(x.double()), model.log_prob(x))
    with pytest.raises(ValueError, match="z0 must hold points"):
        cnf.sample_path(torch.zeros(4, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="dim must be a positive int"):
        CNF(0)
    with pytest.raises(TypeError, match="steps must be an int, got float"):
        fit_flow(planar, x, steps=2.0, lr=1e-2, progress=False)
