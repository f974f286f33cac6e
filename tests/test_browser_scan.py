"""One browser test of the Scan tab: headless Debian Chromium against the real server.

Uploads the zip of a shared volume, watches progress finish, moves the slice slider and
downloads the label NIfTI.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scan_fixtures import kaggle_slices

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(softmax_ckpt, tmp_path):
    """``python app.py`` on a free local port with a tiny checkpoint; yields its URL."""
    port = _free_port()
    env = {**os.environ, "MODEL": str(softmax_ckpt), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "EXAMPLES_DIR": str(tmp_path / "no-examples")}
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"app did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_scan_tab_in_a_browser(server, shared_data, tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have Debian chromium at {CHROMIUM}")
        pytest.skip(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    files = kaggle_slices(shared_data, "volume_276x276")
    upload = tmp_path / "volume_276x276.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for f in files:
            archive.write(f, f"volume_276x276/{f.name}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
            page.goto(server)
            page.get_by_role("tab", name="Scan").click()
            page.locator("#scan-files input[type=file]").set_input_files(upload)
            expect(page.locator("#scan-files")).to_contain_text("volume_276x276.zip")
            page.get_by_role("button", name="Segment scan").click()

            # Progress reports slices done, then gives way to the result.
            expect(page.get_by_text(re.compile(rf"\d+/{len(files)} slices")).first).to_be_visible(timeout=60_000)
            note = page.locator("#scan-note")
            expect(note).to_contain_text(f"{len(files)} slices 276×276", timeout=120_000)
            expect(page.locator(".progress-text")).to_have_count(0, timeout=30_000)

            slider = page.locator("#scan-slider input[type=number]")
            expect(slider).to_be_editable()
            start = int(slider.input_value())
            image = page.locator("#scan-overlay img").first
            before = image.get_attribute("src")
            target = 1 if start != 1 else len(files)
            slider.fill(str(target))
            slider.press("Enter")
            expect(image).not_to_have_attribute("src", before, timeout=30_000)
            assert page.locator("#scan-slider input[type=range]").input_value() == str(target)

            link = page.locator('#scan-downloads a[download$="_labels.nii.gz"]')
            with page.expect_download() as download:
                link.click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            page.screenshot(path=str(tmp_path / "scan_tab.png"), full_page=True)
        finally:
            browser.close()

    img = nib.load(saved)
    assert saved.name == "volume_276x276_labels.nii.gz"
    assert img.shape == (276, 276, len(files))
    np.testing.assert_allclose(np.diag(img.affine)[:3], [-1.63, -1.63, 3.0])
    assert set(np.unique(np.asanyarray(img.dataobj))) <= {0, 1, 2, 3}
