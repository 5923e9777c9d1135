"""Projector mode: one call makes later figures' text and lines larger; a second restores."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from neuralode_helpers.plotting import PROJECTOR_RC, new_figure, plot_loss, projector_mode  # noqa: E402


@pytest.fixture
def restore_rc():
    before = dict(matplotlib.rcParams)
    yield
    projector_mode(False)
    matplotlib.rcParams.update(before)


def _figure():
    fig, ax = plt.subplots(figsize=(13, 7.5))  # the largest size the notebooks use
    ax.plot([0, 1, 2], [0, 1, 0], label="a line")
    ax.set(title="title", xlabel="t", ylabel="z")
    return fig


def _sizes(fig):
    ax = fig.axes[0]
    return (ax.title.get_fontsize(), ax.xaxis.label.get_fontsize(),
            ax.get_xticklabels()[0].get_fontsize(), ax.get_lines()[0].get_linewidth())


def test_projector_mode_makes_text_and_lines_larger_and_turns_off_again(restore_rc):
    before = {key: matplotlib.rcParams[key] for key in PROJECTOR_RC}
    normal = _figure()
    settings = projector_mode()
    assert settings == PROJECTOR_RC
    big = _figure()
    assert plot_loss([1.0, 0.5, 0.2] * 10, smooth=5).axes[0].title.get_fontsize() == 19
    for small_size, large_size in zip(_sizes(normal), _sizes(big)):
        assert large_size >= 1.4 * small_size
    assert projector_mode() == PROJECTOR_RC  # twice on: still restores the first originals
    projector_mode(False)
    assert {key: matplotlib.rcParams[key] for key in PROJECTOR_RC} == before
    plt.close("all")


def test_projector_mode_reaches_the_explorers_figures(restore_rc):
    # The explorers draw on new_figure (not pyplot): rcParams reach them too.
    projector_mode()
    fig, ax = new_figure(1, 1)
    (line,) = ax.plot([0, 1], [0, 1])
    ax.set_title("t")
    assert ax.title.get_fontsize() == PROJECTOR_RC["axes.titlesize"]
    assert line.get_linewidth() == PROJECTOR_RC["lines.linewidth"]
    projector_mode(False)


def test_projector_mode_off_without_on_changes_nothing(restore_rc):
    before = {key: matplotlib.rcParams[key] for key in PROJECTOR_RC}
    projector_mode(False)
    assert {key: matplotlib.rcParams[key] for key in PROJECTOR_RC} == before
