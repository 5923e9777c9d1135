r"""Gradients of an ODE solve by the adjoint sensitivity method (Chen et al. 2018, Alg. 1).

For outputs :math:`z_i = z(t_i)` of :math:`\dot z = f(t, z; \theta)` and a loss
:math:`L(z_0, \dots, z_{T-1})` with direct partials :math:`\ell_i = \partial L/\partial z_i`,
the adjoint :math:`a(t) = dL/dz(t)` (a column vector, the total sensitivity) obeys

.. math::
    \dot a = -\Big(\frac{\partial f}{\partial z}\Big)^\top a, \qquad
    a(t_i^-) = a(t_i^+) + \ell_i

backwards from :math:`a(t_{T-1}) = \ell_{T-1}`, and

.. math::
    \frac{dL}{d\theta} = \int_{t_0}^{t_{T-1}}
        \Big(\frac{\partial f}{\partial \theta}\Big)^\top a\,dt,
    \qquad
    \frac{dL}{dt_i} = \ell_i^\top f(t_i, z_i)\ (i \ge 1),
    \qquad
    \frac{dL}{dt_0} = -a(t_0)^\top f(t_0, z_0).

One backward solve carries the augmented state :math:`[z, a, a_\theta]` from
:math:`t_{T-1}` to :math:`t_0`, with
:math:`\dot a_\theta = -(\partial f/\partial\theta)^\top a` (so that
:math:`a_\theta(t_0) = dL/d\theta`), and adds the jumps in :math:`a` on the way. The time
gradients need no channel of their own: :math:`\frac{d}{dt}(a^\top f) =
a^\top \partial f/\partial t`, so Chen et al.'s extra channel :math:`a_t` integrates to
exactly the closed form above.

The gradient is that of the *continuous* problem, approximated to the backward solve's
tolerance; it is not the exact gradient of the discretised forward solve, as backprop through
:func:`odeint` would be. It is also only as good as the backward reconstruction of
:math:`z(t)`, which is unstable for strongly contracting dynamics: by default z is restored
from the forward pass at every observation time, so the reconstruction only has to hold over
one interval between observation times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from .errors import SolverError
from .fastpath import plan_for
from .solvers import TABLEAUS, SolveStats, Stats, solve
from .solvers.checks import (
    SCIPY_METHODS,
    check_call,
    check_method,
    closure_check,
    method_family,
)
from .solvers.odeint import step_callbacks, tuple_norm_options
from .solvers.trajectory import Trajectory


def _vjp(func, tt, z, a, params):
    r"""f(t, z) and the vector-Jacobian products :math:`-(\partial f/\partial z)^\top a`
    and :math:`-(\partial f/\partial\theta)^\top a`, flattened, in one backward pass.
    Unused inputs (or a field that depends on neither z nor θ) give zeros."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        f = func(tt, z)
        inputs = (z, *params)
        if f.requires_grad:
            vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True)
        else:
            vjps = (None,) * len(inputs)
    flat = [torch.zeros(x.numel(), dtype=a.dtype, device=a.device) if v is None
            else v.reshape(-1) if v.dtype == a.dtype else v.reshape(-1).to(a.dtype)
            for v, x in zip(vjps, inputs)]
    return f.detach(), flat[0], flat[1:]


# ---- the backward solve's error norm ------------------------------------------------------
def _rms(x):
    return x.square().mean().sqrt() if x.numel() else x.new_zeros(())


def _backward_norm(cfg, layout):
    """``(segments, n_counted, custom)`` for the backward solve's :class:`ErrorNorm`.

    ``layout``: the names and sizes of the parts of the flat backward state, in order, from
    ``("z", n), ("a", n), ("a_θ", P)``. The rules, in order:

    - a callable ``adjoint_options["norm"]`` gets the scaled errors of (z, a, a_θ) as a tuple
      (zeros for a part that this adjoint does not solve for);
    - a callable forward ``options["norm"]`` (for example one that leaves regulariser channels
      out) is applied to z and to a alike, as torchdiffeq does: the backward solve controls
      the channels that the forward one controls (the two combined by their quadratic mean,
      which for the RMS norm is the default's one RMS over [z, a]);
    - otherwise the RMS of [z, a] together and of a_θ, the larger one.

    a_θ is left out under the seminorm, but only where z is part of the state (backsolve):
    there, anything the forward steps had to resolve is resolved again by z's own channels.
    The interpolated adjoint reads z from the forward solve, and a alone may vary far more
    slowly than the integrand of a_θ (a forcing term seen only through θ), so it always
    controls a_θ.
    """
    names = [name for name, _ in layout]
    sizes = [size for _, size in layout]
    count_params = not (cfg.seminorm and "z" in names)
    shape = cfg.shape

    if cfg.adjoint_norm is not None:
        user = cfg.adjoint_norm

        def norm(scaled):
            parts = dict(zip(names, scaled.split(sizes)))
            zeros_n = scaled.new_zeros(cfg.n)
            return user((parts.get("z", zeros_n).view(shape),
                         parts.get("a", zeros_n).view(shape),
                         parts.get("a_θ", scaled.new_zeros(cfg.n_param))))

        return None, None, norm
    if cfg.state_norm is not None:
        forward = cfg.state_norm

        def norm(scaled):
            parts = dict(zip(names, scaled.split(sizes)))
            # z and a are measured with the forward's norm and combined as the default
            # norm combines them: one RMS over [z, a] is the quadratic mean of the two RMS.
            own = torch.stack([torch.as_tensor(forward(parts[k].view(shape)),
                                               dtype=scaled.dtype)
                               for k in ("z", "a") if k in parts])
            ratios = [own.square().mean().sqrt()]
            if count_params and "a_θ" in parts:
                ratios.append(_rms(parts["a_θ"]))
            return torch.stack(ratios).max()

        return None, None, norm
    if names[:2] == ["z", "a"]:
        segments = [2 * cfg.n] + sizes[2:]
    else:
        segments = sizes
    segments = [s for s in segments if s]
    n_counted = len(segments) if count_params else 1
    return segments, n_counted, None


def _adjoint_solve(cfg, f, y_end, t, jump, layout, on_step=None):
    """The backward solve from t_{T-1} to t_0, landing on every t_i to add the jumps. A
    :class:`SolverError` raised here says that it was the adjoint's backward solve."""
    segments, n_counted, custom = _backward_norm(cfg, layout)
    options = dict(cfg.adjoint_options)
    first = cfg.carry.get("next_step")
    if first is not None and "first_step" not in options and cfg.adjoint_method == cfg.method:
        # Start where the forward solve ended, with the step it proposed there (scaled to
        # tighter adjoint tolerances), instead of selecting one: the selection costs an
        # evaluation, and its cautious first step a second step in the first interval.
        ratio = min(1.0, cfg.adjoint_rtol / cfg.rtol, cfg.adjoint_atol / cfg.atol)
        options["first_step"] = first * ratio ** (1.0 / TABLEAUS[cfg.method].order)
    if custom is not None:
        if method_family(cfg.adjoint_method) == "adaptive":
            options["norm"] = custom
        else:  # scipy has its own norm, and a fixed step none: only the seminorm applies
            segments, n_counted, _ = _backward_norm(
                replace(cfg, adjoint_norm=None, state_norm=None), layout)
    try:
        return solve(f, y_end, t.flip(0), method=cfg.adjoint_method, rtol=cfg.adjoint_rtol,
                     atol=cfg.adjoint_atol, options=options, stats=cfg.stats.backward,
                     callback=jump, segments=segments, n_counted=n_counted, on_step=on_step)
    except SolverError as error:
        if "the adjoint's backward solve" not in str(error):
            error.reword(f"the adjoint's backward solve (from t = {float(t[-1]):.6g} back "
                         f"to t = {float(t[0]):.6g}) failed: ")
        raise


def _jumps(grad_ys, lo, hi, restore=None, check=None):
    """The callback that adds ℓ_i to the adjoint (entries [lo:hi] of the backward state) at
    each observation time t_i, i ≥ 1; with ``restore = (ys, n)`` it also puts back z(t_i)
    from the forward pass into entries [:n]. ``check(i, z)``, if given, is shown the rebuilt
    state ``y`` at every t_i, t_0 included, before anything is added or restored."""
    T = len(grad_ys)

    def jump(k, y):
        i = T - 1 - k
        if check is not None:
            check(i, y)
        if i == 0:
            return y
        y = y.clone()
        y[lo:hi] += grad_ys[i].reshape(-1)
        if restore is not None:
            ys, n = restore
            y[:n] = ys[i].reshape(-1)
        return y

    return jump


class _Diverged(Exception):
    """The backward reconstruction of z left the forward solution (internal: caught by
    :meth:`_AdjointFn.backward`, which recovers or raises a :class:`SolverError`)."""

    def __init__(self, t, ratio):
        super().__init__(t, ratio)
        self.t, self.ratio = t, ratio


# How far the rebuilt z(t_i) may be from the stored z_i before the reconstruction counts as
# diverged: DIVERGENCE_FACTOR tolerances, atol + rtol |z_i|, but never more than
# DIVERGENCE_RELATIVE of |z_i| (at rtol 1e-3, 1e4 tolerances would be ten times z itself).
# The forward and backward solves each keep a local error per step below the tolerance;
# their global errors grow with the length of the solve and can reach tens or hundreds of
# tolerances on benign problems, while a reconstruction that diverged is off by many
# orders of magnitude (the mildly stiff example of tests/test_adjoint_fixes.py: 1e20).
# A false alarm costs only the recovery (a correct gradient by another route).
DIVERGENCE_FACTOR = 1e4
DIVERGENCE_RELATIVE = 1e-2


def _reconstruction_check(cfg, t, ys):
    r"""``check(i, z)`` for :func:`_jumps`: raise :class:`_Diverged` when the rebuilt z(t_i)
    is farther from the stored z_i than the bar :math:`F\,\text{atol} + \min(F\,\text{rtol},
    R)\,(|z_i| + \text{RMS}(z_i))` (RMS of the ratio over the entries; F =
    ``DIVERGENCE_FACTOR``, R = ``DIVERGENCE_RELATIVE``). The bar is measured on the stored
    z_i alone: a rebuilt z that grew must not widen it. A fixed-step method has no
    tolerance: there the bar is 10 % of (|z_i| + RMS(z_i)) plus 1e-6, which a discretisation
    error that still gives a useful gradient stays below, and a reconstruction that grows
    without bound does not. A custom forward norm
    measures the ratio, as it measured the forward solve's errors."""
    if "fixed" in (method_family(cfg.method), method_family(cfg.adjoint_method)):
        absolute, relative = 1e-6, 0.1
    else:
        atol, rtol = max(cfg.atol, cfg.adjoint_atol), max(cfg.rtol, cfg.adjoint_rtol)
        absolute = DIVERGENCE_FACTOR * atol
        relative = min(DIVERGENCE_FACTOR * rtol, DIVERGENCE_RELATIVE)
    tf = t.tolist()

    def check(i, z):
        stored = ys[i].reshape(-1)
        # Each entry is measured against its own size plus the state's RMS size: an entry
        # that starts at exactly 0 (a CNF's log-density channel at t_0) carries the
        # discretisation error of the others, not a divergence.
        size = stored.abs() + _rms(stored)
        scaled = (z - stored) / (absolute + relative * size)
        # Measured in the forward solve's own norm where it has one: channels that the
        # forward leaves out of its error control (RNODE's integrals) are rebuilt without
        # any, and they never feed back into the gradient.
        ratio = float(_rms(scaled) if cfg.state_norm is None
                      else cfg.state_norm(scaled.view(cfg.shape)))
        if not ratio <= 1.0:  # NaN too
            raise _Diverged(tf[i], ratio)

    return check


# ---- the three adjoints --------------------------------------------------------------------
def _backsolve(cfg, t, ys, grad_ys, params):
    """Chen et al.'s adjoint: one backward solve of [z, a, a_θ]; z is rebuilt backwards
    (restored at every t_i with ``restore_z``), and compared with the stored z_i there.
    Returns a(t_0) and dL/dθ (flat)."""
    func, shape, n = cfg.func, ys.shape[1:], ys[0].numel()
    n_param = sum(p.numel() for p in params)

    def augmented(tt, y):
        f, vz, vp = _vjp(func, tt, y[:n].view(shape), y[n:2 * n].view(shape), params)
        return torch.cat([f.reshape(-1), vz, *vp])

    quad = None
    if cfg.plan is not None:  # the same right-hand side, by hand (see fastpath.py)
        augmented = cfg.plan.backsolve_rhs(n, bool(params))  # noqa: F811
        if params and _STEP_QUADRATURE and _params_outside_control(cfg):
            # a_θ out of the state: summed over the accepted steps only
            quad = cfg.plan.step_quadrature(n, TABLEAUS[cfg.adjoint_method].b)
            augmented, n_param = quad.rhs, 0

    y_end = torch.cat([ys[-1].reshape(-1), grad_ys[-1].reshape(-1), ys.new_zeros(n_param)])
    check = None
    if cfg.on_divergence != "ignore":
        compare = _reconstruction_check(cfg, t, ys)

        def check(i, y):
            compare(i, y[:n])

    jump = _jumps(grad_ys, n, 2 * n, restore=(ys, n) if cfg.restore_z else None,
                  check=check)
    layout = [("z", n), ("a", n)] + ([] if quad else [("a_θ", n_param)])
    y0 = _adjoint_solve(cfg, augmented, y_end, t, jump, layout,
                        on_step=None if quad is None else quad.on_step)[-1]
    if quad is not None:
        return y0[n:2 * n], quad.total
    return y0[n:2 * n], y0[2 * n:]


# Whether the fast path's backsolve sums dL/dθ over the accepted steps (fastpath.StepQuadrature)
# where a_θ plays no part in the step-size control: 7-17 % faster on small batches, the same
# on make bench's problem (N = 256), the same gradient to round-off. False: a_θ in the state.
_STEP_QUADRATURE = True


def _params_outside_control(cfg):
    """Whether a_θ leaves the backward steps unchanged: a torch method under the seminorm
    without a norm of the user's that sees a_θ (or a fixed step: no control at all)."""
    family = method_family(cfg.adjoint_method)
    if family == "fixed":
        return True
    return family == "adaptive" and cfg.seminorm and cfg.adjoint_norm is None


def _interpolated(cfg, traj, t, ys, grad_ys, params):
    """The interpolated adjoint: solve only [a, a_θ] backwards, reading z(t) from the forward
    solve's dense output. Nothing is reconstructed, so nothing can diverge."""
    func, shape, n = cfg.func, ys.shape[1:], ys[0].numel()
    n_param = sum(p.numel() for p in params)

    def augmented(tt, y):
        _, vz, vp = _vjp(func, tt, traj(float(tt)).view(shape), y[:n].view(shape), params)
        return torch.cat([vz, *vp])

    if cfg.plan is not None:  # the same right-hand side, by hand (see fastpath.py)
        augmented = cfg.plan.interpolated_rhs(  # noqa: F811
            n, bool(params), lambda tt: traj(float(tt)))

    y_end = torch.cat([grad_ys[-1].reshape(-1), ys.new_zeros(n_param)])
    y0 = _adjoint_solve(cfg, augmented, y_end, t, _jumps(grad_ys, 0, n),
                        [("a", n), ("a_θ", n_param)])[-1]
    return y0[:n], y0[n:]


# Gauss–Legendre on a backward step is checked against the same rule on the step's two
# halves; a step whose two answers disagree by more than the tolerance is halved, at most
# this many times (2^12 pieces per step) before the quadrature gives up with an error.
_MAX_HALVINGS = 12


def _quadrature(cfg, traj, t, ys, grad_ys, params):
    r"""The quadrature adjoint: solve only a backwards (z from the forward dense output),
    keeping a's own dense output; then
    :math:`dL/d\theta = \int (\partial f/\partial\theta)^\top a\,dt` by adaptive
    Gauss–Legendre quadrature over every backward step.

    The backward solve's steps follow a alone, and the integrand can vary much faster than a
    (a forcing term seen only through θ), so each step's integral carries its own error
    control: the rule on the whole step against the rule on its two halves, halving until
    they agree within ``adjoint_atol + adjoint_rtol |a_θ|`` (RMS over the parameters)."""
    func, shape, n = cfg.func, ys.shape[1:], ys[0].numel()
    adj_tab = TABLEAUS[cfg.adjoint_method]
    traj_a = Trajectory(adj_tab)

    plan = cfg.plan

    def adjoint_only(tt, a):
        if plan is not None:  # by hand (see fastpath.py)
            vz = torch.empty(n, dtype=a.dtype, device=a.device)
            plan.vjp(tt, traj(float(tt)), a, out_z=vz)
            return vz
        _, vz, _ = _vjp(func, tt, traj(float(tt)).view(shape), a.view(shape), ())
        return vz

    traj_a.use_field(adjoint_only, cfg.stats.backward)  # a between dopri8's steps
    jump = _jumps(grad_ys, 0, n)
    if adj_tab.dense is None:
        # A fixed-step method's Hermite interpolant needs f at each step's end; where a
        # jumps, the next step's first stage is f after the jump, so evaluate it before.
        T, base = len(t), jump

        def jump(k, a):  # noqa: F811 - wraps the plain jumps
            traj_a.finish(adjoint_only(t[T - 1 - k], a))
            cfg.stats.backward.nfe += 1
            return base(k, a)

    a0 = _adjoint_solve(cfg, adjoint_only, grad_ys[-1].reshape(-1), t, jump, [("a", n)],
                        on_step=traj_a.record)[-1]
    total = ys.new_zeros(sum(p.numel() for p in params))
    if not params:
        return a0, total
    nodes, weights = np.polynomial.legendre.leggauss(max(2, math.ceil((adj_tab.order + 1) / 2)))
    n_evals = 0

    def rule(i, t_s, t_e):
        """∫ -(∂f/∂θ)ᵀ a dt from t_s to t_e (inside backward step i), Gauss–Legendre."""
        nonlocal n_evals
        acc = total.new_zeros(total.shape)
        for x, w in zip(nodes, weights):
            tau = 0.5 * (t_s + t_e) + 0.5 * (t_e - t_s) * float(x)
            a = traj_a.in_step(i, tau).view(shape)
            tt = torch.tensor(tau, dtype=ys.dtype, device=ys.device)
            if plan is not None:  # by hand (see fastpath.py)
                vp = total.new_empty(total.shape)
                plan.vjp(tt, traj(tau), a, out_p=vp)
            else:
                vp = torch.cat(_vjp(func, tt, traj(tau).view(shape), a, params)[2])
            acc += (0.5 * (t_e - t_s) * float(w)) * vp
        n_evals += len(nodes)
        return acc

    rtol, atol = cfg.adjoint_rtol, cfg.adjoint_atol

    def adaptive(i, t_s, t_e, whole, depth):
        t_m = 0.5 * (t_s + t_e)
        left, right = rule(i, t_s, t_m), rule(i, t_m, t_e)
        halves = left + right
        scale = atol + rtol * torch.maximum((total + halves).abs(), total.abs())
        if _rms((halves - whole) / scale).item() <= 1.0:
            return halves
        if depth >= _MAX_HALVINGS:
            raise SolverError(
                f"adjoint='quadrature': the integral of dL/dθ over [{t_s:.6g}, {t_e:.6g}] "
                f"did not reach the tolerance after {_MAX_HALVINGS} halvings",
                t_reached=t_e, method=cfg.adjoint_method)
        return (adaptive(i, t_s, t_m, left, depth + 1)
                + adaptive(i, t_m, t_e, right, depth + 1))

    for i, (t_s, t_e, *_rest) in enumerate(traj_a.steps):
        total += adaptive(i, t_s, t_e, rule(i, t_s, t_e), 0)
    cfg.stats.backward.nfe += n_evals
    return a0, total


# ---- the autograd Function: forward solve, then one of the adjoints ------------------------
@dataclass(frozen=True)
class _Config:
    """Everything the forward and backward passes need, fixed when odeint_adjoint is
    called (checked there)."""

    func: object
    method: str
    rtol: float
    atol: float
    options: dict
    adjoint_method: str
    adjoint_rtol: float
    adjoint_atol: float
    adjoint_options: dict  # without "norm": see adjoint_norm and state_norm
    adjoint_norm: object  # the user's norm of the scaled (z, a, a_θ), or None
    state_norm: object  # the forward solve's own norm, or None
    seminorm: bool
    restore_z: bool
    adjoint: str
    on_divergence: str
    segments: object
    shape: tuple
    n: int
    n_param: int
    stats: Stats
    hooks: object  # torchdiffeq's step callbacks of func, told about the forward steps
    # The hand-written field and VJPs of a recognised ODENet (fastpath.py), or None: autograd.
    plan: object = None
    # The forward solve's proposed next step (adaptive methods): the backward's first step.
    carry: dict = field(default_factory=dict)


class _AdjointFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y0, t, cfg, f0, *params):
        traj = None if cfg.adjoint == "backsolve" else Trajectory(TABLEAUS[cfg.method])
        with torch.no_grad():
            ys = _forward_solve(cfg, y0, t, f0, traj)
        ctx.cfg, ctx.traj = cfg, traj
        # The trajectory's tensors go through save_for_backward too, so that the memory kept
        # for backward is accounted for like every other saved tensor.
        ctx.n_params = len(params)
        ctx.save_for_backward(t, ys, *params,
                              *([] if traj is None else traj.tensors()))
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "odeint_adjoint does not give second derivatives (backward with "
                "create_graph=True, or a gradient of a gradient): differentiate through "
                "odeint instead (backprop through the solver), which supports them")
        cfg = ctx.cfg
        t, ys, *rest = ctx.saved_tensors
        params = rest[:ctx.n_params]
        want_params = any(ctx.needs_input_grad[4:])
        used = params if want_params else []
        shape, T = ys.shape[1:], len(t)

        # ---- a(t_0) and dL/dθ by the chosen adjoint -------------------------------------
        with torch.no_grad():
            if cfg.adjoint == "backsolve":
                try:
                    a0, flat = _backsolve(cfg, t, ys, grad_ys, used)
                except _Diverged as diverged:
                    # The abandoned backsolve's work stays counted: the recovery's own
                    # backward solve resets the counters.
                    spent = replace(cfg.stats.backward)
                    a0, flat = _recover(cfg, diverged, t, ys, grad_ys, used)
                    for name in ("nfe", "n_steps", "n_rejected"):
                        setattr(cfg.stats.backward, name,
                                getattr(cfg.stats.backward, name) + getattr(spent, name))
            elif cfg.adjoint == "interpolated":
                a0, flat = _interpolated(cfg, ctx.traj, t, ys, grad_ys, used)
            else:
                a0, flat = _quadrature(cfg, ctx.traj, t, ys, grad_ys, used)
        a0 = a0.view(shape)
        grad_y0 = a0 + grad_ys[0]

        # ---- time gradients in closed form -------------------------------------------------
        grad_t = None
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                fs = torch.stack([cfg.func(t[i], ys[i]) for i in range(T)])
            cfg.stats.backward.nfe += T
            grad_t = (grad_ys * fs).reshape(T, -1).sum(1)
            grad_t[0] = -(a0 * fs[0]).sum()

        grads_params = [None] * len(params)
        if want_params:
            grads_params = [g.view_as(p) for g, p in
                            zip(flat.split([p.numel() for p in params]), params)]
        return (grad_y0, grad_t, None, None, *grads_params)


def _forward_solve(cfg, y0, t, f0, traj, stats=None):
    """The forward solve (no graph); with ``traj``, its dense output is recorded (and, for
    dopri8, its steps sampled: see :mod:`~.solvers.trajectory`)."""
    func = cfg.func if cfg.plan is None else cfg.plan.field
    if traj is not None:
        traj.use_field(func, cfg.stats.forward if stats is None else stats)
    ys = solve(func, y0, t, method=cfg.method, rtol=cfg.rtol, atol=cfg.atol,
               options=cfg.options, stats=cfg.stats.forward if stats is None else stats,
               segments=cfg.segments, f0=f0, hooks=cfg.hooks if stats is None else None,
               on_step=None if traj is None else traj.record,
               carry=cfg.carry if stats is None else None)
    if traj is not None and traj.tab.dense is None:
        traj.finish(func(t[-1], ys[-1]))
        (cfg.stats.forward if stats is None else stats).nfe += 1
    return ys


def _recover(cfg, diverged, t, ys, grad_ys, params):
    """The backward reconstruction of z diverged: redo the forward solve keeping its dense
    output, then the interpolated adjoint (which reconstructs nothing); or, with
    ``on_divergence="raise"`` or a black-box forward method, raise a SolverError."""
    why = (f"the backward reconstruction of z diverged: at t = {diverged.t:.6g} the rebuilt "
           f"z is {diverged.ratio:.3g} times as far from the stored forward state as allowed "
           "(contracting or stiff dynamics grow without bound when solved backwards)")
    if cfg.on_divergence == "raise" or cfg.method in SCIPY_METHODS:
        raise SolverError(
            f"the adjoint's backward solve failed: {why}. Pass adjoint='interpolated' (z "
            "read from the forward solve: no reconstruction), add observation times to "
            "shorten the stretches z is rebuilt over, or differentiate through odeint",
            t_reached=diverged.t, method=cfg.adjoint_method)
    traj = Trajectory(TABLEAUS[cfg.method])
    extra = SolveStats()
    ys_again = _forward_solve(cfg, ys[0], t, None, traj, stats=extra)  # ys[0] is z_0
    cfg.stats.forward.nfe += extra.nfe
    fallback = replace(cfg, adjoint="interpolated")
    try:
        return _interpolated(fallback, traj, t, ys_again, grad_ys, params)
    except SolverError as error:
        error.reword(f"{why}; the interpolated adjoint used instead failed too: ")
        raise


def _trainable(func, params, adjoint_params):
    """The tensors that get gradients: ``params`` (or torchdiffeq's ``adjoint_params``), by
    default the module's parameters; only those that require grad, each once."""
    if params is not None and adjoint_params is not None:
        raise ValueError("pass params or adjoint_params (the same thing), not both")
    params = adjoint_params if params is None else params
    if params is None:
        params = func.parameters() if isinstance(func, nn.Module) else ()
    elif isinstance(params, torch.Tensor):
        raise TypeError("params must be a sequence of tensors, got one tensor: pass [tensor]")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"params must be a sequence of tensors, got "
                        f"{type(params).__name__}") from None
    unique = []
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params must be tensors, got {type(p).__name__}")
        if p.requires_grad and not any(p is q for q in unique):
            unique.append(p)
    return unique


def _adjoint_options(method, options, adjoint_method, adjoint_options, seminorm):
    """The backward solve's options (without a norm), its norm and the seminorm flag.

    Without ``adjoint_options`` the backward inherits the forward's options when it uses the
    same method (torchdiffeq's rule), else none. ``adjoint_options["norm"]`` may be
    ``"seminorm"`` or a function of the tuple of scaled errors (z, a, a_θ)."""
    if adjoint_options is None:
        adjoint_options = ({k: v for k, v in options.items() if k != "norm"}
                           if adjoint_method == method else {})
    elif not isinstance(adjoint_options, dict):
        raise TypeError(f"adjoint_options must be a dict, got {type(adjoint_options).__name__}")
    adjoint_options = dict(adjoint_options)
    norm = adjoint_options.pop("norm", None)
    if isinstance(norm, str):
        if norm != "seminorm":
            raise ValueError(f"adjoint_options['norm'] must be 'seminorm' or a function, "
                             f"got {norm!r}")
        norm, seminorm = None, True
    elif norm is not None and not callable(norm):
        raise TypeError(f"adjoint_options['norm'] must be 'seminorm' or a function of the "
                        f"scaled errors (z, a, a_θ), got {type(norm).__name__}")
    if not isinstance(seminorm, bool):
        raise TypeError(f"seminorm must be True or False, got {type(seminorm).__name__}")
    return adjoint_options, norm, seminorm


# Marks a keyword the caller did not pass (None is a value someone might pass).
_NOT_GIVEN = object()


def odeint_adjoint(func, z0, t, *, rtol=1e-7, atol=1e-9, method="dopri5", options=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None,
                   adjoint_options=None, params=None, adjoint_params=None, seminorm=True,
                   restore_z=True, adjoint="backsolve", on_divergence="recover", stats=None,
                   fast_path=True, checkpoint=_NOT_GIVEN):
    r"""Solve :math:`\dot z = f(t, z; \theta)` like :func:`odeint`; differentiate by the adjoint.

    The forward solve keeps no graph: memory does not grow with the number of solver steps.
    ``loss.backward()`` runs one backward solve of the augmented system and returns
    gradients for ``z0``, for every entry of ``t`` and for the parameters.

    Parameters
    ----------
    func : ``func(t, z) -> dz/dt``; an ``nn.Module`` (its parameters that require grad get
        gradients; buffers and unused parameters are fine) or any callable with ``params``.
    z0 : Tensor ``(*S)`` or a tuple of tensors; t : Tensor ``(T,)``, strictly monotonic
        (may decrease); ``T = 1`` returns ``z0[None]``.
    rtol, atol, method, options : as for :func:`odeint` (defaults rtol 1e-7, atol 1e-9,
        dopri5), for the forward solve; scipy's black boxes included.
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options : for the backward solve;
        default to the forward's (the options only when the method is the same).
        ``adjoint_options={"norm": "seminorm"}`` is torchdiffeq's way to ask for the seminorm.
        With the forward's adaptive method, the backward solve starts with the step size the
        forward solve proposed at its end (scaled down for tighter adjoint tolerances)
        instead of selecting one, which saves evaluations; ``adjoint_options["first_step"]``
        overrides it.
    params, adjoint_params : sequence of tensors that ``func`` uses and that should receive
        gradients (two names for one thing; torchdiffeq calls it ``adjoint_params``);
        default: ``func.parameters()``. Tensors that do not require grad are skipped, and a
        tensor listed twice counts once. If ``func`` depends on a tensor that requires grad
        but is not in ``params`` (a closure), the call raises ``ValueError``: its gradient
        would otherwise be lost.
    seminorm : bool, default True. Leave the parameter channels a_θ out of the backward
        solve's error norm (Kidger, Chen & Lyons 2021): they are pure quadratures that never
        feed back into the dynamics, so controlling their error wastes steps. torchdiffeq's
        default is the full norm; ``False`` gives it here: the larger of the RMS norms of
        [z, a] and of a_θ (adaptive torch methods; scipy's use one RMS over all channels).
        It applies to the backsolve only (see ``adjoint``). A callable forward
        ``options["norm"]`` is applied to the backward solve's z and a as well, so that the
        backward controls the channels the forward controls (RNODE's integrals stay out).
    restore_z : bool, default True. At each observation time, restore z from the state
        stored in the forward pass instead of trusting the backward reconstruction. This is
        free (the outputs are kept anyway) and it is what makes the gradient right on
        contracting dynamics, where reconstructing z backwards is unstable. ``False`` trusts
        the reconstruction all the way (Chen et al.'s algorithm); the reconstruction is
        still checked (``on_divergence``). (``checkpoint=`` is :func:`odeint`'s keyword for how
        backprop keeps its graph; passing it here raises ``TypeError``.)
    adjoint : how the backward pass gets z(t) and dL/dθ.

        - ``"backsolve"`` (default): one backward solve of [z, a, a_θ]; z is rebuilt by solving
          the ODE backwards. Memory: the outputs only. The rebuilt z is compared with the
          stored forward state at every observation time and at t_0 (see ``on_divergence``).
        - ``"interpolated"``: the forward solve keeps its dense output (a few states per
          accepted step); the backward solve carries only [a, a_θ] and reads z(t) from it.
          No reconstruction, so right on contracting dynamics; memory O(steps). Its error
          norm always counts a_θ, whatever ``seminorm`` says: with z read from the forward
          solve, nothing else in the backward state sees what a_θ integrates (a forcing term
          that enters only through θ).
        - ``"quadrature"``: also reads z(t) from the forward dense output; solves only a
          backwards, keeping a's dense output, then computes
          :math:`dL/d\theta = \int (\partial f/\partial\theta)^\top a\,dt` by adaptive
          Gauss–Legendre quadrature on every backward step (each step's rule checked against
          the rule on its halves and halved until they agree to ``adjoint_rtol`` /
          ``adjoint_atol``). Memory O(forward + backward steps).

        The last two need a torch method for the forward solve (``quadrature`` for the
        backward one too); all three give the gradient of the continuous problem, to the
        tolerances.
    on_divergence : what the backsolve does when the rebuilt z(t_i) is more than
        ``DIVERGENCE_FACTOR`` (1e4) tolerances and more than ``DIVERGENCE_RELATIVE`` (1 %) of
        |z_i| from the stored z_i (for a fixed-step method: more than 10 % of |z_i|), the
        sign that the backward reconstruction diverged (contracting or mildly stiff dynamics
        solved backwards):

        - ``"recover"`` (default): redo the forward solve keeping its dense output, and
          compute the gradient with the interpolated adjoint instead. Costs one more forward
          solve (counted in ``stats.forward``) and the interpolated adjoint's backward solve
          and memory, only when it happens; with a scipy forward method it raises instead.
        - ``"raise"``: a :class:`~neuralode_helpers.SolverError` that says so.
        - ``"ignore"``: return the unguarded gradient (only to show the failure).

        The adjoint's ``SolverError`` messages say they come from the backward solve.
    stats : :class:`~neuralode_helpers.solvers.Stats`, optional; forward counters are filled
        by the call, backward counters by ``backward()``.
    fast_path : bool, default True. When ``func`` is an
        :class:`~neuralode_helpers.ODENet` (any activation it offers, any time input) and
        ``params`` are all of its parameters, evaluate the field and the vector–Jacobian
        products of the backward solve by hand into preallocated buffers
        (:mod:`~neuralode_helpers.fastpath`) instead of through autograd: the same numbers
        to round-off, fewer operations. Anything else (another module, hooks on it, a frozen
        layer or a subset of its parameters, a tuple state, a dtype or device other than
        the parameters') uses autograd, as ``False`` always does. On the fast path the
        backsolve under the seminorm (or with a fixed step) carries only [z, a] and sums
        dL/dθ over its accepted steps (a_θ never changes the steps there): the same
        gradient to round-off, with no parameter-sized work on rejected steps.

    Returns
    -------
    Tensor ``(T, *S)`` (a tuple for a tuple state), the same values as :func:`odeint`.

    Notes
    -----
    The gradients are those of the exact ODE solution, approximated to the backward
    tolerances; they differ from backprop-through-the-solver gradients by about the solver
    error. Second derivatives are not supported: ``backward(create_graph=True)`` raises.
    """
    call = check_call(func, z0, t, method, rtol, atol, options)
    params = _trainable(func, params, adjoint_params)
    if adjoint not in ("backsolve", "interpolated", "quadrature"):
        raise ValueError("adjoint must be 'backsolve', 'interpolated' or 'quadrature', got "
                         f"{adjoint!r}")
    if checkpoint is not _NOT_GIVEN:
        # One meaning per keyword: odeint's checkpoint= says how backprop keeps its graph.
        raise TypeError(f"odeint_adjoint takes restore_z=True/False (whether z is restored from "
                        f"the stored forward states at the observation times), not "
                        f"checkpoint={checkpoint!r}: checkpoint= is odeint's option for how "
                        f"backprop keeps its graph")
    if not isinstance(fast_path, bool):
        raise TypeError(f"fast_path must be True or False (whether a recognised ODENet's "
                        f"field and VJPs are evaluated by hand), got {fast_path!r}")
    if not isinstance(restore_z, bool):
        raise TypeError(f"restore_z must be True or False (whether z is restored from the "
                        f"stored forward states at the observation times), got {restore_z!r}")
    if on_divergence not in ("recover", "raise", "ignore"):
        raise ValueError("on_divergence must be 'recover', 'raise' or 'ignore', got "
                         f"{on_divergence!r}")
    if adjoint != "backsolve" and call.method in SCIPY_METHODS:
        raise ValueError(f"adjoint={adjoint!r} reads z(t) from the forward solve's dense "
                         f"output, which the black box {call.method!r} does not give: use a "
                         "torch method (dopri5, tsit5, rk4, ...)")
    adjoint_method = call.method if adjoint_method is None else adjoint_method
    adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adjoint_atol = atol if adjoint_atol is None else adjoint_atol
    adjoint_options, adjoint_norm, seminorm = _adjoint_options(
        call.method, call.options, adjoint_method, adjoint_options, seminorm)
    adjoint_method, adjoint_options = check_method(adjoint_method, adjoint_rtol, adjoint_atol,
                                                   adjoint_options, prefix="adjoint_")
    if adjoint == "quadrature" and adjoint_method in SCIPY_METHODS:
        raise ValueError("adjoint='quadrature' keeps the backward solve's dense output, which "
                         f"the black box {adjoint_method!r} does not give: use a torch "
                         "adjoint_method")
    if stats is not None and not isinstance(stats, Stats):
        raise TypeError(f"stats must be a neuralode_helpers.Stats (forward and backward "
                        f"counters), got {type(stats).__name__}")
    # Every argument is checked before this point, also for a single time.
    if call.trivial:
        return call.state.repeat(z0, call.t.numel())
    f0 = None
    if torch.is_grad_enabled():
        # One evaluation with a graph: does func depend on a tensor we would not
        # differentiate? (It also serves as the forward solve's first evaluation.)
        f0 = closure_check(call.func, call.t, call.y0, params)
        if call.method.startswith("scipy:"):
            f0 = None  # scipy evaluates its own first point
    # A custom norm of a tuple state gets the tuple, in the forward solve as in odeint.
    options = tuple_norm_options(call)
    cfg = _Config(
        func=call.func, method=call.method, rtol=rtol, atol=atol, options=options,
        adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
        adjoint_options=adjoint_options, adjoint_norm=adjoint_norm,
        state_norm=options.get("norm"), seminorm=seminorm, restore_z=restore_z,
        adjoint=adjoint, on_divergence=on_divergence, segments=call.state.segments,
        shape=tuple(call.y0.shape), n=call.y0.numel(),
        n_param=sum(p.numel() for p in params), stats=Stats() if stats is None else stats,
        hooks=step_callbacks(func, call.state, call.method),
        plan=plan_for(func, call.y0, params) if fast_path and not call.state.is_tuple
        else None)
    ys = _AdjointFn.apply(call.y0, call.t, cfg, f0, *params)
    return call.state.unpack_outputs(ys)
