# Exercise 8.2 ★★ (worked solution): an implicit solver for the stiff problem.
#
# Run in notebook 08 (it uses `problems` and `TOL` from sections 1-3); on its own it rebuilds
# the stiff problem and the tolerances.
import torch

from neuralode_helpers import LinearODE, Stats, linear_solution, odeint_adjoint, relative_error
from neuralode_helpers.exercises import check_radau_stiff

try:
    stiff, tol = problems["stiff"], TOL  # noqa: F821 (notebook 08's problem and tolerances)
except NameError:  # run on its own: the same problem, with its own weights w
    A = torch.tensor([[-1.0, 0.0], [1.0, -100.0]], dtype=torch.float64)
    z0, t = torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.linspace(0, 1, 5).double()
    w = torch.randn(5, 1, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A_leaf = A.clone().requires_grad_()
    (exact,) = torch.autograd.grad((linear_solution(A_leaf, z0, t) * w).sum(), [A_leaf])
    stiff, tol = dict(A=A, z0=z0, t=t, w=w, exact=exact), dict(rtol=1e-6, atol=1e-8)


def radau_backsolve(p, restore_z, method="scipy:Radau", stats=None):
    # The unguarded backsolve adjoint: the package would otherwise compare the rebuilt z with
    # the stored one, see them part, and (a black box keeps no dense output to recover with)
    # raise a SolverError that says so.
    model = LinearODE(p["A"])
    z = odeint_adjoint(model, p["z0"], p["t"], method=method, restore_z=restore_z,
                       on_divergence="ignore", stats=stats, **tol)
    (g,) = torch.autograd.grad((z * p["w"]).sum(), [model.A])
    return g


if __name__ == "__main__":
    check_radau_stiff(radau_backsolve)
    for method in ["scipy:Radau", "dopri5"]:
        for restore_z in [True, False]:
            stats = Stats()
            g = radau_backsolve(stiff, restore_z, method, stats)
            print(f"{method:12s} restore_z={restore_z!s:5s}: error "
                  f"{relative_error(g, stiff['exact']):8.1e}, NFE forward {stats.forward.nfe:4d},"
                  f" backward {stats.backward.nfe:5d}")
# What to look for: the implicit solver does not rescue the reconstruction. Backwards in time
# dz/dt = A z turns the fast mode's decay e^(-100 t) into growth e^(100 t), so any error in z, from
# any solver, is amplified by up to e^(100 * 0.25) over one interval. With restore_z the damage
# stays within an interval (an error of a few per cent in dL/dA at rtol 1e-6, where dopri5's is
# about 10: the implicit solver's smaller local errors help that much); without it z runs away
# (errors of 1e20 and more, for both). Nor is Radau cheaper here: a decay rate of 100 over
# [0, 1] is only mildly stiff, and each Radau step spends evaluations on Newton iterations and a
# numerical Jacobian, so it counts more evaluations than dopri5 both ways, and takes longer.
# The cures are those of section 3: keep the forward solution (the interpolated or quadrature
# adjoint, or backprop), or let the guard recover.
