"""Plot functions: each returns its figure, draws on a given axes, and plots the data given."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import neuralode_helpers as nh
from neuralode_helpers.plotting import find_line, moving_average


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def curves():
    t = torch.linspace(0, 10, 50, dtype=torch.float64)
    z_true = nh.toy_solution(t, 0.5)
    z_pred = z_true + 0.1 * torch.sin(t)
    return t, z_true, z_pred


CALLS = {
    "plot_loss": lambda ax: nh.plot_loss(np.linspace(1.0, 0.01, 60), ax=ax),
    "plot_fit": lambda ax: nh.plot_fit(*curves(), ax=ax),
    "plot_residual": lambda ax: nh.plot_residual(*curves(), ax=ax),
    "plot_nfe": lambda ax: nh.plot_nfe([20, 26, 32], [18, 20, 30], ax=ax),
    "plot_gradient_check": lambda ax: nh.plot_gradient_check(
        torch.tensor([1.0, -2.0, 3e-3]), torch.tensor([1.0, -2.0, 3e-3]), ax=ax),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_returns_a_new_figure_without_ax(name):
    fig = CALLS[name](None)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_lines(), "nothing was drawn"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_draws_on_the_given_axes(name):
    fig, (ax_other, ax) = plt.subplots(1, 2)
    assert CALLS[name](ax) is fig
    assert ax.get_lines()
    assert not ax_other.get_lines(), "drew on the wrong axes"


def test_fit_plots_the_given_curves():
    t, z_true, z_pred = curves()
    fig = nh.plot_fit(t, z_true, z_pred)
    ax = fig.axes[0]
    x, y = find_line(ax, "Original").get_data()
    np.testing.assert_array_equal(x, t.numpy())
    np.testing.assert_array_equal(y, z_true.numpy())
    np.testing.assert_array_equal(find_line(ax, "Predicted").get_ydata(), z_pred.numpy())
    assert ax.get_xlim() == (0.0, 10.0)


def test_residual_is_prediction_minus_truth():
    t, z_true, z_pred = curves()
    ax = nh.plot_residual(t, z_true, z_pred).axes[0]
    np.testing.assert_allclose(find_line(ax, "Residual").get_ydata(),
                               (z_pred - z_true).numpy(), rtol=0, atol=1e-15)


def test_loss_is_on_a_log_scale_with_its_moving_average():
    losses = np.exp(-np.linspace(0, 5, 100))
    ax = nh.plot_loss(losses, smooth=10).axes[0]
    assert ax.get_yscale() == "log"
    np.testing.assert_array_equal(find_line(ax, "per step").get_ydata(), losses)
    avg = find_line(ax, "moving average (10 steps)")
    np.testing.assert_allclose(avg.get_ydata()[0], losses[:10].mean())
    assert avg.get_xdata()[0] == 10  # the first average covers steps 1..10


def test_moving_average_matches_the_naive_sum():
    x = np.random.default_rng(0).normal(size=30)
    expected = [x[i:i + 7].mean() for i in range(30 - 7 + 1)]
    np.testing.assert_allclose(moving_average(x, 7), expected)


def test_nfe_without_backward_draws_only_forward():
    ax = nh.plot_nfe([10, 12, 14]).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["forward"]
    np.testing.assert_array_equal(find_line(ax, "forward").get_xdata(), [1, 2, 3])


def test_gradient_check_reports_the_relative_error():
    ref = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    est = [torch.tensor([3.0, 0.5]), torch.tensor([[4.0]])]  # error norm 0.5, ref norm 5
    ax = nh.plot_gradient_check(ref, est).axes[0]
    points = [line for line in ax.get_lines() if "entries" in line.get_label()][0]
    assert "3 entries, rel. error 1.0e-01" in points.get_label()
    np.testing.assert_array_equal(points.get_xdata(), [3.0, 0.0, 4.0])
    with pytest.raises(ValueError, match="entries"):
        nh.plot_gradient_check(torch.ones(3), torch.ones(4))


def test_find_line_names_the_missing_label():
    ax = nh.plot_nfe([1, 2]).axes[0]
    with pytest.raises(KeyError, match="backward"):
        find_line(ax, "backward (adjoint)")


def _untrained_spans(ax):
    return [p for p in ax.patches if p.get_gid() == "untrained"]


def test_fit_inside_the_trained_range_has_no_shading_and_no_legend_entry():
    t, z_true, z_pred = curves()  # t in [0, 10]
    ax = nh.plot_fit(t, z_true, z_pred, trained_range=(-1.0, 11.0)).axes[0]
    assert not _untrained_spans(ax)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["Original", "Predicted"]


def test_fit_shades_only_the_parts_outside_the_trained_range():
    t = torch.linspace(-5, 20, 60, dtype=torch.float64)
    z_true = nh.toy_solution(t, 0.0)
    ax = nh.plot_fit(t, z_true, z_true, trained_range=(-1.0, 11.0)).axes[0]
    spans = _untrained_spans(ax)
    assert len(spans) == 2
    extents = sorted((s.get_x(), s.get_x() + s.get_width()) for s in spans)
    np.testing.assert_allclose(extents, [(-5.0, -1.0), (11.0, 20.0)])
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels.count(nh.plotting.UNTRAINED_LABEL) == 1


def test_shade_untrained_replaces_its_earlier_shading():
    fig, ax = plt.subplots()
    nh.plotting.shade_untrained(ax, -5.0, 20.0, (-1.0, 10.0))
    nh.plotting.shade_untrained(ax, 0.0, 12.0, (-1.0, 10.0))
    (span,) = _untrained_spans(ax)
    assert (span.get_x(), span.get_x() + span.get_width()) == (10.0, 12.0)
    assert nh.plotting.shade_untrained(ax, 0.0, 5.0, (-1.0, 10.0)) == []
    assert not _untrained_spans(ax)


def test_loss_and_nfe_take_what_train_returned():
    adjoint = nh.TrainResult(losses=[1.0, 0.5, 0.25], nfe_forward=[20, 26, 32],
                             nfe_backward=[18, 20, 30])
    ax = nh.plot_loss(adjoint, smooth=0).axes[0]
    np.testing.assert_array_equal(find_line(ax, "per step").get_ydata(), [1.0, 0.5, 0.25])
    ax = nh.plot_nfe(adjoint).axes[0]
    np.testing.assert_array_equal(find_line(ax, "forward").get_ydata(), [20, 26, 32])
    np.testing.assert_array_equal(find_line(ax, "backward (adjoint)").get_ydata(),
                                  [18, 20, 30])
    # trained by backprop: no backward solve, so no backward line
    backprop = nh.TrainResult(losses=[1.0, 0.5], nfe_forward=[20, 26], nfe_backward=[0, 0])
    ax = nh.plot_nfe(backprop).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["forward"]
