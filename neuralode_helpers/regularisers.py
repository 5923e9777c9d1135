r"""Keeping a neural ODE cheap to solve: RNODE's regularisers, STEER, bounded fields.

An adaptive solver's cost is its number of function evaluations (NFE), and a field that
grows fast or bends sharply during training makes the solver take ever smaller steps.

**RNODE** (Finlay et al. 2020) adds two integrals to the loss, computed along the same solve:

.. math::
    \mathcal K = \int_{t_0}^{t_1} \|f(t, z(t))\|^2\,dt, \qquad
    \mathcal B = \int_{t_0}^{t_1} \Big\|\frac{\partial f}{\partial z}(t, z(t))\Big\|_F^2\,dt,

the kinetic energy (straight paths at constant speed) and the Jacobian's Frobenius norm
(smooth fields). Both are extra channels of the state: :class:`RegularisedField` turns
``f(t, z)`` into the field of the tuple ``(z, k, b)`` with :math:`\dot k = \|f\|^2` and
:math:`\dot b = \|\varepsilon^\top \partial f/\partial z\|^2`, Hutchinson's estimate of the
Frobenius norm: :math:`\mathbb E_\varepsilon \|\varepsilon^\top J\|^2 =
\operatorname{tr}(J J^\top) = \|J\|_F^2` for any probe with :math:`\mathbb E[\varepsilon
\varepsilon^\top] = I`; one vector-Jacobian product per evaluation instead of D.

**STEER** (Ghosh et al. 2020) integrates during training to a random end time
:math:`t_1' \sim \mathcal U[t_1 - b, t_1 + b]` (:func:`sample_end_time`), which keeps the
solution well-behaved around :math:`t_1`, not only at it.

For a continuous normalizing flow the trace that the log-density needs comes from the same
vector-Jacobian products as the Frobenius norm: :class:`RegularisedCNFField` carries both
terms along the CNF's solve and :func:`cnf_nll` is the loss;
:func:`~neuralode_helpers.train_cnf` (in ``training``, beside
:func:`~neuralode_helpers.train`) is its training loop.

**Bounded fields** (:class:`BoundedField`): :math:`f = s\,\tanh(g(t, z)/s)` with a learnt
scale :math:`s > 0`, so that :math:`\|f\|_\infty \le s` whatever the weights of g do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .adjoint import odeint_adjoint
from .cnf import standard_normal_logprob
from .solvers import odeint


def _check_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (..., D), got a 0-d tensor")
    return x


def kinetic_energy(f: torch.Tensor) -> torch.Tensor:
    r"""The integrand of RNODE's kinetic term, :math:`\|f\|^2 = \sum_i f_i^2`.

    ``f``: ``(..., D)`` the field's values; returns ``(...)``.
    """
    _check_tensor("f", f)
    return f.square().sum(-1)


def jacobian_frobenius(f: torch.Tensor, z: torch.Tensor, eps: torch.Tensor | None = None,
                       create_graph: bool = False) -> torch.Tensor:
    r"""The integrand of RNODE's Jacobian term, :math:`\|\partial f/\partial z\|_F^2`, per sample.

    ``f``, ``z``: ``(B, D)`` with ``f`` computed from ``z`` sample by sample (row b of f
    depends only on row b of z). With ``eps`` ``(B, D)`` (Gaussian or Rademacher probes,
    :math:`\mathbb E[\varepsilon\varepsilon^\top] = I`) it returns Hutchinson's unbiased
    estimate :math:`\|\varepsilon^\top J\|^2` from one vector-Jacobian product; with
    ``eps=None`` the exact value :math:`\sum_i \|\partial f_i/\partial z\|^2` from D of them.
    Returns ``(B,)``. ``create_graph=True`` keeps the graph (to differentiate the result).
    """
    _check_tensor("f", f)
    _check_tensor("z", z)
    if f.shape != z.shape:
        raise ValueError(f"f and z must have the same shape (B, D), got {tuple(f.shape)} "
                         f"and {tuple(z.shape)}")
    if not z.requires_grad:
        raise ValueError("z must require grad, and f must be computed from it")
    if eps is not None:
        _check_tensor("eps", eps)
        if eps.shape != z.shape:
            raise ValueError(f"eps must have the shape of z {tuple(z.shape)}, got "
                             f"{tuple(eps.shape)}")
        g = torch.autograd.grad((f * eps).sum(), z, create_graph=create_graph,
                                retain_graph=True)[0]
        return g.square().sum(-1)
    total = torch.zeros(f.shape[:-1], dtype=f.dtype, device=f.device)
    for i in range(f.shape[-1]):
        g = torch.autograd.grad(f[..., i].sum(), z, create_graph=create_graph,
                                retain_graph=True)[0]
        total = total + g.square().sum(-1)
    return total


def rademacher(shape, generator: torch.Generator | None = None, dtype=torch.float32,
               device=None) -> torch.Tensor:
    r"""Probes of :math:`\pm 1` with equal probability (:math:`\mathbb E[\varepsilon
    \varepsilon^\top] = I`), of the given shape; drawn on the CPU from ``generator``."""
    bits = torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int64)
    return (2 * bits - 1).to(dtype=dtype, device=device)


class RegularisedField(nn.Module):
    r"""The field of the tuple state ``(z, k, b)``: returns :math:`(f, \|f\|^2,
    \|\varepsilon^\top \partial f/\partial z\|^2)`.

    ``field(t, z)``: the vector field, ``z`` ``(B, D)``. ``eps``: ``(B, D)`` probes, fixed
    for the whole solve (as in RNODE); ``None`` computes the exact Frobenius norm (D
    vector-Jacobian products per evaluation). Solve from ``(z0, zeros(B), zeros(B))`` with
    :func:`~neuralode_helpers.odeint` or :func:`~neuralode_helpers.odeint_adjoint`; at the end
    ``k`` and ``b`` hold :math:`\int\|f\|^2\,dt` and :math:`\int\|J\|_F^2\,dt` (estimated),
    each ``(B,)``. :func:`initial_state` builds the starting tuple. The parameters are those
    of ``field``. With ``jacobian=False`` the third channel stays 0 (no extra products).
    """

    def __init__(self, field, eps: torch.Tensor | None = None, jacobian: bool = True):
        super().__init__()
        if not callable(field):
            raise TypeError(f"field must be callable as field(t, z), got "
                            f"{type(field).__name__}")
        if eps is not None:
            _check_tensor("eps", eps)
        self.field = field
        self.eps = eps
        self.jacobian = bool(jacobian)

    def forward(self, t, state):
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise TypeError("state must be the tuple (z, kinetic, jacobian); build it with "
                            "initial_state(z0)")
        z = state[0]
        outer_grad = torch.is_grad_enabled()
        if not self.jacobian:
            f = self.field(t, z)
            return f, kinetic_energy(f), torch.zeros_like(state[2])
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field(t, z)
            jac = jacobian_frobenius(f, z, self.eps, create_graph=outer_grad)
        if not outer_grad:
            f, jac = f.detach(), jac.detach()
        return f, kinetic_energy(f), jac


def initial_state(z0: torch.Tensor):
    """The tuple ``(z0, zeros(B), zeros(B))`` that :class:`RegularisedField` integrates;
    ``z0`` ``(B, D)``."""
    _check_tensor("z0", z0)
    zeros = z0.new_zeros(z0.shape[:-1])
    return z0, zeros, zeros.clone()


@dataclass
class RNODE:
    r"""Weights of RNODE's two terms, for :func:`~neuralode_helpers.train`'s ``regulariser``:
    the loss becomes :math:`L + \lambda_K \bar{\mathcal K} + \lambda_J \bar{\mathcal B}`
    (batch means). ``probe``: ``"rademacher"`` or ``"gaussian"`` for Hutchinson's estimate,
    or ``"exact"``. ``in_norm``: whether the adaptive solver's error norm counts the two
    extra channels. They are quadratures that never feed back into z (like the adjoint's
    a_θ), so by default (``False``) only z's error sets the step size, and the terms cost
    no extra steps; ``True`` is RNODE's original setting (torchdiffeq's norm counts every
    channel)."""

    kinetic: float = 0.0
    jacobian: float = 0.0
    probe: str = "rademacher"
    in_norm: bool = False

    def __post_init__(self):
        for name in ("kinetic", "jacobian"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"RNODE {name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"RNODE {name} must be finite and >= 0, got {value}")
        if self.probe not in ("rademacher", "gaussian", "exact"):
            raise ValueError(f"RNODE probe must be 'rademacher', 'gaussian' or 'exact', "
                             f"got {self.probe!r}")

    def solver_options(self, method: str, options: dict | None, n_state: int) -> dict | None:
        """``options`` with a ``norm`` that counts only the first ``n_state`` entries (z) of
        the flattened state, for the adaptive torch methods, unless ``in_norm`` or the
        caller gave a norm."""
        options = dict(options or {})
        fixed = method in ("euler", "midpoint", "rk4") or method.startswith("scipy")
        if self.in_norm or fixed or "norm" in options:
            return options or None

        def z_only(scaled, n=n_state):
            # A tuple state's norm gets the tuple (z, k, b) of scaled errors, as in
            # torchdiffeq; a flat vector starts with z's n entries.
            z = scaled[0] if isinstance(scaled, tuple) else scaled.reshape(-1)[:n]
            return z.square().mean().sqrt()

        options["norm"] = z_only
        return options

    def probes(self, shape, generator=None, dtype=torch.float32, device=None):
        """Probes for :class:`RegularisedField` (``None`` for ``"exact"``)."""
        if self.probe == "exact":
            return None
        if self.probe == "gaussian":
            return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)
        return rademacher(shape, generator, dtype, device)


def check_steer(b, span: float = 1.0) -> float:
    """``b`` as a float, checked: a number with 0 <= b < ``span`` (the interval's length)."""
    if b is None or isinstance(b, bool) or not isinstance(b, (int, float)):
        raise TypeError(f"steer b must be a number, got {type(b).__name__}")
    b = float(b)
    if not (0 <= b < abs(span)):
        raise ValueError(f"steer b must satisfy 0 <= b < {abs(span):g} (the interval's "
                         f"length), got {b}")
    return b


def sample_end_time(t0: float, t1: float, b: float, generator: torch.Generator | None = None,
                    ) -> float:
    r"""STEER's end time :math:`t_1' \sim \mathcal U[t_1 - b, t_1 + b]` (Ghosh et al. 2020).

    ``0 <= b < |t_1 - t_0|`` so that the interval keeps its direction; ``b = 0`` returns
    ``t1``. Returns a Python float (one end time for the whole batch, as the solve's time
    grid is shared).
    """
    for name, value in (("t0", t0), ("t1", t1)):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if t1 == t0:
        raise ValueError("need t1 != t0")
    b = check_steer(b, t1 - t0)
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    return float(t1) + b * (2 * u - 1)


class BoundedField(nn.Module):
    r"""A field with a learnt bound: :math:`f(t, z) = s\,\tanh(g(t, z)/s)`,
    :math:`s = \operatorname{softplus}(\rho)`, so :math:`|f_i| \le s` at every point.

    Where :math:`|g| \ll s` the field is g itself (tanh is the identity near 0), so wrapping
    a network changes nothing until it tries to be faster than s.

    ``net``: ``g(t, z)`` with output ``(..., D)`` (an :class:`~neuralode_helpers.ODENet`);
    ``scale``: the initial bound s > 0. The scale is a parameter (``rho``): training can
    raise it when the data need a faster field, but every increase is a visible number.
    """

    def __init__(self, net: nn.Module, scale: float = 1.0):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number, got {type(scale).__name__}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        self.net = net
        first = next(net.parameters(), None)
        dtype = first.dtype if first is not None else torch.get_default_dtype()
        # softplus(rho) = scale
        self.rho = nn.Parameter(torch.tensor(math.log(math.expm1(scale)), dtype=dtype))

    @property
    def scale(self) -> torch.Tensor:
        """The bound s = softplus(rho), a 0-d tensor."""
        return F.softplus(self.rho)

    def forward(self, t, z):
        scale = self.scale
        return scale * torch.tanh(self.net(t, z) / scale)


class RegularisedCNFField(nn.Module):
    r"""A CNF's field with RNODE's two channels: the tuple state ``(s, k, b)`` with
    ``s = [z, ℓ]`` ``(B, D+1)`` (as for :class:`~neuralode_helpers.CNFField`) and ``k``,
    ``b`` ``(B,)``; returns

    .. math::
        \big([f, -\operatorname{tr} J],\ \|f\|^2,\ \|J\|_F^2\big), \qquad
        J = \frac{\partial f}{\partial z}.

    ``field``: a :class:`~neuralode_helpers.CNFField` (its ``net`` and ``dim`` are used; the
    parameters are its own). The trace and the Frobenius norm come from the same
    vector-Jacobian products: with ``eps=None`` the D rows :math:`e_i^\top J` give both
    exactly (:math:`\sum_i J_{ii}` and :math:`\sum_i\|e_i^\top J\|^2`); with probes ``eps``
    ``(B, D)`` (:math:`\mathbb E[\varepsilon\varepsilon^\top] = I`, fixed for the solve) one
    product :math:`\varepsilon^\top J` gives Hutchinson's estimates of both,
    :math:`\varepsilon^\top J\varepsilon` and :math:`\|\varepsilon^\top J\|^2`. So
    the regularisers cost no extra products on top of the CNF's own trace.
    Start from :func:`cnf_initial_state`.
    """

    def __init__(self, field: nn.Module, eps: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(field, nn.Module) or not hasattr(field, "net") \
                or not hasattr(field, "dim"):
            raise TypeError(f"field must be a CNFField (an nn.Module with .net and .dim), got "
                            f"{type(field).__name__}")
        if eps is not None:
            _check_tensor("eps", eps)
            if eps.shape[-1] != field.dim:
                raise ValueError(f"eps must have shape (B, {field.dim}), got "
                                 f"{tuple(eps.shape)}")
        self.field = field
        self.eps = eps

    def forward(self, t, state):
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise TypeError("state must be the tuple ([z, logp], kinetic, jacobian); build it "
                            "with cnf_initial_state(x)")
        s, dim = state[0], self.field.dim
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():
            z = s[..., :dim]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field.net(t, z)
            if self.eps is None:
                trace = torch.zeros(f.shape[:-1], dtype=f.dtype, device=f.device)
                frob = torch.zeros_like(trace)
                for i in range(dim):
                    row = torch.autograd.grad(f[..., i].sum(), z, create_graph=outer_grad,
                                              retain_graph=True)[0]
                    trace = trace + row[..., i]
                    frob = frob + row.square().sum(-1)
            else:
                row = torch.autograd.grad((f * self.eps).sum(), z, create_graph=outer_grad,
                                          retain_graph=True)[0]
                trace = (row * self.eps).sum(-1)
                frob = row.square().sum(-1)
        out = (torch.cat([f, -trace.unsqueeze(-1)], dim=-1), kinetic_energy(f), frob)
        return out if outer_grad else tuple(x.detach() for x in out)


def cnf_initial_state(x: torch.Tensor):
    """The tuple ``([x, 0], zeros(B), zeros(B))`` that :class:`RegularisedCNFField`
    integrates from the data time back to 0; ``x`` ``(B, D)``."""
    _check_tensor("x", x)
    s = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
    zeros = x.new_zeros(x.shape[:-1])
    return s, zeros, zeros.clone()


def cnf_nll(field, x, *, regulariser=None, eps=None, end: float = 1.0, adjoint: bool = True,
            method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, options=None,
            stats=None):
    r"""A CNF's negative log-likelihood, with RNODE's terms if asked; returns ``(nll,
    kinetic, jacobian)``, 0-d tensors (batch means; the last two ``None`` without
    ``regulariser``).

    ``field``: a :class:`~neuralode_helpers.CNFField`; ``x`` ``(B, D)``: data at time ``end``
    (STEER's :math:`t_1'`, 1 by default). One solve of :math:`[x, 0]` from ``end`` back to 0
    gives :math:`-\log p(x) = -\log\mathcal N(z(0)) + \ell(0)`; with an
    :class:`RNODE`, the same solve carries :math:`\int_0^{t_1}\|f\|^2dt` and
    :math:`\int_0^{t_1}\|J\|_F^2dt` (:class:`RegularisedCNFField`, exact with ``eps=None``,
    else Hutchinson with probes ``eps``, which then estimate the trace, hence the NLL, too)
    and leaves them out of the error norm unless ``regulariser.in_norm``. Any ``method`` of
    :func:`~neuralode_helpers.odeint`; gradients by the adjoint (``adjoint=True``) or by
    backprop through the solver.
    """
    if not isinstance(field, nn.Module) or not hasattr(field, "net") or not hasattr(field,
                                                                                    "dim"):
        raise TypeError(f"field must be a CNFField, got {type(field).__name__}")
    if regulariser is not None and not isinstance(regulariser, RNODE):
        raise TypeError(f"regulariser must be an RNODE or None, got "
                        f"{type(regulariser).__name__}")
    _check_tensor("x", x)
    if x.dim() != 2 or x.shape[-1] != field.dim:
        raise ValueError(f"x must have shape (B, {field.dim}), got {tuple(x.shape)}")
    if isinstance(end, bool) or not isinstance(end, (int, float)) or not end > 0:
        raise ValueError(f"end must be a number > 0 (the data time), got {end!r}")
    solve = odeint_adjoint if adjoint else odeint
    t = torch.tensor([float(end), 0.0], dtype=x.dtype, device=x.device)
    kw = dict(method=method, rtol=rtol, atol=atol, options=options, stats=stats)
    dim = field.dim
    if regulariser is None:
        s0 = torch.cat([x, x.new_zeros(len(x), 1)], dim=-1)
        s = solve(field, s0, t, **kw)[-1]
        kinetic = jacobian = None
    else:
        state = cnf_initial_state(x)
        kw["options"] = regulariser.solver_options(method, options, state[0].numel())
        s, k, b = solve(RegularisedCNFField(field, eps), state, t, **kw)
        # integrated from end to 0: the integrals from 0 to end are minus the final values
        s, kinetic, jacobian = s[-1], -k[-1].mean(), -b[-1].mean()
    nll = -(standard_normal_logprob(s[..., :dim]) - s[..., dim]).mean()
    return nll, kinetic, jacobian
