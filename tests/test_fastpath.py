"""The hand-written field and VJPs of an ODENet (neuralode_helpers/fastpath.py) against
autograd: every activation, time input, dtype and batch shape to round-off; the adjoints'
gradients with the fast path on and off; the cases that must fall back; and the fast-path
adjoint against backprop through the solver at tight tolerances."""

import copy
import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import neuralode_helpers as nh
import neuralode_helpers.adjoint as adjoint_module
from neuralode_helpers.adjoint import _vjp
from neuralode_helpers.fastpath import plan_for
from neuralode_helpers.training import WindowedField

F64 = torch.float64
# Relative round-off allowed between the two ways of computing the same numbers.
ROUND_OFF = {torch.float64: 1e-12, torch.float32: 1e-5}

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": lambda: nn.ELU(alpha=0.7),
    "softplus": nn.Softplus,
    "softplus_beta_threshold": lambda: nn.Softplus(beta=2.0, threshold=1.5),
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}
TIME_INPUTS = {"t": dict(time_input="t"), "sincos": dict(time_input="sincos"),
               "none": dict(time_dependent=False)}
BATCHES = [(), (5,), (2, 3)]


def _net(activation, time, dtype, D=3, hidden=(7, 5), seed=0):
    torch.manual_seed(seed)
    return nh.ODENet(D, hidden, _factory(activation), **TIME_INPUTS[time]).to(dtype)


def _factory(name):
    """ODENet takes a module class or a module: the lambdas above make modules."""
    act = ACTIVATIONS[name]
    return act if isinstance(act, type) else act()


def _rel(x, ref):
    return ((x - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _compare(net, z, a, t, params):
    """Largest relative difference between the plan and autograd (f, z-VJP, θ-VJP, field)."""
    plan = plan_for(net, z, params)
    assert plan is not None
    f, vz, vp = _vjp(net, t, z, a, params)
    dt = z.dtype
    out_f, out_z = torch.empty(z.numel(), dtype=dt), torch.empty(z.numel(), dtype=dt)
    out_p = torch.empty(plan.n_param, dtype=dt)
    plan.vjp(t, z, a, out_f, out_z, out_p)
    return max(_rel(out_f, f.reshape(-1)), _rel(out_z, vz), _rel(out_p, torch.cat(vp)),
               _rel(plan.field(t, z), f))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("time", list(TIME_INPUTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_plan_matches_autograd(activation, time, dtype):
    torch.manual_seed(0)
    net = nh.ODENet(3, (7, 5), _factory(activation), **TIME_INPUTS[time]).to(dtype)
    # reversed: the flat output follows the caller's order, not the module's
    params = list(net.parameters())[::-1]
    for batch in BATCHES:
        z = 2 * torch.randn(*batch, 3, dtype=dtype)  # spans the activations' kinks
        a = torch.randn(*batch, 3, dtype=dtype)
        t = torch.tensor(0.7, dtype=dtype)
        assert _compare(net, z, a, t, params) <= ROUND_OFF[dtype], batch


def test_plan_partial_outputs_and_no_params():
    """Each output may be left out; without params the plan gives the z-VJP only."""
    net = _net("gelu", "t", F64)
    z, a = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    f, vz, vp = _vjp(net, t, z, a, list(net.parameters()))
    plan = plan_for(net, z, ())
    out_z = torch.empty(12, dtype=F64)
    plan.vjp(t, z, a, out_z=out_z)
    assert _rel(out_z, vz) <= 1e-12
    plan = plan_for(net, z, list(net.parameters()))
    out_p = torch.empty(plan.n_param, dtype=F64)
    plan.vjp(t, z, a, out_p=out_p)
    assert _rel(out_p, torch.cat(vp)) <= 1e-12


def _grads(net, z0, t, fast_path, params=None, stats=None, **kw):
    z, tt = z0.clone().requires_grad_(), t.clone().requires_grad_()
    ys = nh.odeint_adjoint(net, z, tt, fast_path=fast_path, params=params, stats=stats,
                           rtol=1e-6, atol=1e-8, **kw)
    w = torch.linspace(-1, 1, ys.numel(), dtype=ys.dtype).view(ys.shape)
    inputs = [z, tt, *(net.parameters() if params is None else params)]
    inputs = [x for x in inputs if x.requires_grad]
    g = torch.autograd.grad((ys * w).sum() + (ys ** 2).sum(), inputs)
    return torch.cat([x.reshape(-1) for x in g])


@pytest.fixture
def count_vjp(monkeypatch):
    """How often the readable autograd VJP ran (0 when the fast path did all the work)."""
    calls = [0]
    original = adjoint_module._vjp

    def counted(*args, **kw):
        calls[0] += 1
        return original(*args, **kw)

    monkeypatch.setattr(adjoint_module, "_vjp", counted)
    return calls


@pytest.mark.parametrize("seminorm", [True, False])
@pytest.mark.parametrize("restore_z", [True, False])
@pytest.mark.parametrize("adjoint", ["backsolve", "interpolated", "quadrature"])
def test_adjoint_fast_path_same_gradient_and_nfe(adjoint, restore_z, seminorm, count_vjp):
    net = _net("tanh", "sincos", F64, D=2, hidden=(16, 16))
    z0 = torch.randn(6, 2, dtype=F64)
    t = torch.tensor([0.0, 0.4, 1.0, 1.5], dtype=F64)
    out = {}
    for fast in (True, False):
        count_vjp[0] = 0
        stats = nh.Stats()
        g = _grads(net, z0, t, fast, stats=stats, adjoint=adjoint, restore_z=restore_z,
                   seminorm=seminorm)
        out[fast] = (g, stats.forward.nfe, stats.backward.nfe, stats.backward.n_steps,
                     count_vjp[0])
    assert out[True][4] == 0 and out[False][4] > 0  # the fast path did run, and only it
    assert _rel(out[True][0], out[False][0]) <= 1e-12
    assert out[True][1:4] == out[False][1:4]  # NFE forward and backward, steps


@pytest.mark.parametrize("activation", ["gelu", "softplus", "relu", "silu"])
def test_adjoint_fast_path_float32_and_unbatched(activation):
    net = _net(activation, "t", torch.float32, D=2, hidden=(8,))
    z0 = torch.randn(2)  # unbatched state (D,)
    t = torch.tensor([0.0, 0.5, 1.0])
    g_fast, g_off = _grads(net, z0, t, True), _grads(net, z0, t, False)
    assert _rel(g_fast, g_off) <= 1e-5


def test_fast_path_against_backprop_through_the_solver():
    """The fast-path adjoint gradient against an independent reference: backprop through
    odeint (autograd through every solver step) at tight tolerances."""
    net = _net("gelu", "t", F64, D=2, hidden=(12, 12))
    z0 = torch.randn(4, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    tight = dict(rtol=1e-11, atol=1e-13)
    z, tt = z0.clone().requires_grad_(), t.clone().requires_grad_()
    ys = nh.odeint_adjoint(net, z, tt, fast_path=True, **tight)
    g = torch.autograd.grad((ys ** 2).sum(), [z, tt, *net.parameters()])
    z, tt = z0.clone().requires_grad_(), t.clone().requires_grad_()
    ys = nh.odeint(net, z, tt, **tight)
    ref = torch.autograd.grad((ys ** 2).sum(), [z, tt, *net.parameters()])
    flat = torch.cat([x.reshape(-1) for x in g])
    assert _rel(flat, torch.cat([x.reshape(-1) for x in ref])) <= 1e-8


# ---- the cases that must fall back to autograd ---------------------------------------------
def _frozen_first_layer(net):
    for p in net.net[0].parameters():
        p.requires_grad_(False)
    return net


def _hooked(net):
    net.net[2].register_forward_hook(lambda m, i, o: o * 1.0)
    return net


def _hooked_pre(net):
    net.register_forward_pre_hook(lambda m, i: None)
    return net


class _OwnForward(nh.ODENet):
    def forward(self, t, z):
        return 0.5 * super().forward(t, z)


def test_plan_for_refuses_what_it_cannot_reproduce():
    z = torch.randn(4, 2, dtype=F64)
    assert plan_for(nh.CNFField(2, 8).double(), torch.randn(4, 3, dtype=F64)) is None
    assert plan_for(nh.LinearODE(torch.eye(2, dtype=F64)), z) is None
    assert plan_for(_OwnForward(2, (4,)).double(), z) is None
    assert plan_for(_hooked(nh.ODENet(2, (4, 4)).double()), z) is None
    assert plan_for(_hooked_pre(nh.ODENet(2, (4,)).double()), z) is None
    assert plan_for(nh.ODENet(2, (4,), nn.PReLU).double(), z) is None
    assert plan_for(nh.ODENet(2, (4,), nn.LeakyReLU).double(), z) is None
    assert plan_for(nh.ODENet(2, (4,)), z) is None  # float32 module, float64 z
    assert plan_for(nh.ODENet(3, (4,)).double(), z) is None  # z's last axis is not D
    net = nh.ODENet(2, (4,)).double()
    assert plan_for(net, z, list(net.parameters())[:2]) is None  # a subset
    assert plan_for(_frozen_first_layer(nh.ODENet(2, (4,)).double()), z) is None
    net = nh.ODENet(2, (4,)).double()
    net.net[0].weight.register_hook(lambda g: g)
    assert plan_for(net, z, list(net.parameters())) is None  # a hook on a gradient
    assert plan_for(nh.ODENet(2, (4,)).double(), z, list(net.parameters())) is None
    assert plan_for(nh.ODENet(2, (4,)).double(), (z,)) is None
    net = nh.ODENet(2, (4,)).double()
    net.net[0].forward = lambda x: 2 * nn.functional.linear(x, net.net[0].weight)
    assert plan_for(net, z) is None  # a forward replaced on an instance
    with torch.autocast("cpu"):
        assert plan_for(nh.ODENet(2, (4,)).double(), z) is None


@pytest.mark.parametrize("case", ["frozen", "hook", "subset", "cnf", "own_forward"])
def test_fallbacks_give_the_autograd_gradient(case, count_vjp):
    D = 3 if case == "cnf" else 2
    net = {"frozen": lambda: _frozen_first_layer(nh.ODENet(2, (8, 8))),
           "hook": lambda: _hooked(nh.ODENet(2, (8, 8))),
           "subset": lambda: _frozen_first_layer(nh.ODENet(2, (8, 8))),
           "cnf": lambda: nh.CNFField(2, 8),
           "own_forward": lambda: _OwnForward(2, (8, 8))}[case]().double()
    # params= given explicitly (in another order), all but the frozen first layer
    params = list(net.parameters())[:1:-1] if case == "subset" else None
    z0 = torch.randn(5, D, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    count_vjp[0] = 0
    g_fast = _grads(net, z0, t, True, params=params)
    assert count_vjp[0] > 0  # autograd did the work
    assert torch.equal(g_fast, _grads(net, z0, t, False, params=params))


def test_dtype_mismatch_behaves_as_without_the_fast_path():
    net = nh.ODENet(2, (4,))  # float32
    z0 = torch.randn(3, 2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    errors = []
    for fast in (True, False):
        with pytest.raises(Exception) as info:
            _grads(net, z0, t, fast)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_tuple_state_falls_back():
    net = nh.ODENet(2, (4,)).double()
    z0 = torch.randn(3, 2, dtype=F64, requires_grad=True)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, t, z):
            return (self.inner(t, z[0]), -z[1])

    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = nh.odeint_adjoint(Pair(), (z0, z0.detach().clone()), t, fast_path=True)
    ys[0].sum().backward()
    assert z0.grad is not None


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_fast_path_must_be_a_bool(bad):
    net = nh.ODENet(2, (4,))
    with pytest.raises(TypeError, match="fast_path must be True or False"):
        nh.odeint_adjoint(net, torch.randn(2), torch.tensor([0.0, 1.0]), fast_path=bad)


# ---- random networks ---------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(widths=st.lists(st.integers(1, 9), min_size=0, max_size=3),
       D=st.integers(1, 4), activation=st.sampled_from(sorted(ACTIVATIONS)),
       time=st.sampled_from(sorted(TIME_INPUTS)),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       batch=st.sampled_from(BATCHES), scale=st.floats(0.1, 5.0), seed=st.integers(0, 2**16))
def test_random_networks_match_autograd(widths, D, activation, time, dtype, batch, scale,
                                        seed):
    torch.manual_seed(seed)
    net = nh.ODENet(D, widths, _factory(activation), **TIME_INPUTS[time]).to(dtype)
    z = scale * torch.randn(*batch, D, dtype=dtype)
    a = torch.randn(*batch, D, dtype=dtype)
    t = torch.tensor(scale, dtype=dtype)
    params = list(net.parameters())
    perm = torch.randperm(len(params)).tolist()
    assert _compare(net, z, a, t, [params[i] for i in perm]) <= ROUND_OFF[dtype] * 10


def test_every_activation_and_time_input_is_recognised():
    for name, time in itertools.product(ACTIVATIONS, TIME_INPUTS):
        net = nh.ODENet(2, (3,), _factory(name), **TIME_INPUTS[time])
        assert plan_for(net, torch.randn(2), list(net.parameters())) is not None, (name, time)


# ---- dL/dθ summed over the accepted steps (fastpath.StepQuadrature) -----------------------
STEP_METHODS = {
    "dopri5": {}, "tsit5": {}, "bosh3": {}, "adaptive_heun": {}, "dopri8": {},
    "rk4": dict(options={"step_size": 0.05}), "euler": dict(options={"step_size": 0.05}),
}


@pytest.mark.parametrize("restore_z", [True, False])
@pytest.mark.parametrize("method", list(STEP_METHODS))
def test_step_quadrature_equals_the_integral_in_the_state(method, restore_z, monkeypatch):
    """The backsolve's a_θ summed over accepted steps equals a_θ carried in the state (the
    same steps, the same weights: round-off), with the same evaluations."""
    net = _net("softplus", "t", F64, D=2, hidden=(10, 10))
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.8, 1.0], dtype=F64)
    kw = dict(method=method, restore_z=restore_z, **STEP_METHODS[method])
    out = {}
    for on in (True, False):
        monkeypatch.setattr(adjoint_module, "_STEP_QUADRATURE", on)
        stats = nh.Stats()
        out[on] = (_grads(net, z0, t, True, stats=stats, **kw), stats.backward.nfe,
                   stats.backward.n_steps, stats.backward.n_rejected)
    assert _rel(out[True][0], out[False][0]) <= 1e-12
    assert out[True][1:] == out[False][1:]


def test_step_quadrature_shrinks_the_backward_state(monkeypatch):
    """With the seminorm the backward solve carries [z, a] only; with the full norm (a_θ
    controls the steps) it keeps a_θ in the state."""
    sizes = []
    original = adjoint_module._adjoint_solve

    def spy(cfg, f, y_end, *args, **kw):
        sizes.append(y_end.numel())
        return original(cfg, f, y_end, *args, **kw)

    monkeypatch.setattr(adjoint_module, "_adjoint_solve", spy)
    net = _net("tanh", "none", F64, D=2, hidden=(6,))
    z0, t = torch.randn(4, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    n_param = sum(p.numel() for p in net.parameters())
    _grads(net, z0, t, True, seminorm=True)
    _grads(net, z0, t, True, seminorm=False)
    _grads(net, z0, t, True, adjoint_options={"norm": lambda e: max(x.abs().max() for x in e)})
    assert sizes == [16, 16 + n_param, 16 + n_param]


def test_step_quadrature_with_rejected_steps(monkeypatch):
    """A backward solve that starts with a far too large step rejects attempts: they must
    not count."""
    net = _net("tanh", "t", F64, D=2, hidden=(16,))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)
    z0 = torch.randn(6, 2, dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    out = {}
    for on in (True, False):
        monkeypatch.setattr(adjoint_module, "_STEP_QUADRATURE", on)
        stats = nh.Stats()
        out[on] = (_grads(net, z0, t, True, stats=stats,
                           adjoint_options={"first_step": 2.0}), stats)
    assert out[True][1].backward.n_rejected == out[False][1].backward.n_rejected > 0
    assert _rel(out[True][0], out[False][0]) <= 1e-12


# ---- the training step's batch of windows (training.WindowedField) -------------------------
def _windowed(activation, time, dtype, B=5, D=2, hidden=(7, 5), delta=0.8, seed=0):
    """g(s, z) = Δ f(t0 + sΔ, z) over B windows with starts t0 (B,) spread over [-1, 9]."""
    net = _net(activation, time, dtype, D=D, hidden=hidden, seed=seed)
    t0 = torch.linspace(-1.0, 9.0, B, dtype=dtype)
    return WindowedField(net, t0, delta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("time", list(TIME_INPUTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_window_plan_matches_autograd(activation, time, dtype):
    field = _windowed(activation, time, dtype, D=3)
    params = list(field.parameters())[::-1]
    s = torch.tensor(0.35, dtype=dtype)
    # t0 (B,) for z (B, D); and t0 broadcast: one start for all, or (3,) for z (2, 3, D)
    for t0, batch in [(field.t0, (5,)), (torch.tensor(1.3, dtype=dtype), (5,)),
                      (torch.tensor([0.5, 2.0, -1.0], dtype=dtype), (2, 3))]:
        field.t0 = t0
        z = 2 * torch.randn(*batch, 3, dtype=dtype)
        a = torch.randn(*batch, 3, dtype=dtype)
        assert _compare(field, z, a, s, params) <= ROUND_OFF[dtype], (tuple(t0.shape), batch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("adjoint", ["backsolve", "interpolated", "quadrature"])
def test_window_adjoint_fast_path_same_gradient_and_nfe(adjoint, dtype, count_vjp):
    field = _windowed("gelu", "sincos", dtype, B=6, hidden=(16, 16))
    z0 = torch.randn(6, 2, dtype=dtype)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=dtype)
    out = {}
    for fast in (True, False):
        count_vjp[0] = 0
        stats = nh.Stats()
        g = _grads(field, z0, t, fast, stats=stats, adjoint=adjoint)
        out[fast] = (g, stats.forward.nfe, stats.backward.nfe, stats.backward.n_steps,
                     count_vjp[0])
    assert out[True][4] == 0 and out[False][4] > 0  # the fast path did run, and only it
    assert _rel(out[True][0], out[False][0]) <= ROUND_OFF[dtype]
    assert out[True][1:4] == out[False][1:4]  # NFE forward and backward, steps


class _OwnWindow(WindowedField):
    def forward(self, s, z):
        return 2.0 * super().forward(s, z)


def _window_fallbacks():
    """name -> (field, z): each must fall back to autograd."""
    z = torch.randn(5, 2, dtype=F64)

    def w(**kw):
        return _windowed(kw.pop("activation", "tanh"), "t", F64, **kw)

    out = {"subclass": (_OwnWindow(w().model, w().t0, 0.8), z)}
    hooked = w()
    hooked.register_forward_hook(lambda m, i, o: o * 1.0)
    out["hook on the window"] = (hooked, z)
    inner_hook = w()
    inner_hook.model.net[0].register_forward_hook(lambda m, i, o: o * 1.0)
    out["hook on the model"] = (inner_hook, z)
    out["t0 of the wrong shape"] = (WindowedField(w().model, torch.zeros(4, dtype=F64), 0.8), z)
    out["t0 of the wrong dtype"] = (WindowedField(w().model, torch.zeros(5), 0.8), z)
    out["t0 a float"] = (WindowedField(w().model, 0.5, 0.8), z)
    out["t0 requires grad"] = (WindowedField(w().model, torch.zeros(5, dtype=F64,
                                                                    requires_grad=True), 0.8), z)
    tensor_delta = w()
    tensor_delta.delta = torch.tensor(0.8, dtype=F64)
    out["delta a tensor"] = (tensor_delta, z)
    out["model PReLU"] = (WindowedField(nh.ODENet(2, (4,), nn.PReLU).double(),
                                        torch.zeros(5, dtype=F64), 0.8), z)
    out["model LinearODE"] = (WindowedField(nh.LinearODE(torch.eye(2, dtype=F64)),
                                            torch.zeros(5, dtype=F64), 0.8), z)
    out["model float32"] = (WindowedField(nh.ODENet(2, (4,)), torch.zeros(5, dtype=F64), 0.8),
                            z)
    extra = w()
    extra.scale = nn.Parameter(torch.ones((), dtype=F64))
    out["a parameter outside the model"] = (extra, z)
    return out


def test_window_plan_refuses_what_it_cannot_reproduce():
    field = _windowed("tanh", "t", F64)
    z = torch.randn(5, 2, dtype=F64)
    assert plan_for(field, z, list(field.parameters())) is not None
    for name, (f, zz) in _window_fallbacks().items():
        assert plan_for(f, zz, [p for p in f.parameters() if p.requires_grad]) is None, name


@pytest.mark.parametrize("case", ["subclass", "hook on the model", "t0 of the wrong shape",
                                  "model PReLU"])
def test_window_fallbacks_behave_as_without_the_fast_path(case, count_vjp):
    field, _ = _window_fallbacks()[case]
    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    results = []
    for fast in (True, False):
        count_vjp[0] = 0
        try:
            results.append(_grads(field, z0, t, fast))
        except Exception as error:  # the autograd path's own error, both times
            results.append((type(error), str(error)))
        assert count_vjp[0] > 0 or isinstance(results[-1], tuple)  # autograd did the work
    if isinstance(results[0], tuple):
        assert results[0] == results[1]
    else:
        assert torch.equal(results[0], results[1])


def test_every_activation_and_time_input_is_recognised_in_a_window():
    for name, time in itertools.product(ACTIVATIONS, TIME_INPUTS):
        for dtype in (torch.float32, torch.float64):
            field = _windowed(name, time, dtype, D=1, hidden=(3,))
            z = torch.randn(5, 1, dtype=dtype)
            assert plan_for(field, z, list(field.parameters())) is not None, (name, time)


@pytest.mark.parametrize("regularised", [False, True])
def test_train_with_the_adjoint_same_losses_fast_path_on_and_off(regularised, monkeypatch,
                                                                 count_vjp):
    """A few steps of ``train`` (adjoint, float32): the same losses and NFE with the fast
    path on and off (off: plan_for as the adjoint sees it returns None). RNODE's tuple state
    is not recognised: both runs go through autograd."""
    kw = dict(steps=3, batch_size=20, progress=False, adjoint=True, seed=1)
    if regularised:
        kw["regulariser"] = nh.RNODE(kinetic=0.01, jacobian=0.01)
    runs = {}
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(adjoint_module, "plan_for", lambda *a, **k: None)
        torch.manual_seed(0)
        model = nh.ODENet()
        count_vjp[0] = 0
        res = nh.train(model, **kw)
        runs[fast] = (res, count_vjp[0], torch.cat([p.detach().reshape(-1)
                                                    for p in model.parameters()]))
    (on, vjp_on, w_on), (off, vjp_off, w_off) = runs[True], runs[False]
    assert vjp_off > 0 and (vjp_on > 0) == regularised  # the fast path ran where it can
    assert on.nfe_forward == off.nfe_forward and on.nfe_backward == off.nfe_backward
    assert on.losses[0] == off.losses[0]  # same weights, same forward solve
    assert _rel(torch.tensor(on.losses, dtype=F64), torch.tensor(off.losses, dtype=F64)) <= 1e-5
    assert _rel(w_on, w_off) <= 1e-5



def test_step_quadrature_keeps_float32_digits(monkeypatch):
    """In float32 the step sum is as accurate as a_θ carried in the state. (Adding each
    step's product into the total with addmm_ lost digits: at rtol 1e-7 the gradient's error
    stopped at 1.3e-6 instead of 1.7e-7.)"""
    torch.manual_seed(0)
    net64 = nh.ODENet(2, hidden=(64, 64), activation=nn.Tanh, time_dependent=False).double()
    with torch.no_grad():
        for p in net64.parameters():
            p.mul_(2.0)
    net32 = copy.deepcopy(net64).float()
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(256, 2, generator=gen, dtype=F64)
    target = torch.randn(10, 256, 2, generator=gen, dtype=F64)
    t = torch.linspace(0.0, 2.0, 10, dtype=F64)

    def grads(net, solve, dtype, **kw):
        net.zero_grad()
        ys = solve(net, z0.to(dtype), t.to(dtype), **kw)
        ((ys - target.to(dtype)) ** 2).mean().backward()
        return torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double()

    reference = grads(net64, nh.odeint, F64, rtol=1e-10, atol=1e-12)
    errors = {}
    for on in (True, False):
        monkeypatch.setattr(adjoint_module, "_STEP_QUADRATURE", on)
        g = grads(net32, nh.odeint_adjoint, torch.float32, rtol=1e-7, atol=1e-8)
        errors[on] = _rel(g, reference)
    assert errors[False] < 5e-7  # float32 round-off, a_θ in the state
    assert errors[True] < 2 * errors[False] + 1e-7
