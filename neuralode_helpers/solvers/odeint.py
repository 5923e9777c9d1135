"""``odeint``: a checked call composed from the pieces of this package."""

from __future__ import annotations

import warnings

import torch

from .adaptive import integrate_adaptive
from .checks import SCIPY_METHODS, check_call, closure_leaves, method_family
from .controller import ErrorNorm, StepController
from .fixed import integrate_fixed
from .rk import checkpointed_rk_step, rk_step
from .scipy_bridge import ScipySolver
from .stats import SolveStats, Stats
from .tableaus import TABLEAUS

# torchdiffeq's step callbacks: methods of func, each called as (t0, y0, dt).
CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
_CALLED_BY = {"fixed": {"callback_step"}, "adaptive": set(CALLBACK_NAMES), "scipy": set()}


def solve(f, y0, t, *, method, rtol, atol, options, stats, callback=None, segments=None,
          n_counted=None, f0=None, on_step=None, step=rk_step, land_on_outputs=None,
          hooks=None, carry=None):
    """Unchecked core used by :func:`odeint` and the adjoint.

    ``segments``: sizes of consecutive parts of the flattened state for the adaptive error
    norm (the largest RMS over the first ``n_counted`` parts). Parts after ``n_counted`` (the
    seminorm) are pure quadratures (the adjoint's parameter channels): they are
    left out of the norm (and scipy's implicit methods skip their Jacobian columns).
    ``f0``: f(t[0], y0) if already known (saves an evaluation). ``on_step``: told every
    accepted step (torch methods only), to record a :class:`~.trajectory.Trajectory`.
    ``callback(i, y)``: the state to continue from at each t_i (a jump); the adaptive
    methods then land on every t_i. ``land_on_outputs``: land on every t_i without a
    callback (default: only with one). ``hooks``: see :func:`step_callbacks` (torch methods).
    ``carry``: a dict; an adaptive solve leaves the step size it would take next in
    ``carry["next_step"]``, for the following solve's ``options["first_step"]``.
    """
    stats.reset()

    def counted(tt, z):
        stats.nfe += 1
        return f(tt, z)

    if f0 is not None:
        stats.nfe += 1  # it was evaluated by the caller, for this solve
    family = method_family(method)
    if family == "fixed":
        return integrate_fixed(TABLEAUS[method], counted, y0, t,
                               step_size=options.get("step_size"), stats=stats,
                               callback=callback, f0=f0, on_step=on_step, step=step,
                               hooks=hooks)
    if family == "adaptive":
        tab = TABLEAUS[method]
        norm = ErrorNorm(rtol, atol, segments, n_counted, custom=options.get("norm"))
        controller = StepController(tab.order, safety=options.get("safety", 0.9),
                                    ifactor=options.get("ifactor", 10.0),
                                    dfactor=options.get("dfactor", 0.2))
        return integrate_adaptive(tab, counted, y0, t, norm=norm, controller=controller,
                                  stats=stats, first_step=options.get("first_step"),
                                  max_num_steps=options.get("max_num_steps", 2**31 - 1),
                                  callback=callback, land_on_outputs=land_on_outputs, f0=f0,
                                  on_step=on_step, step=step, hooks=hooks, carry=carry)
    if on_step is not None:
        raise ValueError(f"{method!r} is a black box: its steps cannot be recorded")
    head = None
    if segments is not None and n_counted is not None and n_counted < len(segments):
        head = sum(segments[:n_counted])
    return ScipySolver(method, counted, rtol, atol, options, stats, head=head).integrate(
        y0, t, callback)


class StepCallbacks:
    """torchdiffeq's step callbacks of a field, told by the torch solvers as ``hooks``.

    ``step(t0, y, dt)`` before every step attempt, ``accept``/``reject`` after an adaptive
    step's decision. Each calls the user's ``func.callback_step``, ``callback_accept_step``
    or ``callback_reject_step`` (when defined) with the step's start time t0 (a 0-d tensor),
    its start state in the user's form (a tuple for a tuple state) and its signed size dt (a
    0-d tensor: t0 + dt is where the step ends, also when t decreases, where torchdiffeq
    passes |dt|). dt is the step actually tried, after any cut to land on an output time.
    """

    def __init__(self, func, state, enabled=None):
        self.state = state
        self._fns = {name: getattr(func, name, None) for name in CALLBACK_NAMES}
        self._fns = {k: (v if callable(v) else None) for k, v in self._fns.items()}
        if enabled is not None:
            self._fns = {k: (v if k in enabled else None) for k, v in self._fns.items()}

    def __bool__(self):
        return any(fn is not None for fn in self._fns.values())

    def _call(self, name, t0, y, dt):
        fn = self._fns[name]
        if fn is not None:
            dt = dt if isinstance(dt, torch.Tensor) else torch.as_tensor(
                dt, dtype=t0.dtype, device=t0.device)
            fn(t0, self.state.unpack(y), dt)

    def step(self, t0, y, dt):
        self._call("callback_step", t0, y, dt)

    def accept(self, t0, y, dt):
        self._call("callback_accept_step", t0, y, dt)

    def reject(self, t0, y, dt):
        self._call("callback_reject_step", t0, y, dt)


def step_callbacks(func, state, method):
    """The :class:`StepCallbacks` of ``func`` (the user's field, before any wrapping) for
    ``method``, or None when it defines none. Like torchdiffeq, warn about callbacks that
    the method never calls (a fixed step is never rejected; scipy's steps are hidden)."""
    family = method_family(method)
    defined = [name for name in CALLBACK_NAMES if callable(getattr(func, name, None))]
    ignored = [name for name in defined if name not in _CALLED_BY[family]]
    if ignored:
        warnings.warn(f"method {method!r} does not call {', '.join(ignored)}", stacklevel=3)
    hooks = StepCallbacks(func, state, enabled=_CALLED_BY[family])
    return hooks if hooks else None


def odeint(func, z0, t, *, rtol=1e-7, atol=1e-9, method="dopri5", options=None, stats=None,
           checkpoint=None):
    r"""Solve :math:`\frac{dz}{dt} = f(t, z)`, :math:`z(t_0) = z_0`, at every time in ``t``.

    Parameters
    ----------
    func : callable ``func(t, z) -> dz/dt``
        ``t`` is a 0-d tensor, ``z`` has the shape of ``z0`` (any shape: leading axes are
        batch axes as far as the solver is concerned), and the output has that shape too.
        For a tuple state, ``z`` and the output are tuples.
    z0 : Tensor ``(*S)``, or a tuple of tensors (each keeps its shape and dtype).
    t : Tensor ``(T,)``: strictly increasing or strictly decreasing; ``T = 1`` returns
        ``z0[None]``. It is converted to the state's dtype (a float64 ``t`` with a float32
        state computes in float32, as in torchdiffeq).
    rtol, atol : positive floats, default 1e-7 and 1e-9 (torchdiffeq's): each step's error
        estimate is kept below ``atol + rtol * |z|`` in the RMS norm (for a tuple, the
        largest RMS over its parts). Ignored by the fixed-step methods.
    method : one of :data:`METHODS`
        Fixed step ``"euler"``, ``"midpoint"``, ``"rk4"``: ``options={"step_size": h}``
        takes ``ceil(|Δt| / h)`` equal steps in each interval of ``t`` (a ratio |Δt| / h
        that is a whole number up to the round-off of t's dtype counts as that number: the
        same steps in float32 as in float64); without it, one step per interval.
        Adaptive ``"adaptive_heun"`` (2nd order), ``"bosh3"`` (3rd), ``"dopri5"`` (5th,
        the default), ``"tsit5"`` (5th), pure torch with dense output; options
        ``first_step``, ``max_num_steps``, ``safety`` (0.9), ``ifactor`` (10), ``dfactor``
        (0.2), ``norm`` (a function of the scaled error err / (atol + rtol |z|), returning
        a number; for a tuple state it gets a tuple). ``max_num_steps`` bounds the step
        attempts (accepted and rejected) between two consecutive times of ``t``, as in
        torchdiffeq: the count restarts at every output time passed, so a long ``t`` of
        short intervals does not run out. ``"scipy:<name>"`` for scipy's ``RK45``,
        ``RK23``, ``DOP853``, ``Radau``, ``BDF``, ``LSODA`` (options ``first_step``,
        ``max_step``, ``min_step``, ``max_nfe``; torchdiffeq's ``method="scipy_solver",
        options={"solver": name}`` works too).

        Step callbacks, as in torchdiffeq: if ``func`` (e.g. an ``nn.Module``) has methods
        ``callback_step(t0, z0, dt)``, ``callback_accept_step(t0, z0, dt)`` or
        ``callback_reject_step(t0, z0, dt)``, the first is called before every step attempt
        (all torch methods), the others after an adaptive step is accepted or rejected.
        ``t0`` and ``dt`` are 0-d tensors (the step goes from t0 to t0 + dt, dt negative
        when t decreases), ``z0`` the state at t0 in the form of ``z0`` (a tuple for a tuple
        state). A callback the method never calls (accept/reject with a fixed step, any
        with scipy) gets a warning.
    stats : :class:`Stats`, optional; ``stats.forward`` receives NFE and step counts.
    checkpoint : how backprop keeps the graph (torch methods; the values are the same).

        - ``None`` (default): plain backprop through every stage of every step; memory
          grows with the number of steps.
        - ``"observations"``: checkpointed backprop. Each interval [t_{i-1}, t_i] is solved on
          its own (the solver lands on every t_i; each interval starts with the step size
          the previous one proposed, so the steps are about those of one solve that lands
          on every t_i) and only its start state is kept; backward recomputes the
          interval's graph. The gradient equals plain backprop's through the same
          interval-by-interval solve; memory O(len(t) + one interval's steps); about one
          more forward solve of work.
        - ``"steps"``: per-step recomputation (ACA, Zhuang et al. 2020): only each accepted
          step's inputs (t, h, z and its first stage) are kept, and backward rebuilds each
          step's graph in reverse. The gradient equals plain backprop's to round-off;
          memory O(steps × state) instead of O(steps × stages × activations). The
          re-evaluations during backward are counted in ``stats.forward.nfe``.

    Returns
    -------
    Tensor ``(T, *S)`` (a tuple of them for a tuple state); entry ``i`` approximates
    :math:`z(t_i)`.

    Gradients flow by ordinary backprop through the torch solvers (memory grows with the
    number of steps). The scipy methods are black boxes: use :func:`odeint_adjoint` to
    differentiate them. f is never evaluated outside the interval spanned by ``t``.

    Raises
    ------
    TypeError, ValueError for bad input; :class:`SolverError` when the solve fails.
    """
    call = check_call(func, z0, t, method, rtol, atol, options)
    # Every argument is checked before the trivial case returns: a typo must not pass
    # silently just because t holds one time.
    if checkpoint not in (None, "observations", "steps"):
        raise ValueError(f"checkpoint must be None, 'observations' or 'steps', got {checkpoint!r}")
    if checkpoint is not None and call.method in SCIPY_METHODS:
        raise ValueError(f"checkpoint={checkpoint!r} replays the solver's steps, which the black "
                         f"box {call.method!r} cannot: use a torch method")
    if stats is not None and not hasattr(stats, "forward"):
        raise TypeError(f"stats must be a Stats (nh.Stats()), got {type(stats).__name__}"
                        + (": a SolveStats is one half of a Stats, its .forward"
                           if isinstance(stats, SolveStats) else ""))
    stats = Stats() if stats is None else stats
    if call.trivial:
        stats.forward.reset()
        return call.state.repeat(z0, call.t.numel())
    if call.method in SCIPY_METHODS and torch.is_grad_enabled():
        _refuse_black_box_gradients(call, z0, t)
    # call.func is func wrapped for the packed state: the callbacks are the user's own.
    hooks = step_callbacks(func, call.state, call.method)
    kw = dict(method=call.method, rtol=rtol, atol=atol, options=tuple_norm_options(call),
              segments=call.state.segments)
    if checkpoint == "observations":
        ys = _by_interval(call, stats.forward, kw, hooks)
    else:
        ys = solve(call.func, call.y0, call.t, stats=stats.forward, hooks=hooks,
                   step=checkpointed_rk_step if checkpoint == "steps" else rk_step, **kw)
    return call.state.unpack_outputs(ys)


def tuple_norm_options(call):
    """``call.options``, with a custom ``norm`` of a tuple state given a tuple: the solver
    measures the packed scaled error (one flat vector), and torchdiffeq's norm receives
    it in the state's form, one tensor per part with its shape."""
    custom = call.options.get("norm")
    if custom is None or not call.state.is_tuple:
        return call.options
    return {**call.options, "norm": lambda scaled: custom(call.state.unpack(scaled))}


_tuple_norm = tuple_norm_options  # the name adjoint.py imports


def _by_interval(call, stats, kw, hooks):
    """Checkpointed backprop: one checkpointed solve per interval of t.

    Each interval's solve starts with the step size that the previous one proposed at its
    end (``first_step``), as one solve landing on every t_i would: no new initial-step
    selection and ramp-up per interval. That step size is fixed in the forward pass and
    passed to the checkpointed function, so the recomputation in backward replays the same
    steps (and must neither update it nor tell the step callbacks again).
    """
    from torch.utils.checkpoint import checkpoint

    counts = SolveStats()
    done = set()  # intervals solved once: a second call is backward's recomputation

    def counted(tt, z):
        # Counted per call: the recomputation in backward may stop as soon as it has what it
        # needs, before the interval's solve returns.
        stats.nfe += 1
        return call.func(tt, z)

    def interval(y_start, i, first_step):
        again = i in done
        options = dict(kw["options"])
        if first_step is not None:
            options["first_step"] = first_step
        carry = {}
        ys = solve(counted, y_start, call.t[i - 1:i + 1], stats=counts,
                   **{**kw, "options": options}, hooks=None if again else hooks, carry=carry)
        if not again:
            done.add(i)
            stats.n_steps += counts.n_steps
            stats.n_rejected += counts.n_rejected
            proposed[0] = carry.get("next_step")  # None for a fixed-step method
        return ys[-1]

    stats.reset()
    proposed = [kw["options"].get("first_step")]  # the first step of the next interval
    out = [call.y0]
    for i in range(1, len(call.t)):
        out.append(checkpoint(interval, out[-1], i, proposed[0], use_reentrant=False)
                   if torch.is_grad_enabled() else interval(out[-1], i, proposed[0]))
    return torch.stack(out)


def _refuse_black_box_gradients(call, z0, t):
    """scipy cannot be backpropagated through: a gradient that the user expects would be
    silently missing. Say so at once, for z0, t and anything func depends on."""
    advice = ("use odeint_adjoint for gradients, or a torch method (dopri5, rk4), or call "
              "it under torch.no_grad()")
    parts = z0 if isinstance(z0, tuple) else (z0,)
    if t.requires_grad or any(p.requires_grad for p in parts):
        raise ValueError(f"method {call.method!r} is a black box that backprop cannot see "
                         f"into, and z0 or t requires grad: {advice}")
    if closure_leaves(call.func, call.t[0], call.y0)[1]:
        raise ValueError(f"method {call.method!r} is a black box that backprop cannot see "
                         "into, and func depends on tensors that require grad (its "
                         f"parameters): their gradient would be silently lost: {advice}")

