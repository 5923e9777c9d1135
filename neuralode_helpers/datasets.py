r"""Small synthetic data sets for the paper's experiments, generated on the spot (no downloads).

Every generator takes a ``seed`` (or a ``torch.Generator``) and is deterministic given it.

* :func:`cubic_spiral` — one trajectory of :math:`\dot z = (z^{\circ 3}) A^\top` (the classic
  neural-ODE demo; :math:`z^{\circ 3}` is the element-wise cube).
* :func:`spiral_family` — many damped spirals, clockwise or counter-clockwise, with noise.
* :func:`irregular_indices` — a random sorted subset of grid points per series.
* :func:`two_moons`, :func:`two_circles` — 2-D point clouds for density estimation.
* :func:`nested_circles` — a 2-D disk inside a ring, labelled 0/1 (Dupont et al. 2019).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .solvers import odeint
from .solvers.checks import check_int

#: The matrix of the classic spiral demo: a slow decay (-0.1) and a fast rotation (±2).
SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))


def cubic_spiral(n_points: int = 400, t_end: float = 10.0, z0=(2.0, 0.0), A=SPIRAL_A,
                 dtype=torch.float32):
    r"""One trajectory of :math:`\dot z = (z^{\circ 3}) A^\top`, :math:`z(0) = z_0`.

    Solved with dopri5 at ``rtol=1e-8`` in float64. Returns ``(t, z)`` with ``t`` of shape
    ``(n_points,)`` (evenly spaced on ``[0, t_end]``) and ``z`` of shape ``(n_points, 2)``.
    """
    A = torch.tensor(A, dtype=torch.float64)
    t = torch.linspace(0.0, t_end, n_points, dtype=torch.float64)
    z = odeint(lambda _, y: (y ** 3) @ A.T, torch.tensor(z0, dtype=torch.float64), t,
               rtol=1e-8, atol=1e-10)
    return t.to(dtype), z.to(dtype)


def spiral_family(n: int, n_grid: int = 64, t_end: float = 4 * math.pi, noise: float = 0.1,
                  decay: float = 0.1, omega: float = 1.0, seed: int = 0,
                  dtype=torch.float32):
    r"""``n`` damped spirals :math:`x(t) = r_0 e^{-\lambda t}(\cos\phi(t), \sin\phi(t))`,
    :math:`\phi(t) = \phi_0 + s\,\omega t`, sampled on a shared grid.

    Each spiral draws its direction :math:`s \in \{-1, +1\}`, its phase
    :math:`\phi_0 \sim U[0, 2\pi)` and radius :math:`r_0 \sim U[1, 2]`. A spiral solves the
    linear ODE :math:`\dot x = (-\lambda I + s\,\omega J) x` (J the rotation generator), so a
    4-D latent ODE can hold both directions at once.

    Returns ``(t, x_true, x_noisy, s)``: ``t`` ``(n_grid,)`` on ``[0, t_end]``,
    ``x_true`` and ``x_noisy = x_true + noise·ε`` of shape ``(n, n_grid, 2)``, and the
    directions ``s`` ``(n,)``.
    """
    n = check_int("n", n, 0)
    n_grid = check_int("n_grid", n_grid, 1)
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], size=n)
    phi0 = rng.uniform(0.0, 2 * math.pi, size=n)
    r0 = rng.uniform(1.0, 2.0, size=n)
    t = np.linspace(0.0, t_end, n_grid)
    phi = phi0[:, None] + s[:, None] * omega * t[None, :]
    r = r0[:, None] * np.exp(-decay * t[None, :])
    x = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=-1)
    x_noisy = x + noise * rng.standard_normal(x.shape)
    as_t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return as_t(t), as_t(x), as_t(x_noisy), as_t(s)


def irregular_indices(n_series: int, n_window: int, n_obs: int, seed: int = 0) -> torch.Tensor:
    """For each of ``n_series`` series, ``n_obs`` distinct grid indices drawn uniformly from
    ``range(n_window)`` and sorted: a ``(n_series, n_obs)`` long tensor.

    Every series gets its own observation times (irregular sampling), but all of them are
    points of one shared grid, so a batch can still be solved in one ODE call.
    """
    n_series = check_int("n_series", n_series, 0)
    n_window = check_int("n_window", n_window, 1)
    n_obs = check_int("n_obs", n_obs, 1)
    if not 1 <= n_obs <= n_window:
        raise ValueError(f"need 1 <= n_obs <= n_window, got n_obs={n_obs}, n_window={n_window}")
    g = torch.Generator().manual_seed(seed)
    keys = torch.rand(n_series, n_window, generator=g)
    return keys.argsort(dim=1)[:, :n_obs].sort(dim=1).values


def two_moons(n: int, noise: float = 0.05, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """``n`` points ``(n, 2)`` on two interleaved half circles (radius 1), plus Gaussian noise,
    centred and scaled to roughly unit variance."""
    n = check_int("n", n, 0)
    rng = np.random.default_rng(seed)
    n1 = n // 2
    a = rng.uniform(0.0, math.pi, size=n)
    upper = np.arange(n) < n1
    x = np.where(upper, np.cos(a), 1.0 - np.cos(a))
    y = np.where(upper, np.sin(a), 0.5 - np.sin(a))
    pts = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    pts = (pts - np.array([0.5, 0.25])) / np.array([0.87, 0.5])
    return torch.as_tensor(pts[rng.permutation(n)], dtype=dtype)


def two_circles(n: int, radii=(1.0, 2.0), noise: float = 0.08, seed: int = 0,
                dtype=torch.float32) -> torch.Tensor:
    """``n`` points ``(n, 2)``, half on each of two concentric circles, plus Gaussian noise."""
    n = check_int("n", n, 0)
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, 2 * math.pi, size=n)
    r = np.where(np.arange(n) < n // 2, radii[0], radii[1])
    pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1) + noise * rng.standard_normal((n, 2))
    return torch.as_tensor(pts[rng.permutation(n)], dtype=dtype)


def nested_circles(n: int, r_inner: float = 0.5, r_outer=(1.0, 1.5), seed: int = 0,
                   dtype=torch.float32):
    r"""Dupont et al.'s :math:`g(x) = -1` for :math:`|x| \le r_1`, :math:`+1` for
    :math:`r_2 \le |x| \le r_3`, as a classification set.

    Returns ``(x, y)``: points ``(n, 2)`` uniform in the disk (label 0) or the ring (label 1),
    half each, and labels ``(n,)`` as floats.
    """
    n = check_int("n", n, 0)
    rng = np.random.default_rng(seed)
    n0 = n // 2
    # uniform in area: radius ∝ sqrt(U)
    r_in = r_inner * np.sqrt(rng.uniform(size=n0))
    r_out = np.sqrt(rng.uniform(r_outer[0] ** 2, r_outer[1] ** 2, size=n - n0))
    r = np.concatenate([r_in, r_out])
    a = rng.uniform(0.0, 2 * math.pi, size=n)
    x = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    y = np.concatenate([np.zeros(n0), np.ones(n - n0)])
    perm = rng.permutation(n)
    return torch.as_tensor(x[perm], dtype=dtype), torch.as_tensor(y[perm], dtype=dtype)
