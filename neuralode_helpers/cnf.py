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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .adjoint import odeint_adjoint
from .models import ODENet
from .solvers import odeint


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


class CNF(nn.Module):
    """A continuous normalizing flow from N(0, I) at t=0 to the data at t=1.

    Solved with fixed-step RK4 (``n_steps`` on [0, 1]); gradients by the adjoint.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, n_steps: int = 10):
        super().__init__()
        self.dim = dim
        self.field = CNFField(dim, hidden)
        self.options = {"step_size": 1.0 / n_steps}

    def _solve(self, state, t):
        solve = odeint_adjoint if torch.is_grad_enabled() else odeint
        return solve(self.field, state, t, method="rk4", options=self.options)

    def log_prob(self, x, t1: float = 1.0):
        r""":math:`\log p_{t_1}(x)` ``(B,)`` for points ``x`` ``(B, D)``: solve ``[x, 0]`` from
        ``t1`` back to 0, then :math:`\log\mathcal N(z(0)) - \ell(0)`."""
        state = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
        t = torch.tensor([t1, 0.0], dtype=x.dtype, device=x.device)
        end = self._solve(state, t)[-1]
        return standard_normal_logprob(end[..., :self.dim]) - end[..., self.dim]

    def sample_path(self, z0, t):
        r"""Push base samples ``z0`` ``(B, D)`` forward to the times ``t`` ``(T,)`` (from 0):
        returns ``(T, B, D+1)``, points and their log densities :math:`\log p_t(z(t))`."""
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
        logdet = x.new_zeros(x.shape[:-1])
        for u, w, b in zip(self.u, self.w, self.b):
            wu = w @ u
            u_hat = u + (F.softplus(wu) - 1 - wu) * w / (w @ w)
            a = x @ w + b
            x = x + u_hat * torch.tanh(a).unsqueeze(-1)
            logdet = logdet + torch.log((1 + (u_hat @ w) * (1 - torch.tanh(a) ** 2)).abs())
        return x, logdet

    def log_prob(self, x):
        z, logdet = self(x)
        return standard_normal_logprob(z) + logdet
