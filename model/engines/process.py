"""The model in its own process, so that loading it overlaps the app's own start-up.

A free CPU Space has 2 vCPUs, and the app's start is bound by Python work that runs on one core:
the page's launch, and the engine's imports and load (torch + transformers, or OpenVINO with a
cached conversion: :func:`model.engines.choose.load_segmenter`). In one process they add up; with the
model loading in a child while the app launches, they overlap (the cold-start rows of
``benchmarks/results/`` measure both).

:class:`SegmenterProcess` is started by ``python app.py``'s ``main``: a ``fork`` of a process that
has not loaded torch, so no OpenMP pool is copied. Once torch is loaded (tests, notebooks) it
spawns a fresh interpreter instead. It is a segmenter on :class:`~model.engines.base.SegmenterBase`
whose ``predict`` and ``segment_slices`` run in the child; the volume verbs (``segment_scan``) are
the base's. Slices and masks cross the process boundary as pickled arrays, small next to a forward
pass; probabilities, when asked for, come back as float16.

This module imports only the standard library (and the base, which imports numpy lazily), never
torch: the app's process stays free of the model's imports. Research demo, not for diagnostic use.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .base import SegmenterBase

#: How often the child checks that the app is still there (it exits when the app is gone).
PARENT_POLL_S = 1.0

# --------------------------------------------------------------------------- in the child

_segmenter = None


def _exit_with_parent(parent: int) -> None:
    """Exit when ``parent`` is gone (killed with SIGTERM/SIGKILL, the app's atexit never runs)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _load(model: str | None, revision: str | None, parent: int) -> dict:
    global _segmenter
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    from .choose import load_segmenter  # the engine loads here, in the child (no torch: cached OpenVINO)

    _segmenter = load_segmenter(model, revision)
    return {"pid": os.getpid(), "batch_size": _segmenter.batch_size, "contract": _segmenter.contract,
            "description": _segmenter.describe()}


def _predict(slices, with_probabilities: bool = False):
    if not with_probabilities:
        return _segmenter.predict(slices)
    import numpy as np

    # float16: half the pickle of float32, and more precision than the review rules need.
    probabilities = np.empty((len(slices), len(_segmenter.contract.organ_channels), *slices.shape[-2:]), np.float16)
    return _segmenter.predict(slices, probabilities), probabilities


def _segment_slices(window, start: int, stop: int, with_probabilities: bool = False):
    if not with_probabilities:
        return _segmenter.segment_slices(window, start, stop)
    import numpy as np

    probabilities = np.empty((len(_segmenter.contract.organ_channels), stop - start, *window.shape[-2:]), np.float16)
    return _segmenter.segment_slices(window, start, stop, probabilities), probabilities


# --------------------------------------------------------------------------- in the app


class ModelProcessError(RuntimeError):
    """The model's process stopped (killed, out of memory). ``str(err)`` is a one-line message."""


def start_method() -> str:
    """``fork`` while this process has not loaded torch (fast, and safe: no OpenMP pool to copy), else ``spawn``.

    Spawn re-imports the caller's ``__main__`` in the child, so under ``python app.py`` it would
    import Gradio and build the page there too; the app forks before it loads torch.
    """
    forkable = "fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules
    return "fork" if forkable else "spawn"


class SegmenterProcess(SegmenterBase):
    """A segmenter loading and running in a child process (there, what :func:`~model.engines.choose.load_segmenter` gives).

    ``SegmenterProcess(model, revision)`` returns at once; the first call that needs the model
    (:meth:`wait`, :meth:`predict`, :meth:`describe`) waits for the load and raises its
    :class:`~model.checkpoint.CheckpointError`, if any. Calls are served one at a time. If the
    child dies, calls raise :class:`ModelProcessError` and :attr:`broken` becomes true.
    """

    def __init__(self, model: str | None = None, revision: str | None = None):
        self.choice = (model, revision)
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context(start_method()))
        self._loaded: Future = self._pool.submit(_load, model, revision, os.getpid())
        self.broken = False

    def _result(self, future: Future | None, fn=None, *args):
        """``future``'s result, or that of ``fn(*args)`` run in the child; a dead child becomes one clear error."""
        try:
            return (future or self._pool.submit(fn, *args)).result()
        except BrokenProcessPool:
            self.broken = True
            raise ModelProcessError("The model's process stopped unexpectedly (out of memory?); "
                                    "it is reloading, try again in a minute.") from None

    def wait(self) -> SegmenterProcess:
        """Block until the model is loaded; raises what loading raised."""
        facts = self._result(self._loaded)
        self.pid, self._batch_size, self._contract = facts["pid"], facts["batch_size"], facts["contract"]
        self._description = facts["description"]
        return self

    @property
    def contract(self):
        """The child's :class:`~model.checkpoint.Contract` (waits for the load)."""
        return self.wait()._contract

    @property
    def batch_size(self) -> int:
        return self.wait()._batch_size

    def predict(self, slices, probabilities=None):
        """:meth:`SegmenterBase.predict <model.engines.base.SegmenterBase.predict>`, run in the child.

        ``probabilities`` are computed in the child and sent back as float16 (then cast to the array's dtype).
        """
        self.wait()
        if probabilities is None:
            return self._result(None, _predict, slices)
        organ_masks, sent = self._result(None, _predict, slices, True)
        probabilities[...] = sent
        return organ_masks

    def segment_slices(self, voxels, start: int, stop: int, probabilities=None):
        """:meth:`SegmenterBase.segment_slices <model.engines.base.SegmenterBase.segment_slices>`, run in the child.

        Only the slices the 2.5D stacks reach cross over: the window is cut at the volume's own
        edges or beyond the farthest offset, so clamping to the window clamps as to the volume.
        ``probabilities`` come back as float16, as in :meth:`predict`.
        """
        self.wait()
        low = max(start + min(*self.slice_offsets, 0), 0)
        high = min(stop + max(*self.slice_offsets, 0), len(voxels))
        if probabilities is None:
            return self._result(None, _segment_slices, voxels[low:high], start - low, stop - low)
        organ_masks, sent = self._result(None, _segment_slices, voxels[low:high], start - low, stop - low, True)
        probabilities[...] = sent
        return organ_masks

    def describe(self) -> str:
        self.wait()
        return f"{self._description}; in its own process"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
