"""The explorers' pure functions: the recorded steps are the solver's own, the recorded backward
pass is odeint_adjoint's, and the exact answers are exact."""

import numpy as np
import pytest
import torch

import neuralode_helpers as nh
from neuralode_helpers.explorers import (
    STEP_METHODS,
    adjoint_summary,
    observation_times,
    running_limits,
)
from neuralode_helpers.plotting import find_line, plot_adjoint_pass, plot_steps
from neuralode_helpers.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, Stats


def toy_field(t, z):
    return nh.toy_dynamics(t, z, 0.0)


# -- step records --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
@pytest.mark.parametrize("rtol", [1e-2, 1e-4])
def test_marks_are_the_solvers_own_steps(method, rtol):
    rec = nh.toy_steps(method, rtol)
    stats = Stats()
    z = nh.odeint(toy_field, torch.ones(1, dtype=torch.float64),
                  torch.tensor([0.0, 10.0], dtype=torch.float64), method=method, rtol=rtol,
                  atol=rtol / 100, stats=stats)
    assert rec.n_steps == stats.forward.n_steps == len(rec.h) == len(rec.t) - 1
    assert rec.n_rejected == stats.forward.n_rejected == len(rec.rejected_t)
    assert rec.nfe == stats.forward.nfe
    assert rec.t[0] == 0.0 and rec.t[-1] == 10.0 and (rec.h > 0).all()
    np.testing.assert_allclose(rec.z[-1], float(z[-1, 0]), rtol=1e-14)
    exact = float(nh.toy_solution(torch.tensor(10.0)))
    assert rec.error == pytest.approx(abs(rec.z[-1] - exact))


def test_rejected_attempts_are_longer_than_the_step_that_replaced_them():
    rec = nh.toy_steps("dopri5", 1e-3)
    assert rec.n_rejected > 0
    for t0, h in zip(rec.rejected_t, rec.rejected_h):
        i = int(np.argmin(np.abs(rec.t[:-1] - t0)))
        assert rec.t[i] == pytest.approx(t0)  # a retry starts where the rejected one did
        assert h > rec.h[i]


def test_adaptive_steps_are_short_where_the_curve_bends():
    # Heun's error per step is about h^2 z''/2: its steps are longer near the inflection
    # points (z'' = 0) than at the peaks and troughs t = pi, 2 pi, 3 pi, at every tolerance.
    for rtol in (1e-2, 1e-3, 1e-4):
        rec = nh.toy_steps("adaptive_heun", rtol)
        mid = rec.t[:-1] + rec.h / 2

        def h_near(ts, rec=rec, mid=mid):
            return np.array([rec.h[np.argmin(np.abs(mid - t))] for t in ts])

        flat, bent = h_near([2.237, 4.046, 8.520]), h_near(np.pi * np.array([1, 2, 3]))
        assert flat.min() > 1.3 * bent.max(), (rtol, flat, bent)


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_a_fixed_step_method_takes_dopri5s_number_of_equal_steps(method):
    n = nh.toy_steps("dopri5", 1e-4).n_steps
    rec = nh.toy_steps(method, 1e-4)
    assert rec.n_steps == n and rec.n_rejected == 0
    np.testing.assert_allclose(rec.h, 10.0 / n)


def test_tighter_tolerance_more_steps_and_smaller_error():
    loose, tight = nh.toy_steps("dopri5", 1e-3), nh.toy_steps("dopri5", 1e-7)
    assert tight.n_steps > loose.n_steps and tight.nfe > loose.nfe
    assert tight.error < loose.error / 100


def test_a_low_order_at_a_tight_tolerance_gives_up_after_max_steps():
    with pytest.raises(nh.SolverError, match="max_num_steps=1000"):
        nh.toy_steps("adaptive_heun", 1e-6)
    assert nh.toy_steps("adaptive_heun", 1e-6, max_steps=10_000).n_steps > 1000


def test_record_steps_rejects_bad_input():
    z0 = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="one of"):
        nh.record_steps(toy_field, z0, (0, 1), method="scipy:LSODA")
    with pytest.raises(ValueError, match="step_size"):
        nh.record_steps(toy_field, z0, (0, 1), method="rk4")
    with pytest.raises(ValueError, match="rtol"):
        nh.record_steps(toy_field, z0, (0, 1), rtol=0)
    with pytest.raises(ValueError, match="increase"):
        nh.record_steps(toy_field, z0, (1, 0))
    assert "scipy:LSODA" not in STEP_METHODS


# -- the adjoint pass ----------------------------------------------------------------------------
def package_gradient(A, z0, t, *, rtol, restore_z):
    model = nh.LinearODE(A)
    z0 = z0.clone().requires_grad_(True)
    stats = Stats()
    # The explorer shows Chen et al.'s backward pass as it is, a diverging reconstruction
    # included: compare with the package's unguarded backsolve.
    zs = nh.odeint_adjoint(model, z0, t, rtol=rtol, atol=rtol / 100, restore_z=restore_z,
                           stats=stats, on_divergence="ignore")
    (0.5 * zs[1:].pow(2).sum()).backward()
    return model.A.grad.numpy(), z0.grad.numpy(), stats


@pytest.mark.parametrize("damping, n_obs, rtol, restore_z", [
    (0.5, 1, 1e-6, True), (1.0, 4, 1e-6, True), (8.0, 3, 1e-8, False), (8.0, 3, 1e-4, True),
])
def test_running_gradient_at_t0_is_odeint_adjoints(damping, n_obs, rtol, restore_z):
    A = nh.oscillator_matrix(damping)
    z0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = observation_times(4.0, n_obs)
    run = nh.adjoint_pass(A, z0, t, rtol=rtol, atol=rtol / 100, restore_z=restore_z)
    grad_A, grad_z0, stats = package_gradient(A, z0, t, rtol=rtol, restore_z=restore_z)
    # The same solver calls: equal to round-off, not just to the tolerance.
    np.testing.assert_allclose(run.grad[-1].reshape(2, 2), grad_A, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run.grad_A, grad_A, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run.a0, grad_z0, rtol=1e-12, atol=1e-14)  # no loss at t0
    assert run.nfe_forward == stats.forward.nfe and run.nfe_backward == stats.backward.nfe
    assert run.t[0] == 4.0 and run.t[-1] == 0.0 and (np.diff(run.t) <= 0).all()
    assert run.grad[0] == pytest.approx(np.zeros(4))  # a_theta starts at 0 at t_N


def test_adjoint_pass_is_exact_to_the_tolerance_and_jumps_at_observations():
    A = nh.oscillator_matrix(1.0)
    z0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = observation_times(4.0, 4)
    run = nh.adjoint_pass(A, z0, t, rtol=1e-9, atol=1e-11)
    exact = nh.exact_adjoint(A, z0, t)
    np.testing.assert_allclose(run.grad_A, exact.grad_A, rtol=1e-6)
    np.testing.assert_allclose(run.a0, exact.a0, rtol=1e-6)
    # a(t) along the whole pass, against the exact one (away from the jumps' two values).
    inner = ~np.isin(run.t, t.numpy())
    s = torch.tensor(run.t[inner])
    zs = nh.linear_solution(A, z0, t)
    a_exact = sum((s < ti)[:, None] * (torch.linalg.matrix_exp((ti - s)[:, None, None] * A.T)
                                       @ zi) for ti, zi in zip(t[1:], zs[1:]))
    assert np.abs(run.a[inner] - a_exact.numpy()).max() < 1e-6 * np.abs(exact.a).max()
    # At each t_i (i >= 1, not t_N where it starts) a jumps by l_i = z(t_i) exactly.
    for ti, zi in zip(t[1:-1].numpy(), run.z_obs[1:-1]):
        idx = np.flatnonzero(run.t == ti)
        assert len(idx) == 2
        np.testing.assert_allclose(run.a[idx[1]] - run.a[idx[0]], zi, rtol=1e-12, atol=1e-14)
    # The reconstruction follows the forward z on this gently damped system.
    z_exact = np.stack([np.interp(-run.t, -exact.t[::-1], exact.z[::-1, j]) for j in range(2)],
                       1)
    assert np.abs(run.z - z_exact).max() < 1e-3


def test_restoring_z_fixes_the_reconstruction_on_strong_damping():
    # Eigenvalues about -0.2 and -19.8: backwards, the fast mode grows like e^{19.8 t}.
    for damping in (16.0, 18.0, 20.0):
        A = nh.oscillator_matrix(damping)
        z0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
        t = observation_times(4.0, 8)
        exact = nh.exact_adjoint(A, z0, t)
        bad = nh.adjoint_pass(A, z0, t, rtol=1e-6, atol=1e-8, restore_z=False)
        good = nh.adjoint_pass(A, z0, t, rtol=1e-6, atol=1e-8, restore_z=True)
        err = [nh.relative_error(torch.tensor(r.grad_A), torch.tensor(exact.grad_A))
               for r in (bad, good)]
        assert err[0] > 1.0 and err[1] < 1e-3, (damping, err)
        assert np.abs(bad.z[-1] - exact.z[0]).max() > 10 * np.abs(exact.z[0]).max()


def test_exact_adjoint_matches_its_closed_forms():
    A = nh.oscillator_matrix(2.0)
    z0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = observation_times(3.0, 3)
    exact = nh.exact_adjoint(A, z0, t)
    zs = nh.linear_solution(A, z0, t)
    # a(t0) = dL/dz0 = sum_i e^{A^T (t_i - t0)} z_i; and a(t_N) = l_N = z_N.
    a0 = sum(torch.linalg.matrix_exp(A.T * ti) @ zi for ti, zi in zip(t[1:], zs[1:]))
    np.testing.assert_allclose(exact.a0, a0.numpy(), rtol=1e-12)
    np.testing.assert_allclose(exact.a[0], exact.a0, rtol=1e-12)
    np.testing.assert_allclose(exact.a[-1], zs[-1].numpy(), rtol=1e-12)
    np.testing.assert_allclose(exact.z[-1], zs[-1].numpy(), rtol=1e-12)
    assert exact.loss == pytest.approx(0.5 * float(zs[1:].pow(2).sum()))


def test_summary_states_the_errors_and_the_nfe():
    A = nh.oscillator_matrix(1.0)
    z0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = observation_times(4.0, 2)
    run, exact = nh.adjoint_pass(A, z0, t), nh.exact_adjoint(A, z0, t)
    text = adjoint_summary(run, exact)
    assert f"forward {run.nfe_forward}, backward {run.nfe_backward}" in text
    assert "relative error" in text


def test_upto_indexes_the_points_reached():
    run = nh.adjoint_pass(nh.oscillator_matrix(1.0), torch.tensor([1.0, 0.0]),
                          observation_times(4.0, 2))
    assert run.upto(4.0) >= 1 and run.upto(0.0) == len(run.t)
    k = run.upto(2.5)
    assert (run.t[:k] >= 2.5).all() and (run.t[k:] < 2.5).all()


def test_adjoint_pass_rejects_bad_input():
    A, z0 = nh.oscillator_matrix(1.0), torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match="increasing"):
        nh.adjoint_pass(A, z0, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"A \(D, D\)"):
        nh.adjoint_pass(A, torch.ones(3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="method"):
        nh.adjoint_pass(A, z0, torch.tensor([0.0, 1.0]), method="rk4")
    with pytest.raises(ValueError, match="n_obs"):
        observation_times(4.0, 0)
    with pytest.raises(ValueError, match="damping"):
        nh.oscillator_matrix(-1.0)


def test_running_limits_frame_the_reference_and_cap_a_runaway():
    lo, hi = running_limits([0.5, 1e30, np.nan], [0.0, 1.0], pad=0.0)
    assert (lo, hi) == (0.0, 2.0)
    lo, hi = running_limits([0.2, 0.8], [0.0, 1.0], pad=0.0)
    assert (lo, hi) == (0.0, 1.0)


# -- the figures ---------------------------------------------------------------------------------
def test_plot_adjoint_pass_shows_the_pass_up_to_t_and_updates_in_place():
    A, z0, t = nh.oscillator_matrix(1.0), torch.tensor([1.0, 0.0]), observation_times(4.0, 4)
    run, exact = nh.adjoint_pass(A, z0, t), nh.exact_adjoint(A, z0, t)
    fig = plot_adjoint_pass(run, exact, 2.0)
    ax_z, ax_a, ax_g = fig.axes
    k = run.upto(2.0)
    np.testing.assert_allclose(find_line(ax_z, "z1 rebuilt").get_xdata(), run.t[:k])
    np.testing.assert_allclose(find_line(ax_a, "a2 adjoint").get_ydata(), run.a[:k, 1])
    np.testing.assert_allclose(find_line(ax_g, "dL/dA21").get_ydata(), run.grad[:k, 2])
    np.testing.assert_allclose(find_line(ax_g, "dL/dA21 exact").get_ydata(),
                               [exact.grad_A[1, 0]] * 2)
    assert list(find_line(ax_z, "now").get_xdata()) == [2.0, 2.0]
    assert sum(ln.get_gid() == "jump" for ln in ax_a.get_lines()) == 4
    n_lines = [len(ax.get_lines()) for ax in fig.axes]
    assert plot_adjoint_pass(run, exact, None, fig.axes) is fig  # t0: the whole pass
    assert [len(ax.get_lines()) for ax in fig.axes] == n_lines  # moved, not added
    assert len(find_line(ax_g, "dL/dA11").get_xdata()) == len(run.t)


def test_plot_steps_marks_every_step():
    rec = nh.toy_steps("dopri5", 1e-3)
    fig = plot_steps(rec)
    ax_z, ax_h = fig.axes
    assert len(find_line(ax_z, "accepted steps").get_xdata()) == rec.n_steps + 1
    assert len(find_line(ax_z, "rejected steps").get_xdata()) == rec.n_rejected
    assert len(find_line(ax_h, "step size").get_ydata()) == rec.n_steps
    rec2 = nh.toy_steps("rk4", 1e-3)
    assert plot_steps(rec2, None, fig.axes) is fig
    assert len(find_line(ax_z, "rejected steps").get_xdata()) == 0
    assert "fixed step" in ax_z.get_title() and f"NFE {rec2.nfe}" in ax_z.get_title()
