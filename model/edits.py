"""Correcting a segmented scan by hand, one slice at a time: the Scan tab's editor behind one module.

The editor (Gradio's ``ImageEditor``) shows a slice with one layer per organ, in
:data:`model.labels.ORGANS` order, each pre-filled with the organ's mask in its colour
(:func:`editor_value`). What comes back is read by the layer, never by the colour: a pixel
belongs to the layer's organ when the layer is at least half as opaque as the pre-filled
mask there (:data:`MIN_ALPHA`), so the brush colour and anti-aliased stroke edges do not
matter and the eraser (alpha 0) removes. Layers must come back at the slice's own pixel
grid; any other size is refused (:class:`EditError`), never resampled. Every other layer pixel
is sent at alpha :data:`FRAME_ALPHA` (invisible): Gradio 6.31 places layers loaded from Python
in the largest canvas the editor has held, so after a larger slice (an earlier scan) they come
back shifted, with a transparent band along the top or left edge. Such layers are refused too.

:class:`ScanEdits` is the state of one session's scan: the masks, the model's prediction (to
reset to), a token that a new scan replaces (so an edit opened on an old scan never lands in a
new one), and the log of applied edits. :meth:`ScanEdits.apply` writes one slice's layers into
the masks and then every download again (:func:`model.outputs.write_outputs`), plus:

- ``<scan>_edits.csv``: one row per applied edit and organ changed (:data:`EDIT_LOG_HEADER`);
- ``<scan>_corrections.zip``: the edited slices and their corrected labels in the Kaggle layout
  ``train/`` reads (``train.csv`` RLE rows and ``train/caseN/caseN_dayD/scans/slice_*.png``).

The DICOM exports then mark the edited organs SEMIAUTOMATIC (:func:`model.dicom.export.algorithm_types`).
"""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import labels
from .image import ImageError
from .measure import measure
from .planning import PlanningRequest
from .outputs import SegmentedScan, write_outputs
from .rle import RleVolume, write_rle_csv
from .scans.base import Scan, check_organ_masks

#: Opacity of the pre-filled organ masks in the editor (0..255): the slice stays visible under them.
MASK_ALPHA = 160
#: A layer pixel is in its organ from this opacity on: half a pre-filled or painted pixel.
MIN_ALPHA = MASK_ALPHA // 2
#: The opacity of every other layer pixel: invisible, but a layer that comes back shifted shows it.
FRAME_ALPHA = 1
#: The brush colours: each organ's colour, painted as opaque as the pre-filled masks.
BRUSH_COLOURS = [(labels.COLOURS[o], round(MASK_ALPHA / 255, 2)) for o in labels.ORGANS]
#: The brush's and eraser's radius, image pixels: fine enough for a bowel wall.
BRUSH_PX = 6
EDIT_LOG_HEADER = ("edit", "slice_index", "slice_number", "organ", "pixels_added", "pixels_removed")
#: The case and day a corrections zip uses for a scan whose name has none (NIfTI, DICOM, loose files).
FALLBACK_CASE_DAY = "case0_day0"


class EditError(ImageError):
    """An edit that cannot be applied; ``str(err)`` is one line a person can act on."""


@dataclass(frozen=True)
class SliceEdit:
    """One organ changed by one applied edit: ``slice_index`` 0-based in the scan, pixels added and removed."""

    edit: int
    slice_index: int
    slice_number: int
    organ: str
    pixels_added: int
    pixels_removed: int


def editor_value(display: np.ndarray, slice_masks: np.ndarray) -> dict:
    """The editor's value for one slice: ``display`` ``(H, W) uint8`` as the background, and one
    ``(H, W, 4) uint8`` RGBA layer per organ from ``slice_masks`` ``(O, H, W) bool``, its mask in
    the organ's colour at :data:`MASK_ALPHA`, and at :data:`FRAME_ALPHA` elsewhere."""
    background = np.repeat(np.asarray(display, dtype=np.uint8)[..., None], 3, axis=-1)
    layers = []
    for o, organ in enumerate(labels.ORGANS):
        layer = np.zeros((*display.shape, 4), dtype=np.uint8)
        layer[..., 3] = FRAME_ALPHA
        layer[slice_masks[o]] = (*labels.rgb(organ), MASK_ALPHA)
        layers.append(layer)
    return {"background": background, "layers": layers, "composite": None}


def layers_to_masks(layers, shape: tuple[int, int]) -> np.ndarray:
    """The editor's layers (one per organ, ``(H, W, 4)`` RGBA arrays or PIL images) → ``(O, H, W) bool``.

    Raises :class:`EditError` when there is not one layer per organ, a layer is not ``shape``
    ``(H, W)``, or every layer is transparent along its whole first row or first column (shifted
    by the editor; see the module notes): the layers must stay on the slice's pixel grid.
    """
    layers = list(layers or [])
    if len(layers) != len(labels.ORGANS):
        raise EditError(f"The editor sent {len(layers)} layers; it needs one per organ ({len(labels.ORGANS)}). "
                        "Open the slice in the editor again.")
    masks = np.zeros((len(labels.ORGANS), *shape), dtype=bool)
    alphas = []
    for o, layer in enumerate(layers):
        pixels = np.asarray(layer.convert("RGBA") if isinstance(layer, Image.Image) else layer)
        if pixels.shape[:2] != tuple(shape):
            raise EditError(f"The edited {labels.DISPLAY_NAMES[labels.ORGANS[o]]} layer is "
                            f"{pixels.shape[1] if pixels.ndim > 1 else '?'}×{pixels.shape[0]} px; the slice is "
                            f"{shape[1]}×{shape[0]}. Open the slice in the editor again and do not resize it.")
        alpha = pixels[..., 3] if pixels.ndim == 3 and pixels.shape[2] == 4 else pixels.reshape(shape)
        masks[o] = alpha >= MIN_ALPHA
        alphas.append(alpha)
    if all(not a[0].any() for a in alphas) or all(not a[:, 0].any() for a in alphas):
        raise EditError("The editor shifted the layers off the slice (it last showed a larger image); "
                        "reload the page, then open the slice in the editor again.")
    return masks


def slice_state(display: np.ndarray, organ_masks: np.ndarray, uncertainty: np.ndarray | None,
                spacing_mm: tuple[float, float], name: str) -> dict:
    """The Slice tab's state: the slice ``(H, W) uint8`` as shown, its masks ``(O, H, W) bool``, the
    model's uncertainty, the pixel spacing, the file's stem, and a token new for every slice."""
    return {"slice": display, "masks": organ_masks, "uncertainty": uncertainty, "spacing": spacing_mm,
            "name": name, "token": uuid.uuid4().hex}


def edit_slice_state(state: dict | None, editor_state: dict | None, layers) -> dict:
    """The Slice tab's ``state`` with the editor's ``layers`` as its masks (:func:`layers_to_masks`).

    Raises :class:`EditError` without a slice, for an editor opened on another slice, or for bad layers.
    """
    if not state:
        raise EditError("No slice: segment a slice first, then edit it.")
    if not editor_state or editor_state.get("token") != state.get("token"):
        raise EditError("This edit was opened on another slice; open the current slice in the editor again.")
    return {**state, "masks": layers_to_masks(layers, state["masks"].shape[1:])}


def changes(before: np.ndarray, after: np.ndarray, edit: int, slice_index: int, slice_number: int) -> list[SliceEdit]:
    """One :class:`SliceEdit` per organ whose ``(H, W)`` mask differs between ``(O, H, W) bool`` ``before`` and ``after``."""
    rows = []
    for o, organ in enumerate(labels.ORGANS):
        added, removed = int(np.count_nonzero(after[o] & ~before[o])), int(np.count_nonzero(before[o] & ~after[o]))
        if added or removed:
            rows.append(SliceEdit(edit, slice_index, slice_number, organ, added, removed))
    return rows


def write_edit_log(edits: list[SliceEdit], path: str | Path) -> Path:
    """``edits`` as a CSV with :data:`EDIT_LOG_HEADER` columns, one row per edit and organ."""
    path = Path(path)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(EDIT_LOG_HEADER)
        writer.writerows([e.edit, e.slice_index, e.slice_number, e.organ, e.pixels_added, e.pixels_removed]
                         for e in edits)
    return path


def training_slice(voxels: np.ndarray) -> np.ndarray:
    """A scan's voxels ``(..., H, W)`` as ``uint16`` for a 16-bit PNG.

    Integer scans within 0..65535 keep their values. Others (rescaled DICOM, float NIfTI) are
    stretched linearly from the scan's minimum to maximum onto 0..65535: training normalises
    each slice by its own minimum and maximum (:func:`model.image.normalize_intensity`), so a
    linear map of the whole scan changes what the model sees by rounding only.
    """
    voxels = np.asarray(voxels)
    if np.issubdtype(voxels.dtype, np.integer) and voxels.min() >= 0 and voxels.max() <= 65535:
        return voxels.astype(np.uint16)
    values = np.nan_to_num(voxels.astype(np.float64))
    lo, hi = float(values.min()), float(values.max())
    return np.round((values - lo) * (65535.0 / (hi - lo) if hi > lo else 0.0)).astype(np.uint16)


def write_corrections_zip(organ_masks: np.ndarray, scan: Scan, slice_indices, path: str | Path) -> Path:
    """The slices ``slice_indices`` (0-based) and their masks as a Kaggle layout ``train/`` reads, zipped.

    ``train.csv`` (``id,class,segmentation``, RLE of :mod:`model.rle`) and
    ``train/caseN/caseN_dayD/scans/slice_NNNN_W_H_PW_PH.png`` (16-bit, :func:`training_slice`), for
    ``python -m train fit --data.data_dir`` once unzipped. The case and day are the scan's, else
    :data:`FALLBACK_CASE_DAY` (rename the folder and the ``train.csv`` ids to merge several such zips).
    """
    check_organ_masks(organ_masks, scan.shape)
    indices = sorted({int(i) for i in slice_indices})
    case_day = scan.case_day or FALLBACK_CASE_DAY
    numbers = tuple(scan.slice_numbers[i] for i in indices)
    height, width = scan.shape[1:]
    row_mm, col_mm = scan.spacing_mm[1], scan.spacing_mm[2]
    folder = f"train/{case_day.split('_')[0]}/{case_day}/scans"
    pixels = training_slice(scan.voxels)
    path = Path(path)
    rle_csv = path.with_suffix(".csv.tmp")
    write_rle_csv(rle_csv, [RleVolume(case_day, numbers, organ_masks[:, indices])], column="segmentation")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(rle_csv, "train.csv")
        for i, number in zip(indices, numbers):
            buffer = io.BytesIO()
            Image.fromarray(pixels[i]).save(buffer, format="PNG")
            archive.writestr(f"{folder}/slice_{number:04d}_{width}_{height}_{col_mm:.2f}_{row_mm:.2f}.png",
                             buffer.getvalue())
    rle_csv.unlink()
    return path


@dataclass
class ScanEdits:
    """One session's segmented scan and what was done to it by hand.

    ``organ_masks``: ``(O, D, H, W) bool``, corrected. ``predicted``: the model's masks, packed
    with :func:`numpy.packbits` (an eighth of the memory). ``token``: new for every scan, carried
    by the editor so its edits land only in the scan it was opened on. ``edits``: the log.
    ``flags``: the current review flags. ``planning``: the planning structures asked for when the
    scan was segmented, kept for every rewrite.
    """

    scan: Scan
    organ_masks: np.ndarray
    predicted: np.ndarray
    flags: tuple = ()
    planning: PlanningRequest = PlanningRequest()
    edits: tuple[SliceEdit, ...] = ()
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @staticmethod
    def of_state(state: dict | None) -> ScanEdits:
        """The Scan tab state's edits; :class:`EditError` before a scan was segmented."""
        if not state:
            raise EditError("No scan: segment a scan first, then edit its slices.")
        return state["edits"]

    @classmethod
    def of(cls, result: SegmentedScan, planning: PlanningRequest = PlanningRequest()) -> ScanEdits:
        return cls(result.scan, result.organ_masks, np.packbits(result.organ_masks), tuple(result.outputs.flags),
                   planning)

    def predicted_slice(self, index: int) -> np.ndarray:
        """The model's own masks of slice ``index``, ``(O, H, W) bool``."""
        masks = np.unpackbits(self.predicted, count=self.organ_masks.size).reshape(self.organ_masks.shape)
        return masks[:, index].astype(bool)

    def editor(self, index: int, reset: bool = False) -> tuple[dict, dict]:
        """The editor's value for slice ``index`` (the corrected masks, or the model's with ``reset``),
        and the editor's state: this scan's token and the slice."""
        index = int(np.clip(index, 0, len(self.scan) - 1))
        masks = self.predicted_slice(index) if reset else self.organ_masks[:, index]
        return editor_value(self.scan.display_slice(index), masks), {"token": self.token, "slice_index": index}

    def reset_editor(self, editor_state: dict | None) -> tuple[dict, dict]:
        """The editor's slice again as the model predicted it; :class:`EditError` if the editor is on another scan."""
        if not editor_state or editor_state.get("token") != self.token:
            raise EditError("Open a slice of this scan in the editor first.")
        return self.editor(int(editor_state["slice_index"]), reset=True)

    @property
    def edited_organs(self) -> frozenset[str]:
        return frozenset(e.organ for e in self.edits)

    def apply(self, editor_state: dict | None, layers, out_dir: str | Path) -> tuple[ScanEdits, SegmentedScan] | None:
        """Write the editor's ``layers`` into their slice and every download into ``out_dir``.

        Returns the new state and the rewritten scan, or ``None`` when nothing changed. Raises
        :class:`EditError` for an editor opened on another scan or layers off the slice's grid;
        then nothing is written or logged.
        """
        if not editor_state or editor_state.get("token") != self.token:
            raise EditError("This edit was opened on another scan; open the current slice in the editor again.")
        index = int(editor_state["slice_index"])
        after = layers_to_masks(layers, self.scan.shape[1:])
        number = len({e.edit for e in self.edits}) + 1
        rows = changes(self.organ_masks[:, index], after, number, index, self.scan.slice_numbers[index])
        if not rows:
            return None
        masks = self.organ_masks.copy()
        masks[:, index] = after
        edits = (*self.edits, *rows)
        edited = {(e.slice_index, e.organ) for e in edits}
        # The flags were scored with the model's probabilities, gone since the first write: keep them,
        # but not on a slice someone has now looked at and corrected.
        kept = [f for f in self.flags if f.slice_index not in {index for index, _ in edited}]
        state = replace(self, organ_masks=masks, edits=edits)
        out_dir = Path(out_dir)
        outputs = write_outputs(masks, self.scan, out_dir, planning=self.planning, flags=kept,
                                edited_organs=state.edited_organs)
        stem = self.scan.name
        outputs = replace(outputs, edit_log=write_edit_log(list(edits), out_dir / f"{stem}_edits.csv"),
                          corrections=write_corrections_zip(masks, self.scan, sorted({e.slice_index for e in edits}),
                                                            out_dir / f"{stem}_corrections.zip"))
        return replace(state, flags=outputs.flags), SegmentedScan(self.scan, masks, outputs, measure(masks, self.scan))

    def notes(self) -> list[str]:
        """A line on the edits for the Scan tab's notes; none before the first."""
        pairs = len({(e.slice_index, e.organ) for e in self.edits})
        return [f"Corrected by hand: {pairs} slice and organ pair{'s' if pairs != 1 else ''} (see the edit log); "
                "every download is recomputed from the corrected masks."] if pairs else []

    def review_rows(self) -> list[list]:
        """The Scan tab's review table: the flags, then one "edited" row per edited slice and organ (slider positions)."""
        rows = [[f.slice_index + 1, labels.DISPLAY_NAMES[f.organ], f.score, f.reason] for f in self.flags]
        totals: dict[tuple[int, str], list[int]] = {}
        for e in self.edits:
            total = totals.setdefault((e.slice_index, e.organ), [0, 0])
            total[0] += e.pixels_added
            total[1] += e.pixels_removed
        for (index, organ), (added, removed) in sorted(totals.items(), key=lambda t: (t[0][0], labels.ORGANS.index(t[0][1]))):
            rows.append([index + 1, labels.DISPLAY_NAMES[organ], "edited",
                         f"corrected by hand: {added} pixels added, {removed} removed"])
        return sorted(rows, key=lambda row: row[0])
