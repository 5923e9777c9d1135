# Exercise 06 ★★: Hutchinson's estimator of the divergence, one probe per state.
import torch

from neuralode_helpers.exercises import check_hutchinson


def hutchinson(f, z, generator):
    # E[v^T J v] = sum_ij J_ij E[v_i v_j] = tr J when E[v v^T] = I. The row vector v^T J is one
    # vector-Jacobian product: the gradient of (f * v).sum() with respect to z (rows are
    # independent states, so each row gets its own v_b^T J_b). One backward pass, whatever D is.
    v = torch.randn(z.shape, generator=generator, dtype=z.dtype)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        vjp = torch.autograd.grad((f(z) * v).sum(), z)[0]  # (B, D): v_b^T J_b
    return (vjp * v).sum(dim=-1)  # (B,)


check_hutchinson(hutchinson)
