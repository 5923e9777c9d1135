r"""A hand-written field and vector–Jacobian product for :class:`~.models.ODENet`.

The adjoint's readable path (:func:`~.adjoint._vjp`) calls the module with a graph and asks
autograd for :math:`-(\partial f/\partial z)^\top a` and :math:`-(\partial f/\partial
\theta)^\top a`: about a dozen small operations of bookkeeping around the few matrix products
that do the work. For the MLP that :class:`~.models.ODENet` is, the same numbers can be
written down directly. With input :math:`x_0 = [z, \tau]` (:math:`\tau = t`, or
:math:`(\sin t, \cos t)`, or nothing), layers :math:`k = 1..L`,

.. math::
    u_k = W_k x_{k-1} + b_k, \quad x_k = \sigma(u_k)\ (k < L), \quad f = u_L,

and, for the vector :math:`g = -a`,

.. math::
    \delta_L = g, \quad \delta_k = (W_{k+1}^\top \delta_{k+1}) \odot \sigma'(u_k), \quad
    -\Big(\frac{\partial f}{\partial W_k}\Big)^\top a = \delta_k x_{k-1}^\top, \quad
    -\Big(\frac{\partial f}{\partial b_k}\Big)^\top a = \delta_k, \quad
    -\Big(\frac{\partial f}{\partial z}\Big)^\top a = W_{1,z}^\top \delta_1,

summed over the batch for the parameters (:math:`W_{1,z}` the columns of :math:`W_1` that
read z). Every product is one ``torch`` kernel writing into a buffer (``out=``), kept per
batch size and dtype; :math:`\delta \odot \sigma'(u)` is PyTorch's own backward kernel of
each activation (``tanh_backward``, ``gelu_backward``, ...: the one autograd calls), so the
numbers are autograd's to round-off, without the autograd machinery around them. Under
the seminorm the backsolve can also leave a_θ out of its state and sum the parameter VJPs
over its accepted steps only (:class:`StepQuadrature`).

:func:`plan_for` recognises the module and returns a :class:`Plan`, or None for anything it
cannot reproduce exactly (the caller then uses autograd). Shapes: z is ``(..., D)`` (any
leading batch shape, or unbatched ``(D,)``), t a 0-d tensor; the flat outputs are in the
order of the ``params`` list the caller gives.

The training step's batch of windows (:class:`~.training.WindowedField` around an ODENet f)
is recognised too: its field is :math:`g(s, z) = \Delta\, f(z, \tau)` with a time per sample
:math:`\tau = t_0 + s\Delta` (``t0`` of shape broadcastable to ``z.shape[:-1]``), so the
time columns of :math:`x_0` hold each row's own :math:`\tau` (or :math:`(\sin\tau,
\cos\tau)`), the output is scaled by :math:`\Delta`, and the VJPs start from
:math:`g = -\Delta a`:

.. math::
    -\Big(\frac{\partial g}{\partial z}\Big)^\top a
        = -\Big(\frac{\partial f}{\partial z}\Big)^\top (\Delta a), \qquad
    -\Big(\frac{\partial g}{\partial \theta}\Big)^\top a
        = -\Big(\frac{\partial f}{\partial \theta}\Big)^\top (\Delta a).

The parameters are the inner ODENet's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from .models import ODENet

_DTYPES = (torch.float32, torch.float64)


# ---- activations: σ(u) into x, and δ ← δ ⊙ σ'(u) in place ----------------------------------
_aten = torch.ops.aten


class _Activation:
    """One element-wise activation. ``forward(u, x)`` writes σ(u) into x;
    ``backprop(d, u, x)`` multiplies d in place by σ'(u), with PyTorch's own backward kernel
    for the activation (the one autograd calls: the same numbers, one fused kernel).
    ``keeps_u = False``: the derivative is computed from the output x alone, so x may
    overwrite u (one buffer)."""

    keeps_u = True


class _Tanh(_Activation):
    keeps_u = False  # σ' = 1 - x²

    def forward(self, u, x):
        torch.tanh(u, out=x)

    def backprop(self, d, u, x):
        _aten.tanh_backward.grad_input(d, x, grad_input=d)


class _Sigmoid(_Activation):
    keeps_u = False  # σ' = (1 - x) x

    def forward(self, u, x):
        torch.sigmoid(u, out=x)

    def backprop(self, d, u, x):
        _aten.sigmoid_backward.grad_input(d, x, grad_input=d)


class _ReLU(_Activation):
    keeps_u = False  # σ' = 0 where x <= 0, else 1

    def forward(self, u, x):
        torch.clamp_min(u, 0.0, out=x)

    def backprop(self, d, u, x):
        _aten.threshold_backward.grad_input(d, x, 0, grad_input=d)


class _SiLU(_Activation):
    """σ(u) = u s(u), σ' = s(u) (1 + u (1 - s(u))), s the logistic sigmoid."""

    def forward(self, u, x):
        torch._C._nn.silu(u, out=x)

    def backprop(self, d, u, x):
        _aten.silu_backward.grad_input(d, u, grad_input=d)


class _ELU(_Activation):
    """σ(u) = u for u > 0, α(eᵘ - 1) else; σ' = 1 for u > 0, α eᵘ else."""

    def __init__(self, alpha):
        self.alpha = float(alpha)

    def forward(self, u, x):
        torch._C._nn.elu(u, self.alpha, 1.0, 1.0, out=x)

    def backprop(self, d, u, x):
        _aten.elu_backward.grad_input(d, self.alpha, 1.0, 1.0, False, u, grad_input=d)


class _Softplus(_Activation):
    """σ(u) = log(1 + e^{βu}) / β, and u itself where βu > threshold; σ' = e^{βu} / (e^{βu} +
    1) below the threshold, 1 above."""

    def __init__(self, beta, threshold):
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, u, x):
        torch._C._nn.softplus(u, self.beta, self.threshold, out=x)

    def backprop(self, d, u, x):
        _aten.softplus_backward.grad_input(d, u, self.beta, self.threshold, grad_input=d)


class _GELU(_Activation):
    r"""Exact (``approximate="none"``): σ(u) = u Φ(u), σ' = Φ(u) + u φ(u). Tanh approximation:
    σ(u) = ½u(1 + tanh r), r = k(u + κu³), σ' = ½(1 + tanh r) + ½ku(1 - tanh² r)(1 + 3κu²),
    k = √(2/π), κ = 0.044715."""

    def __init__(self, approximate):
        self.approximate = approximate

    def forward(self, u, x):
        torch._C._nn.gelu(u, approximate=self.approximate, out=x)

    def backprop(self, d, u, x):
        _aten.gelu_backward.grad_input(d, u, approximate=self.approximate, grad_input=d)


def _activation(module):
    """The :class:`_Activation` for a module, or None when it is not one reproduced here."""
    kind = type(module)
    if kind is nn.Tanh:
        return _Tanh()
    if kind is nn.Sigmoid:
        return _Sigmoid()
    if kind is nn.ReLU:
        return _ReLU()
    if kind is nn.SiLU:
        return _SiLU()
    if kind is nn.ELU:
        return _ELU(module.alpha)
    if kind is nn.Softplus:
        return _Softplus(module.beta, module.threshold)
    if kind is nn.GELU and module.approximate in ("none", "tanh"):
        return _GELU(module.approximate)
    return None


# ---- recognising the module --------------------------------------------------------------------
def _has_hooks(module):
    """Whether anything would run besides the layers' own forward: hooks on the module or its
    children, global module hooks, a forward set on an instance, or hooks on the
    parameters' gradients."""
    globals_ = (_module._global_forward_hooks, _module._global_forward_pre_hooks,
                _module._global_backward_hooks, _module._global_backward_pre_hooks)
    if any(globals_):
        return True
    for m in module.modules():
        if (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or m._backward_pre_hooks):
            return True
    if any("forward" in vars(m) for m in module.modules()):
        return True  # a forward replaced on the instance
    return any(getattr(p, "_backward_hooks", None) for p in module.parameters())


def _autocast(device_type):
    """Whether autocast would run the layers in a lower precision (the plan does not)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # an older torch (< 2.4): one function per device
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def _window(func, z):
    """``(t0, Δ)`` of a :class:`~.training.WindowedField` the plan reproduces: ``t0``
    broadcast to ``z.shape[:-1]`` and flattened to ``(M,)`` (M rows of ``z.reshape(-1, D)``),
    Δ a float; None for a subclass with its own forward, a ``t0`` that is not a plain tensor
    of z's dtype and device broadcastable to ``z.shape[:-1]`` (or that requires grad), a Δ
    that is not a float, or anything outside the inner model (parameters, modules)."""
    if type(func).forward is not _windowed_field().forward:
        return None
    t0, delta = getattr(func, "t0", None), getattr(func, "delta", None)
    if type(t0) is not torch.Tensor or type(delta) is not float or t0.requires_grad:
        return None
    if type(z) is not torch.Tensor or z.ndim < 1 or t0.dtype != z.dtype \
            or t0.device != z.device:
        return None
    batch = z.shape[:-1]
    try:
        if torch.broadcast_shapes(t0.shape, batch) != batch:
            return None
    except RuntimeError:
        return None
    model = getattr(func, "model", None)
    if not isinstance(model, nn.Module) or list(func.children()) != [model] \
            or len(list(func.parameters())) != len(list(model.parameters())):
        return None
    return t0.detach().expand(batch).reshape(-1), delta


def _windowed_field():
    # imported here: training imports the adjoint, which imports this module
    from .training import WindowedField

    return WindowedField


def plan_for(func, z, params=()):
    """A :class:`Plan` that evaluates ``func`` (an :class:`~.models.ODENet`, or a
    :class:`~.training.WindowedField` around one) and its VJPs by hand, or None where the
    autograd path must be used.

    ``z``: a state of the shape and dtype the plan will see (``(..., D)``, a plain tensor).
    ``params``: the tensors whose VJP is asked for, in the order of the flat output; they
    must be exactly the module's parameters (each requiring grad), or empty (no parameter
    VJP). None (fall back) for: any other module (a subclass with its own forward, a
    CNF's field, a user's module), a layer or activation not reproduced here, hooks,
    autocast (the plan computes in the parameters' dtype), a dtype, device or tensor
    type other than the module's float32/float64 parameters', a parameter that does not
    require grad, ``params`` that are not all of the module's parameters, a parameter
    used by two layers, a z whose last axis is not the state; and, for a WindowedField, the
    cases of :func:`_window` and the inner model's own."""
    window = None
    if isinstance(func, _windowed_field()):
        window = _window(func, z)
        if window is None or _has_hooks(func):
            return None
        func = func.model
    if not isinstance(func, ODENet) or type(func).forward is not ODENet.forward:
        return None
    net = getattr(func, "net", None)
    if type(net) is not nn.Sequential or len(net) % 2 != 1:
        return None
    if type(z) is not torch.Tensor or z.dtype not in _DTYPES or z.ndim < 1:
        return None
    D = func.state_dim
    if z.shape[-1] != D or _has_hooks(func) or _autocast(z.device.type):
        return None
    mods = list(net)
    linears, acts = mods[0::2], [_activation(m) for m in mods[1::2]]
    if any(type(m) is not nn.Linear or m.bias is None for m in linears) or None in acts:
        return None
    tensors = [p for m in linears for p in (m.weight, m.bias)]
    if any(type(p) not in (nn.Parameter, torch.Tensor) or p.dtype != z.dtype
           or p.device != z.device or not p.requires_grad for p in tensors):
        return None
    if len({id(p) for p in tensors}) != len(tensors):
        return None  # a layer used twice: its gradient is a sum
    if list(func.parameters()) and len(list(func.parameters())) != len(tensors):
        return None  # parameters outside the layers (an activation's own)
    n_time = (2 if func.time_input == "sincos" else 1) if func.time_dependent else 0
    if linears[0].in_features != D + n_time or linears[-1].out_features != D:
        return None
    params = list(params)
    offsets = None
    if params:
        where, start = {}, 0
        for p in params:
            if id(p) in where:
                return None
            where[id(p)] = start
            start += p.numel()
        if len(params) != len(tensors) or any(id(p) not in where for p in tensors):
            return None
        offsets = [(where[id(m.weight)], where[id(m.bias)]) for m in linears]
    return Plan(linears, acts, D, func.time_input if n_time else None, offsets,
                sum(p.numel() for p in params), window)


# ---- the plan ------------------------------------------------------------------------------
class _Buffers:
    """The tensors of one evaluation for M rows: the input x₀ (with the time columns), per
    hidden layer u, x (one tensor when the activation needs only its output) and δ."""

    def __init__(self, widths, acts, M, dtype, device, n_time):
        def e(*shape):
            return torch.empty(shape, dtype=dtype, device=device)

        self.x0 = e(M, widths[0]) if n_time else None
        self.tau = e(M) if n_time else None  # a window's time per row, and its sine, cosine
        self.trig = e(M) if n_time == 2 else None
        self.u, self.x, self.d = [], [], []
        for w, act in zip(widths[1:-1], acts):
            u = e(M, w)
            self.u.append(u)
            self.x.append(e(M, w) if act.keeps_u else u)
            self.d.append(e(M, w))
        self.g = e(M, widths[-1])  # -a


class Plan:
    """The field of a recognised :class:`~.models.ODENet` and its VJP, by hand.

    ``field(t, z)``: f(t, z), a fresh tensor of z's shape (no graph).
    ``vjp(t, z, a, out_f, out_z, out_p)``: writes f into ``out_f``,
    :math:`-(\\partial f/\\partial z)^\\top a` into ``out_z`` (both of z's numel) and
    :math:`-(\\partial f/\\partial\\theta)^\\top a` into ``out_p`` (flat, ``n_param``, in the
    order of the ``params`` given to :func:`plan_for`); any of them may be None (not wanted).
    :meth:`backsolve_rhs`, :meth:`interpolated_rhs` and :meth:`step_quadrature` build the
    adjoints' right-hand sides from these. With ``window = (t0, Δ)`` (a WindowedField;
    ``t0`` flat, one time per row of ``z.reshape(-1, D)``), t is the window's s: the rows'
    times are τ = t0 + sΔ, and f and -a are scaled by Δ.
    """

    def __init__(self, linears, acts, D, time_input, offsets, n_param, window=None):
        # Detached views share storage with the parameters: updates in place are seen.
        self.weights = [m.weight.detach() for m in linears]
        self.biases = [m.bias.detach() for m in linears]
        self.weights_t = [w.t() for w in self.weights]
        self.wz = self.weights[0][:, :D]  # the columns of W₁ that read z
        self.acts, self.D, self.time_input = acts, D, time_input
        self.n_time = 0 if time_input is None else (2 if time_input == "sincos" else 1)
        self.offsets, self.n_param = offsets, n_param
        self.t0, self.delta = window if window is not None else (None, None)
        self.widths = [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]
        self._cache = {}

    def _buffers(self, M, dtype, device):
        key = (M, dtype, device)
        buf = self._cache.get(key)
        if buf is None:
            buf = self._cache[key] = _Buffers(self.widths, self.acts, M, dtype, device,
                                              self.n_time)
        return buf

    def _input(self, t, z2, buf):
        """x₀ = [z, τ] (a view of z itself without a time input)."""
        if not self.n_time:
            return z2
        x0, D = buf.x0, self.D
        x0[:, :D].copy_(z2)
        t = torch.as_tensor(t, dtype=z2.dtype, device=z2.device)
        if self.t0 is not None:
            return self._window_input(t, x0, buf)
        if self.n_time == 1:
            x0[:, D].fill_(t)
        else:
            x0[:, D].fill_(torch.sin(t))
            x0[:, D + 1].fill_(torch.cos(t))
        return x0

    def _window_input(self, t, x0, buf):
        """The time columns of a window: τ = t0 + sΔ per row (as WindowedField computes it:
        sΔ first), then τ or (sin τ, cos τ), each computed contiguous and copied in."""
        if x0.shape[0] != self.t0.shape[0]:
            raise RuntimeError(f"internal error: the windowed plan was made for "
                               f"{self.t0.shape[0]} rows, got {x0.shape[0]}")
        D = self.D
        tau = torch.add(self.t0, t * self.delta, out=buf.tau)
        if self.n_time == 1:
            x0[:, D].copy_(tau)
        else:
            x0[:, D].copy_(torch.sin(tau, out=buf.trig))
            x0[:, D + 1].copy_(torch.cos(tau, out=buf.trig))
        return x0

    def _forward(self, t, z2, buf, out_f):
        """The layers: u_k, x_k into the buffers, f into out_f; returns x₀."""
        x = x0 = self._input(t, z2, buf)
        for k, act in enumerate(self.acts):
            u = buf.u[k]
            torch.addmm(self.biases[k], x, self.weights_t[k], out=u)
            act.forward(u, buf.x[k])
            x = buf.x[k]
        if out_f is not None:
            torch.addmm(self.biases[-1], x, self.weights_t[-1], out=out_f)
            if self.delta is not None:
                out_f.mul_(self.delta)  # a window's g = Δ f
        return x0

    def field(self, t, z):
        """f(t, z): a fresh tensor of z's shape."""
        z2 = z.detach().reshape(-1, self.D)
        out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        self._forward(t, z2, self._buffers(z2.shape[0], z.dtype, z.device),
                      out.view(-1, self.D))
        return out

    def vjp(self, t, z, a, out_f=None, out_z=None, out_p=None):
        r"""f and the VJPs with g = -a, into the given flat outputs (None: not wanted)."""
        D = self.D
        z2 = z.detach().reshape(-1, D)
        buf = self._buffers(z2.shape[0], z.dtype, z.device)
        x0 = self._forward(t, z2, buf, None if out_f is None else out_f.view(-1, D))
        g = torch.neg(a.reshape(-1, D), out=buf.g)
        if self.delta is not None:
            g.mul_(self.delta)  # a window's -Δa
        L = len(self.weights)
        xs = [x0, *buf.x]
        d = g
        for k in range(L - 1, -1, -1):
            if out_p is not None:
                ow, ob = self.offsets[k]
                wk = self.weights[k]
                torch.mm(d.t(), xs[k], out=out_p[ow:ow + wk.numel()].view(wk.shape))
                torch.sum(d, 0, out=out_p[ob:ob + wk.shape[0]])
            if k == 0:
                break
            d_prev = buf.d[k - 1]
            torch.mm(d, self.weights[k], out=d_prev)
            self.acts[k - 1].backprop(d_prev, buf.u[k - 1], buf.x[k - 1])
            d = d_prev
        if out_z is not None:
            torch.mm(d, self.wz, out=out_z.view(-1, D))

    # ---- the adjoints' right-hand sides ------------------------------------------------
    def backsolve_rhs(self, n, with_params):
        """y = [z, a, (a_θ)] ↦ [f, -(∂f/∂z)ᵀa, (-(∂f/∂θ)ᵀa)]: one fresh flat tensor."""
        size = 2 * n + (self.n_param if with_params else 0)

        def rhs(t, y):
            out = torch.empty(size, dtype=y.dtype, device=y.device)
            self.vjp(t, y[:n], y[n:2 * n], out[:n], out[n:2 * n],
                     out[2 * n:] if with_params else None)
            return out

        return rhs

    def interpolated_rhs(self, n, with_params, z_of):
        """y = [a, (a_θ)] ↦ [-(∂f/∂z)ᵀa, (-(∂f/∂θ)ᵀa)] at z = ``z_of(t)``."""
        size = n + (self.n_param if with_params else 0)

        def rhs(t, y):
            out = torch.empty(size, dtype=y.dtype, device=y.device)
            self.vjp(t, z_of(t), y[:n], None, out[:n], out[n:] if with_params else None)
            return out

        return rhs

    def step_quadrature(self, n, b):
        """A :class:`StepQuadrature` for the backsolve with the tableau weights ``b``."""
        return StepQuadrature(self, n, b)

    def _vjp_recording(self, t, z, a, out_f, out_z):
        """As :meth:`vjp` without the parameter VJP, into fresh tensors that are returned:
        per layer k, (δ_k, x_{k-1}), from which -(∂f/∂W_k)ᵀa = δ_kᵀ x_{k-1} and
        -(∂f/∂b_k)ᵀa = Σ_rows δ_k."""
        D = self.D
        z2 = z.detach().reshape(-1, D)
        if self.n_time:
            x = self._input(t, z2, self._buffers(z2.shape[0], z.dtype, z.device)).clone()
        else:
            x = z2.clone()  # z may be a view of a buffer the solver reuses
        xs, us = [x], []
        for k, act in enumerate(self.acts):
            u = torch.addmm(self.biases[k], x, self.weights_t[k])
            x = torch.empty_like(u) if act.keeps_u else u
            act.forward(u, x)
            us.append(u)
            xs.append(x)
        torch.addmm(self.biases[-1], x, self.weights_t[-1], out=out_f.view(-1, D))
        d = torch.neg(a.reshape(-1, D))
        if self.delta is not None:  # a window's g = Δ f, and -Δa
            out_f.mul_(self.delta)
            d.mul_(self.delta)
        ds = [d]
        for k in range(len(self.weights) - 1, 0, -1):
            d = torch.mm(d, self.weights[k])
            self.acts[k - 1].backprop(d, us[k - 1], xs[k])
            ds.append(d)
        torch.mm(d, self.wz, out=out_z.view(-1, D))
        return list(zip(ds[::-1], xs))


class StepQuadrature:
    r"""The backsolve's parameter integral accumulated over accepted steps only.

    Under the seminorm a_θ never enters the step-size control, and nothing in the dynamics
    depends on it: the solver's update of a_θ over an accepted step is
    :math:`h \sum_j b_j k^\theta_j` with :math:`k^\theta_j = -(\partial f/\partial
    \theta)^\top a` at stage j. So the backward state is only [z, a] (2n instead of 2n + P),
    each evaluation keeps its δ_k and layer inputs x_{k-1} (looked up by the identity of
    the tensor it returned, which the solver passes back in ``ks``), and each accepted step
    adds :math:`h\, b_j\, \delta_{k,j}^\top x_{k-1,j}` per stage and layer (rejected steps
    and stages with :math:`b_j = 0` cost nothing). ``rhs`` is the right-hand side of [z,
    a]; ``on_step`` the solver's callback; ``total`` the flat integral, in ``params``
    order."""

    def __init__(self, plan, n, b):
        self.plan, self.n, self.b = plan, n, [float(x) for x in b]
        self.total = None
        self._records = {}

    def rhs(self, t, y):
        n = self.n
        out = torch.empty(2 * n, dtype=y.dtype, device=y.device)
        record = self.plan._vjp_recording(t, y[:n], y[n:], out[:n], out[n:])
        self._records[id(out)] = (out, record)  # holding out keeps its id unique
        if self.total is None:
            self.total = torch.zeros(self.plan.n_param, dtype=y.dtype, device=y.device)
        return out

    def on_step(self, t, t_new, h, y, y_new, ks):
        plan, total = self.plan, self.total
        used = [(bj, k) for bj, k in zip(self.b, ks) if bj]
        entries = []
        for _, k in used:
            entry = self._records.get(id(k))
            if entry is None or entry[0] is not k:
                raise RuntimeError("internal error: a stage of the backward solve was not "
                                   "evaluated by the fast path's right-hand side")
            entries.append(entry[1])
        weights = torch.tensor([h * bj for bj, _ in used], dtype=total.dtype,
                               device=total.device).view(-1, 1, 1)
        # Per layer, one matrix product over the stages stacked along the rows:
        # Σ_j h b_j δ_jᵀ x_j = [h b_j δ_j]_jᵀ [x_j]_j. The product is formed on its own and
        # then added: addmm_ into the running total lost digits in float32 (the gradient's
        # error stopped at ~1e-6 instead of ~2e-7 on make bench's problem at rtol 1e-7).
        for layer, (w, (ow, ob)) in enumerate(zip(plan.weights, plan.offsets)):
            d = torch.stack([e[layer][0] for e in entries]).mul_(weights)
            x = torch.stack([e[layer][1] for e in entries])
            d, x = d.view(-1, d.shape[-1]), x.view(-1, x.shape[-1])
            total[ow:ow + w.numel()].view(w.shape).add_(torch.mm(d.t(), x))
            total[ob:ob + w.shape[0]].add_(d.sum(0))
        # Only the last stage can be used again (the next step's first, FSAL).
        last = self._records.get(id(ks[-1]))
        self._records = {} if last is None else {id(ks[-1]): last}
