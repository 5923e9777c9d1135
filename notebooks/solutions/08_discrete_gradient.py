# Exercise 8.3 ★★★ (worked answer): backprop is the exact gradient of the discrete solve.
#
# The discrete loss is L_h(A) = sum_i w_i . z_h(t_i), where z_h is the rk4 solve with step h.
# Central finite differences of L_h in each entry of A (step ε = 1e-6, float64: error ~1e-10)
# approximate dL_h/dA, the gradient of what the solver computed. Backprop differentiates the
# same arithmetic, so it agrees with the finite differences to about 1e-9, at any h. The
# interpolated adjoint approximates dL/dA of the *exact* solution instead: it agrees with the
# finite differences only as well as the rk4 solve agrees with the ODE (O(h^4)), and with the
# exact gradient to the same order. As h shrinks, all three converge to each other.
import torch

from neuralode_helpers import LinearODE, linear_solution, odeint, odeint_adjoint, relative_error

# The oscillator of section 1 (rebuilt here, so that this file runs on its own)
gen = torch.Generator().manual_seed(0)
A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
z0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
t = torch.linspace(0, 4, 9, dtype=torch.float64)
w = torch.randn(len(t), *z0.shape, generator=gen, dtype=torch.float64)
A_leaf = A.clone().requires_grad_()
(exact,) = torch.autograd.grad((linear_solution(A_leaf, z0, t) * w).sum(), [A_leaf])
p = dict(A=A, z0=z0, t=t, w=w, exact=exact)


def discrete_loss(A, steps):
    opts = dict(method="rk4", options={"step_size": 0.5 / steps})
    with torch.no_grad():
        return float((odeint(LinearODE(A), p["z0"], p["t"], **opts) * p["w"]).sum())


for steps in [1, 4, 16]:
    opts = dict(method="rk4", options={"step_size": 0.5 / steps})
    fd = torch.zeros(2, 2, dtype=torch.float64)
    for i in range(2):
        for j in range(2):
            E = torch.zeros(2, 2, dtype=torch.float64)
            E[i, j] = 1e-6
            fd[i, j] = (discrete_loss(p["A"] + E, steps) - discrete_loss(p["A"] - E, steps)) / 2e-6
    grads = {}
    for name, solve, kw in [("backprop", odeint, {}),
                            ("interpolated adjoint", odeint_adjoint, {"adjoint": "interpolated"})]:
        model = LinearODE(p["A"])
        loss = (solve(model, p["z0"], p["t"], **opts, **kw) * p["w"]).sum()
        grads[name] = torch.autograd.grad(loss, [model.A])[0]
    print(f"{steps:2d} rk4 steps per interval: "
          + ", ".join(f"{n}: vs finite differences {relative_error(g, fd):.1e}, vs exact "
                      f"{relative_error(g, p['exact']):.1e}" for n, g in grads.items()))
    assert relative_error(grads["backprop"], fd) < 1e-6
