"""Interactive exploration of a trained model: sliders wired to pure functions.

Nothing is computed here: :func:`~neuralode_helpers.training.fit_curves` computes the curves and
:mod:`~neuralode_helpers.plotting` draws them. A :class:`FitExplorer` owns one figure and moves
its lines' data when a slider moves, so it can be tested without a browser: set a slider's
``value`` (or call :meth:`FitExplorer.update`) and read the lines back.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import torch
from IPython import get_ipython
from IPython.display import clear_output, display

from .errors import SolverError
from .plotting import (
    TRAINED_T_RANGE,
    find_line,
    new_figure,
    plot_fit,
    plot_residual,
    shade_untrained,
)
from .problems import toy_solution
from .training import fit_curves


class FitExplorer:
    r"""True vs predicted curve of a model of the toy problem, for a chosen offset ``c`` and
    time window ``t_range``: a slider for each, one figure (fit above, residual below).

    The prediction starts from the true value :math:`z(t_\text{start}) = e^{1-\cos
    t_\text{start}} + c` and follows the learned field; outside the shaded training range, or
    for ``c`` outside ``trained_c_range``, the model is extrapolating.

    In a notebook, display the explorer itself (``explorer`` as the last line of a cell, or
    ``display(explorer)``). Attributes: ``fig``, ``ax_fit``, ``ax_residual``, ``c_slider``,
    ``t_slider``, ``output`` (the Output widget showing the figure), ``widget`` (the whole
    box), ``lines`` (``"Original"``, ``"Predicted"``, ``"Residual"``), ``n_draws`` (how
    many times the figure has been redrawn).
    """

    def __init__(self, model, *, c=0.0, t_range=(0.0, 10.0), c_limits=(-3.0, 3.0),
                 t_limits=(-5.0, 20.0), n=200, trained_c_range=(-1.0, 1.0),
                 trained_t_range=TRAINED_T_RANGE, figsize=(9, 5.5)):
        self.model = model
        self.n = int(n)
        self.trained_c_range = tuple(trained_c_range)
        self.trained_t_range = tuple(trained_t_range)
        self.n_draws = 0
        self.fig, (self.ax_fit, self.ax_residual) = new_figure(
            2, 1, figsize=figsize, sharex=True, height_ratios=(2, 1))
        t, z_true, z_pred = self._curves(c, t_range)
        plot_fit(t, z_true, z_pred, ax=self.ax_fit, trained_range=self.trained_t_range)
        plot_residual(t, z_true, z_pred, ax=self.ax_residual,
                      trained_range=self.trained_t_range, title=None)
        self.ax_fit.set_xlabel("")
        self.lines = {"Original": find_line(self.ax_fit, "Original"),
                      "Predicted": find_line(self.ax_fit, "Predicted"),
                      "Residual": find_line(self.ax_residual, "Residual")}

        self.c_slider = widgets.FloatSlider(
            value=c, min=c_limits[0], max=c_limits[1], step=0.1, description="c",
            continuous_update=False, readout_format=".1f")
        self.t_slider = widgets.FloatRangeSlider(
            value=tuple(t_range), min=t_limits[0], max=t_limits[1], step=0.5,
            description="t window", continuous_update=False, readout_format=".1f",
            layout=widgets.Layout(width="420px"))
        self.output = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.c_slider, self.t_slider]), self.output])
        self._syncing = False
        self.c_slider.observe(self._on_slider, names="value")
        self.t_slider.observe(self._on_slider, names="value")
        self._redraw(c, tuple(t_range), t, z_true, z_pred)

    # -- computing ---------------------------------------------------------------------------
    def _curves(self, c, t_range):
        t_start, t_end = float(t_range[0]), float(t_range[1])
        try:
            return fit_curves(self.model, c, t_start, t_end, self.n)
        except SolverError:
            # The learned field can be unsolvable far outside the data; show the true curve
            # and an empty prediction rather than a traceback in the middle of a slider drag.
            dtype = next(self.model.parameters()).dtype
            t = torch.linspace(t_start, t_end, self.n, dtype=dtype)
            return t, toy_solution(t, c), torch.full_like(t, float("nan"))

    # -- drawing -----------------------------------------------------------------------------
    def update(self, c=None, t_range=None):
        """Show offset ``c`` and window ``t_range = (t_start, t_end)`` (None: keep the
        current one). Moves the sliders to match, redraws the same figure, returns it."""
        c = self.c_slider.value if c is None else float(c)
        t_range = self.t_slider.value if t_range is None else tuple(map(float, t_range))
        if not t_range[1] > t_range[0]:
            raise ValueError(f"need t_end > t_start, got {t_range}")
        self._syncing = True  # the sliders' observers must not redraw a second time
        try:
            self.c_slider.value = c
            self.t_slider.value = t_range
        finally:
            self._syncing = False
        self._redraw(c, t_range, *self._curves(c, t_range))
        return self.fig

    def _on_slider(self, change):
        if not self._syncing:
            c, t_range = self.c_slider.value, tuple(self.t_slider.value)
            if t_range[1] > t_range[0]:
                self._redraw(c, t_range, *self._curves(c, t_range))

    def _redraw(self, c, t_range, t, z_true, z_pred):
        t, z_true, z_pred = (np.asarray(x, dtype=float) for x in (t, z_true, z_pred))
        self.lines["Original"].set_data(t, z_true)
        self.lines["Predicted"].set_data(t, z_pred)
        self.lines["Residual"].set_data(t, z_pred - z_true)
        self.ax_fit.set_xlim(*t_range)
        shade_untrained(self.ax_fit, t_range[0], t_range[1], self.trained_t_range)
        shade_untrained(self.ax_residual, t_range[0], t_range[1], self.trained_t_range,
                        label=None)
        self.ax_fit.legend(loc="upper left")
        self._rescale_y(z_true, z_pred)
        mse = float(np.mean((z_pred - z_true) ** 2))
        lo, hi = self.trained_c_range
        where = "inside" if lo <= c <= hi else "OUTSIDE"
        t_lo, t_hi = self.trained_t_range
        t_where = ("inside" if t_lo <= t_range[0] and t_range[1] <= t_hi
                   else "leaves")
        self.ax_fit.set_title(
            f"c = {c:+.1f}: {where} the trained c range [{lo:g}, {hi:g}]\n"
            f"t in [{t_range[0]:g}, {t_range[1]:g}]: {t_where} the trained t range "
            f"[{t_lo:g}, {t_hi:g}] (outside it: shaded);  MSE = {mse:.3g}")
        self.fig.canvas.draw_idle()
        self.n_draws += 1
        self._show()

    def _rescale_y(self, z_true, z_pred):
        # Frame the true curve; follow a prediction that wanders off, but only so far that
        # the true curve stays readable.
        lo, hi = float(z_true.min()), float(z_true.max())
        span = max(hi - lo, 1.0)
        finite = z_pred[np.isfinite(z_pred)]
        if finite.size:
            lo = max(min(lo, float(finite.min())), lo - span)
            hi = min(max(hi, float(finite.max())), hi + span)
        pad = 0.08 * (hi - lo)
        self.ax_fit.set_ylim(lo - pad, hi + pad)
        res = z_pred - z_true
        res = res[np.isfinite(res)]
        r = float(np.abs(res).max()) if res.size else 1.0
        r = r if math.isfinite(r) and r > 0 else 1.0
        self.ax_residual.set_ylim(-1.1 * r, 1.1 * r)

    def _show(self):
        # Re-render the one figure inside the Output widget. Outside IPython (tests, scripts)
        # there is nothing to show it on.
        if get_ipython() is None:
            return
        with self.output:
            clear_output(wait=True)
            display(self.fig)

    def _ipython_display_(self):
        display(self.widget)

