"""Adaptive integration: embedded Runge–Kutta steps under a step-size controller, with
outputs between steps from the dense output.

f is never evaluated outside the requested interval: the last step is cut to end exactly
at the last time, and, when a ``callback`` is given (the adjoint's jumps), at every time.
"""

from __future__ import annotations

import math

import torch

from ..errors import SolverError
from .controller import initial_step
from .rk import dense_output, error_estimate, rk_step


def integrate_adaptive(tab, f, y0, t, *, norm, controller, stats, first_step=None,
                       max_num_steps=2**31 - 1, callback=None, f0=None, on_step=None,
                       step=rk_step):
    """States at every t, shape ``(len(t), *y0.shape)``.

    ``norm(err, y0, y1)`` gives the error ratio of a step; ``controller.next_step(h, r)``
    the next step size. With ``callback(i, y)`` the solver lands exactly on each t_i and
    continues from the state the callback returns. ``on_step(t, t_new, h, y, y_new, ks)``
    is told every accepted step (to record a :class:`~.trajectory.Trajectory`). ``step``
    takes one Runge–Kutta step (:func:`~.rk.rk_step`, or a checkpointed version of it).
    """
    tf = t.tolist()
    T = len(tf)
    direction = 1.0 if tf[-1] > tf[0] else -1.0
    if f0 is None:
        f0 = f(t[0], y0)
    if not torch.isfinite(f0.detach()).all():
        raise SolverError("dz/dt is not finite (NaN or inf) at the initial point",
                          t_reached=tf[0], method=tab.name)
    if first_step is None:
        with torch.no_grad():  # step sizes are not differentiated
            h = initial_step(f, t[0].detach(), y0.detach(), f0.detach(), tab.order, norm,
                             tf[-1] - tf[0])
    else:
        h = abs(float(first_step))
    out = [y0]
    y, tc = y0, tf[0]
    i = 1
    n_attempts = 0
    while i < T:
        if n_attempts >= max_num_steps:
            raise SolverError(f"gave up after max_num_steps={max_num_steps} steps",
                              t_reached=tc, method=tab.name)
        n_attempts += 1
        # The step ends exactly on t[target] when that is within reach.
        target = i if callback is not None else T - 1
        remaining = abs(tf[target] - tc)
        lands = remaining <= h * (1 + 1e-12)
        size = remaining if lands else h
        # The current time is t0 plus an offset, never a running sum of steps: no drift in
        # float32. A landing step is t[target] - t as a tensor, so backprop reaches t.
        t_cur = t[0] + (tc - tf[0])
        h_arg = (t[target] - t_cur) if lands else direction * size
        y1, ks = step(f, tab, t_cur, h_arg, y, f0)
        with torch.no_grad():  # step sizes are not differentiated: keep no graph for them
            ratio = norm(error_estimate(tab, h_arg, ks), y, y1)
        if not math.isfinite(ratio):
            # Overflow or NaN inside the step: a smaller step may avoid it; at round-off
            # scale it cannot, and the dynamics themselves are non-finite here.
            stats.n_rejected += 1
            h = size * controller.dfactor
            if h < 1e-14 * max(1.0, abs(tc)):
                raise SolverError("the state became non-finite (NaN or inf)",
                                  t_reached=tc, method=tab.name)
            continue
        h_next = controller.next_step(size, ratio)
        if ratio > 1.0:
            stats.n_rejected += 1
            h = h_next
            if h < 1e-14 * max(1.0, abs(tc)):
                raise SolverError(f"step size underflow (h = {h:.3g})", t_reached=tc,
                                  method=tab.name)
            continue
        stats.n_steps += 1
        tc_new = tf[target] if lands else tc + direction * size
        if on_step is not None:
            on_step(tc, tc_new, tc_new - tc, y, y1, ks)
        f1 = ks[-1] if tab.fsal else None
        while i < T and direction * (tf[i] - tc_new) <= 0:
            if tf[i] == tc_new:
                out.append(y1)
                if callback is not None:
                    y_cb = callback(i, y1)
                    if y_cb is not y1:
                        y1, f1 = y_cb, None
            else:
                out.append(dense_output(tab, y, ks, h_arg, (t[i] - t_cur) / h_arg))
            i += 1
        if i < T and f1 is None:
            f1 = f(t[0] + (tc_new - tf[0]), y1)
        y, f0, tc = y1, f1, tc_new
        # A landing step is cut short: keep the step the controller proposed before the cut
        # rather than one sized from the short step.
        h = max(h_next, h) if lands else h_next
    return torch.stack(out)
