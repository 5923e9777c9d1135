"""End to end in a real browser: JupyterLab runs a notebook, a person moves its controls, and the
figure under them changes, quickly.

The test starts JupyterLab on a free localhost port (token, no browser, temporary settings),
opens a copy of every notebook that builds sliders (the explorers of notebooks 00, 01 and 03;
see ``slider_notebooks``), runs all cells from the Run menu, and moves every control: each
slider with the keyboard on its focused handle (a mouse drag if the keyboard did not move it),
each drop-down to another entry, each check box on or off. After each move it checks that the
picture in the same cell changed (the figure's data URL), then makes one more single step of
the same control and measures the time from that step to the new picture in the page (the
update latency a reader feels; the explorers aim at under 0.5 s on a 2-core laptop). The
latencies are printed and written to ``latency.json``; screenshots of the cell before and after
each move go to the same folder, which the test prints. No latency is asserted: the time
depends on the machine.

Needs Debian's Chromium and the Playwright package (no browser is downloaded, ever):
``apt-get install chromium`` and ``pip install playwright`` (part of the ``test`` extra). Extra
notebooks can be added with ``BROWSER_TEST_NOTEBOOKS=path1:path2``; ``CHROMIUM`` overrides the
browser's path, ``BROWSER_SCREENSHOTS`` the screenshot folder (default ``_build/browser-test``).

It takes a few minutes: ~10 s to start JupyterLab and Chromium, then ~35 s for notebook 03
(most of it the training cell) and about as long for each of 00 and 01 on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the test skips; see _skip_unless_browser
    PlaywrightTimeout = TimeoutError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", ROOT / "_build" / "browser-test"))

# Generous but bounded (seconds). Notebook 03 trains for ~15 s on an idle laptop; a loaded
# 2-core CI machine can take several times that.
SERVER_START = 90
PAGE_READY = 120
RUN_ALL = 600
REDRAW = 120

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
]

# Code that puts a slider on screen: ipywidgets' sliders, interact(), or the package's explorers.
SLIDER_CODE = re.compile(r"Slider\s*\(|\binteract(ive)?\s*\(|\b\w*Explorer\s*\(")
# Every control a reader can move, and the latency the explorers aim at (reported, not asserted).
CONTROLS = ", ".join(f".jp-Notebook .widget-{kind}" for kind in ("slider", "dropdown", "checkbox"))
TARGET_LATENCY = 0.5


def slider_notebooks(folder=NOTEBOOK_DIR):
    """Notebooks whose code builds sliders, or whose saved widget state holds one.

    A plain text search for "ipywidgets" is not enough: notebook 00 imports it only to print
    its version.
    """
    found = []
    for path in sorted(Path(folder).glob("[0-9][0-9]-*.ipynb")):
        nb = json.loads(path.read_text())
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        state = json.dumps(nb.get("metadata", {}).get("widgets", {}))
        if SLIDER_CODE.search(code) or "SliderModel" in state:
            found.append(path)
    return found


def _notebooks_under_test():
    paths = slider_notebooks()
    extra = os.environ.get("BROWSER_TEST_NOTEBOOKS", "")
    paths += [Path(p).resolve() for p in extra.split(os.pathsep) if p]
    return paths


def _skip_unless_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed: `pip install playwright` (or "
                    "`pip install -e '.[test]'`); do not run `playwright install`, the test "
                    "uses Debian's Chromium")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian/Ubuntu), "
                    "or set CHROMIUM=/path/to/chromium")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc, log):
    """Terminate JupyterLab (it shuts its kernels down), then kill its whole process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # kernels left behind, if any; own group only
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def lab():
    """A JupyterLab server on a free port, with its own empty settings; always shut down."""
    _skip_unless_browser()
    home = Path(tempfile.mkdtemp(prefix="browser-test-lab-"))
    root, config = home / "root", home / "config"
    root.mkdir()
    # No announcements toast ("get notified about Jupyter news?") over the notebook.
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # Every cell stays in the page (no virtual scrolling), so that all prompts can be read.
    tracker = home / "settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython"),
                     ("MPLCONFIGDIR", "mpl")]:
        env[var] = str(home / sub)
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    port, token = _free_port(), os.urandom(16).hex()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
         "--ServerApp.terminals_enabled=False",
         # Nothing from the network: no update check, no extension manager queries.
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n"
                                   + (home / "server.log").read_text()[-4000:])
            time.sleep(0.5)
        yield {"url": url, "token": token, "root": root, "log": home / "server.log"}
    finally:
        _stop(proc, log)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_context(lab):
    """Headless Chromium with a fresh profile; closed at the end, also on failure."""
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="browser-test-chromium-"))
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _fresh_copy(src, folder):
    """The notebook without outputs, counts or saved widget state, so that every prompt and
    picture on the page comes from this run (the committed file is never touched)."""
    nb = json.loads(Path(src).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    dst = Path(folder) / Path(src).name
    dst.write_text(json.dumps(nb))
    return dst, sum(c["cell_type"] == "code" for c in nb["cells"])


_RUN_STATE_JS = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  const done = prompts.filter(p => /^\\[\\d+\\]:$/.test(p.textContent.trim())).length;
  const text = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')]
      .map(o => o.innerText).join('\\n');
  const i = text.indexOf('Traceback (most recent call last)');
  const busy = prompts.filter(p => p.textContent.trim() === '[*]:').length;
  return {done: done, busy: busy, total: prompts.length,
          error: i < 0 ? null : text.slice(Math.max(0, i - 300), i + 1500)};
}"""

_KERNEL_IDLE_JS = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => / \\| Idle$/.test(e.textContent.trim()) && !/^No Kernel/.test(e.textContent))"""

_IMAGES_JS = "cell => [...cell.querySelectorAll('.jp-OutputArea-output img')].map(i => i.src)"
# True once the cell shows pictures, all rendered, that differ from ``old``.
_NEW_PICTURE_JS = (
    "([cell, old]) => { const now = [...cell.querySelectorAll("
    "'.jp-OutputArea-output img')].map(i => i.src);"
    " return now.length > 0 && now.every(s => s.startsWith('data:image/'))"
    " && JSON.stringify(now) !== JSON.stringify(old); }")


def _click_run_all(page):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item .lm-Menu-itemLabel",
                 has_text=re.compile(r"^Run All Cells$")).click()


def _run_all(page, n_code):
    _click_run_all(page)
    started = time.monotonic()
    retried = False
    while True:
        state = page.evaluate(_RUN_STATE_JS)
        assert state["error"] is None, f"a cell failed:\n{state['error']}"
        if state["total"] == n_code and state["done"] == n_code:
            return
        if not (state["busy"] or state["done"] or retried) and time.monotonic() > started + 60:
            _click_run_all(page)  # a click the page swallowed; nothing has run, so run again
            retried = True
        assert time.monotonic() < started + RUN_ALL, f"Run All unfinished in {RUN_ALL} s: {state}"
        page.wait_for_timeout(1000)


def _readout(slider):
    return slider.locator(".widget-readout").inner_text().strip()


def _readout_changed(page, slider, before, timeout_ms):
    try:
        page.wait_for_function(
            "([el, v]) => el.querySelector('.widget-readout').textContent.trim() !== v",
            arg=[slider.element_handle(), before], timeout=timeout_ms)
        return True
    except PlaywrightTimeout:
        return False


def _kind(control):
    classes = control.get_attribute("class") or ""
    for kind in ("slider", "dropdown", "checkbox"):
        if f"widget-{kind}" in classes:
            return kind
    raise AssertionError(f"not a control this test can move: {classes!r}")


def _label(control):
    """The control's description (its label, or a check box's own text)."""
    text = control.evaluate(
        "el => [el.querySelector('.widget-label'), el].map(e => e ? e.innerText : '')"
        ".map(t => t.replace(/[\\u200b\\s]+/g, ' ').trim()).find(t => t) || ''")
    return text.split("\n")[0] or "(no label)"


def _toggle(control, kind):
    """Pick another entry of a drop-down, or flip a check box. Returns ``(how, before,
    after)``."""
    if kind == "dropdown":
        select = control.locator("select")
        before = select.input_value()
        options = [o for o in select.locator("option").all_inner_texts() if o != before]
        select.select_option(label=options[0])
        return "drop-down", before, select.input_value()
    box = control.locator("input[type=checkbox]")
    before = box.is_checked()
    box.click()
    return "click", "on" if before else "off", "on" if box.is_checked() else "off"


def _time_one_step(page, control, kind, how, cell, old):
    """Seconds from one more step of the control to a new picture in its cell: one key press
    back the way the move came (a slider; one step always fits there), the first entry of a
    drop-down that differs, or one more click of a check box."""
    started = time.perf_counter()
    if kind == "slider":
        back = {"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}[how.split()[-1]] \
            if how.startswith("keyboard") else "ArrowLeft"
        handle = control.locator(".noUi-handle").first
        handle.focus()
        started = time.perf_counter()
        handle.press(back)
    else:
        _toggle(control, kind)
    # polled every animation frame: the time measured is the time to the first new picture
    page.wait_for_function(_NEW_PICTURE_JS, arg=[cell.element_handle(), old],
                           timeout=REDRAW * 1000, polling="raf")
    seconds = time.perf_counter() - started
    _settle(page, cell, quiet=1, poll_ms=200)
    return seconds


def _settle(page, cell, *, quiet, poll_ms):
    """Wait until the cell's pictures have not changed for ``quiet`` seconds (at most REDRAW
    seconds in all); returns them."""
    deadline = time.monotonic() + REDRAW
    last, since = cell.evaluate(_IMAGES_JS), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        page.wait_for_timeout(poll_ms)
        now = cell.evaluate(_IMAGES_JS)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _move(page, slider, key):
    """Move the slider's first handle five steps with the keyboard (the other way if it is at
    the end of its range), or drag it with the mouse if keys did not move it. Returns
    ``(how, readout before, readout after)``."""
    other = {"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}[key]
    before = _readout(slider)
    handle = slider.locator(".noUi-handle").first
    for k in (key, other):
        handle.focus()
        for _ in range(5):
            handle.press(k)
        if _readout_changed(page, slider, before, 5000):
            return f"keyboard {k}", before, _readout(slider)
    for dx in (40, -40):
        box = handle.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + dx, y, steps=10)
        page.mouse.up()
        if _readout_changed(page, slider, before, 5000):
            return "mouse drag", before, _readout(slider)
    raise AssertionError(f"could not move the slider (readout stays {before!r})")


def _wait_for_new_picture(page, cell, old):
    """Wait until the cell shows a different picture, then until it stops changing (each
    key press may have sent its own value, and each value its own redraw)."""
    page.wait_for_function(_NEW_PICTURE_JS, arg=[cell.element_handle(), old],
                           timeout=REDRAW * 1000)
    return _settle(page, cell, quiet=2, poll_ms=250)


_LABELS_JS = "cell => [...cell.querySelectorAll('.widget-label')].map(e => e.textContent)"
_REPLY = "the kernel saw the slider move to"


def _check_kernel_reply(page, control, cell, output, shots, i, name):
    """Move a figure-less slider; its label must come back rewritten by the kernel."""
    labels = cell.evaluate(_LABELS_JS)
    assert any("drag this slider" in text for text in labels), (
        f"control {i} of {name}: no figure in its cell, and not the set-up check's slider "
        f"(labels: {labels})")
    assert _kind(control) == "slider", f"control {i} of {name}: a figure-less {_kind(control)}"
    output.screenshot(path=str(shots / f"{i + 1:02d}-before.png"))
    how, before, after = _move(page, slider=control, key="ArrowRight")
    # Each key press sends a value; the last reply names where the slider stopped.
    page.wait_for_function(
        "([cell, reply]) => [...cell.querySelectorAll('.widget-label')]"
        ".some(e => e.textContent.includes(reply))",
        arg=[cell.element_handle(), f"{_REPLY} {after.strip()}."], timeout=REDRAW * 1000)
    output.screenshot(path=str(shots / f"{i + 1:02d}-after.png"))
    return f"slider {i + 1} (set-up check): {before} -> {after} ({how}), kernel replied"


@pytest.mark.parametrize("notebook", _notebooks_under_test(), ids=lambda p: p.name)
def test_sliders_redraw_the_figure(notebook, lab, browser_context, capsys):
    started = time.monotonic()
    shots = SCREENSHOTS / notebook.stem
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with capsys.disabled():
        print(f"\n[browser] {notebook.name}: screenshots in {shots}")

    copy, n_code = _fresh_copy(notebook, lab["root"])
    page = browser_context.new_page()
    moves, latencies = [], []
    try:
        page.set_default_timeout(PAGE_READY * 1000)
        # A workspace of its own, reset: only this notebook is open, whatever ran before.
        workspace = re.sub(r"[^a-z0-9]+", "-", notebook.stem.lower())
        page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{copy.name}"
                  f"?reset&token={lab['token']}")
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for()
        assert page.locator(".jp-Notebook").count() == 1, "more than one notebook open"
        # The kernel must be up before Run All: cells sent while it starts are lost. (The
        # toolbar's execution indicator says "idle" before there is a kernel; the status bar
        # says "No Kernel | Initializing", then "<kernel name> | Idle".)
        page.wait_for_function(_KERNEL_IDLE_JS)
        _run_all(page, n_code)
        sliders = page.locator(".jp-Notebook .widget-slider")
        sliders.first.wait_for()
        page.screenshot(path=str(shots / "00-after-run-all.png"), full_page=False)

        controls = page.locator(CONTROLS)
        for i in range(controls.count()):
            control = controls.nth(i)
            cell = control.locator("xpath=ancestor::div[contains(@class, 'jp-CodeCell')][1]")
            control.scroll_into_view_if_needed()
            old = cell.evaluate(_IMAGES_JS)
            output = cell.locator(".jp-Cell-outputArea")
            if not old:
                # A control with no figure must be the set-up check's slider (notebook 00),
                # whose label the kernel rewrites when the slider moves.
                moves.append(_check_kernel_reply(page, control, cell, output, shots, i,
                                                 notebook.name))
                continue
            output.screenshot(path=str(shots / f"{i + 1:02d}-before.png"))
            kind, name = _kind(control), _label(control)
            if kind == "slider":
                key = "ArrowRight" if i % 2 == 0 else "ArrowLeft"
                how, before, after = _move(page, slider=control, key=key)
            else:
                how, before, after = _toggle(control, kind)
            new = _wait_for_new_picture(page, cell, old)
            output.screenshot(path=str(shots / f"{i + 1:02d}-after.png"))
            assert new != old
            seconds = _time_one_step(page, control, kind, how, cell, new)
            latencies.append({"notebook": notebook.name, "control": name, "kind": kind,
                              "seconds": round(seconds, 3)})
            flag = "" if seconds < TARGET_LATENCY else f" (over the {TARGET_LATENCY} s aim)"
            moves.append(f"{kind} {i + 1} ({name}): {before} -> {after} ({how}), figure "
                         f"redrawn; one more step redrew it in {seconds:.2f} s{flag}")
        assert len(latencies) >= 2, moves
        state = page.evaluate(_RUN_STATE_JS)
        assert state["error"] is None, f"an error after moving the sliders:\n{state['error']}"
    except Exception:
        try:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
        except Exception:  # a crashed page: the original error matters more
            pass
        raise
    finally:
        page.close()
    (shots / "latency.json").write_text(json.dumps(latencies, indent=1) + "\n")
    with capsys.disabled():
        for line in moves:
            print(f"[browser]   {line}")
        worst = max(x["seconds"] for x in latencies)
        print(f"[browser] {notebook.name}: {time.monotonic() - started:.0f} s; slowest update "
              f"{worst:.2f} s (all in {shots / 'latency.json'})")
