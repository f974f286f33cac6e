"""What a long-running server needs around the model: one model per process, and output folders that expire.

No Gradio here: the app passes Gradio's cache folder in, so this runs and tests without it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .checkpoint import CheckpointError, model_choice
from .engines.process import SegmenterProcess

log = logging.getLogger("uwmgi.serving")


def configure_logging() -> None:
    """The server's logging: INFO lines to stderr, and none of pydicom's or highdicom's own.

    pydicom logs each failed decoder with a traceback (and may quote element values); the scan
    reader answers in one line instead. Not the level: pydicom resets it when first imported.
    highdicom logs, at INFO, the SOP Instance UID of every uploaded image a DICOM SEG copies its
    patient, study and image attributes from: an identifier of the upload, which the README says
    is never logged.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("pydicom", "highdicom"):
        logging.getLogger(name).propagate = False


#: glibc's ``mallopt`` parameter (``<malloc.h>``).
_M_MMAP_THRESHOLD = -3


def bound_native_heap(mmap_threshold_bytes: int = 1 << 20) -> bool:
    """Keep a long-running server's C heap from ratcheting up under mixed load (issue #26); call it where
    the process starts. False where the C library is not glibc (nothing to do).

    Once a large buffer is freed, glibc raises its mmap threshold to that buffer's size (up to 32 MiB),
    so later scan-sized numpy buffers come from the heap arenas, which keep the memory after they are
    freed. A fixed threshold ends that: buffers of ``mmap_threshold_bytes``
    or more are always mapped, and given back when freed. Measured: docs/gradio_cache_race.md.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes))


def trim_native_heap_forever(stop: threading.Event, every_s: float = 5.0) -> None:
    """Give the C heap's free pages back to the system every ``every_s`` seconds until ``stop`` is set (a
    daemon thread's target); nothing where the C library is not glibc.

    With :func:`bound_native_heap` the large buffers go back when freed, but freed smaller ones leave
    free pages scattered inside glibc's per-thread arenas, which it keeps: the server still crept up by
    a few MiB a round (docs/gradio_cache_race.md). ``malloc_trim(0)`` returns every whole free page.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    trim = ctypes.CDLL(None).malloc_trim
    while not stop.wait(every_s):
        trim(0)


def publish_file(data: bytes, path: Path) -> Path:
    """Write ``data`` to ``path`` atomically: staged under a unique name beside it, then renamed into place.

    A response already streaming the old ``path`` keeps reading the old file to its end; a new one
    opens the whole new file. Never a truncated or empty one, as ``Path.write_bytes`` leaves while it
    writes (issue #26: docs/gradio_cache_race.md).
    """
    path = Path(path)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as staged:
            staged.write(data)
        # mkstemp's 0600 stays: the server's user alone reads what was made from an upload, as Gradio's uploads
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def upload_paths(files) -> list[str]:
    """A Gradio file input's value (a path, a ``{"path": ...}`` dict, a list of either, or nothing) as paths."""
    files = files if isinstance(files, (list, tuple)) else [files] if files else []
    return [f if isinstance(f, str) else f.get("path", "") for f in files]


#: The click refiner the app uses unless told otherwise: the own-click recipe's fold that held out the volume
#: never used for tuning (its provenance.json; measured in docs/correct.md, "The app's click refiner").
SHIPPED_CLICK_REFINER = str(Path(__file__).resolve().parent / "weights" / "click_refiner")
#: ``--click-refiner none`` / ``CLICK_REFINER=none``: the training-free corrector.
NO_REFINER = "none"


class ModelHolder:
    """The process's one model: a configured model process, else loaded in this process on first use.

    A model process that died is replaced by a model loaded in this process.
    """

    def __init__(self) -> None:
        self.choice: tuple[str | None, str | None] = model_choice()
        self.segmenter = None
        self._lock = threading.Lock()
        self._refiner_choice: str | Path | None = None
        self._refiner = None

    def configure(self, model: str | None, revision: str | None = None,
                  segmenter: SegmenterProcess | None = None) -> None:
        """Choose the checkpoint (``None``: ``MODEL``/``MODEL_REVISION``, else the blog's); resets a loaded one.

        ``segmenter``: that checkpoint already loading in its own process (``python app.py``'s).
        """
        self.choice = model_choice(model, revision)
        self.segmenter = segmenter

    def get(self):
        """The loaded segmenter (:func:`model.engines.choose.load_segmenter`) or ready :class:`~model.engines.process.SegmenterProcess`."""
        with self._lock:
            if isinstance(self.segmenter, SegmenterProcess) and self.segmenter.broken:
                log.warning("the model process stopped; loading the model in the app's process")
                self.segmenter.close()
                self.segmenter = None
            if self.segmenter is None:
                from .engines.choose import load_segmenter  # the engine (torch or OpenVINO) loads here, on first use

                self.segmenter = load_segmenter(*self.choice)
            return self.segmenter.wait() if isinstance(self.segmenter, SegmenterProcess) else self.segmenter

    def configure_click_refiner(self, folder: str | Path | None) -> None:
        """Choose the click corrector: a folder holding a click refiner (:mod:`model.engines.click_refiner`,
        trained by ``python -m train.clicks``), :data:`NO_REFINER` for the training-free corrector of
        :func:`model.interactive.click`, or ``None`` for ``CLICK_REFINER`` when set, else the refiner this
        package ships (:data:`SHIPPED_CLICK_REFINER`; ``docs/correct.md`` measures both correctors)."""
        with self._lock:
            self._refiner_choice, self._refiner = folder, None

    def click_refiner(self):
        """The click refiner the page's clicks use, loaded once, or ``None`` (the training-free corrector).
        Raises :class:`~model.checkpoint.CheckpointError` when the chosen folder holds no refiner."""
        with self._lock:
            if self._refiner is None:
                from .engines import click_refiner

                choice = str(self._refiner_choice or os.environ.get("CLICK_REFINER", "")).strip() or SHIPPED_CLICK_REFINER
                if choice.lower() == NO_REFINER:
                    self._refiner = False
                elif not click_refiner.available(Path(choice)):
                    raise CheckpointError(f"{choice} holds no click refiner ({click_refiner.WEIGHTS} and "
                                          f"{click_refiner.CONFIG}); train one with python -m train.clicks, "
                                          f"or pass --click-refiner {NO_REFINER} for the training-free corrector")
                else:
                    self._refiner = click_refiner.load(Path(choice))
            return self._refiner or None

    def about(self) -> str:
        """Markdown: which checkpoint is loaded and where it runs, or why it is not loaded."""
        try:
            return f"**Model:** {self.get().describe()}"
        except CheckpointError as err:
            return f"**Model not loaded:** {err}"


class Scratch:
    """Per-request output folders under ``root``, removed once older than ``max_age_s`` seconds.

    The server returns files from these folders and Gradio copies them into its own cache, which
    its ``delete_cache`` empties on the same age; our copies must not outlive that policy either.
    Each new folder sweeps the old ones, and :meth:`sweep_forever` sweeps when no request comes.
    Gradio's cache folder is passed in (``gradio_cache``): what Gradio does not track there (some
    outputs, an earlier or killed run's files, the empty strays of file uploads) is swept on the same
    age, except the files ``keep()`` names (the example slices Gradio copied there at start).
    :meth:`close` removes this process's folders at once (a clean shutdown). ``own_cache``: Gradio's
    cache when it is this process's alone (:func:`own_gradio_cache`): :meth:`close` removes all of it,
    and a sweep removes the caches of this app's processes that have ended.
    """

    def __init__(self, root: Path, max_age_s: float, keep: Callable[[], set[str]] = set,
                 own_cache: Path | None = None):
        self.root, self.max_age_s, self.keep, self.own_cache = Path(root), max_age_s, keep, own_cache
        self._mine: set[Path] = set()
        self._swept = 0.0  # time.monotonic() of the last sweep

    def new_dir(self, gradio_cache: Path) -> Path:
        """A fresh folder for one request's downloads, after a sweep (at most one a minute: a sweep walks
        Gradio's whole cache)."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        if time.monotonic() - self._swept >= min(60.0, self.max_age_s):
            self.sweep(gradio_cache)
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(mode=0o700)
        self._mine.add(folder)
        return folder

    def sweep(self, gradio_cache: Path) -> None:
        """Remove our request folders, and what sits untracked in Gradio's cache, older than ``max_age_s``."""
        self._swept = time.monotonic()
        cutoff = time.time() - self.max_age_s
        for old in self.root.iterdir() if self.root.is_dir() else ():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
                    self._mine.discard(old)
            except OSError:  # another process swept it first, or it is not ours to read
                continue
        _sweep_gradio_cache(Path(gradio_cache), cutoff, {str(Path(p).resolve()) for p in self.keep()})
        if self.own_cache is not None:
            for cache in self.own_cache.parent.glob(f"{OWN_CACHE_PREFIX}*"):
                pid = cache.name[len(OWN_CACHE_PREFIX):]
                if cache != self.own_cache and pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(cache, ignore_errors=True)

    def sweep_forever(self, gradio_cache: Path, stop: threading.Event) -> None:
        """Sweep now (an earlier run's leftovers), then every ``max_age_s`` until ``stop`` is set (a daemon
        thread's target)."""
        while True:
            try:
                self.sweep(gradio_cache)
            except Exception as err:  # noqa: BLE001 - the sweeper must outlive one bad sweep
                log.error("sweeping old files failed: %s", type(err).__name__)
            if stop.wait(self.max_age_s):
                return

    def close(self) -> None:
        """At shutdown: remove every folder this process made (other processes' folders are theirs), and
        Gradio's cache when it is this process's own."""
        for folder in list(self._mine):
            shutil.rmtree(folder, ignore_errors=True)
            self._mine.discard(folder)
        if self.own_cache is not None:
            shutil.rmtree(self.own_cache, ignore_errors=True)


#: The name of a Gradio cache that one process of this app owns, before its process id.
OWN_CACHE_PREFIX = "uwmgi-gradio-"


def own_gradio_cache() -> Path:
    """Where this process's Gradio cache goes when the operator names none (``GRADIO_TEMP_DIR``): its own
    folder, so that a clean shutdown can remove all of it and no other app's files."""
    return Path(tempfile.gettempdir()) / f"{OWN_CACHE_PREFIX}{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _sweep_gradio_cache(cache: Path, cutoff: float, keep: set[str] = frozenset()) -> None:
    """Remove the entries of Gradio's cache (an upload's hashed folder, a stray file) with nothing newer than
    ``cutoff`` in them and no file of ``keep`` (resolved paths).

    Gradio's ``delete_cache`` removes the files it tracks in this run and forgets them when the server stops,
    so a restart would keep the last run's files for good; it never tracks some outputs (the Scan tab's
    downloads, the overlay images) nor the empty ``NamedTemporaryFile(delete=False)`` that Gradio 6.31 leaves
    per ``gr.File(type="filepath")`` upload (components/file.py). Ages are ctimes, as Gradio's own: a copy
    keeps its source's mtime.
    """
    for entry in cache.iterdir() if cache.is_dir() else ():
        try:
            inside = [entry, *(entry.rglob("*") if entry.is_dir() and not entry.is_symlink() else ())]
            if max(p.lstat().st_ctime for p in inside) >= cutoff or any(str(p.resolve()) in keep for p in inside):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
        except OSError:  # gone already, or not this server's to remove
            continue
