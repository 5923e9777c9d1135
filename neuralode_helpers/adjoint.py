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

import numpy as np
import torch
from torch import nn

from .solvers import TABLEAUS, Stats, solve
from .solvers.checks import (
    SCIPY_METHODS,
    check_call,
    check_method,
    closure_check,
)
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


def _adjoint_solve(cfg, f, y_end, t, jump, segments, on_step=None):
    """The backward solve from t_{T-1} to t_0, landing on every t_i to add the jumps."""
    return solve(f, y_end, t.flip(0), method=cfg["adjoint_method"], rtol=cfg["adjoint_rtol"],
                 atol=cfg["adjoint_atol"], options=cfg["adjoint_options"],
                 stats=cfg["stats"].backward, callback=jump, segments=segments,
                 n_counted=1 if cfg["seminorm"] else len(segments),
                 on_step=on_step)


def _jumps(grad_ys, lo, hi, restore=None):
    """The callback that adds ℓ_i to the adjoint (entries [lo:hi] of the backward state) at
    each observation time t_i, i ≥ 1; with ``restore = (ys, n)`` it also puts back z(t_i)
    from the forward pass into entries [:n]."""
    T = len(grad_ys)

    def jump(k, y):
        i = T - 1 - k
        if i == 0:
            return y
        y = y.clone()
        y[lo:hi] += grad_ys[i].reshape(-1)
        if restore is not None:
            ys, n = restore
            y[:n] = ys[i].reshape(-1)
        return y

    return jump


def _backsolve(cfg, t, ys, grad_ys, params):
    """Chen et al.'s adjoint: one backward solve of [z, a, a_θ]; z is rebuilt backwards
    (restored at every t_i with ``checkpoint``). Returns a(t_0) and dL/dθ (flat)."""
    func, shape, n = cfg["func"], ys.shape[1:], ys[0].numel()
    n_param = sum(p.numel() for p in params)

    def augmented(tt, y):
        f, vz, vp = _vjp(func, tt, y[:n].view(shape), y[n:2 * n].view(shape), params)
        return torch.cat([f.reshape(-1), vz, *vp])

    y_end = torch.cat([ys[-1].reshape(-1), grad_ys[-1].reshape(-1), ys.new_zeros(n_param)])
    jump = _jumps(grad_ys, n, 2 * n, restore=(ys, n) if cfg["checkpoint"] else None)
    # The error norm sees [z, a] as one part and a_θ as another; the seminorm counts only
    # the first (a_θ is a pure quadrature that never feeds back).
    y0 = _adjoint_solve(cfg, augmented, y_end, t, jump,
                        [2 * n, n_param] if n_param else [2 * n])[-1]
    return y0[n:2 * n], y0[2 * n:]


def _interpolated(cfg, traj, t, ys, grad_ys, params):
    """The interpolated adjoint: solve only [a, a_θ] backwards, reading z(t) from the forward
    solve's dense output. Nothing is reconstructed, so nothing can diverge."""
    func, shape, n = cfg["func"], ys.shape[1:], ys[0].numel()
    n_param = sum(p.numel() for p in params)

    def augmented(tt, y):
        _, vz, vp = _vjp(func, tt, traj(float(tt)).view(shape), y[:n].view(shape), params)
        return torch.cat([vz, *vp])

    y_end = torch.cat([grad_ys[-1].reshape(-1), ys.new_zeros(n_param)])
    y0 = _adjoint_solve(cfg, augmented, y_end, t, _jumps(grad_ys, 0, n),
                        [n, n_param] if n_param else [n])[-1]
    return y0[:n], y0[n:]


def _quadrature(cfg, traj, t, ys, grad_ys, params):
    r"""The quadrature adjoint: solve only a backwards (z from the forward dense output),
    keeping a's own dense output; then
    :math:`dL/d	heta = \int (\partial f/\partial	heta)^	op a\,dt` by Gauss–Legendre on
    every backward step (exact for polynomials of the method's order)."""
    func, shape, n = cfg["func"], ys.shape[1:], ys[0].numel()
    adj_tab = TABLEAUS[cfg["adjoint_method"]]
    traj_a = Trajectory(adj_tab)

    def adjoint_only(tt, a):
        _, vz, _ = _vjp(func, tt, traj(float(tt)).view(shape), a.view(shape), ())
        return vz

    jump = _jumps(grad_ys, 0, n)
    if adj_tab.dense is None:
        # A fixed-step method's Hermite interpolant needs f at each step's end; where a
        # jumps, the next step's first stage is f after the jump, so evaluate it before.
        T, base = len(t), jump

        def jump(k, a):  # noqa: F811 - wraps the plain jumps
            traj_a.finish(adjoint_only(t[T - 1 - k], a))
            cfg["stats"].backward.nfe += 1
            return base(k, a)

    a0 = _adjoint_solve(cfg, adjoint_only, grad_ys[-1].reshape(-1), t, jump, [n],
                        on_step=traj_a.record)[-1]
    grads = ys.new_zeros(sum(p.numel() for p in params))
    if not params:
        return a0, grads
    nodes, weights = np.polynomial.legendre.leggauss(max(2, math.ceil((adj_tab.order + 1) / 2)))
    for i, (t_s, t_e, *_rest) in enumerate(traj_a.steps):
        for x, w in zip(nodes, weights):
            tau = 0.5 * (t_s + t_e) + 0.5 * (t_e - t_s) * float(x)
            a = traj_a.in_step(i, tau).view(shape)
            _, _, vp = _vjp(func, torch.tensor(tau, dtype=ys.dtype, device=ys.device),
                            traj(tau).view(shape), a, params)
            # a_θ moves by ∫ -(∂f/∂θ)ᵀ a dt from t_s to t_e, as in the backsolve
            grads += (0.5 * (t_e - t_s) * float(w)) * torch.cat(vp)
    cfg["stats"].backward.nfe += len(nodes) * len(traj_a.steps)
    return a0, grads


class _AdjointFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y0, t, cfg, *params):
        traj = None
        if cfg["adjoint"] != "backsolve":
            traj = Trajectory(TABLEAUS[cfg["method"]])
        with torch.no_grad():
            ys = solve(cfg["func"], y0, t, method=cfg["method"], rtol=cfg["rtol"],
                       atol=cfg["atol"], options=cfg["options"], stats=cfg["stats"].forward,
                       segments=cfg["segments"], f0=cfg.pop("f0"),
                       on_step=None if traj is None else traj.record)
            if traj is not None and traj.tab.dense is None:
                traj.finish(cfg["func"](t[-1], ys[-1]))
                cfg["stats"].forward.nfe += 1
        ctx.cfg, ctx.traj = cfg, traj
        # The trajectory's tensors go through save_for_backward too, so that the memory kept
        # for backward is accounted for like every other saved tensor.
        ctx.n_params = len(params)
        ctx.save_for_backward(t, ys, *params, *([] if traj is None else traj.tensors()))
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):
        cfg = ctx.cfg
        t, ys, *rest = ctx.saved_tensors
        params = rest[:ctx.n_params]
        want_params = any(ctx.needs_input_grad[3:])
        used = params if want_params else []
        shape, T = ys.shape[1:], len(t)

        # ---- a(t_0) and dL/dθ by the chosen adjoint -------------------------------------
        if cfg["adjoint"] == "backsolve":
            a0, flat = _backsolve(cfg, t, ys, grad_ys, used)
        elif cfg["adjoint"] == "interpolated":
            a0, flat = _interpolated(cfg, ctx.traj, t, ys, grad_ys, used)
        else:
            a0, flat = _quadrature(cfg, ctx.traj, t, ys, grad_ys, used)
        a0 = a0.view(shape)
        grad_y0 = a0 + grad_ys[0]

        # ---- time gradients in closed form -------------------------------------------------
        grad_t = None
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                fs = torch.stack([cfg["func"](t[i], ys[i]) for i in range(T)])
            cfg["stats"].backward.nfe += T
            grad_t = (grad_ys * fs).reshape(T, -1).sum(1)
            grad_t[0] = -(a0 * fs[0]).sum()

        grads_params = [None] * len(params)
        if want_params:
            grads_params = [g.view_as(p) for g, p in
                            zip(flat.split([p.numel() for p in params]), params)]
        return (grad_y0, grad_t, None, *grads_params)


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


def _adjoint_options(method, options, adjoint_method, adjoint_options, seminorm, n_fields):
    """The backward solve's options and seminorm flag. Without ``adjoint_options`` the
    backward inherits the forward's options when it uses the same method (torchdiffeq's
    rule), else none. ``adjoint_options["norm"]`` may be ``"seminorm"`` or a function of the
    scaled errors of (z, a, a_θ)."""
    if adjoint_options is None:
        adjoint_options = ({k: v for k, v in options.items() if k != "norm"}
                           if adjoint_method == method else {})
    adjoint_options = dict(adjoint_options)
    norm = adjoint_options.get("norm")
    if isinstance(norm, str):
        if norm != "seminorm":
            raise ValueError(f"adjoint_options['norm'] must be 'seminorm' or a function, "
                             f"got {norm!r}")
        del adjoint_options["norm"]
        seminorm = True
    elif callable(norm):
        def user_norm(scaled, norm=norm):
            return norm(tuple(scaled.split(n_fields)))

        adjoint_options["norm"] = user_norm
    return adjoint_options, bool(seminorm)


def odeint_adjoint(func, z0, t, *, rtol=1e-7, atol=1e-9, method="dopri5", options=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None,
                   adjoint_options=None, params=None, adjoint_params=None, seminorm=True,
                   checkpoint=True, adjoint="backsolve", stats=None):
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
    checkpoint : bool, default True. At each observation time, restore z from the state
        stored in the forward pass instead of trusting the backward reconstruction. This is
        free (the outputs are kept anyway) and it is what makes the gradient right on
        contracting dynamics, where reconstructing z backwards is unstable. The risk that
        remains: a long stretch between two observation times, over which the
        reconstruction can still diverge; add observation times (with zero loss) to shorten
        it. ``False`` trusts the reconstruction all the way (Chen et al.'s algorithm).
    adjoint : how the backward pass gets z(t) and dL/dθ.

        - ``"backsolve"`` (default): one backward solve of [z, a, a_θ]; z is rebuilt by solving
          the ODE backwards. Memory: the outputs only. Fails where the reconstruction is
          unstable, between observation times (see ``checkpoint``).
        - ``"interpolated"``: the forward solve keeps its dense output (a few states per
          accepted step); the backward solve carries only [a, a_θ] and reads z(t) from it.
          No reconstruction, so right on contracting dynamics; memory O(steps).
        - ``"quadrature"``: also reads z(t) from the forward dense output; solves only a
          backwards, keeping a's dense output, then computes
          :math:`dL/d\theta = \int (\partial f/\partial\theta)^\top a\,dt` by
          Gauss–Legendre quadrature on every backward step. The backward solve's state and
          error control involve a only; memory O(forward + backward steps).

        The last two need a torch method for the forward solve (``quadrature`` for the
        backward one too); all three give the gradient of the continuous problem, to the
        tolerances.
    stats : :class:`~neuralode_helpers.solvers.Stats`, optional; forward counters are filled
        by the call, backward counters by ``backward()``.

    Returns
    -------
    Tensor ``(T, *S)`` (a tuple for a tuple state), the same values as :func:`odeint`.

    Notes
    -----
    The gradients are those of the exact ODE solution, approximated to the backward
    tolerances; they differ from backprop-through-the-solver gradients by about the solver
    error. Second derivatives are not supported.
    """
    call = check_call(func, z0, t, method, rtol, atol, options)
    params = _trainable(func, params, adjoint_params)
    if adjoint not in ("backsolve", "interpolated", "quadrature"):
        raise ValueError("adjoint must be 'backsolve', 'interpolated' or 'quadrature', got "
                         f"{adjoint!r}")
    if adjoint != "backsolve" and call.method in SCIPY_METHODS:
        raise ValueError(f"adjoint={adjoint!r} reads z(t) from the forward solve's dense "
                         f"output, which the black box {call.method!r} does not give: use a "
                         "torch method (dopri5, tsit5, rk4, ...)")
    if call.trivial:
        return call.state.repeat(z0, call.t.numel())
    adjoint_method = call.method if adjoint_method is None else adjoint_method
    adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adjoint_atol = atol if adjoint_atol is None else adjoint_atol
    n = call.y0.numel()
    adjoint_options, seminorm = _adjoint_options(
        call.method, call.options, adjoint_method, adjoint_options, seminorm,
        [n, n, sum(p.numel() for p in params)])
    custom_norm = adjoint_options.pop("norm", None)
    adjoint_method, adjoint_options = check_method(adjoint_method, adjoint_rtol, adjoint_atol,
                                                   adjoint_options, prefix="adjoint_")
    if custom_norm is not None:
        adjoint_options["norm"] = custom_norm
    if adjoint == "quadrature" and adjoint_method in SCIPY_METHODS:
        raise ValueError("adjoint='quadrature' keeps the backward solve's dense output, which "
                         f"the black box {adjoint_method!r} does not give: use a torch "
                         "adjoint_method")
    f0 = None
    if torch.is_grad_enabled():
        # One evaluation with a graph: does func depend on a tensor we would not
        # differentiate? (It also serves as the forward solve's first evaluation.)
        f0 = closure_check(call.func, call.t, call.y0, params)
        f0 = f0.detach()
        if call.method.startswith("scipy:"):
            f0 = None  # scipy evaluates its own first point
    cfg = dict(func=call.func, method=call.method, rtol=rtol, atol=atol,
               options=call.options, adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
               adjoint_atol=adjoint_atol, adjoint_options=adjoint_options,
               seminorm=seminorm, checkpoint=bool(checkpoint), adjoint=adjoint,
               segments=call.state.segments,
               f0=f0, stats=Stats() if stats is None else stats)
    ys = _AdjointFn.apply(call.y0, call.t, cfg, *params)
    return call.state.unpack_outputs(ys)
