"""Gradio app: segment the stomach, small and large bowel on abdominal MRI slices.

Research demo, not for diagnostic use. Three tabs of UI, their handlers and the entry point; every
mechanism behind them lives in :mod:`model`. Importing this module builds ``demo`` but downloads
nothing, starts no server and loads no torch. ``python app.py [--model ID_OR_DIR] [--revision REV]``
starts the model in its own process (:func:`model.worker.preload`) before it imports Gradio.
"""

from __future__ import annotations

from model import worker

# The one statement before the imports (ruff's E402 is off for this file alone, in pyproject.toml):
# under `python app.py` the model's process starts here, so its imports (torch, transformers) run
# while this process imports Gradio; on a 2-vCPU Space the two then overlap instead of adding up
# (cold start: benchmarks/results/). Imported (tests, notebooks), this does nothing.
MODEL_PROCESS = worker.preload(__name__)

import contextlib
import logging
import sys
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np
from gradio import processing_utils
from gradio.utils import get_upload_folder

from model import days_view, labels
from model.checkpoint import CheckpointError, model_choice
from model.compare import CONFUSION_COLOURS, compare, confusion_annotations, load_ground_truth
from model.image import ImageError, normalize_intensity, read_slice, resolve_pixel_spacing, spacing_note
from model.edits import BRUSH_COLOURS, BRUSH_PX, ScanEdits, edit_slice_state, editor_value, slice_state
from model.measure import area_plot_table, area_rows, busiest_slice, volume_rows
from model.outputs import ScanJob, SegmentedScan
from model.overlay import annotations, save_mask_png, uncertainty_map
from model.samples import find_samples
from model.scans import Scan, load_scan
from model.serving import (ModelHolder, Scratch, bound_native_heap, configure_logging, parse_app_args, publish_file,
                           trim_native_heap_forever, upload_paths)
from model.worker import ModelProcessError

log = logging.getLogger("uwmgi.app")

NOTICE = "**Research demo, not for diagnostic use.** Predictions can be wrong; do not use them for patient care."
TITLE = "GI tract segmentation on abdominal MRI"
BLOG = "https://learnopencv.com/medical-image-segmentation/"
ORGAN_CHOICES = [labels.DISPLAY_NAMES[o] for o in labels.ORGANS]
COLOR_MAP = {labels.DISPLAY_NAMES[o]: labels.COLOURS[o] for o in labels.ORGANS}
TABLE_HEADERS = ["Organ", "Present", "Pixels", "Area (cm²)"]
SCAN_TABLE_HEADERS = ["Organ", "Volume (ml)", "Slices", "Largest cross-section (cm²)", "At slice"]
COMPARISON_HEADERS = ["Organ", "Dice", "Hausdorff (HD)", "Score 0.4·Dice + 0.6·(1−HD)"]

#: Uploads and outputs are deleted by Gradio every hour once older than an hour.
CACHE_SECONDS = 3600
#: One model call at a time, slices and scans alike (one call already uses both vCPUs of a
#: free Space); at most this many requests wait.
CONCURRENCY_LIMIT = 1
MAX_QUEUE_SIZE = 16
#: Largest upload Gradio accepts. A 4096² float32 TIFF (our pixel cap) is 64 MiB; real slices are < 1 MiB.
MAX_FILE_SIZE = "100mb"

#: The process's one model, and the request output folders (deleted on Gradio's cache age).
MODEL = ModelHolder()
SCRATCH = Scratch(Path(tempfile.gettempdir()) / "uwmgi-outputs", CACHE_SECONDS)
configure, get_segmenter, about = MODEL.configure, MODEL.get, MODEL.about  # the handlers' and tests' names


def _scratch_dir() -> Path:
    return SCRATCH.new_dir(Path(get_upload_folder()))


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


# --------------------------------------------------------------------------- handlers


def _user_error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def _user_errors(step: str, failure: str):
    """The handlers' one error mapping: whatever goes wrong in ``step`` becomes one line for the user.

    Our domain errors (``ImageError`` and its ``ScanError`` and ``EditError``, ``CheckpointError``,
    ``ModelProcessError``) carry their own message; anything else is logged by type only, never with
    content, and the user reads ``failure``. The server keeps serving either way."""
    try:
        yield
    except gr.Error:
        raise
    except CheckpointError as err:
        raise _user_error(f"The model is not available: {err}") from None
    except (ImageError, ModelProcessError) as err:
        raise _user_error(str(err)) from None
    except Exception as err:  # noqa: BLE001 - keep serving; never log image content
        log.error("%s failed: %s", step, type(err).__name__)
        raise _user_error(failure) from None


#: The slice tab's confidence overlay: its legend name and colour.
UNCERTAINTY_LABEL = "Uncertain (1 − |2p − 1|)"
SLICE_COLOR_MAP = {**COLOR_MAP, UNCERTAINTY_LABEL: "#ffff00"}


def segment(image_file, pixel_spacing_mm=None, opacity=0.5, organs=ORGAN_CHOICES, show_confidence=False):
    """Segment one uploaded slice: the AnnotatedImage value, the measurements, the mask PNG (one bit per
    organ: stomach 1, small bowel 2, large bowel 4), a note on the pixel spacing, and the state the
    opacity, organ and confidence controls (and the editor) re-render from."""
    if not image_file:
        raise _user_error("No image: upload an MRI slice (PNG, JPEG, TIFF or BMP) first.")
    path = Path(image_file)
    with _user_errors("prediction", "The model failed on this image; try another slice."):
        raw = read_slice(path)
        spacing, source = resolve_pixel_spacing(path, pixel_spacing_mm)
        probabilities = np.zeros((1, len(labels.ORGANS), *raw.shape[-2:]), dtype=np.float16)
        organ_masks = get_segmenter().predict(raw[None], probabilities)[0]
    mask_path = save_mask_png(organ_masks, _scratch_dir() / f"{path.stem}_masks.png")
    state = slice_state(normalize_intensity(raw), organ_masks, uncertainty_map(probabilities[0]), spacing, path.stem)
    return (render(state, opacity, organs, show_confidence), area_rows(organ_masks, spacing), str(mask_path),
            spacing_note(spacing, source), state)


def preview_slice(image_file):
    """The uploaded slice as the model sees it (full 16-bit range stretched), or nothing."""
    if not image_file:
        return None
    try:
        return normalize_intensity(read_slice(image_file))
    except ImageError as err:
        gr.Warning(str(err))
        return None


def open_slice_editor(state):
    """The segmented slice in the editor with its masks, and the editor's state (this slice's token)."""
    if not state:
        raise _user_error("No slice: segment a slice first, then edit it.")
    return editor_value(state["slice"], state["masks"]), {"token": state["token"]}


def apply_slice_edit(state, editor_state, value, opacity=0.5, organs=ORGAN_CHOICES, show_confidence=False):
    """The editor's layers as the slice's masks: the overlay, measurements, mask PNG and state again."""
    with _user_errors("applying an edit", "The edit could not be applied; open the slice in the editor again."):
        state = edit_slice_state(state, editor_state, (value or {}).get("layers"))
    mask_path = save_mask_png(state["masks"], _scratch_dir() / f"{state['name']}_masks.png")
    return (render(state, opacity, organs, show_confidence), area_rows(state["masks"], state["spacing"]),
            str(mask_path), state)


def render(state, opacity=0.5, organs=ORGAN_CHOICES, show_confidence=False):
    """Re-draw the overlay from a previous result, without running the model; ``show_confidence`` adds the
    model's uncertainty (:func:`model.overlay.uncertainty_map`) as a yellow layer, strength uncertainty × opacity."""
    if not state:
        return None
    layers = annotations(state["masks"], opacity, labels.organs_named(organs))
    if show_confidence and state.get("uncertainty") is not None:
        layers.append((state["uncertainty"] * float(np.clip(opacity, 0.0, 1.0)), UNCERTAINTY_LABEL))
    return state["slice"], layers


# --------------------------------------------------------------------------- scan handlers


#: The Scan tab's review table; "Slice" is the slider's position (1..S), so a click can jump there.
REVIEW_HEADERS = ["Slice", "Organ", "Score", "Reason"]


def segment_scan_files(scan_files, slice_thickness_mm=None, truth_files=None, opacity=0.5,
                       organs=ORGAN_CHOICES, bowel_bag=False, margin_mm=0, progress=gr.Progress()):
    """Segment a whole scan (a generator, so a cancelled request stops at the next chunk); yields status
    lines, then :func:`scan_view`'s outputs: a note, the slider, the organ and TP/FP/FN overlays, the
    measurements (organs, then the planning structures that ``bowel_bag`` and ``margin_mm`` > 0 ask for),
    the area plot, the surfaces, the downloads (a DICOM series adds SEG and RTSTRUCT), the comparison, the
    state and the review table."""
    paths = upload_paths(scan_files)
    if not paths:
        raise _user_error("No scan: upload slice files, a .zip, a NIfTI file or DICOM files first.")
    margin_mm = float(margin_mm or 0)
    if not 0 <= margin_mm < float("inf"):
        raise _user_error("The margin must be a number of mm, 0 or more (0: no margin).")
    progress(0, desc="Reading the scan")
    with _user_errors("reading a scan", "These files could not be read as a scan; export them again or try another format."):
        scan = load_scan(paths, slice_thickness_mm or None)
        truth, truth_notes = load_ground_truth(upload_paths(truth_files), scan) if truth_files else (None, [])
        job = ScanJob(get_segmenter(), scan)
    with _user_errors("scan prediction", "The model failed on this scan; try another."):
        for done in job.steps():
            progress((done, len(scan)), desc="Segmenting", unit="slices")
            yield (f"Segmenting {scan.describe()}: {done}/{len(scan)} slices…", *(gr.skip(),) * 10)
    progress(1.0, desc="Writing files")
    result = job.finish(_scratch_dir(), bowel_bag=bool(bowel_bag), margin_mm=margin_mm)
    yield scan_view(result, ScanEdits.of(result, bool(bowel_bag), margin_mm), truth, truth_notes, opacity, organs)


def scan_view(result: SegmentedScan, edits: ScanEdits, truth, truth_notes: list[str], opacity=0.5,
              organs=ORGAN_CHOICES, position: int | None = None) -> tuple:
    """The Scan tab's outputs (see :func:`segment_scan_files`) at slider ``position`` (default: the busiest slice)."""
    scan, organ_masks, outputs = result.scan, result.organ_masks, result.outputs
    review = edits.review_rows()
    state = {"scan": scan, "masks": organ_masks, "truth": truth, "edits": edits}
    index = busiest_slice(organ_masks) if position is None else int(position) - 1
    flags = len(outputs.flags)
    notes = [*result.notes(), *truth_notes, f"{flags} review flag{'s' if flags != 1 else ''}: the slices most likely "
             "wrong, worst first (at most 15 % of the scan)" + ("; click one to go to its slice." if review else "."),
             *edits.notes()]
    # Gradio refuses a slider whose minimum is its maximum, so a one-slice scan gets a fixed 1–2 one.
    slider = gr.Slider(minimum=1, maximum=max(len(scan), 2), value=index + 1, step=1, interactive=len(scan) > 1,
                       label=f"Slice (1–{len(scan)}; starts at the most organ area)" if len(scan) > 1
                       else "Slice (the scan has one)")
    return ("\n".join(f"- {n}" for n in notes), slider, *render_scan(state, index + 1, opacity, organs),
            volume_rows(result.volumes, list(outputs.structures), scan), area_plot_table(organ_masks, scan),
            str(outputs.mesh) if outputs.mesh else None, [str(f) for f in outputs.files()],
            compare(organ_masks, truth).rows() if truth is not None else [], state, review)


def jump_to_flag(evt: gr.SelectData):
    """The slider position of the clicked review row (its "Slice" column)."""
    return int(evt.row_value[0]) if evt.row_value else gr.skip()


def open_scan_editor(state, position=1, editor_state=None):
    """Slice ``position`` (1-based) in the editor with its current masks, and the editor's state; with
    ``editor_state`` (Reset), the editor's own slice again as the model predicted it (:mod:`model.edits`)."""
    with _user_errors("opening the editor", "The slice could not be opened in the editor."):
        edits = ScanEdits.of_state(state)
        return edits.editor(int(position or 1) - 1) if editor_state is None else edits.reset_editor(editor_state)


def apply_scan_edit(state, editor_state, value, opacity=0.5, organs=ORGAN_CHOICES):
    """Write the editor's layers into their slice and recompute every output (:meth:`ScanEdits.apply`)."""
    with _user_errors("applying an edit", "The edit could not be applied; open the slice in the editor again."):
        done = ScanEdits.of_state(state).apply(editor_state, (value or {}).get("layers"), _scratch_dir())
    if done is None:
        gr.Info("Nothing changed on this slice.")
        return (gr.skip(),) * 11
    return scan_view(done[1], done[0], state.get("truth"), [], opacity, organs, editor_state["slice_index"] + 1)


def render_scan(state, position=1, opacity=0.5, organs=ORGAN_CHOICES):
    """Overlays of slice ``position`` (1-based): organs, and TP/FP/FN when there is ground truth."""
    if not state:
        return None, None
    scan: Scan = state["scan"]
    index = int(np.clip(int(position or 1) - 1, 0, len(scan) - 1))
    display = scan.display_slice(index)
    masks = state["masks"][:, index]
    overlay = (display, annotations(masks, opacity, labels.organs_named(organs)))
    truth = state.get("truth")
    versus = (display, confusion_annotations(masks, truth[:, index], opacity, labels.organs_named(organs))) \
        if truth is not None else None
    return overlay, versus


def compare_days_files(files_a, files_b):
    """The Compare days tab: note, table, picture and downloads (:func:`model.days_view.compare_uploads`)."""
    with _user_errors("comparing days", "These two scans could not be compared; try another pair."):
        return days_view.compare_uploads(upload_paths(files_a), upload_paths(files_b), get_segmenter, _scratch_dir())


# --------------------------------------------------------------------------- UI


def slice_editor(elem_id: str) -> gr.ImageEditor:
    """One slice's editor: a layer per organ (the layer, not the colour, is the organ), PNG (lossless) both ways; a
    1×1 canvas to start from, as Gradio places layers loaded from Python in the largest canvas it has seen."""
    return gr.ImageEditor(label="Correct the slice. Layers, top to bottom: stomach, small bowel, large bowel",
                          type="numpy", image_mode="RGBA", format="png", sources=(), transforms=(), elem_id=elem_id,
                          layers=gr.LayerOptions(layers=ORGAN_CHOICES, allow_additional_layers=False),
                          brush=gr.Brush(colors=BRUSH_COLOURS, color_mode="fixed", default_size=BRUSH_PX),
                          eraser=gr.Eraser(default_size=BRUSH_PX), canvas_size=(1, 1))


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
                    # PNG, not Gradio's default WebP: lossless for a scan, and cheaper to encode.
                    overlay = gr.AnnotatedImage(label="Organs", color_map=SLICE_COLOR_MAP, show_legend=True, format="png")
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                    organs = gr.CheckboxGroup(ORGAN_CHOICES, value=ORGAN_CHOICES, label="Show organs")
                    show_confidence = gr.Checkbox(label="Show confidence map", value=False, info="Yellow where the "
                                                  "model is unsure: 1 − |2p − 1| of the least certain organ.")
                    spacing_note = gr.Markdown()
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="Measurements", interactive=False)
                    mask_file = gr.File(label="Masks PNG (bits: stomach 1, small bowel 2, large bowel 4)")
                    with gr.Row():
                        edit_one = gr.Button("Edit this slice", elem_id="slice-edit")
                        apply_one = gr.Button("Apply edit", variant="primary", elem_id="slice-apply-edit")
                    one_editor = slice_editor("slice-editor")
            result, one_editor_state = gr.State(time_to_live=CACHE_SECONDS), gr.State(time_to_live=CACHE_SECONDS)
        with gr.Tab("Scan", elem_id="scan-tab"):
            with gr.Row():
                with gr.Column():
                    scan_files = gr.File(label="Scan: slice files, a .zip, NIfTI (.nii, .nii.gz) or DICOM (.dcm or .zip)",
                                         file_count="multiple", type="filepath", elem_id="scan-files")
                    thickness = gr.Number(label="Slice thickness (mm)", value=None, minimum=0,
                                          info="0 or blank: 3 mm for Kaggle slice files; NIfTI and DICOM carry their own.")
                    truth_files = gr.File(label="Ground truth (optional): train.csv-style RLE, label NIfTI or mask PNGs",
                                          file_count="multiple", type="filepath", elem_id="scan-truth")
                    with gr.Row():
                        bowel_bag = gr.Checkbox(label="Bowel bag", value=False, elem_id="scan-bowel-bag",
                                                info="Add small ∪ large bowel to the DICOM exports and measurements.")
                        margin = gr.Number(label="Margin (mm)", value=0, minimum=0, elem_id="scan-margin",
                                           info="0: none. Else a PRV of N mm around each organ (and the bag).")
                    with gr.Row():
                        run_scan = gr.Button("Segment scan", variant="primary")
                        cancel_scan = gr.Button("Cancel", variant="stop")
                    scan_note = gr.Markdown(elem_id="scan-note")
                    scan_table = gr.Dataframe(headers=SCAN_TABLE_HEADERS, label="Measurements", interactive=False)
                    area_plot = gr.LinePlot(x="slice", y="area (cm²)", color="organ", color_map=COLOR_MAP,
                                            colors_in_legend=ORGAN_CHOICES, label="Organ area per slice")
                    comparison = gr.Dataframe(headers=COMPARISON_HEADERS, label="Against ground truth (competition metric)",
                                              interactive=False)
                    review_table = gr.Dataframe(headers=REVIEW_HEADERS, label="Review flags: click a row to see its slice",
                                                interactive=False, elem_id="scan-review")
                with gr.Column():
                    scan_slider = gr.Slider(1, 2, value=1, step=1, label="Slice", interactive=False, elem_id="scan-slider")
                    scan_overlay = gr.AnnotatedImage(label="Organs", color_map=COLOR_MAP, show_legend=True,
                                                    elem_id="scan-overlay")
                    with gr.Row():
                        edit_slice = gr.Button("Edit this slice", elem_id="scan-edit")
                        apply_edit = gr.Button("Apply edit", variant="primary", elem_id="scan-apply-edit")
                        reset_edit = gr.Button("Reset to prediction", elem_id="scan-reset-edit")
                    scan_editor = slice_editor("scan-editor")
                    scan_opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                    scan_organs = gr.CheckboxGroup(ORGAN_CHOICES, value=ORGAN_CHOICES, label="Show organs")
                    versus = gr.AnnotatedImage(label="Against ground truth", color_map=CONFUSION_COLOURS, show_legend=True)
                    mesh = gr.Model3D(label="Organ surfaces (3D)", clear_color=(0.1, 0.1, 0.1, 1.0), height=360)
                    downloads = gr.File(label="Downloads: labels NIfTI (1 stomach, 2 small bowel, 3 large bowel), "
                                              "submission CSV, mask PNGs (bits 1/2/4), surfaces .glb, review CSV; "
                                              "for a DICOM series, DICOM SEG and RTSTRUCT",
                                        file_count="multiple", interactive=False, elem_id="scan-downloads")
            scan_result, editor_state = gr.State(time_to_live=CACHE_SECONDS), gr.State(time_to_live=CACHE_SECONDS)
        with gr.Tab("Compare days", elem_id="days-tab"):
            with gr.Row():
                days_in = [gr.File(label=f"Day {d}: a scan as in the Scan tab, optionally with its earlier _masks.zip",
                                   file_count="multiple", type="filepath", elem_id=f"days-{d.lower()}") for d in "AB"]
            days_run = gr.Button("Compare days (B against A)", variant="primary")
            days_out = [gr.Markdown(elem_id="days-note"),
                        gr.Dataframe(headers=days_view.TABLE_HEADERS, interactive=False, elem_id="days-table"),
                        gr.Image(label="After alignment: A | B on A's grid | checkerboard", format="png"),
                        gr.File(label="Downloads: changes CSV; B's labels on A's grid (NIfTI)", file_count="multiple",
                                interactive=False, elem_id="days-downloads")]
        with gr.Accordion("About", open=False):
            about_md = gr.Markdown("Model loads with the first request.")
            gr.Markdown(f"{NOTICE}\n\nUploads and results are deleted within {2 * CACHE_SECONDS // 3600} hours "
                        "and never logged. Data: UW-Madison GI Tract Image Segmentation (Kaggle 2022).")

        image_file.change(preview_slice, image_file, preview, api_visibility="private", show_progress="hidden")
        run.click(segment, [image_file, spacing, opacity, organs, show_confidence],
                  [overlay, table, mask_file, spacing_note, result], api_name="segment", concurrency_id="model")
        for control in (opacity, organs, show_confidence):
            control.change(render, [result, opacity, organs, show_confidence], overlay, api_visibility="private",
                           queue=False, show_progress="hidden")
        demo.load(about, None, about_md, api_visibility="private")
        # No progress overlay on an editor being filled: Gradio 6.31 can leave it up, over the canvas.
        quiet = dict(api_visibility="private", show_progress="hidden")
        edit_one.click(open_slice_editor, result, [one_editor, one_editor_state], **quiet)
        apply_one.click(apply_slice_edit, [result, one_editor_state, one_editor, opacity, organs, show_confidence],
                        [overlay, table, mask_file, result], api_visibility="private")
        scan_outputs = [scan_note, scan_slider, scan_overlay, versus, scan_table, area_plot, mesh, downloads, comparison,
                        scan_result, review_table]
        scan_event = run_scan.click(
            segment_scan_files, [scan_files, thickness, truth_files, scan_opacity, scan_organs, bowel_bag, margin],
            scan_outputs, api_name="segment_scan", concurrency_id="model")
        review_table.select(jump_to_flag, None, scan_slider, queue=False, **quiet)
        cancel_scan.click(None, None, None, cancels=[scan_event], api_visibility="private")
        days_run.click(compare_days_files, days_in, days_out, api_name="compare_days", concurrency_id="model")
        edit_slice.click(open_scan_editor, [scan_result, scan_slider], [scan_editor, editor_state], **quiet)
        reset_edit.click(lambda state, position, editor: open_scan_editor(state, position, editor or {}),
                         [scan_result, scan_slider, editor_state], [scan_editor, editor_state], **quiet)
        apply_edit.click(apply_scan_edit, [scan_result, editor_state, scan_editor, scan_opacity, scan_organs],
                         scan_outputs, api_visibility="private", concurrency_id="model")
        for control in (scan_slider, scan_opacity, scan_organs):
            control.change(render_scan, [scan_result, scan_slider, scan_opacity, scan_organs], [scan_overlay, versus],
                           api_visibility="private", queue=False, show_progress="hidden", trigger_mode="always_last")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=MAX_QUEUE_SIZE)
    return demo


# The samples are fetched (into the HF cache) only when the app is run, never on import.
demo = build_demo(*find_samples(fetch=MODEL_PROCESS is not None, limit=24))


def main(argv: list[str] | None = None) -> int:
    args = parse_app_args(argv)
    configure_logging()
    bound_native_heap()
    # Gradio's own callers (save_img_array_to_cache, the components) look the function up at each call.
    processing_utils.save_pil_to_cache = save_pil_to_cache
    choice = model_choice(args.model, args.revision)
    configure(*choice, segmenter=MODEL_PROCESS if MODEL_PROCESS is not None and MODEL_PROCESS.choice == choice else None)
    # Serve while the model loads (in its own process under `python app.py`): the first requests wait
    # for it; a checkpoint that cannot load still ends the app with one line. Host, port: GRADIO_SERVER_*.
    demo.launch(max_file_size=MAX_FILE_SIZE, prevent_thread_lock=True)
    try:
        segmenter = get_segmenter()
    except CheckpointError as err:
        demo.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("model: %s", segmenter.describe())
    threading.Thread(target=SCRATCH.sweep_forever, args=(Path(get_upload_folder()), threading.Event()),
                     daemon=True, name="sweeper").start()
    threading.Thread(target=trim_native_heap_forever, args=(threading.Event(),), daemon=True, name="heap-trim").start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
