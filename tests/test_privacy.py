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
    """The real demo, in-process, with a two-second cache policy and its own temp and scratch dirs.

    Two seconds, not one: Gradio sweeps every ``CACHE_SECONDS`` what is older than that, and on a loaded
    2-vCPU machine (a training job on the other core) an upload once waited more than a second for its
    request and was swept first ("no longer on the server")."""
    import app

    gradio_tmp, scratch = tmp_path / "gradio", tmp_path / "scratch"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_tmp))
    monkeypatch.setattr(server, "CACHE_SECONDS", 2)
    monkeypatch.setattr(server, "SCRATCH", Scratch(scratch, 2))
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
    # (The upload itself may be gone already: the request's own sweep takes what is older than two seconds.)
    assert "upl-good_masks.png" in names, "the mask download should be in Gradio's cache"
    assert len(cached) >= 2  # overlay images, mask download
    first_request = set(scratch.iterdir())
    assert len(first_request) == 1

    # Gradio's delete_cache (every 2 s, files older than 2 s) removes uploads and outputs;
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
    """... and without requests, the background sweeper started by ``main`` does: our old request folders,
    and whatever in Gradio's cache is older than the same age (a restart's leftovers, which Gradio forgot),
    by ctime, as Gradio ages its own files (a copy keeps its source's mtime)."""
    scratch, cache = tmp_path / "scratch", tmp_path / "gradio"
    old, fresh = scratch / "old", scratch / "fresh"
    for folder in (old, cache / "0123abcd"):
        folder.mkdir(parents=True)
    (old / "masks.png").write_bytes(b"x")
    (cache / "tmpabc123").touch()  # gr.File's empty stray
    (cache / "0123abcd" / "upload.png").write_bytes(b"an earlier run's upload")
    past = time.time() - 10
    os.utime(old, (past, past))
    (cache / "89abcdef").mkdir()  # an example slice Gradio copied at start and keeps for good
    (cache / "89abcdef" / "sample.png").write_bytes(b"an example")
    time.sleep(1.2)
    fresh.mkdir()
    (cache / "4567cdef").mkdir()
    (cache / "4567cdef" / "example.png").write_bytes(b"just copied")
    os.utime(cache / "4567cdef" / "example.png", (past, past))  # an old mtime, as a copied example keeps
    Scratch(scratch, 1, keep=lambda: {str(cache / "89abcdef" / "sample.png")}).sweep(cache)
    assert not old.exists() and fresh.exists()
    assert sorted(p.name for p in cache.iterdir()) == ["4567cdef", "89abcdef"]
    # This app's own caches: a process that has ended leaves its whole cache to the next sweep.
    mine, ended, foreign = (tmp_path / f"uwmgi-gradio-{n}" for n in (os.getpid(), 2**22 + 7, "x"))
    for folder in (mine, ended, foreign):
        folder.mkdir()
    Scratch(scratch, 1, own_cache=mine).sweep(mine)
    assert mine.exists() and not ended.exists() and foreign.exists()

    stop = threading.Event()
    threading.Thread(target=Scratch(scratch, 0.5).sweep_forever, args=(cache, stop), daemon=True).start()
    try:
        assert _wait_until(lambda: not fresh.exists(), timeout=10)
    finally:
        stop.set()


@pytest.mark.slow
def test_a_stopped_server_leaves_no_upload_or_output(softmax_ckpt, tmp_path):
    """SIGTERM (docker stop, a Space restarting) is a clean shutdown: Gradio's cache and our output folders
    hold nothing of the run afterwards. While it runs, uploads and outputs are the server user's alone."""
    from gradio_client import Client, handle_file

    from benchmarks.served import Server

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # No GRADIO_TEMP_DIR: Gradio's cache is the server's own ($TMPDIR/uwmgi-gradio-<pid>), all of it removed.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp)}
    env.pop("GRADIO_TEMP_DIR", None)
    app = Server([str(REPO / "app.py"), "--model", str(softmax_ckpt)], env, cwd=tmp_path, log=tmp_path / "server.log",
                 name="app.py")
    try:
        app.wait_ready(timeout=180)
        client = Client(app.url, verbose=False, download_files=False)
        client.predict(handle_file(str(good_slice(tmp_path))), api_name="/segment")
        written = [p for p in tmp.rglob("*") if p.is_file()]
        assert any(p.name == "upl-good.png" for p in written) and any(p.name == "upl-good_masks.png" for p in written)
        assert {p.relative_to(tmp).parts[0] for p in written} == {f"uwmgi-gradio-{app.proc.pid}", "uwmgi-outputs"}
        assert {oct(p.stat().st_mode & 0o077) for p in written} == {"0o0"}, "readable by other users"
    finally:
        app.stop()  # SIGTERM; with the client's streams still open
    assert app.proc.returncode == 0, app.output()
    assert [p for p in tmp.rglob("*") if p.is_file()] == []  # the overlay images Gradio does not track too


def test_requests_sweep_at_most_once_a_minute(tmp_path):
    """A sweep walks Gradio's whole cache: requests trigger one at most every minute (or every max age, if shorter)."""
    scratch = Scratch(tmp_path / "scratch", 3600)
    sweep, calls = scratch.sweep, []
    scratch.sweep = lambda cache: (calls.append(cache), sweep(cache))
    first, second = scratch.new_dir(tmp_path / "gradio"), scratch.new_dir(tmp_path / "gradio")
    assert first != second and first.is_dir() and second.is_dir() and len(calls) == 1
    quick = Scratch(tmp_path / "quick", 0)  # a zero age sweeps on every request
    sweep0, calls0 = quick.sweep, []
    quick.sweep = lambda cache: (calls0.append(cache), sweep0(cache))
    quick.new_dir(tmp_path / "gradio"), quick.new_dir(tmp_path / "gradio")
    assert len(calls0) == 2
