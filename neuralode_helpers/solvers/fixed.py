"""Fixed-step integration: a whole number of equal steps in every interval of t."""

from __future__ import annotations

import math

import torch

from ..errors import SolverError
from .rk import rk_step


def integrate_fixed(tab, f, y0, t, *, step_size, stats, callback=None, f0=None,
                    on_step=None, step=rk_step):
    """States at every t, with ``ceil(|t_i - t_{i-1}| / step_size)`` equal steps in each
    interval, or one step per interval when ``step_size`` is None (torchdiffeq's default
    grid). Every output time is hit exactly (no interpolation), and the steps depend
    differentiably on t. ``callback(i, y)`` may replace the state at each t_i;
    ``on_step(t, t_new, h, y, y_new, ks)`` is told every step.
    """
    out = [y0]
    y = y0
    tf = t.tolist()
    if f0 is None:
        f0 = f(t[0], y0)
    if not torch.isfinite(f0.detach()).all():
        raise SolverError("dz/dt is not finite (NaN or inf) at the initial point",
                          t_reached=tf[0], method=tab.name)
    for i in range(1, len(tf)):
        n = 1 if step_size is None else max(
            1, math.ceil(abs(tf[i] - tf[i - 1]) / step_size - 1e-9))
        h = (t[i] - t[i - 1]) / n
        for k in range(n):
            tk = t[i - 1] + k * h
            k1 = f0 if f0 is not None else f(tk, y)
            f0 = None
            y_new, ks = step(f, tab, tk, h, y, k1)
            if on_step is not None:
                t_a = tf[i - 1] + k * (tf[i] - tf[i - 1]) / n
                t_b = tf[i - 1] + (k + 1) * (tf[i] - tf[i - 1]) / n
                on_step(t_a, t_b, t_b - t_a, y, y_new, ks)
            y = y_new
        stats.n_steps += n
        # A fixed step has no error estimate to notice a blow-up: check what it produced.
        if not torch.isfinite(y.detach()).all():
            raise SolverError("the state became non-finite (NaN or inf); try a smaller "
                              "step_size", t_reached=tf[i - 1], method=tab.name)
        out.append(y)
        if callback is not None:
            y = callback(i, y)
    return torch.stack(out)
