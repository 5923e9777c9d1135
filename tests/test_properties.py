"""Property-based tests: random stable linear systems, random batches and time grids."""

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import neuralode_helpers as nh

F64 = torch.float64


@st.composite
def linear_cases(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    dim = draw(st.integers(1, 4))
    batch = draw(st.integers(1, 3))
    n_times = draw(st.integers(2, 5))
    span = draw(st.floats(0.2, 2.0))
    backwards = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    A = nh.random_stable_matrix(dim, g)
    z0 = torch.randn(batch, dim, generator=g, dtype=F64)
    gaps = torch.rand(n_times - 1, generator=g, dtype=F64) + 0.2
    t = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(gaps, 0) / gaps.sum() * span])
    t = t + torch.randn((), generator=g, dtype=F64)
    if backwards:
        t = t.flip(0)
    w = torch.randn(n_times, batch, dim, generator=g, dtype=F64)
    return A, z0, t, w


@settings(max_examples=25, deadline=None)
@given(linear_cases())
def test_adjoint_gradients_match_exact_on_random_stable_systems(case):
    A, z0, t, w = case
    model = nh.LinearODE(A)
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    zs = nh.odeint_adjoint(model, z0a, ta, rtol=1e-9, atol=1e-11)
    (zs * w).sum().backward()
    Ae, z0e, te = (x.clone().requires_grad_() for x in (A, z0, t))
    exact = nh.linear_solution(Ae, z0e, te)
    (exact * w).sum().backward()
    assert torch.allclose(zs, exact.detach(), rtol=1e-7, atol=1e-9)
    for got, ref in ((model.A.grad, Ae.grad), (z0a.grad, z0e.grad), (ta.grad, te.grad)):
        assert torch.allclose(got, ref, rtol=1e-6, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(linear_cases())
def test_flow_property(case):
    # Solving to t_1 and restarting from there equals solving straight through.
    A, z0, t, _ = case
    assume(len(t) >= 3)
    model = nh.LinearODE(A)
    whole = nh.odeint(model, z0, t, rtol=1e-9, atol=1e-11)
    part = nh.odeint(model, whole[1], t[1:], rtol=1e-9, atol=1e-11)
    assert torch.allclose(whole[1:], part, rtol=1e-6, atol=1e-8)
