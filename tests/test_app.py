"""The app three ways: the handler called directly, the HTTP API through gradio_client, and a browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from locations import REPO, SHARED_DATA
from model.mask_png import decode_mask_png
from ui import overlays, slice_tab

SLICE_266 = SHARED_DATA / "scans" / "volume_266x266" / "slice_0070_266_266_1.50_1.50.png"


#: Run in a fresh interpreter: in this one, other tests have long since imported torch.
_IMPORT_PROBE = """
import json, sys
import psutil
import app
from ui import server
print(json.dumps({
    "demo": type(app.demo).__name__,
    "endpoints": sorted(f.api_name for f in app.demo.fns.values() if f.api_name in ("segment", "segment_scan")),
    "heavy_modules": sorted(m for m in ("torch", "transformers", "lightning") if m in sys.modules),
    "child_processes": len(psutil.Process().children(recursive=True)),
    "segmenter": repr(server.MODEL.segmenter),
}))
"""


def test_importing_app_builds_demo_without_loading_torch_or_a_model():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("MODEL", None)
    done = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe == {"demo": "Blocks", "endpoints": ["segment", "segment_scan"], "heavy_modules": [],
                     "child_processes": 0, "segmenter": "None"}


def test_handler_on_real_slice(shared_data, tiny_model):
    annotated, rows, mask_path, note, state = slice_tab.segment(str(SLICE_266))
    base, anns = annotated
    assert base.shape == (266, 266) and base.dtype == np.uint8
    assert [name for _, name in anns] == ["Stomach", "Small bowel", "Large bowel"]
    assert "file name" in note
    masks = decode_mask_png(np.asarray(Image.open(mask_path)))
    np.testing.assert_array_equal(masks, state.organ_masks)
    assert [r[2] for r in rows] == masks.reshape(3, -1).sum(1).tolist()
    assert rows[0][3] == pytest.approx(masks[0].sum() * 1.5 * 1.5 / 100, abs=0.01)


def test_render_rescales_opacity_without_model(tiny_model, shared_data, monkeypatch):
    *_, state = slice_tab.segment(str(SLICE_266))
    monkeypatch.setattr(tiny_model.MODEL, "get", lambda: pytest.fail("render must not run the model"))
    found = int(np.argmax(state.organ_masks.sum(axis=(1, 2))))  # the organ with most pixels, so its layer is not empty
    assert state.organ_masks[found].any(), "the tiny model found no organ on this slice: nothing to check"
    name = overlays.ORGAN_CHOICES[found]
    base, anns = slice_tab.render(state, 0.8, [name])
    assert [n for _, n in anns] == [name]
    np.testing.assert_array_equal(anns[0][0] > 0, state.organ_masks[found])
    assert anns[0][0].max() == pytest.approx(0.8)


def test_confidence_map_shows_the_models_uncertainty(tiny_model, shared_data):
    from model.review import uncertainty_map

    annotated, *_, state = slice_tab.segment(str(SLICE_266), None, 0.5, overlays.ORGAN_CHOICES, True)
    layers = dict((name, layer) for layer, name in annotated[1])
    uncertainty = layers[overlays.UNCERTAINTY_LABEL]
    assert uncertainty.shape == (266, 266) and 0 <= uncertainty.min() and uncertainty.max() <= 0.5  # × opacity
    np.testing.assert_allclose(uncertainty, state.uncertainty * 0.5)
    assert uncertainty.std() > 0  # a map, not a constant
    # Off by default, and toggled without the model.
    assert overlays.UNCERTAINTY_LABEL not in [n for _, n in slice_tab.render(state, 0.5)[1]]
    assert slice_tab.render(state, 1.0, [], True)[1][0][1] == overlays.UNCERTAINTY_LABEL
    # The rule: 1 − min over organs of |2p − 1|.
    np.testing.assert_allclose(uncertainty_map(np.array([[[0.5, 0.9]], [[0.1, 0.0]]])), [[1.0, 0.2]], atol=1e-6)


@pytest.mark.parametrize("content,message", [
    (None, "No image"),
    (b"hello", "not an image"),
    (b"", "empty"),
])
def test_handler_bad_input_is_gr_error(tiny_model, tmp_path, content, message):
    import gradio as gr

    path = None
    if content is not None:
        path = tmp_path / "upload.png"
        path.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        slice_tab.segment(str(path) if path else None)


def test_flat_image_is_gr_error(tiny_model, tmp_path):
    import gradio as gr

    Image.new("L", (64, 64), 3).save(tmp_path / "flat.png")
    with pytest.raises(gr.Error, match="min == max"):
        slice_tab.segment(str(tmp_path / "flat.png"))


@pytest.mark.parametrize("entered", [1e308, 1e-300, -1.0, float("nan"), "abc"])
def test_an_entered_pixel_spacing_out_of_range_is_one_line(tiny_model, entered):
    """Areas from 1e308 mm pixels overflow and 1e-300 mm rounds them to 0: refused before the model runs."""
    import gradio as gr

    with pytest.raises(gr.Error, match=r"Pixel spacing (.* mm is outside 0\.01–100 mm|must be a number of mm)"):
        slice_tab.segment(str(SLICE_266), entered)
    assert slice_tab.segment(str(SLICE_266), 0)[3].endswith("(file name).")  # 0: the file's own


# --------------------------------------------------------------------------- a real server (conftest.server)


@pytest.mark.slow
def test_gradio_client_segment(server, shared_data, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, download_files=str(tmp_path))
    result = client.predict(handle_file(str(SLICE_266)), api_name="/segment")
    annotated, table, mask_file, note = result
    assert Path(annotated["image"]["path"] if isinstance(annotated["image"], dict) else annotated["image"]).is_file()
    assert [a["label"] for a in annotated["annotations"]] == ["Stomach", "Small bowel", "Large bowel"]
    assert table["headers"] == ["Organ", "Present", "Pixels", "Area (cm²)"]
    masks = decode_mask_png(np.asarray(Image.open(mask_file)))
    assert masks.shape == (3, 266, 266)
    assert [row[2] for row in table["data"]] == masks.reshape(3, -1).sum(1).tolist()
    # A bad upload is a one-line error and the server keeps serving.
    bad = Path(client.output_dir) / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), api_name="/segment")
    assert client.predict(handle_file(str(SLICE_266)), api_name="/segment")[0]["annotations"]


@pytest.mark.slow
@pytest.mark.browser
def test_browser_upload_and_segment(server, shared_data, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url)
    page.get_by_text("Research demo, not for diagnostic use").first.wait_for(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(SLICE_266))
    page.get_by_role("button", name="Segment").click()
    legend = page.locator(".legend").first
    legend.wait_for(timeout=60_000)
    assert {"Stomach", "Small bowel", "Large bowel"} <= set(legend.inner_text().split("\n"))
    page.screenshot(path=str(tmp_path / "slice_tab.png"), full_page=True)
    assert (tmp_path / "slice_tab.png").stat().st_size > 10_000


def test_a_refused_edit_is_a_warning_and_changes_no_output_on_either_tab():
    """A refusal ("Nothing to undo", …) raised from an edit event made Gradio draw "Error" over every output of the
    event, the click image too, whose clicks then went nowhere. The page's edit handlers warn instead and change
    nothing; a failure that is not a refusal stays an error. tests/test_browser_clicks.py presses so in the browser."""
    import app
    from ui import server

    def refusing(*_):
        raise server.refused("Nothing to undo: no pending clicks.")

    with pytest.warns(UserWarning, match="Nothing to undo: no pending clicks."):
        assert server.warn_refusals(refusing)(1, 2) == gr.skip()

    def failing():
        raise server.user_error("The propagation failed; correct the slice again and retry.")

    with pytest.raises(gr.Error, match="The propagation failed"):
        server.warn_refusals(failing)()
    edits = {"slice_click", "undo_slice_click", "open_slice_editor", "apply_slice_edit", "open_scan_editor",
             "reset_scan_editor", "scan_click", "undo_scan_click", "apply_scan_brush", "apply_scan_clicks",
             "propagate_scan", "fill_between_scan"}
    warned = {f.fn.__name__ for f in app.demo.fns.values()
              if f.fn is not None and f.fn.__code__ is server.warn_refusals(failing).__code__}
    assert warned == edits


def test_cancel_says_the_segmentation_was_cancelled_and_what_the_page_still_shows(tiny_model, shared_data, tmp_path):
    from scan_fixtures import kaggle_slices

    from ui import scan_tab

    files = [str(f) for f in kaggle_slices(shared_data, "volume_234x234")[:3]]
    *_, state, _ = list(scan_tab.segment_scan_files(files))[-1]
    assert scan_tab.cancelled_note(state, "- 3 slices …") == gr.skip()  # nothing was running: the note stays
    running = "Segmenting case9_day1: 115 slices of 360×310 px, voxel 1.5 × 1.5 × 3 mm (slices): 16/115 slices…"
    assert scan_tab.cancelled_note(state, running) == (
        f"- Segmenting was cancelled: the page still shows {state.scan.describe()}, with its edits and downloads as "
        "they were.")
    assert scan_tab.cancelled_note(None, running) == "- Segmenting was cancelled: no scan is shown."


def test_every_click_and_undo_press_counts_on_both_tabs():
    """A click, or an Undo press, made while the one before is still answering is queued after it, not dropped:
    Gradio's default for an event ("once") drops it. tests/test_browser_clicks.py clicks so in the browser."""
    import app

    presses = ("scan_click", "slice_click", "undo_scan_click", "undo_slice_click")
    modes = {f.fn.__name__: f.trigger_mode for f in app.demo.fns.values() if f.fn is not None}
    assert {name: modes[name] for name in presses} == dict.fromkeys(presses, "multiple")
