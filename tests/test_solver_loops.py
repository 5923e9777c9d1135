"""The integration loops (solvers/adaptive.py, solvers/fixed.py) and odeint's composition of
them: step budgets, fixed-step counts in float32, where a failure is reported, checkpointed
solves that keep their step size, argument checks, torchdiffeq's step callbacks (issue #20)."""

import pytest
import torch
from torch import nn

import neuralode_helpers as nh
from neuralode_helpers.solvers.odeint import solve
from neuralode_helpers.solvers.stats import SolveStats

F64, F32 = torch.float64, torch.float32
ROTATION = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)  # the harmonic oscillator


def oscillator(t, z):
    return z @ ROTATION.T


# -- 1. max_num_steps counts the attempts between two output times ------------------------------
def test_max_num_steps_is_a_budget_per_output_interval():
    # About 5 steps per interval of 0.5, some 500 in all: torchdiffeq finishes this, since its
    # counter restarts at every output time.
    z0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0, 50, 101, dtype=F64)
    stats = nh.Stats()
    zs = nh.odeint(oscillator, z0, t, options={"max_num_steps": 10}, stats=stats)
    assert stats.forward.n_steps + stats.forward.n_rejected > 10
    exact = torch.stack([torch.cos(t), -torch.sin(t)], dim=1)
    assert (zs - exact).abs().max() < 1e-5


def test_max_num_steps_still_stops_a_long_interval():
    z0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(nh.SolverError, match="max_num_steps=10") as info:
        nh.odeint(oscillator, z0, torch.tensor([0.0, 50.0], dtype=F64),
                  options={"max_num_steps": 10})
    assert 0 < info.value.t_reached < 50


# -- 2. the number of fixed steps does not depend on round-off in t -----------------------------
@pytest.mark.parametrize("method,times,h,expected", [
    ("rk4", lambda dtype: torch.linspace(0, 1, 11, dtype=dtype), 0.01, 100),
    ("euler", lambda dtype: torch.tensor([0.0, 0.3], dtype=dtype), 0.1, 3),
    # far from 0, Δt's round-off is large
    ("midpoint", lambda dtype: torch.linspace(1000, 1001, 11, dtype=dtype), 0.05, 20),
    ("rk4", lambda dtype: torch.linspace(1, 0, 6, dtype=dtype), 0.1, 10),  # decreasing t
])
def test_fixed_step_count_is_the_same_in_float32_and_float64(method, times, h, expected):
    counts = {}
    for dtype in (F32, F64):
        stats = nh.Stats()
        nh.odeint(lambda t_, z: -z, torch.ones(1, dtype=dtype), times(dtype), method=method,
                  options={"step_size": h}, stats=stats)
        counts[dtype] = stats.forward.n_steps
    assert counts[F32] == counts[F64] == expected


def test_fixed_step_count_rounds_up_a_genuine_remainder():
    # 0.35 / 0.1 = 3.5 steps: four steps of 0.0875, in float32 as in float64.
    for dtype in (F32, F64):
        stats = nh.Stats()
        nh.odeint(lambda t_, z: -z, torch.ones(1, dtype=dtype),
                  torch.tensor([0.0, 0.35], dtype=dtype), method="euler",
                  options={"step_size": 0.1}, stats=stats)
        assert stats.forward.n_steps == 4


# -- 3. a fixed-step blow-up is reported where it happened ---------------------------------------
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_step_nan_reports_the_last_finite_time(method):
    def nan_after_half(t, z):
        return z * (float("nan") if t > 0.5 else 1.0)

    with pytest.raises(nh.SolverError, match="non-finite") as info:
        nh.odeint(nan_after_half, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                  method=method, options={"step_size": 0.1})
    # The step from 0.5 is the first to evaluate f beyond 0.5 (euler evaluates only at 0.5,
    # so its first bad step starts at 0.6; rk4 evaluates at 0.55 within the step from 0.5).
    expected = 0.6 if method == "euler" else 0.5
    assert info.value.t_reached == pytest.approx(expected)


# -- 4. checkpoint="observations" keeps the step size from one interval to the next -------------
def _nfe(t, **kw):
    stats = nh.Stats()
    nh.odeint(oscillator, torch.tensor([1.0, 0.0], dtype=F64), t, stats=stats, **kw)
    return stats.forward.nfe


def test_checkpointed_observations_cost_about_as_much_as_plain_odeint():
    # 50 intervals, about one plain step each: restarting the step-size selection in every
    # interval cost 772 evaluations against plain odeint's 356; carrying the step size, 453.
    t = torch.linspace(0, 10, 51, dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-8)
    plain = _nfe(t, **kw)
    by_interval = _nfe(t, checkpoint="observations", **kw)
    assert by_interval <= 1.5 * plain


def test_checkpointed_observations_gradient_equals_backprop_through_the_same_solves():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    def f(t, z):
        return net(z)

    z0 = torch.randn(5, 2, dtype=F64)
    t = torch.linspace(0, 2, 9, dtype=F64)
    w = torch.randn(len(t), 5, 2, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-6, atol=1e-8)

    def grads(solver):
        net.zero_grad()
        z0r = z0.clone().requires_grad_()
        (solver(z0r) * w).sum().backward()
        return [z0r.grad] + [p.grad.clone() for p in net.parameters()]

    def by_hand(z0r):
        # Interval by interval, each starting with the step size its predecessor proposed.
        out, carry, options = [z0r], {}, {}
        for i in range(1, len(t)):
            ys = solve(f, out[-1], t[i - 1:i + 1], options=options, stats=SolveStats(),
                       carry=carry, **kw)
            out.append(ys[-1])
            options = {"first_step": carry["next_step"]}
        return torch.stack(out)

    reference = grads(by_hand)
    got = grads(lambda z0r: nh.odeint(f, z0r, t, checkpoint="observations", **kw))
    for a, b in zip(got, reference):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


# -- 5. every argument is checked, also when there is nothing to solve ---------------------------
def test_arguments_are_checked_for_a_single_time():
    z0, t = torch.ones(2, dtype=F64), torch.tensor([0.0], dtype=F64)
    with pytest.raises(ValueError, match="checkpoint must be"):
        nh.odeint(oscillator, z0, t, checkpoint="bogus")
    with torch.no_grad(), pytest.raises(ValueError, match="black box"):
        nh.odeint(oscillator, z0, t, method="scipy:LSODA", checkpoint="steps")
    with pytest.raises(TypeError, match="stats"):
        nh.odeint(oscillator, z0, t, stats=SolveStats())
    assert torch.equal(nh.odeint(oscillator, z0, t), z0[None])


# -- 6. SolverError is also an AssertionError, as torchdiffeq's failures are ---------------------
def test_solver_error_is_caught_as_assertion_error():
    z0 = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(AssertionError, match="max_num_steps=3") as info:
        nh.odeint(oscillator, z0, torch.tensor([0.0, 50.0], dtype=F64),
                  options={"max_num_steps": 3})
    err = info.value
    assert isinstance(err, nh.SolverError) and isinstance(err, RuntimeError)
    assert "options['max_num_steps']" in str(err)
    # The constructor the adjoint uses still works.
    assert nh.SolverError("x", t_reached=1.0, method="rk4").t_reached == 1.0


# -- 7. torchdiffeq's step callbacks ------------------------------------------------------------
class Recorder(nn.Module):
    """dz/dt = A z, recording torchdiffeq's step callbacks."""

    def __init__(self, tuple_state=False):
        super().__init__()
        self.A = nn.Parameter(ROTATION.clone())
        self.tuple_state = tuple_state
        self.calls = {"step": [], "accept": [], "reject": []}

    def forward(self, t, z):
        if self.tuple_state:
            return (z[1], -z[0])
        return z @ self.A.T

    def _record(self, kind, t0, y0, dt):
        self.calls[kind].append((float(t0), y0, float(dt)))

    def callback_step(self, t0, y0, dt):
        self._record("step", t0, y0, dt)

    def callback_accept_step(self, t0, y0, dt):
        self._record("accept", t0, y0, dt)

    def callback_reject_step(self, t0, y0, dt):
        self._record("reject", t0, y0, dt)


def test_adaptive_step_callbacks_match_the_counts():
    model = Recorder()
    stats = nh.Stats()
    z0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0, 5, 4, dtype=F64)
    # A first step far too large forces rejections.
    nh.odeint(model, z0, t, options={"first_step": 3.0}, stats=stats)
    calls = model.calls
    assert stats.forward.n_rejected > 0
    assert len(calls["accept"]) == stats.forward.n_steps
    assert len(calls["reject"]) == stats.forward.n_rejected
    assert len(calls["step"]) == stats.forward.n_steps + stats.forward.n_rejected
    # Each accepted step starts where the previous one ended, from the state it reached.
    ends = [t0 + dt for t0, _, dt in calls["accept"]]
    assert [t0 for t0, _, _ in calls["accept"][1:]] == pytest.approx(ends[:-1])
    assert ends[-1] == pytest.approx(5.0)
    assert torch.equal(calls["accept"][0][1], z0)
    assert calls["step"][0][2] == 3.0 and calls["reject"][0][2] == 3.0


def test_step_callbacks_see_the_users_state_and_time_direction():
    model = Recorder(tuple_state=True)
    z0 = (torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64))
    nh.odeint(model, z0, torch.tensor([1.0, 0.0], dtype=F64))
    t0, y0, dt = model.calls["accept"][0]
    assert t0 == 1.0 and dt < 0
    assert isinstance(y0, tuple) and torch.equal(y0[0], z0[0]) and torch.equal(y0[1], z0[1])


def test_fixed_step_callback_is_called_before_every_step():
    model = Recorder()
    stats = nh.Stats()
    with pytest.warns(UserWarning, match="callback_accept_step"):
        nh.odeint(model, torch.tensor([1.0, 0.0], dtype=F64),
                  torch.tensor([0.0, 0.5, 1.0], dtype=F64), method="rk4",
                  options={"step_size": 0.1}, stats=stats)
    steps = model.calls["step"]
    assert len(steps) == stats.forward.n_steps == 10
    assert [s[0] for s in steps] == pytest.approx([0.1 * k for k in range(10)])
    assert all(s[2] == pytest.approx(0.1) for s in steps)
    assert not model.calls["accept"] and not model.calls["reject"]


def test_checkpointed_backward_does_not_repeat_the_callbacks():
    model = Recorder()
    stats = nh.Stats()
    z0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    ys = nh.odeint(model, z0, torch.linspace(0, 2, 5, dtype=F64), checkpoint="observations",
                   stats=stats)
    n = len(model.calls["accept"])
    assert n == stats.forward.n_steps > 0
    ys.sum().backward()
    assert len(model.calls["accept"]) == n and stats.forward.n_steps == n


# -- 8. landing on every output time is an explicit choice ----------------------------------------
def _adaptive_solve(t, **kw):
    stats = SolveStats()
    ys = solve(oscillator, torch.tensor([1.0, 0.0], dtype=F64), t, method="dopri5",
               rtol=1e-6, atol=1e-8, options={}, stats=stats, **kw)
    return ys, stats


def test_land_on_outputs_without_a_callback():
    t = torch.linspace(0, 10, 41, dtype=F64)
    times = []

    def on_step(t_start, t_end, h, y, y_new, ks):
        times.append(t_end)

    _, free = _adaptive_solve(t)
    landed, stats = _adaptive_solve(t, land_on_outputs=True, on_step=on_step)
    assert set(t.tolist()[1:]) <= set(times)
    assert stats.n_steps > free.n_steps
    # The same steps as with a callback that leaves the state alone.
    with_callback, cb_stats = _adaptive_solve(t, callback=lambda i, y: y)
    assert torch.equal(landed, with_callback) and cb_stats.n_steps == stats.n_steps


def test_a_callback_needs_landing():
    with pytest.raises(ValueError, match="land_on_outputs"):
        _adaptive_solve(torch.linspace(0, 1, 3, dtype=F64), callback=lambda i, y: y,
                        land_on_outputs=False)


# -- a custom norm of a tuple state gets the tuple (torchdiffeq's form) --------------------------
@pytest.mark.parametrize("checkpoint", [None, "observations"])
def test_custom_norm_of_a_tuple_state_gets_a_tuple(checkpoint):
    shapes = []

    def norm(scaled):
        shapes.append([tuple(p.shape) for p in scaled])
        return max(p.pow(2).mean().sqrt() for p in scaled)

    z0 = (torch.ones(2, 1, dtype=F64), torch.zeros(2, 3, dtype=F64))
    nh.odeint(lambda t, z: (-z[0], z[1] + 1), z0, torch.tensor([0.0, 1.0], dtype=F64),
              options={"norm": norm}, checkpoint=checkpoint)
    assert shapes and all(s == [(2, 1), (2, 3)] for s in shapes)


# -- fixed steps leave their first stage to the step (inside checkpoint="steps") ------------------
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_steps_under_checkpoint_do_not_evaluate_twice(method):
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    nfe = {}
    for checkpoint in (None, "steps"):
        stats = nh.Stats()
        nh.odeint(lambda t, z: net(z), torch.randn(3, 2, dtype=F64),
                  torch.linspace(0, 1, 3, dtype=F64), method=method,
                  options={"step_size": 0.1}, stats=stats, checkpoint=checkpoint)
        nfe[checkpoint] = stats.forward.nfe
    # One more: the first stage, evaluated before the solve, is evaluated again inside.
    assert nfe["steps"] == nfe[None] + 1
