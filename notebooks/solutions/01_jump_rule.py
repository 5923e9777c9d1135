# Exercise 1.3 ★★★ (worked answer): a loss term at t0 too.
#
# Prediction from the jump rule. A loss term at an observation time t_i adds its direct partial
# ell_i = (dL/dz_i)^T (partial: the loss's own formula, the other z_j held fixed) to the adjoint a
# when the backward solve reaches t_i. At t0 the backward solve ends: nothing is
# integrated after that last jump. So a loss term w0/2 |z(t0) - y0|^2 changes
#
# - dL/dz0 by exactly w0 (z0 - y0): the last jump, added to a(t0);
# - dL/dtheta (here dL/dA) not at all: its integral runs over (t0, t_N], where a is unchanged;
# - dL/dt_i for i >= 1 not at all, for the same reason;
# - dL/dt0 not at all either. z(t0) = z0 is the initial condition, whatever t0 is, so the new
#   term does not move when t0 moves. In the adjoint formula dL/dt0 = -a(t0)^T f(z(t0), t0),
#   a(t0) must be taken *before* the jump at t0; using the adjoint after the jump would add a
#   spurious -w0 (z0 - y0)^T f(z0, t0).
#
# The code checks this with exact gradients (autograd through the matrix exponential), on a
# linear ODE like the notebook's.
import torch

from neuralode_helpers import linear_solution

A = torch.tensor([[-0.3, 1.2], [-0.8, -0.1]], dtype=torch.float64)
z0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
times = [0.0, 0.6, 1.3, 2.0]
targets = torch.tensor([[0.0, 0.0], [0.5, -0.6], [-0.2, 0.3], [0.3, -0.4]],
                       dtype=torch.float64)


def gradients(w0):
    weights = torch.tensor([w0, 1.0, 0.5, 2.0], dtype=torch.float64)
    A_, z0_ = A.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    t_ = torch.tensor(times, dtype=torch.float64, requires_grad=True)
    zs = linear_solution(A_, z0_, t_)
    (0.5 * (weights[:, None] * (zs - targets).square()).sum()).backward()
    return z0_.grad, A_.grad, t_.grad


w0 = 1.5
(gz, gA, gt), (gz1, gA1, gt1) = gradients(0.0), gradients(w0)
print("dL/dz0 changes by", (gz1 - gz).tolist(), "= w0 (z0 - y0) =",
      (w0 * (z0 - targets[0])).tolist())
print("largest change in dL/dA:", (gA1 - gA).abs().max().item())
print("largest change in dL/dt (all four times):", (gt1 - gt).abs().max().item())
assert torch.allclose(gz1 - gz, w0 * (z0 - targets[0]))
assert torch.allclose(gA1, gA) and torch.allclose(gt1, gt)
