"""The explorers (FitExplorer, AdjointExplorer, StepSizeExplorer): moving a control moves the
line data of the same figure, correctly."""

import numpy as np
import pytest
import torch

import neuralode_helpers as nh
import neuralode_helpers.widgets as widgets_module
from neuralode_helpers.errors import SolverError
from neuralode_helpers.explorers import observation_times
from neuralode_helpers.plotting import find_line


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nh.ODENet(hidden=(8,))  # small and untrained: fast, and far from the truth


@pytest.fixture
def explorer(model):
    return nh.FitExplorer(model, c=0.0, t_range=(0.0, 10.0), n=40)


def assert_one_redraw_changes(e, control, value, axis, label):
    """Setting ``control`` (an attribute of explorer ``e``) to ``value`` redraws once and
    changes the data of the line ``label`` on ``e.axes[axis]``."""
    before = np.asarray(find_line(e.axes[axis], label).get_ydata()).copy()
    draws = e.n_draws
    getattr(e, control).value = value
    assert e.n_draws == draws + 1
    after = np.asarray(find_line(e.axes[axis], label).get_ydata())
    assert before.shape != after.shape or not np.array_equal(before, after)


def ydata(explorer, label):
    return np.asarray(explorer.lines[label].get_ydata())


def xdata(explorer, label):
    return np.asarray(explorer.lines[label].get_xdata())


def test_initial_lines_are_fit_curves(explorer, model):
    t, z_true, z_pred = nh.fit_curves(model, 0.0, 0.0, 10.0, 40)
    np.testing.assert_allclose(xdata(explorer, "Original"), t.numpy())
    np.testing.assert_allclose(ydata(explorer, "Original"), z_true.numpy())
    np.testing.assert_allclose(ydata(explorer, "Predicted"), z_pred.numpy())
    np.testing.assert_allclose(ydata(explorer, "Residual"), (z_pred - z_true).numpy(),
                               atol=1e-6)
    assert explorer.n_draws == 1


def test_c_slider_moves_the_curves_in_the_same_figure(explorer, model):
    fig, draws = explorer.fig, explorer.n_draws
    before = ydata(explorer, "Original").copy()
    explorer.c_slider.value = 2.0
    assert explorer.fig is fig
    assert explorer.n_draws == draws + 1
    t = torch.tensor(xdata(explorer, "Original"), dtype=torch.float32)
    np.testing.assert_allclose(ydata(explorer, "Original"), nh.toy_solution(t, 2.0).numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(ydata(explorer, "Original"), before + 2.0, rtol=1e-6)
    _, z_true, z_pred = nh.fit_curves(model, 2.0, 0.0, 10.0, 40)
    np.testing.assert_allclose(ydata(explorer, "Predicted"), z_pred.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ydata(explorer, "Residual"), (z_pred - z_true).numpy(),
                               atol=1e-5)


def test_time_slider_sets_the_window_and_the_x_limits(explorer, model):
    explorer.t_slider.value = (-5.0, 20.0)
    t = xdata(explorer, "Predicted")
    assert len(t) == 40 and t[0] == -5.0 and t[-1] == 20.0
    assert explorer.ax_fit.get_xlim() == (-5.0, 20.0)
    assert explorer.ax_residual.get_xlim() == (-5.0, 20.0)  # shared x axis
    _, z_true, z_pred = nh.fit_curves(model, 0.0, -5.0, 20.0, 40)
    np.testing.assert_allclose(ydata(explorer, "Original"), z_true.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ydata(explorer, "Predicted"), z_pred.numpy(), rtol=1e-6)


def test_update_moves_the_sliders_and_redraws_once(explorer):
    fig, draws = explorer.fig, explorer.n_draws
    assert explorer.update(c=-2.5, t_range=(1.0, 15.0)) is fig
    assert explorer.n_draws == draws + 1
    assert explorer.c_slider.value == -2.5
    assert tuple(explorer.t_slider.value) == (1.0, 15.0)
    assert explorer.ax_fit.get_xlim() == (1.0, 15.0)
    assert "OUTSIDE" in explorer.ax_fit.get_title()
    explorer.update(c=0.5)
    assert "inside" in explorer.ax_fit.get_title()
    assert tuple(explorer.t_slider.value) == (1.0, 15.0)  # kept


def test_y_limits_frame_the_true_curve(explorer):
    explorer.update(c=3.0, t_range=(0.0, 10.0))
    lo, hi = explorer.ax_fit.get_ylim()
    z_true = ydata(explorer, "Original")
    assert lo < z_true.min() and z_true.max() < hi


def test_rejects_an_empty_window(explorer):
    with pytest.raises(ValueError, match="t_end > t_start"):
        explorer.update(t_range=(3.0, 3.0))


def test_a_failed_solve_shows_the_truth_and_no_prediction(explorer, monkeypatch):
    def failing(*args, **kwargs):
        raise SolverError("step size underflow", t_reached=1.0, method="dopri5")

    monkeypatch.setattr(widgets_module, "fit_curves", failing)
    explorer.update(c=1.0)
    assert np.isnan(ydata(explorer, "Predicted")).all()
    t = torch.tensor(xdata(explorer, "Original"), dtype=torch.float32)
    np.testing.assert_allclose(ydata(explorer, "Original"), nh.toy_solution(t, 1.0).numpy(),
                               rtol=1e-6)


def test_widget_holds_the_sliders_and_the_output(explorer):
    box = explorer.widget
    assert explorer.output in box.children
    assert explorer.c_slider in box.children[0].children
    assert explorer.t_slider in box.children[0].children
    assert explorer.c_slider.min <= -3 and explorer.c_slider.max >= 3
    assert explorer.t_slider.min <= -5 and explorer.t_slider.max >= 20


def test_shading_follows_the_window_outside_the_trained_range(explorer):
    def spans(ax):
        return sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches
                      if p.get_gid() == "untrained")

    assert spans(explorer.ax_fit) == [] and spans(explorer.ax_residual) == []  # [0, 10] inside
    explorer.update(t_range=(-5.0, 15.0))
    lo, hi = explorer.trained_t_range
    assert spans(explorer.ax_fit) == [(-5.0, lo), (hi, 15.0)]
    assert spans(explorer.ax_residual) == [(-5.0, lo), (hi, 15.0)]
    explorer.update(t_range=(0.0, 5.0))
    assert spans(explorer.ax_fit) == [] and spans(explorer.ax_residual) == []


# -- the explorers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adjoint_explorer():
    return nh.AdjointExplorer(damping=1.0, n_obs=4, rtol=1e-6)


def test_adjoint_explorer_shows_the_pure_functions_results(adjoint_explorer):
    e = adjoint_explorer
    e.update(t=0.0, damping=1.0, n_obs=4, rtol=1e-6, restore=True)
    A, z0 = nh.oscillator_matrix(1.0), torch.tensor([1.0, 0.0], dtype=torch.float64)
    run = nh.adjoint_pass(A, z0, observation_times(4.0, 4), rtol=1e-6, atol=1e-8)
    ax_z, ax_a, ax_g = e.axes
    np.testing.assert_array_equal(find_line(ax_g, "dL/dA12").get_ydata(), run.grad[:, 1])
    np.testing.assert_array_equal(e.run.grad_A, run.grad_A)
    assert f"backward {run.nfe_backward}" in e.summary


def test_adjoint_time_slider_only_indexes(adjoint_explorer, monkeypatch):
    e = adjoint_explorer
    e.update(t=0.0, damping=1.0, n_obs=4, rtol=1e-6, restore=True)
    n_full = len(find_line(e.axes[2], "dL/dA11").get_xdata())

    def no_solving(*args, **kwargs):
        raise AssertionError("the time slider must not solve again")

    monkeypatch.setattr(widgets_module, "adjoint_pass", no_solving)
    draws = e.n_draws
    e.time_slider.value = 2.0
    assert e.n_draws == draws + 1
    x = np.asarray(find_line(e.axes[0], "z1 rebuilt").get_xdata())
    assert 0 < len(x) < n_full and x.min() >= 2.0
    assert list(find_line(e.axes[1], "now").get_xdata()) == [2.0, 2.0]


@pytest.mark.parametrize("control, value", [
    ("damping_slider", 8.0), ("n_obs_slider", 2), ("rtol_slider", 1e-4),
    ("restore_box", False),
])
def test_every_adjoint_control_changes_the_figure(adjoint_explorer, control, value):
    adjoint_explorer.update(t=0.0, damping=1.0, n_obs=4, rtol=1e-6, restore=True)
    assert_one_redraw_changes(adjoint_explorer, control, value, 2, "dL/dA11")


def test_adjoint_explorer_caches_each_setting(adjoint_explorer):
    e = adjoint_explorer
    e.update(damping=3.0, n_obs=3)
    run = e.run
    e.update(damping=1.0)
    e.update(damping=3.0)
    assert e.run is run


def test_restoring_z_is_what_fixes_the_strongly_damped_gradient(adjoint_explorer):
    e = adjoint_explorer
    e.update(t=0.0, damping=10.0, n_obs=4, rtol=1e-6, restore=False)
    bad = nh.relative_error(torch.tensor(e.run.grad_A), torch.tensor(e.exact.grad_A))
    e.update(restore=True)
    good = nh.relative_error(torch.tensor(e.run.grad_A), torch.tensor(e.exact.grad_A))
    assert bad > 1.0 and good < 1e-3


def test_adjoint_explorer_rejects_unknown_settings(adjoint_explorer):
    with pytest.raises(TypeError, match="unknown setting"):
        adjoint_explorer.update(dampin=2.0)


def test_adjoint_explorer_layout(adjoint_explorer):
    e = adjoint_explorer
    assert e.output in e.widget.children
    for w in (e.time_slider, e.restore_box, e.damping_slider, e.n_obs_slider, e.rtol_slider):
        assert any(w in box.children for box in e.widget.children[:2])
    assert e.time_slider.min == 0.0 and e.time_slider.max == 4.0
    assert e.png()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def step_explorer():
    return nh.StepSizeExplorer()


def test_step_explorer_marks_are_the_solvers_steps(step_explorer):
    e = step_explorer
    for method, rtol in [("adaptive_heun", 1e-2), ("dopri5", 1e-5), ("rk4", 1e-3)]:
        e.update(method=method, rtol=rtol)
        rec = nh.toy_steps(method, rtol)
        ax_z, ax_h = e.axes
        assert len(find_line(ax_z, "accepted steps").get_xdata()) == rec.n_steps + 1
        assert len(find_line(ax_z, "rejected steps").get_xdata()) == rec.n_rejected
        np.testing.assert_allclose(find_line(ax_h, "step size").get_ydata(), rec.h)
        assert f"NFE {rec.nfe}" in e.summary


@pytest.mark.parametrize("control, value", [("rtol_slider", 1e-5), ("method_menu", "bosh3")])
def test_every_step_control_changes_the_figure(step_explorer, control, value):
    step_explorer.update(method="adaptive_heun", rtol=1e-2)
    assert_one_redraw_changes(step_explorer, control, value, 1, "step size")


def test_step_explorer_says_when_a_solver_gives_up(step_explorer):
    e = step_explorer
    e.update(method="adaptive_heun", rtol=1e-7)
    assert "gave up after 1000 steps" in e.summary
    assert len(find_line(e.axes[0], "accepted steps").get_xdata()) == 0
    e.update(method="dopri5")
    assert len(find_line(e.axes[0], "accepted steps").get_xdata()) > 1
    assert set(e.method_menu.options) == set(nh.explorers.STEP_METHODS)


def test_a_time_step_repaints_only_the_moving_lines_and_gives_the_same_picture(
        adjoint_explorer):
    from io import BytesIO

    from PIL import Image

    def pixels(png):
        return np.asarray(Image.open(BytesIO(png)))

    e = adjoint_explorer
    e.update(t=0.5, damping=2.0, n_obs=3, rtol=1e-6, restore=True)
    e.png()  # the full render saves the background
    e.update(t=2.5)
    quick = e.png(quick=True)
    full = e.png()
    np.testing.assert_array_equal(pixels(quick), pixels(full))
    assert len(e._moving()) == 8 + 3  # z, a, dL/dA lines and a "now" line per panel
    e.update(t=1.5, damping=4.0)  # a new setting: the background is stale, draw everything
    np.testing.assert_array_equal(pixels(e.png()), pixels(e.png(quick=True)))


def test_values_a_control_would_change_are_refused(model):
    # a slider clamps a value outside its range and a menu refuses an unknown one with a
    # widget-internal error: the explorers say which argument and what range instead
    for make, match in [
        (lambda: nh.AdjointExplorer(damping=-1.0), r"damping must be in \[0, 12\]"),
        (lambda: nh.AdjointExplorer(n_obs=0), r"n_obs must be in \[1, 8\]"),
        (lambda: nh.AdjointExplorer(n_obs=2.5), "n_obs must be an int"),
        (lambda: nh.StepSizeExplorer(rtol=0.5), r"rtol must be in \[1e-08, 0.1\]"),
        (lambda: nh.StepSizeExplorer(method="rk45"), "method must be one of euler, "),
        (lambda: nh.FitExplorer(model, c=5.0), r"c must be in \[-3, 3\]"),
        (lambda: nh.FitExplorer(model, t_range=(0.0, 30.0)), r"t_range must be in \[-5, 20\]"),
        (lambda: nh.FitExplorer(lambda t, z: -z), "model must be a trained nn.Module"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            make()


def test_update_refuses_out_of_range_settings_and_keeps_the_figure(adjoint_explorer, explorer):
    draws, damping = adjoint_explorer.n_draws, adjoint_explorer.damping_slider.value
    with pytest.raises(ValueError, match="damping must be in"):
        adjoint_explorer.update(damping=20.0)
    with pytest.raises(ValueError, match=r"t must be in \[0, 4\]"):
        adjoint_explorer.update(t=-1.0)
    assert adjoint_explorer.n_draws == draws
    assert adjoint_explorer.damping_slider.value == damping
    c = explorer.c_slider.value
    with pytest.raises(ValueError, match="c must be in"):
        explorer.update(c=-4.0)
    assert explorer.c_slider.value == c
