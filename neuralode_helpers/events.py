r"""Event handling: solve :math:`\dot z = f(t, z; \theta)` from :math:`t_0` until an event
function crosses zero, with gradients through the event time.

The event time :math:`t^*` is defined implicitly by

.. math:: g\big(t^*, z(t^*; \theta); \theta\big) = 0,

the first zero crossing of the event function g after :math:`t_0` (before it, with
``reverse_time``). By the implicit function theorem (Chen, Amos & Nickel, "Learning Neural
Event Functions for ODEs", ICLR 2021),

.. math::
    \frac{dt^*}{d\theta} = -\frac{\partial g/\partial\theta
        + \partial g/\partial z \cdot \partial z(t^*)/\partial\theta}
        {\partial g/\partial t + \partial g/\partial z \cdot f(t^*, z^*)},

and the same with :math:`\theta` replaced by :math:`z_0` or :math:`t_0`. The numerator is the
derivative of g along the solution at the *fixed* time :math:`t^*`; the denominator
:math:`c = dg/dt` is the rate at which g crosses zero.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .solvers import TABLEAUS, SolveStats, odeint, solve
from .solvers.checks import SCIPY_METHODS, check_call, check_int, method_family
from .solvers.trajectory import Trajectory

__all__ = ["NoEventError", "odeint_event"]


class NoEventError(RuntimeError):
    """:func:`odeint_event` found no zero crossing of ``event_fn`` within its search bounds.

    Attributes
    ----------
    t_reached : float
        The last time the search reached.
    """

    def __init__(self, message: str, *, t_reached: float):
        self.t_reached = float(t_reached)
        super().__init__(message)


class _Crossed(Exception):
    """Raised from inside the search solve to stop it at the step where g changed sign."""

    def __init__(self, step):
        self.step = step


class _OutOfSteps(Exception):
    """Raised from inside the search solve when it has taken ``max_steps`` steps."""

    def __init__(self, t_reached):
        self.t_reached = t_reached


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=odeint,
                 horizon=1e6, max_steps=100_000, **kwargs):
    r"""Solve :math:`\dot z = f(t, z)`, :math:`z(t_0) = y_0`, until ``event_fn`` crosses zero.

    The same meaning as torchdiffeq's ``odeint_event``.

    Parameters
    ----------
    func : callable ``func(t, z) -> dz/dt``, as for :func:`~neuralode_helpers.odeint`.
    y0 : Tensor ``(*S)``, or a tuple of tensors.
    t0 : 0-d (or one-element) Tensor, or a number: the start time. It may require grad.
    event_fn : callable ``event_fn(t, z) -> g``, with ``t`` a 0-d tensor and ``z`` shaped like
        ``y0`` (a tuple for a tuple state); ``g`` must be a tensor with exactly one element
        (shape ``()`` or ``(1,)``). The event is the first time after ``t0`` where g changes
        sign (or becomes exactly 0); if ``g(t0, y0) = 0`` the event is at ``t0`` itself
        (restarting after an event, nudge the state off the surface). For several events,
        combine them into one g first, e.g. the minimum of each times its sign at ``t0``.
    reverse_time : bool, default False. Search backwards in time, ``t < t0``; ``event_fn``
        still receives the true time.
    odeint_interface : :func:`~neuralode_helpers.odeint` (default) or
        :func:`~neuralode_helpers.odeint_adjoint`: the solver of the differentiable solve
        (backprop through the solver, or the adjoint method); adjoint arguments such as
        ``params``/``adjoint_params`` go in ``**kwargs``.
    horizon : positive float, default 1e6. The search gives up beyond ``|t - t0| = horizon``.
    max_steps : int, default 100000. The search gives up after this many accepted steps.
    **kwargs : passed to ``odeint_interface`` (``rtol``, ``atol``, ``method``, ``options``,
        ...). The search uses the same ``method``, ``rtol``, ``atol`` and ``options``; a
        fixed-step method needs ``options={"step_size": h}``, and scipy's black-box methods
        cannot be searched step by step (use a torch method).

    Returns
    -------
    event_t : 0-d Tensor, the event time :math:`t^*` (in the state's dtype).
    solution : Tensor ``(2, *S)`` (a tuple of them for a tuple state): the states at
        ``[t0, event_t]``.

    Raises
    ------
    TypeError, ValueError for bad input; :class:`NoEventError` when g keeps its sign up to
    ``horizon`` or ``max_steps``; :class:`~neuralode_helpers.SolverError` when a solve fails.

    Notes
    -----
    **Finding** :math:`t^*` (no gradients): the package's solver with the given method and
    tolerances steps from :math:`t_0` and evaluates g at the end of every accepted step; in
    the first step where g changes sign, the root is found on the step's dense output
    (dopri5/tsit5's own, cubic Hermite for the other methods) by the Illinois method, to
    round-off. A crossing and re-crossing inside one step is not seen.

    **Differentiating.** Let :math:`z_d = z(t^*)` from a differentiable solve
    ``odeint_interface(func, y0, [t0, t*])`` with :math:`t^*` held fixed: it carries the
    gradients to :math:`y_0`, :math:`t_0` and the parameters. With :math:`g_d = g(t^*, z_d)`
    and the detached constant :math:`c = \partial g/\partial t + \partial g/\partial z\cdot
    f(t^*, z^*)`, the returned time is

    .. math:: t_d = t^* - \frac{g_d - \operatorname{sg}(g_d)}{c}

    (sg: stop-gradient). Its value is :math:`t^*` exactly (the bracket is zero), and its
    differential is :math:`dt_d = -dg_d / c`, where :math:`dg_d` is the derivative of g along
    the solution at fixed :math:`t^*` — exactly the implicit-function-theorem gradient above
    (for :math:`z(t^*)` as computed by the solver, to the solver's tolerance for the exact
    flow). The last state is returned as :math:`z_d + \operatorname{sg}(f^*)\,(t_d - t^*)`:
    the same value, and the differential
    :math:`\partial z(t^*)/\partial\theta\,d\theta + f(t^*, z^*)\,dt_d`, the total derivative
    of :math:`z(t^*(\theta); \theta)` (this saves a third solve to ``t_d``). These are exact
    first derivatives; second derivatives are not (c and f* are constants to autograd).
    If :math:`c = 0` (g touches zero without crossing) the gradient is infinite: a warning
    says so.
    """
    if not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, z), got "
                        f"{type(event_fn).__name__}")
    if not callable(odeint_interface):
        raise TypeError("odeint_interface must be a solver such as odeint or odeint_adjoint, "
                        f"got {type(odeint_interface).__name__}")
    if (isinstance(horizon, bool) or not isinstance(horizon, numbers.Real)
            or not math.isfinite(horizon) or not horizon > 0):
        raise ValueError(f"horizon must be a positive finite number, got {horizon!r}")
    max_steps = check_int("max_steps", max_steps, minimum=1)
    method = kwargs.get("method") or "dopri5"
    rtol, atol = kwargs.get("rtol", 1e-7), kwargs.get("atol", 1e-9)
    direction = -1.0 if reverse_time else 1.0

    t0 = _as_time(t0, y0)
    end = float(t0.detach()) + direction * float(horizon)
    # Validates func, y0, the method, tolerances and options as odeint does, and packs a
    # tuple state into one flat vector for the search.
    call = check_call(func, y0, torch.stack([t0.detach(), t0.detach().new_tensor(end)]),
                      method, rtol, atol, kwargs.get("options"))
    if call.method in SCIPY_METHODS:
        raise ValueError(f"odeint_event searches the solver's steps one by one, which the black "
                         f"box {call.method!r} cannot show: use a torch method (dopri5, tsit5, "
                         "rk4 with options={'step_size': h}, ...)")
    if method_family(call.method) == "fixed" and call.options.get("step_size") is None:
        raise ValueError(f"odeint_event with the fixed-step method {call.method!r} needs "
                         "options={'step_size': h}: without it the search would take one step "
                         "over the whole horizon")
    state = call.state
    dtype = state.dtype
    # Times are computed in the state's dtype, as in odeint.
    t0 = t0.to(dtype)
    t0_value, end = float(t0.detach()), float(call.t[1])

    def g(t, y):
        """The event function on the packed state, as a Python float (no graph)."""
        return _check_event(event_fn(t, state.unpack(y)), dtype)

    with torch.no_grad():
        t_star = _find_event(call, g, t0_value, end, float(horizon), max_steps, rtol, atol)
    t_star_t = torch.tensor(t_star, dtype=dtype, device=call.y0.device)
    # Compared in the state's dtype: a root within round-off of t0 is t0 (a solve over
    # [t0, t0] is not a valid time grid).
    at_start = bool(t_star_t == t0.detach())
    return _differentiable(func, y0, t0, t_star_t, at_start, event_fn, state,
                           odeint_interface, kwargs)


def _as_time(t0, y0):
    """t0 as a 0-d tensor (keeping its graph), on the state's device."""
    parts = y0 if isinstance(y0, tuple) else (y0,)
    ref = parts[0] if parts and isinstance(parts[0], torch.Tensor) else None
    if isinstance(t0, torch.Tensor):
        if t0.numel() != 1:
            raise ValueError(f"t0 must be a single time (0-d tensor), got shape "
                             f"{tuple(t0.shape)}")
        if not t0.is_floating_point():
            t0 = t0.to(torch.float64 if ref is None else ref.dtype)
        return t0.reshape(())
    if isinstance(t0, bool) or not isinstance(t0, numbers.Real):
        raise TypeError(f"t0 must be a number or a 0-d tensor, got {type(t0).__name__}")
    if ref is None:
        return torch.tensor(float(t0), dtype=torch.float64)
    return torch.tensor(float(t0), dtype=ref.dtype if ref.is_floating_point()
                        else torch.float64, device=ref.device)


def _check_event(g, dtype):
    """event_fn's value as a one-element tensor; a clear error for anything else."""
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"event_fn(t, z) must return a torch.Tensor with one element, got "
                        f"{type(g).__name__}")
    if g.numel() != 1:
        raise ValueError(f"event_fn(t, z) must return a scalar (one element), got shape "
                         f"{tuple(g.shape)}; for several events, combine them into one "
                         "function first, e.g. the minimum of each times its sign at t0")
    if not g.is_floating_point():
        raise TypeError(f"event_fn(t, z) must return a floating-point tensor, got {g.dtype}")
    return g.reshape(()).to(dtype)


def _find_event(call, g, t0, end, horizon, max_steps, rtol, atol):
    """t* as a Python float: step with the package's solver until g changes sign, then find
    the root on that step's dense output."""
    y0 = call.y0
    tt = y0.new_tensor
    g0 = float(g(tt(t0), y0))
    if not math.isfinite(g0):
        raise ValueError(f"event_fn(t0, z0) is not finite ({g0})")
    if g0 == 0.0:
        return t0
    sign0 = math.copysign(1.0, g0)
    tab = TABLEAUS[call.method]
    n_steps = 0
    last = [t0, g0]  # the last step end the search reached, and g there

    def on_step(ta, tb, h, ya, yb, ks):
        nonlocal n_steps
        n_steps += 1
        gb = float(g(tt(tb), yb))
        if gb == 0.0 or math.copysign(1.0, gb) != sign0 or math.isnan(gb):
            raise _Crossed((ta, tb, h, ya, yb, ks, last[1], gb))
        last[:] = [tb, gb]
        if n_steps >= max_steps:
            raise _OutOfSteps(tb)

    try:
        solve(call.func, y0, tt([t0, end]), method=call.method, rtol=rtol, atol=atol,
              options=call.options, stats=SolveStats(), segments=call.state.segments,
              on_step=on_step)
    except _Crossed as crossed:
        ta, tb, h, ya, yb, ks, ga, gb = crossed.step
    except _OutOfSteps as out:
        raise NoEventError(_no_event_message(
            g0, t0, out.t_reached, f"after max_steps={max_steps} steps", horizon, max_steps),
            t_reached=out.t_reached) from None
    else:
        raise NoEventError(_no_event_message(
            g0, t0, end, "at the horizon", horizon, max_steps), t_reached=end)
    if math.isnan(gb):
        raise ValueError(f"event_fn(t, z) became NaN at t = {tb:.6g}")
    traj = Trajectory(tab)
    traj.record(ta, tb, h, ya, yb, ks)
    if tab.dense is None:
        # The cubic Hermite interpolant needs f at the step's end.
        traj.finish(call.func(tt(tb), yb))

    def phi(s):
        t = ta + s * h
        return float(g(tt(t), traj.in_step(0, t)))

    if gb == 0.0:
        # g is exactly 0 at the step's end: either its root is there, or g is 0 on a whole
        # stretch (an event function that returns 0 past some time) and the first time it
        # leaves the sign of g(t0) lies inside the step. Bisect for that first time.
        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            g_mid = phi(mid)
            if g_mid != 0.0 and math.copysign(1.0, g_mid) == sign0:
                lo = mid
            else:
                hi = mid
        return tb if hi >= 1.0 else ta + hi * h
    s = _illinois(phi, ga, gb)
    return tb if s >= 1.0 else ta + s * h


def _no_event_message(g0, t0, t_reached, where, horizon, max_steps):
    return (f"no event: event_fn(t, z) kept the sign of g(t0, z0) = {g0:.6g} from t0 = "
            f"{t0:.6g} to t = {t_reached:.6g}, where the search stopped {where} "
            f"(horizon={horizon:g} in |t - t0|, max_steps={max_steps}). If the event comes "
            "later, raise horizon or max_steps; otherwise check event_fn's sign, and the "
            "direction (reverse_time=True searches t < t0)")


def _illinois(phi, fa, fb, max_iter=200):
    r"""A root of phi in [0, 1], where phi(0) = fa and phi(1) = fb have opposite signs.

    Regula falsi, with the Illinois modification: when the same end of the bracket is kept
    twice in a row, its function value is halved, so that the kept end moves too and the
    convergence is superlinear instead of linear. Stops when the bracket is at round-off
    width or phi is exactly zero.
    """
    a, b = 0.0, 1.0
    kept = 0  # +1: b was kept last time, -1: a was kept
    s = 0.5
    for _ in range(max_iter):
        s = (a * fb - b * fa) / (fb - fa)
        if not a < s < b:  # no progress at round-off (or a degenerate secant): bisect
            s = 0.5 * (a + b)
            if not a < s < b:
                break
        fs = phi(s)
        if fs == 0.0:
            return s
        if (fs > 0) == (fb > 0):  # the root is in [a, s]: a is kept
            b, fb = s, fs
            if kept == -1:
                fa *= 0.5
            kept = -1
        else:  # the root is in [s, b]: b is kept
            a, fa = s, fs
            if kept == 1:
                fb *= 0.5
            kept = 1
        if b - a <= 4 * 2.0**-52:
            break
    return s


def _differentiable(func, y0, t0, t_star, at_start, event_fn, state, odeint_interface, kwargs):
    """event_t and the solution with the implicit-function gradient (see odeint_event)."""
    parts0 = y0 if state.is_tuple else (y0,)
    if at_start:
        # No solve to make: z(t*) = z0 + f0 (t* - t0) to first order, with t* fixed, which
        # keeps the gradient to t0 (dz(t*)/dt0 = -f0).
        with torch.no_grad():
            f0 = _as_parts(func(t_star, _whole(tuple(p.detach() for p in parts0), state)),
                           state)
        z_end = tuple(p + fp * (t_star - t0) for p, fp in zip(parts0, f0))
        starts = parts0
    else:
        zs = odeint_interface(func, y0, torch.stack([t0, t_star]), **kwargs)
        zs = _as_parts(zs, state)
        starts = tuple(z[0] for z in zs)
        z_end = tuple(z[-1] for z in zs)
    z_star = tuple(p.detach() for p in z_end)
    with torch.no_grad():
        f_star = _as_parts(func(t_star, _whole(z_star, state)), state)
    g_d = _check_event(event_fn(t_star, _whole(z_end, state)), t_star.dtype)
    if g_d.requires_grad:
        c = _crossing_rate(event_fn, t_star, z_star, f_star, state)
        if c == 0 or not torch.isfinite(c):
            warnings.warn(f"event_fn crosses zero with rate dg/dt = {float(c):.3g} at the event "
                          f"t = {float(t_star):.6g}: the gradient through the event time is "
                          "undefined (infinite)", RuntimeWarning, stacklevel=3)
        event_t = t_star - (g_d - g_d.detach()) / c
    else:
        event_t = t_star.clone()
    # The total derivative of z(t*(θ); θ): the fixed-time part from the solve, plus f* dt*.
    shift = event_t - t_star
    last = tuple(z + fz * shift for z, fz in zip(z_end, f_star))
    solution = tuple(torch.stack([s, z]) for s, z in zip(starts, last))
    return event_t, solution if state.is_tuple else solution[0]


def _as_parts(x, state):
    """A state (tensor or tuple) as a tuple of parts."""
    return tuple(x) if state.is_tuple else (x,)


def _whole(parts, state):
    """The inverse of _as_parts: what func and event_fn take."""
    return parts if state.is_tuple else parts[0]


def _crossing_rate(event_fn, t_star, z_star, f_star, state):
    r"""c = ∂g/∂t + ∂g/∂z · f(t*, z*), detached: the rate at which g crosses zero."""
    t = t_star.detach().clone().requires_grad_(True)
    z = tuple(p.detach().clone().requires_grad_(True) for p in z_star)
    with torch.enable_grad():
        gc = _check_event(event_fn(t, _whole(z, state)), t.dtype)
        if not gc.requires_grad:
            return t.new_zeros(())
        grads = torch.autograd.grad(gc, (t, *z), allow_unused=True)
    c = t.new_zeros(())
    if grads[0] is not None:
        c = c + grads[0].to(t.dtype)
    for dz, fz in zip(grads[1:], f_star):
        if dz is not None:
            c = c + (dz * fz).sum().to(t.dtype)
    return c.detach()
