"""The bad-input battery (tests/bad_inputs.py) through the real handler and through the HTTP API.

For each case: a clear one-line message or a correct result; the server answers the next request;
no file lands outside Gradio's temp dir and the app's scratch dir; no traceback reaches the user.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from bad_inputs import CASES, assert_one_clean_line, good_slice, server_path
from model.mask_png import decode_mask_png
from ui import server, slice_tab

HTTP_CASES = [c for c in CASES if c.http]


# --------------------------------------------------------------------------- the handler, in-process


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_battery_through_handler(tiny_model, tmp_path, case):
    import gradio as gr

    path = case.make(tmp_path)
    upload = str(path) if path else None
    scratch_before = set(server.SCRATCH.root.iterdir())
    if case.refuse:
        with pytest.raises(gr.Error) as info:
            slice_tab.segment(upload)
        assert_one_clean_line(info.value.message, case.id, case.refuse)
        assert set(server.SCRATCH.root.iterdir()) == scratch_before, "a refused upload left output files"
    else:
        (base, annotations), rows, mask_path, note, state = slice_tab.segment(upload)
        assert base.shape == case.shape and base.dtype == np.uint8
        assert bool(case.note and re.search(case.note, note)) == bool(case.note), note
        assert state.organ_masks.shape == (3, *case.shape) and len(rows) == 3
        assert decode_mask_png(np.asarray(Image.open(mask_path))).shape == (3, *case.shape)
    # The next request is answered.
    assert slice_tab.segment(str(good_slice(tmp_path)))[0][1]


# --------------------------------------------------------------------------- the HTTP API, against the live server


@pytest.mark.slow
@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.id)
def test_battery_through_http(server, client, tmp_path, case):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path = case.make(tmp_path)
    upload = handle_file(str(path)) if path else None
    before = server.stray_files()
    if case.refuse:
        with pytest.raises(AppError) as info:
            client.predict(upload, api_name="/segment")
        assert_one_clean_line(info.value.message, case.id, case.refuse)
    else:
        overlay, table, mask_file, _ = client.predict(upload, api_name="/segment")
        masks = decode_mask_png(np.asarray(Image.open(server_path(mask_file))))
        assert masks.shape == (3, *case.shape)
        assert [row[2] for row in table["data"]] == masks.reshape(3, -1).sum(1).tolist()
    # The server answers the next request, and nothing was written outside its temp dirs.
    overlay, *_ = client.predict(handle_file(str(good_slice(tmp_path))), api_name="/segment")
    assert [a["label"] for a in overlay["annotations"]] == ["Stomach", "Small bowel", "Large bowel"]
    assert server.stray_files() - before == set()
    assert server.proc.poll() is None


@pytest.mark.slow
def test_server_log_holds_no_upload_names_pixels_or_tracebacks(server, client, tmp_path):
    """Runs after the battery in this module: the whole server log so far."""
    from gradio_client import handle_file

    client.predict(handle_file(str(good_slice(tmp_path))), api_name="/segment")
    text = server.log.read_text(errors="replace")
    assert "model:" in text  # the right log: the app's startup line
    assert "upl-" not in text, "an upload's file name reached the log"
    assert "Traceback" not in text
    for marker in ("iVBORw0KGgo", "\x89PNG", "JFIF", "array(", "tensor("):
        assert marker not in text, f"image content ({marker!r}) reached the log"


@pytest.mark.slow
def test_server_files_outside_uploads_are_unreachable(server, tmp_path):
    """A request naming a server path that was never uploaded is refused by Gradio; the handler never sees it.

    Last in the module: Gradio logs the refusal with a traceback, which the log test above would see.
    """
    import httpx

    secret = good_slice(tmp_path)  # a valid slice the server could read, outside its upload folder
    payload = {"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, 0, 0.5, ["Stomach"]]}
    event = httpx.post(f"{server.url}gradio_api/call/segment", json=payload, timeout=30)
    if event.status_code == 200:
        stream = httpx.get(f"{server.url}gradio_api/call/segment/{event.json()['event_id']}", timeout=60).text
        assert "event: error" in stream and "annotations" not in stream, stream[:500]
        assert "Traceback" not in stream
    else:
        assert event.status_code in (400, 403, 422), event.text[:500]


@pytest.mark.slow
def test_upload_size_is_capped(server):
    """Gradio refuses uploads over MAX_FILE_SIZE while streaming them; the cap still admits our largest slice."""
    import httpx
    from gradio.utils import _parse_file_size

    import app
    from model.image import MAX_PIXELS

    config = httpx.get(f"{server.url}config", timeout=30).json()
    assert config["max_file_size"] == _parse_file_size(app.MAX_FILE_SIZE)
    assert config["max_file_size"] >= MAX_PIXELS * 4  # a float32 TIFF at the pixel cap
