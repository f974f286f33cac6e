"""One browser test of the Scan tab: headless Debian Chromium against the real server.

Uploads the zip of a shared volume, watches progress finish, moves the slice slider and
downloads the label NIfTI.
"""

from __future__ import annotations

import re
import zipfile

import nibabel as nib
import numpy as np
import pytest

from scan_fixtures import kaggle_slices

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_scan_tab_in_a_browser(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    files = kaggle_slices(shared_data, "volume_276x276")
    upload = tmp_path / "volume_276x276.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for f in files:
            archive.write(f, f"volume_276x276/{f.name}")

    page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
    page.goto(server.url)
    page.get_by_role("tab", name="Scan").click()
    page.locator("#scan-files input[type=file]").set_input_files(upload)
    # Gradio renders the name's stem and extension in separate spans.
    expect(page.locator("#scan-files")).to_contain_text(re.compile(r"volume_276x276\s*\.zip"), timeout=30_000)
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

    img = nib.load(saved)
    assert saved.name == "volume_276x276_labels.nii.gz"
    assert img.shape == (276, 276, len(files))
    np.testing.assert_allclose(np.diag(img.affine)[:3], [-1.63, -1.63, 3.0])
    assert set(np.unique(np.asanyarray(img.dataobj))) <= {0, 1, 2, 3}
