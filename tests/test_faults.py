"""Faults: no Hub at start, a checkpoint that will not load, a model that raises mid-request."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from bad_inputs import good_slice
from locations import REPO, free_port
from model import checkpoint as ckpt
from tiny import make_original_layout
from ui import server, slice_tab


@pytest.fixture
def tiny_model():
    """The page's model holder, configured by each test and reset after it."""
    yield server
    server.MODEL.configure(None)


def test_hub_unreachable_with_cache_runs_from_cache(tiny_model, tmp_path, monkeypatch):
    """The converted default is in the cache: no download is even attempted, and requests are served."""
    import huggingface_hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    ckpt.convert_original(make_original_layout(tmp_path / "orig"), ckpt._converted_default_dir())
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(kwargs)
        raise huggingface_hub.errors.LocalEntryNotFoundError("the Hub is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    server.MODEL.configure(None)
    (base, annotations), *_ = slice_tab.segment(str(good_slice(tmp_path)))
    assert base.shape == (48, 64) and len(annotations) == 3
    assert "converted" in server.MODEL.about() and attempts == []


def test_hub_unreachable_without_cache_exits_clearly(tmp_path):
    """``python app.py`` offline with an empty cache: non-zero exit, one line naming --model, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "MODEL_REVISION", "HF_HOME")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"), GRADIO_ANALYTICS_ENABLED="False",
               TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, str(REPO / "app.py")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--model" in errors[0] and ckpt.DEFAULT_SPACE in errors[0], result.stderr[-1000:]


def _broken_checkpoint(src, dst):
    shutil.copytree(src, dst)
    (dst / ckpt.WEIGHTS).write_bytes(b"these are not safetensors")
    return dst


def test_model_that_fails_to_load_exits_clearly(softmax_ckpt, tmp_path):
    """``python app.py --model BROKEN``: exit status 2 and one line. In its own process, as users run it
    (in-process, ``main`` would share the loggers torch and transformers bound to an earlier test's stderr)."""
    broken = _broken_checkpoint(softmax_ckpt, tmp_path / "broken")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(free_port()), "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(REPO / "app.py"), "--model", str(broken)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: Could not load the model in {broken}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_click_refiner_folder_without_one_exits_clearly(softmax_ckpt, tmp_path):
    """``python app.py --click-refiner DIR`` where DIR holds no refiner: exit status 2 and one line, at start."""
    empty = tmp_path / "no_refiner"
    empty.mkdir()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(free_port()), "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(REPO / "app.py"), "--model", str(softmax_ckpt), "--click-refiner",
                             str(empty)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == (f"error: {empty} holds no click refiner (click_refiner.safetensors and "
                                              "click_refiner.json); train one with python -m train.clicks, or pass "
                                              "--click-refiner none for the training-free corrector")
    assert "Traceback" not in result.stderr + result.stdout


def test_model_that_fails_to_load_is_a_clear_gr_error(tiny_model, softmax_ckpt, tmp_path):
    import gradio as gr

    server.MODEL.configure(str(_broken_checkpoint(softmax_ckpt, tmp_path / "broken")))
    with pytest.raises(gr.Error) as info:
        slice_tab.segment(str(good_slice(tmp_path)))
    assert info.value.message.startswith("The model is not available: Could not load the model")
    assert "Model not loaded" in server.MODEL.about()


@pytest.mark.parametrize("failure", [RuntimeError("CUDA error: secret detail of pixel 12"), MemoryError()],
                         ids=["runtime-error", "out-of-memory"])
def test_model_raising_is_gr_error_and_next_request_works(tiny_model, softmax_ckpt, tmp_path, monkeypatch, caplog,
                                                          failure):
    import gradio as gr

    server.MODEL.configure(str(softmax_ckpt))
    segmenter = server.MODEL.get()

    def broken_predict(*args, **kwargs):
        raise failure

    monkeypatch.setattr(segmenter, "predict", broken_predict)
    with caplog.at_level(logging.INFO, logger="uwmgi.app"), pytest.raises(gr.Error) as info:
        slice_tab.segment(str(good_slice(tmp_path)))
    assert info.value.message == "The model failed on this image; try another slice."
    assert f"prediction failed: {type(failure).__name__}" in caplog.text
    assert "secret" not in caplog.text and "upl-" not in caplog.text  # neither the error's text nor the file name
    monkeypatch.undo()
    assert slice_tab.segment(str(good_slice(tmp_path)))[0][1]  # the same process serves the next request
