"""ODE solvers for dz/dt = f(t, z): fixed-step Euler and RK4, adaptive Dormand–Prince 5(4),
and scipy's ``solve_ivp`` methods used as black boxes.

Every solver takes a state tensor of any shape and returns the states at every requested time,
stacked along a new leading axis: ``(len(t), *z0.shape)``. The torch solvers are built from
ordinary tensor operations, so ordinary backprop through them works ("discretise then
optimise"); the scipy solvers are black boxes and only the adjoint method can differentiate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import SolverError

FIXED_STEP_METHODS = ("euler", "rk4")
ADAPTIVE_METHODS = ("dopri5",)
SCIPY_METHODS = ("scipy:RK45", "scipy:RK23", "scipy:DOP853", "scipy:Radau", "scipy:BDF",
                 "scipy:LSODA")
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS + SCIPY_METHODS

# Options each family understands; anything else is a typo we want to report, not ignore.
_OPTIONS = {
    "euler": {"step_size"},
    "rk4": {"step_size"},
    "dopri5": {"first_step", "max_steps", "safety", "min_factor", "max_factor"},
    "scipy": {"first_step", "max_step", "min_step", "max_nfe"},
}


@dataclass
class SolveStats:
    """Work done by one solve: function evaluations, accepted and rejected steps."""

    nfe: int = 0
    n_steps: int = 0
    n_rejected: int = 0

    def reset(self) -> None:
        self.nfe = self.n_steps = self.n_rejected = 0


@dataclass
class Stats:
    """Counters for a forward solve and (for :func:`odeint_adjoint`) its backward solve.

    Pass an instance as ``stats=`` and read it after the call (forward) or after
    ``loss.backward()`` (backward). Each new solve overwrites its half.
    """

    forward: SolveStats = field(default_factory=SolveStats)
    backward: SolveStats = field(default_factory=SolveStats)


# ---------------------------------------------------------------------------------------------
# Input checks, shared with the adjoint
# ---------------------------------------------------------------------------------------------

def solver_family(method: str) -> str:
    return "scipy" if method.startswith("scipy:") else method


def check_inputs(func, z0, t, method, rtol, atol, options) -> dict:
    """Raise a clear TypeError/ValueError for bad input; return the options as a new dict."""
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, z), got {type(func).__name__}")
    for name, x in (("z0", z0), ("t", t)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point (float32 or float64), got {x.dtype}")
    if t.dtype != z0.dtype:
        raise TypeError(f"t and z0 must share a dtype: t is {t.dtype}, z0 is {z0.dtype}")
    if t.device != z0.device:
        raise ValueError(f"t and z0 must be on the same device: t on {t.device}, "
                         f"z0 on {z0.device}")
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D (a list of times), got shape {tuple(t.shape)}")
    if t.numel() < 2:
        raise ValueError(f"t must hold at least 2 times (start and end), got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError("t must be finite")
    dt = t[1:] - t[:-1]
    if not ((dt > 0).all() or (dt < 0).all()):
        raise ValueError("t must be strictly increasing or strictly decreasing, got "
                         f"{t.detach().cpu().tolist()}")
    if not torch.isfinite(z0).all():
        raise ValueError("z0 must be finite (it holds NaN or inf)")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not isinstance(tol, (int, float)) or not tol > 0:
            raise ValueError(f"{name} must be a positive number, got {tol!r}")
    options = dict(options or {})
    family = solver_family(method)
    unknown = set(options) - _OPTIONS[family]
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; "
                         f"valid: {sorted(_OPTIONS[family])}")
    if method in FIXED_STEP_METHODS:
        h = options.get("step_size")
        if h is None:
            raise ValueError(f"method {method!r} is fixed-step: pass options={{'step_size': h}}")
        if not isinstance(h, (int, float)) or not h > 0:
            raise ValueError(f"options['step_size'] must be a positive number, got {h!r}")
    return options


def checked_func(func, like: torch.Tensor):
    """Wrap ``func`` so that a wrong output shape or dtype fails at once, naming the problem."""
    shape, dtype = like.shape, like.dtype

    def f(t, z):
        out = func(t, z)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"func(t, z) must return a torch.Tensor, got {type(out).__name__}")
        if out.shape != shape:
            raise ValueError(f"func(t, z) returned shape {tuple(out.shape)}, but z has shape "
                             f"{tuple(shape)}: dz/dt must have the shape of z")
        if out.dtype != dtype:
            raise TypeError(f"func(t, z) returned dtype {out.dtype}, but z has dtype {dtype}")
        return out

    return f


# ---------------------------------------------------------------------------------------------
# Fixed-step solvers
# ---------------------------------------------------------------------------------------------

def _euler_step(f, t, h, y):
    return y + h * f(t, y)


def _rk4_step(f, t, h, y):
    k1 = f(t, y)
    k2 = f(t + h / 2, y + (h / 2) * k1)
    k3 = f(t + h / 2, y + (h / 2) * k2)
    k4 = f(t + h, y + h * k3)
    return y + (h / 6) * (k1 + 2 * (k2 + k3) + k4)


_FIXED_STEPS = {"euler": _euler_step, "rk4": _rk4_step}


def _integrate_fixed(step, f, y0, t, step_size, stats, callback):
    # Each interval [t_i, t_{i+1}] gets a whole number of equal steps, so every output time is
    # hit exactly (no interpolation) and the steps depend differentiably on t.
    out = [y0]
    y = y0
    tf = t.tolist()
    for i in range(1, len(tf)):
        n = max(1, math.ceil(abs(tf[i] - tf[i - 1]) / step_size - 1e-9))
        h = (t[i] - t[i - 1]) / n
        for k in range(n):
            y = step(f, t[i - 1] + k * h, h, y)
        stats.n_steps += n
        out.append(y)
        if callback is not None:
            y = callback(i, y)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Dormand–Prince 5(4) with FSAL, step-size control and a 4th-order dense output
# ---------------------------------------------------------------------------------------------

_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
# Difference between the 5th- and embedded 4th-order weights, over all 7 stages (FSAL).
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
# Dense output: y(t + θh) = y + h Σ_j k_j Σ_m P[j][m] θ^(m+1)  (Shampine's coefficients, as
# used by scipy's RK45).
_DP_P = (
    (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
    (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
    (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408,
     701980252875 / 199316789632),
    (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
    (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
)


def _lincomb(y, h, coeffs, ks):
    """y + h * Σ coeffs[j] * ks[j], skipping zero coefficients."""
    for c, k in zip(coeffs, ks):
        if c:
            y = torch.add(y, k, alpha=h * c)
    return y


class _Dopri5:
    def __init__(self, f, rtol, atol, options, stats, norm_split, seminorm):
        self.f = f
        self.rtol, self.atol = rtol, atol
        self.max_steps = int(options.get("max_steps", 100_000))
        self.first_step = options.get("first_step")
        self.safety = float(options.get("safety", 0.9))
        self.min_factor = float(options.get("min_factor", 0.2))
        self.max_factor = float(options.get("max_factor", 10.0))
        self.stats = stats
        self.norm_split, self.seminorm = norm_split, seminorm

    def _norm(self, x, y0, y1):
        """RMS of x / (atol + rtol max(|y0|, |y1|)).

        With ``norm_split = k`` the state is two parts, entries [:k] and [k:]: the seminorm
        uses the first part only; otherwise the larger of the two parts' RMS norms is used, so
        that a long tail of channels cannot dilute the error of a short head.
        """
        y1 = y0 if y1 is None else y1
        scaled = (x / (self.atol + self.rtol * torch.maximum(y0.abs(), y1.abs()))).reshape(-1)
        if self.norm_split is None:
            return scaled.pow(2).mean().sqrt()
        head = scaled[: self.norm_split].pow(2).mean().sqrt()
        if self.seminorm or self.norm_split >= scaled.numel():
            return head
        return torch.maximum(head, scaled[self.norm_split:].pow(2).mean().sqrt())

    def _initial_step(self, t0, y0, f0, direction, span):
        # Hairer, Nørsett & Wanner, "Solving ODEs I", II.4: a step whose Euler error is ~tol.
        d0 = self._norm(y0, y0, None).item()
        d1 = self._norm(f0, y0, None).item()
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        y1 = y0 + (direction * h0) * f0
        f1 = self.f(t0 + direction * h0, y1)
        d2 = self._norm(f1 - f0, y0, None).item() / h0
        dmax = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1 / 5)
        return min(100 * h0, h1, span)

    def _attempt(self, t, y, f0, h):
        ks = [f0]
        for i in range(1, 6):
            ks.append(self.f(t + _DP_C[i] * h, _lincomb(y, h, _DP_A[i], ks)))
        y1 = _lincomb(y, h, _DP_B, ks)
        ks.append(self.f(t + h, y1))
        err = _lincomb(torch.zeros_like(y), h, _DP_E, ks)
        return y1, ks, self._norm(err, y, y1).item()

    def integrate(self, y0, t, callback=None):
        """States at every t. With a callback, the solver lands exactly on each t[i], then
        continues from ``callback(i, y)`` (used by the adjoint to add the jumps in a(t))."""
        tf = t.tolist()
        direction = 1.0 if tf[-1] > tf[0] else -1.0
        f0 = self.f(t[0], y0)
        h = self.first_step
        if h is None:
            h = self._initial_step(t[0], y0, f0, direction, abs(tf[-1] - tf[0]))
        h = abs(float(h))
        out = [y0]
        y, t_cur, tc = y0, t[0], tf[0]
        i = 1
        n_attempts = 0
        while i < len(tf):
            if n_attempts >= self.max_steps:
                raise SolverError(f"gave up after max_steps={self.max_steps} steps",
                                  t_reached=tc, method="dopri5")
            n_attempts += 1
            land = callback is not None and abs(tf[i] - tc) <= h * (1 + 1e-12)
            step = abs(tf[i] - tc) if land else h
            y1, ks, ratio = self._attempt(t_cur, y, f0, direction * step)
            if not math.isfinite(ratio):
                if step < 1e-14 * max(1.0, abs(tc)):
                    raise SolverError("the state became non-finite (NaN or inf)",
                                      t_reached=tc, method="dopri5")
                h = step * self.min_factor
                self.stats.n_rejected += 1
                continue
            if ratio <= 1.0:
                self.stats.n_steps += 1
                if land:
                    t_new, tc_new = t[i], tf[i]
                    out.append(y1)
                    y1 = callback(i, y1)
                    f1 = ks[6] if y1 is out[-1] else self.f(t_new, y1)
                    i += 1
                else:
                    tc_new = tc + direction * step
                    t_new = t_cur + direction * step
                    f1 = ks[6]
                    while i < len(tf) and direction * (tf[i] - tc_new) <= 0:
                        out.append(self._interpolate(y, ks, direction * step, t_cur, t[i]))
                        i += 1
                y, f0, t_cur, tc = y1, f1, t_new, tc_new
            else:
                self.stats.n_rejected += 1
            factor = self.max_factor if ratio == 0 else self.safety * ratio ** -0.2
            factor = min(self.max_factor, max(self.min_factor, factor))
            if ratio > 1.0:
                factor = min(1.0, factor)
            h = step * factor
            if h < 1e-14 * max(1.0, abs(tc)):
                raise SolverError(f"step size underflow (h = {h:.3g})", t_reached=tc,
                                  method="dopri5")
        return torch.stack(out)

    @staticmethod
    def _interpolate(y, ks, h, t_old, t_out):
        theta = (t_out - t_old) / h
        powers = (theta, theta * theta, theta ** 3, theta ** 4)
        out = y
        for p, k in zip(_DP_P, ks):
            if any(p):
                w = sum(c * tp for c, tp in zip(p, powers) if c)
                out = out + (h * w) * k
        return out


# ---------------------------------------------------------------------------------------------
# scipy.integrate.solve_ivp as a black box
# ---------------------------------------------------------------------------------------------

class _Scipy:
    def __init__(self, method, f, rtol, atol, options, stats, norm_split, seminorm):
        from scipy.integrate import solve_ivp  # imported here: only these methods need it

        self.solve_ivp = solve_ivp
        self.method = method
        self.scipy_method = method.split(":", 1)[1]
        self.options = dict(options)
        # scipy has no step limit of its own; LSODA can loop for ever near a singularity.
        self.max_nfe = int(self.options.pop("max_nfe", 200_000))
        self.f, self.rtol, self.atol = f, rtol, atol
        self.stats = stats
        # scipy's own norm is an RMS over all entries; only the seminorm can be expressed
        # (through per-entry absolute tolerances), so that is the one case we change.
        self.error_numel = norm_split if seminorm else None

    def integrate(self, y0, t, callback=None):
        shape, dtype, device = y0.shape, y0.dtype, y0.device
        tf = t.tolist()

        def fun(tt, yy):
            if self.stats.nfe >= self.max_nfe:
                raise SolverError(f"gave up after max_nfe={self.max_nfe} evaluations",
                                  t_reached=tt, method=self.method)
            if not np.isfinite(yy).all():
                raise SolverError("the state became non-finite (NaN or inf)", t_reached=tt,
                                  method=self.method)
            z = torch.as_tensor(yy, device=device).to(dtype).view(shape)
            with torch.no_grad():
                dz = self.f(torch.tensor(tt, dtype=dtype, device=device), z)
            dz = dz.detach().to("cpu", torch.float64).numpy().ravel()
            if not np.isfinite(dz).all():
                raise SolverError("dz/dt became non-finite (NaN or inf)", t_reached=tt,
                                  method=self.method)
            return dz

        def guarded(tt, yy):
            # Errors raised by func itself (or by our checks) pass through unchanged; only
            # scipy's own failures are turned into SolverError below.
            try:
                return fun(tt, yy)
            except Exception as err:
                err._from_func = True
                raise

        atol = self.atol
        if self.error_numel is not None:
            # Channels outside the error norm get an absolute tolerance so large that their
            # local error never decides the step (scipy's form of a seminorm).
            atol = np.full(y0.numel(), 1e30)
            atol[: self.error_numel] = self.atol

        def solve(t_span, y_start, t_eval=None):
            try:
                sol = self.solve_ivp(guarded, t_span, y_start, method=self.scipy_method,
                                     rtol=self.rtol, atol=atol,
                                     dense_output=t_eval is not None, **self.options)
            except (ValueError, np.linalg.LinAlgError) as err:
                # e.g. an implicit method's LU factorisation of an overflowing Jacobian
                if getattr(err, "_from_func", False):
                    raise
                raise SolverError(f"scipy solve_ivp failed: {err}", t_reached=t_span[0],
                                  method=self.method) from err
            if sol.status != 0:
                raise SolverError(f"scipy solve_ivp failed: {sol.message}",
                                  t_reached=sol.t[-1], method=self.method)
            self.stats.n_steps += len(sol.t) - 1
            return sol

        y = y0.detach().to("cpu", torch.float64).numpy().ravel()
        if callback is None:
            sol = solve((tf[0], tf[-1]), y, t_eval=tf)
            ys = sol.sol(tf).T
            ys[0] = y  # the first output is z0 itself, bit for bit
            return torch.as_tensor(ys, device=device).to(dtype).view(len(tf), *shape)
        out = [y0]
        y_t = y0
        for i in range(1, len(tf)):
            sol = solve((tf[i - 1], tf[i]), y_t.detach().to("cpu", torch.float64).numpy().ravel())
            y_t = torch.as_tensor(sol.y[:, -1], device=device).to(dtype).view(shape)
            out.append(y_t)
            y_t = callback(i, y_t)
        return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

def solve(f, y0, t, *, method, rtol, atol, options, stats, callback=None, norm_split=None,
          seminorm=False):
    """Unchecked core used by :func:`odeint` and the adjoint.

    ``norm_split = k`` splits the flattened state into entries [:k] and [k:] for the adaptive
    error norm: with ``seminorm`` only the first part counts, otherwise the larger of the two
    parts' RMS norms. ``None`` uses one RMS over all entries.
    """
    stats.reset()

    def counted(tt, z):
        stats.nfe += 1
        return f(tt, z)

    if method in FIXED_STEP_METHODS:
        return _integrate_fixed(_FIXED_STEPS[method], counted, y0, t, options["step_size"],
                                stats, callback)
    if method == "dopri5":
        return _Dopri5(counted, rtol, atol, options, stats, norm_split, seminorm).integrate(
            y0, t, callback)
    return _Scipy(method, counted, rtol, atol, options, stats, norm_split, seminorm).integrate(
        y0, t, callback)


def odeint(func, z0, t, *, method="dopri5", rtol=1e-6, atol=1e-8, options=None, stats=None):
    r"""Solve :math:`\frac{dz}{dt} = f(t, z)`, :math:`z(t_0) = z_0`, at every time in ``t``.

    Parameters
    ----------
    func : callable ``func(t, z) -> dz/dt``
        ``t`` is a 0-d tensor, ``z`` has the shape of ``z0`` (any shape: leading axes are
        batch axes as far as the solver is concerned), and the output has that shape too.
    z0 : Tensor, shape ``(*S)``
    t : Tensor, shape ``(T,)``, T >= 2, strictly increasing or strictly decreasing.
    method : one of :data:`METHODS`
        ``"euler"``, ``"rk4"`` (fixed step: ``options={"step_size": h}``), ``"dopri5"``
        (adaptive, pure torch) or ``"scipy:<name>"`` for ``scipy.integrate.solve_ivp``.
    rtol, atol : positive floats; ignored by the fixed-step methods.
    stats : :class:`Stats`, optional; ``stats.forward`` receives NFE and step counts.

    Returns
    -------
    Tensor, shape ``(T, *S)``; entry ``i`` approximates :math:`z(t_i)`.

    Gradients flow by ordinary backprop through the torch solvers (memory grows with the
    number of steps). The scipy methods are black boxes: use :func:`odeint_adjoint` to
    differentiate them.

    Raises
    ------
    TypeError, ValueError for bad input; :class:`SolverError` when the solve fails.
    """
    options = check_inputs(func, z0, t, method, rtol, atol, options)
    if method in SCIPY_METHODS and torch.is_grad_enabled() and (z0.requires_grad
                                                                 or t.requires_grad):
        raise ValueError(f"method {method!r} is a black box that backprop cannot see into: "
                         "use odeint_adjoint for gradients, or a torch method (dopri5, rk4)")
    stats = Stats() if stats is None else stats
    return solve(checked_func(func, z0), z0, t, method=method, rtol=rtol, atol=atol,
                 options=options, stats=stats.forward)
