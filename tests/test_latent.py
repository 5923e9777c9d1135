"""Latent ODE: shapes, the ELBO's parts, and that training on a tiny batch improves it."""

import math

import torch

from neuralode_helpers import (
    GRUForecaster,
    LatentODE,
    elbo,
    gather_times,
    gaussian_log_likelihood,
    irregular_indices,
    normal_kl,
    spiral_family,
)


def _batch(n=8, n_obs=6):
    t, x, xn, _ = spiral_family(n, n_grid=16, t_end=math.pi, noise=0.05, seed=0)
    idx = irregular_indices(n, 12, n_obs, seed=0)
    return t, x, gather_times(xn, idx), idx


def test_gather_times_picks_each_series_own_times():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    idx = torch.tensor([[0, 3], [1, 4]])
    assert gather_times(x, idx).squeeze(-1).tolist() == [[0.0, 3.0], [6.0, 9.0]]


def test_gaussian_log_likelihood_and_kl_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, m = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    ref = torch.distributions.Normal(m, 0.3).log_prob(x).sum(dim=(1, 2))
    assert torch.allclose(gaussian_log_likelihood(x, m, 0.3), ref, atol=1e-4)
    mu, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3, 4), torch.ones(3, 4))
    assert torch.allclose(normal_kl(mu, logvar),
                          torch.distributions.kl_divergence(q, p).sum(1), atol=1e-5)


def test_shapes():
    torch.manual_seed(0)
    t, x, x_obs, idx = _batch()
    model = LatentODE(latent_dim=3, hidden=8, rnn_hidden=8, step_size=0.25)
    mu, logvar = model.encoder(x_obs, t[idx])
    assert mu.shape == logvar.shape == (8, 3)
    assert model.predict(x_obs, t[idx], t).shape == (8, 16, 2)
    gru = GRUForecaster(hidden=8)
    assert gru(x_obs, t[idx]).shape == (8, 5, 2)
    assert gru.forecast(x_obs, t[idx], t[12:]).shape == (8, 4, 2)


def test_elbo_increases_on_a_tiny_fixed_batch():
    torch.manual_seed(0)
    t, x, x_obs, idx = _batch()
    model = LatentODE(latent_dim=3, hidden=8, rnn_hidden=8, step_size=0.25)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)

    def fixed_elbo():  # the same noise sample every time, so values are comparable
        return elbo(model, x_obs, idx, t, 0.1, torch.Generator().manual_seed(1))

    before = fixed_elbo().item()
    for _ in range(15):
        loss = -fixed_elbo()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_elbo().item()
    assert math.isfinite(before) and after > before + 0.2 * abs(before)
    for p in model.parameters():  # the adjoint reached every network
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_encoder_sees_the_time_of_the_first_observation():
    # shifting every observation time by the same amount keeps all gaps between observations;
    # only the gap from t = 0 to the first one changes, and the encoder must notice it
    torch.manual_seed(0)
    t, x, x_obs, idx = _batch()
    for origin_gap, changes in ((True, True), (False, False)):
        model = LatentODE(latent_dim=3, hidden=8, rnn_hidden=8, origin_gap=origin_gap)
        mu, _ = model.encoder(x_obs, t[idx])
        mu_late, _ = model.encoder(x_obs, t[idx] + 0.5)
        assert (not torch.allclose(mu, mu_late)) == changes


def test_latent_path_takes_a_fixed_step_method_and_refuses_others():
    torch.manual_seed(0)
    t = torch.linspace(0, 2, 9)
    z0 = torch.randn(5, 3)
    paths = {}
    for method in ("rk4", "midpoint"):
        torch.manual_seed(1)
        model = LatentODE(latent_dim=3, hidden=8, rnn_hidden=8, step_size=0.05, method=method)
        with torch.no_grad():
            paths[method] = model.latent_path(z0, t)
    assert paths["rk4"].shape == (5, 9, 3)
    # two solvers of the same field: close for small steps, but not the same computation
    assert torch.allclose(paths["rk4"], paths["midpoint"], atol=1e-3)
    assert not torch.equal(paths["rk4"], paths["midpoint"])
    try:
        LatentODE(method="dopri5")
    except ValueError as err:
        assert "fixed-step" in str(err) and "dopri5" in str(err)
    else:
        raise AssertionError("an adaptive method was accepted")


def test_series_models_name_the_shapes_they_expect():
    import pytest

    torch.manual_seed(0)
    t, x, x_obs, idx = _batch()
    model = LatentODE(latent_dim=3, hidden=8, rnn_hidden=8, step_size=0.25)
    gru = GRUForecaster(hidden=8)
    for call in (lambda xo, to: model.encoder(xo, to), lambda xo, to: gru(xo, to),
                 lambda xo, to: gru.forecast(xo, to, t[12:])):
        with pytest.raises(ValueError, match=r"x_obs must have shape \(B, N, 2\)"):
            call(x_obs[..., :1], t[idx])
        with pytest.raises(ValueError, match=r"x_obs must have shape"):
            call(x_obs[0], t[idx])  # one series without its batch dimension
        with pytest.raises(ValueError, match=r"t_obs must have shape \(B, N\) = \(8, 6\)"):
            call(x_obs, t[idx][:, :5])
        with pytest.raises(TypeError, match="x_obs must be a floating-point torch.Tensor"):
            call(x_obs.numpy(), t[idx])
    with pytest.raises(TypeError, match="idx must be a tensor of grid indices"):
        elbo(model, x_obs, idx.float(), t, 0.1)
    with pytest.raises(ValueError, match="idx must index the grid t of 16 times"):
        elbo(model, x_obs, idx + 10, t, 0.1)
    with pytest.raises(ValueError, match="t must be the shared time grid"):
        elbo(model, x_obs, idx, t[idx], 0.1)
