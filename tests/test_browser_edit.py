"""Correction in the browser: real mouse strokes in the Scan tab's editor, then the downloads read back.

Headless Debian Chromium against the real server. A stroke is drawn in one organ's layer on a
non-square real slice (360×310); after Apply the label NIfTI must differ from the one before on
that slice only, for that organ only, and only within one pixel of the brush around the stroke's
path mapped into the slice's pixels. The eraser is checked the same way, and a DICOM series'
SEG must then call that organ SEMIAUTOMATIC and the others AUTOMATIC.

Screen ↔ slice pixels: the editor's canvas draws the slice through one transform (a scale and
an offset, Gradio's PixiJS ``image_container``); the test reads it from the page once the slice
is loaded, checks it is a plain scale, and maps the stroke's points with it.
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from model import labels
from ui.editor import BRUSH_PX
from scan_fixtures import kaggle_slices, zip_files

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STOMACH, SMALL, LARGE = range(3)
ORGAN_NAMES = [labels.DISPLAY_NAMES[o] for o in labels.ORGANS]


def _download(page, tmp_path, suffix: str):
    with page.expect_download(timeout=60_000) as download:  # a loaded 2-vCPU machine can be slow to answer
        page.locator(f'#scan-downloads a[download$="{suffix}"]').click()
    saved = tmp_path / f"{len(list(tmp_path.iterdir()))}_{download.value.suggested_filename}"
    download.value.save_as(saved)
    return saved


def _labels(path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)  # (D, H, W) ids


def _segment(page, server, upload, expected: str):
    from playwright.sync_api import expect

    page.goto(server.url)
    page.get_by_role("tab", name="Scan").click()
    page.locator("#scan-files input[type=file]").set_input_files(upload)
    expect(page.locator("#scan-files")).to_contain_text(re.compile(rf"{upload.stem}\s*\.zip"), timeout=30_000)
    page.get_by_role("button", name="Segment scan").click()
    expect(page.locator("#scan-note")).to_contain_text(expected, timeout=120_000)


def _open_editor(page, position: int, shape: tuple[int, int]) -> None:
    """Put the slider on ``position``, open that slice in the editor, and wait until its three layers are drawn.

    The editor empties itself while the request runs (three new blank layers), creates each loaded
    layer (``user_created``, unlike the blank ones) before it draws the layer's image into it, and
    says "change" once all are drawn; so a flag is set on the first "change" that sees three new
    layers, all loaded ones.
    """
    slider = page.locator("#scan-slider input[type=number]")
    slider.fill(str(position))
    slider.press("Enter")
    page.wait_for_function("() => window.editor && window.editor.app.canvas === document.querySelector('#scan-editor canvas')")
    page.evaluate("""() => { const e = window.editor, old = e.layer_manager.get_layers().map(l => l.id);
        const call = {};  // an earlier call's listener stays registered; only this call's may set the flag
        window.layers_call = call;
        window.layers_ready = false;
        e.on('change', () => { const ids = e.layer_manager.get_layers().map(l => l.id);
            if (window.layers_call === call && ids.length === 3 && ids.every(id => !old.includes(id))
                && e.layer_manager.get_layers().every(l => l.user_created)) window.layers_ready = true; }); }""")
    page.locator("#scan-edit").click()
    page.wait_for_function("([w, h]) => window.layers_ready && window.editor.width === w && window.editor.height === h",
                           arg=[shape[1], shape[0]], timeout=60_000)
    # ui/editor_layers.js names the loaded layers after their organs, on every load.
    assert page.evaluate("() => window.editor.layer_manager.get_layers().map(l => l.name)") == ORGAN_NAMES
    # The editor maps the pointer through its layout only once it settles after loading the layers; a stroke
    # sooner can land as if the slice sat at the canvas origin (seen for an eraser right after an Apply).
    page.wait_for_timeout(2000)


def _choose_layer_and_tool(page, editor, layer: int, tool: str) -> None:
    """Make ``layer`` the active one through the layer picker, leave the picker closed (open, its list covers
    part of the canvas and takes the stroke), and pick ``tool``."""
    from playwright.sync_api import expect

    picker = editor.locator("button[aria-label='Show Layers']")
    item = editor.locator("li").nth(layer)
    if not item.is_visible():
        picker.click()
    item.click()
    if item.is_visible():
        picker.click()
    expect(item).to_be_hidden()
    page.wait_for_function("""(layer) => { let state; window.editor.layer_manager.layer_store.subscribe(s => state = s)();
        return state.layers.findIndex(l => l.id === state.active_layer) === layer; }""", arg=layer, timeout=10_000)
    editor.locator(f"button[aria-label='{tool}']").click()


def _stroke(page, layer: int, tool: str, path_px: list[tuple[float, float]], editor_id: str = "scan-editor") -> None:
    """Draw along ``path_px`` (slice pixel coordinates ``(x, y)``, pixel centres at +0.5) in ``layer``.

    Slice pixels map to the canvas through the slice container's transform, computed afresh
    (``toGlobal``): its ``worldTransform`` is updated only when the editor renders, and Gradio 6.31
    stops the render loop when idle, so on a loaded machine it could still read as the identity
    and put the stroke left of the slice. Before pressing, the brush must say the pointer is over
    the slice. The editor's progress overlay can cover the canvas for a while after a request (it
    then takes the stroke), so the stroke is drawn again until the editor's Undo button says it landed.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    editor = page.locator(f"#{editor_id}")
    assert page.evaluate(f"() => window.editor.app.canvas === document.querySelector('#{editor_id} canvas')")
    tracker = editor.locator('[data-testid="status-tracker"]')
    undo = editor.locator("button[aria-label='Undo']")
    editor.scroll_into_view_if_needed()
    for _ in range(5):
        _choose_layer_and_tool(page, editor, layer, tool)  # again on each try: a re-render may have undone it
        expect(tracker).to_have_class(re.compile(r"\bhide\b"), timeout=60_000)
        expect(undo).to_be_disabled()
        t = page.evaluate("""() => { const c = window.editor.image_container, g = p => c.toGlobal(p);
            const o = g({x: 0, y: 0}), x = g({x: 1, y: 0}), y = g({x: 0, y: 1});
            return {a: x.x - o.x, b: x.y - o.y, c: y.x - o.x, d: y.y - o.y, tx: o.x, ty: o.y}; }""")
        assert t["b"] == pytest.approx(0, abs=1e-6) and t["c"] == pytest.approx(0, abs=1e-6), t
        assert t["a"] == pytest.approx(t["d"]), t
        box = editor.locator("canvas").first.bounding_box()
        scale = box["width"] / page.evaluate("() => window.editor.app.canvas.width")  # CSS px per canvas px

        def screen(x, y):
            return box["x"] + (t["tx"] + t["a"] * x) * scale, box["y"] + (t["ty"] + t["d"] * y) * scale

        page.mouse.move(*screen(*path_px[0]))
        try:  # the brush starts a stroke only where it has seen the pointer over the slice
            page.wait_for_function("() => window.editor.tools.get('brush').brush_cursor.is_over_image()", timeout=5_000)
        except PlaywrightTimeout:
            continue
        page.mouse.down()
        for point in path_px[1:]:  # the brush joins the points it gets; each step is a frame of software rendering
            page.mouse.move(*screen(*point), steps=8)
        page.mouse.up()
        page.wait_for_timeout(500)
        if undo.is_enabled():
            return
        page.wait_for_timeout(2000)
    pytest.fail("the editor never took the stroke")


def _apply(page) -> None:
    """Apply the edit and wait for the new downloads."""
    from playwright.sync_api import expect

    labels = page.locator('#scan-downloads a[download$="_labels.nii.gz"]')
    old = labels.get_attribute("href")
    page.locator("#scan-apply-edit").click()
    expect(page.locator("#scan-note")).to_contain_text("Corrected by hand", timeout=60_000)
    expect(labels).not_to_have_attribute("href", old, timeout=60_000)
    expect(page.locator('#scan-downloads a[download$="_edits.csv"]')).to_have_count(1)


def _distance_to_path(shape: tuple[int, int], path_px) -> np.ndarray:
    """``(H, W)`` distance of every pixel centre to the polyline ``path_px``, in pixels."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    centres = np.stack([cols + 0.5, rows + 0.5], axis=-1).reshape(-1, 2)
    best = np.full(len(centres), np.inf)
    for a, b in zip(np.asarray(path_px[:-1], float), np.asarray(path_px[1:], float)):
        ab = b - a
        t = np.clip((centres - a) @ ab / (ab @ ab), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(centres - (a + t[:, None] * ab), axis=1))
    return best.reshape(shape)


def test_a_stroke_and_an_eraser_change_that_slice_and_organ_where_they_went(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    files = kaggle_slices(shared_data, "volume_360x310")[60:66]
    upload = zip_files(files, tmp_path / "case9_day4.zip", folder="case9_day4/scans")
    page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
    _segment(page, server, upload, "6 slices 360×310")
    shape = (310, 360)
    before = _labels(_download(page, tmp_path, "_labels.nii.gz"))

    def edit_slice_3(layer: int, tool: str, path_px) -> np.ndarray:
        """One stroke with ``tool`` in ``layer`` on slice 3, applied: the label NIfTI downloaded after it."""
        _open_editor(page, 3, shape)
        _stroke(page, layer, tool, path_px)
        page.locator("#scan-editor").screenshot(path=str(tmp_path / f"{tool.lower()}.png"))
        _apply(page)
        return _labels(_download(page, tmp_path, "_labels.nii.gz"))

    # Paint large bowel (id 3, which wins every overlap in the label NIfTI) across slice 3.
    paint = [(40.5, 60.5), (150.5, 110.5), (300.5, 95.5)]
    painted = edit_slice_3(LARGE, "Brush", paint)
    changed = painted != before
    assert set(np.nonzero(changed)[0]) == {2}, "only the edited slice changes"
    assert set(np.unique(painted[changed])) == {3}, "only large bowel was added"
    distance = _distance_to_path(shape, paint)
    assert distance[changed[2]].max() <= BRUSH_PX + 1, "a change away from the stroke"
    under = (distance <= BRUSH_PX - 1) & (before[2] != 3)
    assert under.sum() > 500 and changed[2][under].all(), "the stroke's own pixels must all be added"

    # Erase large bowel along a path crossing the stroke; only large-bowel pixels there go.
    erase = [(150.5, 40.5), (150.5, 200.5)]
    erased = edit_slice_3(LARGE, "Erase", erase)
    gone = erased != painted
    assert set(np.nonzero(gone)[0]) == {2}
    assert set(np.unique(painted[gone])) == {3} and 3 not in set(np.unique(erased[gone]))
    distance = _distance_to_path(shape, erase)
    assert distance[gone[2]].max() <= BRUSH_PX + 1
    under = (distance <= BRUSH_PX - 1) & (painted[2] == 3)
    assert under.sum() > 50 and gone[2][under].all()

    log = _download(page, tmp_path, "_edits.csv").read_text().splitlines()
    assert log[0] == "edit,slice_index,slice_number,organ,pixels_added,pixels_removed,tool,clicks"
    assert [row.split(",")[:4] for row in log[1:]] == [["1", "2", "83", "large_bowel"], ["2", "2", "83", "large_bowel"]]
    review = page.locator("#scan-review")
    assert "edited" in review.inner_text()

    # Undo (under the click image) takes the last brush edit back: the downloads are those after the paint.
    expect(page.locator("#scan-click-note")).to_contain_text("Applied: the brush edit on slice 3.")
    labels = page.locator('#scan-downloads a[download$="_labels.nii.gz"]')
    old = labels.get_attribute("href")
    page.locator("#scan-click-undo").click()
    expect(labels).not_to_have_attribute("href", old, timeout=60_000)
    assert np.array_equal(_labels(_download(page, tmp_path, "_labels.nii.gz")), painted)


def test_the_seg_of_an_edited_dicom_series_says_semiautomatic_for_that_organ_only(server, shared_data, browser,
                                                                                   tmp_path):
    import highdicom as hd
    import pydicom

    import rt_series
    from scan_fixtures import stack

    voxels = stack(kaggle_slices(shared_data, "volume_360x310")[60:64])
    upload = zip_files(rt_series.write_mr_series(voxels, tmp_path / "series"), tmp_path / "mr_series.zip")
    page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
    _segment(page, server, upload, "4 slices 360×310")
    _open_editor(page, 2, (310, 360))
    _stroke(page, SMALL, "Brush", [(60.5, 250.5), (200.5, 260.5)])
    _apply(page)
    seg = hd.seg.segread(_download(page, tmp_path, "_seg.dcm"))
    assert {str(d.SegmentLabel): str(d.SegmentAlgorithmType) for d in seg.SegmentSequence} == {
        "Stomach": "AUTOMATIC", "Small bowel": "SEMIAUTOMATIC", "Large bowel": "AUTOMATIC"}
    rtstruct = pydicom.dcmread(_download(page, tmp_path, "_rtstruct.dcm"))
    assert {r.ROIName: r.ROIGenerationAlgorithm for r in rtstruct.StructureSetROISequence} == {
        "Stomach": "AUTOMATIC", "Small bowel": "SEMIAUTOMATIC", "Large bowel": "AUTOMATIC"}


def test_after_a_larger_scan_shifted_layers_are_refused_and_nothing_lands(server, shared_data, browser, tmp_path):
    """Gradio 6.31 draws layers loaded from Python centred in the largest canvas it has held: after a
    360×310 slice, a 266×266 slice's layers come back shifted. Apply must refuse them in one line."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 2000}, accept_downloads=True)
    large = zip_files(kaggle_slices(shared_data, "volume_360x310")[60:63], tmp_path / "case9_day4.zip",
                      folder="case9_day4/scans")
    _segment(page, server, large, "3 slices 360×310")
    _open_editor(page, 2, (310, 360))
    small = zip_files(kaggle_slices(shared_data, "volume_266x266")[60:63], tmp_path / "case5_day1.zip",
                      folder="case5_day1/scans")
    page.locator("#scan-files button[aria-label='Clear']").first.click()
    page.locator("#scan-files input[type=file]").set_input_files(small)
    page.get_by_role("button", name="Segment scan").click()
    expect(page.locator("#scan-note")).to_contain_text("3 slices 266×266", timeout=120_000)
    _open_editor(page, 2, (266, 266))
    _stroke(page, LARGE, "Brush", [(40.5, 60.5), (200.5, 90.5)])
    page.locator("#scan-apply-edit").click()
    expect(page.get_by_text("The editor shifted the layers off the slice").first).to_be_visible(timeout=60_000)
    expect(page.locator('#scan-downloads a[download$="_edits.csv"]')).to_have_count(0)
    expect(page.locator("#scan-note")).not_to_contain_text("Corrected by hand")


def segmented_slice_page(server, browser, image):
    """A page with ``image`` segmented on the Slice tab."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    page.goto(server.url)
    page.locator("input[type=file]").first.set_input_files(image)
    page.get_by_role("button", name="Segment", exact=True).click()
    expect(page.get_by_text("Pixel spacing 1.5 × 1.5 mm (file name).")).to_be_visible(timeout=90_000)
    return page


def slice_mask_png(page, tmp_path) -> np.ndarray:
    """The Slice tab's mask PNG, downloaded and decoded: ``(O, H, W) bool``."""
    from PIL import Image

    from model.mask_png import decode_mask_png

    with page.expect_download(timeout=60_000) as download:  # a loaded 2-vCPU machine can be slow to answer
        page.locator('a[download$="_masks.png"]').click()
    saved = tmp_path / f"{len(list(tmp_path.iterdir()))}.png"
    download.value.save_as(saved)
    return decode_mask_png(np.asarray(Image.open(saved)))


def test_the_slice_tab_editor_writes_the_stroke_into_the_mask_png(server, shared_data, browser, tmp_path):
    from playwright.sync_api import expect

    page = segmented_slice_page(server, browser, kaggle_slices(shared_data, "volume_360x310")[62])

    def mask_png():
        return slice_mask_png(page, tmp_path)

    before = mask_png()
    page.locator("#slice-edit").click()
    page.wait_for_function("""() => { const e = window.editor;
        return e && e.app.canvas === document.querySelector('#slice-editor canvas') && e.width === 360
            && e.height === 310 && e.layer_manager.get_layers().length === 3
            && e.layer_manager.get_layers().every(l => l.user_created); }""", timeout=60_000)
    page.wait_for_timeout(1000)
    path = [(60.5, 250.5), (250.5, 270.5)]
    _stroke(page, LARGE, "Brush", path, editor_id="slice-editor")
    old = page.locator('a[download$="_masks.png"]').get_attribute("href")
    page.locator("#slice-apply-edit").click()
    expect(page.locator('a[download$="_masks.png"]')).not_to_have_attribute("href", old, timeout=60_000)
    after = mask_png()
    changed = before != after
    assert not changed[[STOMACH, SMALL]].any() and (after[LARGE] >= before[LARGE]).all()
    distance = _distance_to_path((310, 360), path)
    assert distance[changed[LARGE]].max() <= BRUSH_PX + 1
    under = (distance <= BRUSH_PX - 1) & ~before[LARGE]
    assert under.sum() > 100 and after[LARGE][under].all()


def test_the_editor_names_each_layer_after_its_organ_and_paints_in_its_colour(server, shared_data, browser):
    """Gradio 6.31 names every layer loaded from Python "Layer 1"; ``ui/editor_layers.js`` renames them in
    organ order, sets the brush to the active organ's colour and hides the colour picker."""
    from playwright.sync_api import expect

    page = segmented_slice_page(server, browser, kaggle_slices(shared_data, "volume_360x310")[62])
    editor = page.locator("#slice-editor")
    names = ORGAN_NAMES
    old = []
    for attempt in range(2):  # a second load must be renamed too
        page.locator("#slice-edit").click()
        page.wait_for_function("""old => { const e = window.editor, layers = e && e.layer_manager.get_layers();
            return e && e.app.canvas === document.querySelector('#slice-editor canvas') && layers.length === 3
                && layers.every(l => l.user_created && !old.includes(l.id)); }""", arg=old, timeout=60_000)
        old = page.evaluate("() => window.editor.layer_manager.get_layers().map(l => l.id)")
        layers = editor.locator("button[aria-label='Show Layers']")
        expect(layers).to_have_text(names[STOMACH])  # the active layer, named
        expect(editor.locator("button[aria-label='Brush']")).to_have_class(re.compile(r"\bhighlight\b"))
        assert page.evaluate("() => window.editor.tools.get('brush').state.color") == labels.COLOURS["stomach"]
        expect(editor.locator("button[aria-label='Color']")).to_be_hidden()
        layers.click()
        expect(editor.locator("li")).to_have_text(names)
        editor.locator("li").nth(LARGE).click()
        expect(layers).to_have_text(names[LARGE])
        assert page.evaluate("() => window.editor.tools.get('brush').state.color") == labels.COLOURS["large_bowel"]
        assert page.evaluate("() => window.editor.layer_manager.get_layers().map(l => l.name)") == names
