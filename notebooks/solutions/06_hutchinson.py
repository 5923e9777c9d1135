# Exercise 06 ★★: Hutchinson's estimator of the divergence, one probe per state.
import torch

from neuralode_helpers.exercises import check_hutchinson


def hutchinson(f, z, generator):
    # E[eps^T J eps] = sum_ij J_ij E[eps_i eps_j] = tr J when E[eps eps^T] = I. The row vector
    # eps^T J is one vector-Jacobian product: the gradient of (f * eps).sum() with respect to z
    # (rows are independent states, so each row gets its own eps_b^T J_b). One backward pass,
    # whatever D is.
    eps = torch.randn(z.shape, generator=generator, dtype=z.dtype)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        vjp = torch.autograd.grad((f(z) * eps).sum(), z)[0]  # (B, D): eps_b^T J_b
    return (vjp * eps).sum(dim=-1)  # (B,)


check_hutchinson(hutchinson)
