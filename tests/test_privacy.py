"""Uploads and results do not outlive the cache policy; the README states that policy."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bad_inputs import good_slice
from locations import REPO, free_port
from model.serving import Scratch
from ui import server


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def test_configured_policy_matches_readme():
    import app

    assert app.demo.delete_cache == (server.CACHE_SECONDS, server.CACHE_SECONDS)
    readme = (REPO / "README.md").read_text()
    assert f"delete_cache=({server.CACHE_SECONDS}, {server.CACHE_SECONDS})" in readme
    assert f"at most {2 * server.CACHE_SECONDS // 3600} hours" in readme


@pytest.fixture
def short_lived_app(softmax_ckpt, tmp_path, monkeypatch):
    """The real demo, in-process, with a one-second cache policy and its own temp and scratch dirs."""
    import app

    gradio_tmp, scratch = tmp_path / "gradio", tmp_path / "scratch"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_tmp))
    monkeypatch.setattr(server, "CACHE_SECONDS", 1)
    monkeypatch.setattr(server, "SCRATCH", Scratch(scratch, 1))
    server.MODEL.configure(str(softmax_ckpt))
    demo = app.build_demo()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", gradio_tmp, scratch
    finally:
        demo.close()
        server.MODEL.configure(None)


@pytest.mark.slow
def test_uploads_outputs_and_scratch_are_deleted_on_schedule(short_lived_app, tmp_path):
    from gradio_client import Client, handle_file

    url, gradio_tmp, scratch = short_lived_app
    client = Client(url, verbose=False, download_files=False)
    upload = good_slice(tmp_path)
    client.predict(handle_file(str(upload)), api_name="/segment")
    cached = _files(gradio_tmp)
    names = {p.name for p in cached}
    assert upload.name in names, "the upload should be in Gradio's cache"
    assert "upl-good_masks.png" in names, "the mask download should be in Gradio's cache"
    assert len(cached) >= 3  # upload, overlay images, mask download
    first_request = set(scratch.iterdir())
    assert len(first_request) == 1

    # Gradio's delete_cache (every second, files older than a second) removes uploads and outputs;
    # it leaves only gr.File's empty tmpXXXX strays at the top of its cache.
    assert _wait_until(lambda: all(p.stat().st_size == 0 and p.parent == gradio_tmp and p.name.startswith("tmp")
                                   for p in _files(gradio_tmp) & cached))
    strays = _files(gradio_tmp) & cached
    # The next request sweeps our scratch copy and those strays, on the same age.
    client.predict(handle_file(str(upload)), api_name="/segment")
    assert not (set(scratch.iterdir()) & first_request)
    assert not (_files(gradio_tmp) & strays)
    client.close()


def test_sweeper_removes_old_files_without_requests(tmp_path):
    """... and without requests, the background sweeper started by ``main`` does."""
    scratch, cache = tmp_path / "scratch", tmp_path / "gradio"
    old, fresh = scratch / "old", scratch / "fresh"
    for folder in (old, fresh, cache / "0123abcd"):
        folder.mkdir(parents=True)
    (old / "masks.png").write_bytes(b"x")
    (cache / "tmpabc123").touch()  # gr.File's empty stray
    (cache / "tmpdata").write_bytes(b"not empty: Gradio's to manage")
    (cache / "0123abcd" / "tmpupload.png").touch()  # inside a hashed folder: Gradio's to manage
    past = time.time() - 10
    for path in (old, cache / "tmpabc123", cache / "tmpdata", cache / "0123abcd" / "tmpupload.png"):
        os.utime(path, (past, past))
    Scratch(scratch, 5).sweep(cache)
    assert not old.exists() and fresh.exists() and not (cache / "tmpabc123").exists()
    assert (cache / "tmpdata").exists() and (cache / "0123abcd" / "tmpupload.png").exists()

    stop = threading.Event()
    threading.Thread(target=Scratch(scratch, 0.5).sweep_forever, args=(cache, stop), daemon=True).start()
    try:
        assert _wait_until(lambda: not fresh.exists(), timeout=10)
    finally:
        stop.set()
