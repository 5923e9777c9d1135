# Exercise 0.3 ★★★ (worked answer): memory with an adaptive solver.
#
# With dopri5 the number of steps is no longer chosen by you: the solver takes as many as the
# tolerance needs. For a 5th-order method the local error per step goes like h^5, so once the
# tolerance (not the length of the interval) limits the step, the number of steps grows roughly
# like rtol^(-1/5): about 2.5 times more steps for every factor 100 in rtol. (This field is
# gentle: at loose tolerances a handful of steps already suffice.) Backprop through the solver
# keeps every stage of every step (and the rejected steps' work is not kept), so its memory
# column grows with the steps it took. The adjoint keeps only what the forward solve returns
# (here z(0) and z(1)) and solves backwards again, so its column does not change with rtol at
# all. The price moves to time: the backward solve does its own steps, as many as its own
# tolerance needs.
#
# The code reruns the experiment with dopri5 (float64, so that rtol = 1e-9 is reachable).
import torch
from torch import nn

from neuralode_helpers import Stats, odeint, odeint_adjoint, saved_tensor_bytes


class MLPField(nn.Module):
    # The field of section 4: dz/dt = MLP(z), 2 -> 64 -> 2 with tanh.
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2))

    def forward(self, t, z):
        return self.net(z)


torch.manual_seed(0)
field = MLPField().double()
z0 = torch.randn(256, 2, dtype=torch.float64)
t_span = torch.tensor([0.0, 1.0], dtype=torch.float64)
params = tuple(field.parameters())

print("rtol    steps   backprop: saved MB   adjoint: saved kB")
for rtol in (1e-3, 1e-5, 1e-7, 1e-9):
    stats = Stats()
    tolerances = {"method": "dopri5", "rtol": rtol, "atol": rtol * 1e-2}
    _, mem_bp = saved_tensor_bytes(odeint, field, z0, t_span, stats=stats, exclude=params,
                                   **tolerances)
    # The adjoint keeps the returned solution (z at both times) and nothing per step.
    _, mem_adj = saved_tensor_bytes(odeint_adjoint, field, z0, t_span, exclude=params,
                                    **tolerances)
    print(f"{rtol:.0e}  {stats.forward.n_steps:5d}   {mem_bp / 1e6:18.2f}   "
          f"{mem_adj / 1e3:17.1f}")
