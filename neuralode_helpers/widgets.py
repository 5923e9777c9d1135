"""Interactive exploration: sliders wired to pure functions.

Nothing is computed here: :func:`~neuralode_helpers.training.fit_curves` and
:mod:`~neuralode_helpers.explorers` compute, :mod:`~neuralode_helpers.plotting` draws.
:class:`AdjointExplorer` (notebook 01) and :class:`StepSizeExplorer` (notebook 00) work like
:class:`FitExplorer`. A :class:`FitExplorer` owns one figure and moves
its lines' data when a slider moves, so it can be tested without a browser: set a slider's
``value`` (or call :meth:`FitExplorer.update`) and read the lines back.
"""

from __future__ import annotations

import io
import math
import numbers

import ipywidgets as widgets
import numpy as np
import torch
from IPython import get_ipython
from IPython.display import Image, clear_output, display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image as PILImage

from .errors import SolverError
from .explorers import (
    STEP_METHODS,
    TOY_SPAN,
    adjoint_pass,
    adjoint_summary,
    exact_adjoint,
    observation_times,
    oscillator_matrix,
    toy_steps,
)
from .plotting import (
    ADJOINT_MOVING,
    TRAINED_T_RANGE,
    find_line,
    new_figure,
    plot_adjoint_pass,
    plot_fit,
    plot_residual,
    plot_steps,
    shade_untrained,
)
from .problems import toy_solution
from .training import fit_curves

# Whether an explorer's sliders redraw while being dragged (ipywidgets' continuous_update) or
# only when released. Live where one update is fast enough to follow the hand: under
# LIVE_LATENCY_S. MEASURED_LATENCY_S: the slowest slider update of each explorer in the browser
# test (tests/test_browser.py, latency.json) on a quiet 2-core machine. The adjoint explorer's
# time slider only indexes a recorded pass; the fit explorer solves the trained model over the
# whole window at every move, so it redraws on release. (On a machine busy with other work the
# same updates took 0.8-1.5 s.)
LIVE_LATENCY_S = 0.5
MEASURED_LATENCY_S = {"StepSizeExplorer": 0.38, "AdjointExplorer": 0.34, "FitExplorer": 0.56}
LIVE = {name: seconds < LIVE_LATENCY_S for name, seconds in MEASURED_LATENCY_S.items()}


def check_control_value(control, value, name=None):
    """Refuse a value that ``control`` would silently change: outside a slider's range (it
    would clamp it) or not among a menu's options. ``name`` (default: the control's
    description) names it in the error."""
    name = name or control.description or "value"
    if isinstance(control, widgets.Checkbox):
        return
    if isinstance(control, widgets.Dropdown):
        if value not in control.options:
            raise ValueError(f"{name} must be one of {', '.join(map(str, control.options))}, "
                             f"got {value!r}")
        return
    if isinstance(control, widgets.FloatLogSlider):
        lo, hi = control.base ** control.min, control.base ** control.max
    else:
        lo, hi = control.min, control.max
    values = value if isinstance(control, widgets.FloatRangeSlider) else (value,)
    for v in values:
        integer = isinstance(control, widgets.IntSlider)
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(v, bool) or not isinstance(v, kind):
            raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got "
                            f"{type(v).__name__}")
        if not lo <= v <= hi:
            raise ValueError(f"{name} must be in [{lo:g}, {hi:g}] (the range of its "
                             f"control), got {v!r}")


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
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a trained nn.Module such as ODENet(), got "
                            f"{type(model).__name__}")
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
            continuous_update=LIVE["FitExplorer"], readout_format=".1f")
        self.t_slider = widgets.FloatRangeSlider(
            value=tuple(t_range), min=t_limits[0], max=t_limits[1], step=0.5,
            description="t window", continuous_update=LIVE["FitExplorer"], readout_format=".1f",
            layout=widgets.Layout(width="420px"))
        check_control_value(self.c_slider, c, "c")
        check_control_value(self.t_slider, tuple(t_range), "t_range")
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
        check_control_value(self.c_slider, c, "c")
        check_control_value(self.t_slider, t_range, "t_range")
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



class _Explorer:
    """What the explorers share: one figure in an Output widget, redrawn in place, with the
    numbers a student checks printed under it; computed results cached by setting."""

    dpi = 80
    _background = None

    def _canvas(self, **margins):
        # Fixed margins: constrained layout would cost as much as the drawing, every time. An
        # Agg canvas of its own, so that a quick update can paint over a saved background.
        self.fig.subplots_adjust(**margins)
        self.fig.set_dpi(self.dpi)
        FigureCanvasAgg(self.fig)

    def _moving(self):
        """The artists that a quick update redraws (none: every update draws everything)."""
        return []

    def png(self, quick=False):
        """The figure as PNG bytes (what the Output widget shows), rendered the fast way: no
        tight bounding box (a second draw), light compression. With ``quick``, only the
        artists of ``_moving()`` are drawn, over the background saved by the last full
        render (blitting): the same picture when nothing else has changed since."""
        canvas = self.fig.canvas
        moving = self._moving()
        if quick and self._background is not None:
            canvas.restore_region(self._background)
        else:
            for artist in moving:
                artist.set_animated(True)  # left out of the full draw ...
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox) if moving else None
            for artist in moving:
                artist.set_animated(False)
        for artist in moving:
            artist.axes.draw_artist(artist)  # ... and painted over it
        buf = io.BytesIO()
        PILImage.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png",
                                                                   compress_level=1)
        return buf.getvalue()

    def _show(self, text=None, quick=False):
        # Re-render the figure (and the numbers under it) inside the Output widget. Outside
        # IPython (tests, scripts) there is nothing to show it on.
        self.n_draws += 1
        if get_ipython() is None:
            return
        image = Image(data=self.png(quick=quick), format="png")
        with self.output:
            clear_output(wait=True)
            display(image)
            if text:
                print(text)

    def _ipython_display_(self):
        display(self.widget)

    # -- controls ----------------------------------------------------------------------------
    _syncing = False

    def _watch(self, *controls):
        # A control the reader moves redraws the figure.
        for w in controls:
            w.observe(self._on_change, names="value")

    def _on_change(self, change):
        if not self._syncing:
            self._redraw()

    def _set_controls(self, pairs):
        """Give each control of ``pairs`` (control, value[, name for errors]) its value, then
        redraw once; returns the figure."""
        for w, value, *name in pairs:
            check_control_value(w, value, *name)
        self._syncing = True  # the controls' observers must not redraw a second time
        try:
            for w, value, *_ in pairs:
                w.value = value
        finally:
            self._syncing = False
        return self._redraw()


class AdjointExplorer(_Explorer):
    r"""The adjoint method's backward solve, step by step, on the damped oscillator
    :math:`\dot z = A z`, :math:`A = \begin{pmatrix} 0 & 1 \\ -4 & -\gamma\end{pmatrix}`,
    :math:`z(0) = (1, 0)^\top`, with :math:`L = \sum_{i \ge 1} \tfrac12 \lVert z(t_i)
    \rVert^2` at ``n_obs`` equally spaced observation times up to ``t_end``.

    Controls: ``time_slider`` (where the backward solve has got to: from ``t_end`` back to
    0), ``damping_slider`` (:math:`\gamma`), ``n_obs_slider``, ``rtol_slider`` (the
    solves' rtol; atol = rtol / 100) and ``restore_box`` (restore z at the observation
    times: ``odeint_adjoint``'s ``restore_z``). Computing is done by
    :func:`~neuralode_helpers.explorers.adjoint_pass` and
    :func:`~neuralode_helpers.explorers.exact_adjoint`, once per setting of the last four
    (cached in ``cache``); the time slider only indexes the recorded arrays, drawn by
    :func:`~neuralode_helpers.plotting.plot_adjoint_pass`. ``summary`` holds the numbers
    printed under the figure. ``n_draws`` counts redraws.
    """

    def __init__(self, *, damping=1.0, n_obs=4, rtol=1e-6, restore=True, t_end=4.0,
                 stiffness=4.0, z0=(1.0, 0.0), max_damping=12.0, figsize=(9, 8)):
        self.t_end, self.stiffness = float(t_end), float(stiffness)
        self.z0 = torch.tensor(z0, dtype=torch.float64)
        self.cache = {}
        self.n_draws = 0
        self.fig, self.axes = new_figure(3, 1, figsize=figsize, sharex=True, layout=None)
        self._canvas(left=0.09, right=0.98, top=0.96, bottom=0.06, hspace=0.1)
        self.time_slider = widgets.FloatSlider(
            value=0.0, min=0.0, max=self.t_end, step=self.t_end / 80, description="t",
            continuous_update=LIVE["AdjointExplorer"], readout_format=".2f",
            tooltip="where the backward solve has got to (it runs from right to left)")
        self.damping_slider = widgets.FloatSlider(
            value=damping, min=0.0, max=max_damping, step=0.5, description="damping γ",
            continuous_update=LIVE["AdjointExplorer"], readout_format=".1f")
        self.n_obs_slider = widgets.IntSlider(
            value=n_obs, min=1, max=8, description="obs. times",
            continuous_update=LIVE["AdjointExplorer"])
        self.rtol_slider = widgets.FloatLogSlider(
            value=rtol, base=10, min=-8, max=-3, step=1, description="rtol",
            continuous_update=LIVE["AdjointExplorer"], readout_format=".0e")
        for control, value, name in ((self.damping_slider, damping, "damping"),
                                     (self.n_obs_slider, n_obs, "n_obs"),
                                     (self.rtol_slider, rtol, "rtol")):
            check_control_value(control, value, name)
        self.restore_box = widgets.Checkbox(value=restore, description="restore z at t_i",
                                            indent=False)
        self.output = widgets.Output()
        controls = [self.damping_slider, self.n_obs_slider, self.rtol_slider]
        self.widget = widgets.VBox([
            widgets.HBox([self.time_slider, self.restore_box]),
            widgets.HBox(controls), self.output])
        self._watch(self.time_slider, *controls, self.restore_box)
        self.update()

    @staticmethod
    def _key(damping, n_obs, rtol, restore):
        return (round(float(damping), 6), int(n_obs), float(f"{rtol:.3g}"), bool(restore))

    def setting(self):
        """The current (damping, n_obs, rtol, restore), as the cache keys it."""
        return self._key(self.damping_slider.value, self.n_obs_slider.value,
                         self.rtol_slider.value, self.restore_box.value)

    def compute(self, damping, n_obs, rtol, restore):
        """``(run, exact, summary)`` for one setting, computed once."""
        key = self._key(damping, n_obs, rtol, restore)
        if key not in self.cache:
            A = oscillator_matrix(damping, self.stiffness)
            t = observation_times(self.t_end, int(n_obs))
            exact = exact_adjoint(A, self.z0, t)
            try:
                run = adjoint_pass(A, self.z0, t, rtol=rtol, atol=rtol / 100,
                                   restore_z=restore)
            except SolverError as err:
                run = err
            summary = (f"the backward solve failed: {run}" if isinstance(run, Exception)
                       else adjoint_summary(run, exact))
            self.cache[key] = (run, exact, summary)
        return self.cache[key]

    def update(self, t=None, **setting):
        """Show time ``t`` of the backward solve for a setting (keywords ``damping``,
        ``n_obs``, ``rtol``, ``restore``; missing ones keep their value). Moves the controls
        to match, redraws once, returns the figure."""
        unknown = set(setting) - {"damping", "n_obs", "rtol", "restore"}
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}: use damping, n_obs, rtol, "
                            "restore")
        pairs = [(w, setting[name], name) for name, w in [
            ("damping", self.damping_slider), ("n_obs", self.n_obs_slider),
            ("rtol", self.rtol_slider), ("restore", self.restore_box)] if name in setting]
        if t is not None:
            pairs.append((self.time_slider, float(t), "t"))
        return self._set_controls(pairs)

    def _moving(self):
        if isinstance(getattr(self, "run", None), Exception):
            return []
        return [find_line(ax, label) for ax in self.axes for label in ADJOINT_MOVING
                if any(line.get_label() == label for line in ax.get_lines())]

    def _redraw(self):
        setting = self.setting()
        run, exact, self.summary = self.compute(*setting)
        # Only t moved: the axes, limits and titles are as drawn, so repaint the lines only.
        quick = setting == getattr(self, "_drawn_setting", None)
        self.run, self.exact, self._drawn_setting = run, exact, setting
        if isinstance(run, Exception):
            self.axes[0].set_title(self.summary, fontsize=10)
        else:
            plot_adjoint_pass(run, exact, self.time_slider.value, self.axes)
        self._show(self.summary, quick=quick)
        return self.fig


class StepSizeExplorer(_Explorer):
    r"""Every step a solver takes on the toy problem :math:`\frac{dz}{dt} = \sin t\, z`,
    :math:`z(0) = 1`, on [0, 10]: accepted steps as dots on the solution, rejected ones as
    crosses, the step sizes below, and the NFE.

    Controls: ``rtol_slider`` (atol = rtol / 100) and ``method_menu`` (the package's
    fixed-step and adaptive torch methods; a fixed-step method takes as many equal steps as
    dopri5 accepts at that rtol). :func:`~neuralode_helpers.explorers.toy_steps` computes
    each setting once (``cache``); :func:`~neuralode_helpers.plotting.plot_steps` draws it.
    """

    def __init__(self, *, method="adaptive_heun", rtol=1e-2, figsize=(9, 6)):
        self.cache = {}
        self.n_draws = 0
        t = torch.linspace(*TOY_SPAN, 401, dtype=torch.float64)
        self.exact = (t.numpy(), toy_solution(t).numpy())
        self.fig, self.axes = new_figure(2, 1, figsize=figsize, sharex=True, layout=None,
                                         height_ratios=(3, 2))
        self._canvas(left=0.09, right=0.98, top=0.94, bottom=0.09, hspace=0.1)
        self.rtol_slider = widgets.FloatLogSlider(
            value=rtol, base=10, min=-8, max=-1, step=0.5, description="rtol",
            continuous_update=LIVE["StepSizeExplorer"], readout_format=".0e")
        check_control_value(self.rtol_slider, rtol)
        self.method_menu = widgets.Dropdown(options=list(STEP_METHODS), value=STEP_METHODS[0],
                                            description="method")
        check_control_value(self.method_menu, method)
        self.method_menu.value = method
        self.output = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.rtol_slider, self.method_menu]),
                                    self.output])
        self._watch(self.rtol_slider, self.method_menu)
        self.update()

    def compute(self, method, rtol):
        """The :class:`~neuralode_helpers.explorers.StepRecord` of one setting (or the
        :class:`SolverError` of a solve that gave up), computed once."""
        key = (method, float(f"{rtol:.3g}"))
        if key not in self.cache:
            try:
                self.cache[key] = toy_steps(method, key[1])
            except SolverError as err:
                self.cache[key] = err
        return self.cache[key]

    def update(self, method=None, rtol=None):
        """Show ``method`` at ``rtol`` (None: keep the current one); moves the controls,
        redraws once, returns the figure."""
        pairs = [] if method is None else [(self.method_menu, method)]
        if rtol is not None:
            pairs.append((self.rtol_slider, float(rtol)))
        return self._set_controls(pairs)

    def _redraw(self):
        method, rtol = self.method_menu.value, self.rtol_slider.value
        self.record = self.compute(method, rtol)
        if isinstance(self.record, SolverError):
            # Too many steps (a low order at a tight tolerance): say so on an empty plot.
            for ax in self.axes:
                for line in ax.get_lines():
                    if line.get_label() != "exact solution":
                        line.set_data([], [])
            self.summary = (f"{method}, rtol {rtol:.0e}: gave up after 1000 steps, at "
                            f"t = {self.record.t_reached:.2f}")
            self.axes[0].set_title(self.summary, fontsize=10)
            self.summary += " (a low order needs very many steps at a tight tolerance)"
        else:
            plot_steps(self.record, self.exact, self.axes)
            r = self.record
            self.summary = (f"{r.method}, rtol {r.rtol:.0e}: {r.n_steps} accepted steps, "
                            f"{r.n_rejected} rejected, NFE {r.nfe}, error at t = 10: "
                            f"{r.error:.1e}")
        self._show(self.summary)
        return self.fig
