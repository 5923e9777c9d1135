"""Check functions for the exercises at the end of notebooks 00-07.

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


# --- notebook 05 -------------------------------------------------------------------------------


def check_cubic_field(fn) -> bool:
    """``fn(A, z)``: the spiral's field A z^(o3) for a batch of states, one state per row.

    z has shape (B, D), A (D, D); row b of the result is A z_b^(o3), i.e. (z**3) @ A.T.
    """
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
    B_ = torch.tensor([[0.3, -1.2, 0.5], [0.8, 0.1, -0.4], [-0.6, 0.9, 0.2]], dtype=F64)
    gen = torch.Generator().manual_seed(3)
    for M in (A, B_):
        z = torch.randn(5, M.shape[0], dtype=F64, generator=gen)
        try:
            out = fn(M, z)
        except RuntimeError as err:  # typically A @ z**3 with z of shape (B, D)
            raise AssertionError(f"fn(A, z) failed for z of shape {tuple(z.shape)}: {err}. z "
                                 "holds one state per row, so multiply from the right by A^T: "
                                 "(z**3) @ A.T.") from None
        out = _as_tensor(out, "fn(A, z)")
        _shape(out, z.shape, "the field", "One velocity per state: the shape of z.")
        if _close(out, (z**3) @ M.T):
            continue
        if _close(out, (z**3) @ M):
            raise AssertionError("A is transposed: with states as rows, A z_b becomes z_b^T A^T, "
                                 "so the batch is (z**3) @ A.T, not (z**3) @ A.")
        if _close(out, (z @ M.T) ** 3):
            raise AssertionError("You cubed after multiplying by A: the field is A applied to the "
                                 "cubed state, A z^(o3), not (A z)^(o3).")
        if _close(out, z @ M.T):
            raise AssertionError("The cube is missing: that is the linear field A z, whose "
                                 "spiral turns at the same speed everywhere.")
        raise AssertionError("Wrong values: row b should be A z_b^(o3), i.e. (z**3) @ A.T.")
    return _ok("row b is A z_b^(o3), for 2-D and 3-D states: (z**3) @ A.T.")


def check_kl_to_prior(fn) -> bool:
    """``fn(mu, logvar)``: KL(N(mu, diag e^logvar) || N(0, I)) per series.

    mu and logvar have shape (B, L); returns (B,) = 1/2 sum_j (mu_j^2 + e^l_j - l_j - 1).
    """
    from torch.distributions import Normal, kl_divergence

    gen = torch.Generator().manual_seed(4)
    mu = torch.randn(6, 4, dtype=F64, generator=gen)
    logvar = 1.5 * torch.randn(6, 4, dtype=F64, generator=gen)
    out = _as_tensor(fn(mu, logvar), "fn(mu, logvar)")
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    if out.shape == ():
        raise AssertionError("You returned one number for the whole batch: return one KL per "
                             "series, shape (B,); the ELBO averages over the batch later.")
    if out.shape == mu.shape:
        raise AssertionError("Wrong shape (B, L): sum the KL over the latent dimensions. The "
                             "coordinates of q are independent, so their KLs add up.")
    _shape(out, (6,), "the KL", "One number per series.")
    terms = mu**2 + logvar.exp() - logvar - 1
    if _close(out, ref):
        if not _close(fn(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64)),
                      torch.zeros(2, dtype=F64)):
            raise AssertionError("KL(p || p) should be 0 for mu = 0, logvar = 0.")
        return _ok("your KL matches torch.distributions.kl_divergence, summed over the latent "
                   "dimensions, and is 0 when q is the prior.")
    if _close(out, -ref):
        raise AssertionError("The sign is flipped: a KL divergence is never negative. The ELBO "
                             "subtracts it: log-likelihood - KL.")
    if _close(out, 0.5 * terms.mean(-1)):
        raise AssertionError("You averaged over the latent dimensions: sum them instead; the "
                             "KL of independent coordinates is the sum of their KLs.")
    if _close(out, terms.sum(-1)):
        raise AssertionError("The factor 1/2 is missing: KL = 1/2 sum_j (mu_j^2 + e^l_j - l_j "
                             "- 1).")
    if _close(out, 0.5 * (mu**2 + (2 * logvar).exp() - 2 * logvar - 1).sum(-1)):
        raise AssertionError("You treated logvar as the log of the standard deviation. It is "
                             "the log-variance: the variance is e^l, the std e^(l/2).")
    if _close(out, 0.5 * (mu**2 + logvar.exp() - logvar).sum(-1)):
        raise AssertionError("The -1 per dimension is missing: without it the KL of q = N(0, I) "
                             "from itself would be L/2 instead of 0.")
    if _close(out, 0.5 * ((mu**2 + 1) * (-logvar).exp() + logvar - 1).sum(-1)):
        raise AssertionError("That is KL(N(0, I) || q), the other direction. The ELBO has "
                             "KL(q || p): the expectation is over q.")
    raise AssertionError("Wrong values: KL = 1/2 sum_j (mu_j^2 + e^l_j - l_j - 1); compare "
                         "with torch.distributions.kl_divergence(Normal(mu, (l/2).exp()), "
                         "Normal(0, 1)).sum(-1).")


# --- notebook 06 -------------------------------------------------------------------------------


def _mixing_field(z):
    # A 2-D field with non-zero off-diagonal Jacobian entries, so that summing the whole
    # Jacobian differs from its trace.
    z1, z2 = z[:, 0], z[:, 1]
    return torch.stack([torch.sin(z1) * z2 + z1**2, z1 * z2**2 + torch.tanh(z2)], dim=1)


def check_divergence(fn) -> bool:
    """``fn(f, z)``: the exact divergence tr(df/dz) of a batched field, one value per state.

    ``f`` maps (B, D) to (B, D) row by row; z has shape (B, D); returns (B,).
    """
    z = torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    try:
        out = fn(_mixing_field, z.clone())
    except RuntimeError as err:
        hint = ("Make z differentiable first, z = z.detach().requires_grad_(True), inside "
                "torch.enable_grad().")
        raise AssertionError(f"fn(f, z) failed: {err}. {hint}") from None
    out = _as_tensor(out, "fn(f, z)")
    z1, z2 = z[:, 0], z[:, 1]
    d11, d12 = torch.cos(z1) * z2 + 2 * z1, torch.sin(z1)
    d21, d22 = z2**2, 2 * z1 * z2 + 1 - torch.tanh(z2) ** 2
    trace = d11 + d22
    if out.shape == z.shape:
        raise AssertionError("Wrong shape (B, D): add the diagonal entries df_i/dz_i over i, "
                             "one divergence per state, shape (B,).")
    if out.shape == ():
        raise AssertionError("You summed over the batch: return one divergence per state, "
                             "shape (B,).")
    _shape(out, (7,), "the divergence", "One number per state.")
    out = out.detach()
    if _close(out, trace):
        return _ok("tr(df/dz) = df1/dz1 + df2/dz2 for every state, off-diagonal terms left out.")
    if _close(out, -trace):
        raise AssertionError("The sign is flipped: that is d log p/dt = -tr(df/dz). The "
                             "divergence itself is +tr(df/dz).")
    if _close(out, d11 + d12 + d21 + d22):
        raise AssertionError("You added all the entries of the Jacobian (the gradient of "
                             "f.sum() holds its column sums). The trace keeps only the diagonal: "
                             "the i-th entry of the gradient of f[:, i].sum(), summed over i.")
    if _close(out, d11) or _close(out, d22):
        raise AssertionError("Only one diagonal entry: the trace is df1/dz1 + df2/dz2, one "
                             "backward pass per dimension.")
    raise AssertionError("Wrong values: div f = sum_i df_i/dz_i, evaluated for each state.")


def check_hutchinson(fn) -> bool:
    """``fn(f, z, generator)``: a one-probe Hutchinson estimate eps^T (df/dz) eps per state.

    ``f`` maps (B, D) to (B, D) row by row; draw eps (B, D) with E[eps eps^T] = I from
    ``generator``; returns (B,). Checked for unbiasedness over many probes.
    """
    D = 3
    W = torch.tensor([[1.5, -0.8, 0.3], [0.6, 2.0, -0.5], [-0.4, 0.7, 1.2]], dtype=F64)

    def f(z):
        return torch.tanh(z @ W.T)

    z = 0.5 * torch.randn(4, D, dtype=F64, generator=torch.Generator().manual_seed(7))
    s = 1 - torch.tanh(z @ W.T) ** 2
    trace = (s * W.diagonal()).sum(-1)  # J_b = diag(s_b) W

    one = _as_tensor(fn(f, z.clone(), torch.Generator().manual_seed(0)), "fn(f, z, generator)")
    _shape(one, (4,), "the estimate", "One estimate per state, shape (B,).")
    again = fn(f, z.clone(), torch.Generator().manual_seed(0))
    if not _close(one.detach(), again.detach()):
        raise AssertionError("Two calls with the same generator seed gave different values: "
                             "draw the probe from the generator you are given, e.g. "
                             "torch.randn(z.shape, generator=generator, dtype=z.dtype).")
    other = fn(f, z.clone(), torch.Generator().manual_seed(1)).detach()
    if _close(one.detach(), other):
        if _close(other, trace):
            raise AssertionError("That is the exact trace, which does not use a probe and costs "
                                 "D backward passes. The estimator takes one random eps and "
                                 "returns eps^T (df/dz) eps.")
        raise AssertionError("Your estimate does not change with the probe: draw eps from the "
                             "generator.")
    # Unbiasedness: K probes per state in one call (each row of the stacked batch gets its own).
    K = 20000
    many = fn(f, z.repeat(K, 1), torch.Generator().manual_seed(2)).detach().reshape(K, 4)
    mean, sem = many.mean(0), many.std(0) / math.sqrt(K)
    err = (mean - trace).abs()
    if (err <= 5 * sem + 1e-9).all():
        return _ok(f"the mean over {K} probes is within {err.max().item():.3f} of the exact "
                   f"trace (standard error {sem.max().item():.3f}): unbiased, one backward "
                   "pass per probe.")
    if (mean + trace).abs().max() <= (5 * sem).max():
        raise AssertionError("The estimate averages to -tr(df/dz): the sign is flipped. The "
                             "trace estimate is +eps^T (df/dz) eps; d log p/dt negates it.")
    if (mean.abs() <= 5 * sem + 1e-9).all():
        raise AssertionError("The estimate averages to about 0, not the trace. Dot eps with "
                             "the vector-Jacobian product eps^T df/dz, i.e. the gradient of "
                             "(f * eps).sum() with respect to z, and then with eps again.")
    raise AssertionError(f"Biased: over {K} probes the mean is {mean.tolist()} but the trace "
                         f"is {[round(v, 4) for v in trace.tolist()]}. The probe must satisfy "
                         "E[eps eps^T] = I: standard normal (torch.randn) or random signs, "
                         "not torch.rand, which is uniform on [0, 1].")


# --- notebook 07 -------------------------------------------------------------------------------


def check_resnet_euler(fn) -> bool:
    """``fn(blocks, h)``: L residual blocks as Euler steps, h_{l+1} = h_l + (1/L) f_l(h_l).

    ``blocks`` is a list of L functions (B, D) -> (B, D); h has shape (B, D); returns h_L.
    """
    gen = torch.Generator().manual_seed(8)
    Ws = [torch.randn(3, 3, dtype=F64, generator=gen) for _ in range(3)]
    bs = [torch.randn(3, dtype=F64, generator=gen) for _ in range(3)]
    blocks = [lambda h, W=W, b=b: torch.tanh(h @ W.T + b) for W, b in zip(Ws, bs)]
    h0 = torch.randn(4, 3, dtype=F64, generator=gen)

    def run(order, scale, residual=True, chained=True):
        h = h0
        for f in order:
            x = h if chained else h0
            h = (h if residual else 0) + scale * f(x)
        return h

    out = _as_tensor(fn(list(blocks), h0.clone()), "fn(blocks, h)")
    _shape(out, h0.shape, "h_L", "Each block maps a state to a state of the same shape.")
    if not _close(out, run(blocks, 1 / 3)):
        if _close(out, run(blocks, 1.0)):
            raise AssertionError("The factor 1/L is missing: each block is an Euler step of size "
                                 "1/L on [0, 1]; without it, depth changes the total update.")
        if _close(out, h0 + sum(f(h0) for f in blocks) / 3):
            raise AssertionError("Every block sees h_0: the blocks are applied in turn, each to "
                                 "the previous block's output, h_{l+1} = h_l + f_l(h_l) / L.")
        if _close(out, run(blocks[::-1], 1 / 3)):
            raise AssertionError("The blocks run in reverse order: f_0 comes first.")
        if _close(out, run(blocks, 1 / 3, residual=False)) or _close(out, run(blocks, 1.0, False)):
            raise AssertionError("The skip connection is missing: a residual block returns its "
                                 "input plus the update, h + f(h) / L.")
        raise AssertionError("Wrong h_L: h_{l+1} = h_l + (1/L) f_l(h_l) for l = 0, ..., L-1.")
    # With L copies of one linear field the blocks are Euler's method for dh/dt = h A^T, whose
    # exact time-1 solution is e^A h_0: the error should halve when L doubles.
    A = torch.tensor([[-0.3, 1.0, 0.2], [-1.0, -0.2, 0.5], [0.1, -0.4, -0.5]], dtype=F64)
    exact = h0 @ torch.linalg.matrix_exp(A).T
    errors = [(fn([lambda h: h @ A.T] * L, h0.clone()) - exact).abs().max().item()
              for L in (16, 32)]
    ratio = errors[0] / errors[1]
    if not 1.7 < ratio < 2.3:
        raise AssertionError(f"With shared linear blocks, doubling L divided the error against "
                             f"e^A h_0 by {ratio:.2f}, not about 2 as Euler's method should.")
    return _ok(f"h_L = h_(L-1) + f(h_(L-1)) / L; with one shared linear block, doubling the "
               f"depth divides the distance to the ODE's solution e^A h_0 by {ratio:.2f}: "
               "Euler's method, first order.")


def check_augmented_flow(fn) -> bool:
    """``fn(field, x, p)``: an augmented neural ODE's map x -> first d coordinates of z(1).

    Solve dz/dt = field(t, z) on [0, 1] from z(0) = [x, 0_p]; x has shape (B, d), the result
    (B, d). ``field`` maps (B, d+p) to (B, d+p).
    """
    gen = torch.Generator().manual_seed(9)
    d, p = 2, 2
    M = 0.7 * torch.randn(d + p, d + p, dtype=F64, generator=gen)

    def field(t, z):
        return z @ M.T

    x = torch.randn(5, d, dtype=F64, generator=gen)
    E = torch.linalg.matrix_exp(M)

    def exact(z0):
        return z0 @ E.T

    zeros, ones = torch.zeros(5, p, dtype=F64), torch.ones(5, p, dtype=F64)
    out = _as_tensor(fn(field, x.clone(), p), "fn(field, x, p)")
    if out.ndim == 3:
        raise AssertionError("You returned the whole path: odeint's output has the times first, "
                             "(len(t), B, d+p); take the last time, [-1], then the first d "
                             "coordinates.")
    if out.shape == (5, d + p):
        raise AssertionError("Wrong shape (B, d+p): read out the first d coordinates, "
                             "z1[:, :d]; the extra p only give the flow room to move.")
    _shape(out, (5, d), "the output", "The first d coordinates of z(1).")
    out = out.detach()

    def near(a, b):
        return torch.allclose(a, b, rtol=1e-4, atol=1e-6)

    if not near(out, exact(torch.cat([x, zeros], 1))[:, :d]):
        if near(out, x):
            raise AssertionError("You returned x: solve the ODE from t = 0 to t = 1 first.")
        if near(out, exact(torch.cat([x, ones], 1))[:, :d]):
            raise AssertionError("Pad with zeros, not ones: z(0) = [x, 0]. Every input must "
                                 "start on the same copy of R^d inside R^(d+p).")
        if near(out, exact(torch.cat([x, zeros], 1))[:, -d:]):
            raise AssertionError("You read out the last d coordinates; x went into the first d, "
                                 "so read out z1[:, :d].")
        if near(out, exact(torch.cat([zeros, x], 1))[:, :d]) or \
                near(out, exact(torch.cat([zeros, x], 1))[:, -d:]):
            raise AssertionError("The zeros went in front: the state is [x, 0_p], x first.")
        raise AssertionError("Wrong values: solve dz/dt = field(t, z) on [0, 1] from "
                             "[x, 0_p] (torch.cat along the last dimension), and return "
                             "the first d coordinates of z(1).")
    plain = _as_tensor(fn(lambda t, z: -z, x.clone(), 0), "fn(field, x, 0)").detach()
    if not near(plain, x * math.exp(-1.0)):
        raise AssertionError("With p = 0 the wrapper should be a plain neural ODE: for "
                             "dz/dt = -z it must return x e^(-1).")
    # The 1-D swap of section 4: rotating [x, 0] by pi in the plane maps -1 -> 1 and 1 -> -1.
    R = math.pi * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    swap = fn(lambda t, z: z @ R.T, torch.tensor([[-1.0], [1.0]], dtype=F64), 1).detach()
    if not near(swap, torch.tensor([[1.0], [-1.0]], dtype=F64)):
        raise AssertionError("The rotation field pi (-z2, z1) with p = 1 should swap -1 and 1.")
    return _ok("z(1) from [x, 0_p], first d coordinates; with p = 1 the rotation field "
               "pi (-z2, z1) swaps -1 and 1, the map no plain 1-D flow can make.")
