"""The Slice tab: one uploaded slice segmented, drawn with its measurements, and corrected in the editor."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import numpy as np

from model import labels
from model.image import ImageError, frame_count, normalize_intensity, read_slice, resolve_pixel_spacing, spacing_note
from model.mask_png import save_mask_png
from model.review import uncertainty_map

from . import server
from .editor import EditError, EditorState, edited_masks, editor_value, strokes_over
from .overlays import ORGAN_CHOICES, organ_annotations, uncertainty_annotation
from .tables import area_rows


@dataclass(frozen=True)
class SliceState:
    """The tab's state: the slice ``(H, W) uint8`` as shown, its masks ``(O, H, W) bool``, the model's
    uncertainty ``(H, W) float32`` (or ``None``), the pixel spacing ``(row, col)`` mm, the file's stem,
    a token new for every segmented slice (an editor opened on an older slice cannot land here), and
    the model's probabilities ``(O, H, W) float16`` (or ``None``) for click correction (:mod:`ui.clicks`)."""

    display: np.ndarray
    organ_masks: np.ndarray
    uncertainty: np.ndarray | None
    spacing_mm: tuple[float, float]
    name: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    probabilities: np.ndarray | None = None


def segment(image_file, pixel_spacing_mm=None, opacity=0.5, organs=ORGAN_CHOICES, show_confidence=False):
    """Segment one uploaded slice: the AnnotatedImage value, the measurements, the mask PNG (one bit per
    organ: stomach 1, small bowel 2, large bowel 4), a note on the pixel spacing, and the state the
    opacity, organ and confidence controls (and the editor) re-render from."""
    if not image_file:
        raise server.user_error("No image: upload an MRI slice (PNG, JPEG, TIFF or BMP) first.")
    path = Path(image_file)
    with server.user_errors("prediction", "The model failed on this image; try another slice."):
        raw = read_slice(path)
        spacing, source = resolve_pixel_spacing(path, pixel_spacing_mm, raw.shape)
        probabilities = np.zeros((1, len(labels.ORGANS), *raw.shape[-2:]), dtype=np.float16)
        organ_masks = server.MODEL.get().predict(raw[None], probabilities)[0]
    mask_path = save_mask_png(organ_masks, server.scratch_dir() / f"{path.stem}_masks.png")
    state = SliceState(normalize_intensity(raw), organ_masks, uncertainty_map(probabilities[0]), spacing, path.stem,
                       probabilities=probabilities[0])
    note = spacing_note(spacing, source)
    if (frames := frame_count(path)) > 1:
        note += (f" The file holds {frames} frames; the first one was segmented (a whole scan goes in the Scan tab: "
                 "NIfTI, DICOM or a zip of slices).")
    return (render(state, opacity, organs, show_confidence), area_rows(organ_masks, spacing), str(mask_path),
            note, state)


def preview_slice(image_file):
    """The uploaded slice as the model sees it (full 16-bit range stretched), or nothing."""
    if not image_file:
        return None
    try:
        return normalize_intensity(read_slice(image_file))
    except ImageError as err:
        gr.Warning(str(err))
        return None


def open_slice_editor(state: SliceState | None):
    """The segmented slice in the editor with its masks, and the editor's state (this slice's token)."""
    if not state:
        raise server.refused("No slice: segment a slice first, then edit it.")
    return editor_value(state.display, state.organ_masks), EditorState(state.token, opened=state.organ_masks.copy())


def apply_slice_edit(state: SliceState | None, editor_state: EditorState | None, value, opacity=0.5,
                     organs=ORGAN_CHOICES, show_confidence=False):
    """The editor's layers as the slice's masks: the overlay, measurements, mask PNG and state again."""
    with server.user_errors("applying an edit", "The edit could not be applied; open the slice in the editor again."):
        if not state:
            raise EditError("No slice: segment a slice first, then edit it.")
        if not editor_state:
            raise EditError("Open the slice in the editor first: Edit this slice, paint, then Apply edit.")
        if editor_state.token != state.token:
            raise EditError("This edit was opened on another slice; open the current slice in the editor again.")
        edited = edited_masks(value, state.organ_masks.shape[1:])
        state = replace(state, organ_masks=strokes_over(state.organ_masks, editor_state.opened, edited))
    mask_path = save_mask_png(state.organ_masks, server.scratch_dir() / f"{state.name}_masks.png")
    return (render(state, opacity, organs, show_confidence), area_rows(state.organ_masks, state.spacing_mm),
            str(mask_path), state)


def render(state: SliceState | None, opacity=0.5, organs=ORGAN_CHOICES, show_confidence=False):
    """Re-draw the overlay from a previous result, without running the model; ``show_confidence`` adds the
    model's uncertainty (:func:`model.review.uncertainty_map`) as a yellow layer, strength uncertainty × opacity."""
    if not state:
        return None
    layers = organ_annotations(state.organ_masks, opacity, labels.organs_named(organs))
    if show_confidence and state.uncertainty is not None:
        layers.append(uncertainty_annotation(state.uncertainty, opacity))
    return state.display, layers
