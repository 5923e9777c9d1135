"""Fixed-step integration: a whole number of equal steps in every interval of t."""

from __future__ import annotations

import math

import torch

from ..errors import SolverError
from .rk import LeanRK, lean_applies, rk_step

# How many round-offs of t a step count may be off by and still count as a whole number.
_ROUND_OFF_SAFETY = 8.0


def steps_in_interval(t_start: float, t_end: float, step_size, eps: float) -> int:
    r"""The number n of equal steps for the interval [t_start, t_end]: at most ``step_size``
    each, so :math:`n = \lceil |\Delta t| / h \rceil` (at least 1; 1 when ``step_size`` is
    None).

    The times carry round-off of their dtype (``eps``: its machine epsilon): in float32,
    ``linspace(0, 1, 11)[10] - [9]`` is 0.100000024, and a ceiling would turn 10 steps of
    0.01 into 11 shorter ones. So x = |Δt| / h is rounded to the nearest integer k when
    :math:`|x - k| \le s\,\varepsilon\,(|t_\text{start}| + |t_\text{end}| + |\Delta t|) / h`
    (the round-off of Δt, in steps, with a safety factor s = 8), and rounded up otherwise.
    The count is then the same as float64 gives.
    """
    if step_size is None:
        return 1
    span = abs(t_end - t_start)
    x = span / step_size
    k = round(x)
    # 1e-9: the slack float64 always had here (no change for float64 times).
    slack = max(1e-9, _ROUND_OFF_SAFETY * eps * (abs(t_start) + abs(t_end) + span) / step_size)
    n = k if abs(x - k) <= slack else math.ceil(x)
    return max(1, n)


def integrate_fixed(tab, f, y0, t, *, step_size, stats, callback=None, f0=None,
                    on_step=None, step=rk_step, hooks=None):
    """States at every t, with :func:`steps_in_interval` equal steps in each interval (about
    ``ceil(|t_i - t_{i-1}| / step_size)``), or one step per interval when ``step_size`` is
    None (torchdiffeq's default grid). Every output time is hit exactly (no interpolation),
    and the steps depend differentiably on t. ``callback(i, y)`` may replace the state at
    each t_i; ``on_step(t, t_new, h, y, y_new, ks)`` is told every step; ``hooks.step(t0, y0,
    dt)`` before every step (torchdiffeq's ``callback_step``).

    A fixed step has no error estimate to notice a blow-up, so each step's output is checked;
    a non-finite state raises :class:`SolverError` with ``t_reached`` the start of the step
    that produced it (the last finite state).
    """
    out = [y0]
    y = y0
    tf = t.tolist()
    eps = torch.finfo(t.dtype).eps
    if f0 is None:
        f0 = f(t[0], y0)
    if not torch.isfinite(f0.detach()).all():
        raise SolverError("dz/dt is not finite (NaN or inf) at the initial point",
                          t_reached=tf[0], method=tab.name)
    # No graph is being built: the same steps with fewer tensor operations (rk.LeanRK).
    lean = LeanRK(tab) if lean_applies(step) else None
    for i in range(1, len(tf)):
        n = steps_in_interval(tf[i - 1], tf[i], step_size, eps)
        h = (t[i] - t[i - 1]) / n
        finite = []
        for k in range(n):
            tk = t[i - 1] + k * h
            # Only the very first stage is known (f0, evaluated above); otherwise the step
            # evaluates f(tk, y) itself: inside the checkpoint for checkpoint="steps", where
            # one evaluated out here would keep its activations (or be evaluated twice).
            k1, f0 = f0, None
            if hooks is not None:
                hooks.step(tk, y, h)
            if lean is not None:
                y_new, ks = lean.step(f, tk, h, y, k1)
            else:
                y_new, ks = step(f, tab, tk, h, y, k1)
            if on_step is not None:
                t_a, t_b = _step_times(tf, i, k, n)
                on_step(t_a, t_b, t_b - t_a, y, y_new, ks)
            # A 0-d flag per step, read once per interval: no device sync inside the loop.
            finite.append(torch.isfinite(y_new.detach()).all())
            y = y_new
        stats.n_steps += n
        bad = ~torch.stack(finite)
        if bad.any():
            first = int(bad.nonzero()[0])
            t_a, t_b = _step_times(tf, i, first, n)
            raise SolverError(f"the state became non-finite (NaN or inf) in the step from "
                              f"t = {t_a:.6g} to {t_b:.6g}; try a smaller step_size",
                              t_reached=t_a, method=tab.name)
        out.append(y)
        if callback is not None:
            y = callback(i, y)
    return torch.stack(out)


def _step_times(tf, i, k, n):
    """Start and end (floats) of step k of the n in the interval [tf[i-1], tf[i]]."""
    span = tf[i] - tf[i - 1]
    return tf[i - 1] + k * span / n, tf[i - 1] + (k + 1) * span / n
