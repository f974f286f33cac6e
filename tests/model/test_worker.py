"""The model in its own process (``model.engines.process``): same masks, clear errors, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from bad_inputs import good_slice
from locations import REPO
from model.checkpoint import CheckpointError
from model.engines.choose import load_segmenter
from model.engines.torch import Segmenter
from model.engines.process import SegmenterProcess, start_method
from ui import server, slice_tab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(softmax_ckpt):
    proc = SegmenterProcess(str(softmax_ckpt)).wait()
    yield proc
    proc.close()


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_spawns_once_torch_is_loaded():
    assert "torch" in sys.modules  # this test module imported model.engines.torch
    assert start_method() == "spawn"


def test_masks_match_the_in_process_segmenter(worker, softmax_ckpt):
    rng = np.random.default_rng(0)
    slices = rng.integers(0, 4000, size=(3, 70, 90), dtype=np.uint16)
    local = load_segmenter(str(softmax_ckpt))  # as the app loads it in process: the same engine and About line
    remote = worker.predict(slices)
    assert remote.dtype == bool and remote.shape == (3, 3, 70, 90)
    np.testing.assert_array_equal(remote, local.predict(slices))
    assert worker.pid != os.getpid() and psutil.Process(worker.pid).ppid() == os.getpid()
    assert (worker.batch_size, worker.slice_offsets) == (local.batch_size, local.slice_offsets)
    assert worker.describe() == f"{local.describe()}; in its own process"


def test_a_checkpoint_that_cannot_load_raises_its_one_line_error(softmax_ckpt, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in softmax_ckpt.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"these are not safetensors")
    proc = SegmenterProcess(str(broken))
    try:
        with pytest.raises(CheckpointError, match=r"^Could not load the model in ") as info:
            proc.wait()
        assert "\n" not in str(info.value)
        with pytest.raises(CheckpointError):  # and again on every call, not a hang
            proc.predict(np.zeros((1, 32, 32), np.uint16))
    finally:
        proc.close()


def test_a_killed_model_process_is_one_clear_error_then_the_app_serves_again(tiny_model, softmax_ckpt, tmp_path):
    import gradio as gr

    proc = SegmenterProcess(str(softmax_ckpt))
    server.MODEL.configure(str(softmax_ckpt), segmenter=proc)
    image = str(good_slice(tmp_path))
    try:
        assert server.MODEL.get() is proc
        first = slice_tab.segment(image)
        os.kill(proc.pid, signal.SIGKILL)
        assert _gone(proc.pid)
        with pytest.raises(gr.Error) as info:
            slice_tab.segment(image)
        assert info.value.message == ("The model's process stopped unexpectedly (out of memory?); "
                                      "it is reloading, try again in a minute.")
        assert proc.broken
        again = slice_tab.segment(image)  # now from a model loaded in this process
        assert not isinstance(server.MODEL.get(), SegmenterProcess)  # the machine's default engine, in process
        np.testing.assert_array_equal(again[4].organ_masks, first[4].organ_masks)
    finally:
        proc.close()
        server.MODEL.configure(None)


def test_the_model_process_exits_when_the_app_is_killed(softmax_ckpt):
    script = ("import os, signal; from model.engines.process import SegmenterProcess; "
              f"p = SegmenterProcess({str(softmax_ckpt)!r}).wait(); print(p.pid, flush=True); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    child = int(result.stdout.split()[-1])
    assert _gone(child), f"model process {child} outlived the app"


def test_volume_windows_sent_to_the_child_stack_as_the_whole_volume(tmp_path):
    """The window logic of :meth:`SegmenterProcess.segment_slices`, with the child replaced by a local model."""
    from tiny import make_tiny_checkpoint

    local = Segmenter.load(make_tiny_checkpoint(tmp_path / "c", multi_label=True, seed=3, slice_offsets=[-2, 0, 1]))
    proc = SegmenterProcess.__new__(SegmenterProcess)
    proc._batch_size, proc._contract = 2, local.contract  # what wait() reads from the child
    proc.wait = lambda: proc
    sent = []

    def in_child(future, fn, window, start, stop):
        sent.append(len(window))
        return local.segment_slices(window, start, stop)

    proc._result = in_child
    voxels = np.random.default_rng(4).integers(0, 3000, size=(9, 40, 48), dtype=np.uint16)
    masks = np.zeros((3, *voxels.shape), dtype=bool)
    assert list(proc.segment_volume_steps(voxels, masks, chunk_slices=4)) == [4, 8, 9]
    np.testing.assert_array_equal(masks, local.segment_scan(voxels).run().organ_masks)
    assert sent == [5, 7, 3]  # slices 0-4, 2-8 and 6-8: only what the stacks reach


def test_probabilities_match_the_in_process_segmenter(worker, softmax_ckpt):
    rng = np.random.default_rng(1)
    voxels = rng.integers(0, 4000, size=(5, 50, 60), dtype=np.uint16)
    local = load_segmenter(str(softmax_ckpt))  # the engine the child runs: this machine's default
    expected = np.zeros((3, *voxels.shape), dtype=np.float16)
    expected_masks = np.zeros((3, *voxels.shape), dtype=bool)
    list(local.segment_volume_steps(voxels, expected_masks, 2, probabilities=expected))
    probabilities = np.zeros_like(expected)
    masks = np.zeros_like(expected_masks)
    assert list(worker.segment_volume_steps(voxels, masks, 2, probabilities=probabilities)) == [2, 4, 5]
    np.testing.assert_array_equal(masks, expected_masks)
    np.testing.assert_array_equal(probabilities, expected)  # the same float16 values
    assert np.unique(probabilities).size > 1 and abs(float(probabilities.mean()) - 0.25) < 0.01  # softmax of 4 classes
    one = np.zeros((1, 3, 50, 60), dtype=np.float16)
    np.testing.assert_array_equal(worker.predict(voxels[:1], one), expected_masks[:, :1].transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(one[0], expected[:, 0])
