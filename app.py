"""Gradio app: segment the stomach, small and large bowel on abdominal MRI slices.

Research demo, not for diagnostic use. The UI only: decoding, prediction and measurements
live in :mod:`model`. Importing this module builds ``demo`` but downloads nothing and starts
no server; ``python app.py [--model ID_OR_DIR] [--revision REV]`` loads the model and launches.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np

from model import labels
from model.checkpoint import CheckpointError, env_model
from model.image import ImageError, normalize_intensity, read_slice, resolve_pixel_spacing
from model.inference import Segmenter
from model.overlay import annotations, organ_areas, save_mask_png
from model.samples import find_samples

log = logging.getLogger("uwmgi.app")

NOTICE = "**Research demo, not for diagnostic use.** Predictions can be wrong; do not use them for patient care."
TITLE = "GI tract segmentation on abdominal MRI"
BLOG = "https://learnopencv.com/medical-image-segmentation/"
ORGAN_CHOICES = [labels.DISPLAY_NAMES[o] for o in labels.ORGANS]
COLOR_MAP = {labels.DISPLAY_NAMES[o]: labels.COLOURS[o] for o in labels.ORGANS}
TABLE_HEADERS = ["Organ", "Present", "Pixels", "Area (cm²)"]

#: Uploads and outputs are deleted by Gradio every hour once older than an hour.
CACHE_SECONDS = 3600
#: One model call at a time (it already uses both vCPUs); at most this many requests wait.
CONCURRENCY_LIMIT = 1
MAX_QUEUE_SIZE = 16

# --------------------------------------------------------------------------- model, loaded once

_model_choice: tuple[str | None, str | None] = env_model()
_segmenter: Segmenter | None = None
_segmenter_lock = threading.Lock()


def configure(model: str | None, revision: str | None = None) -> None:
    """Choose the checkpoint (``None``: ``MODEL``/``MODEL_REVISION``, else the blog's). Resets a loaded one."""
    global _model_choice, _segmenter
    env = env_model()
    _model_choice = (model or env[0], revision or env[1])
    _segmenter = None


def get_segmenter() -> Segmenter:
    """The process's one :class:`Segmenter`, loaded on first use."""
    global _segmenter
    with _segmenter_lock:
        if _segmenter is None:
            _segmenter = Segmenter.load(*_model_choice)
        return _segmenter


# --------------------------------------------------------------------------- output files

_SCRATCH = Path(tempfile.gettempdir()) / "uwmgi-outputs"


def _scratch_dir() -> Path:
    """A fresh folder for one request's downloads; folders past the cache age are removed.

    Gradio copies returned files into its own cache (deleted by ``delete_cache``); our copies
    must not outlive that policy either.
    """
    _SCRATCH.mkdir(exist_ok=True)
    cutoff = time.time() - CACHE_SECONDS
    for old in _SCRATCH.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    folder = _SCRATCH / uuid.uuid4().hex
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- handlers


def _user_error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def _visible(organ_names) -> list[str]:
    shown = set(organ_names or [])
    return [o for o in labels.ORGANS if labels.DISPLAY_NAMES[o] in shown]


def segment(image_file, pixel_spacing_mm=None, opacity=0.5, organs=ORGAN_CHOICES):
    """Segment one uploaded slice.

    Returns the AnnotatedImage value, the measurement table, the mask PNG (one bit per organ:
    stomach 1, small bowel 2, large bowel 4), a note on the pixel spacing, and the state the
    opacity and organ controls re-render from.
    """
    if not image_file:
        raise _user_error("No image: upload an MRI slice (PNG, JPEG, TIFF or BMP) first.")
    path = Path(image_file if isinstance(image_file, str) else image_file.get("path", ""))
    try:
        raw = read_slice(path)
    except ImageError as err:
        raise _user_error(str(err)) from None
    spacing, source = resolve_pixel_spacing(path, pixel_spacing_mm)
    try:
        organ_masks = get_segmenter().predict(raw[None])[0]
    except CheckpointError as err:
        raise _user_error(f"The model is not available: {err}") from None
    except Exception as err:  # noqa: BLE001 - keep serving; never log image content
        log.error("prediction failed: %s", type(err).__name__)
        raise _user_error("The model failed on this image; try another slice.") from None
    display = normalize_intensity(raw)
    rows = [[labels.DISPLAY_NAMES[a.organ], "yes" if a.present else "no", a.pixels, round(a.area_cm2, 2)]
            for a in organ_areas(organ_masks, spacing)]
    mask_path = save_mask_png(organ_masks, _scratch_dir() / f"{path.stem}_masks.png")
    note = (f"Pixel spacing {spacing[0]:g} × {spacing[1]:g} mm ({source})"
            + ("; enter the scan's spacing for correct areas." if source == "assumed" else "."))
    state = {"slice": display, "masks": organ_masks}
    return (display, annotations(organ_masks, opacity, _visible(organs))), rows, str(mask_path), note, state


def preview_slice(image_file):
    """The uploaded slice as the model sees it (full 16-bit range stretched), or nothing."""
    if not image_file:
        return None
    try:
        return normalize_intensity(read_slice(image_file))
    except ImageError as err:
        gr.Warning(str(err))
        return None


def render(state, opacity=0.5, organs=ORGAN_CHOICES):
    """Re-draw the overlay from a previous result, without running the model."""
    if not state:
        return None
    return state["slice"], annotations(state["masks"], opacity, _visible(organs))


def about() -> str:
    """Which checkpoint is loaded, and where it runs."""
    try:
        return f"**Model:** {get_segmenter().describe()}"
    except CheckpointError as err:
        return f"**Model not loaded:** {err}"


# --------------------------------------------------------------------------- UI


def build_demo(samples: list[Path] | None = None, samples_note: str = "") -> gr.Blocks:
    with gr.Blocks(title=TITLE, delete_cache=(CACHE_SECONDS, CACHE_SECONDS)) as demo:
        gr.Markdown(f"# {TITLE}\nStomach, small bowel and large bowel on UW-Madison GI tract MRI, "
                    f"with a SegFormer fine-tuned as in [this blog post]({BLOG}).\n\n{NOTICE}")
        with gr.Tab("Slice"):
            with gr.Row():
                with gr.Column():
                    image_file = gr.File(label="MRI slice (PNG 8/16-bit, JPEG, TIFF, BMP)", type="filepath")
                    preview = gr.Image(label="Preview (intensity-stretched)", interactive=False, height=260)
                    spacing = gr.Number(label="Pixel spacing (mm)", value=0, minimum=0,
                                        info="0: read from a Kaggle name slice_NNNN_W_H_PW_PH.png, else 1.5 mm assumed.")
                    run = gr.Button("Segment", variant="primary")
                    if samples:
                        gr.Examples(examples=[[str(p)] for p in samples], inputs=[image_file],
                                    label="Sample slices", examples_per_page=12)
                    gr.Markdown(samples_note)
                with gr.Column():
                    # PNG, not Gradio's default WebP: lossless for a scan, and cheaper to encode
                    # (266² slice: ~15 ms against ~60 ms under load on a 2-vCPU machine).
                    overlay = gr.AnnotatedImage(label="Organs", color_map=COLOR_MAP, show_legend=True, format="png")
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                    organs = gr.CheckboxGroup(ORGAN_CHOICES, value=ORGAN_CHOICES, label="Show organs")
                    spacing_note = gr.Markdown()
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Measurements", interactive=False)
                    mask_file = gr.File(label="Masks PNG (bits: stomach 1, small bowel 2, large bowel 4)")
            result = gr.State()
        with gr.Accordion("About", open=False):
            about_md = gr.Markdown("Model loads with the first request.")
            gr.Markdown(f"{NOTICE}\n\nUploads and results are deleted within {2 * CACHE_SECONDS // 3600} hours "
                        "and never logged. Data: UW-Madison GI Tract Image Segmentation (Kaggle 2022).")

        image_file.change(preview_slice, image_file, preview, api_visibility="private", show_progress="hidden")
        run.click(segment, [image_file, spacing, opacity, organs],
                  [overlay, table, mask_file, spacing_note, result], api_name="segment")
        for control in (opacity, organs):
            control.change(render, [result, opacity, organs], overlay, api_visibility="private",
                           queue=False, show_progress="hidden")
        demo.load(about, None, about_md, api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=MAX_QUEUE_SIZE)
    return demo


demo = build_demo(*find_samples(fetch=False, limit=24))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the GI tract segmentation app (research demo).")
    parser.add_argument("--model", help="Hub model repo id or local contract checkpoint dir (env MODEL); "
                                        "default: the blog's checkpoint, converted once")
    parser.add_argument("--revision", help="Hub revision to pin (env MODEL_REVISION)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure(args.model, args.revision)
    try:
        segmenter = get_segmenter()
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("model: %s", segmenter.describe())
    app = build_demo(*find_samples(fetch=True, limit=24))
    # Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when set.
    app.launch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
