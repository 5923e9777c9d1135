"""FitExplorer: moving a slider moves the line data of the same figure, correctly."""

import numpy as np
import pytest
import torch

import neuralode_helpers as nh
import neuralode_helpers.widgets as widgets_module
from neuralode_helpers.errors import SolverError


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nh.ODENet(hidden=(8,))  # small and untrained: fast, and far from the truth


@pytest.fixture
def explorer(model):
    return nh.FitExplorer(model, c=0.0, t_range=(0.0, 10.0), n=40)


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
