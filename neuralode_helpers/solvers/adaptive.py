r"""Adaptive integration: embedded Runge–Kutta steps under a step-size controller, with
outputs between steps from the dense output.

One pass of the loop *attempts* a step of size h from (t, y); the embedded pair's error
ratio r decides: r <= 1 *accepts* it (the outputs it passed are *emitted*, and the
controller proposes the next h), r > 1 or a non-finite r *rejects* it (retry from the same
(t, y) with a smaller h).

f is never evaluated outside the requested interval: the last step is cut to end exactly
at the last time, and, with ``land_on_outputs`` (the adjoint's jumps need it), at every
time t_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SolverError
from .controller import initial_step
from .rk import LeanRK, dense_output, error_estimate, lean_applies, rk_step

# A step below this fraction of |t| (or of 1) changes t by round-off only: give up there.
_UNDERFLOW = 1e-14


@dataclass
class _Attempt:
    """One step tried from the current (t, y): where it aims, its result and error ratio."""

    target: int  # index of the output time the step may land on
    lands: bool  # whether it ends exactly on t[target]
    size: float  # |step| as a float
    t_cur: torch.Tensor  # start time, 0-d tensor
    h_arg: object  # signed step: a float, or t[target] - t_cur (a tensor) when landing
    y1: torch.Tensor
    ks: list
    ratio: float


def integrate_adaptive(tab, f, y0, t, *, norm, controller, stats, first_step=None,
                       max_num_steps=2**31 - 1, callback=None, land_on_outputs=None, f0=None,
                       on_step=None, step=rk_step, hooks=None, carry=None):
    """States at every t, shape ``(len(t), *y0.shape)``.

    ``norm(err, y0, y1)`` gives the error ratio of a step; ``controller.next_step(h, r)``
    the next step size. ``land_on_outputs``: end a step exactly on every t_i (default: when
    a ``callback`` is given or the tableau says ``land_on_outputs``; otherwise only on the
    last time, and the outputs in between come from the dense output). With
    ``callback(i, y)`` (which needs landing) the solve continues from the state the
    callback returns at t_i.

    ``max_num_steps``: the most step attempts (accepted or rejected) between two consecutive
    output times, as in torchdiffeq; the count restarts whenever a step passes an output.

    ``on_step(t, t_new, h, y, y_new, ks)`` is told every accepted step (to record a
    :class:`~.trajectory.Trajectory`). ``step`` takes one Runge–Kutta step
    (:func:`~.rk.rk_step`, or a checkpointed version of it). ``hooks``: an object with
    ``step``, ``accept`` and ``reject`` methods of ``(t0, y0, dt)``, told before every
    attempt and after each decision (torchdiffeq's ``callback_*_step``). ``carry``: a dict
    that receives ``"next_step"``, the step size the controller proposes after the last
    step, for a following solve to start with (``first_step``).
    """
    if land_on_outputs is None:
        # A tableau whose dense output is far less accurate than its steps (dopri8) lands too.
        land_on_outputs = callback is not None or tab.land_on_outputs
    elif callback is not None and not land_on_outputs:
        raise ValueError("a callback changes the state at each t_i, so the solver must land "
                         "there: land_on_outputs=False cannot be combined with a callback")
    loop = _AdaptiveLoop(tab, f, t, norm=norm, controller=controller, stats=stats,
                         max_num_steps=max_num_steps, callback=callback,
                         land_on_outputs=land_on_outputs, on_step=on_step, step=step,
                         hooks=hooks)
    out = loop.run(y0, f0, first_step)
    if carry is not None:
        carry["next_step"] = loop.h
    return out


class _AdaptiveLoop:
    """The state of one adaptive solve and the moves that change it.

    Times are kept twice: as Python floats (``tc``, ``tf``) for the control flow, and as
    tensors ``t[b] + (tc - tf[b])`` for f and the step, t_b the last output time landed on
    (t_0 at first), so that (a) the current time is an offset from t_b, never a running sum
    of steps (no drift in float32), and (b) backprop reaches t through the landing steps,
    and the steps after a landing start from t_b itself (not from t_0 plus a number, which
    would leave dL/dt_b the dependence of the later states on z(t_b) without the shift of
    their start times that cancels it).
    """

    def __init__(self, tab, f, t, *, norm, controller, stats, max_num_steps, callback,
                 land_on_outputs, on_step, step, hooks):
        self.tab, self.f, self.t = tab, f, t
        self.norm, self.controller, self.stats = norm, controller, stats
        self.max_num_steps, self.callback = max_num_steps, callback
        self.land_on_outputs, self.on_step, self.step, self.hooks = (
            land_on_outputs, on_step, step, hooks)
        self.tf = t.tolist()
        self.T = len(self.tf)
        self.direction = 1.0 if self.tf[-1] > self.tf[0] else -1.0

    def run(self, y0, f0, first_step):
        tf = self.tf
        if f0 is None:
            f0 = self.f(self.t[0], y0)
        if not torch.isfinite(f0.detach()).all():
            raise SolverError("dz/dt is not finite (NaN or inf) at the initial point",
                              t_reached=tf[0], method=self.tab.name)
        if first_step is None:
            with torch.no_grad():  # step sizes are not differentiated
                self.h = initial_step(self.f, self.t[0].detach(), y0.detach(), f0.detach(),
                                      self.tab.order, self.norm, tf[-1] - tf[0])
        else:
            self.h = abs(float(first_step))
        self.y, self.f0, self.tc = y0, f0, tf[0]
        # No graph is being built: the same steps with fewer tensor operations (rk.LeanRK).
        self.lean = LeanRK(self.tab) if lean_applies(self.step) else None
        self.base = 0  # the last output time landed on: times are offsets from it
        self.i = 1  # the next output time to emit
        self.n_attempts = 0  # since the last output time was passed
        self.out = [y0]
        while self.i < self.T:
            self._check_budget()
            attempt = self._attempt()
            if math.isfinite(attempt.ratio) and attempt.ratio <= 1.0:
                self._accept(attempt)
            else:
                self._reject(attempt)
        return torch.stack(self.out)

    def _time(self, tc):
        return self.t[self.base] + (tc - self.tf[self.base])

    def _check_budget(self):
        if self.n_attempts >= self.max_num_steps:
            raise SolverError(
                f"gave up after max_num_steps={self.max_num_steps} steps without reaching "
                f"the next output time {self.tf[self.i]:.6g}", t_reached=self.tc,
                method=self.tab.name, kind="max_num_steps exceeded")
        self.n_attempts += 1

    def _attempt(self) -> _Attempt:
        """Try one step of size h from (tc, y); the step ends exactly on the target time
        when that is within reach."""
        tf, tc = self.tf, self.tc
        target = self.i if self.land_on_outputs else self.T - 1
        remaining = abs(tf[target] - tc)
        lands = remaining <= self.h * (1 + 1e-12)
        size = remaining if lands else self.h
        t_cur = self._time(tc)
        # A landing step is t[target] - t as a tensor, so that backprop reaches t.
        h_arg = (self.t[target] - t_cur) if lands else self.direction * size
        if self.hooks is not None:
            self.hooks.step(t_cur, self.y, h_arg)
        if self.lean is not None:
            y1, ks = self.lean.step(self.f, t_cur, h_arg, self.y, self.f0)
            ratio = self.norm.lean(self.lean.error(), self.lean.y0, self.lean.y1, y1.shape)
            return _Attempt(target, lands, size, t_cur, h_arg, y1, ks, ratio)
        y1, ks = self.step(self.f, self.tab, t_cur, h_arg, self.y, self.f0)
        with torch.no_grad():  # step sizes are not differentiated: keep no graph for them
            ratio = self.norm(error_estimate(self.tab, h_arg, ks), self.y, y1)
        return _Attempt(target, lands, size, t_cur, h_arg, y1, ks, ratio)

    def _reject(self, a: _Attempt):
        """Retry from the same (t, y) with a smaller step, or give up at round-off scale."""
        self.stats.n_rejected += 1
        if self.hooks is not None:
            self.hooks.reject(a.t_cur, self.y, a.h_arg)
        if math.isfinite(a.ratio):
            self.h = self.controller.next_step(a.size, a.ratio)
            reason, kind = f"step size underflow (h = {self.h:.3g})", "underflow in dt"
        else:
            # Overflow or NaN inside the step: a smaller step may avoid it; at round-off
            # scale it cannot, and the dynamics themselves are non-finite here.
            self.h = a.size * self.controller.dfactor
            reason, kind = "the state became non-finite (NaN or inf)", None
        if self.h < _UNDERFLOW * max(1.0, abs(self.tc)):
            raise SolverError(reason, t_reached=self.tc, method=self.tab.name, kind=kind)

    def _accept(self, a: _Attempt):
        """Move to the step's end, emit the outputs it passed, propose the next step."""
        h_next = self.controller.next_step(a.size, a.ratio)
        self.stats.n_steps += 1
        if self.hooks is not None:
            self.hooks.accept(a.t_cur, self.y, a.h_arg)
        tc_new = self.tf[a.target] if a.lands else self.tc + self.direction * a.size
        if self.on_step is not None:
            self.on_step(self.tc, tc_new, tc_new - self.tc, self.y, a.y1, a.ks)
        # FSAL: the last stage is f(t_new, y1), the next step's first.
        f1 = a.ks[-1] if self.tab.fsal else None
        if a.lands:
            self.base = a.target
        y1, f1 = self._emit_outputs(a, tc_new, f1)
        if self.i < self.T and f1 is None:
            f1 = self.f(self._time(tc_new), y1)
        self.y, self.f0, self.tc = y1, f1, tc_new
        # A landing step is cut short: keep the step the controller proposed before the cut
        # rather than one sized from the short step.
        self.h = max(h_next, self.h) if a.lands else h_next

    def _emit_outputs(self, a: _Attempt, tc_new, f1):
        """Append the states at the output times up to tc_new: the step's end where it
        landed (then the callback may replace it: a jump, after which f1 is stale), the
        dense output in between. Returns the state and first stage to continue from."""
        tf, y1 = self.tf, a.y1
        while self.i < self.T and self.direction * (tf[self.i] - tc_new) <= 0:
            if tf[self.i] == tc_new:
                self.out.append(y1)
                if self.callback is not None:
                    y_cb = self.callback(self.i, y1)
                    if y_cb is not y1:
                        y1, f1 = y_cb, None
            elif self.lean is not None:
                self.out.append(self.lean.dense(self.y, (tf[self.i] - self.tc) / self.lean.h))
            else:
                theta = (self.t[self.i] - a.t_cur) / a.h_arg
                self.out.append(dense_output(self.tab, self.y, a.ks, a.h_arg, theta))
            self.i += 1
            self.n_attempts = 0  # the step budget is per output interval (torchdiffeq's)
        return y1, f1
