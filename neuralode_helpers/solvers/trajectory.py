r"""The whole solution of a solve as a function of time, from the steps it accepted.

Each accepted step from :math:`t_n` to :math:`t_{n+1} = t_n + h` keeps its start state
:math:`y_n`, end state :math:`y_{n+1}` and stage derivatives :math:`k_i`; in between,

.. math:: y(t_n + \theta h) \approx y_n + h \sum_i b_i(\theta)\, k_i

with the method's dense output (5th order for dopri8, 4th for dopri5 and tsit5, cubic Hermite
for the other adaptive methods).
Methods without a dense output of their own (euler, midpoint, rk4) get the cubic Hermite
interpolant through :math:`(y_n, f_n)` and :math:`(y_{n+1}, f_{n+1})`, where
:math:`f_{n+1}` is the next step's first stage.

This is what the interpolated and quadrature adjoints read :math:`z(t)` from: memory grows
with the number of steps (a few states per step), but nothing is solved backwards.
"""

from __future__ import annotations

import bisect

from .rk import dense_output


def _hermite(y0, f0, y1, f1, h, theta):
    h00 = 2 * theta**3 - 3 * theta**2 + 1
    h10 = theta**3 - 2 * theta**2 + theta
    h01 = -2 * theta**3 + 3 * theta**2
    h11 = theta**3 - theta**2
    return h00 * y0 + (h10 * h) * f0 + h01 * y1 + (h11 * h) * f1


class Trajectory:
    """Record accepted steps (``record`` is the solver's ``on_step``); evaluate y(t) with
    ``traj(t)`` for a float t inside the solved interval. Stored tensors are detached."""

    def __init__(self, tab):
        self.tab = tab
        self.steps = []  # (t_start, t_end, h, y_start, y_end, ks)
        self.end_derivatives = {}  # step index -> f(t_end, y_end), where the next step's
        # first stage is not it (the state jumped in between)

    def record(self, t_start, t_end, h, y, y1, ks):
        self.steps.append((t_start, t_end, float(h), y.detach(), y1.detach(),
                           [k.detach() for k in ks]))

    def finish(self, f_end):
        """The derivative at the end of the last recorded step, for the Hermite interpolant
        (call it before a jump, or at the end of the solve)."""
        self.end_derivatives[len(self.steps) - 1] = f_end.detach()

    def _locate(self, t):
        # Steps run in one direction; the keys are monotonic in that direction.
        if not hasattr(self, "_keys"):
            sign = 1.0 if self.steps[-1][1] >= self.steps[0][0] else -1.0
            self._sign = sign
            self._keys = [sign * s[1] for s in self.steps]
        i = bisect.bisect_left(self._keys, self._sign * t)
        return min(i, len(self.steps) - 1)

    def __call__(self, t):
        return self.in_step(self._locate(t), t)

    def in_step(self, i, t):
        """y(t) from step i's interpolant (t within that step)."""
        t_start, _, h, y, y1, ks = self.steps[i]
        theta = (t - t_start) / h
        if self.tab.dense is not None:
            return dense_output(self.tab, y, ks, h, theta)
        f1 = self.end_derivatives.get(i)
        if f1 is None:
            f1 = self.steps[i + 1][5][0]
        return _hermite(y, ks[0], y1, f1, h, theta)

    def tensors(self):
        """Every tensor the trajectory holds (for ``save_for_backward``'s accounting)."""
        out = [x for *_, y, y1, ks in self.steps for x in (y, y1, *ks)]
        return out + list(self.end_derivatives.values())
