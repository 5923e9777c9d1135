"""Plots for the notebooks: training loss, fit, residual, work per step, gradient checks.

Every function draws on ``ax`` when given one (so plots can share a figure) or on a new figure
otherwise, and returns the figure. Lines carry labels (``"Original"``, ``"Predicted"``, ...)
so that code that updates a plot, such as :class:`~neuralode_helpers.widgets.FitExplorer`,
can find them again.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

# The time range that `train` covers by default (windows [t0, t0 + 1] with t0 in [-1, 9]).
# Fit plots shade the part of their t axis outside it, so extrapolation is visible at a glance.
TRAINED_T_RANGE = (-1.0, 10.0)
UNTRAINED_LABEL = "outside the trained t range"


def _axes(ax, figsize=(7, 4)):
    """``ax`` itself, or the axes of a new pyplot figure (which a notebook cell shows at its
    end, as readers expect from a plot call)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _power_of_ten(v):
    """Tick label for 0 or +-10^k, as mathtext."""
    if v == 0:
        return "0"
    sign = "-" if v < 0 else ""
    return f"${sign}10^{{{int(round(np.log10(abs(v))))}}}$"


def find_line(ax, label):
    """The line on ``ax`` whose label is ``label`` (``KeyError`` if there is none)."""
    for line in ax.get_lines():
        if line.get_label() == label:
            return line
    raise KeyError(f"no line labelled {label!r} on these axes")


def moving_average(x, window):
    """Mean of each run of ``window`` consecutive values (length ``len(x) - window + 1``)."""
    x = np.asarray(x, dtype=float)
    window = max(1, min(int(window), len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[window:] - c[:-window]) / window


def shade_untrained(ax, t_start, t_end, trained_range, *, label=UNTRAINED_LABEL):
    """Shade the parts of ``[t_start, t_end]`` that lie outside ``trained_range`` (where the
    model extrapolates), replacing any shading this function drew on ``ax`` before. Nothing
    is drawn, and no legend entry made, when the whole interval lies inside the trained range
    (or ``trained_range`` is None). Returns the list of shaded spans."""
    for artist in [p for p in ax.patches if p.get_gid() == "untrained"]:
        artist.remove()
    if trained_range is None:
        return []
    lo, hi = trained_range
    pieces = [(t_start, min(t_end, lo)), (max(t_start, hi), t_end)]
    spans = []
    for a, b in pieces:
        if b > a:
            span = ax.axvspan(a, b, color="0.9", zorder=0, gid="untrained",
                              label=label if not spans else None)
            spans.append(span)
    return spans


def plot_loss(losses, ax=None, *, smooth=20, title="Training loss"):
    """Loss per optimisation step on a log scale, with a moving average over ``smooth`` steps
    (a mini-batch loss is noisy; the average shows the trend). Returns the figure."""
    ax = _axes(ax)
    losses = np.asarray(losses, dtype=float)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="C0", alpha=0.35, lw=1, label="per step")
    if smooth and len(losses) >= smooth > 1:
        avg = moving_average(losses, smooth)
        ax.plot(steps[smooth - 1:], avg, color="C0", lw=2,
                label=f"moving average ({smooth} steps)")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="MSE loss", title=title)
    ax.legend()
    return ax.figure


def plot_fit(t, z_true, z_pred, ax=None, *, title="Original vs predicted",
             trained_range=TRAINED_T_RANGE):
    """The true curve ("Original") and the model's solve from the same z(t_0) ("Predicted")
    against t. The parts of the t axis outside ``trained_range`` (None: no shading) are shaded
    (:func:`shade_untrained`). Returns the figure."""
    ax = _axes(ax)
    t, z_true, z_pred = _numpy(t), _numpy(z_true), _numpy(z_pred)
    shade_untrained(ax, float(t[0]), float(t[-1]), trained_range)
    ax.plot(t, z_true, color="C0", lw=2.5, label="Original")
    ax.plot(t, z_pred, color="C1", lw=2, ls="--", label="Predicted")
    ax.set(xlabel="t", ylabel="z(t)", title=title)
    ax.set_xlim(t[0], t[-1])
    ax.legend(loc="upper left")
    return ax.figure


def plot_residual(t, z_true, z_pred, ax=None, *, title="Residual (predicted - original)",
                  trained_range=TRAINED_T_RANGE):
    """``z_pred - z_true`` against t, with the zero line; the parts of the t axis outside
    ``trained_range`` are shaded as in :func:`plot_fit`. Returns the figure."""
    ax = _axes(ax)
    t, z_true, z_pred = _numpy(t), _numpy(z_true), _numpy(z_pred)
    shade_untrained(ax, float(t[0]), float(t[-1]), trained_range, label=None)
    ax.axhline(0.0, color="0.5", lw=1)
    ax.plot(t, z_pred - z_true, color="C3", lw=1.5, label="Residual")
    ax.set(xlabel="t", ylabel="predicted - original", title=title)
    ax.set_xlim(t[0], t[-1])
    return ax.figure


def plot_nfe(nfe_forward, nfe_backward=None, ax=None, *,
             title="Function evaluations per training step"):
    """Number of evaluations of f per step: forward solve, and backward (adjoint) solve if
    given. A rise means the learned dynamics got harder to solve. Returns the figure."""
    ax = _axes(ax)
    steps = np.arange(1, len(nfe_forward) + 1)
    ax.plot(steps, nfe_forward, color="C0", lw=1.2, label="forward")
    if nfe_backward is not None:
        ax.plot(steps, nfe_backward, color="C2", lw=1.2, label="backward (adjoint)")
    ax.set(xlabel="step", ylabel="NFE", title=title)
    ax.set_ylim(bottom=0)
    ax.legend()
    return ax.figure


def plot_gradient_check(reference, estimate, ax=None, *, xlabel="reference gradient",
                        ylabel="adjoint gradient", title="Gradient check"):
    """Every entry of a gradient ``estimate`` against the ``reference`` on a symmetric-log
    scale, with the line y = x: points off the line are wrong entries. ``reference`` and
    ``estimate`` are tensors, arrays, or lists of them (flattened and joined). Returns the
    figure."""
    ax = _axes(ax, figsize=(5, 5))

    def flat(x):
        if isinstance(x, (list, tuple)):
            return np.concatenate([_numpy(v).ravel() for v in x])
        return _numpy(x).ravel()

    ref, est = flat(reference), flat(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference has {ref.size} entries but estimate has {est.size}")
    rel = np.linalg.norm(est - ref) / max(np.linalg.norm(ref), np.finfo(float).tiny)
    top = max(np.abs(ref).max(), np.abs(est).max(), np.finfo(float).tiny)
    # Linear within 3 decades of zero and logarithmic beyond: small entries stay visible
    # without spending the plot on decades that hold nothing.
    decade = 10.0 ** np.ceil(np.log10(top))
    linthresh = decade * 1e-3
    ax.plot([-decade, decade], [-decade, decade], color="0.6", lw=1, label="y = x")
    ax.plot(ref, est, "o", ms=3, color="C0", alpha=0.6,
            label=f"{ref.size} entries, rel. error {rel:.1e}")
    for axis, set_scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
        set_scale("symlog", linthresh=linthresh)
        ticks = [-decade, -decade * 1e-2, 0.0, decade * 1e-2, decade]
        axis.set_ticks(ticks, [_power_of_ten(v) for v in ticks])
    ax.grid(alpha=0.3)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc="upper left")
    return ax.figure


def new_figure(nrows=1, ncols=1, figsize=(8, 5), **subplot_kw):
    """A bare :class:`~matplotlib.figure.Figure` (not registered with pyplot, so it is shown
    only when displayed explicitly) and its axes. For widgets that redraw one figure."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    return fig, axes
