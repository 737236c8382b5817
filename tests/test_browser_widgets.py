"""The lessons' widgets in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Starts JupyterLab on 127.0.0.1 (temporary config, settings and notebook copies) and runs all cells of a
notebook as a student would:
- notebook 02: moves the rank slider by keyboard and by drag, and checks that the image and the caption become
  exactly what ``lora_edu`` computes for the new rank;
- notebook 04: moves the first-update explorer's rank slider and switches its scaling;
- a small notebook that builds notebook 06's sweep explorer over a stored sweep, and picks other matrices.
Needs Debian's ``chromium`` (``make test`` installs it when it can); without it the test is skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lora_edu.course.widgets import (
    first_update_html,
    first_update_sizes,
    rank_caption,
    sample_photo,
    sweep_point_html,
    sweep_summary,
    to_png,
)
from lora_edu.maths.linalg import SVDReconstructor
from lora_edu.scale.distributed import free_port

CHROMIUM = "/usr/bin/chromium"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "02_svd_and_low_rank_approximation.ipynb"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make test`, which installs it")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"SKIPPED LOUDLY: {CHROMIUM} is missing, so the browser test of the rank slider cannot run. "
                "Install Debian's chromium and chromium-driver (`make test` does this when apt-get is available).",
                allow_module_level=True)


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving copies of the notebooks; yields the URL of a notebook given its
    file name (copied from notebooks/ when it is not already in the work folder). Stopped by its PID afterwards."""
    work = tmp_path / "work"
    work.mkdir()
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    port, token = free_port(), "lora-edu-test"
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("JupyterLab exited: " + (tmp_path / "jupyter.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("JupyterLab did not start within 60 s")

    def notebook_url(name: str) -> str:
        if not (work / name).exists():
            shutil.copy(NOTEBOOKS / name, work / name)
        return f"{url}/lab/tree/{name}?token={token}"

    notebook_url.work = work
    yield notebook_url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def image_bytes(page) -> bytes:
    """The PNG the rank image currently shows (the widget renders it from a blob URL)."""
    data = page.evaluate(
        """async () => {
            const img = document.querySelector('.rank-image');
            const buf = await (await fetch(img.src)).arrayBuffer();
            let s = ''; new Uint8Array(buf).forEach(b => s += String.fromCharCode(b));
            return btoa(s);
        }"""
    )
    return base64.b64decode(data)


def slider_value(page) -> int:
    return int(page.locator(".rank-slider .widget-readout").inner_text().strip())


def wait_for_rank(page, svd: SVDReconstructor, k: int) -> None:
    # textContent, not innerText: JupyterLab skips rendering cells outside the viewport, and innerText is then empty
    page.wait_for_function("t => document.querySelector('.rank-caption').textContent.trim() === t",
                           arg=rank_caption(svd, k), timeout=15_000)
    assert image_bytes(page) == to_png(svd.reconstruct(k))


def run_all(browser, url: str):
    """Open a notebook in JupyterLab and Run All Cells, as a student would; returns the page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=60_000)  # the kernel is ready
    for button in page.get_by_role("button", name="No").all():  # a news or update prompt, if one shows
        button.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    return page


def wait_for_text(page, selector: str, html: str) -> None:
    """Until the element's text is the text of ``html`` (what lora_edu computes for the widget's state)."""
    expected = page.evaluate("h => { const d = document.createElement('div'); d.innerHTML = h; return d.textContent.trim(); }", html)
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.textContent.trim() === t; }",
                           arg=[selector, expected], timeout=15_000)


def widget_png(page, selector: str) -> bytes:
    data = page.evaluate(
        """async s => {
            const buf = await (await fetch(document.querySelector(s).src)).arrayBuffer();
            let t = ''; new Uint8Array(buf).forEach(b => t += String.fromCharCode(b));
            return btoa(t);
        }""", selector)
    return base64.b64decode(data)


def test_rank_slider_redraws_in_a_real_browser(lab, tmp_path):
    svd = SVDReconstructor(sample_photo())
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = run_all(browser, lab(NOTEBOOK.name))
        caption = page.locator(".rank-caption")
        caption.wait_for(timeout=120_000)
        wait_for_rank(page, svd, 20)  # the notebook leaves the slider at rank 20
        page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=120_000)

        handle = page.locator(".rank-slider .noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        assert slider_value(page) == 25
        wait_for_rank(page, svd, 25)

        track = page.locator(".rank-slider .noUi-target").bounding_box()
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + 0.6 * track["width"], box["y"] + box["height"] / 2, steps=12)
        page.mouse.up()
        k, k_max = slider_value(page), float(handle.get_attribute("aria-valuemax"))
        assert 0.45 * k_max < k < 0.75 * k_max, (k, k_max)  # about 60% of the way along 1..k_max
        wait_for_rank(page, svd, k)
        assert svd.error(k) < svd.error(25)

        page.locator(".rank-image").screenshot(path=str(tmp_path / "rank-slider.png"))
        assert (tmp_path / "rank-slider.png").stat().st_size > 1000
        browser.close()


def test_first_update_explorer_in_a_real_browser(lab):
    sizes = first_update_sizes()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = run_all(browser, lab("04_lora_layer_by_hand.ipynb"))
        page.locator(".first-update-text").wait_for(timeout=120_000)
        wait_for_text(page, ".first-update-text", first_update_html(sizes, 8, 16.0, False))
        page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=120_000)
        handle = page.locator(".first-update-r .noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.keyboard.press("ArrowRight")  # r = 8 -> 16
        wait_for_text(page, ".first-update-text", first_update_html(sizes, 16, 16.0, False))
        before = widget_png(page, ".first-update-plot")
        page.get_by_role("button", name="α/√r (rsLoRA)").click()
        wait_for_text(page, ".first-update-text", first_update_html(sizes, 16, 16.0, True))
        deadline = time.time() + 15  # the caption is set first, then the plot: wait for the plot too
        while (after := widget_png(page, ".first-update-plot")) == before and time.time() < deadline:
            time.sleep(0.2)
        assert before[:4] == after[:4] == b"\x89PNG" and after != before  # the circle moved to the rsLoRA curve
        browser.close()


def sweep_notebook() -> dict:
    """One cell that builds notebook 06's explorer over the small stored sweep of the widget unit tests."""
    source = (f"import sys\nsys.path.insert(0, {str(NOTEBOOKS.parent)!r})  # the stored sweep lives in tests/\n"
              "from tests.test_quiz_widgets_fit import fake_sweep\nfrom lora_edu.course.widgets import sweep_explorer\n\n"
              "sweep_explorer(fake_sweep(), d_model=64, n_layer=4)")
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "sweep", "metadata": {}, "outputs": [],
                       "source": source}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_sweep_explorer_in_a_real_browser(lab):
    from tests.test_quiz_widgets_fit import fake_sweep

    summary = sweep_summary(fake_sweep(), ("val_answer_loss", "test_answer_loss"))
    (lab.work / "sweep.ipynb").write_text(json.dumps(sweep_notebook()))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = run_all(browser, lab("sweep.ipynb"))
        page.locator(".sweep-text").wait_for(timeout=60_000)
        wait_for_text(page, ".sweep-text", sweep_point_html(summary, ("q",), 1, 64, 4))
        page.locator(".sweep-targets select").select_option("Wv")
        wait_for_text(page, ".sweep-text", sweep_point_html(summary, ("v",), 8, 64, 4))
        page.locator(".sweep-targets select").select_option("Wq+Wv")
        wait_for_text(page, ".sweep-text", sweep_point_html(summary, ("q", "v"), 1, 64, 4))
        handle = page.locator(".sweep-rank .noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.keyboard.press("ArrowRight")  # r = 1 -> 8
        wait_for_text(page, ".sweep-text", sweep_point_html(summary, ("q", "v"), 8, 64, 4))
        browser.close()
