r"""Classifiers built from ODE blocks, their ResNet counterpart, and augmented neural ODEs.

* ResNet block (Chen et al. 2018, §3): :math:`h_{l+1} = h_l + f_l(h_l)`, L blocks, L weight
  sets; the graph kept for backprop grows like L.
* ODE block: :math:`h(1) = h(0) + \int_0^1 f(h(t), t; \theta)\,dt`, one weight set; with
  the adjoint, memory does not depend on how many steps the solver takes.
* Augmented neural ODE (Dupont et al. 2019): solve in :math:`\mathbb R^{d+p}` from
  :math:`[x, 0_p]`. A d-dimensional flow is a homeomorphism and cannot change the topology of
  the data (trajectories never cross); the p extra dimensions give room to go around.

Shapes: inputs ``(B, in_dim)``; classifiers return logits ``(B, n_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn

from .adjoint import odeint_adjoint
from .models import ODENet
from .solvers import Stats, odeint
from .solvers.checks import check_method


def _inputs(x, first: nn.Linear):
    """``x`` ``(B, in_dim)`` for a classifier whose first layer is ``first``, or a clear
    error (torch's own says only that two shapes cannot be multiplied)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, {first.in_features}), got "
                        f"{type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != first.in_features:
        raise ValueError(f"x must have shape (B, {first.in_features}) (in_dim = "
                         f"{first.in_features} features), got {tuple(x.shape)}")
    return x


class ODEBlock(nn.Module):
    r"""Maps ``h`` ``(B, D)`` to :math:`h(1)` for :math:`\dot h = f(t, h)`, :math:`h(0) = h`.

    ``adjoint=True`` differentiates with :func:`~neuralode_helpers.odeint_adjoint`, else by
    backprop through the solver's steps. ``self.stats`` holds the last call's
    :class:`~neuralode_helpers.Stats` (forward NFE after the call, backward NFE after
    ``backward()``). Solver settings can be changed between calls (e.g. ``block.rtol = 1e-5``).
    """

    def __init__(self, field: nn.Module, *, method="dopri5", rtol=1e-3, atol=1e-3,
                 options=None, adjoint=True):
        super().__init__()
        if not isinstance(field, nn.Module):
            raise TypeError(f"field must be an nn.Module (its parameters are trained), got "
                            f"{type(field).__name__}")
        check_method(method, rtol, atol, options)  # a typo fails here, not at the first batch
        self.field = field
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options
        self.adjoint = adjoint
        self.stats = Stats()

    def forward(self, h):
        self.stats = Stats()
        t = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
        solve = odeint_adjoint if (self.adjoint and torch.is_grad_enabled()) else odeint
        return solve(self.field, h, t, method=self.method, rtol=self.rtol, atol=self.atol,
                     options=self.options, stats=self.stats)[-1]


class ODENetClassifier(nn.Module):
    """``Linear(in_dim, width)`` → tanh → :class:`ODEBlock` on an MLP field
    ``[h, t]`` → ``hidden`` → ``width`` (tanh) → ``Linear(width, n_classes)``."""

    def __init__(self, in_dim=64, width=32, hidden=64, n_classes=10, **solver):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(in_dim, width), nn.Tanh())
        self.block = ODEBlock(ODENet(width, hidden=(hidden,), activation=nn.Tanh), **solver)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.block(self.stem(_inputs(x, self.stem[0]))))


class ResidualBlock(nn.Module):
    r""":math:`h + s\,f(h)`, f an MLP ``width`` → ``hidden`` → ``width`` with tanh: one explicit
    Euler step of size s of an ODE whose field changes from block to block."""

    def __init__(self, width=32, hidden=64, scale=1.0):
        super().__init__()
        self.scale = scale
        self.f = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, width))

    def forward(self, h):
        return h + self.scale * self.f(h)


class ResNetClassifier(nn.Module):
    """The ODE-Net's stem and head around ``depth`` :class:`ResidualBlock` s of the same
    width; each block's residual is scaled by ``1/depth``, so the network is Euler's method
    on [0, 1] with ``depth`` steps and a field that may differ at every step."""

    def __init__(self, in_dim=64, width=32, hidden=64, n_classes=10, depth=4):
        super().__init__()
        self.depth = depth
        self.stem = nn.Sequential(nn.Linear(in_dim, width), nn.Tanh())
        self.blocks = nn.ModuleList(ResidualBlock(width, hidden, 1.0 / depth)
                                    for _ in range(depth))
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        h = self.stem(_inputs(x, self.stem[0]))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


class AugmentedNODE(nn.Module):
    r"""Neural ODE on :math:`[x, 0_p] \in \mathbb R^{d+p}` (``augment`` = p; p = 0 is a plain
    neural ODE), field an MLP ``[z, t]`` → ``hidden`` → ``hidden`` → d+p (tanh).

    ``forward(x)`` with ``x`` ``(B, d)`` returns the final state ``(B, d+p)``;
    ``readout`` (``None`` or a ``Linear(d+p, out_dim)``) is applied if set.
    ``trajectory(x, t)`` returns the whole path ``(T, B, d+p)`` for plots.
    Solved with fixed-step RK4 (``n_steps`` steps on [0, 1]); gradients by the adjoint, or
    with ``adjoint=False`` by backprop through the RK4 steps (the same gradient up to the
    solver's error, and faster for these small problems; the graph grows with ``n_steps``).
    """

    def __init__(self, dim=2, augment=0, hidden=32, out_dim=None, n_steps=20, adjoint=True):
        super().__init__()
        self.dim, self.augment, self.adjoint = dim, augment, adjoint
        self.field = ODENet(dim + augment, hidden=(hidden, hidden), activation=nn.Tanh)
        self.readout = None if out_dim is None else nn.Linear(dim + augment, out_dim)
        self.options = {"step_size": 1.0 / n_steps}

    def lift(self, x):
        return torch.cat([x, x.new_zeros(*x.shape[:-1], self.augment)], dim=-1)

    def trajectory(self, x, t):
        solve = odeint_adjoint if (self.adjoint and torch.is_grad_enabled()) else odeint
        return solve(self.field, self.lift(x), t, method="rk4", options=self.options)

    def forward(self, x):
        t = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
        z1 = self.trajectory(x, t)[-1]
        return z1 if self.readout is None else self.readout(z1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
