"""Which explorers redraw while a slider is dragged, and that this matches the measured latency.

An explorer's sliders update while dragging (``continuous_update=True``) where one update was
measured under ``widgets.LIVE_LATENCY_S`` by the browser test on a quiet machine
(``widgets.MEASURED_LATENCY_S``), and on release elsewhere; the teaching notes say which.
"""

import json
from pathlib import Path

import ipywidgets
import pytest

from neuralode_helpers import widgets

ROOT = Path(__file__).resolve().parents[1]
LATENCY = ROOT / "_build" / "browser-test"
NOTEBOOK_OF = {"StepSizeExplorer": "00", "AdjointExplorer": "01", "FitExplorer": "03"}


def _sliders(explorer):
    return [w for w in vars(explorer).values()
            if isinstance(w, (ipywidgets.FloatSlider, ipywidgets.IntSlider,
                              ipywidgets.FloatLogSlider, ipywidgets.FloatRangeSlider))]


def test_the_step_size_and_adjoint_explorers_update_while_dragging():
    for explorer in (widgets.StepSizeExplorer(), widgets.AdjointExplorer()):
        sliders = _sliders(explorer)
        assert sliders
        assert all(s.continuous_update for s in sliders), type(explorer).__name__


def test_the_fit_explorer_updates_on_release():
    # Its update solves the trained model over the whole window: measured above the limit.
    assert widgets.LIVE["FitExplorer"] is False


def test_the_teaching_notes_say_which_sliders_update_while_dragging():
    notes = " ".join((ROOT / "notebooks" / "README.md").read_text(encoding="utf-8").split())
    assert "redraw while being dragged" in notes and "when the slider is released" in notes


def test_live_exactly_where_the_measured_update_is_fast_enough():
    assert widgets.LIVE == {"StepSizeExplorer": True, "AdjointExplorer": True,
                            "FitExplorer": False}
    for name, seconds in widgets.MEASURED_LATENCY_S.items():
        assert widgets.LIVE[name] == (seconds < widgets.LIVE_LATENCY_S), name


@pytest.mark.parametrize("name", sorted(NOTEBOOK_OF))
def test_the_latest_browser_measurement_is_reported(name, capsys):
    # The browser test's own numbers vary with the machine's load (0.26-0.38 s quiet, 0.8-1.5 s
    # busy for the same updates): shown, not asserted, like the browser test's.
    found = sorted(LATENCY.glob(f"{NOTEBOOK_OF[name]}-*/latency.json"))
    if not found:
        pytest.skip("no browser-test measurement here (tests/test_browser.py writes them)")
    seconds = [m["seconds"] for m in json.loads(found[0].read_text()) if m["kind"] == "slider"]
    with capsys.disabled():
        print(f"\n{name}: slider updates {seconds} s in the last browser test; "
              f"recorded {widgets.MEASURED_LATENCY_S[name]} s; live: {widgets.LIVE[name]}")
