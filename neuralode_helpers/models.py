r"""Vector fields :math:`f(z, t; \theta)` to put inside an ODE solve.

As everywhere in the series, the maths writes :math:`f(z, t; \theta)` and the code calls
``forward(t, z)``, time first (the convention of ``torchdiffeq``).
"""

from __future__ import annotations

import copy
import numbers

import torch
from torch import nn


class ODENet(nn.Module):
    r"""The network of the toy problem, for any state dimension: an MLP on the input
    :math:`[z, t]`.

    :math:`\frac{dz}{dt} = f(z, t; \theta)`, computed from the concatenated input
    :math:`[z, t]`: ``state_dim`` = D inputs from z plus one for t (unless
    ``time_dependent=False``), hidden layers of the given widths, ``activation`` between them
    and a linear output of width D. The default is the 2 → 50 → 75 → 1 network with GELU that
    notebooks 02–04 train on the toy problem.

    ``forward(t, z)``: ``z`` has shape ``(..., D)``; ``t`` is a 0-d tensor or a tensor
    broadcastable to ``z.shape[:-1]`` (one time per sample, used when windows are rescaled);
    returns ``(..., D)``.

    ``time_input="sincos"`` feeds :math:`(\sin t, \cos t)` instead of :math:`t` (one input
    more): the field then repeats every :math:`2\pi` in t, whatever the weights.
    """

    def __init__(self, state_dim: int = 1, hidden=(50, 75), activation=nn.GELU,
                 time_dependent: bool = True, time_input: str = "t"):
        super().__init__()
        if time_input not in ("t", "sincos"):
            raise ValueError(f"time_input must be 't' or 'sincos', got {time_input!r}")
        if isinstance(state_dim, bool) or not isinstance(state_dim, numbers.Integral) \
                or state_dim < 1:
            raise ValueError(f"state_dim must be a positive int, got {state_dim!r}")
        # 50 means one hidden layer, (50,)
        hidden = (hidden,) if isinstance(hidden, numbers.Integral) else tuple(hidden)
        if not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0
                   for w in hidden):
            raise ValueError(f"hidden must be positive ints (layer widths), got {hidden!r}")
        activation = _activation_factory(activation)
        self.state_dim = int(state_dim)
        self.hidden = tuple(int(w) for w in hidden)
        self.time_dependent = time_dependent
        self.time_input = time_input
        n_time = (2 if time_input == "sincos" else 1) if time_dependent else 0
        widths = (self.state_dim + n_time, *self.hidden)
        layers = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), activation()]
        layers.append(nn.Linear(widths[-1], self.state_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.state_dim:
            raise ValueError(f"ODENet expects z of shape (..., {self.state_dim}), "
                             f"got {tuple(z.shape)}")
        if not self.time_dependent:
            return self.net(z)
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        tt = t.expand(z.shape[:-1]).unsqueeze(-1)
        if self.time_input == "sincos":
            tt = torch.cat([torch.sin(tt), torch.cos(tt)], dim=-1)
        return self.net(torch.cat([z, tt], dim=-1))

    def config(self) -> dict:
        """Constructor arguments (the activation by class name), for :func:`save_model`."""
        act = self.net[1].__class__.__name__ if len(self.net) > 1 else "GELU"
        return dict(state_dim=self.state_dim, hidden=list(self.hidden), activation=act,
                    time_dependent=self.time_dependent, time_input=self.time_input)


def _activation_factory(activation):
    """A function that makes one activation layer: from a class (nn.Tanh) or from a module
    (nn.Tanh(), copied for each layer so that layers never share parameters)."""
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation
    if isinstance(activation, nn.Module):
        return lambda: copy.deepcopy(activation)
    raise TypeError("activation must be an nn.Module class such as nn.Tanh (or a module, "
                    f"nn.Tanh()), got {activation!r}")


class LinearODE(nn.Module):
    r""":math:`\dot z = A z` for a learnable (D, D) matrix A; z has shape ``(..., D)``.

    Its solution :math:`z(t) = e^{A (t - t_0)} z_0` is known in closed form, which makes it the
    reference problem for every gradient check.
    """

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T
