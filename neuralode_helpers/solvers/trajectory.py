r"""The whole solution of a solve as a function of time, from the steps it accepted.

Each accepted step from :math:`t_n` to :math:`t_{n+1} = t_n + h` keeps its start state
:math:`y_n`, end state :math:`y_{n+1}` and stage derivatives :math:`k_i`; in between,

.. math:: y(t_n + \theta h) \approx y_n + h \sum_i b_i(\theta)\, k_i

with the method's dense output (4th order for dopri5 and tsit5, cubic Hermite for the other
adaptive methods; for dopri8, whose quintic is too coarse, see below).
Methods without a dense output of their own (euler, midpoint, rk4) get the cubic Hermite
interpolant through :math:`(y_n, f_n)` and :math:`(y_{n+1}, f_{n+1})`, where
:math:`f_{n+1}` is the next step's first stage.

This is what the interpolated and quadrature adjoints read :math:`z(t)` from: memory grows
with the number of steps (a few states per step), but nothing is solved backwards.

A tableau flagged ``land_on_outputs`` (dopri8) has a dense output far less accurate than its
steps (at rtol 1e-8 its quintic was ~100 rtol off between dopri8's long steps, and
dL/dA 13-25 rtol off through these adjoints). Given the field (:meth:`Trajectory.use_field`),
such a trajectory samples every step at θ = 1/3 and 2/3 by two sub-steps of the same
method (2 (s - 1) more evaluations per step: 26 for dopri8, tripling the forward cost) and
interpolates by the degree-7 Hermite polynomial through (y, f) at θ = 0, 1/3, 2/3, 1:
error ~4e-9 h⁸ |y⁽⁸⁾|, below the steps' own.
"""

from __future__ import annotations

import bisect

import torch

from .rk import dense_output, rk_step


def _hermite(y0, f0, y1, f1, h, theta):
    h00 = 2 * theta**3 - 3 * theta**2 + 1
    h10 = theta**3 - 2 * theta**2 + theta
    h01 = -2 * theta**3 + 3 * theta**2
    h11 = theta**3 - theta**2
    return h00 * y0 + (h10 * h) * f0 + h01 * y1 + (h11 * h) * f1


def _hermite_nodes(nodes, ys, dys, x):
    """The Hermite polynomial through values ``ys`` and derivatives ``dys`` at ``nodes``
    (floats), at x: Newton's divided differences on the doubled nodes."""
    z = [v for v in nodes for _ in (0, 1)]
    col = [v for v in ys for _ in (0, 1)]
    table = [col[0]]
    for j in range(1, len(z)):
        col = [dys[i // 2] if j == 1 and i % 2 == 0 else
               (col[i + 1] - col[i]) / (z[i + j] - z[i]) for i in range(len(col) - 1)]
        table.append(col[0])
    out = table[-1]
    for j in range(len(z) - 2, -1, -1):
        out = out * (x - z[j]) + table[j]
    return out


class Trajectory:
    """Record accepted steps (``record`` is the solver's ``on_step``); evaluate y(t) with
    ``traj(t)`` for a float t inside the solved interval. Stored tensors are detached."""

    def __init__(self, tab):
        self.tab = tab
        self.steps = []  # (t_start, t_end, h, y_start, y_end, ks)
        self.end_derivatives = {}  # step index -> f(t_end, y_end), where the next step's
        # first stage is not it (the state jumped in between)
        self.samples = {}  # step index -> [(y, f) at θ = 1/3, 2/3] (land_on_outputs tableaus)
        self.field, self.stats = None, None

    def use_field(self, f, stats=None):
        """Sample each recorded step of a ``land_on_outputs`` tableau with ``f(t, y)`` (see
        the module's docstring); its evaluations are counted in ``stats.nfe``. No effect for
        the other tableaus."""
        if self.tab.land_on_outputs:
            self.field, self.stats = f, stats

    def _counted(self, tt, y):
        if self.stats is not None:
            self.stats.nfe += 1
        return self.field(tt, y)

    def record(self, t_start, t_end, h, y, y1, ks):
        self.steps.append((t_start, t_end, float(h), y.detach(), y1.detach(),
                           [k.detach() for k in ks]))
        if self.field is not None:
            self.samples[len(self.steps) - 1] = self._sample(t_start, float(h), *self.steps[-1][3:])

    def _sample(self, t_start, h, y, y1, ks):
        """(y, f) at θ = 1/3 and 2/3 by two sub-steps of h/3 (the tableau is FSAL: a
        sub-step's last stage is f at its end)."""
        out, yc, fc = [], y, ks[0]
        with torch.no_grad():
            for m in (1, 2):
                tc = torch.tensor(t_start + (m - 1) * h / 3, dtype=y.dtype, device=y.device)
                yc, sub = rk_step(self._counted, self.tab, tc, h / 3, yc, fc)
                fc = sub[-1]
                out.append((yc.detach(), fc.detach()))
        return out

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
        if i in self.samples:
            (y_a, f_a), (y_b, f_b) = self.samples[i]
            return _hermite_nodes((0.0, 1 / 3, 2 / 3, 1.0), (y, y_a, y_b, y1),
                                  tuple(h * d for d in (ks[0], f_a, f_b, ks[-1])), theta)
        if self.tab.dense is not None:
            return dense_output(self.tab, y, ks, h, theta)
        f1 = self.end_derivatives.get(i)
        if f1 is None:
            f1 = self.steps[i + 1][5][0]
        return _hermite(y, ks[0], y1, f1, h, theta)

    def tensors(self):
        """Every tensor the trajectory holds (for ``save_for_backward``'s accounting)."""
        out = [x for *_, y, y1, ks in self.steps for x in (y, y1, *ks)]
        out += [x for pairs in self.samples.values() for pair in pairs for x in pair]
        return out + list(self.end_derivatives.values())
