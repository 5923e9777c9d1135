r"""Training an :class:`ODENet` on the seed's toy problem, batched.

The seed solves one window :math:`[t_0, t_0 + \Delta]` at a time. Here every window of a step
goes into one solve: with :math:`t = t_0 + s\Delta`, each window becomes the interval
:math:`s \in [0, 1]` of the rescaled system

.. math:: \frac{dz}{ds} = \Delta\, f(z, t_0 + s\Delta; \theta),

so a batch of B windows is one state of shape (B, 1) solved on a shared s grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .adjoint import odeint_adjoint
from .models import ODENet
from .problems import toy_solution
from .solvers import Stats, odeint


class WindowedField(nn.Module):
    r"""Rescaled dynamics :math:`g(s, z) = \Delta f(t_0 + s\Delta, z)` for a batch of windows.

    ``t0``: (B,) window starts; ``z``: (B, D). The parameters are those of ``model``.
    """

    def __init__(self, model: nn.Module, t0: torch.Tensor, delta: float):
        super().__init__()
        self.model = model
        self.t0 = t0
        self.delta = float(delta)

    def forward(self, s, z):
        return self.delta * self.model(self.t0 + s * self.delta, z)


@dataclass
class TrainResult:
    """What :func:`train` measured: one entry per optimisation step."""

    losses: list = field(default_factory=list)
    nfe_forward: list = field(default_factory=list)
    nfe_backward: list = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False


def sample_windows(batch_size, generator, t0_range=(-1.0, 9.0), c_range=(0.0, 0.0),
                   dtype=torch.float32):
    """Window starts t0 ~ U[t0_range] and offsets c ~ U[c_range], each of shape (B,)."""
    u = torch.rand(2, batch_size, generator=generator, dtype=dtype)
    t0 = t0_range[0] + (t0_range[1] - t0_range[0]) * u[0]
    c = c_range[0] + (c_range[1] - c_range[0]) * u[1]
    return t0, c


def window_loss(model, t0, c, *, window=1.0, n_obs=2, adjoint=True, method="dopri5",
                rtol=1e-5, atol=1e-6, stats=None):
    """MSE between predicted and true z at ``n_obs`` evenly spaced points of each window
    (the first point is the initial condition, so ``n_obs=2`` is the seed's loss)."""
    s = torch.linspace(0, 1, n_obs, dtype=t0.dtype)
    t_obs = t0[None, :] + window * s[:, None]  # (n_obs, B)
    z_true = toy_solution(t_obs, c[None, :]).unsqueeze(-1)  # (n_obs, B, 1)
    field_ = WindowedField(model, t0, window)
    solver = odeint_adjoint if adjoint else odeint
    z_pred = solver(field_, z_true[0], s, method=method, rtol=rtol, atol=atol, stats=stats)
    return nn.functional.mse_loss(z_pred[1:], z_true[1:])


def train(model, *, steps=300, batch_size=100, lr=1e-2, lr_final=1e-3, weight_decay=0.0,
          window=1.0, n_obs=2, t0_range=(-1.0, 9.0), c_range=(0.0, 0.0), method="dopri5",
          rtol=1e-5, atol=1e-6, adjoint=True, seed=0, progress=True, callback=None,
          result=None):
    """Fit ``model`` to the toy problem with Adam; every step solves ``batch_size`` windows
    in one batched solve. The learning rate decays geometrically from ``lr`` to ``lr_final``.

    Returns a :class:`TrainResult` (loss and NFE per step, wall time). Pressing Ctrl-C
    (KeyboardInterrupt) stops cleanly: the model keeps its weights so far and the result is
    marked ``interrupted``. Pass ``result`` to append to an earlier run's history.
    ``callback(step, loss)`` is called after each step.
    """
    if steps < 0 or batch_size < 1 or n_obs < 2:
        raise ValueError("need steps >= 0, batch_size >= 1 and n_obs >= 2")
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gamma = (lr_final / lr) ** (1 / max(1, steps)) if lr_final else 1.0
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    dtype = next(model.parameters()).dtype
    result = TrainResult() if result is None else result
    stats = Stats()
    bar = tqdm(range(steps), desc="training", disable=not progress, leave=False)
    start = time.perf_counter()
    try:
        for step in bar:
            t0, c = sample_windows(batch_size, generator, t0_range, c_range, dtype)
            opt.zero_grad()
            loss = window_loss(model, t0, c, window=window, n_obs=n_obs, adjoint=adjoint,
                               method=method, rtol=rtol, atol=atol, stats=stats)
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}: try a smaller lr")
            result.losses.append(value)
            result.nfe_forward.append(stats.forward.nfe)
            result.nfe_backward.append(stats.backward.nfe)
            bar.set_postfix(loss=f"{value:.2e}", refresh=False)
            if callback is not None:
                callback(step, value)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        result.seconds += time.perf_counter() - start
    return result


@torch.no_grad()
def predict(model, z0, t, *, method="dopri5", rtol=1e-6, atol=1e-8):
    """Trajectory of the trained model from ``z0`` (shape (..., D)) at times ``t`` (T,)."""
    return odeint(model, z0, t, method=method, rtol=rtol, atol=atol)


def fit_curves(model, c=0.0, t_start=0.0, t_end=10.0, n=100):
    """The true and predicted curves over ``n`` points of [t_start, t_end], predicted from
    the true z(t_start). Returns (t, z_true, z_pred), each a 1-D tensor of length n."""
    if not t_end > t_start:
        raise ValueError(f"need t_end > t_start, got [{t_start}, {t_end}]")
    dtype = next(model.parameters()).dtype
    t = torch.linspace(t_start, t_end, n, dtype=dtype)
    z_true = toy_solution(t, c)
    z_pred = predict(model, z_true[:1], t)[:, 0]
    return t, z_true, z_pred


def fit_mse(model, c=0.0, t_start=0.0, t_end=10.0, n=100) -> float:
    """Mean squared error of :func:`fit_curves` (the seed's figure: c=0, [0, 10], 100 points)."""
    _, z_true, z_pred = fit_curves(model, c, t_start, t_end, n)
    return float(((z_pred - z_true) ** 2).mean())


def save_model(model: ODENet, path) -> None:
    """Write the model's constructor arguments and weights to ``path`` (torch.save)."""
    torch.save({"config": model.config(), "state_dict": model.state_dict()}, path)


def load_model(path) -> ODENet:
    """Rebuild an :class:`ODENet` written by :func:`save_model`."""
    blob = torch.load(path, weights_only=True)
    config = dict(blob["config"])
    config["activation"] = getattr(nn, config["activation"])
    model = ODENet(**config)
    model.load_state_dict(blob["state_dict"])
    return model
