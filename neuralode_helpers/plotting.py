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

from .explorers import running_limits
from .solvers import FIXED_STEP_METHODS

# The time range that `train` covers by default (windows [t0, t0 + 1] with t0 in [-1, 9]).
# Fit plots shade the part of their t axis outside it, so extrapolation is visible at a glance.
TRAINED_T_RANGE = (-1.0, 10.0)
UNTRAINED_LABEL = "outside the trained t range"

# Projector mode: what projector_mode() sets in matplotlib's rcParams. Text about 1.7 times
# the default size, lines and markers about 1.6 times as thick, and the notebooks' inline
# figures at a resolution a projector's 1280-1920 pixels show without shrinking the text.
PROJECTOR_RC = {
    "font.size": 17,
    "axes.titlesize": 19,
    "axes.labelsize": 17,
    "xtick.labelsize": 15,
    "ytick.labelsize": 15,
    "legend.fontsize": 14,
    "legend.title_fontsize": 15,
    "figure.titlesize": 20,
    "lines.linewidth": 2.6,
    "lines.markersize": 9,
    "axes.linewidth": 1.4,
    "xtick.major.width": 1.4,
    "ytick.major.width": 1.4,
    "xtick.major.size": 6,
    "ytick.major.size": 6,
    "grid.linewidth": 1.0,
    "figure.dpi": 80,
}
_saved_rc: dict = {}


def projector_mode(on: bool = True) -> dict:
    """Make every figure drawn from now on readable on a projector (``on=True``), or restore
    the settings that were there before (``on=False``).

    One line in a notebook, after its Setup cell:
    ``from neuralode_helpers.plotting import projector_mode; projector_mode()``. It changes
    matplotlib's rcParams (:data:`PROJECTOR_RC`: larger fonts, thicker lines and markers), so it
    applies to figures and explorers created after it; rerun a figure's cell to redraw it.
    Returns the settings now in force for those keys.
    """
    import matplotlib

    rc = matplotlib.rcParams
    if on:
        if not _saved_rc:  # keep the first originals, however often it is turned on
            _saved_rc.update({key: rc[key] for key in PROJECTOR_RC})
        rc.update(PROJECTOR_RC)
    elif _saved_rc:
        rc.update(_saved_rc)
        _saved_rc.clear()
    return {key: rc[key] for key in PROJECTOR_RC}


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
    (a mini-batch loss is noisy; the average shows the trend). ``losses``: a sequence of
    numbers, or what :func:`~neuralode_helpers.train` returned. Returns the figure."""
    ax = _axes(ax)
    losses = np.asarray(getattr(losses, "losses", losses), dtype=float)
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
    given. A rise means the learned dynamics got harder to solve. ``nfe_forward`` may be what
    :func:`~neuralode_helpers.train` returned: both counts are taken from it (the backward
    one if the training used the adjoint). Returns the figure."""
    if hasattr(nfe_forward, "nfe_forward"):
        result = nfe_forward
        nfe_forward = result.nfe_forward
        if nfe_backward is None and any(result.nfe_backward):
            nfe_backward = result.nfe_backward
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


def new_figure(nrows=1, ncols=1, figsize=(8, 5), *, layout="constrained", **subplot_kw):
    """A bare :class:`~matplotlib.figure.Figure` (not registered with pyplot, so it is shown
    only when displayed explicitly) and its axes. For widgets that redraw one figure
    (``layout=None`` for fixed margins, set with ``fig.subplots_adjust``)."""
    fig = Figure(figsize=figsize, layout=layout)
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    return fig, axes


# -- the explorers' figures: drawn once, then updated in place by label --------------------------
def _set_line(ax, label, x, y, **style):
    """Move the data of the line labelled ``label`` on ``ax``, drawing it first (with
    ``style``) if it is not there yet. Returns the line."""
    try:
        line = find_line(ax, label)
    except KeyError:
        (line,) = ax.plot([], [], label=label, **style)
    line.set_data(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return line


def _replace_vlines(ax, xs, gid, **style):
    """Vertical lines at ``xs``, replacing those this function drew with the same ``gid``."""
    for artist in [a for a in ax.lines if a.get_gid() == gid]:
        artist.remove()
    for i, x in enumerate(xs):
        ax.axvline(float(x), gid=gid, **(style if i == 0 else {**style, "label": None}))


# The lines of plot_adjoint_pass that depend on t_show (the rest depends on the setting only).
ADJOINT_MOVING = ("z1 rebuilt", "z2 rebuilt", "a1 adjoint", "a2 adjoint", "dL/dA11", "dL/dA12",
                  "dL/dA21", "dL/dA22", "now")


def plot_adjoint_pass(run, exact, t_show=None, axes=None, *, figsize=(9, 8)):
    r"""The adjoint method's backward solve, as far as it has come by time ``t_show``.

    ``run``: an :class:`~neuralode_helpers.explorers.AdjointPass`; ``exact``: the
    :class:`~neuralode_helpers.explorers.ExactAdjoint` of the same problem; ``t_show``
    (default :math:`t_0`: the whole pass). Three panels on ``axes`` (three axes sharing x, or
    None for a new figure):

    - top: the forward :math:`z(t)` (solid), the forward outputs :math:`z(t_i)` (dots) and
      the backward reconstruction of z from :math:`t_N` down to ``t_show`` (dashed);
    - middle: the exact :math:`a(t)` (thin) and the backward solve's (thick), dotted lines at
      the observation times where it jumps by :math:`\ell_i`;
    - bottom: the running :math:`dL/dA` (each entry), the exact gradient dashed.

    Called again with the same axes, it moves the lines' data (labels ``"z1 rebuilt"``,
    ``"a1 adjoint"``, ``"dL/dA11"``, ``"now"``, ...; only these depend on ``t_show``, see
    :data:`ADJOINT_MOVING`). Returns the figure.
    """
    if axes is None:
        fig, axes = new_figure(3, 1, figsize=figsize, sharex=True)
    ax_z, ax_a, ax_g = axes
    t0, t_end = float(exact.t[0]), float(exact.t[-1])
    t_show = t0 if t_show is None else min(max(float(t_show), t0), t_end)
    k = run.upto(t_show)
    tb = run.t[:k]
    for j in range(run.z.shape[1]):
        c = f"C{j}"
        _set_line(ax_z, f"z{j + 1} forward", exact.t, exact.z[:, j], color=c, lw=2, alpha=0.45)
        _set_line(ax_z, f"z{j + 1} at t_i", run.t_obs, run.z_obs[:, j], color=c, ls="none",
                  marker="o", ms=5)
        _set_line(ax_z, f"z{j + 1} rebuilt", tb, run.z[:k, j], color=c, lw=1.8, ls="--")
        _set_line(ax_a, f"a{j + 1} exact", exact.t, exact.a[:, j], color=c, lw=1, alpha=0.45)
        _set_line(ax_a, f"a{j + 1} adjoint", tb, run.a[:k, j], color=c, lw=2)
    grads = run.grad.reshape(len(run.t), -1)
    d = run.z.shape[1]
    for e in range(grads.shape[1]):
        name = f"dL/dA{e // d + 1}{e % d + 1}"
        c = f"C{e + 2}"
        _set_line(ax_g, name, tb, grads[:k, e], color=c, lw=2)
        _set_line(ax_g, f"{name} exact", [t0, t_end], [exact.grad_A.ravel()[e]] * 2, color=c,
                  lw=1.2, ls="--")
    _replace_vlines(ax_a, run.t_obs[1:], "jump", color="0.5", ls=":", lw=1,
                    label=r"jumps: $a \leftarrow a + \ell_i$")
    for ax in axes:
        _set_line(ax, "now", [t_show, t_show], [0, 1], color="C3", lw=1.2,
                  transform=ax.get_xaxis_transform())
        ax.set_xlim(t0, t_end)
        ax.grid(alpha=0.3)
    # Limits from the whole pass, not the part shown: the axes stay put while t moves (and
    # a widget may redraw only the lines that move).
    ax_z.set_ylim(*running_limits(run.z, exact.z))
    ax_a.set_ylim(*running_limits(run.a, exact.a))
    ax_g.set_ylim(*running_limits(grads, [0.0, *exact.grad_A.ravel()]))
    restore = "restored" if run.restore_z else "not restored"
    ax_z.set_title(f"the backward solve runs from t = {t_end:g} back to {t0:g} (red line: "
                   f"where it has got to); z {restore} at the observation times", fontsize=10)
    ax_z.set_ylabel("z(t)")
    ax_a.set_ylabel("adjoint a(t)")
    ax_g.set_ylabel("running dL/dA")
    ax_g.set_xlabel("t")
    if ax_z.get_legend() is None:
        ax_z.legend(handles=[find_line(ax_z, n) for n in ("z1 forward", "z2 forward",
                                                          "z1 rebuilt", "z2 rebuilt")],
                    loc="upper right", fontsize=8, ncol=2)
        ax_a.legend(handles=[find_line(ax_a, n) for n in ("a1 adjoint", "a2 adjoint")]
                    + [ln for ln in ax_a.get_lines() if ln.get_gid() == "jump"][:1],
                    loc="upper right", fontsize=8, ncol=3, title="thin: exact",
                    title_fontsize=8)
        ax_g.legend(handles=[ln for ln in ax_g.get_lines()
                             if ln.get_label().startswith("dL/dA")
                             and not ln.get_label().endswith("exact")],
                    loc="upper right", fontsize=8, ncol=4, title="dashed: exact",
                    title_fontsize=8)
    return ax_z.figure


def plot_steps(record, exact=None, axes=None, *, figsize=(9, 6)):
    r"""Every step of a solve: the solution with a mark at the end of each accepted step
    (dots) and of each rejected attempt (crosses, on the exact curve), and below them the
    step sizes (accepted: dots at each step's start; rejected: crosses).

    ``record``: a :class:`~neuralode_helpers.explorers.StepRecord`; ``exact``: ``(t, z)``
    arrays of the exact solution (drawn in grey; also places the crosses), or None. ``axes``:
    two axes, or None for a new figure. Called again with the same axes, it moves the data
    (labels ``"accepted steps"``, ``"rejected steps"``, ``"step size"``, ...). Returns the
    figure.
    """
    if axes is None:
        fig, axes = new_figure(2, 1, figsize=figsize, sharex=True, height_ratios=(3, 2))
    ax_z, ax_h = axes
    t_rej_end = record.rejected_t + record.rejected_h
    if exact is not None:
        t_ex, z_ex = (np.asarray(x, dtype=float).reshape(-1) for x in exact)
        _set_line(ax_z, "exact solution", t_ex, z_ex, color="0.6", lw=3)
        z_rej = np.interp(t_rej_end, t_ex, z_ex)
    else:
        z_rej = np.interp(t_rej_end, record.t, record.z)
    _set_line(ax_z, "accepted steps", record.t, record.z, color="C0", ls="none", marker="o",
              ms=4)
    _set_line(ax_z, "rejected steps", t_rej_end, z_rej, color="C3", ls="none", marker="x",
              ms=7, mew=1.5)
    _set_line(ax_h, "step size", record.t[:-1], record.h, color="C0", marker="o", ms=3, lw=1)
    _set_line(ax_h, "rejected attempt", record.rejected_t, record.rejected_h, color="C3",
              ls="none", marker="x", ms=7, mew=1.5)
    ref = z_ex if exact is not None else record.z
    ax_z.set_ylim(*running_limits(record.z, ref))
    ax_h.set_yscale("log")
    h_all = np.concatenate([record.h, record.rejected_h])
    # Whole decades: the same ticks for every method, labels of one width.
    ax_h.set_ylim(10.0 ** np.floor(np.log10(h_all.min() / 2)),
                  10.0 ** np.ceil(np.log10(h_all.max() * 2)))
    ax_z.set_xlim(record.t[0], record.t[-1])
    kind = ("fixed step, no tolerance" if record.method in FIXED_STEP_METHODS
            else f"adaptive, rtol = {record.rtol:.0e}")
    err = "" if np.isnan(record.error) else f", error at the end {record.error:.1e}"
    ax_z.set_title(f"{record.method} ({kind}): {record.n_steps} accepted, "
                   f"{record.n_rejected} rejected, NFE {record.nfe}{err}", fontsize=10)
    ax_z.set_ylabel("z(t)")
    ax_h.set_ylabel("step size h")
    ax_h.set_xlabel("t")
    for ax in axes:
        ax.grid(alpha=0.3)
    if ax_z.get_legend() is None:
        ax_z.legend(loc="upper left", fontsize=9)
        ax_h.legend(loc="lower right", fontsize=9)
    return ax_z.figure
