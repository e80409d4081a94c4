"""Drive the course in JupyterLab with headless Chromium, as a student does after ``make lab``.

Every notebook: open it, Run All Cells in smoke mode, and count the images each cell rendered:
every cell that calls ``figures.plot_*`` shows at least one image per call, every widget panel
shows its figure, no cell shows an error; a screenshot per notebook goes to
``tests/artifacts/notebook_0N.png`` and the per-cell counts to ``tests/artifacts/images.json``.
Then, on the already-run pages: notebook 03's k slider moves (the displayed precision and recall
and the discrepancy histogram change); notebook 04's threshold slider moves, then its criterion
menu switches to a balancing rule (the threshold leaves the numbers, the slider is disabled, the
figure changes); notebook 06's review panel decides three label issues with its buttons (the
status line advances, the decision log on disk gains the right decision per click).

Run with ``make test-browser`` (``pytest -m browser tests/test_browser.py``). Needs Debian's
``chromium`` (``/usr/bin/chromium``, or set ``MOIT_CHROMIUM``) and Python's ``playwright``; it
never downloads a browser. JupyterLab starts as ``make lab`` starts it (no ``MPLBACKEND`` in its
environment); the kernel runs in smoke mode (``MOIT_SMOKE=1``). Screenshots of the moved panels:
``browser_03.png``, ``browser_04.png`` and ``browser_06.png`` (``..._failure.png`` when a test
fails).
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("0*.ipynb"))
NOTEBOOK = "notebooks/03_knn_soft_labels.ipynb"
NOTEBOOK_04 = "notebooks/04_detection_quality.ipynb"
NOTEBOOK_06 = "notebooks/06_your_own_data.ipynb"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # containers often give /dev/shm only 64 MB; Debian's wrapper adds this flag only when its
    # own /dev/shm check works, so pass it ourselves (shared memory then lives in /tmp)
    "--disable-dev-shm-usage",
]
SERVER_START_S = 90
NOTEBOOK_RUN_S = 420  # a cold cache trains the smoke run first
WIDGET_REACT_S = 60

# JupyterLab user settings for the test server: no autosave (running the notebook in the
# browser must not write outputs into the repository's notebook) and no news/update checks
# (the test machine may have no network, and their pop-ups cover the page).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # every cell in the DOM (no virtual scrolling), so the images of all cells can be counted
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True, "windowingMode": "none",
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
}


def _chromium() -> str:
    path = os.environ.get("MOIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip(f"no Chromium at {path}: `apt-get install chromium`, or set MOIT_CHROMIUM")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    url: str
    token: str
    log: Path

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _ready(url: str, token: str) -> bool:
    req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def jupyter_lab(root: Path, env_extra: dict[str, str], drop: tuple[str, ...] = ()
                ) -> Iterator[LabServer]:
    """JupyterLab on a free 127.0.0.1 port with a random token; always shut down on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="moit-lab-") as tmp:
        tmp_path = Path(tmp)
        settings = tmp_path / "settings"
        for name, value in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(value))
        env = {
            **{k: v for k, v in os.environ.items() if k not in drop},
            **env_extra,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        }
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
            "--ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.open_browser=False", "--ServerApp.port_retries=0",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the session's real state
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        log = tmp_path / "lab.log"
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        server = LabServer(url=url, token=token, log=log)
        try:
            deadline = time.monotonic() + SERVER_START_S
            while not _ready(url, token):
                if proc.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n"
                                       f"{server.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JupyterLab not ready in {SERVER_START_S}s:\n"
                                       f"{server.log_tail()}")
                time.sleep(0.5)
            yield server
        finally:
            _shutdown(proc, url, token)


def _shutdown(proc: subprocess.Popen, url: str, token: str) -> None:
    """Ask the server to stop (it stops its kernels too), then escalate on this process only."""
    if proc.poll() is None:
        req = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                     headers={"Authorization": f"token {token}"})
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)  # its own session: the server and the kernels it started
            except ProcessLookupError:
                break
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue


# True once the current notebook's session is attached to a connected, idle kernel. The toolbar's
# execution indicator is no substitute: it reads "idle" for a moment before any session exists,
# and cells run then make JupyterLab start a kernel of its own, replacing (or connecting twice
# to) the session's one: queued cells are dropped or widgets show "model not found".
KERNEL_READY_JS = """
() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const ctx = panel && panel.sessionContext;
  const kernel = ctx && ctx.isReady && ctx.session && ctx.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}
"""
SELECT_KERNEL_JS = """
() => [...document.querySelectorAll('.jp-Dialog')].some(d => d.innerText.includes('Select Kernel'))
"""


def _wait_for_kernel(page) -> None:
    """Wait until the notebook's kernel is connected and idle, accepting a "Select Kernel" dialog.

    With the settings above JupyterLab starts the notebook's own kernel by itself; should it ask
    instead, the kernel would never start before the dialog is answered, so wait for either.
    """
    page.wait_for_function(f"() => ({KERNEL_READY_JS})() || ({SELECT_KERNEL_JS})()",
                           timeout=SERVER_START_S * 1000)
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.is_visible():
        dialog.locator(".jp-mod-accept").click()  # it proposes the notebook's own kernel
        dialog.wait_for(state="hidden", timeout=10_000)
    page.wait_for_function(KERNEL_READY_JS, timeout=SERVER_START_S * 1000)


def _open(page, server: LabServer, notebook: str) -> None:
    page.goto(f"{server.url}/lab/tree/{notebook}?reset&token={server.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=SERVER_START_S * 1000)
    # the kernel must be attached before Run All (see KERNEL_READY_JS)
    _wait_for_kernel(page)


def _menu(page, menu: str, item: str) -> None:
    """Click ``menu`` in the menu bar, then its ``item`` once that is enabled (5 s at most)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{menu}$")).first.click()
    entry = page.locator(".lm-Menu-item:not(.lm-mod-disabled)",
                         has=page.locator(".lm-Menu-itemLabel",
                                          has_text=re.compile(rf"^{item}$"))).first
    try:
        entry.click(timeout=5000)
    except Exception:
        page.keyboard.press("Escape")  # close the menu before the caller retries
        raise


def _run_all_cells(page, attempts: int = 5) -> None:
    """Run > Run All Cells, and check that the cells were really sent to the kernel.

    Right after the page loads, the notebook may not be JupyterLab's current widget yet: the menu
    item is then disabled and a click does nothing, so wait until it is enabled and retry while
    no cell prompt shows "[*]" (queued or running) or an execution count.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    started = page.locator(".jp-NotebookPanel .jp-InputPrompt",
                           has_text=re.compile(r"\[(\*|\d+)\]")).first
    for _ in range(attempts):
        try:
            _menu(page, "Run", "Run All Cells")
            started.wait_for(state="visible", timeout=5000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"Run All Cells did not start the notebook ({attempts} attempts)")


# The text of a panel's metrics line (the HTML widget with the CSS class moit-metrics) in the
# widget box that holds ``slider``.
PANEL_METRICS_JS = """
slider => {
  const box = slider.closest('.widget-vbox') || slider.parentElement;
  const line = box.querySelector('.moit-metrics');
  return line ? line.innerText.replace(/\\s+/g, ' ').trim() : '';
}
"""


def _numbers(text: str) -> dict[str, str]:
    """precision / recall as displayed ("0.812", or "–" where undefined)."""
    found = dict(re.findall(r"(precision|recall) (\S+)", text))
    assert {"precision", "recall"} <= set(found), f"no precision / recall in {text!r}"
    return found


@dataclass
class PanelState:
    metrics: str
    image: bytes


class Panel:
    """One panel of a notebook in the page: its slider, metrics line and figure."""

    def __init__(self, page, slider) -> None:
        self.page, self.slider = page, slider
        self.box = slider.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
        self.handle = slider.locator(".noUi-handle").first
        self.image = self.box.locator("img").first

    def state(self) -> PanelState:
        self.image.scroll_into_view_if_needed()
        return PanelState(self.slider.evaluate(PANEL_METRICS_JS), self.image.screenshot())

    def wait_until_changed(self, before: PanelState) -> PanelState:
        """Wait for both the metrics line and the figure to differ from ``before``."""
        self.page.wait_for_function(f"([s, b]) => ({PANEL_METRICS_JS})(s) !== b",
                                    arg=[self.slider.element_handle(), before.metrics],
                                    timeout=WIDGET_REACT_S * 1000)
        deadline = time.monotonic() + WIDGET_REACT_S
        while True:
            self.page.wait_for_timeout(300)  # let the figure finish redrawing
            now = self.state()
            if now.image != before.image or time.monotonic() > deadline:
                return now

    def to_minimum(self) -> None:
        """Move the slider to its left end with the keyboard, as a user would."""
        self.handle.focus()
        self.page.keyboard.press("Home")
        for _ in range(400):
            now = self.handle.get_attribute("aria-valuenow")
            if now is not None and float(now) <= float(self.handle.get_attribute(
                    "aria-valuemin") or 0):
                return
            self.page.keyboard.press("ArrowLeft")


@contextmanager
def browser_page(screenshot: Path) -> Iterator:
    """A Chromium page; on failure a screenshot of it lands next to ``screenshot``."""
    from playwright.sync_api import sync_playwright

    failure_shot = screenshot.with_name(screenshot.stem + "_failure.png")
    for stale in (screenshot, failure_shot):  # only this run's pictures in tests/artifacts/
        stale.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                yield page
            except BaseException:
                failure_shot.parent.mkdir(parents=True, exist_ok=True)
                try:
                    page.screenshot(path=str(failure_shot), full_page=False)
                except Exception:  # the page itself may be gone; keep the original error
                    pass
                raise
        finally:
            browser.close()


def _slider(page, label: str):
    return page.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{label}\s*$"))).first


def _panel(page, label: str) -> Panel:
    """The panel whose slider is ``label``, on a page whose notebook has run, numbers filled in."""
    slider = _slider(page, label)
    slider.wait_for(state="visible", timeout=WIDGET_REACT_S * 1000)
    slider.scroll_into_view_if_needed()
    page.wait_for_function(f"s => ({PANEL_METRICS_JS})(s).match(/[0-9]/)",
                           arg=slider.element_handle(), timeout=WIDGET_REACT_S * 1000)
    panel = Panel(page, slider)
    panel.image.wait_for(state="visible", timeout=WIDGET_REACT_S * 1000)
    return panel


def _save(page, panel: Panel, screenshot: Path) -> None:
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    panel.box.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot), full_page=False)


def drive_k_slider(page, screenshot: Path) -> tuple[PanelState, PanelState]:
    """Notebook 03 (run): move the k slider to 1; return the panel before and after."""
    panel = _panel(page, "k")
    before = panel.state()
    value_before = panel.handle.get_attribute("aria-valuenow")
    panel.to_minimum()
    assert panel.handle.get_attribute("aria-valuenow") != value_before, "k did not move"
    after = panel.wait_until_changed(before)
    _save(page, panel, screenshot)
    return before, after


def drive_threshold_panel(page, screenshot: Path
                          ) -> tuple[PanelState, PanelState, PanelState, bool]:
    """Notebook 04 (run): move the threshold to 0, then pick the "median" criterion; return the
    panel before, after the threshold moved, after the criterion changed, and whether the
    threshold slider is then disabled."""
    panel = _panel(page, "threshold")
    before = panel.state()
    panel.to_minimum()
    moved = panel.wait_until_changed(before)
    panel.box.locator("select").first.select_option("median")
    switched = panel.wait_until_changed(moved)
    disabled = panel.slider.locator("[disabled]").count() > 0 or bool(
        panel.slider.locator(".noUi-target").first.get_attribute("disabled") is not None)
    _save(page, panel, screenshot)
    return before, moved, switched, disabled


# every code cell has run (an execution count each) and the kernel is idle
RUN_DONE_JS = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const ctx = panel && panel.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return !!kernel && kernel.status === 'idle' &&
         cells.every(c => c.model.executionCount !== null);
}
"""
# per code cell (index among all cells): images loaded, images not (yet) loaded, widget views
# (tqdm bars are widgets too), outputs that show an error
CELL_IMAGES_JS = """
() => window.jupyterapp.shell.currentWidget.content.widgets.map((cell, index) => {
  if (cell.model.type !== 'code') return null;
  const out = cell.node.querySelector('.jp-Cell-outputArea') || cell.node;
  const imgs = [...out.querySelectorAll('img')];
  const ok = i => i.complete && i.naturalWidth > 0;
  return {index, images: imgs.filter(ok).length, loading: imgs.filter(i => !ok(i)).length,
          widgets: out.querySelectorAll('.jupyter-widgets').length,
          errors: [...out.querySelectorAll('.jp-OutputArea-output')].filter(o =>
            /Traceback \\(most recent call last\\)|Error displaying widget/.test(o.innerText)
          ).map(o => o.innerText.slice(-1500))};
}).filter(c => c !== null)
"""


def _wait_for_cells(page, what: str, done) -> None:
    """Poll until ``done()`` holds several times in a row (between two cells the kernel is idle
    too), failing at once when a cell shows a traceback, or after NOTEBOOK_RUN_S."""
    traceback = page.locator(".jp-NotebookPanel .jp-OutputArea-output",
                             has_text="Traceback (most recent call last)").first
    deadline = time.monotonic() + NOTEBOOK_RUN_S
    done_polls = 0
    while done_polls < 4:
        if traceback.is_visible():
            raise AssertionError(f"a notebook cell raised:\n{traceback.inner_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not finish in {NOTEBOOK_RUN_S}s")
        done_polls = done_polls + 1 if done() else 0
        page.wait_for_timeout(500)


def _run_all(page, server: LabServer, notebook: str) -> list[dict]:
    """Open ``notebook``, Run All Cells, wait for the end (failing at once on an error), and
    return CELL_IMAGES_JS's counts once every image has loaded."""
    _open(page, server, notebook)
    _run_all_cells(page)
    _wait_for_cells(page, notebook, lambda: page.evaluate(RUN_DONE_JS))
    deadline = time.monotonic() + WIDGET_REACT_S
    while True:
        cells = page.evaluate(CELL_IMAGES_JS)
        if not any(c["loading"] for c in cells) or time.monotonic() > deadline:
            return cells
        page.wait_for_timeout(500)


def expected_images(notebook: str) -> dict[int, int]:
    """The least number of images each plotting cell must show, from the notebook's source: one
    per ``figures.plot_*`` call, one for a cell that ends by displaying a widget panel."""
    nb = json.loads((ROOT / notebook).read_text(encoding="utf-8"))
    expected = {}
    for index, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] != "code":
            continue
        n = src.count("figures.plot_")
        python = "\n".join("" if ln.lstrip().startswith("%") else ln for ln in src.splitlines())
        body = ast.parse(python).body
        if "Panel" in src and body and isinstance(body[-1], ast.Expr):
            n = max(n, 1)  # a panel's figure
        if n:
            expected[index] = n
    return expected


def _record(notebook: str, cells: list[dict]) -> None:
    """Append this notebook's per-cell counts to tests/artifacts/images.json (a CI artifact)."""
    path = ARTIFACTS / "images.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(path.read_text()) if path.exists() else {}
    found[Path(notebook).stem] = {str(c["index"]): c["images"] for c in cells if c["images"]}
    path.write_text(json.dumps(found, indent=1) + "\n")


@contextmanager
def _lab_session(notebooks: list[Path]) -> Iterator[LabServer]:
    """JupyterLab as ``make lab`` starts it, in smoke mode; the committed notebooks are left
    untouched afterwards."""
    originals = {nb: nb.read_bytes() for nb in notebooks}
    checkpoints = notebooks[0].parent / ".ipynb_checkpoints"
    had_checkpoints = checkpoints.exists()
    try:
        # `make lab` sets no MPLBACKEND (`make test-browser` does, for its own headless runs)
        with jupyter_lab(ROOT, {"MOIT_SMOKE": "1"}, drop=("MPLBACKEND",)) as server:
            yield server
    finally:
        # guard: the browser session must leave the committed (output-free) notebooks untouched
        for nb, original in originals.items():
            if nb.read_bytes() != original:
                nb.write_bytes(original)
        if not had_checkpoints:  # JupyterLab makes one when it opens a notebook
            shutil.rmtree(checkpoints, ignore_errors=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabServer]:
    pytest.importorskip("playwright")
    assert _chromium()
    if (ARTIFACTS / "images.json").exists():
        (ARTIFACTS / "images.json").unlink()
    with _lab_session([ROOT / nb for nb in NOTEBOOKS]) as server:
        yield server


def test_the_six_notebooks_are_driven():
    assert len(NOTEBOOKS) == 6 and {NOTEBOOK, NOTEBOOK_04, NOTEBOOK_06} <= set(NOTEBOOKS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda nb: Path(nb).stem[:2])
def test_notebook_shows_every_figure(lab, notebook):
    """Run All in JupyterLab: every plotting cell shows its images, no cell shows an error; in
    03 and 04 the widget panels then react to their controls."""
    stem = Path(notebook).stem
    shot = ARTIFACTS / f"notebook_{stem[:2]}.png"
    with browser_page(shot) as page:
        try:
            cells = _run_all(page, lab, notebook)
            _record(notebook, cells)
            errors = [e for c in cells for e in c["errors"]]
            assert not errors, f"{notebook}: a cell shows an error:\n{errors[0]}"
            shown = {c["index"]: c["images"] for c in cells}
            expected = expected_images(notebook)
            missing = {i: (shown.get(i, 0), n) for i, n in expected.items() if shown.get(i, 0) < n}
            assert not missing, (f"{notebook}: cells whose figures did not render "
                                 f"(cell: (shown, expected)): {missing}")
            first = page.locator(".jp-NotebookPanel .jp-Cell").nth(min(expected))
            first.scroll_into_view_if_needed()
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
            if notebook == NOTEBOOK:
                _check_k_slider(*drive_k_slider(page, ARTIFACTS / "browser_03.png"))
            if notebook == NOTEBOOK_04:
                _check_threshold_panel(*drive_threshold_panel(page,
                                                              ARTIFACTS / "browser_04.png"))
        except Exception as err:
            raise AssertionError(f"{err}\n--- JupyterLab log ---\n{lab.log_tail()}") from err
        finally:  # free the kernel before the next notebook starts one
            page.evaluate("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                          " && window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


def _check_k_slider(before: PanelState, after: PanelState) -> None:
    old, new = _numbers(before.metrics), _numbers(after.metrics)
    assert new["precision"] != old["precision"], (before.metrics, after.metrics)
    assert new["recall"] != old["recall"], (before.metrics, after.metrics)
    assert after.metrics.startswith("k 1 "), after.metrics
    assert after.image != before.image, "the histogram did not change when k moved"
    assert (ARTIFACTS / "browser_03.png").stat().st_size > 10_000


def _check_threshold_panel(before: PanelState, moved: PanelState, switched: PanelState,
                           disabled: bool) -> None:
    old, new = _numbers(before.metrics), _numbers(moved.metrics)
    assert new["precision"] != old["precision"] and new["recall"] != old["recall"], (
        before.metrics, moved.metrics)
    assert new["recall"] == "1.000", moved.metrics  # threshold 0: every sample flagged
    assert moved.image != before.image, "the histogram did not change when the threshold moved"
    assert "threshold" in moved.metrics and "threshold" not in switched.metrics, switched.metrics
    assert switched.image != moved.image, "the figure did not change with the criterion"
    assert disabled, "the threshold slider stays enabled under a balancing criterion"
    assert (ARTIFACTS / "browser_04.png").stat().st_size > 10_000



# -- notebook 06: the review panel

# the kernel is idle and every code cell from ``first`` to ``last`` (indices among all cells)
# has an execution count newer than ``since`` (the highest count before the run started)
CELLS_DONE_JS = """
([first, last, since]) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const ctx = panel && panel.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  const cells = panel.content.widgets.slice(first, last + 1).filter(c => c.model.type === 'code');
  return !!kernel && kernel.status === 'idle' &&
         cells.every(c => c.model.executionCount !== null && c.model.executionCount > since);
}
"""
LAST_COUNT_JS = """
() => Math.max(0, ...window.jupyterapp.shell.currentWidget.content.widgets
  .map(c => c.model.type === 'code' && c.model.executionCount || 0))
"""
SELECT_CELL_JS = """
index => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  notebook.activeCellIndex = index;
  notebook.deselectAll();
  return notebook.activeCellIndex;
}
"""


def _run_cells(page, item: str, active: int, first: int, last: int, attempts: int = 5) -> None:
    """With cell ``active`` selected, Run > ``item``; wait until the cells ``first`` to ``last``
    have run (failing at once on an error)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    since = page.evaluate(LAST_COUNT_JS)
    running = page.locator(".jp-NotebookPanel .jp-InputPrompt", has_text="[*]").first
    for attempt in range(attempts):
        assert page.evaluate(SELECT_CELL_JS, active) == active
        try:
            _menu(page, "Run", item)
            page.wait_for_function(f"a => ({CELLS_DONE_JS})(a) || "
                                   "document.querySelector('.jp-InputPrompt') && "
                                   "[...document.querySelectorAll('.jp-InputPrompt')]"
                                   ".some(p => p.innerText.includes('[*]'))",
                                   arg=[first, last, since], timeout=5000)
            break
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise AssertionError(f"Run > {item} did not start ({attempts} attempts)") from None
    _wait_for_cells(page, f"cells {first}-{last}", lambda: page.evaluate(
        CELLS_DONE_JS, [first, last, since]) and not running.is_visible())


def _cell_index(notebook: str, needle: str) -> int:
    """The index (among all cells) of the one code cell whose source holds ``needle``."""
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    found = [i for i, c in enumerate(cells)
             if c["cell_type"] == "code" and needle in "".join(c["source"])]
    assert len(found) == 1, f"{notebook}: {len(found)} code cells hold {needle!r}"
    return found[0]


@dataclass
class ReviewState:
    """What the review panel shows: its status line, and the sample on display."""
    status: str
    decided: int
    issues: int
    sample: int | None
    given: str | None
    suggested: str | None


STATUS = re.compile(r"(\d+) of (\d+) label issues decided")
ON_DISPLAY = re.compile(r"^sample (\d+) · .* · given (.+?) · suggested (.+?) · label quality")


class ReviewPanelPage:
    """Notebook 06's review panel in the page: its status line, buttons and class menu."""

    def __init__(self, page, cell) -> None:
        self.page, self.cell = page, cell
        self.status_line = cell.locator(".widget-html").first  # the panel's one HTML widget
        self.accept = cell.locator("button", has_text=re.compile(r"^\s*accept ")).first
        self.keep = cell.locator("button", has_text=re.compile(r"^\s*keep ")).first
        self.set_label = cell.locator("button", has_text=re.compile(r"^\s*set label\s*$")).first
        self.menu = cell.locator(".widget-dropdown", has_text="other class").locator("select")
        self.status_line.wait_for(state="visible", timeout=WIDGET_REACT_S * 1000)
        page.wait_for_function("el => /label issues? (is )?decided/.test(el.innerText)",
                               arg=self.status_line.element_handle(),
                               timeout=WIDGET_REACT_S * 1000)

    def state(self) -> ReviewState:
        text = re.sub(r"\s+", " ", self.status_line.inner_text()).strip()
        done = STATUS.search(text)
        assert done, f"no 'N of M label issues decided' in {text!r}"
        shown = ON_DISPLAY.match(text)
        return ReviewState(text, int(done[1]), int(done[2]), *(
            (int(shown[1]), shown[2], shown[3]) if shown else (None, None, None)))

    def click(self, button, before: ReviewState) -> ReviewState:
        """Click ``button``, then wait for the status line to count one more decision."""
        button.click()
        self.page.wait_for_function(
            "([el, n]) => { const m = el.innerText.match(/(\\d+) of \\d+ label issues decided/);"
            " return !!m && Number(m[1]) === n; }",
            arg=[self.status_line.element_handle(), before.decided + 1],
            timeout=WIDGET_REACT_S * 1000)
        return self.state()


def _log_decisions(log: Path) -> list[dict]:
    """The decision log's decisions (its lines after the header)."""
    lines = [json.loads(ln) for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert lines and lines[0].get("format"), f"{log}: no review log header"
    return lines[1:]


def test_review_panel_buttons_decide_and_log(lab):
    """Notebook 06 in JupyterLab: run the cells up to the review panel, then decide three label
    issues with the panel as a student does (accept the suggestion, keep the given class, pick
    another class and "set label"): each click advances the status line by one decision and
    appends that decision to the review log on disk. Then run the rest of the notebook (the
    simulated reviewer closes and reopens the review): it runs on, and a click on the panel of
    the closed review writes nothing."""
    shot = ARTIFACTS / "browser_06.png"
    at = _cell_index(NOTEBOOK_06, "review_panel.ReviewPanel(")
    with browser_page(shot) as page:
        try:
            _open(page, lab, NOTEBOOK_06)
            _run_cells(page, "Run All Above Selected Cell", at, 0, at - 1)
            _run_cells(page, "Run Selected Cells?", at, at, at)
            cell = page.locator(".jp-NotebookPanel .jp-Cell").nth(at)
            printed = cell.locator(".jp-OutputArea-output", has_text="(log: ").first.inner_text()
            found = re.search(r"\(log: (.+?label_review\.jsonl)\)", printed)
            assert found, f"no review log path in the panel cell's output: {printed!r}"
            log = Path(found[1])
            panel = ReviewPanelPage(page, cell)
            classes = [o.replace("\xa0", " ").strip()  # the menu shows spaces as nbsp
                       for o in panel.menu.locator("option").all_inner_texts()]
            start = panel.state()
            assert start.sample is not None and start.issues >= 3, start.status
            logged = _log_decisions(log)
            assert len(logged) == start.decided, (start.status, len(logged))

            def check(state: ReviewState, decision: str, label: str) -> ReviewState:
                new = _log_decisions(log)[len(logged):]
                assert len(new) == 1, f"{decision}: {len(new)} new lines in {log}"
                line = new[0]
                assert (line["sample"], line["decision"]) == (state.sample, decision), line
                assert classes[line["given"]] == state.given, (line, state.status)
                assert classes[line["suggested"]] == state.suggested, (line, state.status)
                assert classes[line["label"]] == label, (line, label)
                logged.append(line)
                return state

            after = panel.click(panel.accept, start)
            check(start, "accept", start.suggested)
            assert after.sample != start.sample and after.decided == start.decided + 1
            before, after = after, panel.click(panel.keep, after)
            check(before, "keep", before.given)
            other = next(c for c in classes if c not in (after.given, after.suggested))
            panel.menu.select_option(label=other)
            before, after = after, panel.click(panel.set_label, after)
            check(before, "relabel", other)
            assert after.decided == start.decided + 3 and after.issues == start.issues
            shot.parent.mkdir(parents=True, exist_ok=True)
            cell.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
            # the rest of the notebook runs on from these decisions; it closes the panel's
            # review (and opens a new one), so a click on this panel must write nothing
            n_cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content"
                                    ".widgets.length")
            _run_cells(page, "Run Selected Cell and All Below", at + 1, at + 1, n_cells - 1)
            n_logged = len(_log_decisions(log))
            assert n_logged >= len(logged)
            panel.keep.click()
            page.wait_for_function(
                "el => /is closed|every label issue is decided/.test(el.innerText)",
                arg=panel.status_line.element_handle(), timeout=WIDGET_REACT_S * 1000)
            assert len(_log_decisions(log)) == n_logged
        except Exception as err:
            raise AssertionError(f"{err}\n--- JupyterLab log ---\n{lab.log_tail()}") from err
        finally:  # free the kernel before the next notebook starts one
            page.evaluate("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                          " && window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


# the images of a static page: loaded, broken; error outputs; the exercises' answer blocks
BOOK_PAGE_JS = """
() => {
  const imgs = [...document.querySelectorAll('img')];
  const ok = i => i.complete && i.naturalWidth > 0;
  return {loaded: imgs.filter(ok).length, broken: imgs.filter(i => !ok(i)).length,
          errors: [...document.querySelectorAll('.jp-OutputArea-output')]
            .filter(o => /Traceback \\(most recent call last\\)/.test(o.innerText)).length,
          answers: [...document.querySelectorAll('details')].length,
          open_answers: [...document.querySelectorAll('details[open]')].length,
          text: document.body.innerText};
}
"""


def test_book_pages_show_every_figure(tmp_path):
    """``make book``'s site: an index linking the six pages; each page shows at least the
    images its notebook draws (one per figure call and per panel), every image loads, no cell
    shows an error, the answers are collapsed, the mode and execution time are stated. Builds
    the book in smoke mode into a temporary folder, or checks ``$MOIT_BOOK_DIR`` if set."""
    pytest.importorskip("playwright")
    _chromium()
    from moit_explore.course import book

    out = Path(os.environ["MOIT_BOOK_DIR"]).resolve() if os.environ.get("MOIT_BOOK_DIR") else (
        tmp_path / "book")
    if not (out / "book.json").exists():
        book.build_book(out, mode="smoke", progress=False)
    pages = json.loads((out / "book.json").read_text())
    assert [p["notebook"] for p in pages] == [Path(nb).name for nb in NOTEBOOKS]
    counts = {}
    with browser_page(ARTIFACTS / "book_index.png") as page:
        page.goto((out / "index.html").as_uri())
        links = page.locator("a[href$='.html']")
        assert links.count() == len(pages)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "book_index.png"))
        for entry, notebook in zip(pages, NOTEBOOKS, strict=True):
            page.goto((out / entry["page"]).as_uri())
            page.wait_for_load_state("load")
            if "$" in (ROOT / notebook).read_text():  # formulas: typeset by the book's own MathJax
                page.wait_for_selector(".MathJax", timeout=60_000)
            info = page.evaluate(BOOK_PAGE_JS)
            expected = sum(expected_images(notebook).values())
            counts[entry["notebook"]] = info["loaded"]
            assert info["broken"] == 0, f"{entry['page']}: {info['broken']} images do not load"
            assert info["loaded"] >= expected, (entry["page"], info["loaded"], expected)
            assert info["errors"] == 0, f"{entry['page']}: a cell shows an error"
            assert info["answers"] >= 1 and info["open_answers"] == 0, entry["page"]
            assert f"Executed in {entry['mode']} mode" in info["text"], entry["page"]
            assert f"took {entry['seconds']:.0f} s" in info["text"], entry["page"]
            assert "\\lambda" not in info["text"] and "\\cdot" not in info["text"], entry["page"]
            page.screenshot(path=str(ARTIFACTS / f"book_{entry['notebook'][:2]}.png"))
            assert page.locator(f"a[href='{entry['executed']}']").count() == 1, entry["page"]
    (ARTIFACTS / "book_images.json").write_text(json.dumps(counts, indent=1) + "\n")
    # the executed notebooks: outputs kept, and every widget view's model in the saved state
    views = 0
    for entry in pages:
        nb = json.loads((out / entry["executed"]).read_text())
        state = nb["metadata"].get("widgets", {}).get(
            "application/vnd.jupyter.widget-state+json", {}).get("state", {})
        for cell in nb["cells"]:
            for output in cell.get("outputs", []):
                view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
                if view:
                    views += 1
                    assert view["model_id"] in state, (entry["executed"], view["model_id"])
    assert views >= 3  # the k slider, the epoch panels, the review panel
