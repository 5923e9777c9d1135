"""Data generators: deterministic given a seed, right shapes, right geometry."""

import math

import pytest
import torch

from neuralode_helpers import (
    cubic_spiral,
    irregular_indices,
    nested_circles,
    spiral_family,
    two_circles,
    two_moons,
)
from neuralode_helpers.datasets import SPIRAL_A


def test_cubic_spiral_solves_its_ode():
    t, z = cubic_spiral(n_points=1000, t_end=5.0)
    assert t.shape == (1000,) and z.shape == (1000, 2)
    assert torch.allclose(z[0], torch.tensor([2.0, 0.0]))
    # finite differences of the samples match the field A z^3
    A = torch.tensor(SPIRAL_A, dtype=torch.float64)
    zd = z.double()
    dz = (zd[2:] - zd[:-2]) / (2 * (t[1] - t[0]).double())
    field = (zd[1:-1] ** 3) @ A.T
    assert (dz - field).abs().max() < 0.02  # |field| reaches 16


def test_spiral_family_is_deterministic_and_solves_a_damped_rotation():
    t, x, xn, s = spiral_family(7, n_grid=30, noise=0.1, seed=3)
    t2, x2, xn2, s2 = spiral_family(7, n_grid=30, noise=0.1, seed=3)
    assert torch.equal(xn, xn2) and torch.equal(s, s2)
    assert not torch.equal(xn, spiral_family(7, n_grid=30, noise=0.1, seed=4)[2])
    assert t.shape == (30,) and x.shape == xn.shape == (7, 30, 2) and s.shape == (7,)
    assert set(s.tolist()) <= {-1.0, 1.0}
    # radius decays as exp(-0.1 t); the angle turns by s * t
    r = x.norm(dim=-1)
    assert torch.allclose(r[:, -1] / r[:, 0], torch.full((7,), math.exp(-0.1 * t[-1].item())),
                          rtol=1e-4)
    ang = torch.atan2(x[..., 1], x[..., 0])
    step = torch.remainder(ang[:, 1] - ang[:, 0] + math.pi, 2 * math.pi) - math.pi
    assert torch.allclose(step, s * t[1], atol=1e-5)
    # the noise has the requested size
    assert abs((xn - x).std().item() - 0.1) < 0.02


def test_irregular_indices_are_sorted_distinct_and_in_range():
    idx = irregular_indices(50, 20, 6, seed=1)
    assert idx.shape == (50, 6) and idx.dtype == torch.long
    assert (idx.diff(dim=1) > 0).all()
    assert idx.min() >= 0 and idx.max() < 20
    assert torch.equal(idx, irregular_indices(50, 20, 6, seed=1))
    assert len({tuple(row) for row in idx.tolist()}) > 40  # irregular: rows differ
    with pytest.raises(ValueError):
        irregular_indices(5, 4, 5)


def test_point_clouds_are_deterministic_with_the_right_geometry():
    m = two_moons(400, seed=0)
    assert m.shape == (400, 2) and torch.equal(m, two_moons(400, seed=0))
    assert m.mean(0).abs().max() < 0.15           # centred
    c = two_circles(400, radii=(1.0, 2.0), noise=0.0, seed=0)
    r = c.norm(dim=1)
    assert torch.allclose(r.sort().values[:200], torch.ones(200), atol=1e-5)
    assert torch.allclose(r.sort().values[200:], 2 * torch.ones(200), atol=1e-5)
    x, y = nested_circles(300, seed=0)
    assert x.shape == (300, 2) and y.shape == (300,)
    rr = x.norm(dim=1)
    assert (rr[y == 0] <= 0.5).all() and ((rr[y == 1] >= 1.0) & (rr[y == 1] <= 1.5)).all()
    assert y.sum() == 150


def test_counts_must_be_ints_of_at_least_their_minimum():
    for make, error, match in [
        (lambda: two_moons(-1), ValueError, "n must be >= 0, got -1"),
        (lambda: two_moons(10.5), TypeError, "n must be an int, got float"),
        (lambda: two_circles(-2), ValueError, "n must be >= 0"),
        (lambda: nested_circles(3.0), TypeError, "n must be an int"),
        (lambda: spiral_family(2, n_grid=0), ValueError, "n_grid must be >= 1"),
        (lambda: irregular_indices(2, 5, 0), ValueError, "n_obs must be >= 1"),
    ]:
        with pytest.raises(error, match=match):
            make()
    import numpy as np

    assert two_moons(np.int64(4)).shape == (4, 2)  # numpy's ints are ints
