# Exercise 2.3 ★★★ (worked code): LSODAAdjoint with the seminorm by hand, and with several
# observation times. It runs on its own or after section 2 of notebook 02 (it defines its own
# names). The reasoning is in solutions/02_seminorm_and_times.py.
import numpy as np
import torch
from scipy.integrate import solve_ivp

from neuralode_helpers import ODENet, odeint, odeint_adjoint

torch.set_default_dtype(torch.float64)


def to_numpy(x):
    return x.detach().reshape(-1).cpu().numpy()


class LSODATimes(torch.autograd.Function):
    # z at every time of ts (t_0 < t_1 < ... < t_N) by LSODA; the adjoint, jumps included.

    @staticmethod
    def forward(ctx, z0, ts, func, rtol, atol, seminorm, counts, *params):
        shape, dtype = z0.shape, z0.dtype

        def f(t, z):
            with torch.no_grad():
                dz = func(torch.tensor(t, dtype=dtype), torch.as_tensor(z, dtype=dtype).view(shape))
            return to_numpy(dz)

        # t_eval: the solution at every observation time, from one solve.
        sol = solve_ivp(f, (ts[0], ts[-1]), to_numpy(z0), method="LSODA", t_eval=ts,
                        rtol=rtol, atol=atol)
        assert sol.success, sol.message
        zs = torch.as_tensor(sol.y.T, dtype=dtype).reshape(len(ts), *shape)
        ctx.save_for_backward(zs, *params)
        ctx.func, ctx.ts, ctx.rtol, ctx.atol = func, ts, rtol, atol
        ctx.seminorm, ctx.counts = seminorm, counts
        return zs

    @staticmethod
    def backward(ctx, grad_zs):
        zs, *params = ctx.saved_tensors
        func, ts, dtype = ctx.func, ctx.ts, zs.dtype
        shape, n = zs.shape[1:], zs[0].numel()
        sizes = [p.numel() for p in params]

        def augmented(t, y):  # y = [z, a, a_theta], flat
            ctx.counts["backward"] += 1
            y = torch.as_tensor(y, dtype=dtype)
            z = y[:n].view(shape).requires_grad_(True)
            a = y[n:2 * n].view(shape)
            with torch.enable_grad():
                f = func(torch.tensor(t, dtype=dtype), z)
                vjps = torch.autograd.grad(f, (z, *params), grad_outputs=-a, allow_unused=True)
            vjps = [torch.zeros_like(x) if v is None else v for v, x in zip(vjps, (z, *params))]
            return np.concatenate([to_numpy(f)] + [to_numpy(v) for v in vjps])

        # One tolerance per entry: the usual atol on z and a; 1e30 on a_theta with the
        # seminorm, so that the parameter channels never reject a step or shrink the next one.
        atol = np.full(2 * n + sum(sizes), ctx.atol)
        if ctx.seminorm:
            atol[2 * n:] = 1e30
        # At t_N: z from the forward solve, a = ell_N, a_theta = 0.
        y = np.concatenate([to_numpy(zs[-1]), to_numpy(grad_zs[-1]), np.zeros(sum(sizes))])
        for i in range(len(ts) - 1, 0, -1):  # (t_{i-1}, t_i], backwards
            sol = solve_ivp(augmented, (ts[i], ts[i - 1]), y, method="LSODA", rtol=ctx.rtol,
                            atol=atol)
            assert sol.success, sol.message
            y = sol.y[:, -1].copy()
            y[n:2 * n] += to_numpy(grad_zs[i - 1])  # the jump: a += ell_{i-1}
        y = torch.as_tensor(y, dtype=dtype)
        grad_z0 = y[n:2 * n].view(shape)  # a(t_0): dL/dz0
        grad_params = [g.view_as(p) for g, p in zip(y[2 * n:].split(sizes), params)]
        return (grad_z0, None, None, None, None, None, None, *grad_params)


def odeint_lsoda_times(func, z0, ts, rtol=1e-6, atol=1e-8, seminorm=True, counts=None):
    params = [p for p in func.parameters() if p.requires_grad]
    counts = {"backward": 0} if counts is None else counts
    return LSODATimes.apply(z0, [float(t) for t in ts], func, rtol, atol, seminorm, counts,
                            *params)


def relative_error(x, ref):
    x, ref = torch.cat([v.reshape(-1) for v in x]), torch.cat([v.reshape(-1) for v in ref])
    return ((x - ref).norm() / ref.norm()).item()


torch.manual_seed(0)
net = ODENet(state_dim=2, hidden=(16, 16))
z0 = torch.randn(3, 4, 2)
TIGHT = dict(rtol=1e-10, atol=1e-12)
ts = torch.tensor([0.5, 1.0, 1.5, 2.0])
weights = torch.randn(len(ts), 3, 4, 2)


def gradients(solve):
    # [dL/dz0, dL/dtheta_1, ...] for a loss that reads z at every observation time.
    z0_leaf = z0.clone().requires_grad_(True)
    net.zero_grad()
    zs = solve(z0_leaf)
    (0.5 * zs.square().sum() + (weights * zs).sum()).backward()
    return [z0_leaf.grad.clone()] + [p.grad.clone() for p in net.parameters()]


# 1. The seminorm: fewer backward evaluations, the same gradient.
reference = gradients(lambda z: odeint(net, z, ts, **TIGHT))  # backprop through dopri5
evaluations, errors = {}, {}
for seminorm in (False, True):
    counts = {"backward": 0}
    grads = gradients(lambda z, seminorm=seminorm, counts=counts: odeint_lsoda_times(
        net, z, ts, seminorm=seminorm, counts=counts, **TIGHT))
    evaluations[seminorm], errors[seminorm] = counts["backward"], relative_error(grads, reference)
    print(f"seminorm {'on ' if seminorm else 'off'}: {counts['backward']} backward evaluations, "
          f"rel. error against backprop {errors[seminorm]:.1e}")
    assert errors[seminorm] < 1e-6
assert evaluations[True] < evaluations[False]

# 2. Several observation times: the same gradient as the package's odeint_adjoint.
package = gradients(lambda z: odeint_adjoint(net, z, ts, method="scipy:LSODA", **TIGHT))
ours = gradients(lambda z: odeint_lsoda_times(net, z, ts, **TIGHT))
print(f"{len(ts)} observation times: rel. error against odeint_adjoint "
      f"{relative_error(ours, package):.1e}")
assert relative_error(ours, package) < 1e-6
