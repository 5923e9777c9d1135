"""Which explorers redraw while a slider is dragged, and that this matches the measured latency.

An explorer's sliders update while dragging (``continuous_update=True``) where one update was
measured under ``widgets.LIVE_LATENCY_S`` by the browser test, and on release elsewhere; the
teaching notes say which is which.
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
    notes = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
    assert "redraw while being dragged" in notes and "when the slider is" in notes


@pytest.mark.parametrize("name", sorted(NOTEBOOK_OF))
def test_live_only_where_the_browser_test_measured_a_fast_update(name):
    found = sorted(LATENCY.glob(f"{NOTEBOOK_OF[name]}-*/latency.json"))
    if not found:
        pytest.skip("no browser-test measurement here (tests/test_browser.py writes them)")
    sliders = [m["seconds"] for m in json.loads(found[0].read_text())
               if m["kind"] == "slider"]
    if widgets.LIVE[name]:
        assert max(sliders) < widgets.LIVE_LATENCY_S, (name, sliders)
