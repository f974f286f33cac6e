"""Gradio app: segment the stomach, small and large bowel on abdominal MRI slices.

Research demo, not for diagnostic use. The page: three tabs (Slice, Scan, Course) of components and their events, and
the entry point. The handlers, their state and tables live in :mod:`ui`; every mechanism behind
them in :mod:`model`. Importing this module builds ``demo`` but downloads nothing, starts no server
and loads no torch. ``python app.py [--model ID_OR_DIR] [--revision REV]`` (:func:`main`) starts the
model in its own process, then serves the page while it loads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from model.checkpoint import CheckpointError, model_choice
from model.samples import find_samples
from model.serving import bound_native_heap, configure_logging, own_gradio_cache, trim_native_heap_forever
from model.engines.process import SegmenterProcess
from ui import clicks, course_tab, days_tab, scan_tab, server, slice_tab
from ui.editor import BRUSH_COLOURS, BRUSH_PX, editor_head
from ui.overlays import COLOR_MAP, CONFUSION_COLOURS, ORGAN_CHOICES, SLICE_COLOR_MAP
from ui.tables import AREA_HEADERS, COMPARISON_HEADERS, DAYS_HEADERS, REVIEW_HEADERS, VOLUME_HEADERS, course_headers

log = logging.getLogger("uwmgi.app")

NOTICE = "**Research demo, not for diagnostic use.** Predictions can be wrong; do not use them for patient care."
TITLE = "GI tract segmentation on abdominal MRI"
BLOG = "https://learnopencv.com/medical-image-segmentation/"

#: One model call at a time, slices and scans alike (one call already uses both vCPUs of a
#: free Space); at most this many requests wait.
CONCURRENCY_LIMIT = 1
MAX_QUEUE_SIZE = 16
#: The queue of everything that reads or writes a tab's masks without the model: clicks, Undo, Apply (clicks and
#: brush), Propagate, Fill between, opening the editor, the click images' redraws. One at a time, in the order they
#: were made, beside the model's queue: each starts from what the one before it wrote, so an action made while
#: another runs is not lost under its answer, and none waits for another person's segmentation.
EDITS = "edits"
#: The clicks on the click images and the Undo presses: every one counts, each queued as it reaches the server
#: (Gradio's default for an event, "once", dropped a click or an Undo made while the one before was still answering).
EVERY_PRESS = "multiple"
#: The edit events' handlers: a refused edit ("Nothing to undo", no clicks to apply, …) is a one-line warning and
#: changes nothing on the page (raised, Gradio drew "Error" over every output of the event, the click image too).
refusing = server.warn_refusals
#: Largest upload Gradio accepts. A 4096² float32 TIFF (our pixel cap) is 64 MiB; real slices are < 1 MiB.
MAX_FILE_SIZE = "100mb"


def slice_editor(elem_id: str) -> gr.ImageEditor:
    """One slice's editor: a layer per organ (the layer, not the colour, is the organ), PNG (lossless) both ways; a
    1×1 canvas to start from, as Gradio places layers loaded from Python in the largest canvas it has seen."""
    return gr.ImageEditor(label="Correct the slice: pick the organ in the layer list, then paint or erase",
                          type="numpy", image_mode="RGBA", format="png", sources=(), transforms=(), elem_id=elem_id,
                          layers=gr.LayerOptions(layers=ORGAN_CHOICES, allow_additional_layers=False),
                          brush=gr.Brush(colors=BRUSH_COLOURS, color_mode="fixed", default_size=BRUSH_PX),
                          eraser=gr.Eraser(default_size=BRUSH_PX), canvas_size=(1, 1))


def click_controls(prefix: str) -> tuple[gr.Radio, gr.Radio, gr.Image]:
    """The organ and Add/Remove pickers and the image to click on (:mod:`ui.clicks`), ``{prefix}-click-*``."""
    with gr.Row():
        organ = gr.Radio(ORGAN_CHOICES, value=ORGAN_CHOICES[0], label="Organ to correct", elem_id=f"{prefix}-click-organ")
        mode = gr.Radio(clicks.MODES, value=clicks.ADD, label="Click", elem_id=f"{prefix}-click-mode",
                        info="Add: the organ under the click. Remove: the piece under the click.")
    image = gr.Image(label="Click to correct: the chosen organ is added or removed where you click", type="numpy",
                     format="png", interactive=False, buttons=[], elem_id=f"{prefix}-click-image")
    return organ, mode, image


def page_head() -> str:
    """The page's ``<head>``: the click images' style and script (:func:`ui.clicks.click_head`), the editors' script
    and style."""
    return f"{clicks.click_head()}\n{editor_head()}"


def build_demo(samples: list[Path] | None = None, samples_note: str = "") -> gr.Blocks:
    with gr.Blocks(title=TITLE, delete_cache=(server.CACHE_SECONDS, server.CACHE_SECONDS)) as demo:
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
                    table = gr.Dataframe(headers=AREA_HEADERS, label="Measurements", interactive=False)
                    mask_file = gr.File(label="Masks PNG (bits: stomach 1, small bowel 2, large bowel 4)")
                    slice_click_organ, slice_click_mode, slice_click_image = click_controls("slice")
                    slice_click_undo = gr.Button("Undo click", elem_id="slice-click-undo")
                    with gr.Row():
                        edit_one = gr.Button("Edit this slice", elem_id="slice-edit")
                        apply_one = gr.Button("Apply edit", variant="primary", elem_id="slice-apply-edit")
                    one_editor = slice_editor("slice-editor")
            result, one_editor_state = gr.State(time_to_live=server.CACHE_SECONDS), gr.State(time_to_live=server.CACHE_SECONDS)
            slice_clicks = gr.State(time_to_live=server.CACHE_SECONDS)
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
                    scan_table = gr.Dataframe(headers=VOLUME_HEADERS, label="Measurements", interactive=False)
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
                    scan_click_organ, scan_click_mode, scan_click_image = click_controls("scan")
                    with gr.Row():
                        scan_click_undo = gr.Button("Undo", elem_id="scan-click-undo")
                        scan_click_apply = gr.Button("Apply clicks", variant="primary", elem_id="scan-click-apply")
                        scan_propagate = gr.Button("Propagate to neighbouring slices", elem_id="scan-propagate")
                        scan_fill = gr.Button("Fill between corrected slices", elem_id="scan-fill-between")
                    scan_click_note = gr.Markdown(elem_id="scan-click-note")
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
            scan_result, editor_state = gr.State(time_to_live=server.CACHE_SECONDS), gr.State(time_to_live=server.CACHE_SECONDS)
            scan_clicks = gr.State(time_to_live=server.CACHE_SECONDS)
        with gr.Tab("Course", elem_id="days-tab"):
            gr.Markdown("Day A is the reference. **Compare days**: day B against day A. **Run the course**: every day "
                        "against a target on day A (with an optional dose and constraints); plan not adapted, "
                        "today's anatomy, rigid mapping, research use only.")
            with gr.Row():
                days_in = [gr.File(label=f"Day {d}: a scan as in the Scan tab, optionally with its earlier _masks.zip",
                                   file_count="multiple", type="filepath", elem_id=f"days-{d.lower()}") for d in "AB"]
                more_days = gr.File(label="Further days (course only): one .zip or NIfTI file per day, each optionally with its "
                                          "earlier X_masks.zip (X.zip's), else segmented by the model",
                                    file_count="multiple", type="filepath", elem_id="course-more-days")
            with gr.Row():
                course_target = gr.File(label="Target on day A: RTSTRUCT or DICOM SEG, or a label NIfTI on A's grid",
                                        type="filepath", elem_id="course-target")
                course_roi = gr.Dropdown(label="Target structure (ROI, segment or label)", choices=[],
                                         allow_custom_value=True, elem_id="course-roi")
                course_dose = gr.File(label="RTDOSE on day A (optional)", type="filepath", elem_id="course-dose")
                course_constraints = gr.Textbox(label="Dose constraints, one per line (need a dose)", lines=3,
                                                placeholder="small_bowel:V33Gy<=0.5cc\nstomach:D0.5cc<=33Gy",
                                                elem_id="course-constraints")
            with gr.Row():
                days_run = gr.Button("Compare days (B against A)", variant="primary")
                course_run = gr.Button("Run the course against the target", variant="primary", elem_id="course-run")
            days_out = [gr.Markdown(elem_id="days-note"),
                        gr.Dataframe(headers=DAYS_HEADERS, interactive=False, elem_id="days-table"),
                        gr.Image(label="Compare days: A | B on A's grid | checkerboard. Course: day A | the last day, "
                                       "target and rings drawn", format="png"),
                        gr.File(label="Downloads: changes CSV and B's labels on A's grid (NIfTI); for a course: "
                                      "course.csv, dvh.csv, plots, mapped RTSTRUCTs of DICOM days",
                                file_count="multiple", interactive=False, elem_id="days-downloads")]
            course_out = [gr.Dataframe(headers=course_headers(), label="Course: one row per day and organ (volumes in cc, distances in mm, doses in Gy)",
                                       interactive=False, elem_id="course-table"),
                          gr.Gallery(label="Per organ over the days", columns=3, format="png", object_fit="contain",
                                     height="auto", elem_id="course-plots")]
        with gr.Accordion("About", open=False):
            about_md = gr.Markdown("Model loads with the first request.")
            gr.Markdown(f"{NOTICE}\n\nUploads and results are deleted within {2 * server.CACHE_SECONDS // 3600} hours "
                        "and never logged. Data: UW-Madison GI Tract Image Segmentation (Kaggle 2022).")

        image_file.change(slice_tab.preview_slice, image_file, preview, api_visibility="private", show_progress="hidden")
        slice_event = run.click(slice_tab.segment, [image_file, spacing, opacity, organs, show_confidence],
                                [overlay, table, mask_file, spacing_note, result], api_name="segment", concurrency_id="model")
        for control in (opacity, organs, show_confidence):
            control.change(slice_tab.render, [result, opacity, organs, show_confidence], overlay, api_visibility="private",
                           queue=False, show_progress="hidden")
        slice_click_outputs = [overlay, table, mask_file, result, slice_clicks, slice_click_image]
        slice_click_image.select(refusing(clicks.slice_click),
                                 [result, slice_clicks, slice_click_organ, slice_click_mode, opacity, organs,
                                  show_confidence], slice_click_outputs,
                                 api_visibility="private", concurrency_id=EDITS, show_progress="hidden",
                                 trigger_mode=EVERY_PRESS)
        slice_click_undo.click(refusing(clicks.undo_slice_click),
                               [result, slice_clicks, opacity, organs, show_confidence],
                               slice_click_outputs, api_visibility="private", concurrency_id=EDITS,
                               show_progress="hidden", trigger_mode=EVERY_PRESS)
        demo.load(server.MODEL.about, None, about_md, api_visibility="private")
        # No progress overlay on an editor being filled: Gradio 6.31 can leave it up, over the canvas.
        quiet = dict(api_visibility="private", show_progress="hidden")
        edit_one.click(refusing(slice_tab.open_slice_editor), result, [one_editor, one_editor_state],
                       concurrency_id=EDITS, **quiet)
        apply_one_event = apply_one.click(refusing(slice_tab.apply_slice_edit),
                                          [result, one_editor_state, one_editor, opacity, organs, show_confidence],
                                          [overlay, table, mask_file, result], api_visibility="private",
                                          concurrency_id=EDITS)
        for event in (slice_event.then, apply_one_event.then, opacity.change):
            event(clicks.slice_click_view, [result, slice_clicks, opacity], slice_click_image, concurrency_id=EDITS,
                  **quiet)
        scan_outputs = [scan_note, scan_slider, scan_overlay, versus, scan_table, area_plot, mesh, downloads, comparison,
                        scan_result, review_table]
        scan_event = run_scan.click(
            scan_tab.segment_scan_files, [scan_files, thickness, truth_files, scan_opacity, scan_organs, bowel_bag, margin],
            scan_outputs, api_name="segment_scan", concurrency_id="model")
        review_table.select(scan_tab.jump_to_flag, None, [scan_slider, scan_click_organ], queue=False, **quiet)
        cancel_scan.click(scan_tab.cancelled_note, [scan_result, scan_note], scan_note, cancels=[scan_event],
                          queue=False, **quiet)
        days_event = days_run.click(days_tab.compare_days_files, days_in, days_out, api_name="compare_days",
                                    concurrency_id="model")
        days_event.then(course_tab.no_course, None, course_out, **quiet)  # the last course's table and plots go
        course_target.change(course_tab.roi_choices, course_target, course_roi, queue=False, **quiet)
        course_run.click(course_tab.course_files, [*days_in, more_days, course_target, course_roi, course_dose,
                                                   course_constraints],
                         days_out + course_out, api_name="course", concurrency_id="model")
        edit_slice.click(refusing(scan_tab.open_scan_editor), [scan_result, scan_slider], [scan_editor, editor_state],
                         concurrency_id=EDITS, **quiet)
        reset_edit.click(refusing(scan_tab.reset_scan_editor), [scan_result, editor_state], [scan_editor, editor_state],
                         concurrency_id=EDITS, **quiet)
        for control in (scan_slider, scan_opacity, scan_organs):
            control.change(scan_tab.render_scan, [scan_result, scan_slider, scan_opacity, scan_organs], [scan_overlay, versus],
                           api_visibility="private", queue=False, show_progress="hidden", trigger_mode="always_last")
        # Click correction (ui/clicks.py): the click image follows the slider and every new or edited scan. Its
        # redraws queue with the clicks and the edits (EDITS: one at a time, in order): a redraw that started before
        # a click cannot answer after it, over the click's image. Only a new or edited scan rebinds the click state;
        # the slider never writes it, so a click it did not see is not dropped.
        click_inputs = [scan_result, scan_clicks, scan_slider, scan_opacity]
        scan_event.then(clicks.scan_click_start, click_inputs, [scan_click_image, scan_clicks, scan_click_note],
                        concurrency_id=EDITS, **quiet)
        for control in (scan_slider, scan_opacity):
            control.change(clicks.scan_click_redraw, click_inputs, scan_click_image, concurrency_id=EDITS,
                           trigger_mode="always_last", **quiet)
        click_outputs = [scan_click_image, scan_clicks, scan_click_note]
        scan_click_image.select(refusing(clicks.scan_click),
                                [scan_result, scan_clicks, scan_slider, scan_click_organ, scan_click_mode, scan_opacity],
                                click_outputs,
                                api_visibility="private", concurrency_id=EDITS, show_progress="hidden",
                                trigger_mode=EVERY_PRESS)
        click_edit = [scan_result, scan_clicks, scan_slider]
        scan_click_undo.click(refusing(clicks.undo_scan_click), [*click_edit, scan_opacity, scan_organs],
                              scan_outputs + click_outputs, api_visibility="private", concurrency_id=EDITS,
                              trigger_mode=EVERY_PRESS)
        # The brush's Apply edit is a step Undo takes back too (ui/clicks.py keeps the undo steps).
        apply_edit.click(refusing(clicks.apply_scan_brush),
                         [scan_result, scan_clicks, editor_state, scan_editor, scan_opacity, scan_organs],
                         scan_outputs + click_outputs,
                         api_visibility="private", concurrency_id=EDITS)
        scan_click_apply.click(refusing(clicks.apply_scan_clicks), [*click_edit, scan_opacity, scan_organs],
                               scan_outputs + click_outputs, api_visibility="private", concurrency_id=EDITS)
        for button, verb in ((scan_propagate, clicks.propagate_scan), (scan_fill, clicks.fill_between_scan)):
            button.click(refusing(verb), [*click_edit, scan_click_organ, scan_opacity, scan_organs],
                         scan_outputs + click_outputs, api_visibility="private", concurrency_id=EDITS)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=MAX_QUEUE_SIZE)
    return demo


# Gradio's cache is this process's own unless the operator names one (GRADIO_TEMP_DIR): a clean shutdown then
# removes all of it, and the sweep (model.serving.Scratch) never takes another app's files.
OWN_CACHE = None if os.environ.get("GRADIO_TEMP_DIR") else own_gradio_cache()
if OWN_CACHE is not None:
    os.environ["GRADIO_TEMP_DIR"] = str(OWN_CACHE)
# The samples are fetched (into the HF cache) only when the app is run, never on import.
demo = build_demo(*find_samples(fetch=__name__ == "__main__", limit=24))


def kept_in_cache(blocks: gr.Blocks) -> set[str]:
    """The files Gradio keeps in its cache for good (the examples it copied there at start), as Gradio's own
    ``delete_cache`` spares them."""
    return set().union(*(getattr(block, "keep_in_cache", set()) for block in blocks.blocks.values()))


def main(argv: list[str] | None = None) -> int:
    args = server.parse_app_args(argv)
    os.umask(0o077)  # uploads, outputs and our copies: readable by this server's user only
    configure_logging()
    bound_native_heap()
    server.publish_images_atomically()  # issue #26: Gradio rewrote a streamed file in place
    # The model loads in its own process (model.engines.process) while this one starts serving: the first
    # requests wait for it; a checkpoint that cannot load still ends the app with one line.
    # Host, port: GRADIO_SERVER_*.
    choice = model_choice(args.model, args.revision)
    server.MODEL.configure(*choice, segmenter=SegmenterProcess(*choice))
    server.MODEL.configure_click_refiner(args.click_refiner)
    # SIGTERM is recorded from before the first request can arrive (a stop while the model loads still shuts
    # down cleanly, below, once it has loaded); Ctrl-C keeps stopping at once until then.
    signalled: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: signalled.append(signum))
    demo.launch(max_file_size=MAX_FILE_SIZE, prevent_thread_lock=True, head=page_head())
    try:
        # The click refiner loads in this process while the model loads in its own, so clicks are ready when
        # the model is; a folder without a refiner ends the app here, not at the first click.
        refiner = server.MODEL.click_refiner()
        segmenter = server.MODEL.get()
    except CheckpointError as err:
        demo.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("model: %s; clicks: %s", segmenter.describe(), "learned click refiner" if refiner else "training-free corrector")
    server.SCRATCH.keep = lambda: kept_in_cache(demo)
    server.SCRATCH.own_cache = OWN_CACHE if OWN_CACHE and Path(get_upload_folder()).resolve() == OWN_CACHE.resolve() else None
    threading.Thread(target=server.SCRATCH.sweep_forever, args=(Path(get_upload_folder()), threading.Event()),
                     daemon=True, name="sweeper").start()
    threading.Thread(target=trim_native_heap_forever, args=(threading.Event(),), daemon=True, name="heap-trim").start()
    # Until Ctrl-C or SIGTERM (docker stop, systemd, a Space restarting). Then demo.close() ends the queue's
    # streams first, so the server stops within its grace time and Gradio's shutdown deletes the uploads and
    # outputs it tracks (Gradio's own block_thread closes only the server, which open streams keep past that
    # time, so nothing was deleted); we delete our copies and, when Gradio's cache is this process's own, all of
    # it (else what Gradio leaves untracked goes by age). The README's retention says so. (The handler only
    # records the signal: nothing that takes a lock runs inside it.)
    signal.signal(signal.SIGINT, lambda signum, frame: signalled.append(signum))
    while not signalled and demo.is_running:
        time.sleep(0.5)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C during the shutdown stops at once
    demo.close()
    server.SCRATCH.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
