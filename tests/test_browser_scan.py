"""Browser tests of the Scan tab: headless Debian Chromium against the real server.

Uploads the zip of a shared volume, watches progress finish, moves the slice slider and
downloads the label NIfTI; and uploads a zipped DICOM series, whose downloads list its DICOM
SEG and RTSTRUCT, whose review table moves the slider, and whose identifiers reach neither the
page nor the log.
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
    with page.expect_download(timeout=60_000) as download:  # a loaded 2-vCPU machine can be slow to answer
        link.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    page.screenshot(path=str(tmp_path / "scan_tab.png"), full_page=True)

    img = nib.load(saved)
    assert saved.name == "volume_276x276_labels.nii.gz"
    assert img.shape == (276, 276, len(files))
    np.testing.assert_allclose(np.diag(img.affine)[:3], [-1.63, -1.63, 3.0])
    assert set(np.unique(np.asanyarray(img.dataobj))) <= {0, 1, 2, 3}


def test_dicom_series_gets_seg_and_rtstruct_and_no_identifier_on_the_page(server, shared_data, browser, tmp_path):
    """A zipped DICOM series: the two DICOM downloads are listed, a review row moves the slider, and
    the patient's identifiers appear neither on the page nor in the server log."""
    from playwright.sync_api import expect

    import rt_series
    from scan_fixtures import stack, zip_files

    voxels = stack(kaggle_slices(shared_data, "volume_266x266")[60:68])
    upload = zip_files(rt_series.write_mr_series(voxels, tmp_path / "series"), tmp_path / "mr_series.zip")
    log_start = server.log.stat().st_size

    page = browser.new_page(viewport={"width": 1400, "height": 2200})
    page.goto(server.url)
    page.get_by_role("tab", name="Scan").click()
    page.locator("#scan-files input[type=file]").set_input_files(upload)
    expect(page.locator("#scan-files")).to_contain_text(re.compile(r"mr_series\s*\.zip"), timeout=30_000)
    page.locator("#scan-bowel-bag input[type=checkbox]").check()
    page.get_by_role("button", name="Segment scan").click()
    expect(page.locator("#scan-note")).to_contain_text("8 slices 266×266", timeout=120_000)

    downloads = page.locator("#scan-downloads")
    expect(downloads.locator('a[download$="_seg.dcm"]')).to_have_count(1, timeout=30_000)
    expect(downloads.locator('a[download$="_rtstruct.dcm"]')).to_have_count(1)
    expect(downloads.locator('a[download$="_review.csv"]')).to_have_count(1)
    expect(page.locator("#scan-note")).not_to_contain_text("only for DICOM series input")

    # A click on a review row puts the slider on that row's slice (first moved elsewhere by hand).
    review = page.locator("#scan-review")
    first = review.locator('[data-testid="cell-0-0"]')  # Gradio's grid cells (its <tbody> is a hidden sizer)
    expect(first).to_be_visible(timeout=30_000)  # the random tiny model is never sure: there are flags
    target = first.inner_text().strip()
    assert target.isdigit(), target
    slider = page.locator("#scan-slider input[type=number]")
    slider.fill("8" if target != "8" else "1")
    slider.press("Enter")
    expect(slider).not_to_have_value(target)
    organ = review.locator('[data-testid="cell-0-1"]').inner_text().strip()
    other = next(o for o in ("Stomach", "Small bowel", "Large bowel") if o != organ)
    page.locator("#scan-click-organ").get_by_label(other, exact=True).check()  # moved elsewhere by hand too
    review.locator('[data-testid="cell-0-1"]').click()
    expect(slider).to_have_value(target, timeout=30_000)
    expect(page.locator("#scan-click-organ").get_by_label(organ, exact=True)).to_be_checked()  # ready to click on it
    page.screenshot(path=str(tmp_path / "scan_tab_dicom.png"), full_page=True)

    shown = page.content()
    with open(server.log, "rb") as log:
        log.seek(log_start)
        logged = log.read().decode(errors="replace")
    for tag in (rt_series.PATIENT_NAME, "Roe", rt_series.PATIENT_ID, rt_series.PATIENT_BIRTH_DATE,
                rt_series.ACCESSION_NUMBER):
        assert tag not in shown and tag not in logged
