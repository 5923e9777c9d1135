# Exercise 06 ★★★ (worked answer): a coarse solver, and whether the density still integrates
# to one.
#
# A CNF computes log p(x) by solving the augmented system [z, log-density change] with the
# same RK4 steps. With n steps, the z-part is the discrete map Phi_h (h = 1/n) and the other
# part is RK4's approximation of -integral tr(df/dz) dt. The change-of-variables formula would
# make the density integrate to exactly one if the correction were log|det dPhi_h/dz|, the
# Jacobian of the *discrete* map. It is not: RK4 integrates the trace along the path, which
# approximates the log-determinant of the *exact* flow, and both differ from the discrete
# map's log-determinant by O(h^4). So with few steps the model is no longer exactly a
# normalised density, and its "NLL" is no longer exactly a negative log-likelihood: a lower
# number at 2 steps than at 16 would not mean a better model.
#
# How to check it on the trained CNF: evaluate the test NLL with n_steps = 2, 4 and 16, and
# integrate exp(log p) over a fine grid that covers the data (cell area times the sum). The
# further the integral is from 1, the more the coarse solver has distorted the density; the
# error is largest where the learned field changes fastest along the path.
#
# The code measures the mismatch on a small fixed field: the log-determinant of RK4's map
# (by autograd) against RK4's integral of the trace, for 2, 4 and 16 steps. The gap shrinks
# by about 2^4 = 16 each time the step halves.
import torch

from neuralode_helpers import odeint

torch.manual_seed(0)
W = torch.randn(2, 2, dtype=torch.float64)
b = torch.randn(2, dtype=torch.float64)


def field(z):
    return torch.tanh(z @ W.T + b)


def augmented(t, state):
    z = state[..., :2]
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        f = field(z)
        trace = sum(torch.autograd.grad(f[..., i].sum(), z, retain_graph=True)[0][..., i]
                    for i in range(2))
    return torch.cat([f.detach(), trace.detach()[..., None]], -1)


x = torch.tensor([0.3, -0.7], dtype=torch.float64)
t = torch.tensor([0.0, 1.0], dtype=torch.float64)
previous = None
for n in (2, 4, 16):
    options = {"step_size": 1.0 / n}

    def rk4_map(z, options=options):
        return odeint(lambda t, z: field(z), z, t, method="rk4", options=options)[-1]

    logdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(rk4_map, x))[1]
    state0 = torch.cat([x, torch.zeros(1, dtype=torch.float64)])
    integrated = odeint(augmented, state0, t, method="rk4", options=options)[-1, 2]
    gap = (logdet - integrated).abs().item()
    ratio = f" ({previous / gap:.0f}x smaller)" if previous else ""
    print(f"{n:2d} RK4 steps: log det of the discrete map {logdet.item():.8f}, integrated "
          f"trace {integrated.item():.8f}, gap {gap:.1e}{ratio}")
    previous = gap
