"""Check functions for the exercises at the end of notebooks 00-09.

Each ``check_*`` function takes the reader's answer (a function or a class; for
:func:`check_steer_range`, the numbers drawn), runs it on small problems whose answers are
known, and either

- returns ``True`` after printing a one-line "well done" message, or
- raises ``AssertionError`` with a hint that names what is wrong (a sign, a missing factor, a
  shape, ...), or
- raises ``TypeError`` with one sentence when it was handed something that is not an answer
  at all (``None``, a string, a tensor instead of a function, ...).

Hints are tiered: the first failure of a check names what is wrong without giving the
formula away; the same mistake met again adds more detail (a different mistake starts at the
first tier). No hint states the answer, and no check's source holds it in a form that could be
copied: each compares with numbers, autograd, an exact solution or a different formulation.
:func:`reset_hints` starts the tiers again.

Answers may work in float32 or float64: each check runs the answer on float64 inputs and, if
the answer cannot take them (it makes its own float32 tensors), again on float32 inputs, and
compares at float32 precision. The hints recognise common mistakes by comparing the answer
with those wrong variants. Every check but :func:`check_radau_stiff` runs in about a second or
less; that one runs two of scipy's Radau solves (seconds to a minute). Worked solutions live
in ``notebooks/solutions/`` (not in the student edition, ``make student``).

Import them as ``from neuralode_helpers.exercises import check_midpoint_step``; they are not
part of the package's top-level API.
"""

import contextlib
import functools
import math
import re
import sys
import traceback
from pathlib import Path

import torch
from torch import nn

from .problems import toy_solution

F64, F32 = torch.float64, torch.float32
_PACKAGE_DIR = Path(__file__).resolve().parent
_TORCH_DIR = Path(torch.__file__).resolve().parent

# How many times each check has met each mistake since the last reset_hints(): picks the
# hint's tier. Keyed by (check, first sentence without its digits), so that an unrelated
# failure (a bug fixed, another mistake) starts again at the first tier.
_failures: dict[tuple[str, str], int] = {}


def reset_hints() -> None:
    """Start every check's hints again at the first tier (what is wrong, not how to fix it)."""
    _failures.clear()


class _Hint:
    """Builds a check's AssertionError: the first failure gets ``first``; later failures of the
    same check get ``first`` followed by ``more`` (the fuller explanation)."""

    def __init__(self, check: str):
        self.check = check

    def __call__(self, first: str, more: str = "") -> AssertionError:
        key = (self.check, re.sub(r"[\d.+-]+", "", first))
        tier = _failures.get(key, 0)
        _failures[key] = tier + 1
        if tier == 0 and more:
            return AssertionError(first + " (Run the check again after your next try for a "
                                  "fuller hint.)")
        return AssertionError(f"{first} {more}".strip())


class _DtypeTrouble(Exception):
    """The answer failed on a float32/float64 mismatch: try the other precision."""


# --- what was handed in --------------------------------------------------------------------


def _describe(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return f"the string {value[:30]!r}"
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, bool | int | float | complex):
        return f"the number {value!r}"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, tuple | list | dict):
        return f"a {type(value).__name__} of length {len(value)}"
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        shape = tuple(value.shape)
        return f"a NumPy array of shape {shape}" if shape else f"the NumPy number {value!r}"
    return f"an instance of {type(value).__name__}"


def _expect_function(fn, check: str, call: str) -> None:
    """One sentence, as a TypeError, unless ``fn`` can be called like a function."""
    if callable(fn) and not isinstance(fn, type):
        return
    extra = ("; pass the function itself, not the result of calling it" if torch.is_tensor(fn)
             or isinstance(fn, bool | int | float | tuple | list) else "")
    raise TypeError(f"{check} expects your function, which it calls as {call}, but got "
                    f"{_describe(fn)}{extra}.") from None


def _expect_class(cls, check: str, call: str) -> None:
    if isinstance(cls, type):
        return
    extra = ("; pass the class itself, without the ()" if isinstance(cls, nn.Module) else "")
    raise TypeError(f"{check} expects your class, which it builds as {call}, but got "
                    f"{_describe(cls)}{extra}.") from None


def _user_line(tb) -> str:
    """``' at line N (`source`)'`` for the innermost frame of the reader's own code."""
    found = ""
    for frame in traceback.extract_tb(tb):
        path = Path(frame.filename)
        if _TORCH_DIR in path.parents or _PACKAGE_DIR in path.parents:
            continue
        if "site-packages" in path.parts or frame.filename.startswith("<frozen"):
            continue
        found = f" at line {frame.lineno}" + (f" (`{frame.line.strip()}`)" if frame.line else "")
    return found


_DTYPE_WORDS = re.compile(r"dtype|Double|scalar type|Float but|found Float|same type", re.I)


def _call(hint: _Hint, fn, args, call: str, more: str = "", more_if: str = ""):
    """Run the reader's code; its exceptions become one hint sentence, naming where it failed.
    A float32/float64 mismatch becomes _DtypeTrouble, so that the check can try the other
    precision. ``more`` (the fuller hint) is attached only when the error's message matches the
    regular expression ``more_if`` (when given): a hint about shapes for a shape error only."""
    try:
        return fn(*args)
    except Exception as err:  # the reader's code failed: say where, not our traceback
        if _DTYPE_WORDS.search(str(err)):
            raise _DtypeTrouble(str(err)) from None
        if "does not require grad" in str(err):
            raise hint(f"{call} raised {type(err).__name__}: the tensor you differentiate does "
                       "not depend on a tensor that requires grad.",
                       "Make z differentiable first, z = z.detach().requires_grad_(True), "
                       "inside torch.enable_grad().") from None
        message = str(err).strip().rstrip(".") or "(no message)"
        if more_if and not re.search(more_if, message, re.I):
            more = ""
        raise hint(f"{call} raised {type(err).__name__}{_user_line(err.__traceback__)}: "
                   f"{message}.", more) from None


def _in_either_precision(hint: _Hint, trial):
    """``trial(dtype)`` in float64, or in float32 when the answer cannot take float64."""
    try:
        return trial(F64)
    except _DtypeTrouble:
        pass
    try:
        return trial(F32)
    except _DtypeTrouble as err:
        raise hint(f"Your answer mixes float32 and float64 tensors ({err}).",
                   "Make every new tensor with the dtype of the inputs you are given, e.g. "
                   "torch.zeros(..., dtype=x.dtype) or x.new_zeros(...).") from None


def _tensor(hint: _Hint, value, what: str) -> torch.Tensor:
    if torch.is_tensor(value):
        return value
    if value is None:
        raise hint(f"{what} returned None: is a `return` missing?")
    if type(value).__module__ == "numpy":
        raise hint(f"{what} should return a torch tensor, got {_describe(value)}: compute with "
                   "torch operations, or convert with torch.as_tensor.")
    raise hint(f"{what} should return a torch tensor, got {_describe(value)}.")


_STATE_NAMES = {"z", "x", "y", "u", "h", "state", "z_", "zt", "z0"}
_TIME_NAMES = {"t", "time", "tau", "s", "t_", "t0"}


def _time_first(hint: _Hint, fn, what: str) -> None:
    """A field written f(z, t): the series (and odeint) calls fields f(t, z), time first."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(names) >= 2 and names[0] in _STATE_NAMES and names[1] in _TIME_NAMES:
        raise hint(f"{what} takes ({names[0]}, {names[1]}): fields in this series are written "
                   "f(t, z), time first, which is how odeint and this check call them.",
                   "Swap the two parameters (and the arguments where you call it).")


def _shape(hint: _Hint, value, expected: tuple, what: str, advice: str = "") -> None:
    if tuple(value.shape) != tuple(expected):
        raise hint(f"Wrong shape for {what}: expected {tuple(expected)}, got "
                   f"{tuple(value.shape)}. {advice}".strip())


def _close(x, y) -> bool:
    """Equal at float32 precision: accepts answers computed in float32 (or partly so)."""
    if not torch.is_tensor(x) or tuple(x.shape) != tuple(y.shape):
        return False
    tol = 1e-5 if x.dtype == F64 else 1e-4
    return torch.allclose(x.detach().double(), y.detach().double(), rtol=tol, atol=tol)


@contextlib.contextmanager
def _watch_calls(functions: dict):
    """Record which of ``functions`` ({function: name}) run, by whatever route they are
    reached (imported under another name, through a wrapper)."""
    codes = {f.__code__: name for f, name in functions.items()}
    seen: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.append(codes[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


@contextlib.contextmanager
def _watch_autograd():
    """Record whether autograd saved any tensor for a backward pass, or was asked for one."""
    import torch.autograd.functional as taf

    watched = {torch.autograd.grad: "torch.autograd.grad",
               torch.autograd.backward: "backward()", taf.vjp: "autograd.functional.vjp",
               taf.jacobian: "autograd.functional.jacobian"}
    for name in ("vjp", "jacrev", "grad"):
        function = getattr(torch.func, name, None)
        if hasattr(function, "__code__"):
            watched[function] = f"torch.func.{name}"
    with _watch_calls(watched) as seen:
        def pack(t):
            seen.append("a tensor that requires grad")
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield seen


def _check(function):
    """Mark a check function: a float32/float64 clash that it did not handle itself becomes a
    hint naming the clash, never an internal exception."""
    name = function.__name__

    @functools.wraps(function)
    def check(answer):
        try:
            return function(answer)
        except _DtypeTrouble as err:
            raise _Hint(name)(f"Your answer failed on a float32/float64 mismatch ({err}).",
                              "Make every new tensor with the dtype of the inputs you are "
                              "given, e.g. dtype=x.dtype.") from None

    return check


def _ok(message: str) -> bool:
    print(f"Well done: {message}")
    return True


# --- notebook 00 -------------------------------------------------------------------------------


def _family_slope(t):
    """The slope of the curve e^(1 - cos t) at the times t, by autograd (the check knows the
    curve, not its derivative)."""
    with torch.enable_grad():
        t = t.detach().clone().requires_grad_(True)
        curve = torch.exp(1 - torch.cos(t))
        (slope,) = torch.autograd.grad(curve.sum(), t)
    return curve.detach(), slope


@_check
def check_same_family_field(fn) -> bool:
    """Check ``fn(t, z)``, a field that never looks at z and whose solutions are the family
    e^(1 - cos t) + C.

    Verifies the slope at 23 times between -1 and 10 (against autograd's derivative of the
    curve), that the output has z's shape, that changing z does not change it, and that it
    also works the way a solver calls it: a 0-d t and an unbatched state of shape (D,).
    float32 or float64.
    """
    hint = _Hint("check_same_family_field")
    _expect_function(fn, "check_same_family_field", "fn(t, z)")
    _time_first(hint, fn, "Your field")

    def trial(dt):
        t = torch.linspace(-1.0, 10.0, 23, dtype=dt)
        z = torch.randn(23, generator=torch.Generator().manual_seed(0)).to(dt)
        out = _tensor(hint, _call(hint, fn, (t, z), "fn(t, z)"), "fn(t, z)")
        _shape(hint, out, z.shape, "fn(t, z)", "Return one slope per entry of z (a field "
               "that ignores z can still broadcast: multiply by torch.ones_like(z)).")
        curve, slope = _family_slope(t)
        if _close(out, slope):
            # The way odeint and fit_curves call a field: a 0-d time, a state of shape (D,).
            for D in (1, 3):
                t1, z1 = torch.tensor(2.0, dtype=dt), torch.full((D,), 0.5, dtype=dt)
                call = f"fn(t, z) for a 0-d t and z of shape ({D},)"
                one = _tensor(hint, _call(hint, fn, (t1, z1), call,
                                          "A solver passes one time (0-d) and the state "
                                          "(D,); the result must have the state's shape."),
                              call)
                _shape(hint, one, z1.shape, call, "A solver passes one time (0-d) and the "
                       "state (D,): return the slope once per entry of z (multiply by "
                       "torch.ones_like(z)).")
                if not _close(one, _family_slope(t1)[1].expand(D)):
                    raise hint(f"Your field is right for a batch of times but not for {call}, "
                               "the way a solver calls it.")
            return _ok("your field does not involve z, and every solution of it is "
                       "e^(1 - cos t) + C: the same family as dz/dt = sin t (z - c).")
        if _close(out, -slope):
            raise hint("The sign is flipped.",
                       "d/dt (1 - cos t) = +sin t, and the chain rule keeps that sign.")
        if _close(out, curve):
            raise hint("You returned the curve e^(1 - cos t) itself, not its slope.",
                       "Differentiate it with the chain rule.")
        try:
            swapped = fn(z, t)
        except Exception:  # noqa: BLE001 (any failure: the reader's field is not swapped)
            swapped = None
        if _close(swapped, slope):
            raise hint("Your field reads its arguments as (z, t): this series writes fields "
                       "f(t, z), time first, which is how odeint and this check call them.",
                       "Swap the two parameters.")
        moved = _tensor(hint, _call(hint, fn, (t, z + 1.0), "fn(t, z)"), "fn(t, z)")
        if not _close(moved, out):
            if _close(out, torch.sin(t) * z):
                raise hint("Your field depends on z: sin t · z is the toy problem's field "
                           "sin t (z - c) with c = 0.",
                           "The exercise asks for a field without z: on a curve of the family, "
                           "what is the slope as a function of t alone?")
            if _close(out, z * torch.exp(-torch.cos(t))):
                raise hint("That field, z e^(-cos t), does not generate the family "
                           "e^(1 - cos t) + C (try it on C = 1).",
                           "Differentiate the curve instead.")
            raise hint("Your field changes when z changes; the exercise asks for one that "
                       "depends on t only.")
        raise hint("Wrong values: your field does not match the slope of e^(1 - cos t).",
                   f"At t = 2 the slope of the curve is {slope[9].item():.4f}, yours is "
                   f"{out[9].item():.4f}.")

    return _in_either_precision(hint, trial)


@_check
def check_midpoint_step(fn) -> bool:
    """Check ``fn(f, t, z, h)``, one midpoint step for dz/dt = f(t, z).

    Verifies the new state on a batch of 2-D states, that z is not changed in place, the
    shape, and second order (the error on dz/dt = -z drops by about 4 when h halves).
    float32 or float64.
    """
    hint = _Hint("check_midpoint_step")
    _expect_function(fn, "check_midpoint_step", "fn(f, t, z, h)")

    def f(t, z):  # depends on both t and z, so every wrong variant gives a different value
        return torch.cos(2 * t) * z + torch.sin(t) - 0.3 * z**2

    def rk(t, z, h, a, b, c, field=f):
        """One explicit Runge-Kutta step of ``field`` from its Butcher tableau (a, b, c)."""
        ks = []
        for i, ci in enumerate(c):
            ks.append(field(t + ci * h, z + h * sum(aij * k for aij, k in zip(a[i], ks))))
        return z + h * sum(bi * k for bi, k in zip(b, ks))

    tableau = ([[], [0.5]], [0.0, 1.0], [0.0, 0.5])

    def trial(dt):
        t, h = torch.tensor(0.3, dtype=dt), 0.2
        z = torch.tensor([[1.0, -0.5], [0.2, 2.0], [0.0, 0.7]], dtype=dt)
        z_before = z.clone()
        out = _tensor(hint, _call(hint, fn, (f, t, z, h), "fn(f, t, z, h)"), "fn(f, t, z, h)")
        if not torch.equal(z, z_before):
            raise hint("Your step changed z in place (e.g. `z += ...`).",
                       "Build a new tensor, so that the caller's z stays the state at time t.")
        _shape(hint, out, z.shape, "the new state",
               "A step maps a state to a state of the same shape.")
        new = rk(t, z, h, *tableau)
        k1 = f(t, z)
        if _close(out, new):
            # One more problem with a known answer: dz/dt = -z over [0, 1] in 10 and 20 steps;
            # a second-order method's error drops by about 4 when h halves.
            def decay(t, z):
                return -z

            errors = []
            for n in (10, 20):
                zn = torch.ones(1, dtype=dt)
                for k in range(n):
                    zn = _call(hint, fn, (decay, torch.tensor(k / n, dtype=dt), zn, 1.0 / n),
                               "fn(f, t, z, h)")
                errors.append((zn - math.exp(-1.0)).abs().item())
            ratio = errors[0] / errors[1]
            if not 3.5 < ratio < 4.5:
                raise hint(f"Halving h divided the error by {ratio:.2f}, not about 4 as a "
                           "second-order method should.")
            return _ok(f"halving h divides the error by {ratio:.2f} (about 4): a second-order "
                       "step.")
        if _close(out, (new - z) / h):
            raise hint("You returned a slope, not the new state.",
                       "A step moves z by h times a slope.")
        if _close(out, z + h * k1):
            raise hint("That is the Euler step: first order, its error only halves when h "
                       "halves.",
                       "The midpoint rule takes the slope once more, in the middle of the "
                       "step: half a step in time, at the state half an Euler step away.")
        if _close(out, rk(t, z, h, [[], [0.5]], [0.0, 1.0], [0.0, 0.0])):
            raise hint("The state of the second slope is right but its time is not.",
                       "Evaluate it in the middle of the step in time, too.")
        if _close(out, rk(t, z, h, [[], [1.0]], [0.0, 1.0], [0.0, 0.5])):
            raise hint("The predictor goes a full step: the midpoint state is half a step "
                       "away.")
        if _close(out, z + (new - z) / h):
            raise hint("The update is missing the factor h.")
        if _close(out, rk(t, z, h, [[], [1.0]], [0.5, 0.5], [0.0, 1.0])):
            raise hint("That is Heun's method (the trapezoid rule), also second order, but not "
                       "the midpoint rule.",
                       "The midpoint rule uses one slope only, taken at the middle of the "
                       "step.")
        try:  # the reader's step calls f(z, t): state first
            swapped = rk(t, z, h, *tableau, field=lambda t_, z_: f(z_, t_))
        except RuntimeError:
            swapped = None
        if swapped is not None and _close(out, swapped):
            raise hint("Your step calls f with the state first: fields in this series are "
                       "called f(t, z), time first.")
        raise hint("Wrong new state: it matches none of the usual slips (Euler's step, a slope "
                   "instead of a state, the wrong time or the wrong predictor).",
                   "Check each of your two slopes: at which time and which state is it taken, "
                   "and which one moves z over the whole step?")

    return _in_either_precision(hint, trial)


# --- notebook 01 -------------------------------------------------------------------------------


def _as_number(value):
    """One Python float from a number, a 1-element tensor or NumPy array; None otherwise."""
    if torch.is_tensor(value):
        return float(value.detach().reshape(-1)[0]) if value.numel() == 1 else None
    if type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1:
        return float(value.reshape(-1)[0])
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


@_check
def check_dL_dt0(fn) -> bool:
    """Check ``fn(lam, z0, t0, t1)`` (Python floats in, one number out): dL/dt0 for
    dz/dt = lam z, L = z(t1).

    Verifies three cases with both signs of lam and z0 against autograd through the exact
    solution, and recognises common slips (the derivative with respect to t1 instead of t0, a
    missing factor, the adjoint alone, the exponent's sign). Returns of float32 precision (a
    float32 tensor, a 1-element NumPy array) are accepted.
    """
    hint = _Hint("check_dL_dt0")
    _expect_function(fn, "check_dL_dt0", "fn(lam, z0, t0, t1)")
    cases = [(0.7, 1.5, 0.2, 1.3), (-1.2, 2.0, -0.5, 1.0), (0.3, -0.8, 1.0, 3.0)]
    hints = {
        "t1": ("Your value is dL/dt1, the derivative with respect to the end time (for this "
               "time-invariant ODE it is exactly minus dL/dt0; a flipped sign gives it too).",
               "The exercise moves the start time t0: with lam > 0 and z0 > 0, starting later "
               "leaves z less time to grow, so z(t1) shrinks and dL/dt0 is negative."),
        "no lam": ("A factor lam is missing.", "f(z0) = lam z0 enters dL/dt0 as a factor."),
        "no z0": ("A factor z0 is missing.", "f(z0) = lam z0 enters dL/dt0 as a factor."),
        "adjoint": ("That is the adjoint a(t0) = dz(t1)/dz0 alone.",
                    "dL/dt0 multiplies it by minus the field at the start."),
        "exponent": ("The exponent's sign is wrong.", "z(t1) = e^(lam (t1 - t0)) z0."),
    }
    for lam, z0, t0, t1 in cases:
        got = _call(hint, fn, (lam, z0, t0, t1), "fn(lam, z0, t0, t1)")
        if got is None:
            raise hint("fn(lam, z0, t0, t1) returned None: is a `return` missing?")
        number = _as_number(got)
        if number is None:
            raise hint(f"Return one number, got {_describe(got)}.")
        # The reference: autograd through the exact solution L = z(t1) = z0 e^(lam (t1 - t0)).
        start = torch.tensor(t0, dtype=F64, requires_grad=True)
        with torch.enable_grad():
            (ref,) = torch.autograd.grad(z0 * torch.exp(lam * (t1 - start)), start)
        ref, grow = ref.item(), math.exp(lam * (t1 - t0))
        if math.isclose(number, ref, rel_tol=1e-5, abs_tol=1e-9):
            continue
        wrong = {"t1": -ref, "no lam": ref / lam, "no z0": ref / z0, "adjoint": grow,
                 "exponent": ref / grow**2}
        for key, value in wrong.items():
            if math.isclose(number, value, rel_tol=1e-5, abs_tol=1e-9):
                raise hint(*hints[key])
        raise hint(f"For lam={lam}, z0={z0}, t0={t0}, t1={t1} your value {number:.6f} is "
                   "wrong, and it is none of the usual slips (a sign, a missing factor, the "
                   "adjoint alone).",
                   "Differentiate z(t1) = e^(lam (t1 - t0)) z0 with respect to t0, or use "
                   "the rule for dL/dt0 of section 4.")
    return _ok("dL/dt0 matches on all three cases, both signs of lam and z0: starting later "
               "leaves less time to grow (or to shrink).")


@_check
def check_vjp_tanh(fn) -> bool:
    """Check ``fn(W, z, a)`` for f(z) = tanh(W z): the pair (a^T df/dz, a^T df/dW), computed
    by hand.

    Verifies both products against autograd for a 2x2 and a 3x3 W, their shapes (D,) and
    (D, D), and that the answer does not use autograd itself. float32 or float64.
    """
    hint = _Hint("check_vjp_tanh")
    _expect_function(fn, "check_vjp_tanh", "fn(W, z, a)")

    def trial(dt):
        gen = torch.Generator().manual_seed(1)
        for D in (2, 3):
            W, z, a = (torch.randn(*shape, generator=gen).to(dt)
                       for shape in ((D, D), (D,), (D,)))
            with _watch_autograd() as used:
                out = _call(hint, fn, (W, z, a), "fn(W, z, a)")
            if used:
                raise hint(f"Your answer uses autograd ({used[0]}); this exercise asks for the "
                           "two products by hand, with tensor operations only.",
                           "Write the Jacobian of tanh(W z) as a diagonal matrix times W, then "
                           "multiply a from the left.")
            if not isinstance(out, tuple | list) or len(out) != 2:
                raise hint(f"Return a pair (a^T df/dz, a^T df/dW), got {_describe(out)}.")
            gz, gW = (_tensor(hint, v, "each returned product") for v in out)
            _shape(hint, gz, (D,), "a^T df/dz", "It has one entry per entry of z.")
            _shape(hint, gW, (D, D), "a^T df/dW", "It has one entry per entry of W.")
            # The references, from autograd: both products, and u = a^T dtanh/dp at p = W z.
            with torch.enable_grad():
                Wl, zl = W.clone().requires_grad_(True), z.clone().requires_grad_(True)
                ok_z, ok_W = torch.autograd.grad(torch.tanh(Wl @ zl), (zl, Wl), a)
                p = (W @ z).requires_grad_(True)
                (u,) = torch.autograd.grad(torch.tanh(p), p, a)
            if _close(gz, ok_z) and _close(gW, ok_W):
                continue
            if _close(gz, -ok_z) or _close(gW, -ok_W):
                raise hint("The sign is flipped.",
                           "Return +a^T df/dz and +a^T df/dW; adjoint_solve puts the minus of "
                           "da/dt = -a^T df/dz itself.")
            if _close(gz, W.T @ a) or _close(gW, torch.outer(a, z)):
                raise hint("tanh's derivative is missing.",
                           "The chain rule puts tanh' at W z between a and the linear map.")
            if not _close(gz, ok_z):
                if _close(gz, W @ u):
                    raise hint("a^T df/dz is transposed.",
                               "Write the row vector a^T times the Jacobian, then transpose "
                               "the result into a column: which of W and W^T is left?")
                raise hint("a^T df/dz is wrong (a^T df/dW may be right).",
                           "Write the Jacobian of tanh(W z) with respect to z as a product of "
                           "two matrices, then multiply a^T from the left.")
            if _close(gW, ok_W.T):
                raise hint("a^T df/dW is transposed.",
                           "Entry (i, j) goes with W's entry (i, j): which index belongs to "
                           "the output f_i, and which to z_j?")
            raise hint("a^T df/dW is wrong (a^T df/dz is right).",
                       "f_i depends on W_ij through (W z)_i only: differentiate f_i with "
                       "respect to W_ij, then weight by a_i.")
        return _ok("both vector-Jacobian products match autograd, for 2x2 and 3x3 W, computed "
                   "without it.")

    return _in_either_precision(hint, trial)


# --- notebook 02 -------------------------------------------------------------------------------


@_check
def check_windowed_field(fn) -> bool:
    """Check ``fn(f, t0, delta)``, which returns a field g(s, z) on s in [0, 1] for a batch of
    windows [t0_b, t0_b + delta].

    Verifies g against precomputed values on 4 windows (t0 of shape (B,), z (B, 1), s 0-d, f
    taking per-sample times of shape (B,)) and the shape of g(s, z). float32 or float64.
    """
    hint = _Hint("check_windowed_field")
    _expect_function(fn, "check_windowed_field", "fn(f, t0, delta)")

    def f(t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])  # a 0-d time too
        return torch.sin(t)[:, None] * z + torch.cos(2 * t)[:, None]

    # g(0.35, z) for the four windows below, computed once in float64.
    expected = [1.7177843557029835, 0.34139388661611875, 1.660952820884811, 1.8096043846844114]

    def trial(dt):
        t0 = torch.tensor([-0.5, 1.0, 2.5, 7.0], dtype=dt)
        delta = 1.7
        z = torch.tensor([[0.3], [1.2], [-0.4], [2.0]], dtype=dt)
        s = torch.tensor(0.35, dtype=dt)
        g = _call(hint, fn, (f, t0, delta), "fn(f, t0, delta)")
        if not callable(g):
            raise hint(f"Return a function g(s, z) (or an nn.Module), got {_describe(g)}.")
        _time_first(hint, g, "Your g")
        out = _tensor(hint, _call(hint, g, (s, z), "g(s, z)"), "g(s, z)")
        _shape(hint, out, z.shape, "g(s, z)", "One slope per window and state entry.")
        ref = torch.tensor(expected, dtype=dt)[:, None]
        if _close(out, ref):
            return _ok("all windows now share s in [0, 1], and each still follows f over its "
                       "own stretch of time.")

        def slope_at(time):  # f at the given time, rescaled to the window's length
            return delta * f(time, z)

        if _close(out, ref / delta):
            raise hint("A factor is missing: the time is right but the slope is not rescaled.",
                       "By the chain rule dz/ds = dz/dt · dt/ds.")
        if _close(out, slope_at(s)):
            raise hint("f is evaluated at s, but it needs the real time.",
                       "The real time runs from t0 to t0 + delta as s runs from 0 to 1.")
        if _close(out, slope_at(s * delta)):
            raise hint("The time misses t0: at s = 0 the real time is each window's start, "
                       "not 0.")
        if _close(out, slope_at(t0 + s)):
            raise hint("The time is t0 + s, but s runs over [0, 1] while the window is delta "
                       "long.")
        if _close(out, slope_at(t0)):
            raise hint("The time is frozen at t0; it should move with s.")
        raise hint("Wrong values, and none of the usual slips (a missing factor, the wrong "
                   "time).",
                   "Write the real time t as a function of s first, then apply the chain rule "
                   "dz/ds = dz/dt · dt/ds.")

    return _in_either_precision(hint, trial)


@_check
def check_aug(fn) -> bool:
    """Check ``fn(func, t, z, a)``, the adjoint's augmented dynamics for a batch: the triple
    (dz/dt, da/dt, [dg/dt per parameter]).

    Verifies all three against autograd on a small ODENet with z and a of shape (5, 2), their
    shapes (those of z, a and each parameter of ``func``), and that a second call gives the
    same parameter gradients. float32 or float64.
    """
    from .models import ODENet  # local: keeps this module's import light

    hint = _Hint("check_aug")
    _expect_function(fn, "check_aug", "fn(func, t, z, a)")

    def trial(dt):
        with torch.random.fork_rng():  # a fixed network, without touching the reader's RNG
            torch.manual_seed(0)
            func = ODENet(state_dim=2, hidden=(8,)).to(dt)
        theta = [*func.parameters()]
        gen = torch.Generator().manual_seed(2)
        z = torch.randn(5, 2, generator=gen).to(dt)
        a = torch.randn(5, 2, generator=gen).to(dt)
        t = torch.tensor(0.4, dtype=dt)

        # The references: dz/dt by a plain call; da/dt from the full Jacobian of the batch;
        # the parameter channels as gradients of the scalar -sum(a * f).
        with torch.no_grad():
            ref_f = func(t, z)
        J = torch.autograd.functional.jacobian(lambda zz: func(t, zz), z)  # (5, 2, 5, 2)
        ref_a = -torch.einsum("bi,bicj->cj", a, J)
        with torch.enable_grad():
            ref_p = list(torch.autograd.grad(-(a * func(t, z)).sum(), theta))
        params = theta

        out = _call(hint, fn, (func, t, z, a), "fn(func, t, z, a)")
        if not isinstance(out, tuple | list) or len(out) != 3:
            raise hint("Return three things: (dz/dt, da/dt, list of dg/dt per parameter), got "
                       f"{_describe(out)}.")
        dz, da, dp = out
        dz, da = _tensor(hint, dz, "dz/dt"), _tensor(hint, da, "da/dt")
        _shape(hint, dz, z.shape, "dz/dt", "It is f(t, z) for the whole batch.")
        _shape(hint, da, a.shape, "da/dt", "The adjoint has the shape of z, one row per window.")
        dp = list(dp) if isinstance(dp, tuple | list) else [dp]
        if len(dp) != len(params):
            raise hint(f"Return one gradient per parameter of func ({len(params)}), got "
                       f"{len(dp)}.")
        for p, g in zip(params, dp):
            _shape(hint, _tensor(hint, g, "each parameter gradient"), p.shape,
                   "a parameter's dg/dt", "Each has its parameter's shape, summed over the "
                   "batch.")
        if not _close(dz, ref_f):
            raise hint("dz/dt should be f(t, z) itself.")
        if _close(da, -ref_a) or all(_close(g, -r) for g, r in zip(dp, ref_p)):
            raise hint("The sign is flipped.",
                       "da/dt = -a^T df/dz and dg/dt = -a^T df/dtheta.")
        ones = torch.autograd.grad(func(t, z.clone().requires_grad_(True)).sum(), params[0])[0]
        if _close(dp[0], -ones) or _close(dp[0], ones):
            raise hint("The parameter gradients are those of f.sum(), i.e. 1^T df/dtheta: the "
                       "adjoint a does not weight them.",
                       "Weight the outputs by the adjoint (torch.autograd.grad's grad_outputs "
                       "argument).")
        if not _close(da, ref_a):
            raise hint("da/dt is wrong (dz/dt is right).",
                       "It is -a^T df/dz, one vector-Jacobian product.")
        for g, r in zip(dp, ref_p):
            if not _close(g, r):
                raise hint("A parameter gradient is wrong.",
                           "dg/dt = -a^T df/dtheta, summed over the batch (autograd.grad does "
                           "the sum for you).")
        again = _call(hint, fn, (func, t, z, a), "fn(func, t, z, a)")[2]
        if not all(_close(g, r) for g, r in zip(again, ref_p)):
            raise hint("Your second call gave different parameter gradients: .grad accumulates "
                       "over backward() calls.",
                       "Use torch.autograd.grad, which returns fresh gradients.")
        return _ok("one vector-Jacobian product gives all of [f, -a^T df/dz, -a^T df/dtheta] "
                   "for the whole batch.")

    return _in_either_precision(hint, trial)


# --- notebook 03 -------------------------------------------------------------------------------


@_check
def check_sincos_field(cls) -> bool:
    """Check ``cls``, an nn.Module class built as ``cls()`` with ``forward(t, z)``, whose
    network sees z and the time only through sin t and cos t.

    Verifies: trainable parameters; t 0-d and per-sample (B,), z (B, 1), output of z's shape;
    2 pi-periodic in t; depends on z, on sin t and on cos t. Any float dtype of the model.
    """
    hint = _Hint("check_sincos_field")
    _expect_class(cls, "check_sincos_field", "cls()")
    with torch.random.fork_rng():  # a fixed network, without touching the reader's RNG state
        torch.manual_seed(0)
        model = _call(hint, cls, (), "cls()")
    if not isinstance(model, nn.Module) or not list(model.parameters()):
        raise hint(f"cls() should build an nn.Module with trainable parameters, got "
                   f"{_describe(model)}.")
    _time_first(hint, model.forward, "Your forward")
    dt = next(model.parameters()).dtype
    z = torch.linspace(-1.0, 3.0, 6, dtype=dt).reshape(6, 1)
    t_each = torch.linspace(0.3, 9.0, 6, dtype=dt)

    def run(t, z_, what="per-sample t of shape (B,)"):
        broadcast = ("A solver passes one time for the whole batch (0-d): give each row of z "
                     "its copy of t before you concatenate, e.g. with Tensor.expand."
                     if t.ndim == 0 else "")
        out = _call(hint, model, (t, z_), f"forward(t, z) for {what} and z of shape (6, 1)",
                    broadcast, more_if=r"size|shape|dimension|broadcast|match|expand")
        out = _tensor(hint, out, "forward(t, z)")
        _shape(hint, out, z.shape, "forward(t, z)", "dz/dt has the shape of z.")
        return out

    with torch.no_grad():
        try:
            run(torch.tensor(1.3, dtype=dt), z, "a 0-d t")
            base = run(t_each, z)
        except _DtypeTrouble as err:
            raise hint(f"forward(t, z) failed on a dtype mismatch ({err}).",
                       f"The check passes t and z in your model's dtype, {dt}; build new "
                       "tensors with dtype=z.dtype.") from None
        tol = {"atol": 1e-4, "rtol": 1e-4}
        if not torch.allclose(run(t_each + 2 * math.pi, z), base, **tol):
            raise hint("f(t + 2 pi, z) differs from f(t, z): the network still sees t itself.",
                       "Feed it sin t and cos t instead, which repeat every 2 pi.")
        if torch.allclose(run(t_each, z + 0.5), base, atol=1e-6):
            raise hint("Your field ignores z.")
        if torch.allclose(run(t_each + 1.0, z), base, atol=1e-6):
            raise hint("Your field ignores t.")
        if torch.allclose(run(math.pi - t_each, z), base, atol=1e-6):
            raise hint("Your field gives the same value at t and pi - t: it ignores cos t.",
                       "The network's input is (z, sin t, cos t); sin t alone cannot tell "
                       "t from pi - t.")
        if torch.allclose(run(-t_each, z), base, atol=1e-6):
            raise hint("Your field gives the same value at t and -t: it ignores sin t.",
                       "The network's input is (z, sin t, cos t); cos t alone cannot tell "
                       "t from -t.")
    return _ok("the field is 2 pi-periodic in t, depends on z, sin t and cos t, and has z's "
               "shape.")


@_check
def check_window_targets(fn) -> bool:
    """Check ``fn(t0, c, n_obs, window)``: the true z at n_obs evenly spaced times of each
    window [t0_b, t0_b + window].

    Verifies the values for 3 windows and n_obs = 4, and the shape (n_obs, B, 1): time first,
    as odeint returns. float32 or float64.
    """
    hint = _Hint("check_window_targets")
    _expect_function(fn, "check_window_targets", "fn(t0, c, n_obs, window)")

    def trial(dt):
        t0 = torch.tensor([-1.0, 0.5, 4.0], dtype=dt)
        c = torch.tensor([0.0, 0.7, -0.3], dtype=dt)
        n_obs, window = 4, 1.5
        out = _call(hint, fn, (t0, c, n_obs, window), "fn(t0, c, n_obs, window)")
        out = _tensor(hint, out, "fn(t0, c, n_obs, window)")
        if tuple(out.shape) in {(3, 4, 1), (3, 4)}:
            raise hint("Wrong shape: time goes first, (n_obs, B, 1), like the output of odeint, "
                       "so that the two can be compared entry by entry.")
        _shape(hint, out, (n_obs, 3, 1), "the targets", "Time first, then the batch, then the "
               "state dimension 1.")

        def truth(offsets, c_=c):  # the true curves at t0 + each offset: (n_obs, B, 1)
            offsets = torch.tensor(offsets, dtype=dt)
            return toy_solution(t0[None, :] + offsets[:, None], c_[None, :]).unsqueeze(-1)

        # n_obs = 4 times over a window of 1.5, as offsets from t0
        if _close(out, truth([0.0, 0.5, 1.0, 1.5])):
            return _ok("n_obs points per window, from t0 to t0 + window, both ends included.")
        if _close(out, truth([0.0, 0.375, 0.75, 1.125])):
            raise hint("Your last time stops short of t0 + window: n_obs counts both ends.")
        if _close(out, truth([0.0, 1 / 3, 2 / 3, 1.0])):
            raise hint("The times ignore `window`: they run from t0 to t0 + window.")
        if _close(out, truth([0.0, 0.5, 1.0, 1.5], c_=torch.zeros(3, dtype=dt))):
            raise hint("The offset c is missing from the curves.")
        raise hint("Wrong values, and none of the usual slips (the last time, `window`, the "
                   "offset c).",
                   "Print your times for one window and compare: n_obs evenly spaced times "
                   "from its start to its end, both included; then the true curve of that "
                   "window's c at those times, arranged time first.")

    return _in_either_precision(hint, trial)


# --- notebook 04 -------------------------------------------------------------------------------


@_check
def check_checkpoint_times(fn) -> bool:
    """Check ``fn(t0, t1, lam)`` (Python floats in): checkpoint times for the rule
    dt <= 5 / lam, as a 1-D tensor.

    Verifies on four (t0, t1, lam): starts at t0 and ends at t1, increasing, evenly spaced,
    every spacing within the rule, and no more checkpoints than the rule needs. float32 or
    float64 (compared at the tensor's own precision).
    """
    hint = _Hint("check_checkpoint_times")
    _expect_function(fn, "check_checkpoint_times", "fn(t0, t1, lam)")
    for t0, t1, lam in [(0.0, 2.0, 50.0), (0.0, 2.0, 20.0), (0.5, 1.0, 1.0), (0.0, 3.0, 7.0)]:
        try:
            out = _call(hint, fn, (t0, t1, lam), "fn(t0, t1, lam)")
        except _DtypeTrouble as err:
            raise hint(f"fn(t0, t1, lam) failed on a dtype mismatch: {err}.") from None
        out = _tensor(hint, out, "fn(t0, t1, lam)")
        if out.ndim != 1 or out.numel() < 2:
            raise hint(f"Return a 1-D tensor of at least two times, t0 ... t1; got shape "
                       f"{tuple(out.shape)}.")
        if not out.is_floating_point():
            raise hint(f"The times are {out.dtype}: checkpoint times need a float tensor.")
        eps = 1e-9 if out.dtype == F64 else 1e-5  # the tensor's own precision
        times = out.detach().double()
        span = max(abs(t0), abs(t1), 1.0)
        if abs(times[0].item() - t0) > eps * span or abs(times[-1].item() - t1) > eps * span:
            raise hint(f"For t0 = {t0:g}, t1 = {t1:g} your times run from {times[0].item():.6g} "
                       f"to {times[-1].item():.6g}: they must start at t0 and end at t1.",
                       "The backward solve runs over the whole interval.")
        gaps = times.diff()
        if (gaps <= 0).any():
            raise hint("The times must increase.")
        if (gaps.max() - gaps.min()).item() > 10 * eps * span:
            raise hint(f"For lam = {lam:g} your spacings range from {gaps.min().item():.4g} to "
                       f"{gaps.max().item():.4g}: the exercise asks for evenly spaced times.",
                       "Evenly spaced times satisfy the rule with the fewest checkpoints.")
        limit = 5.0 / lam
        if gaps.max().item() > limit * (1 + 10 * eps):
            raise hint(f"For lam = {lam:g} a spacing of {gaps.max().item():.4g} is too wide for "
                       "the rule.",
                       "The error grows like e^(lam dt) between checkpoints, so the spacing "
                       "must shrink as lam grows.")
        needed = 1  # the fewest equal intervals within the rule, counted up one by one
        while (t1 - t0) / needed > limit * (1 + 1e-9):
            needed += 1
        if len(gaps) > needed:
            raise hint(f"For lam = {lam:g} on [{t0:g}, {t1:g}], {len(gaps)} intervals are more "
                       "than the rule needs; each checkpoint stores a state.",
                       f"{needed} intervals are enough here.")
    return _ok("dt <= 5 / lam with the fewest evenly spaced checkpoints: memory grows with "
               "lam (t1 - t0).")


@_check
def check_speed_penalty(fn) -> bool:
    """Check ``fn(func, t, z)``: the batch's squared-speed penalty for a field ``func``.

    Verifies the value for t of shape (B,) and z (B, D), that it is a 0-d tensor, and that
    its gradient reaches the field's parameters correctly. float32 or float64.
    """
    hint = _Hint("check_speed_penalty")
    _expect_function(fn, "check_speed_penalty", "fn(func, t, z)")

    class Field(nn.Module):
        def __init__(self, dt):
            super().__init__()
            self.A = nn.Parameter(torch.tensor([[-0.5, 2.0], [-1.0, 0.3]], dtype=dt))

        def forward(self, t, z):
            return (z @ self.A.T) * (1 + t)[:, None]

    def trial(dt):
        func = Field(dt)
        t = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=dt)
        z = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.2, 0.3], [-0.7, 0.4]], dtype=dt)
        out = _call(hint, fn, (func, t, z), "fn(func, t, z)")
        if isinstance(out, float):
            raise hint("You returned a Python float (.item()?): the penalty must stay a tensor "
                       "so that loss.backward() reaches the parameters.")
        out = _tensor(hint, out, "fn(func, t, z)")
        _shape(hint, out, (), "the penalty", "It is one number for the whole batch.")
        speed = func(t, z).detach()
        sq = torch.linalg.vector_norm(speed, dim=1) ** 2  # |f(t_b, z_b)|^2, one per row
        B = len(z)

        def reference(v):  # the penalty as a dot product of the rows with themselves
            return torch.einsum("bd,bd->", v, v) / B

        if _close(out, reference(speed)):
            if not out.requires_grad:
                raise hint("The value is right but detached from the parameters; don't use "
                           "torch.no_grad() or .detach() here.")
            (g,) = torch.autograd.grad(out, func.A)
            (g_ref,) = torch.autograd.grad(reference(func(t, z)), func.A)
            if not _close(g, g_ref):
                raise hint("The value is right but its gradient is not; compute it from "
                           "func(t, z) directly.")
            return _ok("the batch's mean squared speed, and its gradient reaches the field's "
                       "parameters.")
        if _close(out, sq.sum()):
            raise hint("You summed over the batch, so the penalty's weight would depend on the "
                       "batch size.")
        if _close(out, sq.sum() / speed.numel()):
            raise hint("You averaged over the state's D components too (an MSE).",
                       "Sum the squares over the state dimension; average over the batch only.")
        if _close(out, sq.sqrt().sum() / B):
            raise hint("That is the mean speed |f|; the penalty is on its square.")
        if _close(out, reference(z)):
            raise hint("You penalised |z|^2, the size of the state, not the speed.",
                       "The speed |f(t, z)| is what makes the solver take many steps.")
        raise hint("Wrong value, and none of the usual slips (a sum over the batch, an MSE, "
                   "the speed unsquared, |z|).",
                   "Compare with the exercise's definition: which dimension is summed, which "
                   "averaged, and what is squared?")

    return _in_either_precision(hint, trial)


# --- notebook 05 -------------------------------------------------------------------------------


@_check
def check_cubic_field(fn) -> bool:
    """Check ``fn(A, z)``: the spiral's field A z^(o3) for a batch of states, one state per
    row.

    Verifies the values for z of shape (5, 2) and (5, 3) with A (D, D), and the shape of the
    result (that of z). float32 or float64.
    """
    hint = _Hint("check_cubic_field")
    _expect_function(fn, "check_cubic_field", "fn(A, z)")

    def trial(dt):
        A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=dt)
        B_ = torch.tensor([[0.3, -1.2, 0.5], [0.8, 0.1, -0.4], [-0.6, 0.9, 0.2]], dtype=dt)
        gen = torch.Generator().manual_seed(3)
        for M in (A, B_):
            z = torch.randn(5, M.shape[0], generator=gen).to(dt)
            out = _call(hint, fn, (M, z), "fn(A, z)", "z holds one state per row, not one "
                        "per column: work out row b of the result from row b of z alone.",
                        more_if=r"size|shape|dimension|match|mat1|mat2")
            out = _tensor(hint, out, "fn(A, z)")
            _shape(hint, out, z.shape, "the field", "One velocity per state: the shape of z.")

            def apply(matrix, states):  # row b: matrix times state b, one entry at a time
                return (matrix[None, :, :] * states[:, None, :]).sum(-1)

            if _close(out, apply(M, z * z * z)):
                continue
            if _close(out, apply(M.T, z * z * z)):
                raise hint("A is transposed.",
                           "Check one state by hand: entry i of the velocity sums A's row i "
                           "times the cubed state.")
            if _close(out, apply(M, z) ** 3):
                raise hint("You cubed after multiplying by A: the field applies A to the cubed "
                           "state.")
            if _close(out, apply(M, z)):
                raise hint("The cube is missing: that is the linear field A z, whose spiral "
                           "turns at the same speed everywhere.")
            raise hint("Wrong values, and none of the usual slips (A transposed, the cube "
                       "missing or in the wrong place).",
                       "Compute one row by hand (a single state z_b) and compare it with row b "
                       "of your result.")
        return _ok("row b is A z_b^(o3), for 2-D and 3-D states.")

    return _in_either_precision(hint, trial)


def _package_shortcuts():
    """The package's own helpers that an exercise asks the reader to write: {function: name}."""
    from torch.distributions import kl as torch_kl

    from . import cnf, latent

    return {latent.normal_kl: "neuralode_helpers' normal_kl",
            torch_kl.kl_divergence: "torch.distributions.kl_divergence",
            cnf.exact_divergence: "neuralode_helpers' exact_divergence",
            cnf.hutchinson_divergence: "neuralode_helpers' hutchinson_divergence"}


def _shortcut_hint(hint, used, what):
    return hint(f"Your answer calls {used[0]}: the exercise asks you to write {what} yourself "
                "(the check compares with the package).")


@_check
def check_kl_to_prior(fn) -> bool:
    """Check ``fn(mu, logvar, prior_logvar)``: KL(N(mu, diag e^logvar) || N(0, e^prior_logvar I))
    for each series, written without the package's or torch's KL functions.

    Verifies the values for mu and logvar of shape (6, 4) against
    torch.distributions.kl_divergence, the shape (B,), and that q = prior gives 0, with
    prior_logvar = 0 (an answer of two arguments is checked that far, then told to take the
    prior's log-variance), then for prior_logvar = -1 and 0.7. float32 or float64.
    """
    import inspect

    from torch.distributions import Normal, kl_divergence

    hint = _Hint("check_kl_to_prior")
    _expect_function(fn, "check_kl_to_prior", "fn(mu, logvar)")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # A wrapper's *args takes the third argument too.
    with_prior = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)

    def kl(mu, logvar, prior=None):
        call = "fn(mu, logvar, prior_logvar)" if with_prior else "fn(mu, logvar)"
        args = (mu, logvar) if not with_prior else (
            mu, logvar, torch.zeros((), dtype=mu.dtype) if prior is None else prior)
        return _call(hint, fn, args, call)

    def with_priors(dt, mu, logvar):
        for value in (-1.0, 0.7):
            prior = torch.tensor(value, dtype=dt)
            with _watch_calls(_package_shortcuts()) as used:
                out = kl(mu, logvar, prior)
            if used:
                raise _shortcut_hint(hint, used, "the closed form of the KL")
            out = _tensor(hint, out, "fn(mu, logvar, prior_logvar)")
            q = Normal(mu, (0.5 * logvar).exp())
            ref = kl_divergence(q, Normal(0.0, math.exp(0.5 * value))).sum(-1).to(dt)
            if _close(out, ref):
                continue
            if _close(out, kl_divergence(q, Normal(0.0, 1.0)).sum(-1)):
                raise hint(f"For prior_logvar = {value} your KL is the one to N(0, I): the "
                           "prior's variance is e^prior_logvar.")
            if _close(out, kl_divergence(q, Normal(0.0, math.exp(value))).sum(-1)):
                raise hint("You treated prior_logvar as the log of the prior's standard "
                           "deviation; it is the log of its variance.")
            raise hint(f"Right for the standard prior, wrong for prior_logvar = {value}.",
                       "Redo the derivation with p = N(0, v_p): E_q[x^2] = v + m^2 is now "
                       "divided by v_p, and log p has a log v_p term.")

    def trial(dt):
        gen = torch.Generator().manual_seed(4)
        mu = torch.randn(6, 4, generator=gen).to(dt)
        logvar = (1.5 * torch.randn(6, 4, generator=gen)).to(dt)
        with _watch_calls(_package_shortcuts()) as used:
            out = kl(mu, logvar)
        if used:
            raise _shortcut_hint(hint, used, "the closed form of the KL")
        out = _tensor(hint, out, "fn(mu, logvar)")
        ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
        ref = ref.to(dt)
        if out.shape == ():
            raise hint("You returned one number for the whole batch: return one KL per series, "
                       "shape (B,); the ELBO averages over the batch later.")
        if out.shape == mu.shape:
            raise hint("Wrong shape (B, L): one KL per series, shape (B,), is wanted.",
                       "The coordinates of q are independent, so their KLs add up.")
        _shape(hint, out, (6,), "the KL", "One number per series.")
        L = mu.shape[-1]
        std = (0.5 * logvar).exp()
        if _close(out, ref):
            zero = kl(*(torch.zeros(2, 3, dtype=dt),) * 2)
            if not _close(zero, torch.zeros(2, dtype=dt)):
                raise hint("KL(p || p) should be 0 for mu = 0, logvar = 0.")
            if with_prior:
                with_priors(dt, mu, logvar)
                return _ok("your KL matches torch.distributions.kl_divergence for the standard "
                           "prior and for priors of other variances, summed over the latent "
                           "dimensions, and is 0 when q is the prior.")
            # Section 3's closed form is the standard-prior case: the exercise asks for the
            # general prior, which a copy of that line does not give.
            raise hint("Right for the standard prior N(0, I). The exercise asks for "
                       "kl_to_prior(mu, logvar, prior_logvar): the KL to N(0, e^prior_logvar I), "
                       "with prior_logvar a third argument.")
        if _close(out, -ref):
            raise hint("The sign is flipped: a KL divergence is never negative.",
                       "The ELBO subtracts it: log-likelihood - KL.")
        if _close(out, ref / L):
            raise hint("You averaged over the latent dimensions.",
                       "The KL of independent coordinates is the sum of their KLs.")
        if _close(out, 2 * ref):
            raise hint("A constant factor is off: your values are exactly twice the KL.")
        as_log_std = kl_divergence(Normal(mu, logvar.exp()), Normal(0.0, 1.0)).sum(-1)
        if _close(out, as_log_std):
            raise hint("You treated logvar as the log of the standard deviation.",
                       "It is the log-variance: the variance is e^l, the std e^(l/2).")
        if _close(out, ref + 0.5 * L):
            raise hint("A constant term per dimension is missing: your KL of q = N(0, I) from "
                       "itself is not 0.")
        if _close(out, kl_divergence(Normal(0.0, 1.0), Normal(mu, std)).sum(-1)):
            raise hint("That is KL(N(0, I) || q), the other direction.",
                       "The ELBO has KL(q || p): the expectation is over q.")
        raise hint("Wrong values, and none of the usual slips (sign, factor, log-std for "
                   "log-variance, the direction of the KL).",
                   "Derive one coordinate: KL = E_q[log q - log p] with E_q[(x - m)^2] = v and "
                   "E_q[x^2] = v + m^2, then add over the coordinates.")

    return _in_either_precision(hint, trial)


# --- notebook 06 -------------------------------------------------------------------------------


def _mixing_field(z):
    # A 2-D field with non-zero off-diagonal Jacobian entries, so that summing the whole
    # Jacobian differs from its trace.
    z1, z2 = z[:, 0], z[:, 1]
    return torch.stack([torch.sin(z1) * z2 + z1**2, z1 * z2**2 + torch.tanh(z2)], dim=1)


@_check
def check_divergence(fn) -> bool:
    """Check ``fn(f, z)``: the exact divergence tr(df/dz) of a batched field, one value per
    state, written without the package's divergence helpers.

    ``f`` maps (B, D) to (B, D) row by row. Verifies the values for z of shape (7, 2) (a field
    whose Jacobian has off-diagonal terms) and the shape (B,). float32 or float64.
    """
    hint = _Hint("check_divergence")
    _expect_function(fn, "check_divergence", "fn(f, z)")

    def trial(dt):
        z = torch.randn(7, 2, generator=torch.Generator().manual_seed(6)).to(dt)
        with _watch_calls(_package_shortcuts()) as used:
            out = _call(hint, fn, (_mixing_field, z.clone()), "fn(f, z)")
        if used:
            raise _shortcut_hint(hint, used, "the divergence")
        out = _tensor(hint, out, "fn(f, z)")
        z1, z2 = z[:, 0], z[:, 1]
        d11, d12 = torch.cos(z1) * z2 + 2 * z1, torch.sin(z1)
        d21, d22 = z2**2, 2 * z1 * z2 + 1 - torch.tanh(z2) ** 2
        trace = d11 + d22
        if out.shape == z.shape:
            raise hint("Wrong shape (B, D): one divergence per state, shape (B,), is wanted.",
                       "Add the diagonal entries df_i/dz_i over i.")
        if out.shape == ():
            raise hint("You summed over the batch: return one divergence per state, shape "
                       "(B,).")
        _shape(hint, out, (7,), "the divergence", "One number per state.")
        if _close(out, trace):
            return _ok("tr(df/dz) = df1/dz1 + df2/dz2 for every state, off-diagonal terms "
                       "left out.")
        if _close(out, -trace):
            raise hint("The sign is flipped: that is d log p/dt, not the divergence.")
        if _close(out, d11 + d12 + d21 + d22):
            raise hint("You added all the entries of the Jacobian, off-diagonal ones too.",
                       "The gradient of f.sum() holds column sums of the Jacobian; the trace "
                       "keeps only its diagonal entries.")
        if _close(out, d11) or _close(out, d22):
            raise hint("Only one diagonal entry: the trace has one per dimension.",
                       "One backward pass per dimension.")
        raise hint("Wrong values, and none of the usual slips (sign, off-diagonal terms, one "
                   "dimension only).",
                   "div f = sum_i df_i/dz_i, evaluated for each state.")

    return _in_either_precision(hint, trial)


@_check
def check_hutchinson(fn) -> bool:
    """Check ``fn(f, z, generator)``: a one-probe Hutchinson estimate of tr(df/dz) per state,
    with the probe drawn from ``generator``, written without the package's helpers.

    ``f`` maps (B, D) to (B, D) row by row. Verifies the shape (B,), that the same generator
    seed gives the same value and another seed another one, and unbiasedness: the mean over
    20000 probes is within 5 standard errors of the exact trace. float32 or float64.
    """
    hint = _Hint("check_hutchinson")
    _expect_function(fn, "check_hutchinson", "fn(f, z, generator)")

    def trial(dt):
        D = 3
        W = torch.tensor([[1.5, -0.8, 0.3], [0.6, 2.0, -0.5], [-0.4, 0.7, 1.2]], dtype=dt)

        def f(z):
            return torch.tanh(z @ W.T)

        def run(z, seed):
            call = "fn(f, z, generator)"
            with _watch_calls(_package_shortcuts()) as used:
                out = _call(hint, fn, (f, z.clone(), torch.Generator().manual_seed(seed)), call)
            if used:
                raise _shortcut_hint(hint, used, "the estimator")
            return _tensor(hint, out, call).detach()

        z = (0.5 * torch.randn(4, D, generator=torch.Generator().manual_seed(7))).to(dt)
        s = 1 - torch.tanh(z @ W.T) ** 2
        trace = (s * W.diagonal()).sum(-1)  # J_b = diag(s_b) W
        all_entries = (s * W.sum(1)).sum(-1)  # 1^T J_b 1

        one = run(z, 0)
        _shape(hint, one, (4,), "the estimate", "One estimate per state, shape (B,).")
        if not _close(one, run(z, 0)):
            raise hint("Two calls with the same generator seed gave different values: draw the "
                       "probe from the generator you are given.",
                       "torch.randn takes the generator as a keyword argument (and dtype=z.dtype "
                       "too).")
        other = run(z, 1)
        if _close(one, other):
            if _close(other, trace):
                raise hint("That is the exact trace, which uses no probe and costs D backward "
                           "passes.",
                           "The estimator takes one random eps and returns eps^T (df/dz) eps.")
            raise hint("Your estimate does not change with the probe: draw eps from the "
                       "generator.")
        # Unbiasedness: K probes per state in one call (each row of the stacked batch gets its
        # own probe).
        K = 20000
        with _watch_calls(_package_shortcuts()) as used:
            many = _call(hint, fn, (f, z.repeat(K, 1), torch.Generator().manual_seed(2)),
                         "fn(f, z, generator)")
        if used:
            raise _shortcut_hint(hint, used, "the estimator")
        many = _tensor(hint, many, "fn(f, z, generator)").detach().double().reshape(K, 4)
        mean, sem = many.mean(0), many.std(0) / math.sqrt(K)
        trace = trace.double()

        def matches(target):
            return bool(((mean - target.double()).abs() <= 5 * sem + 1e-6).all())

        if matches(trace):
            err = (mean - trace).abs()
            return _ok(f"the mean over {K} probes is within {err.max().item():.3f} of the exact "
                       f"trace (standard error {sem.max().item():.3f}): unbiased, one backward "
                       "pass per probe.")
        if matches(-trace):
            raise hint("The estimate averages to -tr(df/dz): the sign is flipped.",
                       "The trace estimate is +eps^T (df/dz) eps; d log p/dt negates it.")
        if matches(trace / D):
            raise hint(f"The estimate averages to tr(df/dz) / D (D = {D}): your probe has "
                       "E[eps eps^T] = I / D, as a probe scaled to unit length does.",
                       "Do not normalise eps: standard normal entries (or random signs) have "
                       "E[eps eps^T] = I.")
        if matches(trace / 12 + all_entries / 4):
            raise hint("The estimate is biased the way a uniform probe on [0, 1] (torch.rand) "
                       "makes it: its mean is not 0 and its variance is 1/12.",
                       "Use standard normal entries (torch.randn) or random signs, for which "
                       "E[eps eps^T] = I.")
        if matches(torch.zeros_like(trace)):
            raise hint("The estimate averages to about 0, not the trace.",
                       "Dot eps with the vector-Jacobian product eps^T df/dz (one backward "
                       "pass), not just sum that product.")
        raise hint(f"Biased: over {K} probes your mean is "
                   f"{[round(v, 3) for v in mean.tolist()]}, but the trace is "
                   f"{[round(v, 3) for v in trace.tolist()]}.",
                   "The probe must satisfy E[eps eps^T] = I, and the estimate is "
                   "eps^T (df/dz) eps.")

    return _in_either_precision(hint, trial)


# --- notebook 07 -------------------------------------------------------------------------------


@_check
def check_resnet_euler(fn) -> bool:
    """Check ``fn(blocks, h)``: L residual blocks applied as Euler steps on [0, 1], returning
    h_L.

    ``blocks`` is a list of L functions (B, D) -> (B, D); h has shape (B, D). Verifies h_L for
    3 tanh blocks and first-order convergence to the ODE's solution when one linear block is
    repeated 16 and 32 times. float32 or float64.
    """
    hint = _Hint("check_resnet_euler")
    _expect_function(fn, "check_resnet_euler", "fn(blocks, h)")

    def trial(dt):
        gen = torch.Generator().manual_seed(8)
        Ws = [torch.randn(3, 3, generator=gen).to(dt) for _ in range(3)]
        bs = [torch.randn(3, generator=gen).to(dt) for _ in range(3)]
        blocks = [lambda h, W=W, b=b: torch.tanh(h @ W.T + b) for W, b in zip(Ws, bs)]
        h0 = torch.randn(4, 3, generator=gen).to(dt)

        def run(order, scale, residual=True):
            h = h0
            for f in order:
                h = (h if residual else 0) + scale * f(h)
            return h

        out = _tensor(hint, _call(hint, fn, (list(blocks), h0.clone()), "fn(blocks, h)"),
                      "fn(blocks, h)")
        _shape(hint, out, h0.shape, "h_L", "Each block maps a state to a state of the same "
               "shape.")

        # The reference: the package's Euler solver on [0, 1], block l acting on [l/L, (l+1)/L).
        def field(t, h):
            return blocks[min(round(float(t) * len(blocks)), len(blocks) - 1)](h)

        from .solvers.odeint import odeint

        ref = odeint(field, h0, torch.tensor([0.0, 1.0], dtype=dt), method="euler",
                     options={"step_size": 1 / len(blocks)})[-1]
        if not _close(out, ref):
            if _close(out, run(blocks, 1.0)):
                raise hint("The step size is missing: without it, depth changes the total "
                           "update.",
                           "Each block is an Euler step of size 1/L on [0, 1].")
            if _close(out, h0 + sum(f(h0) for f in blocks) / 3):
                raise hint("Every block sees h_0: the blocks are applied in turn, each to the "
                           "previous block's output.")
            if _close(out, run(blocks[::-1], 1 / 3)):
                raise hint("The blocks run in reverse order: f_0 comes first.")
            if _close(out, run(blocks, 1 / 3, residual=False)) or \
                    _close(out, run(blocks, 1.0, False)):
                raise hint("The skip connection is missing: a residual block returns its input "
                           "plus the update.")
            raise hint("Wrong h_L, and none of the usual slips (the 1/L, the order, the skip "
                       "connection).",
                       "Check one block at a time: what goes into block l, and what comes out "
                       "of it?")
        # With L copies of one linear field the blocks are Euler's method for dh/dt = h A^T,
        # whose exact time-1 solution is e^A h_0: the error should halve when L doubles.
        A = torch.tensor([[-0.3, 1.0, 0.2], [-1.0, -0.2, 0.5], [0.1, -0.4, -0.5]], dtype=dt)
        exact = h0 @ torch.linalg.matrix_exp(A).T
        errors = [(_call(hint, fn, ([lambda h: h @ A.T] * L, h0.clone()), "fn(blocks, h)")
                   - exact).abs().max().item() for L in (16, 32)]
        ratio = errors[0] / errors[1]
        if not 1.7 < ratio < 2.3:
            raise hint(f"With shared linear blocks, doubling L divided the error against "
                       f"e^A h_0 by {ratio:.2f}, not about 2 as Euler's method should.")
        return _ok(f"L blocks are L Euler steps on [0, 1]; with one shared linear block, "
                   "doubling the depth divides the distance to the ODE's solution e^A h_0 by "
                   f"{ratio:.2f}: Euler's method, first order.")

    return _in_either_precision(hint, trial)


@_check
def check_augmented_flow(fn) -> bool:
    """Check ``fn(field, x, p)``: an augmented neural ODE's map, from x of shape (B, d) to
    (B, d), with ``field(t, z)`` mapping (B, d+p) to (B, d+p) on t in [0, 1].

    Verifies against the exact solution of a linear field with d = p = 2, the shape (B, d),
    p = 0 (a plain neural ODE), and the 1-D swap of section 4 with p = 1. float32 or float64.
    """
    hint = _Hint("check_augmented_flow")
    _expect_function(fn, "check_augmented_flow", "fn(field, x, p)")

    def trial(dt):
        gen = torch.Generator().manual_seed(9)
        d, p = 2, 2
        M = (0.7 * torch.randn(d + p, d + p, generator=gen)).to(dt)

        def field(t, z):
            return z @ M.T

        x = torch.randn(5, d, generator=gen).to(dt)
        E = torch.linalg.matrix_exp(M)  # the exact time-1 map of dz/dt = M z

        def block(rows, cols, v):  # v (B, len(cols)) through the block E[rows, cols]
            return v @ E[rows][:, cols].T

        first, last = slice(0, d), slice(d, d + p)  # d = p = 2 here
        ones = torch.ones(5, p, dtype=dt)
        call = "fn(field, x, p)"
        out = _tensor(hint, _call(hint, fn, (field, x.clone(), p), call), call)
        if out.ndim == 3:
            raise hint("You returned the whole path: odeint's output has the times first, "
                       "(len(t), B, d+p).", "Take the last time, then the first d coordinates.")
        if tuple(out.shape) == (5, d + p):
            raise hint("Wrong shape (B, d+p): read out only the coordinates that x went into.",
                       "The extra p only give the flow room to move.")
        _shape(hint, out, (5, d), "the output", "The first d coordinates of z(1).")
        out = out.detach()

        def near(a, b):
            return torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)

        if not near(out, block(first, first, x)):
            if near(out, x):
                raise hint("You returned x: solve the ODE from t = 0 to t = 1 first.")
            if near(out, block(first, first, x) + block(first, last, ones)):
                raise hint("The padding is ones; every input must start on the same copy of R^d "
                           "inside R^(d+p), at 0 in the extra coordinates.")
            if near(out, block(last, first, x)):
                raise hint("You read out the last d coordinates; x went into the first d.")
            if near(out, block(first, last, x)) or near(out, block(last, last, x)):
                raise hint("The zeros went in front: the state starts as [x, 0_p], x first.")
            raise hint("Wrong values, and none of the usual slips (no solve, the padding, which "
                       "coordinates you read out).",
                       "Check each stage on its own: the starting state, the solve over "
                       "[0, 1], and which coordinates of z(1) you return.")
        plain = _tensor(hint, _call(hint, fn, (lambda t, z: -z, x.clone(), 0), call), call)
        if not near(plain.detach(), x * math.exp(-1.0)):
            raise hint("With p = 0 the wrapper should be a plain neural ODE: for dz/dt = -z it "
                       "must return x e^(-1).")
        # The 1-D swap of section 4: rotating [x, 0] by pi in the plane maps -1 -> 1, 1 -> -1.
        R = math.pi * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=dt)
        swap = _call(hint, fn, (lambda t, z: z @ R.T, torch.tensor([[-1.0], [1.0]], dtype=dt),
                                1), call)
        if not near(_tensor(hint, swap, call).detach(), torch.tensor([[1.0], [-1.0]])):
            raise hint("The rotation field pi (-z2, z1) with p = 1 should swap -1 and 1.")
        return _ok("your map matches the exact flow; with p = 1 the rotation field "
                   "pi (-z2, z1) swaps -1 and 1, the map no plain 1-D flow can make.")

    return _in_either_precision(hint, trial)


# --- notebook 08 -------------------------------------------------------------------------------


def _poly_cases():
    """(g, lo, hi, n, exact integral): polynomials of degree 2n - 1 on intervals other than
    [-1, 1], integrated exactly from their antiderivatives."""
    def deg5(x):
        return 1 - 2 * x + 3 * x**5

    def deg3(x):
        return 4 * x**3 - x

    def deg7(x):
        return x**7 - 2 * x**2

    return [(deg5, 0.5, 2.0, 3, (2.0 - 0.5) - (2.0**2 - 0.5**2) + (2.0**6 - 0.5**6) / 2),
            (deg3, -2.0, 1.0, 2, (1.0 - 16.0) - (1.0 - 4.0) / 2),
            (deg7, -0.5, 1.5, 4, (1.5**8 - 0.5**8) / 8 - 2 * (1.5**3 + 0.5**3) / 3)]


@_check
def check_gauss_legendre(fn) -> bool:
    """Check ``fn(g, lo, hi, n)``: the integral of a function g of one number over [lo, hi] by
    the n-node Gauss-Legendre rule.

    Verifies exactness for polynomials of degree 2n - 1 (n = 2, 3, 4) on intervals other than
    [-1, 1] against their antiderivatives, that degree 2n is not exact (n nodes, not more), and
    e^x on [0, 1] with 4 nodes against e - 1. Accepts a float, a NumPy number or a 1-element
    tensor, computed in float64 or float32 (compared at float32 precision).
    """
    from scipy.integrate import fixed_quad

    hint = _Hint("check_gauss_legendre")
    _expect_function(fn, "check_gauss_legendre", "fn(g, lo, hi, n)")

    def value(g, lo, hi, n):
        call = f"fn(g, {lo}, {hi}, {n})"
        got = _call(hint, fn, (g, lo, hi, n), call)
        if got is None:
            raise hint(f"{call} returned None: is a `return` missing?")
        number = _as_number(got)
        if number is None:
            more = ("Add up the weighted values of g at the nodes: one number."
                    if getattr(got, "ndim", 0) == 1 or isinstance(got, list | tuple) else "")
            raise hint(f"{call} should return one number, got {_describe(got)}.", more)
        return number

    def near(a, b):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)

    for g, lo, hi, n, exact in _poly_cases():
        got = value(g, lo, hi, n)
        if near(got, exact):
            continue
        rule = fixed_quad(g, lo, hi, n=n)[0]  # scipy's rule, for the slips below
        half = (hi - lo) / 2
        if near(got, fixed_quad(g, -1.0, 1.0, n=n)[0]):
            raise hint(f"For [{lo}, {hi}] your value is the integral over [-1, 1]: the nodes "
                       "from leggauss lie on [-1, 1] and need moving to [lo, hi].")
        if near(got, rule / half):
            raise hint("The nodes are in the right place but the weights are not rescaled: "
                       "they add up to 2, the length of [-1, 1].",
                       "Moving [-1, 1] onto [lo, hi] stretches every length by the same factor: "
                       "the weights too.")
        if near(got, 2 * rule):
            raise hint("Your value is twice the integral: the weights are scaled by the whole "
                       "stretch once too often.",
                       "leggauss's weights add up to 2; on [lo, hi] they should add up to "
                       "hi - lo.")
        if near(got, fixed_quad(g, 2 * lo - hi, hi, n=n)[0]):
            raise hint(f"Your nodes cover [{2 * lo - hi:g}, {hi:g}] instead of [{lo:g}, {hi:g}]: "
                       "leggauss's nodes lie on [-1, 1], not [0, 1].")
        if n > 1 and near(got, fixed_quad(g, lo, hi, n=n - 1)[0]):
            raise hint(f"Your rule uses {n - 1} nodes where n = {n}: leggauss(n) gives n.")
        raise hint(f"Not exact for a polynomial of degree {2 * n - 1} on [{lo}, {hi}] with "
                   f"n = {n}: your value is {got:.6g}, off by {got - exact:.2g}.",
                   "Check the nodes (on [lo, hi]?) and the weights (do they add up to "
                   "hi - lo?) on g = 1, whose integral is hi - lo.")
    if near(value(lambda x: x**6, 0.0, 1.0, 3), 1 / 7):
        raise hint("With n = 3 your rule integrates x^6 exactly: it uses more nodes than n "
                   "(n nodes are exact up to degree 2n - 1 = 5 only).")
    off = abs(value(lambda x: math.e**x, 0.0, 1.0, 4) - (math.e - 1))
    if off > 1e-5 * (math.e - 1):
        raise hint("Exact for polynomials, but not for e^x on [0, 1] with 4 nodes (the rule "
                   f"should be within 1e-5 of e - 1; yours is {off:.1e} away).")
    return _ok("exact for degree 2n - 1 on any interval, not for degree 2n, and within "
               f"{max(off, 1e-16):.0e} of e - 1 with 4 nodes.")


def _stiff_problem(dt):
    """Notebook 08's stiff problem (eigenvalues -1 and -100, four intervals of [0, 1]) with
    a weight w per observation, and its exact dL/dA (autograd through the matrix exponential)."""
    from .problems import linear_solution

    A = torch.tensor([[-1.0, 0.0], [1.0, -100.0]], dtype=F64)
    z0 = torch.tensor([[1.0, 1.0]], dtype=F64)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    w = torch.randn(5, 1, 2, generator=torch.Generator().manual_seed(11), dtype=F64)
    with torch.enable_grad():
        A_leaf = A.clone().requires_grad_(True)
        (exact,) = torch.autograd.grad((linear_solution(A_leaf, z0, t) * w).sum(), A_leaf)
    return {"A": A.to(dt), "z0": z0.to(dt), "t": t.to(dt), "w": w.to(dt), "exact": exact}


@_check
def check_radau_stiff(fn) -> bool:
    """Check ``fn(p, restore_z)``: dL/dA of notebook 08's stiff problem ``p`` (a dict with A,
    z0, t, w as in section 1; L = sum over the observations of w * z) from the unguarded
    backsolve adjoint with scipy's Radau, with and without restoring z.

    Verifies that scipy's Radau does the solves, the shape (2, 2), and the two errors against
    the exact gradient: without restore_z the rebuilt z runs away (error above 1e3), with it the
    error is at least 1000 times smaller. The one slow check (two Radau solves, seconds each).
    float32 or float64.
    """
    from scipy.integrate import Radau

    from .diagnostics import relative_error

    hint = _Hint("check_radau_stiff")
    _expect_function(fn, "check_radau_stiff", "fn(p, restore_z)")
    guard = ("Read the error: the package compared the rebuilt z with the stored one. To see "
             "the gradient it refuses to hand out, tell odeint_adjoint what to do when they "
             "part (its on_divergence argument).")

    def gradient(p, restore_z):
        call = f"fn(p, restore_z={restore_z})"
        with _watch_calls({Radau.__init__: "Radau"}) as used:
            out = _call(hint, fn, (p, restore_z), call, guard, more_if="diverged")
        if isinstance(out, tuple | list) and len(out) == 1:
            raise hint(f"{call} returned {_describe(out)}: return the gradient itself "
                       "(torch.autograd.grad returns a tuple).")
        out = _tensor(hint, out, call)
        _shape(hint, out, (2, 2), "dL/dA", "One entry per entry of A.")
        if not used:
            raise hint(f"{call} did not run scipy's Radau: the exercise asks for the implicit "
                       "solver, both ways.")
        return relative_error(out.detach().double(), p["exact"])

    def trial(dt):
        p = _stiff_problem(dt)
        kept = gradient(p, True)
        lost = gradient(p, False)
        if not math.isfinite(lost) or lost < 1e3:
            raise hint(f"Without restore_z your gradient's error is {lost:.1e}; the rebuilt z of "
                       "an unguarded backsolve runs away on this problem. Does restore_z reach "
                       "odeint_adjoint?")
        if not kept < 1e-3 * lost:
            raise hint(f"With restore_z your gradient's error is {kept:.1e}, without it "
                       f"{lost:.1e}: restoring z at each observation time should help by orders "
                       "of magnitude. Does restore_z reach odeint_adjoint?")
        return _ok(f"error {kept:.1e} with restore_z, {lost:.1e} without: the implicit solver "
                   "takes the stiff forward solve in stride, but solved backwards the fast mode "
                   "grows like e^(100 t) whatever the solver: restoring z at each observation "
                   "time only limits the damage, and keeping the forward solution avoids it.")

    return _in_either_precision(hint, trial)


# --- notebook 09 -------------------------------------------------------------------------------


def check_steer_range(ends) -> bool:
    """Check ``ends``: the 2,000 end times drawn with sample_end_time(0.0, 1.0, 0.25, generator)
    (a NumPy array, a tensor or a list of numbers).

    Verifies at least 1,000 draws, all in [0.75, 1.25], both ends approached within 0.01, a
    mean within 0.02 of 1, and a spread like that of uniform draws; names the b a wrong range
    corresponds to. float32 or float64.
    """
    hint = _Hint("check_steer_range")
    name = "check_steer_range"
    if ends is None:
        raise TypeError(f"{name} expects your end times (a NumPy array, a tensor or a list), "
                        "but got None (did the cell that draws them run, and does a function "
                        "that makes them end with a `return`).") from None
    try:
        if torch.is_tensor(ends):
            values = ends.detach().double().reshape(-1)
        elif isinstance(ends, str | bytes | dict) or isinstance(ends, bool | int | float):
            raise TypeError
        else:
            import numpy as np

            values = torch.as_tensor(np.asarray(ends, dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} expects your end times (a NumPy array, a tensor or a list "
                        f"of numbers), but got {_describe(ends)}.") from None
    n = values.numel()
    if n < 1000:
        raise hint(f"You passed {n} end times: draw 2,000, one call of sample_end_time each "
                   "(with fewer, the ends of the range are rarely approached within 0.01).")
    lo, hi, mean = values.min().item(), values.max().item(), values.mean().item()
    if hi - lo < 1e-9:
        raise hint(f"All {n} end times are {lo:.4g}: draw each one anew from the generator.",
                   "Call sample_end_time once per draw, with the same generator every time.")
    if lo < 0.75 - 1e-6 or hi > 1.25 + 1e-6:
        width = max(1.0 - lo, hi - 1.0)
        guess = f" (as b = {width:.2g} would)" if abs(mean - 1.0) < 0.05 else ""
        raise hint(f"Your end times run from {lo:.3f} to {hi:.3f}{guess}: with b = 0.25 they "
                   "should stay in [0.75, 1.25].",
                   "Check the b you pass, and that t0 = 0.0 and t1 = 1.0 come first.")
    if lo > 0.76 or hi < 1.24:
        raise hint(f"Your end times run from {lo:.3f} to {hi:.3f}: uniform draws over "
                   "[0.75, 1.25] come within 0.01 of both ends.",
                   "Are they uniform draws, all of them from sample_end_time?")
    if abs(mean - 1.0) > 0.02:
        raise hint(f"The mean of your end times is {mean:.3f}: draws centred on t1 = 1 average "
                   "to within 0.02 of 1.")
    std = values.std().item()
    if not 0.8 < std / (0.5 / math.sqrt(12)) < 1.2:
        raise hint(f"Your end times spread with a standard deviation of {std:.3f}; uniform "
                   f"draws over [0.75, 1.25] have {0.5 / math.sqrt(12):.3f}.")
    return _ok(f"{n} end times in [{lo:.3f}, {hi:.3f}], mean {mean:.3f}: uniform around t1 = 1, "
               "within b = 0.25 of it.")
