r"""The gradient fuzzer: a property-based, differential test of every way to differentiate a
solve (issue #20: find the next wrong gradient before a reader does).

Usable as a module (``tests/test_fuzz.py`` runs a bounded version) and as a script::

    python tests/fuzz_gradients.py --examples 5000 --summary tests/fuzz_latest.md [--seed 0]

**The space.** Seven gradient methods (:data:`GRAD_METHODS`: backprop through ``odeint``,
``checkpoint="observations"``, ``checkpoint="steps"``, and ``odeint_adjoint`` with the
backsolve adjoint with and without ``restore_z``, ``interpolated``, ``quadrature``), every
torch method in ``neuralode_helpers.solvers.METHODS`` at run time (new ones are picked up) and
a few scipy methods (``odeint_adjoint`` only), seven problem families (:data:`FAMILIES`),
observation-time patterns (one interval, many, two very close, decreasing, not starting at
0), tolerances, ``seminorm``, callable norms (forward ``options`` and ``adjoint_options``),
``step_size`` grids, float32 and float64, batches, tuple states, a plain-function field with
``params``, and parameters shared with ``z0`` or with the loss.

**The problems** are linear with forcing, :math:`\dot z = A z + b\,u(t)` with
:math:`u = \theta \sin(\omega t)` or :math:`u = \theta_0 + \theta_1 t + \theta_2 t^2`
(or none). The augmented state :math:`x = [z, \sin\omega t, \cos\omega t]` (or
:math:`[z, 1, t, t^2]`) obeys :math:`\dot x = M x` exactly, so
:math:`z(t_i) = [e^{M (t_i - t_0)} x(t_0)]_z`, and autograd through
``torch.linalg.matrix_exp`` in float64 gives the exact dL/dA, dL/dθ, dL/dz0 and dL/dt
(:func:`exact_reference`). For the fixed-step methods, :func:`discrete_reference` also
computes the exact gradient of the *discretised* solve: our own Runge–Kutta loop in float64
(same grid rule: ``ceil(|Δt| / step_size)`` equal steps per interval), backpropagated.

**The property** (:func:`check_case`): the gradient (and the solution) is within the bound of
:data:`BOUNDS` for its method, or the call raises an error *of the package* that names the
cause (``SolverError``, or a ``ValueError``/``TypeError`` raised from inside
``neuralode_helpers`` with a message). Anything else fails: a gradient outside the bound, a
NaN, an exception from torch or autograd (an internal crash), a callable norm called with
the wrong arguments.

**The error measure.** ``err = max_k max|g_k - g*_k| / S`` over dL/dA, dL/dθ, dL/dz0,
with ``S = max_k max|g*_k|`` their common scale: a gradient that is small by cancellation is
judged on the scale of the others (its integrand's scale), not its own. ``S`` is at least
an absolute floor, ``atol * (|w| + |z*|) * (1 + span) / tol`` (round-off in place of atol
for the fixed-step backprop), for gradients that are tiny because everything decayed.
dL/dt is judged on ``max(S, rate * max|z*| * max|w|)``: dL/dt_i = ℓ_i · f(t_i, z_i) turns
an error δz into rate * δz. The solution's error is judged the same way on ``max|z*|``.

**The bound** (one table, :data:`BOUNDS`; K per method where it differs): ``err <= K * unit``.

- adaptive methods (torch and scipy), every gradient method: ``unit = tol = max(rtol,
  atol / s) * (1 + n_osc)`` where ``s = min(max|z*|, max|w|, 1)`` (the smallest scale the
  absolute tolerance acts on, the state or the adjoint) and ``n_osc = span * rate / 2π``
  counts the turns of the fastest rotation or forcing (global error is a sum of per-step
  errors, and phase errors add up over oscillations); the rtol is the larger of the forward
  and backward ones, K the larger of the forward and backward methods'. K is about 10x the
  method's global error per unit of tolerance on a damped rotation (dopri5, tsit5, dopri8
  100 -- 300 for backprop, whose dL/dt_i goes through the dense output's derivative --,
  adaptive_heun 300, bosh3 500, fehlberg2 5000, scipy 300). For float32, ``tol`` is at
  least ``30 * eps32 * (1 + span * rate)``.
- fixed-step methods, backprop (plain, ``"observations"``, ``"steps"``), against the
  discrete reference: ``unit = eps * (1 + n_steps) * (1 + rate * max|t|)``, K = 100:
  round-off only (eps of the dtype; sin(ωt) of a float32 t costs ``eps32 * ω|t|``).
- fixed-step methods, adjoints, against the exact gradient: ``unit = e_disc + round-off``,
  K = 100, where ``e_disc`` is the larger of the discretised solve's gradient error and its
  solution's error at every grid point (not only the outputs), against the exact ones: the
  same method, step and problem, so the backward solve's error is of the same order.

The rtol drawn for a method is at least what it reaches in a few hundred steps (order 2:
1e-3; order 3: 1e-5; higher: 1e-8; fehlberg2: 1e-4 and 1e-3); decreasing times run the
family's -A, so that every family is stable in the direction of integration.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import random
import sys
import time
import traceback
from collections import Counter, defaultdict

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from torch import nn

import neuralode_helpers as nh
from neuralode_helpers import SolverError
from neuralode_helpers.solvers import METHODS, TABLEAUS

F64 = torch.float64
F32 = torch.float32
EPS = {"float64": torch.finfo(F64).eps, "float32": torch.finfo(F32).eps}

# ---- the space -------------------------------------------------------------------------

GRAD_METHODS = ("backprop", "observations", "steps", "backsolve", "backsolve_nockpt",
                "interpolated", "quadrature")
ODEINT_GRADS = ("backprop", "observations", "steps")
FAMILIES = ("contracting", "stiff", "oscillatory", "forced_sin", "forced_poly", "tuple",
            "shared")
# scipy's black boxes, for the backsolve adjoint (a subset is enough: one multistep, one RK)
SCIPY_USED = tuple(m for m in ("scipy:LSODA", "scipy:RK45", "scipy:DOP853") if m in METHODS)


def _family_of(method):
    if method.startswith("scipy:"):
        return "scipy"
    tab = TABLEAUS.get(method)
    return "adaptive" if tab is not None and tab.e is not None else "fixed"


TORCH_METHODS = tuple(m for m in METHODS if not m.startswith("scipy:") and m in TABLEAUS)
FIXED = tuple(m for m in TORCH_METHODS if _family_of(m) == "fixed")
ADAPTIVE = tuple(m for m in TORCH_METHODS if _family_of(m) == "adaptive")

# ---- the bound table ---------------------------------------------------------------------
# K per (solver family or method, gradient group). "low order" adaptive methods (order <= 3)
# take more, shorter steps and their error estimate is that of the lower-order solution.
# K per (method or solver family, gradient group). For an adaptive method K is about 10x the
# global error per unit of tolerance that the method reaches on a plain damped rotation (its
# "tolerance proportionality": dopri5 ~10, bosh3 ~45, adaptive_heun ~10, dopri8 ~3,
# fehlberg2 ~110-470 -- ~3000 before caa5674, when its error estimate, h (k3 - k1) / 512,
# saw a small fraction of the error it controlled); a method not in the table gets
# "adaptive". The gradient groups: "backprop" is backprop, checkpoint=
# "observations" and "steps"; "adjoint" is backsolve (restore_z or not), interpolated and
# quadrature.
BOUNDS = {
    # adaptive, in units of tol (see the module docstring)
    ("adaptive", "backprop"): 300.0,     # dL/dt_i through the dense output's derivative
    ("adaptive", "adjoint"): 100.0,
    ("adaptive_heun", "backprop"): 300.0,
    ("adaptive_heun", "adjoint"): 300.0,
    ("bosh3", "backprop"): 500.0,
    ("bosh3", "adjoint"): 500.0,
    ("fehlberg2", "backprop"): 5000.0,
    ("fehlberg2", "adjoint"): 5000.0,
    ("scipy", "adjoint"): 300.0,
    ("scipy", "backprop"): 300.0,        # never used while odeint refuses scipy + gradients
    # fixed step: backprop against the discrete reference, in units of eps * (1 + n_steps)
    ("fixed", "backprop"): 100.0,
    # fixed step: adjoints against the exact gradient, in units of the discretisation error
    ("fixed", "adjoint"): 100.0,
}


def bound_key(method, grad_method):
    group = "backprop" if grad_method in ODEINT_GRADS else "adjoint"
    if (method, group) in BOUNDS:
        return method, group
    return _family_of(method), group


# ---- a case ----------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One concrete example: everything needed to rebuild and rerun it."""

    grad: str                   # one of GRAD_METHODS
    family: str                 # one of FAMILIES
    method: str
    dtype: str                  # "float64" or "float32"
    A: list                     # (D, D)
    forcing: str                # "none", "sin" or "poly"
    theta: list                 # [] / [amplitude] / [c0, c1, c2]
    omega: float
    b: list                     # (D,)
    z0: list                    # (D,) or (B, D)
    t: list                     # (T,)
    w: list                     # loss weights, the shape of the output
    rtol: float = 1e-6
    atol: float = 1e-8
    step_size: float | None = None
    split: int | None = None    # tuple state: z = (z[..., :split], z[..., split:])
    shared: str = ""            # "", "loss", "z0" or "loss+z0"
    v: list | None = None       # z0 = z0_base + theta[0] * v when "z0" in shared
    closure: bool = False       # func is a plain function and params are passed
    wrt_z0: bool = True
    wrt_t: bool = False
    seminorm: bool = True
    norm: str = ""              # "", "callable" (forward), "adjoint_callable", "seminorm_str"
    adjoint_method: str | None = None
    adjoint_rtol: float | None = None
    checkpoint_steps_vs_plain: bool = False  # also compare "steps" with plain backprop

    def short(self):
        return (f"{self.grad}/{self.method}/{self.family}/{self.dtype} "
                f"T={len(self.t)} D={len(self.A)}")


class Field(nn.Module):
    r""":math:`\dot z = A z + b\,u(t)`, u from ``theta`` (sin or quadratic forcing)."""

    def __init__(self, A, b, theta, omega, forcing, split=None):
        super().__init__()
        self.A = nn.Parameter(A)
        self.forcing, self.omega, self.split = forcing, omega, split
        self.register_buffer("b", b)
        if forcing != "none":
            self.theta = nn.Parameter(theta)

    def u(self, t):
        return forcing_term(self.forcing, self.theta if self.forcing != "none" else None,
                            self.omega, t)

    def forward(self, t, z):
        if self.split is not None:
            z = torch.cat(z, -1)
        out = z @ self.A.T
        u = self.u(t)
        if u is not None:
            out = out + u * self.b
        if self.split is not None:
            return tuple(out.split([self.split, out.shape[-1] - self.split], -1))
        return out


def forcing_term(forcing, theta, omega, t):
    """u(t): θ sin(ωt), θ0 + θ1 t + θ2 t², or None."""
    if forcing == "sin":
        return theta[0] * torch.sin(omega * t)
    if forcing == "poly":
        return theta[0] + theta[1] * t + theta[2] * t * t
    return None


class NormContractError(AssertionError):
    """A callable norm was called with something other than what the docs promise."""


class ForwardNorm:
    """``options={"norm": ...}``: the scaled error, a tensor of the state's shape, or for a
    tuple state a tuple of tensors of the parts' shapes (as torchdiffeq). The RMS norm (the
    largest over the parts)."""

    def __init__(self, shapes):
        self.shapes = shapes
        self.calls = 0

    def __call__(self, scaled):
        self.calls += 1
        if len(self.shapes) > 1:
            if not isinstance(scaled, tuple) or [tuple(x.shape) for x in scaled] != self.shapes:
                raise NormContractError(
                    f"options['norm'] for a tuple state with parts {self.shapes} got "
                    f"{_describe(scaled)}, not a tuple of the parts")
            return max(x.pow(2).mean().sqrt() for x in scaled)
        if not isinstance(scaled, torch.Tensor) or tuple(scaled.shape) != self.shapes[0]:
            raise NormContractError(f"options['norm'] for a state of shape {self.shapes[0]} got "
                                    f"{_describe(scaled)}")
        return scaled.pow(2).mean().sqrt()


class AdjointNorm:
    """``adjoint_options={"norm": ...}``: documented to receive the scaled errors of
    (z, a, a_θ) (backsolve) -- a tuple of tensors. The largest RMS over the parts."""

    def __init__(self, n_total=None):
        self.calls = 0

    def __call__(self, scaled):
        self.calls += 1
        if not isinstance(scaled, tuple) or not all(isinstance(x, torch.Tensor) for x in scaled):
            raise NormContractError(f"adjoint_options['norm'] got {_describe(scaled)}, not a "
                                    "tuple of tensors (the scaled errors of z, a, a_θ)")
        parts = [x for x in scaled if x.numel()]
        return max(x.pow(2).mean().sqrt() for x in parts) if parts else 0.0


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, tuple):
        return "a tuple (" + ", ".join(_describe(y) for y in x) + ")"
    return type(x).__name__


# ---- exact references ------------------------------------------------------------------


def _augmented_matrix(A, theta, b, omega, forcing):
    D = A.shape[0]
    if forcing == "none":
        return A
    k = 2 if forcing == "sin" else 3
    M = A.new_zeros(D + k, D + k)
    M = M.index_put((torch.arange(D)[:, None], torch.arange(D)[None, :]), A)
    if forcing == "sin":
        # x = [z, s, c]: z' = A z + θ b s, s' = ω c, c' = -ω s
        M = M.index_put((torch.arange(D), torch.full((D,), D)), theta[0] * b)
        M[D, D + 1] = omega
        M[D + 1, D] = -omega
    else:
        # x = [z, 1, t, t²]: z' = A z + b (θ0 + θ1 t + θ2 t²), (t)' = 1, (t²)' = 2 t
        for j in range(3):
            M = M.index_put((torch.arange(D), torch.full((D,), D + j)), theta[j] * b)
        M[D + 1, D] = 1.0
        M[D + 2, D + 1] = 2.0
    return M


def _forcing_state(t0, omega, forcing, like):
    if forcing == "sin":
        return torch.stack([torch.sin(omega * t0), torch.cos(omega * t0)])
    if forcing == "poly":
        return torch.stack([torch.ones_like(t0), t0, t0 * t0])
    return like.new_zeros(0)


def _inputs64(case):
    """The case's inputs as float64 tensors, rounded first to the case's dtype (the solver
    sees the rounded values; the reference must too)."""
    dt = getattr(torch, case.dtype)

    def r(x):
        return torch.tensor(x, dtype=dt).to(F64)

    theta = r(case.theta) if case.theta else torch.zeros(0, dtype=F64)
    return dict(A=r(case.A), theta=theta, b=r(case.b), z0=r(case.z0), t=r(case.t),
                w=r(case.w), v=None if case.v is None else r(case.v),
                omega=float(torch.tensor(case.omega, dtype=dt)))


def _loss(case, zs, A, theta):
    w = torch.tensor(case.w, dtype=zs.dtype)
    loss = (w * zs).sum()
    if "loss" in case.shared:
        loss = loss + 0.5 * (A * A).sum() + (0.3 * (theta * theta).sum() if theta.numel() else 0)
    return loss


def _leaves(case, x):
    """Fresh leaves [A, theta, z0_base, t] (those that get gradients) in float64."""
    A = x["A"].clone().requires_grad_()
    theta = x["theta"].clone().requires_grad_(case.forcing != "none")
    z0b = x["z0"].clone().requires_grad_(case.wrt_z0)
    t = x["t"].clone().requires_grad_(case.wrt_t)
    return A, theta, z0b, t


def _grads(loss, leaves):
    want = [x for x in leaves if x.requires_grad]
    got = iter(torch.autograd.grad(loss, want, allow_unused=True))
    out = []
    for x in leaves:
        g = next(got) if x.requires_grad else None
        out.append(torch.zeros_like(x, dtype=F64) if g is None else g.detach().to(F64))
    return out


def _z0_of(case, z0b, theta, v):
    if "z0" in case.shared:
        return z0b + theta[0] * v
    return z0b


def exact_reference(case):
    """z(t_i) and the gradients [dL/dA, dL/dθ, dL/dz0, dL/dt], exact (matrix exponential of
    the augmented system, autograd in float64)."""
    x = _inputs64(case)
    A, theta, z0b, t = _leaves(case, x)
    z0 = _z0_of(case, z0b, theta, x["v"])
    M = _augmented_matrix(A, theta, x["b"], x["omega"], case.forcing)
    D = A.shape[0]
    xf = _forcing_state(t[0], x["omega"], case.forcing, z0)
    x0 = torch.cat([z0, xf.expand(*z0.shape[:-1], xf.shape[0])], -1)
    E = torch.linalg.matrix_exp((t - t[0])[:, None, None] * M)     # (T, n, n)
    xs = torch.einsum("tij,...j->t...i", E, x0)
    zs = xs[..., :D]
    loss = _loss(case, zs, A, theta)
    return zs.detach(), _grads(loss, (A, theta, z0b, t))


# Our own tableaus of the fixed-step methods (c, a, b): independent of the package's.
OWN_FIXED_TABLEAUS = {
    "euler": ((0.0,), (), (1.0,)),
    "midpoint": ((0.0, 0.5), ((0.5,),), (0.0, 1.0)),
    "rk4": ((0.0, 0.5, 0.5, 1.0), ((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
            (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
    "heun2": ((0.0, 1.0), ((1.0,),), (0.5, 0.5)),
    "heun3": ((0.0, 1 / 3, 2 / 3), ((1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75)),
}


def steps_in(dt, step_size):
    """The number of equal steps in an interval of length |dt|: ceil(|dt| / h), where a
    ratio within round-off of a whole number counts as that number (a grid of multiples of h
    in float32 must not gain a step). The harness draws grids whose ratio is either a whole
    number or at least 0.1 away from one, so the rule is unambiguous."""
    if step_size is None:
        return 1
    r = abs(dt) / step_size
    return max(1, round(r)) if abs(r - round(r)) < 1e-2 else math.ceil(r)


def discrete_reference(case):
    """The fixed-step solve on the same grid in float64 by our own loop, backpropagated:
    the exact gradient of the discretisation. Returns (zs, grads, n_steps, e_traj): e_traj
    is the largest error of the discrete solution at any grid point (not only at the
    outputs) against the exact one, relative to max|z|."""
    c, a, bw = OWN_FIXED_TABLEAUS.get(case.method) or _package_tableau(case.method)
    x = _inputs64(case)
    A, theta, z0b, t = _leaves(case, x)
    z0 = _z0_of(case, z0b, theta, x["v"])

    def f(tt, z):
        u = forcing_term(case.forcing, theta, x["omega"], tt)
        return z @ A.T if u is None else z @ A.T + u * x["b"]

    y, out, n_total = z0, [z0], 0
    grid = []
    tf = t.tolist()
    for i in range(1, len(tf)):
        n = steps_in(tf[i] - tf[i - 1], case.step_size)
        h = (t[i] - t[i - 1]) / n
        for k in range(n):
            tk = t[i - 1] + k * h
            ks = []
            for s in range(len(c)):
                ys = y
                for j, aij in enumerate(a[s - 1] if s else ()):
                    if aij:
                        ys = ys + (h * aij) * ks[j]
                ks.append(f(tk + c[s] * h, ys))
            y = y + h * sum(bi * ki for bi, ki in zip(bw, ks) if bi)
            grid.append((tf[i - 1] + (k + 1) * (tf[i] - tf[i - 1]) / n, y.detach()))
        n_total += n
        out.append(y)
    zs = torch.stack(out)
    loss = _loss(case, zs, A, theta)
    with torch.no_grad():
        M = _augmented_matrix(A.detach(), theta.detach(), x["b"], x["omega"], case.forcing)
        xf = _forcing_state(t[0].detach(), x["omega"], case.forcing, z0)
        x0 = torch.cat([z0.detach(), xf.expand(*z0.shape[:-1], xf.shape[0])], -1)
        tg = torch.tensor([g[0] for g in grid], dtype=F64)
        E = torch.linalg.matrix_exp((tg - tf[0])[:, None, None] * M)
        exact = torch.einsum("tij,...j->t...i", E, x0)[..., :A.shape[0]]
        e_traj = _rel_err([torch.stack([g[1] for g in grid])], [exact])
    return zs.detach(), _grads(loss, (A, theta, z0b, t)), n_total, e_traj


def _package_tableau(method):
    # A fixed-step method added to the package after this harness: read its tableau (the
    # integration loop stays ours).
    tab = TABLEAUS[method]
    return tab.c, tuple(tab.a[1:]), tab.b


# ---- running a case through the package ---------------------------------------------------


def run_package(case):
    """z(t_i) and [dL/dA, dL/dθ, dL/dz0, dL/dt] from the package (float64 copies)."""
    dt = getattr(torch, case.dtype)
    x = {k: (v.to(dt) if isinstance(v, torch.Tensor) else v) for k, v in _inputs64(case).items()}
    field = Field(x["A"].clone(), x["b"], x["theta"].clone(), x["omega"], case.forcing,
                  split=case.split)
    z0b = x["z0"].clone().requires_grad_(case.wrt_z0)
    t = x["t"].clone().requires_grad_(case.wrt_t)
    theta = field.theta if case.forcing != "none" else x["theta"]
    z0 = _z0_of(case, z0b, theta, x["v"])
    shapes = [tuple(z0.shape)]
    if case.split is not None:
        D = z0.shape[-1]
        z0 = tuple(z0.split([case.split, D - case.split], -1))
        shapes = [tuple(p.shape) for p in z0]
    func = field
    params = None
    if case.closure:
        def func(tt, z):
            return field(tt, z)
        params = list(field.parameters())
    kw = dict(rtol=case.rtol, atol=case.atol, method=case.method)
    options = {}
    if case.step_size is not None:
        options["step_size"] = case.step_size
    if case.norm == "callable":
        options["norm"] = ForwardNorm(shapes)
    if options:
        kw["options"] = options
    if case.grad in ODEINT_GRADS:
        checkpoint = None if case.grad == "backprop" else case.grad
        zs = nh.odeint(func, z0, t, checkpoint=checkpoint, **kw)
    else:
        adjoint = {"backsolve_nockpt": "backsolve"}.get(case.grad, case.grad)
        if case.norm == "adjoint_callable":
            aopts = {k: v for k, v in options.items() if k != "norm"}
            aopts["norm"] = AdjointNorm()
            kw["adjoint_options"] = aopts
        elif case.norm == "seminorm_str":
            kw["adjoint_options"] = {**{k: v for k, v in options.items() if k != "norm"},
                                     "norm": "seminorm"}
        if case.adjoint_method is not None:
            kw["adjoint_method"] = case.adjoint_method
            if "adjoint_options" not in kw and case.step_size is not None:
                kw["adjoint_options"] = {"step_size": case.step_size}
        if case.adjoint_rtol is not None:
            kw["adjoint_rtol"] = case.adjoint_rtol
        zs = nh.odeint_adjoint(func, z0, t, adjoint=adjoint, params=params,
                               restore_z=case.grad != "backsolve_nockpt",
                               seminorm=case.seminorm, **kw)
    if case.split is not None:
        zs = torch.cat(zs, -1)
    A = field.A
    loss = _loss(case, zs, A, theta)
    grads = _grads(loss, (A, field.theta if case.forcing != "none" else x["theta"], z0b, t))
    return zs.detach().to(F64), grads


# ---- the property ------------------------------------------------------------------------


class PropertyFailure(AssertionError):
    """The package returned a wrong answer, or crashed inside torch/autograd."""


def _raised_by_package(exc):
    """True for an error of ours that names its cause: SolverError, or a ValueError/TypeError
    raised by code in neuralode_helpers (not by torch on the package's behalf) with a
    message."""
    if not str(exc).strip():
        return False
    if isinstance(exc, SolverError):
        return True
    if type(exc) not in (ValueError, TypeError):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "neuralode_helpers" in last


def _max_abs(xs):
    return max((float(x.abs().max()) for x in xs if x.numel()), default=0.0)


def _rel_err(got, ref):
    S = _max_abs(ref)
    diff = _max_abs([g - r for g, r in zip(got, ref)])
    if not all(torch.isfinite(g).all() for g in got):
        return math.inf
    return diff / S if S > 0 else diff


def rates(case):
    """(fastest rate |λ| of A or ω, fastest rotation |Im λ| or ω) for the bound."""
    ev = torch.linalg.eigvals(torch.tensor(case.A, dtype=F64))
    w = case.omega if case.forcing == "sin" else 0.0
    return max(float(ev.abs().max()), w), max(float(ev.imag.abs().max()), w)


def bound_for(case, zs_ref, disc=None):
    """(K, unit, (floor, floor_z), how): the error allowed is ``K * unit`` relative to the
    gradients' scale S, where S is at least ``floor / unit`` (the solution's scale at least
    ``floor_z / unit``) -- an absolute floor for gradients that
    are tiny because everything decayed, where the absolute tolerance (or round-off)
    dominates: atol (or eps) times (|w| + |z|)(1 + span), the size of the error an absolute
    error of the adjoint or of z makes in ∫ a zᵀ dt and in a(t_0)."""
    K = BOUNDS[bound_key(case.method, case.grad)]
    if case.adjoint_method is not None and case.grad not in ODEINT_GRADS:
        K = max(K, BOUNDS[bound_key(case.adjoint_method, case.grad)])
    span = abs(case.t[-1] - case.t[0])
    fast, turn = rates(case)
    eps = EPS[case.dtype]
    W = max(abs(x) for x in _flat(case.w))
    Z = _max_abs([zs_ref])
    size = (W + Z) * (1 + span)
    fam = _family_of(case.method)
    if fam == "fixed":
        tmax = max(abs(x) for x in case.t)
        roundoff = eps * (1 + disc["n_steps"]) * (1 + fast * tmax)
        if case.grad in ODEINT_GRADS:
            return (K, roundoff, (roundoff * size, roundoff * Z),
                    f"K={K:g} x eps*(1+n_steps)*(1+rate*|t|max)={roundoff:.2e}")
        unit = max(disc["e_grad"], disc["e_z"]) + roundoff
        return K, unit, (roundoff * size, roundoff * Z), f"K={K:g} x e_disc={unit:.2e}"
    rtol = max(case.rtol, case.adjoint_rtol or 0.0)
    s = min(Z, W, 1.0)
    n_osc = span * turn / (2 * math.pi)
    tol = max(rtol, case.atol / max(s, 1e-12)) * (1 + n_osc)
    atol = case.atol
    if case.dtype == "float32":
        tol = max(tol, 30 * eps * (1 + span * fast))
        atol = max(atol, 30 * eps * Z)
    return (K, tol, (atol * size, atol),
            f"K={K:g} x tol={tol:.2e} (n_osc={n_osc:.2g})")


def grad_error(case, grads, ref, zs_ref, floor=0.0):
    """The gradient's error: max|g - g*| over dL/dA, dL/dθ, dL/dz0 on their common scale S
    (at least ``floor``), and dL/dt on the scale max(S, rate * max|z*| * max|w|):
    dL/dt_i = ℓ_i · f(t_i, z_i) turns an error δz of the solution into rate * δz (stiff or
    fast dynamics)."""
    if not all(torch.isfinite(g).all() for g in grads):
        return math.inf
    S = max(_max_abs(ref), floor)
    if S == 0:
        return _max_abs([g - r for g, r in zip(grads, ref)])
    fast, _ = rates(case)
    S_t = max(S, fast * _max_abs([zs_ref]) * max(abs(x) for x in _flat(case.w)))
    e = _max_abs([g - r for g, r in zip(grads[:3], ref[:3])]) / S
    return max(e, _max_abs([grads[3] - ref[3]]) / S_t)


def _flat(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flat(y)
    else:
        yield x


@dataclasses.dataclass
class Outcome:
    status: str          # "pass", "raised" (an accepted error of the package) or "fail"
    ratio: float = 0.0   # error / bound (worst of gradient and solution)
    message: str = ""


def check_case(case):
    """Run one case; return an :class:`Outcome`, never raise (see :func:`assert_case`)."""
    try:
        return _check_case(case)
    except Exception as e:  # noqa: BLE001 - a bug of the harness must show, not vanish
        return Outcome("fail", math.inf, f"harness error {type(e).__name__}: {e} "
                       f"({traceback.format_exc(limit=-2)})")


def _check_case(case):
    try:
        zs, grads = run_package(case)
    except NormContractError as e:
        return Outcome("fail", math.inf, f"NormContractError: {e}")
    except Exception as e:  # noqa: BLE001 - classifying every error is the point
        if _raised_by_package(e):
            return Outcome("raised", 0.0, f"{type(e).__name__}: {str(e).splitlines()[0]}")
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Outcome("fail", math.inf,
                       f"internal crash {type(e).__name__}: {str(e)[:300]} "
                       f"(at {os.path.basename(where.filename)}:{where.lineno})")
    zs_ref, g_ref = exact_reference(case)
    disc = None
    if _family_of(case.method) == "fixed":
        zd, gd, n_steps, e_traj = discrete_reference(case)
        disc = dict(n_steps=n_steps, e_grad=_rel_err(gd, g_ref),
                    e_z=max(_rel_err([zd], [zs_ref]), e_traj))
        if case.grad in ODEINT_GRADS:
            zs_ref, g_ref = zd, gd    # backprop is the gradient of the discretisation
    K, unit, (floor, floor_z), how = bound_for(case, zs_ref, disc)
    bg = bz = K * unit
    eg = grad_error(case, grads, g_ref, zs_ref, floor=floor / unit)
    ez = _max_abs([zs - zs_ref]) / max(_max_abs([zs_ref]), floor_z / unit, 1e-300)
    if not torch.isfinite(zs).all():
        ez = math.inf
    ratio = max(eg / bg, ez / bz)
    names = ("dL/dA", "dL/dθ", "dL/dz0", "dL/dt")
    if not ratio <= 1.0:
        worst = max(range(4), key=lambda k: _max_abs([grads[k] - g_ref[k]])
                    if torch.isfinite(grads[k]).all() else math.inf)
        msg = (f"gradient error {eg:.3g} (bound {bg:.3g}), solution error {ez:.3g} "
               f"(bound {bz:.3g}); {how}; worst {names[worst]}: got "
               f"{_fmt(grads[worst])}, exact {_fmt(g_ref[worst])}")
        if case.grad.startswith("backsolve"):
            msg += f"; {reconstruction_growth(case)}"
        return Outcome("fail", ratio, msg)
    if case.checkpoint_steps_vs_plain:
        plain = run_package(dataclasses.replace(case, grad="backprop"))
        tol = 1e-8 if case.dtype == "float64" else 1e-3
        e = _rel_err(plain[1], grads)
        if not e <= tol:
            return Outcome("fail", e / tol, f"checkpoint='steps' differs from plain backprop "
                           f"by {e:.3g} (relative), more than round-off ({tol:g})")
    return Outcome("pass", ratio)


def reconstruction_growth(case):
    """How much the backsolve's backward reconstruction of z can amplify an error: the
    fastest contraction in the direction of integration times the longest stretch it is
    trusted (one interval of t with restore_z, the whole span without)."""
    ev = torch.linalg.eigvals(torch.tensor(case.A, dtype=F64)).real
    sign = 1.0 if case.t[-1] > case.t[0] else -1.0
    rate = max(0.0, float((-sign * ev).max()))
    stretch = (abs(case.t[-1] - case.t[0]) if case.grad == "backsolve_nockpt"
               else max(abs(b - a) for a, b in zip(case.t, case.t[1:])))
    return f"reconstructing z backwards grows errors by up to e^{rate * stretch:.3g}"


def _fmt(x):
    x = x.reshape(-1)[:6]
    return "[" + ", ".join(f"{float(v):.4g}" for v in x) + "]"


VERBOSE = []  # a list holding one file to log every example to (--verbose)


def _log_example(case, out, seconds):
    if VERBOSE:
        print(f"{seconds:7.2f}s {out.status:6} {out.ratio:9.3g} {case!r} {out.message}",
              file=VERBOSE[0], flush=True)


def assert_case(case):
    out = check_case(case)
    if out.status == "fail":
        raise PropertyFailure(f"{case.short()}: {out.message}")
    return out


# ---- strategies ---------------------------------------------------------------------------


def _r(x, nd=3):
    return float(round(float(x), nd))


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64).mul(100).round().div(100).tolist()


@st.composite
def _matrix(draw, family, D):
    """A with the family's spectrum, entries rounded (copyable)."""
    u = st.floats(-1.0, 1.0).map(_r)
    if family == "contracting":
        diag = [-draw(st.floats(2.0, 20.0).map(_r)) for _ in range(D)]
        A = [[diag[i] if i == j else (draw(u) if j < i else 0.0) for j in range(D)]
             for i in range(D)]
        if draw(st.booleans()):
            A = [list(r) for r in zip(*A)]
        return A
    if family == "stiff":
        fast = -draw(st.floats(20.0, 60.0).map(_r))
        slow = -draw(st.floats(0.5, 2.0).map(_r))
        A = [[slow, draw(u) / 2], [draw(u) / 2, fast]]
        if D == 3:
            A = [A[0] + [0.0], A[1] + [0.0], [draw(u) / 2, 0.0, -draw(st.floats(1, 10).map(_r))]]
        return A
    if family == "oscillatory":
        d = draw(st.floats(0.0, 0.3).map(_r))
        w0 = draw(st.floats(1.0, 8.0).map(_r))
        A = [[-d, w0], [-w0, -d]]
        if D == 3:
            A = [A[0] + [0.0], A[1] + [draw(u) / 4], [0.0, 0.0, -1.0]]
        return A
    # mild, stable, full: diagonally dominant
    A = [[(-draw(st.floats(0.2, 3.0).map(_r)) if i == j else draw(u) / (2 * D))
          for j in range(D)] for i in range(D)]
    return A


@st.composite
def _times(draw, family, dtype, fast, step_size):
    span_hi = {"contracting": 3.0, "stiff": 2.0, "oscillatory": 4.0, "forced_sin": 4.0,
               "forced_poly": 3.0, "tuple": 4.0, "shared": 4.0}[family]
    span = draw(st.floats(0.1, span_hi).map(lambda x: _r(x, 2)))
    t0 = draw(st.sampled_from([0.0, 0.0, 1.0, -2.5]) | st.floats(-3.0, 5.0).map(_r))
    pattern = draw(st.sampled_from(["one", "many", "many", "close"]))
    decreasing = draw(st.integers(0, 3)) == 0
    if step_size is not None and draw(st.booleans()):
        # a grid of whole multiples of the step (the float32 trap)
        n_total = max(1, round(span / step_size))
        k = draw(st.integers(1, 4)) if pattern != "one" else 1
        cuts = sorted(set(draw(st.lists(st.integers(1, n_total), min_size=k, max_size=k))
                          + [n_total]))
        ts = [t0] + [t0 + c * step_size for c in cuts]
    else:
        if pattern == "one":
            ts = [t0, t0 + span]
        else:
            k = draw(st.integers(1, 4))
            inner = draw(st.lists(st.floats(0.02, 0.98).map(lambda x: _r(x, 2)),
                                  min_size=k, max_size=k, unique=True))
            ts = [t0] + [t0 + span * x for x in sorted(inner)] + [t0 + span]
            if pattern == "close":
                gap = draw(st.sampled_from([1e-3, 1e-5, 1e-7] if dtype == "float64"
                                           else [1e-2, 1e-3]))
                j = draw(st.integers(0, len(ts) - 2))
                gap *= max(1.0, abs(ts[j]))
                ts = ts[:j + 1] + [ts[j] + gap] + ts[j + 1:]
                if ts[j + 2] <= ts[j + 1] + gap / 2:
                    ts.pop(j + 2) if j + 2 < len(ts) - 1 else ts.pop(j + 1)
        if step_size is not None:
            # keep every interval's ratio to the step at least 0.1 away from a whole number
            # (unless it is one): see steps_in
            fixed = [ts[0]]
            for x in ts[1:]:
                d = x - fixed[-1]
                r = d / step_size
                frac = r - math.floor(r)
                if 1e-6 < frac < 0.1 or frac > 0.9:
                    d = (math.floor(r) + 0.5) * step_size
                fixed.append(fixed[-1] + d)
            ts = fixed
    ts = [_r(x, 9) for x in ts]
    if any(b <= a for a, b in zip(ts, ts[1:])):
        ts = sorted(set(ts))
    if len(ts) < 2:
        ts = [ts[0], ts[0] + span]
    if decreasing:
        ts = ts[::-1]
    return ts


def _stable_in_direction(A, t):
    """Backwards in time the family's dynamics run -A: keep them stable in the direction of
    integration (else a contracting family is an exploding one)."""
    if t[-1] < t[0]:
        return [[-x for x in row] for row in A]
    return A


def _tightest_rtol(method):
    """(tightest, loosest) rtol drawn for ``method``: the tightest that a method of its order
    reaches in a few hundred steps; a method whose error estimate sees a small fraction of
    its error (K >= 3000: fehlberg2) gets 1e-4 as well, so that K * rtol still means
    something in half of its examples (at 1e-3 only a blow-up or a crash shows)."""
    order = TABLEAUS[method].order if method in TABLEAUS else 5
    if BOUNDS.get((method, "adjoint"), 0) >= 3000:
        return 1e-4, 1e-3
    return {1: 1e-3, 2: 1e-3, 3: 1e-5}.get(order, 1e-8), 1e-3


def _squeeze(t, factor, step_size):
    """Shrink the times towards t[0] by ``factor`` (keeping a grid of whole steps whole)."""
    if step_size is not None:
        ks = [round((x - t[0]) / step_size * factor, 1) for x in t]
        out = [t[0] + k * step_size for k in ks]
    else:
        out = [t[0] + (x - t[0]) * factor for x in t]
    out = [_r(x, 9) for x in out]
    if len(set(out)) < len(out):
        out = [out[0], out[-1]] if out[-1] != out[0] else [t[0], t[0] + (t[1] - t[0]) * factor]
    return out


@st.composite
def cases(draw, grad, family):
    """A :class:`Case` for gradient method ``grad`` and problem family ``family``."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**20)))
    dtype = draw(st.sampled_from(["float64", "float64", "float32"]))
    # One scipy method where it must be refused (backprop cannot see into it; the
    # interpolated and quadrature adjoints need a dense output): the error path is checked.
    if grad in ODEINT_GRADS or grad in ("interpolated", "quadrature"):
        methods = TORCH_METHODS + SCIPY_USED[:1]
    else:
        methods = TORCH_METHODS + SCIPY_USED
    # uniform over the methods (sampled_from favours the first ones)
    # (salted by the cell: hypothesis's first example, all zeros, differs between cells)
    method = random.Random(f"{grad}/{family}/{draw(st.integers(0, 2**32))}").choice(methods)
    fam_m = _family_of(method)
    D = draw(st.sampled_from([2, 2, 3])) if family != "tuple" else draw(st.sampled_from([2, 3]))
    A = draw(_matrix(family, D))
    forcing = {"forced_sin": "sin", "forced_poly": "poly", "tuple": "sin", "shared": "sin"}.get(
        family, draw(st.sampled_from(["none", "none", "sin"])))
    omega = 0.0
    theta = []
    if forcing == "sin":
        hi = 50.0 if family == "forced_sin" else 5.0
        omega = draw(st.floats(0.5, hi).map(lambda x: _r(x, 2)))
        # |θ| >= 0.2: a forcing the forward solve does not see (θ = 0) is one its steps do
        # not resolve, and backprop's dL/dθ is then not the continuous one (by design)
        theta = [draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(0.2, 2.0).map(_r))]
    elif forcing == "poly":
        theta = [draw(st.floats(-1.0, 1.0).map(_r)) for _ in range(3)]
    case_A = torch.tensor(A, dtype=F64)
    fast = max(float(torch.linalg.eigvals(case_A).abs().max()), omega)
    step_size = None
    if fam_m == "fixed":
        if draw(st.integers(0, 5)) == 0:
            step_size = None
        else:
            step_size = _r(draw(st.sampled_from([0.1, 0.2, 0.4])) / fast, 5)
    batch = draw(st.sampled_from([(), (), (2,)]))
    t = draw(_times(family, dtype, fast, step_size))
    A = _stable_in_direction(A, t)
    span = abs(t[-1] - t[0])
    # keep each example cheap: at most ~40 radians of forcing, ~80 fixed steps
    squeeze = min(1.0, 40.0 / max(omega * span, 1e-9))
    if step_size is not None:
        squeeze = min(squeeze, 80 * step_size / span)
    if squeeze < 1.0:
        t = _squeeze(t, squeeze, step_size)
    if step_size is None and fam_m == "fixed":
        # one step per interval: keep the intervals short enough to be stable
        span = abs(t[-1] - t[0])
        t = [t[0] + (x - t[0]) * min(1.0, 0.5 / (fast * span)) for x in t]
        t = [_r(x, 9) for x in t]
        if len(set(t)) < len(t):
            t = [t[0], t[0] + math.copysign(0.5 / fast, t[-1] - t[0])]
    tightest, loosest = _tightest_rtol(method)
    if dtype == "float32":
        rtol = draw(st.sampled_from([x for x in (1e-3, 1e-4, 1e-5) if tightest <= x <= loosest]))
        atol = rtol * draw(st.sampled_from([1e-2, 1e-1, 1.0]))
    else:
        rtol = draw(st.sampled_from([x for x in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
                                     if tightest <= x <= loosest]))
        atol = rtol * draw(st.sampled_from([1e-3, 1e-2, 1e-1, 1.0]))
    split = None
    if family == "tuple":
        split = draw(st.integers(1, D - 1))
    shared = ""
    v = None
    closure = False
    if family == "shared":
        shared = draw(st.sampled_from(["loss", "z0", "loss+z0"]))
        closure = draw(st.booleans())
        if "z0" in shared:
            v = _randn(g, D)
    elif grad not in ODEINT_GRADS:
        closure = draw(st.integers(0, 5)) == 0
    norm = ""
    if fam_m == "adaptive" and draw(st.integers(0, 4)) == 0:
        norm = "callable"
    if grad not in ODEINT_GRADS and fam_m != "scipy":
        norm = draw(st.sampled_from([norm, norm, norm, "adjoint_callable", "seminorm_str"]))
    adjoint_method = None
    adjoint_rtol = None
    if grad not in ODEINT_GRADS:
        if fam_m != "fixed" and draw(st.integers(0, 3)) == 0:
            adjoint_rtol = rtol * draw(st.sampled_from([0.1, 10.0]))
            if dtype == "float32":
                adjoint_rtol = max(adjoint_rtol, 1e-5)
        if fam_m == "adaptive" and draw(st.integers(0, 3)) == 0:
            # a backward method that reaches the backward tolerance in a few hundred steps
            # and whose error estimate is good for it
            back = min(rtol, adjoint_rtol or rtol)
            fit = [m for m in ADAPTIVE if _tightest_rtol(m)[0] <= back <= _tightest_rtol(m)[1]]
            if fit:
                adjoint_method = random.Random(draw(st.integers(0, 2**32))).choice(fit)
    zshape = (*batch, D)
    return Case(
        grad=grad, family=family, method=method, dtype=dtype, A=A, forcing=forcing,
        theta=theta, omega=omega, b=_randn(g, D), z0=_randn(g, *zshape), t=t,
        w=_randn(g, len(t), *zshape), rtol=rtol, atol=atol, step_size=step_size, split=split,
        shared=shared, v=v, closure=closure, wrt_z0=draw(st.booleans()) or "z0" in shared,
        wrt_t=draw(st.booleans()), seminorm=draw(st.booleans()), norm=norm,
        adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
        checkpoint_steps_vs_plain=grad == "steps" and draw(st.integers(0, 3)) == 0)


# ---- the runner ---------------------------------------------------------------------------


@dataclasses.dataclass
class CellResult:
    grad: str
    family: str
    tried: int = 0
    passed: int = 0
    raised: int = 0
    failed: int = 0
    shrink_calls: int = 0
    minimal: Case | None = None
    minimal_message: str = ""
    other_failures: list = dataclasses.field(default_factory=list)
    by_method: Counter = dataclasses.field(default_factory=Counter)
    by_dtype: Counter = dataclasses.field(default_factory=Counter)
    fail_by_method: Counter = dataclasses.field(default_factory=Counter)
    raised_by_method: Counter = dataclasses.field(default_factory=Counter)
    fail_by_dtype: Counter = dataclasses.field(default_factory=Counter)
    raised_by_dtype: Counter = dataclasses.field(default_factory=Counter)
    raised_messages: Counter = dataclasses.field(default_factory=Counter)
    worst_ratio: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


class _Shrunk(Exception):
    pass


def run_cell(grad, family, n, seed=0, shrink_calls=20, shrink_seconds=15.0):
    """``n`` examples of one (gradient method, family) cell. Until the first failure, a
    failure stops the example and hypothesis shrinks it (within a budget of calls and
    seconds); the cell then goes on, without shrinking, to ``n`` examples in all."""
    res = CellResult(grad, family)
    start = time.perf_counter()
    state = {"failed_at": None, "fail_reprs": {}, "t": 0.0}

    def record(case, out):
        _log_example(case, out, time.perf_counter() - state["t"])
        res.tried += 1
        res.by_method[case.method] += 1
        res.by_dtype[case.dtype] += 1
        key = bound_key(case.method, case.grad)
        if out.status == "pass":
            res.passed += 1
            res.worst_ratio[key] = max(res.worst_ratio.get(key, 0.0), out.ratio)
        elif out.status == "raised":
            res.raised += 1
            res.raised_messages[out.message[:110]] += 1
            res.raised_by_method[case.method] += 1
            res.raised_by_dtype[case.dtype] += 1
        else:
            res.failed += 1
            res.fail_by_method[case.method] += 1
            res.fail_by_dtype[case.dtype] += 1

    def property_a(case):
        if state["failed_at"] is not None:
            # shrinking
            r = repr(case)
            if r in state["fail_reprs"]:
                raise PropertyFailure(state["fail_reprs"][r])
            if (res.shrink_calls >= shrink_calls
                    or time.perf_counter() - state["failed_at"] > shrink_seconds):
                return
            res.shrink_calls += 1
            state["t"] = time.perf_counter()
            out = check_case(case)
            if out.status == "fail":
                state["fail_reprs"][r] = out.message
                res.minimal, res.minimal_message = case, out.message
                raise PropertyFailure(out.message)
            return
        state["t"] = time.perf_counter()
        out = check_case(case)
        record(case, out)
        if out.status == "fail":
            state["failed_at"] = time.perf_counter()
            state["fail_reprs"][repr(case)] = out.message
            res.minimal, res.minimal_message = case, out.message
            raise PropertyFailure(out.message)

    def property_b(case):
        state["t"] = time.perf_counter()
        out = check_case(case)
        record(case, out)
        if out.status == "fail" and len(res.other_failures) < 5:
            res.other_failures.append((case, out.message))

    cell_seed = (hash_str(f"{grad}/{family}") + 7919 * seed) % (2**32)
    common = dict(deadline=None, database=None, derandomize=False, print_blob=False,
                  suppress_health_check=list(HealthCheck))
    try:
        given(cases(grad, family))(
            settings(max_examples=n, phases=[Phase.generate, Phase.shrink], **common)(
                hypothesis_seed(cell_seed)(property_a)))()
    except Exception:  # noqa: BLE001 - the failure is recorded in res
        pass
    left = n - res.tried
    if left > 0:
        try:
            given(cases(grad, family))(
                settings(max_examples=left, phases=[Phase.generate], **common)(
                    hypothesis_seed(cell_seed + 1)(property_b)))()
        except Exception as e:  # noqa: BLE001
            res.other_failures.append((None, f"runner: {type(e).__name__}: {e}"))
    res.seconds = time.perf_counter() - start
    return res


def hash_str(s):
    h = 0
    for ch in s:
        h = (h * 131 + ord(ch)) % (2**31 - 1)
    return h


def cells():
    return [(g, f) for g in GRAD_METHODS for f in FAMILIES]


def run(n_examples, seed=0, only=None, log=print):
    """``n_examples`` spread evenly over every (gradient method, family) cell."""
    todo = [c for c in cells() if only is None or any(o in f"{c[0]}/{c[1]}" for o in only)]
    base, extra = divmod(n_examples, len(todo))
    results = []
    start = time.perf_counter()
    for k, (grad, family) in enumerate(todo):
        n = base + (1 if k < extra else 0)
        if n == 0:
            continue
        r = run_cell(grad, family, n, seed=seed)
        results.append(r)
        if log:
            log(f"{grad:>16}/{family:<12} {r.tried:4d} tried {r.failed:3d} failed "
                f"{r.raised:3d} raised {r.seconds:6.1f}s"
                + (f"  FAIL: {r.minimal_message[:150]}" if r.minimal else ""))
    return results, time.perf_counter() - start


# ---- the summary --------------------------------------------------------------------------


def summary(results, seconds, n_examples, seed):
    tried = sum(r.tried for r in results)
    failed = sum(r.failed for r in results)
    lines = ["# Gradient fuzzer: latest long run", "",
             f"`python tests/fuzz_gradients.py --examples {n_examples} --seed {seed}`", "",
             f"- examples: {tried} ({failed} failed, {sum(r.raised for r in results)} "
             f"raised an error of the package, {sum(r.shrink_calls for r in results)} "
             "shrink calls on top)",
             f"- run time: {seconds:.0f} s ({tried / max(seconds, 1e-9):.1f} examples/s)",
             f"- machine: {_cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, "
             f"load average at the end {_load()}, "
             f"{platform.python_version()}, torch {torch.__version__}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             f"- methods in METHODS at run time: {', '.join(METHODS)}",
             f"- finished: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    lines += ["## Bound table (K)", "", "| solver family | gradient methods | K | unit |",
              "| --- | --- | --- | --- |"]
    units = {"backprop": "eps·(1+n_steps)·(1+rate·|t|max) vs the discrete reference",
             "adjoint": "e_disc (discretisation error of the same grid) vs exact"}
    for (fam, group), K in BOUNDS.items():
        unit = units[group] if fam == "fixed" else "tol = max(rtol, atol/s)·(1+n_osc)"
        grads = "backprop, observations, steps" if group == "backprop" else \
            "backsolve (±restore_z), interpolated, quadrature"
        lines.append(f"| {fam} | {grads} | {K:g} | {unit} |")
    lines.append("")

    def table(title, key_fn):
        rows = defaultdict(lambda: [0, 0, 0])
        for r in results:
            for k, (a, b, c) in key_fn(r).items():
                rows[k][0] += a
                rows[k][1] += b
                rows[k][2] += c
        out = [f"## Examples per {title}", "", f"| {title} | tried | raised | failed |",
               "| --- | --- | --- | --- |"]
        out += [f"| {k} | {v[0]} | {v[1]} | {v[2]} |" for k, v in sorted(rows.items())]
        return out + [""]

    lines += table("gradient method", lambda r: {r.grad: (r.tried, r.raised, r.failed)})
    lines += table("family", lambda r: {r.family: (r.tried, r.raised, r.failed)})
    lines += table("solver method", lambda r: {
        m: (c, r.raised_by_method.get(m, 0), r.fail_by_method.get(m, 0))
        for m, c in r.by_method.items()})
    lines += table("dtype", lambda r: {
        d: (c, r.raised_by_dtype.get(d, 0), r.fail_by_dtype.get(d, 0))
        for d, c in r.by_dtype.items()})
    worst = {}
    for r in results:
        for k, v in r.worst_ratio.items():
            worst[k] = max(worst.get(k, 0.0), v)
    lines += ["## Largest error / bound among passing examples", "",
              "| solver family | gradient group | error / bound |", "| --- | --- | --- |"]
    lines += [f"| {k[0]} | {k[1]} | {v:.3g} |" for k, v in sorted(worst.items())] + [""]
    lines += ["## Failures", ""]
    bad = [r for r in results if r.failed]
    if not bad:
        lines += ["None.", ""]
    for r in bad:
        lines += [f"### {r.grad} / {r.family}: {r.failed} of {r.tried} failed "
                  f"(by method: {dict(r.fail_by_method)})", "",
                  f"Minimal example ({r.shrink_calls} shrink calls): {r.minimal_message}", "",
                  "```python", repr(r.minimal), "```", ""]
        for case, msg in r.other_failures[:2]:
            lines += [f"- also: {msg}"] + ([f"  `{case.short()}`"] if case else [])
        lines.append("")
    msgs = Counter()
    for r in results:
        msgs.update(r.raised_messages)
    lines += ["## Errors the package raised (accepted: they name the cause)", ""]
    lines += [f"- {c} x {m}" for m, c in msgs.most_common(25)] or ["None."]
    return "\n".join(lines) + "\n"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load():
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--summary", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", default=None,
                   help="run only cells whose 'grad/family' contains one of these")
    p.add_argument("--verbose", default=None, help="log every example to this file")
    args = p.parse_args(argv)
    if args.verbose:
        VERBOSE.append(open(args.verbose, "w"))
    torch.set_num_threads(1)
    results, seconds = run(args.examples, seed=args.seed, only=args.only)
    text = summary(results, seconds, args.examples, args.seed)
    if args.summary:
        with open(args.summary, "w") as fh:
            fh.write(text)
    failed = sum(r.failed for r in results)
    print(f"{sum(r.tried for r in results)} examples, {failed} failed, {seconds:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
