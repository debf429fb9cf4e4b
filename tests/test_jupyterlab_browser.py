"""The widget explorers in JupyterLab, driven with the mouse in a real browser (headless Chromium via Playwright).

The test starts `jupyter lab` on 127.0.0.1 with a token it chooses, on a temporary copy of the chapters, opens the
DropConnect chapter (01) and the dropout chapter (02), runs the explorer cell (and the cells above it, as a reader
would), drags the slider's handle with the mouse and checks that the plotly figure redraws. This proves the
widgets and plotly work in the environment the README installs (widget and plotly lab extensions included).
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]   # a JupyterLab server and Chromium: `make test` only

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
ARTIFACTS = ROOT / "test-artifacts" / "jupyterlab"
# (notebook, the call that shows the widget: the whole source of its cell)
EXPLORERS = [("01_weight_drop", "weight_drop_explorer()"), ("02_dropout", "dropout_explorer()")]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 serving a temporary copy of the chapters; killed (with its kernels) at the end."
    root = tmp_path_factory.mktemp("lab_root")
    for stem, _ in EXPLORERS:
        src = NBS / f"{stem}.ipynb"
        assert src.is_file(), f"{src} is missing"
        shutil.copy(src, root / src.name)
    state = tmp_path_factory.mktemp("lab_state")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(state / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (state / "lab.log").read_text())
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "log": state / "lab.log"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started (its own process group)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium is missing: apt-get install -y chromium chromium-driver (.ci/run does it in CI)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True,
                              args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


_FINGERPRINT = """cell => { const gd = cell.querySelector('.jp-OutputArea .js-plotly-plot');
  if (!gd) return null;
  const parts = [...gd.querySelectorAll('.cartesianlayer, .g-gtitle, .layer-above')].map(e => e.innerHTML);
  return parts.join('|'); }"""


def _explorer_cell(panel, path, call):
    "The code cell whose source is exactly the explorer call, found by its place in the notebook at `path`."
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    idx = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "".join(c["source"]).strip() == call]
    assert idx, f"{Path(path).name} has no cell that is just `{call}`"
    cells = panel.locator(".jp-Notebook .jp-Cell")
    deadline = time.monotonic() + 60
    while cells.count() < len(nb["cells"]) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert cells.count() == len(nb["cells"]), f"{cells.count()} cells on the page, {len(nb['cells'])} in the notebook"
    cell = cells.nth(idx[0])
    cell.scroll_into_view_if_needed()
    editor = cell.locator(".jp-InputArea .cm-content")
    editor.page.wait_for_function("el => el.innerText.trim().length > 0", arg=editor.element_handle(), timeout=10_000)
    assert editor.inner_text().strip() == call, f"cell {idx[0]} on the page is {editor.inner_text()!r}"
    return cell


def _start_kernel(page, panel):
    "Answer JupyterLab as a reader would: the Python 3 kernel when it asks (the notebooks name none), no to news."
    select = page.locator(".jp-Dialog button.jp-mod-accept")
    kernel = panel.locator(".jp-Toolbar .jp-KernelName, .jp-Toolbar-kernelName").first
    idle = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if select.count() and select.first.is_visible():
            select.first.click()
        elif kernel.count() and "Python" in kernel.inner_text() and idle.count():
            break
        page.wait_for_timeout(250)
    else:
        raise AssertionError(f"no idle Python kernel (toolbar says {kernel.inner_text()!r})")
    news_no = page.locator(".jp-toast-button:text-is('No'), .jp-Notification-Toast-Button:text-is('No')")
    if news_no.count() and news_no.first.is_visible():
        news_no.first.click()


def _shut_down_kernels(lab):
    "Shut the test's kernels down through the server's REST API (they would keep a core busy)."
    hdr = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(f"{lab['base']}/api/sessions", headers=hdr), timeout=10) as r:
        sessions = json.loads(r.read())
    for s in sessions:
        req = urllib.request.Request(f"{lab['base']}/api/sessions/{s['id']}", headers=hdr, method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()


@pytest.mark.parametrize("stem,call", EXPLORERS)
def test_explorer_slider_redraws_figure(lab, browser, stem, call):
    (ARTIFACTS / f"{stem}_failure.png").unlink(missing_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        # a workspace of its own (reset): only this notebook open
        page.goto(f"{lab['base']}/lab/workspaces/test-{stem}/tree/{stem}.ipynb?reset&token={lab['token']}",
                  wait_until="domcontentloaded")
        panel = page.locator(".jp-NotebookPanel:visible")
        panel.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
        assert panel.count() == 1, f"{panel.count()} notebooks open"
        _start_kernel(page, panel)
        cell = _explorer_cell(panel, lab["root"] / f"{stem}.ipynb", call)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-InputPrompt").click(timeout=5_000)  # select the cell (command mode)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Above Selected Cell$")).click()
        cell.locator(".jp-InputPrompt").click(timeout=5_000)
        page.keyboard.press("Control+Enter")  # Run Selected Cell and Do not Advance
        out = cell.locator(".jp-OutputArea")
        try:
            out.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=120_000)
            out.locator(".widget-slider .noUi-handle").first.wait_for(timeout=10_000)
        except Exception:
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            texts = [errors.nth(i).inner_text()[-2000:] for i in range(errors.count())]
            raise AssertionError(f"{stem}: the explorer did not appear; errors in the notebook: {texts}")
        cell.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        cell.screenshot(path=str(ARTIFACTS / f"{stem}_before.png"))
        el = cell.element_handle()
        before = page.evaluate(_FINGERPRINT, el)
        assert before, f"{stem}: the explorer shows no plotly figure"
        readout = out.locator(".widget-slider .widget-readout").first
        value_before = readout.inner_text() if readout.count() else None

        handle = out.locator(".widget-slider .noUi-handle").first
        track = out.locator(".widget-slider .noUi-target").first
        hb, tb = handle.bounding_box(), track.bounding_box()
        x0, y0 = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
        to_right = x0 < tb["x"] + tb["width"] / 2
        x1 = tb["x"] + (tb["width"] * 0.95 if to_right else tb["width"] * 0.05)
        page.mouse.move(x0, y0)
        page.mouse.down()
        for k in range(1, 9):
            page.mouse.move(x0 + (x1 - x0) * k / 8, y0)
            page.wait_for_timeout(30)
        page.mouse.up()

        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline and after == before:
            page.wait_for_timeout(250)
            after = page.evaluate(_FINGERPRINT, el)
        if readout.count():
            assert readout.inner_text() != value_before, f"{stem}: dragging did not move the slider"
        cell.screenshot(path=str(ARTIFACTS / f"{stem}_after.png"))
        if after == before:
            pytest.fail(f"{stem}: the slider moved but the figure did not redraw")
        assert not problems, "\n".join(problems)
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{stem}_failure.png"))
        raise
    finally:
        ctx.close()
        try:
            _shut_down_kernels(lab)
        except OSError:
            pass  # the server goes away with the module's fixture anyway
