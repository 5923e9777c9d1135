r"""Problems with known answers: the toy ODE of the series and linear systems."""

from __future__ import annotations

import numbers

import torch


def toy_solution(t, c=0.0):
    r"""The target curve of the toy problem, :math:`z(t) = e^{1 - \cos t} + c`.

    It solves :math:`\frac{dz}{dt} = \sin t \,(z - c)` (equivalently
    :math:`\frac{dz}{dt} = \sin t\, e^{1 - \cos t}`, which does not depend on z or c) from
    :math:`z(0) = 1 + c`. ``t`` and ``c`` broadcast; returns a tensor.
    """
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return torch.exp(1 - torch.cos(t)) + torch.as_tensor(c, dtype=t.dtype)


def toy_dynamics(t, z, c=0.0):
    r"""The right-hand side :math:`\sin t\,(z - c)` whose solution is :func:`toy_solution`."""
    return torch.sin(torch.as_tensor(t, dtype=z.dtype)) * (z - c)


def linear_solution(A: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Exact solution of :math:`\dot z = A z`: :math:`z(t_i) = e^{A (t_i - t_0)} z_0`.

    ``A``: (D, D); ``z0``: (..., D); ``t``: (T,). Returns (T, ..., D). Differentiable in all
    three arguments (through ``torch.linalg.matrix_exp``), so it gives exact reference
    gradients.
    """
    dt = (t - t[0]).reshape(-1, 1, 1)
    expm = torch.linalg.matrix_exp(dt * A)  # (T, D, D)
    zf = z0.reshape(-1, z0.shape[-1])  # (B, D)
    out = torch.einsum("tij,bj->tbi", expm, zf)
    return out.reshape(len(t), *z0.shape)


def random_stable_matrix(dim: int, generator: torch.Generator | None = None,
                         dtype=torch.float64, max_real: float = -0.1) -> torch.Tensor:
    """A random (dim, dim) matrix whose eigenvalues all have real part at most ``max_real``."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    M = torch.randn(dim, dim, generator=generator, dtype=dtype)
    shift = torch.linalg.eigvals(M).real.max() - max_real
    return M - shift.clamp(min=0) * torch.eye(dim, dtype=dtype)
