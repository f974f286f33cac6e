"""Browser test of the Course tab: headless Debian Chromium against the real server.

Three DICOM days of a real volume (each a zip), a PTV RTSTRUCT and an RTDOSE on day A
(:func:`course_cases.write_dicom_course`): the ROI picker fills from the RTSTRUCT, the course runs, and the
course table, the plots and the course's downloads appear.
"""

from __future__ import annotations

import re

import pytest

import course_cases as K
from scan_fixtures import zip_files

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_course_tab_in_a_browser(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    written = K.write_dicom_course(shared_data, tmp_path)
    zips = {day: zip_files(files, tmp_path / f"case7_day{day}.zip") for day, files in written["series"].items()}

    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(server.url)
    page.get_by_role("tab", name="Course").click()
    page.locator("#days-a input[type=file]").set_input_files(zips[1])
    page.locator("#days-b input[type=file]").set_input_files(zips[3])
    page.locator("#course-more-days input[type=file]").set_input_files(zips[5])
    page.locator("#course-target input[type=file]").set_input_files(written["target"])
    page.locator("#course-dose input[type=file]").set_input_files(written["dose"])
    for box, name in (("#days-a", "case7_day1"), ("#days-b", "case7_day3"), ("#course-more-days", "case7_day5")):
        expect(page.locator(box)).to_contain_text(re.compile(rf"{name}\s*\.zip"), timeout=30_000)
    # The ROI picker is filled from the RTSTRUCT's names, its first chosen.
    expect(page.locator("#course-roi input")).to_have_value("PTV", timeout=30_000)
    page.locator("#course-constraints textarea").fill("small_bowel:V20Gy<=0.5cc\nstomach:Dmax<=38Gy")
    page.get_by_role("button", name="Run the course against the target").click()

    table = page.locator("#course-table")
    expect(table).to_contain_text("Small bowel", timeout=300_000)
    expect(table).to_contain_text("Ring 0–10 mm (cc)")
    expect(table).to_contain_text("stomach:Dmax<=38Gy")
    expect(page.locator("#days-note")).to_contain_text("Day A is the reference")
    expect(page.locator("#course-plots img")).to_have_count(3, timeout=30_000)
    downloads = page.locator("#days-downloads")
    expect(downloads.locator('a[download="course.csv"]')).to_have_count(1, timeout=30_000)
    expect(downloads.locator('a[download="dvh.csv"]')).to_have_count(1)
    expect(downloads.locator('a[download$="_course_rtstruct.dcm"]')).to_have_count(3)
    page.screenshot(path=str(tmp_path / "course_tab.png"), full_page=True)

    # Compare days next: its answer replaces the course's, whose table and plots go with it (they stayed).
    page.get_by_role("button", name="Compare days (B against A)").click()
    expect(downloads.locator('a[download="course.csv"]')).to_have_count(0, timeout=300_000)
    expect(page.locator("#days-note")).not_to_contain_text("Day A is the reference", timeout=30_000)
    expect(page.locator("#course-plots img")).to_have_count(0, timeout=30_000)
    expect(table).not_to_contain_text("Small bowel")
    expect(table).to_contain_text("Volume (ml)")  # the empty table keeps its header
