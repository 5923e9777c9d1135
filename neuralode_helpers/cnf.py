r"""Continuous normalizing flows (Chen et al. 2018, §4) and a planar-flow baseline.

Instantaneous change of variables: if :math:`\dot z = f(z, t)` then

.. math::
    \frac{d \log p(z(t))}{dt} = -\operatorname{tr}\frac{\partial f}{\partial z}(z(t), t).

:class:`CNFField` is the ODE for the state :math:`[z, \ell]` (shape ``(B, D+1)``): it returns
:math:`[f, -\operatorname{tr}\,\partial f/\partial z]`. With a standard normal base density at
:math:`t = 0` and data at :math:`t = 1`,

.. math::
    \log p_1(x) = \log \mathcal N(z(0); 0, I) - \int_0^1 \operatorname{tr}
    \frac{\partial f}{\partial z}\,dt,

obtained by one solve of :math:`[x, 0]` from :math:`t = 1` back to :math:`t = 0`
(:meth:`CNF.log_prob`). The trace is exact (D backward passes); for large D, Hutchinson's
estimator :math:`\operatorname{tr} J = \mathbb E_\varepsilon[\varepsilon^\top J \varepsilon]`
needs one (:func:`hutchinson_divergence`).

:class:`PlanarFlow` (Rezende & Mohamed 2015) is the discrete baseline:
:math:`x \mapsto x + \hat u\,\tanh(w^\top x + b)` layer after layer, with
:math:`\log|\det J| = \log|1 + \hat u^\top w\,\tanh'(w^\top x + b)|`.

:func:`fit_flow` trains either one by maximum likelihood with the same loop (seeded batches,
Adam, cosine learning rate), so that two flows can be compared at the same budget.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .adjoint import odeint_adjoint
from .models import ODENet
from .solvers import Stats, odeint
from .solvers.checks import check_int


def standard_normal_logprob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathcal N(z; 0, I)` summed over the last axis: ``(..., D)`` → ``(...)``."""
    return -0.5 * (z ** 2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def exact_divergence(f: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    r""":math:`\sum_i \partial f_i / \partial z_i` for a batch ``f, z`` ``(B, D)`` → ``(B,)``.

    One backward pass per dimension; summing ``f[:, i]`` over the batch is allowed because
    sample b's output depends only on sample b's input.
    """
    div = torch.zeros(f.shape[:-1], dtype=f.dtype, device=f.device)
    D = f.shape[-1]
    for i in range(D):
        g = torch.autograd.grad(f[..., i].sum(), z, create_graph=create_graph,
                                retain_graph=create_graph or i < D - 1)[0]
        div = div + g[..., i]
    return div


def hutchinson_divergence(f, z, eps, create_graph: bool) -> torch.Tensor:
    r"""Unbiased estimate :math:`\varepsilon^\top (\partial f/\partial z)\,\varepsilon` of the
    divergence with one backward pass; ``eps`` ``(B, D)`` with :math:`\mathbb E[\varepsilon
    \varepsilon^\top] = I` (Gaussian or Rademacher)."""
    # retain_graph: callers may draw several probes for the same f
    g = torch.autograd.grad((f * eps).sum(), z, create_graph=create_graph, retain_graph=True)[0]
    return (g * eps).sum(-1)


class CNFField(nn.Module):
    r"""ODE for the state ``[z, logp]`` ``(B, D+1)``: returns ``[f(z, t), -tr(∂f/∂z)]``.

    ``f`` is an MLP ``[z, t]`` → ``hidden`` → ``hidden`` → D with tanh
    (:class:`~neuralode_helpers.ODENet`). The trace needs derivatives of f inside the field,
    so the field switches grad mode on; it keeps that inner graph only when the caller is
    differentiating (backprop through the solver, or the adjoint's vector-Jacobian products).
    """

    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(f"dim must be a positive int (the dimension of the data), got "
                             f"{dim!r}")
        self.dim = dim
        self.net = ODENet(dim, hidden=(hidden, hidden), activation=nn.Tanh)

    def forward(self, t, state):
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():
            z = state[..., :self.dim]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.net(t, z)
            div = exact_divergence(f, z, create_graph=outer_grad)
        if not outer_grad:
            f, div = f.detach(), div.detach()
        return torch.cat([f, -div.unsqueeze(-1)], dim=-1)


def _points(x, dim, like, name="x"):
    """``x`` as points ``(..., dim)`` in the dtype of the model's parameter ``like`` (float64
    data for a float32 model, say), or a clear error."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of points (B, {dim}), got "
                        f"{type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must hold points in R^{dim}, shape (B, {dim}), got "
                         f"{tuple(x.shape)}")
    return x.to(like.dtype)


class CNF(nn.Module):
    """A continuous normalizing flow from N(0, I) at t=0 to the data at t=1.

    Solved with fixed-step RK4 (``n_steps`` on [0, 1]); gradients by the adjoint.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, n_steps: int = 10):
        super().__init__()
        self.dim = dim
        self.field = CNFField(dim, hidden)
        self.options = {"step_size": 1.0 / n_steps}

    def _solve(self, state, t, stats=None):
        solve = odeint_adjoint if torch.is_grad_enabled() else odeint
        return solve(self.field, state, t, method="rk4", options=self.options, stats=stats)

    def log_prob(self, x, t1: float = 1.0, stats: Stats | None = None):
        r""":math:`\log p_{t_1}(x)` ``(B,)`` for points ``x`` ``(B, D)``: solve ``[x, 0]`` from
        ``t1`` back to 0, then :math:`\log\mathcal N(z(0)) - \ell(0)`. ``stats``: a
        :class:`~neuralode_helpers.Stats` that counts the solve's field evaluations (and,
        after ``backward()``, the adjoint's)."""
        x = _points(x, self.dim, next(self.parameters()))
        state = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
        t = torch.tensor([t1, 0.0], dtype=x.dtype, device=x.device)
        end = self._solve(state, t, stats)[-1]
        return standard_normal_logprob(end[..., :self.dim]) - end[..., self.dim]

    def sample_path(self, z0, t):
        r"""Push base samples ``z0`` ``(B, D)`` forward to the times ``t`` ``(T,)`` (from 0):
        returns ``(T, B, D+1)``, points and their log densities :math:`\log p_t(z(t))`."""
        z0 = _points(z0, self.dim, next(self.parameters()), "z0")
        state = torch.cat([z0, standard_normal_logprob(z0).unsqueeze(-1)], dim=-1)
        return self._solve(state, t)


class PlanarFlow(nn.Module):
    r"""``n_layers`` planar maps from data to noise; :meth:`log_prob` by the change of variables

    .. math::
        \log p(x) = \log\mathcal N(f_K \circ \dots \circ f_1(x)) + \sum_k
        \log\big|1 + \hat u_k^\top w_k \tanh'(w_k^\top x_{k-1} + b_k)\big|.

    :math:`\hat u = u + (m(w^\top u) - w^\top u)\,w/\|w\|^2` with :math:`m(a) = -1 +
    \operatorname{softplus}(a)` keeps :math:`\hat u^\top w > -1`, so every layer is invertible
    and the density is a true density. 2D+1 parameters per layer.
    """

    def __init__(self, dim: int = 2, n_layers: int = 64, init_scale: float = 0.1):
        super().__init__()
        self.u = nn.Parameter(init_scale * torch.randn(n_layers, dim))
        self.w = nn.Parameter(init_scale * torch.randn(n_layers, dim))
        self.b = nn.Parameter(torch.zeros(n_layers))

    def forward(self, x):
        """``x`` ``(B, D)`` → ``(z, logdet)`` with ``z`` ``(B, D)``, ``logdet`` ``(B,)``."""
        x = _points(x, self.w.shape[1], self.w)
        # the layers' constants in one go (K, D): only the data-dependent part is sequential
        wu = (self.w * self.u).sum(-1, keepdim=True)                          # (K, 1)
        u_hat = self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w ** 2).sum(-1, keepdim=True)
        uw = (u_hat * self.w).sum(-1)                                          # (K,) > -1
        logdet = x.new_zeros(x.shape[:-1])
        for k in range(len(self.b)):
            h = torch.tanh(x @ self.w[k] + self.b[k])                          # (B,)
            x = x + u_hat[k] * h.unsqueeze(-1)
            logdet = logdet + torch.log((1 + uw[k] * (1 - h ** 2)).abs())
        return x, logdet

    def log_prob(self, x):
        z, logdet = self(x)
        return standard_normal_logprob(z) + logdet


@dataclass
class FlowFit:
    """What :func:`fit_flow` returns: the batch NLL per step (nats), and the CPU time of
    this process (``time.process_time``, seconds) and the wall time the steps took."""

    losses: list = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def fit_flow(model: nn.Module, x: torch.Tensor, *, steps: int, lr: float,
             batch_size: int = 256, seed: int = 0, lr_final_ratio: float = 0.1,
             progress: bool = True, desc: str = "training") -> FlowFit:
    r"""Maximum likelihood for any density model with ``log_prob(x)`` ``(B, D)`` → ``(B,)``
    (:class:`CNF`, :class:`PlanarFlow`): ``steps`` steps of Adam on the mean NLL
    :math:`-\frac1B\sum_b \log p(x_b)` of batches of ``batch_size`` rows of ``x`` ``(N, D)``,
    drawn with replacement by a generator seeded with ``seed``; the learning rate falls from
    ``lr`` to ``lr_final_ratio * lr`` along half a cosine. The model is trained in place.
    """
    if not callable(getattr(model, "log_prob", None)):
        raise TypeError(f"model must have a log_prob(x) method, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) == 0:
        raise ValueError("x must be a non-empty tensor of shape (N, D), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    check_int("steps", steps)  # their range is checked below, together with the rates
    check_int("batch_size", batch_size)
    if steps < 1 or batch_size < 1 or not lr > 0 or not 0 < lr_final_ratio <= 1:
        raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0 and 0 < lr_final_ratio <= "
                         f"1, got steps={steps}, batch_size={batch_size}, lr={lr}, "
                         f"lr_final_ratio={lr_final_ratio}")
    x = x.to(next(model.parameters()).dtype)  # float64 data for a float32 model, say
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr_final_ratio * lr)
    fit = FlowFit()
    cpu, wall = time.process_time(), time.perf_counter()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        batch = x[torch.randint(0, len(x), (batch_size,), generator=generator)]
        loss = -model.log_prob(batch).mean()
        value = loss.item()
        # checked before the step: a non-finite loss must not reach the weights
        if not math.isfinite(value):
            raise FloatingPointError(f"NLL became {value} at step {step}: try a smaller lr")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        fit.losses.append(value)
    fit.cpu_seconds = time.process_time() - cpu
    fit.wall_seconds = time.perf_counter() - wall
    return fit
