"""What every tab's handlers share: the process's model, request folders, upload paths, the one error mapping.

Also ``python app.py``'s arguments (:func:`parse_app_args`) and the fix of Gradio's image cache
(:func:`publish_images_atomically`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import tempfile
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from gradio.utils import get_upload_folder

from model.checkpoint import CheckpointError
from model.image import ImageError
from model.serving import ModelHolder, Scratch, publish_file
from model.engines.process import ModelProcessError

from .editor import EditError

log = logging.getLogger("uwmgi.app")

#: Uploads and outputs are deleted by Gradio every hour once older than an hour.
CACHE_SECONDS = 3600

#: The process's one model, and the request output folders (deleted on Gradio's cache age).
MODEL = ModelHolder()
SCRATCH = Scratch(Path(tempfile.gettempdir()) / "uwmgi-outputs", CACHE_SECONDS)


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio 6.31's ``processing_utils.save_pil_to_cache``, but the file is published atomically.

    Gradio names an image it encodes (AnnotatedImage bases and masks, ``gr.Image``, editor layers) by
    the hash of its bytes and writes it with ``Path.write_bytes``: an identical output of a second
    request (two visitors, one sample) truncates the file a first response is streaming, and that
    download ends short or empty (issue #26; docs/gradio_cache_race.md). Same path, same bytes.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    return str(publish_file(data, (folder / f"{name}.{format}").resolve()))


def publish_images_atomically() -> None:
    """Install :func:`save_pil_to_cache` in Gradio, where the process starts (``app.main``); Gradio's
    own callers (``save_img_array_to_cache``, the components) look the function up at each call."""
    processing_utils.save_pil_to_cache = save_pil_to_cache


def parse_app_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``python app.py``'s options: ``--model``, ``--revision`` and ``--click-refiner`` (each falls back to its env
    variable)."""
    parser = argparse.ArgumentParser(description="Run the GI tract segmentation app (research demo).")
    parser.add_argument("--model", help="Hub model repo id or local contract checkpoint dir (env MODEL); "
                                        "default: the blog's checkpoint, converted once")
    parser.add_argument("--revision", help="Hub revision to pin (env MODEL_REVISION)")
    parser.add_argument("--click-refiner", help="folder of a learned click corrector, trained by python -m train.clicks, "
                                                "or 'none' for the training-free corrector (env CLICK_REFINER); "
                                                "default: the refiner in model/weights/click_refiner")
    return parser.parse_args(argv)


def upload_paths(files) -> list[str]:
    """A Gradio file input's value (a path, a ``{"path": ...}`` dict, a list of either, or nothing) as paths."""
    files = files if isinstance(files, (list, tuple)) else [files] if files else []
    return [f if isinstance(f, str) else f.get("path", "") for f in files]


def scratch_dir() -> Path:
    """A fresh folder for one request's downloads (:meth:`model.serving.Scratch.new_dir`)."""
    return SCRATCH.new_dir(Path(get_upload_folder()))


def user_error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


class Refusal(gr.Error):
    """An edit refused (nothing to undo, no clicks to apply, a fill without two corrected slices, …): one line a
    person can act on, and nothing changed. A ``gr.Error``, so a caller of the handler sees it fail; the page
    shows it as a warning instead (:func:`warn_refusals`)."""


def refused(message: str) -> Refusal:
    return Refusal(message, print_exception=False)


def warn_refusals(handler):
    """``handler`` for the page's edit events: its :class:`Refusal` becomes a one-line warning and the event
    changes no output. Raised, Gradio would mark every output of the event as failed: a red "Error" over the
    overlay, the tables, the downloads and the click image (whose click events then went nowhere) until
    the next edit, for a press that only had nothing to do."""

    @functools.wraps(handler)
    def refusing_in_a_warning(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Refusal as refusal:
            gr.Warning(refusal.message)
            return gr.skip()  # one skip: Gradio leaves every output as it is

    return refusing_in_a_warning


@contextlib.contextmanager
def user_errors(step: str, failure: str):
    """The handlers' one error mapping: whatever goes wrong in ``step`` becomes one line for the user.

    Our domain errors (``ImageError`` and its ``ScanError`` and ``EditError``, ``CheckpointError``,
    ``ModelProcessError``) carry their own message (an ``EditError`` as a :class:`Refusal`); anything else is
    logged by type only, never with content, and the user reads ``failure``. The server keeps serving either way."""
    try:
        yield
    except gr.Error:
        raise
    except CheckpointError as err:
        raise user_error(f"The model is not available: {err}") from None
    except EditError as err:
        raise refused(str(err)) from None
    except (ImageError, ModelProcessError) as err:
        raise user_error(str(err)) from None
    except Exception as err:  # noqa: BLE001 - keep serving; never log image content
        log.error("%s failed: %s", step, type(err).__name__)
        raise user_error(failure) from None
