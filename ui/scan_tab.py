"""The Scan tab: a whole scan segmented, measured, compared with ground truth, reviewed and corrected."""

from __future__ import annotations

import uuid

import gradio as gr
import numpy as np

from model import labels
from model.truth import compare, load_ground_truth
from model.edits import ScanEdits
from model.measure import busiest_slice
from model.exports import SegmentedScan, export_scan
from model.planning import PlanningRequest
from model.scans import Scan, load_scan

from . import server
from .editor import EditError, EditorState, edited_masks, editor_value, strokes_over
from .kept import RELEASED, KeptScans, array_bytes, budget_from_environment
from .overlays import ORGAN_CHOICES, confusion_annotations, organ_annotations
from .tables import area_plot_frame, comparison_rows, review_rows, volume_rows

#: The scans the sessions keep, within ``UWMGI_KEPT_SCANS_MB`` (:mod:`ui.kept`).
KEPT = KeptScans(budget_from_environment())


class ScanState:
    """The tab's state: the scan and its (corrected) masks with their edit log, the ground truth
    ``(O, D, H, W) bool`` if uploaded, and a token new for every segmented scan, so that an editor
    opened on an older scan never lands in this one.

    Each state is kept within :data:`KEPT`'s memory budget: a state whose scan was released is false,
    and reading its scan raises :class:`EditError` (:data:`ui.kept.RELEASED`)."""

    def __init__(self, edits: ScanEdits, truth: np.ndarray | None = None, token: str | None = None):
        self.token = token or uuid.uuid4().hex
        self._edits, self._truth, self.released = edits, truth, False
        KEPT.keep(self.token, self, array_bytes(edits.scan, edits, truth) + edits.parts.nbytes)

    def release(self) -> None:
        self.released = True  # first: a reader in another thread sees a released state, never a half-empty one
        self._edits = self._truth = None

    def __bool__(self) -> bool:
        return not self.released

    @property
    def edits(self) -> ScanEdits:
        if self.released:
            raise EditError(RELEASED)
        return self._edits

    @property
    def truth(self) -> np.ndarray | None:
        if self.released:
            raise EditError(RELEASED)
        return self._truth

    @property
    def scan(self) -> Scan:
        return self.edits.scan

    @property
    def organ_masks(self) -> np.ndarray:
        """``(O, D, H, W) bool``, as corrected."""
        return self.edits.organ_masks


def _scan_state(state: ScanState | None, action: str = "edit its slices") -> ScanState:
    """``state``, now the most recently used scan; :class:`EditError` without one, or when it was released."""
    if state is not None and state.released:
        raise EditError(RELEASED)
    if not state:
        raise EditError(f"No scan: segment a scan first, then {action}.")
    KEPT.touch(state.token)
    return state


#: Apply edit or Reset before the editor was opened (Edit this slice).
NOT_OPENED = "Open a slice of this scan in the editor first: Edit this slice, paint, then Apply edit."


def _edited_slice(state: ScanState, editor_state: EditorState | None) -> int:
    """The slice the editor was opened on; :class:`EditError` if it was not opened, or opened on another scan."""
    if not editor_state or editor_state.slice_index is None:
        raise EditError(NOT_OPENED)
    if editor_state.token != state.token:
        raise EditError("This edit was opened on another scan; open the current slice in the editor again.")
    return editor_state.slice_index


def segment_scan_files(scan_files, slice_thickness_mm=None, truth_files=None, opacity=0.5,
                       organs=ORGAN_CHOICES, bowel_bag=False, margin_mm=0, progress=gr.Progress()):
    """Segment a whole scan (a generator, so a cancelled request stops at the next chunk); yields status
    lines, then :func:`scan_view`'s outputs: a note, the slider, the organ and TP/FP/FN overlays, the
    measurements (organs, then the planning structures that ``bowel_bag`` and ``margin_mm`` > 0 ask for),
    the area plot, the surfaces, the downloads (a DICOM series adds SEG and RTSTRUCT), the comparison, the
    state and the review table."""
    paths = server.upload_paths(scan_files)
    if not paths:
        raise server.user_error("No scan: upload slice files, a .zip, a NIfTI file or DICOM files first.")
    try:
        planning = PlanningRequest(bowel_bag, margin_mm)
    except ValueError as err:
        raise server.user_error(str(err)) from None
    progress(0, desc="Reading the scan")
    with server.user_errors("reading a scan",
                            "These files could not be read as a scan; export them again or try another format."):
        scan = load_scan(paths, slice_thickness_mm or None)
        truth, truth_notes = load_ground_truth(server.upload_paths(truth_files), scan) if truth_files else (None, [])
        segmentation = server.MODEL.get().segment_scan(scan, keep_probabilities=True)  # the review flags score them
    with server.user_errors("scan prediction", "The model failed on this scan; try another."):
        for done in segmentation:
            progress((done, len(scan)), desc="Segmenting", unit="slices")
            yield (f"{SEGMENTING}{scan.describe()}: {done}/{len(scan)} slices…", *(gr.skip(),) * 10)
    progress(1.0, desc="Writing files")
    result = export_scan(segmentation, scan, server.scratch_dir(), planning)
    state = ScanState(ScanEdits.of(result, planning), truth)
    yield scan_view(result, state, truth_notes, opacity, organs)


#: How the note starts while a scan is being segmented (:func:`segment_scan_files`'s progress lines).
SEGMENTING = "Segmenting "


def cancelled_note(state: ScanState | None, note: str | None):
    """The note after Cancel: while a segmentation ran (its progress line is the note), that it was cancelled and
    what the page still shows; otherwise (nothing to cancel) the note as it is."""
    if not (note or "").startswith(SEGMENTING):
        return gr.skip()
    shown = (f"the page still shows {state.scan.describe()}, with its edits and downloads as they were"
             if state else "no scan is shown")
    return f"- Segmenting was cancelled: {shown}."


def edit_notes(edits: ScanEdits) -> list[str]:
    """A line on the edits for the tab's notes; none before the first."""
    pairs = len({(e.slice_index, e.organ) for e in edits.edits})
    return [f"Corrected by hand: {pairs} slice and organ pair{'s' if pairs != 1 else ''} (see the edit log); "
            "every download is recomputed from the corrected masks."] if pairs else []


def scan_view(result: SegmentedScan, state: ScanState, truth_notes: list[str], opacity=0.5,
              organs=ORGAN_CHOICES, position: int | None = None) -> tuple:
    """The Scan tab's outputs (see :func:`segment_scan_files`) at slider ``position`` (default: the busiest slice)."""
    scan, organ_masks, outputs = result.scan, result.organ_masks, result.outputs
    review = review_rows(state.edits.flags, state.edits.edits)
    index = busiest_slice(organ_masks) if position is None else int(position) - 1
    flags = len(outputs.flags)
    notes = [*result.notes(), *truth_notes, f"{flags} review flag{'s' if flags != 1 else ''}: the slices most likely "
             "wrong, worst first (at most 15 % of the scan)" + ("; click one to go to its slice." if review else "."),
             *edit_notes(state.edits)]
    # Gradio refuses a slider whose minimum is its maximum, so a one-slice scan gets a fixed 1–2 one.
    slider = gr.Slider(minimum=1, maximum=max(len(scan), 2), value=index + 1, step=1, interactive=len(scan) > 1,
                       label=f"Slice (1–{len(scan)}; starts at the most organ area)" if len(scan) > 1
                       else "Slice (the scan has one)")
    truth = state.truth
    return ("\n".join(f"- {n}" for n in notes), slider, *render_scan(state, index + 1, opacity, organs),
            volume_rows(result.volumes, list(outputs.structures), scan), area_plot_frame(organ_masks, scan),
            str(outputs.mesh) if outputs.mesh else None, [str(f) for f in outputs.files()],
            comparison_rows(compare(organ_masks, truth)) if truth is not None else [], state, review)


def jump_to_flag(evt: gr.SelectData = None):
    """The clicked review row's slice and organ: the slider position (its "Slice" column) and the organ to correct
    with clicks (its "Organ" column), so the next click goes to the flagged organ; no change without a row."""
    if evt is None or not evt.row_value:
        return gr.skip(), gr.skip()
    organ = evt.row_value[1] if len(evt.row_value) > 1 and evt.row_value[1] in ORGAN_CHOICES else gr.skip()
    return int(evt.row_value[0]), organ


def _editor(state: ScanState, index: int, reset: bool = False) -> tuple[dict, EditorState]:
    """The editor's value for slice ``index`` (the corrected masks, or the model's with ``reset``) and its state."""
    index = int(np.clip(index, 0, len(state.scan) - 1))
    current = state.organ_masks[:, index].copy()
    masks = state.edits.predicted_slice(index) if reset else current
    return editor_value(state.scan.display_slice(index), masks), EditorState(state.token, index, current)


def open_scan_editor(state: ScanState | None, position=1):
    """Slice ``position`` (1-based) in the editor with its current masks, and the editor's state."""
    with server.user_errors("opening the editor", "The slice could not be opened in the editor."):
        return _editor(_scan_state(state), int(position or 1) - 1)


def reset_scan_editor(state: ScanState | None, editor_state: EditorState | None):
    """The editor's own slice again as the model predicted it (Reset)."""
    with server.user_errors("opening the editor", "The slice could not be opened in the editor."):
        state = _scan_state(state)
        index = _edited_slice(state, editor_state)
        return _editor(state, index, reset=True)


def apply_scan_edit(state: ScanState | None, editor_state: EditorState | None, value, opacity=0.5,
                    organs=ORGAN_CHOICES):
    """Write the editor's layers into their slice and recompute every output (:meth:`ScanEdits.apply`)."""
    with server.user_errors("applying an edit", "The edit could not be applied; open the slice in the editor again."):
        state = _scan_state(state)
        index = _edited_slice(state, editor_state)
        current = state.organ_masks[:, index]
        masks = strokes_over(current, editor_state.opened, edited_masks(value, state.scan.shape[1:]))
        done = state.edits.apply(index, masks, server.scratch_dir())
    if done is None:
        gr.Info("Nothing changed on this slice.")
        return (gr.skip(),) * 11
    if editor_state.opened is not None and not np.array_equal(current, editor_state.opened):
        gr.Info(f"Slice {index + 1} had changed since it was opened in the editor (clicks, a propagation, a fill or "
                "an undo): only the pixels you painted or erased were written over it.")
    edits, result = done
    return scan_view(result, ScanState(edits, state.truth, state.token), [], opacity, organs, index + 1)


def render_scan(state: ScanState | None, position=1, opacity=0.5, organs=ORGAN_CHOICES):
    """Overlays of slice ``position`` (1-based): organs, and TP/FP/FN when there is ground truth."""
    if state is not None and state.released:
        gr.Warning(RELEASED)
    if not state:
        return None, None
    KEPT.touch(state.token)  # looking through a scan is using it
    scan = state.scan
    index = int(np.clip(int(position or 1) - 1, 0, len(scan) - 1))
    display = scan.display_slice(index)
    masks = state.organ_masks[:, index]
    visible = labels.organs_named(organs)
    overlay = (display, organ_annotations(masks, opacity, visible))
    versus = (display, confusion_annotations(masks, state.truth[:, index], opacity, visible)) \
        if state.truth is not None else None
    return overlay, versus
