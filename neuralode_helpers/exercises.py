"""Check functions for the exercises at the end of notebooks 00-04.

Each ``check_*`` function takes the reader's answer (a function or a class), runs it on small
problems whose answers are known, and either

- returns ``True`` after printing a one-line "well done" message, or
- raises ``AssertionError`` whose message is a specific hint: what is wrong and which step of
  the derivation to look at again (not just "incorrect").

The hints recognise the common mistakes (a flipped sign, a missing chain-rule factor, a
transposed matrix, the wrong shape, ...) by comparing the answer with those wrong variants.
Every check runs in well under a second. Worked solutions live in ``notebooks/solutions/``.

Import them as ``from neuralode_helpers.exercises import check_midpoint_step``; they are not
part of the package's top-level API.
"""

import math

import torch
from torch import nn

from .problems import toy_solution

F64 = torch.float64


def _ok(message: str) -> bool:
    print(f"Well done: {message}")
    return True


def _close(x, y, tol=1e-8) -> bool:
    return torch.is_tensor(x) and x.shape == y.shape and torch.allclose(x, y, rtol=tol, atol=tol)


def _as_tensor(value, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise AssertionError(f"{what} should be a torch tensor, got {type(value).__name__}.")
    return value


def _shape(value, expected: tuple, what: str, advice: str = "") -> None:
    if tuple(value.shape) != tuple(expected):
        raise AssertionError(f"Wrong shape for {what}: expected {tuple(expected)}, got "
                             f"{tuple(value.shape)}. {advice}".strip())


# --- notebook 00 -------------------------------------------------------------------------------


def check_same_family_field(fn) -> bool:
    """``fn(t, z)``: a field that does not depend on z and whose solutions are e^(1-cos t) + C.

    Expected: dz/dt = sin t · e^(1 - cos t), the same shape as ``z``.
    """
    t = torch.linspace(-1.0, 10.0, 23, dtype=F64)
    z = torch.randn(23, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = _as_tensor(fn(t, z), "fn(t, z)")
    _shape(out, z.shape, "fn(t, z)", "Return one slope per entry of z (a field without z can "
           "still broadcast: multiply by torch.ones_like(z)).")
    expected = torch.sin(t) * torch.exp(1 - torch.cos(t))
    if _close(out, expected):
        return _ok("dz/dt = sin t · e^(1 - cos t) does not involve z, and every solution is "
                   "e^(1 - cos t) + C: the same family as dz/dt = sin t (z - c).")
    if _close(out, -expected):
        raise AssertionError("The sign is flipped: d/dt (1 - cos t) = +sin t, so "
                             "d/dt e^(1 - cos t) = +sin t · e^(1 - cos t).")
    if _close(out, torch.exp(1 - torch.cos(t))):
        raise AssertionError("You returned the curve e^(1 - cos t) itself, not its slope. "
                             "Differentiate it: the chain rule gives a factor d/dt (1 - cos t).")
    if not _close(fn(t, z + 1.0), out):
        if _close(out, torch.sin(t) * z, 1e-6):
            raise AssertionError("Your field depends on z: sin t · z is section 4's field "
                                 "sin t (z - c) with c = 0. The exercise asks for a field without "
                                 "z: on the curve z - c = e^(1 - cos t), substitute that.")
        if _close(out, z * torch.exp(-torch.cos(t)), 1e-6):
            raise AssertionError("That is the seed text's equation dz/dt = z e^(-cos t), which "
                                 "does not generate e^(1 - cos t) + c; differentiate the curve "
                                 "instead.")
        raise AssertionError("Your field changes when z changes; the exercise asks for one that "
                             "depends on t only.")
    raise AssertionError("Wrong values: at t = 2 the slope of e^(1 - cos t) is "
                         f"{expected[9].item():.4f}, yours is {out[9].item():.4f}. "
                         "Differentiate e^(1 - cos t) with the chain rule.")


def check_midpoint_step(fn) -> bool:
    """``fn(f, t, z, h)``: one midpoint step for dz/dt = f(t, z).

    Expected: z + h f(t + h/2, z + h/2 f(t, z)), the same shape as ``z``.
    """
    def f(t, z):  # depends on both t and z, so every wrong variant gives a different value
        return torch.cos(2 * t) * z + torch.sin(t) - 0.3 * z**2

    t, h = torch.tensor(0.3, dtype=F64), 0.2
    z = torch.tensor([[1.0, -0.5], [0.2, 2.0], [0.0, 0.7]], dtype=F64)
    z_before = z.clone()
    out = _as_tensor(fn(f, t, z, h), "midpoint_step(f, t, z, h)")
    if not torch.equal(z, z_before):
        raise AssertionError("Your step changed z in place (e.g. `z += ...`); build a new "
                             "tensor so that the caller's z stays the state at time t.")
    _shape(out, z.shape, "the new state", "A step maps a state to a state of the same shape.")
    k1 = f(t, z)
    mid = f(t + h / 2, z + h / 2 * k1)
    if _close(out, z + h * mid):
        # One more problem with a known answer: dz/dt = -z, solved over [0, 1] in 10 and 20
        # steps; a second-order method's error drops by about 4 when h halves.
        def decay(t, z):
            return -z

        errors = []
        for n in (10, 20):
            zn = torch.ones(1, dtype=F64)
            for k in range(n):
                zn = fn(decay, torch.tensor(k / n, dtype=F64), zn, 1.0 / n)
            errors.append((zn - math.exp(-1.0)).abs().item())
        ratio = errors[0] / errors[1]
        if not 3.5 < ratio < 4.5:
            raise AssertionError(f"Halving h divided the error by {ratio:.2f}, not about 4 as "
                                 "a second-order method should.")
        return _ok(f"halving h divides the error by {ratio:.2f} (about 4): a second-order step.")
    if _close(out, mid):
        raise AssertionError("You returned the slope f(t + h/2, ...), not the new state: the "
                             "step is z + h * slope.")
    if _close(out, z + h * k1):
        raise AssertionError("That is the Euler step z + h f(t, z): first order, the error "
                             "only halves when h halves. The midpoint rule evaluates f at "
                             "t + h/2, at the state z + h/2 · f(t, z).")
    if _close(out, z + h * f(t, z + h / 2 * k1)):
        raise AssertionError("The state is right but the time is not: evaluate the second "
                             "slope at t + h/2, not at t.")
    if _close(out, z + h * f(t + h / 2, z + h * k1)):
        raise AssertionError("The predictor goes a full step: the midpoint state is "
                             "z + h/2 · f(t, z), half a step.")
    if _close(out, z + mid):
        raise AssertionError("The update is missing the factor h: z + h · f(t + h/2, ...).")
    if _close(out, z + h / 2 * (k1 + f(t + h, z + h * k1))):
        raise AssertionError("That is Heun's method (the trapezoid rule), also second order, "
                             "but not the midpoint rule: one slope at the midpoint, "
                             "f(t + h/2, z + h/2 · f(t, z)).")
    raise AssertionError("Wrong new state. The midpoint rule is "
                         "z + h · f(t + h/2, z + h/2 · f(t, z)).")


# --- notebook 01 -------------------------------------------------------------------------------


def check_dL_dt0(fn) -> bool:
    """``fn(lam, z0, t0, t1)`` (floats): dL/dt0 for dz/dt = lam z, L = z(t1).

    Expected: -lam z0 e^(lam (t1 - t0)) = -a(t0) f(z0).
    """
    cases = [(0.7, 1.5, 0.2, 1.3), (-1.2, 2.0, -0.5, 1.0), (0.3, -0.8, 1.0, 3.0)]
    wrong = {
        "sign": lambda lam, z0, dt: lam * z0 * math.exp(lam * dt),
        "no lam": lambda lam, z0, dt: -z0 * math.exp(lam * dt),
        "no z0": lambda lam, z0, dt: -lam * math.exp(lam * dt),
        "adjoint": lambda lam, z0, dt: math.exp(lam * dt),
        "exponent": lambda lam, z0, dt: -lam * z0 * math.exp(-lam * dt),
    }
    hints = {
        "sign": "The sign of dL/dt0 is flipped. With lam > 0 and z0 > 0, moving t0 later "
                "shortens the time z has to grow, so z(t1) shrinks: dL/dt0 = -a(t0) f(z0).",
        "no lam": "A factor lam is missing: f(z0) = lam z0, so -a(t0) f(z0) = "
                  "-e^(lam (t1 - t0)) lam z0.",
        "no z0": "A factor z0 is missing: f(z0) = lam z0.",
        "adjoint": "That is a(t0) = dz(t1)/dz0 = e^(lam (t1 - t0)), the adjoint; dL/dt0 "
                   "multiplies it by -f(z0).",
        "exponent": "The exponent's sign is wrong: z(t1) = e^(lam (t1 - t0)) z0.",
    }
    for lam, z0, t0, t1 in cases:
        got = fn(lam, z0, t0, t1)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise AssertionError(f"Return one number, got {type(got).__name__}.") from None
        expected = -lam * z0 * math.exp(lam * (t1 - t0))
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-12):
            continue
        for key, variant in wrong.items():
            if math.isclose(got, variant(lam, z0, t1 - t0), rel_tol=1e-6, abs_tol=1e-12):
                raise AssertionError(hints[key])
        raise AssertionError(f"For lam={lam}, z0={z0}, t0={t0}, t1={t1} the answer is "
                             f"{expected:.6f}, you returned {got:.6f}. Differentiate "
                             "z(t1) = e^(lam (t1 - t0)) z0 with respect to t0.")
    return _ok("dL/dt0 = -lam z0 e^(lam (t1 - t0)) = -a(t0) f(z0) on all three cases.")


def check_vjp_tanh(fn) -> bool:
    """``fn(W, z, a)`` for f(z) = tanh(W z): returns (a^T df/dz, a^T df/dW).

    Expected: with s = 1 - tanh(W z)^2, (W^T (s * a), outer(s * a, z)); shapes (D,), (D, D).
    """
    gen = torch.Generator().manual_seed(1)
    for D in (2, 3):
        W = torch.randn(D, D, dtype=F64, generator=gen)
        z = torch.randn(D, dtype=F64, generator=gen)
        a = torch.randn(D, dtype=F64, generator=gen)
        out = fn(W, z, a)
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise AssertionError("Return a pair (a^T df/dz, a^T df/dW).")
        gz, gW = (_as_tensor(v, "each returned gradient") for v in out)
        _shape(gz, (D,), "a^T df/dz", "It has one entry per entry of z.")
        _shape(gW, (D, D), "a^T df/dW", "It has one entry per entry of W.")
        s = 1 - torch.tanh(W @ z) ** 2
        ok_z, ok_W = W.T @ (s * a), torch.outer(s * a, z)
        if _close(gz, ok_z) and _close(gW, ok_W):
            continue
        if _close(gz, -ok_z) or _close(gW, -ok_W):
            raise AssertionError("The sign is flipped: return +a^T df/dz and +a^T df/dW; "
                                 "adjoint_solve puts the minus of da/dt = -a^T df/dz itself.")
        if _close(gz, W.T @ a) or _close(gW, torch.outer(a, z)):
            raise AssertionError("tanh's derivative is missing: a is first multiplied "
                                 "entrywise by 1 - tanh(W z)^2, then by W^T (for z) or "
                                 "outer(., z) (for W).")
        if not _close(gz, ok_z):
            if _close(gz, W @ (s * a)):
                raise AssertionError("a^T df/dz is transposed: it is W^T (s * a), a row vector "
                                     "times the Jacobian diag(s) W, not W (s * a).")
            raise AssertionError("a^T df/dz is wrong; with s = 1 - tanh(W z)^2 it is "
                                 "W^T (s * a).")
        if _close(gW, ok_W.T):
            raise AssertionError("a^T df/dW is transposed: entry (i, j) is (s * a)_i z_j, "
                                 "i.e. torch.outer(s * a, z).")
        raise AssertionError("a^T df/dW is wrong; entry (i, j) is (s * a)_i z_j with "
                             "s = 1 - tanh(W z)^2.")
    return _ok("both vector-Jacobian products match autograd, for 2x2 and 3x3 W.")


# --- notebook 02 -------------------------------------------------------------------------------


def check_windowed_field(fn) -> bool:
    """``fn(f, t0, delta)`` returns g(s, z) = delta * f(t0 + s delta, z) for a batch of windows.

    ``t0`` has shape (B,), z (B, 1), s is 0-d; f takes per-sample times (B,).
    """
    def f(t, z):
        return torch.sin(t)[:, None] * z + torch.cos(2 * t)[:, None]

    t0 = torch.tensor([-0.5, 1.0, 2.5, 7.0], dtype=F64)
    delta = 1.7
    z = torch.tensor([[0.3], [1.2], [-0.4], [2.0]], dtype=F64)
    s = torch.tensor(0.35, dtype=F64)
    g = fn(f, t0, delta)
    if not callable(g):
        raise AssertionError("Return a function g(s, z) (or an nn.Module), not a value.")
    out = _as_tensor(g(s, z), "g(s, z)")
    _shape(out, z.shape, "g(s, z)", "One slope per window and state entry.")
    expected = delta * f(t0 + s * delta, z)
    if _close(out, expected):
        return _ok("dz/ds = delta f(z, t0 + s delta): all windows now share s in [0, 1].")
    if _close(out, f(t0 + s * delta, z)):
        raise AssertionError("The factor delta is missing: by the chain rule "
                             "dz/ds = dz/dt · dt/ds, and dt/ds = delta.")
    if _close(out, delta * f(s.expand(4), z)):
        raise AssertionError("f is evaluated at s, but it needs the real time t = t0 + s delta.")
    if _close(out, delta * f(t0 + s, z)):
        raise AssertionError("The time is t0 + s, but s runs over [0, 1]: the real time is "
                             "t0 + s delta.")
    if _close(out, delta * f(t0, z)):
        raise AssertionError("The time is frozen at t0; the real time is t0 + s delta.")
    raise AssertionError("Wrong values: g(s, z) = delta * f(t0 + s * delta, z).")


def check_aug(fn) -> bool:
    """``fn(func, t, z, a)``: the adjoint's augmented dynamics for a batch.

    Returns (dz/dt, da/dt, [dg/dt per parameter]) = (f, -a^T df/dz, [-a^T df/dtheta_k]), with
    the shapes of z, a and each parameter of ``func``; z and a have shape (B, D).
    """
    from .models import ODENet  # local: keeps this module's import light

    with torch.random.fork_rng():  # a fixed network, without touching the reader's RNG state
        torch.manual_seed(0)
        func = ODENet(state_dim=2, hidden=(8,)).double()
    params = list(func.parameters())
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(5, 2, dtype=F64, generator=gen)
    a = torch.randn(5, 2, dtype=F64, generator=gen)
    t = torch.tensor(0.4, dtype=F64)

    zl = z.clone().requires_grad_(True)
    f = func(t, zl)
    ref = torch.autograd.grad(f, (zl, *params), grad_outputs=-a)
    ref_f, ref_a, ref_p = f.detach(), ref[0], list(ref[1:])

    out = fn(func, t, z, a)
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise AssertionError("Return three things: (dz/dt, da/dt, list of dg/dt per parameter).")
    dz, da, dp = out
    dz, da = _as_tensor(dz, "dz/dt"), _as_tensor(da, "da/dt")
    _shape(dz, z.shape, "dz/dt", "It is f(t, z) for the whole batch.")
    _shape(da, a.shape, "da/dt", "The adjoint has the shape of z, one row per window.")
    dp = list(dp)
    if len(dp) != len(params):
        raise AssertionError(f"Return one gradient per parameter of func ({len(params)}), got "
                             f"{len(dp)}.")
    for p, g in zip(params, dp):
        _shape(_as_tensor(g, "each parameter gradient"), p.shape, "a parameter's dg/dt",
               "Each has its parameter's shape, summed over the batch.")
    if not _close(dz.detach(), ref_f):
        raise AssertionError("dz/dt should be f(t, z) itself.")
    if _close(da.detach(), -ref_a) or all(_close(g.detach(), -r) for g, r in zip(dp, ref_p)):
        raise AssertionError("The sign is flipped: da/dt = -a^T df/dz and "
                             "dg/dt = -a^T df/dtheta (use grad_outputs=-a).")
    ones = torch.autograd.grad(func(t, z.clone().requires_grad_(True)).sum(), params[0])[0]
    if _close(dp[0].detach(), -ones) or _close(dp[0].detach(), ones):
        raise AssertionError("You differentiated f.sum(), i.e. 1^T df/dtheta: weight the "
                             "outputs by the adjoint, grad_outputs=-a.")
    if not _close(da.detach(), ref_a):
        raise AssertionError("da/dt is wrong: it is -a^T df/dz, one VJP with grad_outputs=-a.")
    for g, r in zip(dp, ref_p):
        if not _close(g.detach(), r):
            raise AssertionError("A parameter gradient is wrong: dg/dt = -a^T df/dtheta, summed "
                                 "over the batch (autograd.grad does the sum for you).")
    again = fn(func, t, z, a)[2]
    if not all(_close(g.detach(), r) for g, r in zip(again, ref_p)):
        raise AssertionError("Your second call gave different parameter gradients: .grad "
                             "accumulates over backward() calls. Use torch.autograd.grad, "
                             "which returns fresh gradients.")
    return _ok("one vector-Jacobian product gives all of [f, -a^T df/dz, -a^T df/dtheta] for "
               "the whole batch.")


# --- notebook 03 -------------------------------------------------------------------------------


def check_sincos_field(cls) -> bool:
    """``cls()``: an nn.Module with ``forward(t, z)`` whose network sees (z, sin t, cos t).

    z has shape (..., 1); t is 0-d or per-sample (...,); the output has z's shape.
    """
    with torch.random.fork_rng():  # a fixed network, without touching the reader's RNG state
        torch.manual_seed(0)
        model = cls()
    if not isinstance(model, nn.Module) or not list(model.parameters()):
        raise AssertionError("cls() should build an nn.Module with trainable parameters.")
    z = torch.linspace(-1.0, 3.0, 6).reshape(6, 1)
    t_each = torch.linspace(0.0, 9.0, 6)
    with torch.no_grad():
        for t, what in [(torch.tensor(1.3), "a 0-d t"), (t_each, "per-sample t of shape (B,)")]:
            try:
                out = model(t, z)
            except Exception as err:  # the hint names the input that failed
                raise AssertionError(f"forward(t, z) failed for {what} and z of shape (6, 1): "
                                     f"{err!r}. Broadcast t to z's batch shape first, e.g. "
                                     "t.expand(z.shape[:-1]).") from None
            _shape(_as_tensor(out, "forward(t, z)"), z.shape, "forward(t, z)",
                   "dz/dt has the shape of z.")
        base = model(t_each, z)
        if not torch.allclose(model(t_each + 2 * math.pi, z), base, atol=1e-4):
            raise AssertionError("f(t + 2 pi, z) differs from f(t, z): the network still sees t "
                                 "itself. Feed it sin t and cos t instead, which repeat every "
                                 "2 pi.")
        if torch.allclose(model(t_each, z + 0.5), base, atol=1e-6):
            raise AssertionError("Your field ignores z; the input is (z, sin t, cos t).")
        if torch.allclose(model(t_each + 1.0, z), base, atol=1e-6):
            raise AssertionError("Your field ignores t; the input is (z, sin t, cos t).")
    return _ok("the field is 2 pi-periodic in t, depends on z, and has z's shape.")


def check_window_targets(fn) -> bool:
    """``fn(t0, c, n_obs, window)``: the true z at n_obs evenly spaced times of each window.

    t0 and c have shape (B,); returns (n_obs, B, 1): time first, as odeint returns.
    """
    t0 = torch.tensor([-1.0, 0.5, 4.0], dtype=F64)
    c = torch.tensor([0.0, 0.7, -0.3], dtype=F64)
    n_obs, window = 4, 1.5
    out = _as_tensor(fn(t0, c, n_obs, window), "fn(t0, c, n_obs, window)")
    if out.shape in {(3, 4, 1), (3, 4)}:
        raise AssertionError("Wrong shape: time goes first, (n_obs, B, 1), like the output of "
                             "odeint, so that the two can be compared entry by entry.")
    _shape(out, (n_obs, 3, 1), "the targets", "Time first, then the batch, then the state "
           "dimension 1 (unsqueeze(-1)).")

    def truth(s, c_=c, w=window):
        return toy_solution(t0[None, :] + w * s[:, None], c_[None, :]).unsqueeze(-1)

    s = torch.linspace(0, 1, n_obs, dtype=F64)
    if _close(out, truth(s)):
        return _ok("n_obs points per window, from t0 to t0 + window, both ends included.")
    if _close(out, truth(torch.arange(n_obs, dtype=F64) / n_obs)):
        raise AssertionError("n_obs counts both ends: the times are "
                             "t0 + window * k / (n_obs - 1), k = 0..n_obs-1, so the last one "
                             "is t0 + window.")
    if _close(out, truth(s, w=1.0)):
        raise AssertionError("The times ignore `window`: they run from t0 to t0 + window.")
    if _close(out, truth(s, c_=torch.zeros(3, dtype=F64))):
        raise AssertionError("The offset c is missing: the curves are e^(1 - cos t) + c.")
    raise AssertionError("Wrong values: the targets are toy_solution(t0 + window * s, c) at "
                         "s = linspace(0, 1, n_obs).")


# --- notebook 04 -------------------------------------------------------------------------------


def check_checkpoint_times(fn) -> bool:
    """``fn(t0, t1, lam)``: the fewest evenly spaced times from t0 to t1 (both included) with
    spacing at most 5 / lam, as a 1-D tensor."""
    for t0, t1, lam in [(0.0, 2.0, 50.0), (0.0, 2.0, 20.0), (0.5, 1.0, 1.0), (0.0, 3.0, 7.0)]:
        out = _as_tensor(fn(t0, t1, lam), "fn(t0, t1, lam)")
        if out.ndim != 1 or out.numel() < 2:
            raise AssertionError("Return a 1-D tensor of at least two times, t0 ... t1.")
        times = out.double()
        if abs(times[0].item() - t0) > 1e-9 or abs(times[-1].item() - t1) > 1e-9:
            raise AssertionError("The times must start at t0 and end at t1: the backward solve "
                                 "runs over the whole interval.")
        gaps = times.diff()
        if (gaps <= 0).any():
            raise AssertionError("The times must increase.")
        limit = 5.0 / lam
        if gaps.max().item() > limit * (1 + 1e-9):
            raise AssertionError(f"For lam = {lam:g} a spacing of {gaps.max().item():.3g} is too "
                                 f"wide. The error grows like e^(lam dt) between checkpoints, so "
                                 f"the spacing must shrink as lam grows: dt <= 5 / lam = "
                                 f"{limit:.3g}.")
        needed = math.ceil(lam * (t1 - t0) / 5.0 - 1e-9)
        if len(gaps) > needed:
            raise AssertionError(f"For lam = {lam:g} on [{t0:g}, {t1:g}], {len(gaps)} intervals "
                                 f"is more than needed: each checkpoint stores a state, and "
                                 f"ceil(lam (t1 - t0) / 5) = {needed} intervals are enough.")
    return _ok("dt <= 5 / lam with the fewest checkpoints: memory grows with lam (t1 - t0).")


def check_speed_penalty(fn) -> bool:
    """``fn(func, t, z)``: the mean over the batch of the squared speed |f(t_b, z_b)|^2.

    t has shape (B,), z (B, D); returns a 0-d tensor that autograd can differentiate.
    """
    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.Parameter(torch.tensor([[-0.5, 2.0], [-1.0, 0.3]], dtype=F64))

        def forward(self, t, z):
            return (z @ self.A.T) * (1 + t)[:, None]

    func = Field()
    t = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=F64)
    z = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.2, 0.3], [-0.7, 0.4]], dtype=F64)
    out = fn(func, t, z)
    if isinstance(out, float):
        raise AssertionError("You returned a Python float (.item()?): the penalty must stay a "
                             "tensor so that loss.backward() reaches the parameters.")
    out = _as_tensor(out, "the penalty")
    _shape(out, (), "the penalty", "It is one number: average over the batch.")
    speed = func(t, z).detach()
    sq = speed.square().sum(-1)
    if _close(out.detach(), sq.mean()):
        if not out.requires_grad:
            raise AssertionError("The value is right but detached from the parameters; don't "
                                 "use torch.no_grad() or .detach() here.")
        (g,) = torch.autograd.grad(out, func.A)
        (g_ref,) = torch.autograd.grad(func(t, z).square().sum(-1).mean(), func.A)
        if not _close(g, g_ref):
            raise AssertionError("The value is right but its gradient is not; compute it from "
                                 "func(t, z) directly.")
        return _ok("mean_b |f(t_b, z_b)|^2, differentiable in the parameters.")
    if _close(out.detach(), sq.sum()):
        raise AssertionError("You summed over the batch: average instead, or the penalty's "
                             "weight would depend on the batch size.")
    if _close(out.detach(), speed.square().mean()):
        raise AssertionError("You averaged over the state's D components too (an MSE): sum the "
                             "squares over the state dimension, average over the batch.")
    if _close(out.detach(), sq.sqrt().mean()):
        raise AssertionError("That is the mean speed |f|; the penalty is its square, |f|^2.")
    if _close(out.detach(), z.square().sum(-1).mean()):
        raise AssertionError("You penalised |z|^2, the size of the state; the penalty is on the "
                             "speed |f(t, z)|^2, which is what makes the solver take many steps.")
    raise AssertionError("Wrong value: mean over b of the sum over d of f(t, z)[b, d]^2.")
