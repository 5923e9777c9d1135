r"""Latent ODE for irregularly sampled time series (Chen et al. 2018, §5), and a GRU baseline.

Generative model, for one series with observation times :math:`t_1 < \dots < t_N`:

.. math::
    z_0 \sim \mathcal N(0, I), \qquad z(t) = z_0 + \int_0^t f(z(s); \theta)\,ds, \qquad
    x_i \sim \mathcal N\big(g(z(t_i)), \sigma^2 I\big).

Recognition model: a GRU reads :math:`(x_i, \Delta t_i)` from the last observation to the
first and outputs :math:`q(z_0 \mid x) = \mathcal N(\mu, \operatorname{diag} e^{\ell})`.
Training maximises the ELBO

.. math::
    \mathcal L = \mathbb E_{q}\Big[\sum_i \log \mathcal N(x_i; g(z(t_i)), \sigma^2 I)\Big]
    - \mathrm{KL}\big(q(z_0 \mid x)\,\|\,\mathcal N(0, I)\big),

with one reparameterised sample :math:`z_0 = \mu + e^{\ell/2}\varepsilon` and the KL in closed
form. Gradients through the ODE solve come from :func:`~neuralode_helpers.odeint_adjoint`.

Shapes: a batch of B series shares one time grid ``t`` ``(T,)``; series b is observed at grid
indices ``idx[b]`` (``(B, N)``, sorted), values ``x_obs`` ``(B, N, D)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .adjoint import odeint_adjoint
from .models import ODENet
from .solvers import odeint


def check_observations(x_obs, t_obs, obs_dim: int):
    """``x_obs`` ``(B, N, obs_dim)`` and ``t_obs`` ``(B, N)``, or a clear error naming the
    expected shapes (a GRU's own error speaks of its input size)."""
    for name, x in (("x_obs", x_obs), ("t_obs", t_obs)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {got}")
    if x_obs.ndim != 3 or x_obs.shape[-1] != obs_dim:
        raise ValueError(f"x_obs must have shape (B, N, {obs_dim}) (B series of N observations "
                         f"in R^{obs_dim}), got {tuple(x_obs.shape)}")
    if tuple(t_obs.shape) != tuple(x_obs.shape[:2]):
        raise ValueError(f"t_obs must have shape (B, N) = {tuple(x_obs.shape[:2])}, one time "
                         f"per observation, got {tuple(t_obs.shape)}")


def gather_times(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, T, D)``, ``idx`` ``(B, N)`` → ``x[b, idx[b]]`` of shape ``(B, N, D)``."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def time_gaps(t_obs: torch.Tensor) -> torch.Tensor:
    """Gaps to the previous observation, ``(B, N)``; the first entry is 0."""
    return torch.cat([torch.zeros_like(t_obs[:, :1]), t_obs.diff(dim=1)], dim=1)


class RecognitionGRU(nn.Module):
    r"""q(z_0 | x): a GRU over :math:`(x_i, \Delta t_i)` run backwards in time.

    ``forward(x_obs, t_obs)`` with ``x_obs`` ``(B, N, D)`` and ``t_obs`` ``(B, N)`` returns
    ``(mu, logvar)``, each ``(B, latent_dim)``. Running backwards means the last state the
    GRU sees is the first observation, the one that z_0 must explain most directly.

    The gap read with :math:`x_i` is the time back to the previous observation,
    :math:`t_i - t_{i-1}`, and for the first one :math:`t_1 - 0`: the GRU knows how far
    before :math:`x_1` the initial state z_0 (at t = 0) lies. ``origin_gap=False`` gives the
    older encoder, which reads :math:`t_{i+1} - t_i` (0 for the last observation) and never
    sees :math:`t_1`, so z_0 is underdetermined whenever the first observation is late.
    """

    def __init__(self, obs_dim: int = 2, hidden: int = 25, latent_dim: int = 4,
                 origin_gap: bool = True):
        super().__init__()
        self.origin_gap = origin_gap
        self.gru = nn.GRU(obs_dim + 1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x_obs, t_obs):
        check_observations(x_obs, t_obs, self.gru.input_size - 1)
        if self.origin_gap:   # time back to the previous observation, t_0 = 0
            gaps = torch.cat([t_obs[:, :1], t_obs.diff(dim=1)], dim=1)
        else:                 # older encoder: time to the next observation, t_1 never seen
            gaps = torch.cat([t_obs.diff(dim=1), torch.zeros_like(t_obs[:, :1])], dim=1)
        inp = torch.cat([x_obs, gaps.unsqueeze(-1)], dim=-1).flip(1)
        _, h = self.gru(inp)
        mu, logvar = self.out(h[-1]).chunk(2, dim=-1)
        return mu, logvar


class LatentODE(nn.Module):
    r"""Encoder :class:`RecognitionGRU`, latent field f (an autonomous MLP,
    :class:`~neuralode_helpers.ODENet` with ELU) and decoder g (MLP latent → obs).

    ``latent_path(z0, t)`` solves the latent ODE on the grid ``t`` ``(T,)`` with a fixed-step
    solver (``method``, RK4 by default, or e.g. ``"midpoint"``, which evaluates f two times per
    step instead of four; steps of at most ``step_size``) and returns ``(B, T, L)``;
    ``decode(z0, t)`` maps it to ``(B, T, D)``. Training and prediction use the same steps.
    """

    def __init__(self, obs_dim: int = 2, latent_dim: int = 4, hidden: int = 20,
                 rnn_hidden: int = 25, step_size: float = 0.2, adjoint: bool = True,
                 origin_gap: bool = True, method: str = "rk4"):
        super().__init__()
        if method not in ("euler", "midpoint", "rk4"):
            raise ValueError(f"LatentODE: method must be a fixed-step solver, 'euler', "
                             f"'midpoint' or 'rk4', got {method!r}")
        self.latent_dim = latent_dim
        self.step_size, self.method = step_size, method
        self.adjoint = adjoint
        self.encoder = RecognitionGRU(obs_dim, rnn_hidden, latent_dim, origin_gap)
        self.field = ODENet(latent_dim, hidden=(hidden, hidden), activation=nn.ELU,
                            time_dependent=False)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, obs_dim))

    def latent_path(self, z0, t):
        solve = odeint_adjoint if (self.adjoint and torch.is_grad_enabled()) else odeint
        zs = solve(self.field, z0, t, method=self.method, options={"step_size": self.step_size})
        return zs.transpose(0, 1)

    def decode(self, z0, t):
        return self.decoder(self.latent_path(z0, t))

    @torch.no_grad()
    def predict(self, x_obs, t_obs, t):
        """Posterior-mean prediction ``(B, T, D)`` on the grid ``t`` from the observations."""
        mu, _ = self.encoder(x_obs, t_obs)
        return self.decode(mu, t)


def gaussian_log_likelihood(x, mean, std: float) -> torch.Tensor:
    r""":math:`\sum \log\mathcal N(x; \text{mean}, \text{std}^2)` over all but the first axis:
    ``(B, ...)`` → ``(B,)``."""
    var = std ** 2
    lp = -0.5 * ((x - mean) ** 2 / var + math.log(2 * math.pi * var))
    return lp.flatten(1).sum(1)


def normal_kl(mu, logvar) -> torch.Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(\mu, e^{\ell}) \| \mathcal N(0, I)) =
    \tfrac12 \sum (\mu^2 + e^{\ell} - \ell - 1)`: ``(B, L)`` → ``(B,)``."""
    return 0.5 * (mu ** 2 + logvar.exp() - logvar - 1.0).sum(1)


def elbo(model: LatentODE, x_obs, idx, t, noise_std: float, generator=None) -> torch.Tensor:
    """Mean ELBO per series (a scalar to *maximise*) for observations ``x_obs`` ``(B, N, D)``
    at grid indices ``idx`` ``(B, N)`` of the grid ``t`` ``(T,)``.

    The ODE is solved only up to the last observed grid point, with one sample of z_0.
    """
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError(f"t must be the shared time grid, a 1-D tensor (T,), got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32):
        raise TypeError("idx must be a tensor of grid indices (torch.long), e.g. from "
                        "irregular_indices, got "
                        f"{idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__}")
    if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < len(t)):
        raise ValueError(f"idx must index the grid t of {len(t)} times, got indices from "
                         f"{int(idx.min())} to {int(idx.max())}")
    t_obs = t[idx]
    mu, logvar = model.encoder(x_obs, t_obs)
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    z0 = mu + (0.5 * logvar).exp() * eps
    last = int(idx.max()) + 1
    x_pred = gather_times(model.decode(z0, t[:last]), idx)
    ll = gaussian_log_likelihood(x_obs, x_pred, noise_std)
    return (ll - normal_kl(mu, logvar)).mean()


class GRUForecaster(nn.Module):
    r"""Baseline: an autoregressive GRU with time gaps as input (the paper's "RNN").

    At step k it reads :math:`(x_k, \Delta_k)`, where :math:`\Delta_k` is the gap to the time
    it must predict next, and outputs :math:`\hat x_{k+1}`. Trained by one-step-ahead MSE on
    the observed points; :meth:`forecast` then feeds back its own predictions.
    """

    def __init__(self, obs_dim: int = 2, hidden: int = 32):
        super().__init__()
        self.gru = nn.GRU(obs_dim + 1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, obs_dim)

    def forward(self, x_obs, t_obs):
        """One-step-ahead predictions of ``x_obs[:, 1:]``, shape ``(B, N-1, D)``."""
        check_observations(x_obs, t_obs, self.out.out_features)
        inp = torch.cat([x_obs[:, :-1], t_obs.diff(dim=1).unsqueeze(-1)], dim=-1)
        h, _ = self.gru(inp)
        return x_obs[:, :-1] + self.out(h)

    @torch.no_grad()
    def forecast(self, x_obs, t_obs, t_future):
        """Read all observations, then roll out to the times ``t_future`` ``(F,)`` (after the
        last observation of every series), feeding back each prediction: ``(B, F, D)``."""
        check_observations(x_obs, t_obs, self.out.out_features)
        gaps = t_obs.diff(dim=1)
        inp = torch.cat([x_obs[:, :-1], gaps.unsqueeze(-1)], dim=-1)
        _, h = self.gru(inp)
        x, t_prev = x_obs[:, -1], t_obs[:, -1]
        preds = []
        for tf in t_future:
            gap = (tf - t_prev).unsqueeze(-1)
            o, h = self.gru(torch.cat([x, gap], dim=-1).unsqueeze(1), h)
            x = x + self.out(o[:, 0])
            t_prev = torch.full_like(t_prev, float(tf))
            preds.append(x)
        return torch.stack(preds, dim=1)
