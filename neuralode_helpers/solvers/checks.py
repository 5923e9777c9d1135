"""Input checks: every bad argument gets a clear TypeError or ValueError that names it.

Also the packing of a tuple state ``(z_1, z_2, …)`` into one flat vector for the solvers, and
the check that a function's gradients will not be lost (``untracked_leaves``).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass

import torch

from .tableaus import TABLEAUS

FLOAT_DTYPES = (torch.float32, torch.float64)
#: The torch methods, from the one table of them: a method is adaptive when its tableau has
#: error weights.
FIXED_STEP_METHODS = tuple(name for name, tab in TABLEAUS.items() if tab.e is None)
ADAPTIVE_METHODS = tuple(name for name, tab in TABLEAUS.items() if tab.e is not None)
SCIPY_METHODS = ("scipy:RK45", "scipy:RK23", "scipy:DOP853", "scipy:Radau", "scipy:BDF",
                 "scipy:LSODA")
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS + SCIPY_METHODS

# Options each family understands (torchdiffeq's names); anything else is a typo we want to
# report, not ignore.
_OPTIONS = {
    "fixed": {"step_size"},
    "adaptive": {"first_step", "max_num_steps", "safety", "ifactor", "dfactor", "norm"},
    "scipy": {"first_step", "max_step", "min_step", "max_nfe"},
}
_RENAMED = {"max_steps": "max_num_steps", "min_factor": "dfactor", "max_factor": "ifactor"}


def check_int(name, value, minimum=None) -> int:
    """``value`` as an int: an int (numpy's too, not a bool) of at least ``minimum`` (None:
    any), or a clear error naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def method_family(method: str) -> str:
    if method in FIXED_STEP_METHODS:
        return "fixed"
    return "scipy" if method.startswith("scipy:") else "adaptive"


def check_method(method, rtol, atol, options, *, prefix=""):
    """Validate a method with its tolerances and options; return ``(method, options)``.

    ``method="scipy_solver"`` with ``options={"solver": "LSODA"}`` is torchdiffeq's
    spelling of ``method="scipy:LSODA"``. ``prefix`` ("adjoint_") names the arguments in
    messages.
    """
    options = dict(options or {})
    if method is None:
        method = "dopri5"
    if method == "scipy_solver":
        method = "scipy:" + str(options.pop("solver", "LSODA"))
    if method not in METHODS:
        raise ValueError(f"unknown {prefix}method {method!r}; valid methods: "
                         f"{', '.join(METHODS)} (or 'scipy_solver' with "
                         "options={'solver': name})")
    for name, tol in ((prefix + "rtol", rtol), (prefix + "atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol > 0:
            raise ValueError(f"{name} must be a positive number, got {tol!r}")
    family = method_family(method)
    unknown = set(options) - _OPTIONS[family]
    if unknown:
        hints = [f"{k!r} is called {_RENAMED[k]!r} here" for k in sorted(unknown)
                 if k in _RENAMED]
        raise ValueError(f"unknown {prefix}option(s) {sorted(unknown)} for method {method!r}; "
                         f"valid: {sorted(_OPTIONS[family])}"
                         + (f" ({'; '.join(hints)})" if hints else ""))
    for key, value in options.items():
        if key == "norm":
            if not callable(value):
                raise TypeError(f"{prefix}options['norm'] must be a function of the scaled "
                                f"error, got {type(value).__name__}")
        elif key == "max_num_steps" or key == "max_nfe":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{prefix}options[{key!r}] must be a positive integer, "
                                 f"got {value!r}")
        elif key == "step_size" and value is None:
            continue
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"{prefix}options[{key!r}] must be a positive number, "
                             f"got {value!r}")
    return method, options


class State:
    """A state that is one tensor, or a tuple of tensors packed into one flat vector.

    A single tensor is passed through untouched (no reshape, no copy). A tuple is
    concatenated in the promoted dtype; ``func`` still sees a tuple, each element with its
    own shape and dtype, and the outputs are unpacked the same way.
    """

    def __init__(self, z0):
        self.is_tuple = isinstance(z0, tuple)
        parts = z0 if self.is_tuple else (z0,)
        self.shapes = [p.shape for p in parts]
        self.dtypes = [p.dtype for p in parts]
        self.numels = [p.numel() for p in parts]
        dtype = parts[0].dtype
        for p in parts[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        self.dtype = dtype

    @property
    def segments(self):
        """Sizes of the parts, for the error norm (the largest RMS over the parts)."""
        return self.numels if self.is_tuple else None

    def pack(self, z0):
        if not self.is_tuple:
            return z0
        return torch.cat([p.reshape(-1).to(self.dtype) for p in z0])

    def unpack(self, y):
        if not self.is_tuple:
            return y
        return tuple(p.view(s).to(d) for p, s, d in zip(y.split(self.numels), self.shapes,
                                                        self.dtypes))

    def unpack_outputs(self, ys):
        if not self.is_tuple:
            return ys
        T = ys.shape[0]
        return tuple(p.reshape(T, *s).to(d) for p, s, d in zip(ys.split(self.numels, dim=1),
                                                               self.shapes, self.dtypes))

    def repeat(self, z0, T):
        """z0 at each of T times (a single time, or a state with no entries)."""
        if not self.is_tuple:
            return z0.unsqueeze(0).expand(T, *z0.shape).clone()
        return tuple(p.unsqueeze(0).expand(T, *p.shape).clone() for p in z0)

    def checked_func(self, func):
        """``func`` on the flat state; a wrong output type, shape or dtype fails at once,
        naming the problem."""
        if not self.is_tuple:
            shape, dtype = self.shapes[0], self.dtypes[0]

            def f(t, z):
                return _check_output(_call_field(func, t, z, z), shape, dtype, "")

            return f

        def f_tuple(t, y):
            out = _call_field(func, t, self.unpack(y), y)
            if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
                raise TypeError(f"func(t, z) must return a tuple of {len(self.shapes)} "
                                f"tensors like z, got {type(out).__name__}")
            return torch.cat([
                _check_output(o, s, d, f"[{k}]").reshape(-1).to(self.dtype)
                for k, (o, s, d) in enumerate(zip(out, self.shapes, self.dtypes))])

        return f_tuple


def _check_output(out, shape, dtype, where):
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"func(t, z){where} must return a torch.Tensor, got "
                        f"{type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"func(t, z){where} returned shape {tuple(out.shape)}, but z{where} "
                         f"has shape {tuple(shape)}: dz/dt must have the shape of z")
    if out.dtype != dtype:
        raise TypeError(f"func(t, z){where} returned dtype {out.dtype}, but z{where} has "
                        f"dtype {dtype}")
    return out


@dataclass
class Call:
    """A checked call: the packed state, times in the state's dtype, method and options."""

    state: State
    y0: torch.Tensor
    t: torch.Tensor
    method: str
    options: dict
    func: object

    @property
    def trivial(self) -> bool:
        """One time, or a state with no entries: nothing to solve."""
        return self.t.numel() == 1 or self.y0.numel() == 0


def check_call(func, z0, t, method, rtol, atol, options) -> Call:
    """Raise a clear TypeError/ValueError for bad input; return the checked :class:`Call`."""
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, z), got {type(func).__name__}")
    if isinstance(z0, list):
        raise TypeError("z0 must be a torch.Tensor or a tuple of tensors, got a list: "
                        "pass tuple(z0)")
    parts = z0 if isinstance(z0, tuple) else (z0,)
    if isinstance(z0, tuple) and not z0:
        raise ValueError("z0 is an empty tuple: pass at least one tensor")
    for k, p in enumerate(parts):
        name = f"z0[{k}]" if isinstance(z0, tuple) else "z0"
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}"
                            + _as_tensor_hint(p, "torch.as_tensor(z0, dtype=torch.float32)"))
        _check_float(p, name)
        if not torch.isfinite(p.detach()).all():
            raise ValueError(f"{name} must be finite (it holds NaN or inf)")
        if p.device != parts[0].device:
            raise ValueError(f"every part of z0 must be on one device: z0[0] on "
                             f"{parts[0].device}, {name} on {p.device}")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}"
                        + _as_tensor_hint(t, "torch.tensor([0.0, 1.0]) or "
                                             "torch.linspace(0, 1, 11)"))
    _check_float(t, "t")
    if t.device != parts[0].device:
        raise ValueError(f"t and z0 must be on the same device: t on {t.device}, "
                         f"z0 on {parts[0].device}")
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D (a list of times), got shape {tuple(t.shape)}"
                         + (": the start and end times, e.g. torch.tensor([0.0, t_end])"
                            if t.ndim == 0 else ""))
    if t.numel() < 1:
        raise ValueError("t must hold at least 1 time, got an empty tensor")
    if not torch.isfinite(t.detach()).all():
        raise ValueError("t must be finite")
    if t.numel() > 1:
        dt = t.detach()[1:] - t.detach()[:-1]
        if not ((dt > 0).all() or (dt < 0).all()):
            raise ValueError("t must be strictly increasing or strictly decreasing, got "
                             f"{t.detach().cpu().tolist()}")
    _check_signature(func)
    method, options = check_method(method, rtol, atol, options)
    state = State(z0)
    # The computation uses the state's dtype (as torchdiffeq does): a float64 t with a
    # float32 state is rounded to float32 once, here.
    return Call(state=state, y0=state.pack(z0), t=t.to(state.dtype), method=method,
                options=options, func=state.checked_func(func))


def _as_tensor_hint(x, example):
    """How to turn a list, number or numpy array into the tensor that was expected."""
    if x is None or not (isinstance(x, (list, tuple, numbers.Number))
                         or type(x).__module__ == "numpy"):
        return ""
    return f": convert it first, e.g. {example}"


def _check_float(x, name):
    """float32 or float64 only: integers would be rounded, and half precision (float16,
    bfloat16) cannot reach the default tolerances (its round-off is about 1e-3)."""
    if x.dtype in FLOAT_DTYPES:
        return
    if x.is_complex():
        hint = (f"a complex state is not supported: solve for its real and imaginary parts, "
                f"torch.view_as_real({name})")
    elif x.is_floating_point():
        hint = f"half precision cannot reach the solver's tolerances: use {name}.float()"
    else:
        hint = f"use {name}.float()"
    raise TypeError(f"{name} must be floating point (float32 or float64), got {x.dtype}: "
                    f"{hint}")


def _check_signature(func):
    """func is called as func(t, z): say so before solving, not with Python's message about
    positional arguments from deep inside a step."""
    target = func.forward if isinstance(func, torch.nn.Module) else func
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature to inspect
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(target, "__qualname__", type(func).__name__)
        raise TypeError(f"func is called as func(t, z) (the time, then the state), but "
                        f"{name}{signature} cannot take those two arguments; a field that "
                        "does not use t still takes it, e.g. lambda t, z: -z") from None


def _call_field(func, t, z, y):
    """``func(t, z)``; an error raised inside it gets what to do about it where we can tell:
    a dtype mismatch (a float32 model with the state ``y`` in float64, or the other way
    round). Other errors pass through unchanged."""
    try:
        return func(t, z)
    except RuntimeError as error:
        text = str(error)
        if type(error) is not RuntimeError or not ("dtype" in text or "scalar type" in text):
            raise
        raise TypeError(f"func(t, z) failed with z of dtype {y.dtype}: {text}. Does func hold "
                        "tensors of another dtype (weights, a matrix)? Give z0 and them one "
                        "dtype: z0.to(torch.float32) for a float32 model, or model.double() "
                        "and float64 tensors") from error


def private_graph():
    """For a graph built only to be inspected by :func:`untracked_leaves`, then dropped: its
    saved tensors bypass any saved-tensor hooks of the caller (memory accounting,
    offloading), and are held detached, so that a saved output cannot keep its own graph
    alive."""
    return torch.autograd.graph.saved_tensors_hooks(lambda x: x.detach(), lambda x: x)


def untracked_leaves(out: torch.Tensor, allowed, inputs=()) -> list:
    """Tensors that require grad and that ``out`` depends on, other than those in
    ``allowed``: their gradient would be lost by a solver that differentiates only with
    respect to ``allowed`` (a closure over a tensor that is not in ``params``).

    Leaves that share storage with ``inputs`` (the state and time that func was called with)
    are func's own: a field that computes a divergence marks its input z as requiring grad.
    ``inputs`` must therefore be fresh copies made for this call, sharing storage with
    nothing else (see :func:`closure_leaves`), or a closure over a tensor that z0 or t is a
    view of would be exempted too.
    """
    own = {x.untyped_storage().data_ptr() for x in inputs}
    allowed_ids = {id(a) for a in allowed}
    found, seen, stack = [], set(), [out.grad_fn]
    if out.grad_fn is None:
        return [out] if out.requires_grad and id(out) not in allowed_ids else []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            if (id(variable) not in allowed_ids
                    and variable.untyped_storage().data_ptr() not in own):
                found.append(variable)
            continue
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def closure_leaves(func, t0, y0, allowed=()):
    """``(f0, lost)``: ``f0 = func(t0, y0)`` evaluated with a graph, and the tensors that
    require grad, that f0 depends on and that are not in ``allowed``.

    func is called on fresh copies of ``t0`` and ``y0``, so that sharing storage with them
    identifies only what func made of its own input (``z.requires_grad_()`` in a divergence
    field), never a tensor that the caller's z0 or t is a view of, nor z0 or t themselves.

    A closure is the same tensor object on every call; a leaf that func makes afresh on each
    call (``t = torch.tensor(t).requires_grad_()``) is not, and nothing could pass it as a
    parameter. So when there are suspects, func is evaluated a second time and only the
    suspects found both times (by identity) are kept.
    """
    def suspects():
        t_in, y_in = t0.detach().clone(), y0.detach().clone()
        with torch.enable_grad(), private_graph():
            out = func(t_in, y_in)
        return out, untracked_leaves(out, allowed, inputs=(t_in, y_in))

    f0, lost = suspects()
    if lost:
        # Both lists hold their tensors until the comparison is done, so that an id of the
        # first call cannot be reused by an object of the second.
        _, again = suspects()
        again_ids = {id(x) for x in again}
        lost = [x for x in lost if id(x) in again_ids]
        del again
    return f0, lost


def closure_check(func, t, y0, params):
    """f(t_0, z_0), detached, after checking that ``func`` depends on no tensor that
    requires grad other than ``params`` (a closure whose gradient the adjoint would lose):
    raise ``ValueError`` naming what to do if it does. See :func:`closure_leaves`."""
    f0, lost = closure_leaves(func, t[0], y0, params)
    if lost:
        shapes = ", ".join(str(tuple(x.shape)) for x in lost[:3])
        raise ValueError(
            f"func depends on {len(lost)} tensor(s) that require grad but are not in "
            f"params (shapes {shapes}): their gradient would be lost. Pass them as "
            "params=[...] (torchdiffeq: adjoint_params=), or make func an nn.Module "
            "that holds them as parameters")
    return f0.detach()
