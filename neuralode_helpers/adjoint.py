r"""Gradients of an ODE solve by the adjoint sensitivity method (Chen et al. 2018, Alg. 1).

For outputs :math:`z_i = z(t_i)` of :math:`\dot z = f(t, z; \theta)` and a loss
:math:`L(z_0, \dots, z_{T-1})`, the adjoint :math:`a(t) = \partial L / \partial z(t)` obeys

.. math::
    \dot a = -a^\top \frac{\partial f}{\partial z}, \qquad
    a(t_i^-) = a(t_i^+) + \frac{\partial L}{\partial z_i}

backwards from :math:`a(t_{T-1}) = \partial L/\partial z_{T-1}`, and

.. math::
    \frac{dL}{d\theta} = \int_{t_0}^{t_{T-1}} a^\top \frac{\partial f}{\partial \theta}\,dt,
    \qquad
    \frac{dL}{dt_i} = \frac{\partial L}{\partial z_i}^\top f(t_i, z_i)\ (i \ge 1),
    \qquad
    \frac{dL}{dt_0} = -a(t_0)^\top f(t_0, z_0).

One backward solve carries the augmented state :math:`[z, a, g_\theta]` from
:math:`t_{T-1}` to :math:`t_0`, with :math:`\dot g_\theta = -a^\top \partial f/\partial\theta`
(so that :math:`g_\theta(t_0) = dL/d\theta`), and adds the jumps in :math:`a` on the way. The
time gradients need no channel of their own: :math:`\frac{d}{dt}(a^\top f) =
a^\top \partial f/\partial t`, so Chen et al.'s extra channel for :math:`\partial L/\partial t`
integrates to exactly the closed form above.

The gradient is that of the *continuous* problem, approximated to the backward solve's
tolerance; it is not the exact gradient of the discretised forward solve, as backprop through
:func:`odeint` would be. It is also only as good as the backward reconstruction of
:math:`z(t)`, which is unstable for strongly contracting dynamics.
"""

from __future__ import annotations

import torch
from torch import nn

from .solvers import Stats, check_inputs, checked_func, solve


class _AdjointFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, t, cfg, *params):
        with torch.no_grad():
            ys = solve(cfg["func"], z0, t, method=cfg["method"], rtol=cfg["rtol"],
                       atol=cfg["atol"], options=cfg["options"], stats=cfg["stats"].forward)
        ctx.cfg = cfg
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):
        cfg = ctx.cfg
        func = cfg["func"]
        t, ys, *params = ctx.saved_tensors
        shape = ys.shape[1:]
        n = ys[0].numel()
        param_numels = [p.numel() for p in params]
        want_params = any(ctx.needs_input_grad[3:])

        # ---- augmented dynamics: one VJP gives da/dt and dg/dt for the whole batch --------
        def augmented(tt, y):
            z = y[:n].view(shape).detach().requires_grad_(True)
            a = y[n:2 * n].view(shape)
            with torch.enable_grad():
                f = func(tt, z)
                inputs = (z, *params) if want_params else (z,)
                vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True)
            parts = [f.detach().reshape(-1)]
            for v, x in zip(vjps, inputs):
                parts.append(torch.zeros(x.numel(), dtype=y.dtype, device=y.device)
                             if v is None else v.reshape(-1))
            return torch.cat(parts)

        # ---- initial state at t_{T-1}: z, a = dL/dz(t_{T-1}), g = 0 --------------------
        n_param = sum(param_numels) if want_params else 0
        y_end = torch.cat([ys[-1].reshape(-1), grad_ys[-1].reshape(-1),
                           ys.new_zeros(n_param)])

        # ---- jumps: at each t_i the loss's direct gradient joins the adjoint -------------
        T = len(t)

        def jump(k, y):
            i = T - 1 - k
            if i == 0:
                return y
            y = y.clone()
            y[n:2 * n] += grad_ys[i].reshape(-1)
            if cfg["checkpoint"]:
                y[:n] = ys[i].reshape(-1)
            return y

        # ---- one backward solve from t_{T-1} to t_0 ---------------------------------------
        y0 = solve(augmented, y_end, t.flip(0), method=cfg["adjoint_method"],
                   rtol=cfg["adjoint_rtol"], atol=cfg["adjoint_atol"],
                   options=cfg["adjoint_options"], stats=cfg["stats"].backward, callback=jump,
                   norm_split=2 * n, seminorm=cfg["seminorm"])[-1]
        a0 = y0[n:2 * n].view(shape)
        grad_z0 = a0 + grad_ys[0]

        # ---- time gradients in closed form -------------------------------------------------
        grad_t = None
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                fs = torch.stack([func(t[i], ys[i]) for i in range(T)])
            cfg["stats"].backward.nfe += T
            grad_t = (grad_ys * fs).reshape(T, -1).sum(1)
            grad_t[0] = -(a0 * fs[0]).sum()

        grads_params = [None] * len(params)
        if want_params:
            flat = y0[2 * n:].split(param_numels)
            grads_params = [g.view_as(p) for g, p in zip(flat, params)]
        return (grad_z0, grad_t, None, *grads_params)


def odeint_adjoint(func, z0, t, *, method="dopri5", rtol=1e-6, atol=1e-8, adjoint_rtol=None,
                   adjoint_atol=None, adjoint_method=None, params=None, options=None,
                   adjoint_options=None, seminorm=True, checkpoint=False, stats=None):
    r"""Solve :math:`\dot z = f(t, z; \theta)` like :func:`odeint`; differentiate by the adjoint.

    The forward solve keeps no graph: memory does not grow with the number of solver steps.
    ``loss.backward()`` runs one backward solve of the augmented system and returns
    gradients for ``z0``, for every entry of ``t`` and for the parameters.

    Parameters
    ----------
    func : ``func(t, z) -> dz/dt``; an ``nn.Module`` (its trainable parameters get gradients)
        or any callable together with ``params``.
    z0 : Tensor ``(*S)``;  t : Tensor ``(T,)``, strictly monotonic (may decrease).
    method, rtol, atol, options : as for :func:`odeint`, for the forward solve. ``method`` may
        be any of :data:`~neuralode_helpers.solvers.METHODS`, scipy's black boxes included.
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options : for the backward solve;
        default to the forward's.
    params : sequence of tensors that ``func`` uses and that should receive gradients;
        default: ``func.parameters()`` that require grad, or none for a plain function.
    seminorm : bool, default True. Leave the parameter-gradient channels out of the backward
        solve's error norm (Kidger, Chen & Lyons 2021): they are pure quadratures that never
        feed back into the dynamics, so controlling their error wastes steps. With ``False``
        the norm is the larger of the RMS norms of [z, a] and of the parameter channels
        (dopri5; scipy's methods use their own RMS over all channels).
    checkpoint : bool, default False. At each observation time, restore z from the state
        stored in the forward pass instead of trusting the backward reconstruction (helps on
        dissipative dynamics; memory grows only with ``len(t)``).
    stats : :class:`~neuralode_helpers.solvers.Stats`, optional; forward counters are filled
        by the call, backward counters by ``backward()``.

    Returns
    -------
    Tensor ``(T, *S)``, the same values as :func:`odeint` with the same arguments.

    Notes
    -----
    The gradients are those of the exact ODE solution, approximated to the backward
    tolerances; they differ from backprop-through-the-solver gradients by about the solver
    error. Second derivatives are not supported.
    """
    options = check_inputs(func, z0, t, method, rtol, atol, options)
    adjoint_method = method if adjoint_method is None else adjoint_method
    adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adjoint_atol = atol if adjoint_atol is None else adjoint_atol
    adjoint_options = check_inputs(func, z0, t, adjoint_method, adjoint_rtol, adjoint_atol,
                                   options if adjoint_options is None else adjoint_options)
    if params is None:
        params = ([p for p in func.parameters() if p.requires_grad]
                  if isinstance(func, nn.Module) else [])
    else:
        params = list(params)
        for p in params:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params must be tensors, got {type(p).__name__}")
    cfg = dict(func=checked_func(func, z0), method=method, rtol=rtol, atol=atol,
               options=options, adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
               adjoint_atol=adjoint_atol, adjoint_options=adjoint_options,
               seminorm=bool(seminorm), checkpoint=bool(checkpoint),
               stats=Stats() if stats is None else stats)
    return _AdjointFn.apply(z0, t, cfg, *params)
