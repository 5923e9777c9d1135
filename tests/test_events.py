"""odeint_event: event times against closed forms, gradients through the event time against
their analytic values (implicit function theorem) and against torchdiffeq's odeint_event."""

import math

import pytest
import torch
from torch import nn

from neuralode_helpers import odeint, odeint_adjoint
from neuralode_helpers.events import NoEventError, odeint_event

F64 = torch.float64
METHODS = [("dopri5", None), ("tsit5", None), ("rk4", {"step_size": 0.05})]
INTERFACES = {"odeint": odeint, "odeint_adjoint": odeint_adjoint}


class Falling(nn.Module):
    """z = (height, velocity), dz/dt = (v, -g), with gravity g a parameter."""

    def __init__(self, gravity, dtype=F64):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(gravity, dtype=dtype))

    def forward(self, t, z):
        return torch.stack([z[1], -self.g.expand_as(z[1])])


def height(t, z):
    return z[0]


def ball_closed_form(h0, v0, g):
    """Impact time after t0 and its derivatives d/dh0, d/dv0, d/dg, and the impact velocity.

    Height h0 + v0 s - g s^2 / 2 = 0 at s = (v0 + D) / g, D = sqrt(v0^2 + 2 g h0)."""
    D = math.sqrt(v0**2 + 2 * g * h0)
    s = (v0 + D) / g
    return s, 1 / D, (1 + v0 / D) / g, h0 / (g * D) - (v0 + D) / g**2, -D


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize("method,options", METHODS)
def test_falling_ball_event_time_and_gradients(interface, method, options):
    h0, v0, g, start = 2.0, 1.5, 9.81, 0.3
    s, dh0, dv0, dg, v_hit = ball_closed_form(h0, v0, g)
    ball = Falling(g)
    z0 = torch.tensor([h0, v0], dtype=F64, requires_grad=True)
    t0 = torch.tensor(start, dtype=F64, requires_grad=True)
    event_t, sol = odeint_event(ball, z0, t0, event_fn=height, method=method, options=options,
                                odeint_interface=INTERFACES[interface], rtol=1e-10, atol=1e-12)
    assert sol.shape == (2, 2)
    assert abs(event_t.item() - (start + s)) < 1e-11
    assert torch.equal(sol[0].detach(), z0.detach())
    assert abs(sol[1, 0].item()) < 1e-11 and abs(sol[1, 1].item() - v_hit) < 1e-10
    (grad_z0, grad_t0, grad_g) = torch.autograd.grad(event_t, (z0, t0, ball.g),
                                                     retain_graph=True)
    assert grad_z0.tolist() == pytest.approx([dh0, dv0], abs=1e-10)
    assert grad_g.item() == pytest.approx(dg, abs=1e-10)
    assert grad_t0.item() == pytest.approx(1.0, abs=1e-10)  # autonomous: a shift in time
    # The impact velocity -D = -sqrt(v0^2 + 2 g h0) through the solution's last state.
    grad_z0, grad_g = torch.autograd.grad(sol[1, 1], (z0, ball.g))
    D = -v_hit
    assert grad_z0.tolist() == pytest.approx([-g / D, -v0 / D], abs=1e-9)
    assert grad_g.item() == pytest.approx(-h0 / D, abs=1e-9)


class Decay(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))

    def forward(self, t, z):
        return -self.k * z


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize("method,options", METHODS)
def test_linear_decay_to_a_threshold(interface, method, options):
    """dz/dt = -k z reaches c at t* = log(z0 / c) / k; c is a parameter of event_fn."""
    k, z0v, cv = 0.7, 3.0, 0.4
    options = None if options is None else {"step_size": 0.01}
    decay = Decay(k)
    z0 = torch.tensor([z0v], dtype=F64, requires_grad=True)
    c = torch.tensor(cv, dtype=F64, requires_grad=True)
    event_t, sol = odeint_event(decay, z0, torch.tensor(0.0, dtype=F64),
                                event_fn=lambda t, z: z[0] - c, method=method, options=options,
                                odeint_interface=INTERFACES[interface], rtol=1e-11, atol=1e-13)
    L = math.log(z0v / cv)
    assert abs(event_t.item() - L / k) < 1e-9
    assert abs(sol[1, 0].item() - cv) < 1e-9
    grad_z0, grad_k, grad_c = torch.autograd.grad(event_t, (z0, decay.k, c))
    assert grad_z0.item() == pytest.approx(1 / (k * z0v), abs=1e-8)
    assert grad_k.item() == pytest.approx(-L / k**2, abs=1e-8)
    assert grad_c.item() == pytest.approx(-1 / (k * cv), abs=1e-8)


@pytest.mark.parametrize("interface", INTERFACES)
def test_reverse_time(interface):
    """Backwards from z(1) = z1 the decaying state grows: it was C at t* = 1 - log(C/z1)/k."""
    k, z1, C = 0.5, 1.0, 2.5
    decay = Decay(k)
    z0 = torch.tensor([z1], dtype=F64, requires_grad=True)
    event_t, sol = odeint_event(decay, z0, torch.tensor(1.0, dtype=F64), reverse_time=True,
                                event_fn=lambda t, z: z[0] - C,
                                odeint_interface=INTERFACES[interface], rtol=1e-11, atol=1e-13)
    assert abs(event_t.item() - (1 - math.log(C / z1) / k)) < 1e-9
    assert abs(sol[1, 0].item() - C) < 1e-9
    grad_z0, grad_k = torch.autograd.grad(event_t, (z0, decay.k))
    assert grad_z0.item() == pytest.approx(1 / (k * z1), abs=1e-8)
    assert grad_k.item() == pytest.approx(math.log(C / z1) / k**2, abs=1e-8)


def test_time_dependent_event_and_closure_params_for_the_adjoint():
    """g = t - T: the event is at T, dt*/dT = 1 (∂g/∂t alone makes the rate c); a closure
    over a tensor goes to odeint_adjoint as params."""
    T = torch.tensor(0.8, dtype=F64, requires_grad=True)
    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    z0 = torch.tensor([1.0, 0.0], dtype=F64)

    def rotate(t, z):
        return torch.stack([-w * z[1], w * z[0]])

    event_t, sol = odeint_event(rotate, z0, torch.tensor(0.0, dtype=F64),
                                event_fn=lambda t, z: t - T, odeint_interface=odeint_adjoint,
                                params=[w], rtol=1e-11, atol=1e-13)
    assert event_t.item() == pytest.approx(0.8, abs=1e-12)
    assert torch.autograd.grad(event_t, T, retain_graph=True)[0].item() == pytest.approx(1.0)
    # z(T) = (cos wT, sin wT): d z_1 / dT = w cos(wT), d z_1 / dw = T cos(wT)
    grad_T, grad_w = torch.autograd.grad(sol[1, 1], (T, w))
    assert grad_T.item() == pytest.approx(1.3 * math.cos(1.04), abs=1e-8)
    assert grad_w.item() == pytest.approx(0.8 * math.cos(1.04), abs=1e-8)


def test_tuple_state():
    h0, v0, g = 1.0, 0.0, 2.0
    h = torch.tensor([h0], dtype=F64, requires_grad=True)
    v = torch.tensor(v0, dtype=F64)
    event_t, (hs, vs) = odeint_event(lambda t, z: (z[1].reshape(1), -g * torch.ones_like(z[1])),
                                     (h, v), torch.tensor(0.0, dtype=F64),
                                     event_fn=lambda t, z: z[0].sum())
    s, dh0, *_ = ball_closed_form(h0, v0, g)
    assert hs.shape == (2, 1) and vs.shape == (2,)
    assert event_t.item() == pytest.approx(s, abs=1e-10)
    assert torch.autograd.grad(event_t, h)[0].item() == pytest.approx(dh0, abs=1e-10)


def test_event_at_the_start_is_t0():
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    event_t, sol = odeint_event(Falling(9.81), torch.tensor([0.0, -1.0], dtype=F64), t0,
                                event_fn=height)
    assert event_t.item() == 0.5 and torch.equal(sol[0], sol[1])
    assert torch.autograd.grad(event_t, t0)[0].item() == pytest.approx(1.0)


def test_float32():
    h0, v0, g = 2.0, 1.5, 9.81
    s, dh0, dv0, dg, _ = ball_closed_form(h0, v0, g)
    ball = Falling(g, dtype=torch.float32)
    z0 = torch.tensor([h0, v0], requires_grad=True)
    event_t, sol = odeint_event(ball, z0, 0.0, event_fn=height, rtol=1e-6, atol=1e-7)
    assert event_t.dtype == torch.float32 and sol.dtype == torch.float32
    assert event_t.item() == pytest.approx(s, abs=1e-5)
    grad_z0, grad_g = torch.autograd.grad(event_t, (z0, ball.g))
    assert grad_z0.tolist() == pytest.approx([dh0, dv0], abs=1e-5)
    assert grad_g.item() == pytest.approx(dg, abs=1e-5)


# --- Bouncing ball, against torchdiffeq ----------------------------------------------------

class Bouncing(nn.Module):
    """A ball under gravity that loses a fraction of its speed at every bounce: z = (height,
    velocity); at height 0 the velocity v becomes -e v (e: coefficient of restitution)."""

    def __init__(self):
        super().__init__()
        self.gravity = nn.Parameter(torch.tensor(9.81, dtype=F64))
        self.restitution = nn.Parameter(torch.tensor(0.8, dtype=F64))

    def forward(self, t, z):
        return torch.stack([z[1], -self.gravity.expand_as(z[1])])

    def bounces(self, event, z0, n, **kw):
        """The times of the first n bounces, found with ``event`` (an odeint_event)."""
        t, z, times = torch.tensor(0.0, dtype=F64), z0, []
        for _ in range(n):
            t, sol = event(self, z, t, event_fn=height, **kw)
            hit = sol[-1]
            times.append(t)
            # Off the ground by a hair, or the next search would start on the event.
            z = torch.stack([hit[0] + 1e-7, -self.restitution * hit[1]])
        return torch.stack(times)


def test_bouncing_ball_agrees_with_torchdiffeq():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    results = []
    for event, kw in ((odeint_event, {}),
                      (torchdiffeq.odeint_event, {"odeint_interface": torchdiffeq.odeint})):
        ball = Bouncing()
        z0 = torch.tensor([3.0, 0.5], dtype=F64, requires_grad=True)
        times = ball.bounces(event, z0, 4, method="dopri5", rtol=1e-10, atol=1e-10, **kw)
        grads = torch.autograd.grad(times[-1], (z0, ball.gravity, ball.restitution))
        results.append((times.detach(), torch.cat([x.reshape(-1) for x in grads])))
    (ours, our_grad), (theirs, their_grad) = results
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    assert torch.allclose(our_grad, their_grad, rtol=1e-6, atol=1e-6)
    # And the closed form: impact speed D, then each flight lasts 2 e^k D / g.
    h0, v0, g, e = 3.0, 0.5, 9.81, 0.8
    s, *_, v_hit = ball_closed_form(h0, v0, g)
    expected = [s + sum(2 * e**k * -v_hit / g for k in range(1, j + 1)) for j in range(4)]
    assert ours.tolist() == pytest.approx(expected, abs=1e-6)


# --- Bad input ------------------------------------------------------------------------------

def _ball_args():
    return Falling(9.81), torch.tensor([2.0, 0.0], dtype=F64), torch.tensor(0.0, dtype=F64)


def test_event_fn_not_callable():
    with pytest.raises(TypeError, match="event_fn must be callable"):
        odeint_event(*_ball_args(), event_fn=0.0)


def test_event_fn_returning_a_vector_or_a_number():
    with pytest.raises(ValueError, match=r"scalar \(one element\), got shape \(2,\)"):
        odeint_event(*_ball_args(), event_fn=lambda t, z: z)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        odeint_event(*_ball_args(), event_fn=lambda t, z: 1.0)


def test_no_event_within_the_horizon():
    """Upward gravity never brings the ball down: a clear error, not a spin."""
    ball, z0, t0 = _ball_args()
    with torch.no_grad():
        ball.g.fill_(-1.0)
    with pytest.raises(NoEventError, match="no event.*horizon=100"):
        odeint_event(ball, z0, t0, event_fn=height, horizon=100.0)
    with pytest.raises(NoEventError, match="after max_steps=50 steps") as info:
        odeint_event(ball, z0, t0, event_fn=height, method="rk4",
                     options={"step_size": 0.01}, max_steps=50)
    assert info.value.t_reached == pytest.approx(0.5)
    with pytest.raises(NoEventError, match="reverse_time"):  # the event is in the past
        odeint_event(Decay(1.0), torch.tensor([1.0], dtype=F64), 0.0,
                     event_fn=lambda t, z: z[0] - 2.0, horizon=50.0)


def test_bad_search_settings():
    with pytest.raises(ValueError, match="step_size"):
        odeint_event(*_ball_args(), event_fn=height, method="rk4")
    with pytest.raises(ValueError, match="black box"):
        odeint_event(*_ball_args(), event_fn=height, method="scipy:RK45")
    with pytest.raises(ValueError, match="horizon"):
        odeint_event(*_ball_args(), event_fn=height, horizon=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        odeint_event(*_ball_args(), event_fn=height, max_steps=0)
