"""Agreement with torchdiffeq (a test-only dependency) on a nonlinear batched problem."""

import pytest
import torch
from torch import nn

import neuralode_helpers as nh

torchdiffeq = pytest.importorskip("torchdiffeq", reason="pip install torchdiffeq")

F64 = torch.float64


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()

    def forward(self, t, z):
        return self.net(z) * torch.cos(t)


def test_values_and_gradients_agree_with_torchdiffeq():
    torch.manual_seed(0)
    f = Field()
    z0 = torch.randn(64, 2, dtype=F64)
    t = torch.linspace(0, 2, 6, dtype=F64)
    w = torch.randn(len(t), 64, 2, dtype=F64)

    def run(odeint):
        f.zero_grad()
        z0r, tr = z0.clone().requires_grad_(), t.clone().requires_grad_()
        zs = odeint(f, z0r, tr, rtol=1e-9, atol=1e-11)
        (zs * w).sum().backward()
        return [zs.detach(), z0r.grad, tr.grad] + [p.grad.clone() for p in f.parameters()]

    ours = run(nh.odeint_adjoint)
    theirs = run(torchdiffeq.odeint_adjoint)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)
