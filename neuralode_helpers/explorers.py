r"""What the two explorers show, computed once per setting: pure functions, no widgets.

- :func:`record_steps`, :func:`toy_steps`: every step an explicit Runge–Kutta solve tries,
  accepted or rejected, with its size (the step-size explorer of notebook 00);
- :func:`oscillator_matrix`, :func:`adjoint_pass`, :func:`exact_adjoint`: the backward solve
  of the adjoint method on :math:`\dot z = A z`, recorded along the way, and the exact answers
  it is compared with (the adjoint explorer of notebook 01).

The widgets in :mod:`~neuralode_helpers.widgets` compute these once per setting of their
controls and let a slider index into the arrays; :mod:`~neuralode_helpers.plotting` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .adjoint import _jumps, _vjp
from .models import LinearODE
from .problems import toy_dynamics, toy_solution
from .solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, TABLEAUS, SolveStats, solve
from .solvers.rk import dense_output, rk_step

# Methods whose every step can be watched: the package's own torch solvers (scipy's are black
# boxes that report no steps).
STEP_METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS


def _check_tolerance(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_method(method):
    if method not in STEP_METHODS:
        raise ValueError(f"method must be one of {', '.join(STEP_METHODS)} (the solvers whose "
                         f"steps can be recorded), got {method!r}")
    return method


# -- the step-size explorer ----------------------------------------------------------------------
@dataclass(frozen=True)
class StepRecord:
    r"""Every step of one scalar solve from ``t[0]`` to ``t[-1]``.

    Arrays (float64, numpy): ``t`` (n+1,) and ``z`` (n+1,): the start and the end of each of
    the n accepted steps; ``h`` (n,): their sizes; ``rejected_t``, ``rejected_h`` (m,): where
    each of the m rejected attempts started and how long it was. ``nfe``, ``n_steps`` (= n),
    ``n_rejected`` (= m) are the solver's own counters; ``error`` is
    :math:`|z(t_\text{end}) - z_\text{exact}(t_\text{end})|` when an exact end value is known
    (else NaN).
    """

    method: str
    rtol: float
    atol: float
    t: np.ndarray
    z: np.ndarray
    h: np.ndarray
    rejected_t: np.ndarray
    rejected_h: np.ndarray
    nfe: int
    n_steps: int
    n_rejected: int
    error: float


def record_steps(func, z0, t_span, *, method="dopri5", rtol=1e-4, atol=1e-6, step_size=None,
                 exact_end=None, max_steps=None) -> StepRecord:
    r"""Solve :math:`\frac{dz}{dt} = f(t, z)` for a scalar z (``z0`` a tensor of shape (1,))
    from ``t_span[0]`` to ``t_span[1]`` with one of :data:`STEP_METHODS` and record every
    step it tries.

    Each attempt is one call of the Runge–Kutta step; the accepted ones are those the solver
    reports to its ``on_step`` hook, so the record's counts equal the solver's own
    (``n_steps``, ``n_rejected``). ``step_size`` is the fixed-step methods' step (required
    for them); ``exact_end`` the exact :math:`z(t_\text{end})`, for ``error``;
    ``max_steps``: an adaptive method gives up (:class:`~neuralode_helpers.SolverError`)
    after this many attempts.
    """
    method = _check_method(method)
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    if method in FIXED_STEP_METHODS:
        if step_size is None:
            raise ValueError(f"{method!r} is a fixed-step method: pass step_size")
        options = {"step_size": _check_tolerance("step_size", step_size)}
    else:
        options = {} if max_steps is None else {"max_num_steps": int(max_steps)}
    z0 = torch.as_tensor(z0, dtype=torch.float64).reshape(1)
    t = torch.tensor([float(t_span[0]), float(t_span[1])], dtype=torch.float64)
    if not t[1] > t[0]:
        raise ValueError(f"t_span must increase, got {tuple(t_span)}")
    attempts, accepted = [], []

    def step(f, tab, t_cur, h, y, k1):
        # Every attempt, accepted or not, passes here first ...
        attempts.append([float(t_cur), float(h), False])
        return rk_step(f, tab, t_cur, h, y, k1)

    def on_step(t_start, t_end, h, y, y_new, ks):
        # ... and the solver tells on_step right after it accepts one.
        attempts[-1][2] = True
        accepted.append((t_end, float(y_new.reshape(-1)[0])))

    stats = SolveStats()
    with torch.no_grad():
        ys = solve(func, z0, t, method=method, rtol=rtol, atol=atol, options=options,
                   stats=stats, on_step=on_step, step=step)
    rejected = np.array([(t0, h) for t0, h, ok in attempts if not ok], dtype=float).reshape(-1, 2)
    ts = np.array([float(t[0])] + [a[0] for a in accepted])
    zs = np.array([float(z0[0])] + [a[1] for a in accepted])
    error = float("nan") if exact_end is None else abs(float(ys[-1, 0]) - float(exact_end))
    return StepRecord(method, rtol, atol, ts, zs, np.diff(ts), rejected[:, 0], rejected[:, 1],
                      stats.nfe, stats.n_steps, stats.n_rejected, error)


TOY_SPAN = (0.0, 10.0)


def toy_steps(method="dopri5", rtol=1e-4, *, t_end=TOY_SPAN[1], max_steps=1000) -> StepRecord:
    r"""Every step of a solve of the toy problem :math:`\frac{dz}{dt} = \sin t\, z`,
    :math:`z(0) = 1` (exact solution :math:`e^{1 - \cos t}`) on [0, ``t_end``], with
    ``atol = rtol / 100`` (as in notebook 00).

    An adaptive method chooses its own steps. A fixed-step method takes as many equal steps as
    ``dopri5`` accepts at this ``rtol``: the same budget of steps, spread evenly instead of
    where the curve needs them. An adaptive method that needs more than ``max_steps``
    attempts raises :class:`~neuralode_helpers.SolverError` (a low order at a tight
    tolerance: ``adaptive_heun`` below rtol ≈ 1e-5).
    """
    rtol = _check_tolerance("rtol", rtol)
    method = _check_method(method)

    def field(t, z):
        return toy_dynamics(t, z, 0.0)

    kw = dict(rtol=rtol, atol=rtol / 100, exact_end=float(toy_solution(torch.tensor(t_end))))
    z0 = torch.ones(1, dtype=torch.float64)
    step_size = None
    if method in FIXED_STEP_METHODS:
        n = record_steps(field, z0, (0.0, t_end), method="dopri5", max_steps=max_steps,
                         **kw).n_steps
        step_size = t_end / n
    return record_steps(field, z0, (0.0, t_end), method=method, step_size=step_size,
                        max_steps=max_steps, **kw)


# -- the adjoint explorer ------------------------------------------------------------------------
def oscillator_matrix(damping, stiffness=4.0) -> torch.Tensor:
    r"""The damped oscillator :math:`\ddot x + \gamma \dot x + k x = 0` as
    :math:`\dot z = A z` with :math:`z = (x, \dot x)^\top`:

    .. math:: A = \begin{pmatrix} 0 & 1 \\ -k & -\gamma \end{pmatrix},

    eigenvalues :math:`\big(-\gamma \pm \sqrt{\gamma^2 - 4k}\big)/2`. Below
    :math:`\gamma = 2\sqrt k` it oscillates; far above, one mode decays slowly and one at
    rate about :math:`\gamma`, which a backward solve turns into growth. A (2, 2) float64
    tensor.
    """
    damping, stiffness = float(damping), float(stiffness)
    if not damping >= 0 or not stiffness > 0:
        raise ValueError(f"need damping >= 0 and stiffness > 0, got {damping}, {stiffness}")
    return torch.tensor([[0.0, 1.0], [-stiffness, -damping]], dtype=torch.float64)


def observation_times(t_end, n_obs, t_start=0.0) -> torch.Tensor:
    r"""``n_obs`` equally spaced observation times :math:`t_1 < \dots < t_N = ` ``t_end``,
    preceded by :math:`t_0` = ``t_start`` (no loss term there): a (N+1,) float64 tensor."""
    if isinstance(n_obs, bool) or not isinstance(n_obs, int) or n_obs < 1:
        raise ValueError(f"n_obs must be a positive int, got {n_obs!r}")
    if not float(t_end) > float(t_start):
        raise ValueError(f"need t_end > t_start, got {t_end}, {t_start}")
    return torch.linspace(float(t_start), float(t_end), n_obs + 1, dtype=torch.float64)


def _loss_partials(zs, targets):
    r""":math:`\ell_i = z_i - y_i` for :math:`L = \sum_{i \ge 1} \tfrac12 \lVert z_i - y_i
    \rVert^2`: (T, D), zero at i = 0."""
    ell = zs - targets
    ell[0] = 0.0
    return ell


@dataclass(frozen=True)
class AdjointPass:
    r"""The backward solve of Chen et al.'s adjoint on :math:`\dot z = A z`, recorded.

    Arrays (numpy float64) along the backward solve, from :math:`t_N` down to :math:`t_0`:
    ``t`` (M,), non-increasing; at each observation time it appears twice, before and after
    the jump; ``z`` (M, D): the backward reconstruction of z; ``a`` (M, D): the adjoint
    :math:`a(t)`; ``grad`` (M, D·D): the running :math:`dL/dA` (the channel
    :math:`a_\theta`, the integral of :math:`(\partial f/\partial A)^\top a` from t to
    :math:`t_N`), row-major entries :math:`A_{11}, A_{12}, A_{21}, A_{22}`.
    ``t_obs`` (N+1,), ``z_obs`` (N+1, D): the forward solve's outputs. ``grad_A`` (D, D)
    and ``a0`` (D,): the results, :math:`dL/dA` and :math:`a(t_0)`. ``nfe_forward``,
    ``nfe_backward``: evaluations of f by the two solves.
    """

    t: np.ndarray
    z: np.ndarray
    a: np.ndarray
    grad: np.ndarray
    t_obs: np.ndarray
    z_obs: np.ndarray
    grad_A: np.ndarray
    a0: np.ndarray
    nfe_forward: int
    nfe_backward: int
    restore_z: bool

    def upto(self, t):
        """How many recorded points the backward solve has reached by time ``t`` (those with
        time >= t): index the arrays with ``[:k]``."""
        return int(np.searchsorted(-self.t, -float(t), side="right"))


def adjoint_pass(A, z0, t, targets=None, *, rtol=1e-6, atol=1e-8, method="dopri5",
                 restore_z=True, points_per_step=3, vjp="closed form") -> AdjointPass:
    r"""The adjoint method's backward solve for :math:`L = \sum_{i\ge1} \tfrac12
    \lVert z(t_i) - y_i\rVert^2` with :math:`\dot z = A z`, written out step by step so that
    its whole path can be watched.

    It is :func:`~neuralode_helpers.odeint_adjoint`'s default backward pass (one solve of
    :math:`[z, a, a_\theta]` from :math:`t_N` to :math:`t_0`, landing on every :math:`t_i`
    to add the jump :math:`\ell_i` to a; with ``restore_z`` also restoring z from the
    forward solve there; the seminorm; starting with the step size the forward solve
    proposed at its end), with the same solver calls, so ``grad_A`` equals
    the ``A.grad`` that ``odeint_adjoint(LinearODE(A), z0, t, ...)`` gives, to round-off.
    Between the ends of each accepted step, ``points_per_step - 1`` points come from the
    method's dense output (adaptive methods with one), for smooth curves.

    ``vjp``: ``"closed form"`` (default) evaluates the two vector-Jacobian products as
    :math:`-A^\top a` and :math:`-a z^\top`, several times faster than ``"autograd"``
    (``odeint_adjoint``'s way, through the graph of f); both give the same numbers.

    ``A`` (D, D), ``z0`` (D,), ``t`` (T,) increasing, ``targets`` (T, D) (default zeros);
    float64.
    """
    A = torch.as_tensor(A, dtype=torch.float64)
    z0 = torch.as_tensor(z0, dtype=torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or z0.shape != A.shape[:1]:
        raise ValueError(f"need A (D, D) and z0 (D,), got {tuple(A.shape)}, {tuple(z0.shape)}")
    if t.ndim != 1 or len(t) < 2 or not bool((t.diff() > 0).all()):
        raise ValueError(f"t must be increasing with at least 2 entries, got {t.tolist()}")
    targets = torch.zeros(len(t), len(z0), dtype=torch.float64) if targets is None else \
        torch.as_tensor(targets, dtype=torch.float64)
    if targets.shape != (len(t), len(z0)):
        raise ValueError(f"targets must have shape {(len(t), len(z0))}, got "
                         f"{tuple(targets.shape)}")
    if vjp not in ("closed form", "autograd"):
        raise ValueError(f"vjp must be 'closed form' or 'autograd', got {vjp!r}")
    if method not in ADAPTIVE_METHODS:
        raise ValueError(f"method must be one of {', '.join(ADAPTIVE_METHODS)}, got {method!r}")
    model = LinearODE(A)
    params = [model.A]
    n, n_param = len(z0), A.numel()

    fwd = SolveStats()
    carry = {}  # the step the forward solve proposes at its end: the backward's first step
    with torch.no_grad():
        zs = solve(model, z0, t, method=method, rtol=rtol, atol=atol, options={}, stats=fwd,
                   segments=[n], carry=carry)
    ell = _loss_partials(zs, targets)

    if vjp == "closed form":
        # For f = A z the products are -(df/dz)^T a = -A^T a and -(df/dA)^T a = -a z^T:
        # the values autograd computes, without its overhead (the explorer recomputes this
        # on every move of a control).
        def augmented(tt, y):
            z, a = y[:n], y[n:2 * n]
            return torch.cat([z @ A.T, -(a @ A), -torch.outer(a, z).reshape(-1)])
    else:
        def augmented(tt, y):
            f, vz, vp = _vjp(model, tt, y[:n], y[n:2 * n], params)
            return torch.cat([f.reshape(-1), vz, *vp])

    tab = TABLEAUS[method]
    thetas = np.linspace(0.0, 1.0, max(1, int(points_per_step)) + 1)
    if tab.dense is None:
        thetas = thetas[[0, -1]]
    ts, states = [], []

    def on_step(t_start, t_end, h, y, y_new, ks):
        for theta in thetas:
            ts.append(t_start + theta * (t_end - t_start))
            states.append(y_new if theta == 1.0 else y if theta == 0.0
                          else dense_output(tab, y, ks, h, float(theta)))

    y_end = torch.cat([zs[-1], ell[-1], zs.new_zeros(n_param)])
    jump = _jumps(ell, n, 2 * n, restore=(zs, n) if restore_z else None)
    bwd = SolveStats()
    with torch.no_grad():
        out = solve(augmented, y_end, t.flip(0), method=method, rtol=rtol, atol=atol,
                    options={"first_step": carry["next_step"]} if "next_step" in carry else {},
                    stats=bwd, callback=jump, segments=[2 * n, n_param], n_counted=1,
                    on_step=on_step)
    y0 = out[-1]
    states = torch.stack(states).numpy()
    return AdjointPass(
        t=np.array(ts), z=states[:, :n], a=states[:, n:2 * n], grad=states[:, 2 * n:],
        t_obs=t.numpy(), z_obs=zs.numpy(), grad_A=y0[2 * n:].reshape(A.shape).numpy(),
        a0=y0[n:2 * n].numpy(), nfe_forward=fwd.nfe, nfe_backward=bwd.nfe,
        restore_z=bool(restore_z))


@dataclass(frozen=True)
class ExactAdjoint:
    r"""The exact answers for :math:`\dot z = A z` and :math:`L = \sum_{i\ge1}\tfrac12
    \lVert z(t_i) - y_i\rVert^2` from the matrix exponential: ``t`` (K,) a fine grid from
    :math:`t_0` to :math:`t_N`; ``z`` (K, D) = :math:`e^{A(t - t_0)} z_0`; ``a`` (K, D) the
    adjoint, :math:`a(t) = \sum_{t_i \ge t} e^{A^\top (t_i - t)} \ell_i` (left-continuous: at
    :math:`t_i` it already holds the jump); ``grad_A`` (D, D) = :math:`dL/dA` by autograd
    through ``matrix_exp``; ``a0`` (D,) = :math:`a(t_0) = dL/dz_0`; ``loss``."""

    t: np.ndarray
    z: np.ndarray
    a: np.ndarray
    grad_A: np.ndarray
    a0: np.ndarray
    loss: float


def exact_adjoint(A, z0, t, targets=None, *, n_grid=400) -> ExactAdjoint:
    """The exact trajectory, adjoint and gradients (see :class:`ExactAdjoint`)."""
    A = torch.as_tensor(A, dtype=torch.float64).detach().clone().requires_grad_(True)
    z0 = torch.as_tensor(z0, dtype=torch.float64).detach().clone().requires_grad_(True)
    t = torch.as_tensor(t, dtype=torch.float64)
    targets = torch.zeros(len(t), len(z0), dtype=torch.float64) if targets is None else \
        torch.as_tensor(targets, dtype=torch.float64)
    zs = torch.linalg.matrix_exp((t - t[0]).reshape(-1, 1, 1) * A) @ z0
    loss = 0.5 * (zs[1:] - targets[1:]).pow(2).sum()
    grad_A, a0 = torch.autograd.grad(loss, (A, z0))
    A, z0 = A.detach(), z0.detach()
    ell = _loss_partials(zs.detach(), targets)
    grid = torch.linspace(float(t[0]), float(t[-1]), int(n_grid), dtype=torch.float64)
    grid = torch.unique(torch.cat([grid, t]))  # the observation times themselves, too
    z = torch.linalg.matrix_exp((grid - t[0]).reshape(-1, 1, 1) * A) @ z0
    a = torch.zeros_like(z)
    for ti, li in zip(t[1:], ell[1:]):
        before = grid <= ti
        a[before] += torch.linalg.matrix_exp((ti - grid[before]).reshape(-1, 1, 1) * A.T) @ li
    return ExactAdjoint(grid.numpy(), z.numpy(), a.numpy(), grad_A.numpy(), a0.numpy(),
                        loss.item())


def adjoint_summary(run: AdjointPass, exact: ExactAdjoint) -> str:
    r"""The numbers a student checks, one line each: the relative error of :math:`dL/dA` and
    of :math:`a(t_0)` against the exact ones, the error of z rebuilt at :math:`t_0`, and
    the NFE of the forward and backward solves."""
    def rel(x, ref):
        return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))

    def entries(x):
        return "  ".join(f"{v:10.5g}" for v in np.ravel(x))

    return "\n".join([
        f"dL/dA   adjoint {entries(run.grad_A)}",
        f"        exact   {entries(exact.grad_A)}   relative error "
        f"{rel(run.grad_A, exact.grad_A):.1e}",
        f"a(t0)   relative error {rel(run.a0, exact.a0):.1e};   z rebuilt at t0: relative "
        f"error {rel(run.z[-1], exact.z[0]):.1e}",
        f"NFE     forward {run.nfe_forward}, backward {run.nfe_backward}",
    ])


def running_limits(values, reference, *, pad=0.1):
    """y-limits that frame ``reference`` and follow ``values`` only so far that the reference
    stays readable (at most one reference span beyond it on each side). Non-finite values are
    ignored."""
    ref = np.asarray(reference, dtype=float)
    lo, hi = float(np.nanmin(ref)), float(np.nanmax(ref))
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1e-12))
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size:
        lo = max(min(lo, float(v.min())), lo - span)
        hi = min(max(hi, float(v.max())), hi + span)
    margin = pad * (hi - lo)
    return lo - margin, hi + margin


__all__ = ["STEP_METHODS", "AdjointPass", "ExactAdjoint", "StepRecord", "adjoint_pass",
           "adjoint_summary", "exact_adjoint", "observation_times", "oscillator_matrix",
           "record_steps", "running_limits", "toy_steps"]
