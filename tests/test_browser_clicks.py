"""Click correction in the browser: real mouse clicks on the Scan and Slice tabs, the downloads read back.

Headless Debian Chromium against the real server (tiny model, this machine's engine). The click
image is a plain ``<img>`` of the slice at a whole-pixel zoom (ui/clicks.py); a slice pixel is
clicked at the middle of its zoomed square, mapped to the screen through the image's box as the
browser draws it (``object-fit: contain``). The places to click are chosen from the label NIfTI
the app wrote (the tiny model's masks are arbitrary): a positive click where the organ is far away,
a negative one at the middle of one of its components.
"""

from __future__ import annotations

import contextlib
import csv
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.draw import disk

from benchmarks.served import click_slice_pixel, slice_pixel_point
from scan_fixtures import kaggle_slices, zip_files
from test_browser_edit import _download, _labels, _segment, segmented_slice_page, slice_mask_png
from ui.clicks import zoom_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LARGE_ID = 3  # large bowel's label id: it wins every overlap in the label NIfTI
SHAPE = (310, 360)


def _click(page, image_id: str, row: int, col: int, shape=SHAPE) -> None:
    """A real mouse click on slice pixel ``(row, col)`` of the click image ``#image_id``, drawn at the app's zoom."""
    assert click_slice_pixel(page, image_id, row, col, shape, timeout_ms=30_000) == zoom_for(shape)


def _choose(page, elem_id: str, choice: str) -> None:
    page.locator(f"#{elem_id}").get_by_label(choice, exact=True).check()


def _wait_downloads(page, old_href: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator('#scan-downloads a[download$="_labels.nii.gz"]')).not_to_have_attribute("href", old_href,
                                                                                               timeout=60_000)


def _far_from(labels_slice: np.ndarray, image: np.ndarray, label: int) -> tuple[int, int]:
    """A pixel inside the body and as far as possible from ``label`` on ``labels_slice`` ``(H, W)``."""
    body = ndimage.binary_erosion(image > np.percentile(image, 60), iterations=6)
    distance = ndimage.distance_transform_edt(labels_slice != label)
    distance[~body] = 0
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    assert distance[row, col] >= 12, "no room to add the organ on this slice"
    return int(row), int(col)


def _scan_page(app, shared_data, browser, tmp_path, count: int):
    """A page with ``count`` real 360×310 slices (from slice 61 of the shared volume, zipped as
    ``tmp_path/case9_day4.zip``) segmented by ``app``; the page and the slices' files."""
    files = kaggle_slices(shared_data, "volume_360x310")[60:60 + count]
    upload = zip_files(files, tmp_path / "case9_day4.zip", folder="case9_day4/scans")
    page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    _segment(page, app, upload, f"{count} slices 360×310")
    return page, files


def test_clicks_add_and_remove_an_organ_propagate_and_undo_in_the_downloads(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    page, files = _scan_page(server, shared_data, browser, tmp_path, 6)
    voxels = np.stack([np.asarray(Image.open(f)) for f in files])
    before = _labels(_download(page, tmp_path, "_labels.nii.gz"))
    labels_link = page.locator('#scan-downloads a[download$="_labels.nii.gz"]')

    # Slice 3: a positive large-bowel click far from the model's large bowel.
    slider = page.locator("#scan-slider input[type=number]")
    slider.fill("3")
    slider.press("Enter")
    d = 2
    row, col = _far_from(before[d], voxels[d], LARGE_ID)
    _choose(page, "scan-click-organ", "Large bowel")
    _choose(page, "scan-click-mode", "Add")
    shown = page.locator("#scan-click-image img").get_attribute("src")
    _click(page, "scan-click-image", row, col)
    expect(page.locator("#scan-click-note")).to_contain_text("1 click on slice 3, not applied yet", timeout=30_000)
    assert page.locator("#scan-click-image img").get_attribute("src") != shown, "the mask must update at once"
    old = labels_link.get_attribute("href")
    page.locator("#scan-click-apply").click()
    _wait_downloads(page, old)
    added = _labels(_download(page, tmp_path, "_labels.nii.gz"))
    changed = added != before
    assert set(np.flatnonzero(changed.any(axis=(1, 2)))) == {d}, "only the clicked slice changes"
    assert set(np.unique(added[changed])) == {LARGE_ID} and added[d, row, col] == LARGE_ID
    assert changed[d].sum() >= 20
    expect(page.locator("#scan-review")).to_contain_text("edited")
    log = list(csv.DictReader(open(_download(page, tmp_path, "_edits.csv"))))
    assert [(r["slice_index"], r["organ"], r["tool"], r["clicks"]) for r in log] == [
        (str(d), "large_bowel", "click", f"+{row}:{col}")]

    # Propagate the corrected slice: the neighbouring slices change, the corrected one does not.
    old = labels_link.get_attribute("href")
    page.locator("#scan-propagate").click()
    _wait_downloads(page, old)
    expect(page.locator("#scan-click-note")).to_contain_text("Large bowel propagated from slice 3")
    propagated = _labels(_download(page, tmp_path, "_labels.nii.gz"))
    moved = set(np.flatnonzero((propagated != added).any(axis=(1, 2))))
    assert moved and d not in moved and moved <= {d - 2, d - 1, d + 1, d + 2, d + 3}
    assert {d - 1, d + 1} & moved

    # Undo: the downloads are those before the propagation again.
    old = labels_link.get_attribute("href")
    page.locator("#scan-click-undo").click()
    _wait_downloads(page, old)
    assert np.array_equal(_labels(_download(page, tmp_path, "_labels.nii.gz")), added)

    # A negative click at the middle of a large-bowel component on slice 5 removes it.
    d = 4
    components, n = ndimage.label(added[d] == LARGE_ID)
    assert n, "the tiny model left no large bowel on slice 5"
    largest = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
    distance = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1]  # the slice's edge is an edge too
    row, col = (int(v) for v in np.unravel_index(int(np.argmax(distance)), distance.shape))
    slider.fill("5")
    slider.press("Enter")
    _choose(page, "scan-click-mode", "Remove")
    expect(page.locator("#scan-click-note")).not_to_contain_text("not applied yet")
    _click(page, "scan-click-image", row, col)
    expect(page.locator("#scan-click-note")).to_contain_text("1 click on slice 5", timeout=30_000)
    old = labels_link.get_attribute("href")
    page.locator("#scan-click-apply").click()
    _wait_downloads(page, old)
    removed = _labels(_download(page, tmp_path, "_labels.nii.gz"))
    gone = removed != added
    assert set(np.flatnonzero(gone.any(axis=(1, 2)))) == {d}
    assert set(np.unique(added[gone])) == {LARGE_ID} and LARGE_ID not in set(np.unique(removed[gone]))
    assert removed[d, row, col] != LARGE_ID and gone[d].sum() >= 20


def test_bad_clicks_get_one_line_and_clicks_on_the_corner_pixels_count(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    from ui.clicks import CLICK_COLOURS, MARKER_PX

    page, _ = _scan_page(server, shared_data, browser, tmp_path, 3)
    # A click on each corner pixel of the slice is that pixel's (Gradio's empty button bar over the image's
    # top-right corner took those clicks, ui.clicks.STYLE): the click image marks it, Undo takes it back.
    image = page.locator("#scan-click-image img")
    zoom = zoom_for(SHAPE)
    shown_slice = page.locator("#scan-slider input[type=number]").input_value()
    for row, col in ((0, SHAPE[1] - 1), (0, 0), (SHAPE[0] - 1, SHAPE[1] - 1), (SHAPE[0] - 1, 0)):
        expect(page.locator("#scan-click-note")).not_to_contain_text("not applied yet")
        shown = image.get_attribute("src")
        _click(page, "scan-click-image", row, col)
        expect(page.locator("#scan-click-note")).to_contain_text(f"1 click on slice {shown_slice}, not applied yet")
        expect(image).not_to_have_attribute("src", shown)
        drawn = np.asarray(Image.open(io.BytesIO(page.request.get(image.get_attribute("src")).body())).convert("RGB"))
        marked = np.all(drawn == CLICK_COLOURS[True], axis=-1)
        marker = np.zeros_like(marked)
        marker[disk((row * zoom + zoom // 2, col * zoom + zoom // 2), MARKER_PX, shape=marked.shape)] = True
        assert np.array_equal(marked, marker), f"the click on {row, col} must be marked there"
        page.locator("#scan-click-undo").click()
    page.locator("#scan-propagate").click()
    expect(page.get_by_text("Nothing to propagate: the stomach on slice").first).to_be_visible(timeout=30_000)
    page.locator("#scan-fill-between").click()
    expect(page.get_by_text("Fill between needs the stomach corrected on two slices").first).to_be_visible(timeout=30_000)
    page.locator("#scan-click-apply").click()
    expect(page.get_by_text("No clicks to apply on this slice").first).to_be_visible(timeout=30_000)
    page.locator("#scan-click-undo").click()
    expect(page.get_by_text("Nothing to undo: no pending clicks").first).to_be_visible(timeout=30_000)
    expect(page.locator('#scan-downloads a[download$="_edits.csv"]')).to_have_count(0)
    # Refused, nothing changed: no "Error" drawn over the outputs (Gradio drew it over every output of a failed
    # event, the click image too, whose clicks then went nowhere), and the next click counts.
    expect(page.locator('[data-testid="status-tracker"] .error')).to_have_count(0)
    _click(page, "scan-click-image", SHAPE[0] // 2, SHAPE[1] // 2)
    expect(page.locator("#scan-click-note")).to_contain_text(f"1 click on slice {shown_slice}, not applied yet")


def test_a_click_while_the_new_slice_image_loads_counts_once_it_is_drawn(server, shared_data, browser, tmp_path):
    """Move the slider and click while the click image's new source is still loading: Gradio 6.31 drops that
    click (the image's natural size reads 0), and the page's script (ui/click_images.js) makes it again once the
    image is drawn, at the same place in the image though the page has scrolled meanwhile. The image requests
    are held here, so the click lands while the image loads every time."""
    from playwright.sync_api import expect

    from ui.clicks import CLICK_COLOURS, MARKER_PX

    page, _ = _scan_page(server, shared_data, browser, tmp_path, 3)
    page.set_viewport_size({"width": 1400, "height": 1000})  # a page that scrolls, to move under a waiting click
    note, image = page.locator("#scan-click-note"), page.locator("#scan-click-image img")
    expect(note).not_to_contain_text("not applied yet")
    row, col = 150, 180
    at = slice_pixel_point(page, "scan-click-image", row, col, SHAPE)
    shown = image.get_attribute("src")

    gate = {"holding": True, "held": []}

    def hold(route):  # the page's file requests wait until the test lets them go
        if gate["holding"]:
            gate["held"].append(route)
        else:
            route.continue_()

    page.route(lambda url: "/file=" in url, hold)
    slider = page.locator("#scan-slider input[type=number]")
    slider.fill("2")
    slider.press("Enter")
    expect(image).not_to_have_attribute("src", shown, timeout=30_000)
    page.wait_for_function("() => { const i = document.querySelector('#scan-click-image img');"
                           " return i && !i.complete && i.naturalWidth === 0; }", timeout=30_000)
    image.scroll_into_view_if_needed()  # the slider's fill scrolled the page up to it
    box = image.bounding_box()  # the loading image keeps its box: the same place in it as before
    page.mouse.click(round(box["x"] + at.x - at.left), round(box["y"] + at.y - at.top))
    page.wait_for_timeout(500)
    assert "not applied yet" not in note.inner_text(), "no click can count before its image is drawn"
    moved = page.evaluate("() => { const y = window.scrollY; window.scrollBy(0, 40); return window.scrollY - y; }")
    assert moved == 40, "the page must move under the waiting click"
    gate["holding"] = False  # from here the handler lets each new request go; the held ones go now
    for route in gate["held"]:
        route.continue_()

    expect(note).to_contain_text("1 click on slice 2, not applied yet", timeout=30_000)
    expect(image).to_have_js_property("complete", True)
    page.wait_for_timeout(1000)
    expect(note).to_contain_text("1 click on slice 2, not applied yet")  # made again once, not twice
    drawn = np.asarray(Image.open(io.BytesIO(page.request.get(image.get_attribute("src")).body())).convert("RGB"))
    marked = np.all(drawn == CLICK_COLOURS[True], axis=-1)
    marker = np.zeros_like(marked)
    marker[disk((row * at.zoom + at.zoom // 2, col * at.zoom + at.zoom // 2), MARKER_PX, shape=marked.shape)] = True
    assert np.array_equal(marked, marker), "the click must count once, on its pixel"


def test_a_click_on_the_slice_tab_changes_the_mask_png_and_undo_restores_it(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    image = kaggle_slices(shared_data, "volume_360x310")[62]
    page = segmented_slice_page(server, browser, image)
    link = page.locator('a[download$="_masks.png"]')

    def mask_png():
        return slice_mask_png(page, tmp_path)

    before = mask_png()
    expect(page.locator("#slice-click-image img")).to_have_count(1, timeout=30_000)
    labels_slice = np.where(before[2], LARGE_ID, 0)
    row, col = _far_from(labels_slice, np.asarray(Image.open(image)), LARGE_ID)
    _choose(page, "slice-click-organ", "Large bowel")
    old = link.get_attribute("href")
    _click(page, "slice-click-image", row, col)
    expect(link).not_to_have_attribute("href", old, timeout=30_000)
    after = mask_png()
    assert after[2, row, col] and not (before & ~after).any() and np.array_equal(after[:2], before[:2])
    old = link.get_attribute("href")
    page.locator("#slice-click-undo").click()
    expect(link).not_to_have_attribute("href", old, timeout=30_000)
    assert np.array_equal(mask_png(), before)


@contextlib.contextmanager
def _in_process_demo(softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, built and served in this process on the tiny model (after the test's patches), its URL."""
    import app
    from locations import free_port
    from ui import server

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    server.MODEL.configure(str(softmax_ckpt))
    demo = app.build_demo()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, head=app.page_head())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        server.MODEL.configure(None)


@contextlib.contextmanager
def _slowed_demo(handler: str, seconds: float, softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, in-process, whose ``ui.clicks`` handler ``handler`` waits ``seconds`` before it answers."""
    import functools
    import time
    from types import SimpleNamespace

    from ui import clicks

    answer = getattr(clicks, handler)

    @functools.wraps(answer)  # Gradio reads the signature (a click's SelectData) through __wrapped__
    def slowed(*args, **kwargs):
        time.sleep(seconds)
        return answer(*args, **kwargs)

    monkeypatch.setattr(clicks, handler, slowed)
    with _in_process_demo(softmax_ckpt, tmp_path, monkeypatch) as url:
        yield SimpleNamespace(url=url)


@pytest.fixture
def slow_view_app(softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, in-process, whose click image takes 1.5 s to redraw (after a segmentation, and when the
    slider moves): the time a loaded 2-vCPU server may take, so a click can land while a redraw still runs."""
    with _slowed_demo("scan_click_view", 1.5, softmax_ckpt, tmp_path, monkeypatch) as app:
        yield app


@pytest.fixture
def slow_click_app(softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, in-process, whose Scan tab clicks take a second each on the server (a busy Space, or a click
    queued behind another person's Apply): a person's next click comes before the answer."""
    with _slowed_demo("scan_click", 1.0, softmax_ckpt, tmp_path, monkeypatch) as app:
        yield app


def test_clicks_made_before_the_first_answers_all_count(slow_click_app, shared_data, browser, tmp_path):
    """Three clicks in a row, the second and third before the first has answered: all three count (Gradio's
    default for an event, "once", dropped every click made while one was pending)."""
    from playwright.sync_api import expect

    from ui.clicks import CLICK_COLOURS

    page, _ = _scan_page(slow_click_app, shared_data, browser, tmp_path, 3)
    note, image = page.locator("#scan-click-note"), page.locator("#scan-click-image img")
    expect(note).not_to_contain_text("not applied yet")
    page.wait_for_timeout(2000)  # the redraw after the segmentation is back
    shown_slice = page.locator("#scan-slider input[type=number]").input_value()
    pixels = [(100, 120), (150, 180), (200, 240)]
    points = [slice_pixel_point(page, "scan-click-image", row, col, SHAPE) for row, col in pixels]
    for at in points:
        page.mouse.click(at.x, at.y)
    expect(note).to_contain_text(f"3 clicks on slice {shown_slice}, not applied yet", timeout=30_000)
    expect(image).to_have_js_property("complete", True)
    drawn = np.asarray(Image.open(io.BytesIO(page.request.get(image.get_attribute("src")).body())).convert("RGB"))
    zoom = points[0].zoom
    for row, col in pixels:
        assert tuple(drawn[row * zoom + zoom // 2, col * zoom + zoom // 2]) == CLICK_COLOURS[True]


def _one_large_bowel_click_pending(app, shared_data, browser, tmp_path, count: int, d: int):
    """``count`` real 360×310 slices segmented by ``app``; the slider moved to slice ``d`` (0-based) and, at once,
    before its redraw is back, one Add click for the large bowel far from where the model drew it, pending.
    Returns the page, the label NIfTI's ids ``(D, H, W)`` before it and the clicked ``(row, col)``."""
    from playwright.sync_api import expect

    page, files = _scan_page(app, shared_data, browser, tmp_path, count)
    before = _labels(_download(page, tmp_path, "_labels.nii.gz"))
    expect(page.locator("#scan-click-image img")).to_have_count(1, timeout=30_000)
    page.wait_for_timeout(2000)  # the redraw after the segmentation is back
    _choose(page, "scan-click-organ", "Large bowel")
    _choose(page, "scan-click-mode", "Add")
    slider = page.locator("#scan-slider input[type=number]")
    slider.fill(str(d + 1))
    slider.press("Enter")
    row, col = _far_from(before[d], np.asarray(Image.open(files[d])), LARGE_ID)
    _click(page, "scan-click-image", row, col)  # on the image still shown: the click goes to the slider's slice
    expect(page.locator("#scan-click-note")).to_contain_text(f"1 click on slice {d + 1}, not applied yet",
                                                             timeout=30_000)
    return page, before, (row, col)


def test_a_click_while_the_slider_redraw_runs_is_kept_and_shown(slow_view_app, shared_data, browser, tmp_path):
    """Move the slider, click before its redraw of the click image is back: the click stays pending (Apply
    applies it) and the click image ends showing it, not the redraw that started before it."""
    from ui.clicks import CLICK_COLOURS

    d = 2
    page, before, (row, col) = _one_large_bowel_click_pending(slow_view_app, shared_data, browser, tmp_path, 4, d)
    page.wait_for_timeout(2500)  # whatever was running has answered
    shown = page.locator("#scan-click-image img").get_attribute("src")
    zoom = zoom_for(SHAPE)
    drawn = np.asarray(Image.open(io.BytesIO(page.request.get(shown).body())).convert("RGB"))
    at = (row * zoom + zoom // 2, col * zoom + zoom // 2)
    assert tuple(drawn[at]) == CLICK_COLOURS[True], "the click must stay shown"
    labels_link = page.locator('#scan-downloads a[download$="_labels.nii.gz"]')
    old = labels_link.get_attribute("href")
    page.locator("#scan-click-apply").click()
    _wait_downloads(page, old)
    added = _labels(_download(page, tmp_path, "_labels.nii.gz"))
    assert set(np.flatnonzero((added != before).any(axis=(1, 2)))) == {d} and added[d, row, col] == LARGE_ID


@contextlib.contextmanager
def _held_scan_demo(softmax_ckpt, tmp_path, monkeypatch, lines_first: int):
    """The real demo, in-process, whose scan segmentation can be held: once ``hold`` is set, the next one waits
    once it has sent its first ``lines_first`` outputs (0: before it starts; ``entered`` says it got there) until
    ``release`` is set."""
    import functools
    import threading
    from types import SimpleNamespace

    from ui import scan_tab

    hold, entered, release = threading.Event(), threading.Event(), threading.Event()
    segment = scan_tab.segment_scan_files

    @functools.wraps(segment)  # Gradio reads the signature (its progress tracker) through __wrapped__
    def held(*args, **kwargs):
        held_here = hold.is_set()

        def wait_at(n: int) -> None:
            if held_here and n == lines_first:
                entered.set()
                release.wait(120)

        wait_at(0)
        for n, out in enumerate(segment(*args, **kwargs), 1):
            yield out
            wait_at(n)

    monkeypatch.setattr(scan_tab, "segment_scan_files", held)
    with _in_process_demo(softmax_ckpt, tmp_path, monkeypatch) as url:
        try:
            yield SimpleNamespace(url=url, hold=hold, entered=entered, release=release)
        finally:
            release.set()  # a held segmentation lets go before the server closes


@pytest.fixture
def held_scan_app(softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, in-process, whose next scan segmentation, once ``hold`` is set, waits before it starts, as a
    long scan of another person's would."""
    with _held_scan_demo(softmax_ckpt, tmp_path, monkeypatch, 0) as app:
        yield app


@pytest.fixture
def paused_scan_app(softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, in-process, whose next scan segmentation, once ``hold`` is set, waits after its first progress
    line (the note says "Segmenting …"), as a long scan does between its chunks."""
    with _held_scan_demo(softmax_ckpt, tmp_path, monkeypatch, 1) as app:
        yield app


def test_cancel_and_a_new_scan_leave_notes_that_say_what_the_page_shows(paused_scan_app, shared_data, browser,
                                                                         tmp_path):
    """Cancel left "Segmenting …" in the note for good while the page still showed the scan before; and the click
    note of a scan segmented anew still spoke of the clicks on the scan before, which Apply and Undo no longer
    knew."""
    from playwright.sync_api import expect

    page, _ = _scan_page(paused_scan_app, shared_data, browser, tmp_path, 3)
    note, click_note = page.locator("#scan-note"), page.locator("#scan-click-note")
    page.wait_for_timeout(1000)  # the click image drawn after the segmentation
    _click(page, "scan-click-image", SHAPE[0] // 2, SHAPE[1] // 2)
    expect(click_note).to_contain_text("1 click on slice", timeout=30_000)

    paused_scan_app.hold.set()
    page.locator("#scan-files button[aria-label='Clear']").first.click()
    other = zip_files(kaggle_slices(shared_data, "volume_360x310")[70:74], tmp_path / "case9_day5.zip",
                      folder="case9_day5/scans")
    page.locator("#scan-files input[type=file]").set_input_files(other)
    expect(page.locator("#scan-files")).to_contain_text("case9_day5", timeout=30_000)
    page.get_by_role("button", name="Segment scan").click()
    assert paused_scan_app.entered.wait(60), "the segmentation never reached its first progress line"
    expect(note).to_contain_text("Segmenting case9_day5", timeout=30_000)
    page.get_by_role("button", name="Cancel").click()
    expect(note).to_have_text("Segmenting was cancelled: the page still shows case9_day4: 3 slices of 360×310 px, "
                              "voxel 1.5 × 1.5 × 3 mm (slices), with its edits and downloads as they were.",
                              timeout=30_000)
    paused_scan_app.hold.clear()
    paused_scan_app.release.set()  # the cancelled segmentation's next lines never reach the page
    page.wait_for_timeout(2000)
    expect(note).to_contain_text("Segmenting was cancelled")
    expect(click_note).to_contain_text("1 click on slice")  # still the scan shown, its click still pending

    page.get_by_role("button", name="Segment scan").click()
    expect(note).to_contain_text("4 slices 360×310", timeout=120_000)
    expect(click_note).to_have_text("", timeout=30_000)


def test_apply_and_undo_do_not_wait_for_another_persons_segmentation(held_scan_app, shared_data, browser, tmp_path):
    """The edits need no model: a person's Apply clicks and Undo answer while someone else's scan is being
    segmented (before, they queued behind it with the model's calls, a minute or more on a busy Space)."""
    from playwright.sync_api import expect

    d = 1
    page, before, (row, col) = _one_large_bowel_click_pending(held_scan_app, shared_data, browser, tmp_path, 3, d)

    held_scan_app.hold.set()  # another person's scan: segmenting, and held there
    other = browser.new_page(viewport={"width": 1400, "height": 2400})
    other.goto(held_scan_app.url)
    other.get_by_role("tab", name="Scan").click()
    other.locator("#scan-files input[type=file]").set_input_files(tmp_path / "case9_day4.zip")  # the same scan
    expect(other.locator("#scan-files")).to_contain_text("case9_day4", timeout=30_000)
    other.get_by_role("button", name="Segment scan").click()
    assert held_scan_app.entered.wait(60), "the other person's segmentation never started"

    labels_link = page.locator('#scan-downloads a[download$="_labels.nii.gz"]')
    old = labels_link.get_attribute("href")
    page.locator("#scan-click-apply").click()
    expect(labels_link).not_to_have_attribute("href", old, timeout=20_000)
    assert _labels(_download(page, tmp_path, "_labels.nii.gz"))[d, row, col] == LARGE_ID
    old = labels_link.get_attribute("href")
    page.locator("#scan-click-undo").click()
    expect(labels_link).not_to_have_attribute("href", old, timeout=20_000)
    assert np.array_equal(_labels(_download(page, tmp_path, "_labels.nii.gz")), before)
    assert not held_scan_app.release.is_set()
    held_scan_app.release.set()
    expect(other.locator("#scan-note")).to_contain_text("3 slices 360×310", timeout=120_000)
