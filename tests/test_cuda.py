"""On a CUDA machine: the torch solvers stay on the GPU and the adjoint is as exact as on CPU.

Skipped where torch sees no GPU (the course machines, CI); run on a lent GPU machine with
`pytest tests/test_cuda.py`.
"""

import pytest
import torch

import neuralode_helpers as nh

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
F64 = torch.float64


@pytest.mark.parametrize("method", ["dopri5", "rk4", "scipy:LSODA"])
def test_adjoint_on_cuda_matches_exact(method, linear_problem):
    A, z0, t = (x.cuda() for x in linear_problem)
    model = nh.LinearODE(A).cuda()
    options = {"step_size": 1e-2} if method == "rk4" else None
    z0a, ta = z0.clone().requires_grad_(), t.clone().requires_grad_()
    zs = nh.odeint_adjoint(model, z0a, ta, method=method, options=options, rtol=1e-10,
                           atol=1e-12)
    assert zs.device.type == "cuda"
    w = torch.randn_like(zs)
    (zs * w).sum().backward()
    Ae, z0e, te = (x.clone().requires_grad_() for x in (A, z0, t))
    (nh.linear_solution(Ae, z0e, te) * w).sum().backward()
    for got, ref in ((model.A.grad, Ae.grad), (z0a.grad, z0e.grad), (ta.grad, te.grad)):
        assert got.device.type == "cuda"
        assert ((got - ref).norm() / ref.norm()).item() < 1e-6


def test_training_step_on_cuda():
    model = nh.ODENet().cuda()
    result = nh.train(model, steps=5, batch_size=64, progress=False)
    assert len(result.losses) == 5
    assert all(p.grad is not None and p.grad.device.type == "cuda" for p in model.parameters())
