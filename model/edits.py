"""Correcting a segmented scan by hand, one slice at a time: the masks, the edit log, the downloads.

:class:`ScanEdits` is one scan's corrected masks, the model's prediction (to reset to) and the
log of applied edits. :meth:`ScanEdits.apply` writes one slice's corrected masks into the scan
and then every download again (:func:`model.exports.write_outputs`), plus:

- ``<scan>_edits.csv``: one row per applied edit, slice and organ changed (:data:`EDIT_LOG_HEADER`),
  with the tool (brush, click, propagate, fill between) and, for clicks, the clicks themselves;
- ``<scan>_corrections.zip``: the edited slices and their corrected labels in the Kaggle layout
  ``train/`` reads (``train.csv`` RLE rows and ``train/caseN/caseN_dayD/scans/slice_*.png``).

The DICOM exports then mark the edited organs SEMIAUTOMATIC (:func:`model.dicom.export.algorithm_types`).
The editor itself (its value ⇄ masks) is the page's: :mod:`ui.editor`.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import labels
from .measure import measure
from .planning import PlanningRequest
from .exports import SegmentedScan, WrittenParts, write_outputs
from .rle import RleVolume, write_rle_csv
from .scans.base import Scan, check_organ_masks
from .scans.kaggle import scan_folder

EDIT_LOG_HEADER = ("edit", "slice_index", "slice_number", "organ", "pixels_added", "pixels_removed", "tool", "clicks")
#: The tools an edit can come from (the log's ``tool`` column).
TOOLS = ("brush", "click", "propagate", "fill_between")
#: The case and day a corrections zip uses for a scan whose name has none (NIfTI, DICOM, loose files).
FALLBACK_CASE_DAY = "case0_day0"


@dataclass(frozen=True)
class SliceEdit:
    """One organ changed on one slice by one applied edit: ``slice_index`` 0-based in the scan, pixels added
    and removed, the tool (:data:`TOOLS`) and, for a click edit, its clicks as ``+row:col`` (add) and
    ``-row:col`` (remove), space-separated, oldest first."""

    edit: int
    slice_index: int
    slice_number: int
    organ: str
    pixels_added: int
    pixels_removed: int
    tool: str = "brush"
    clicks: str = ""


def changes(before: np.ndarray, after: np.ndarray, edit: int, slice_index: int, slice_number: int,
            tool: str = "brush", clicks: dict[str, str] | None = None) -> list[SliceEdit]:
    """One :class:`SliceEdit` per organ whose ``(H, W)`` mask differs between ``(O, H, W) bool`` ``before`` and
    ``after``; ``clicks``: ``{organ: clicks_text}`` for a click edit."""
    rows = []
    for o, organ in enumerate(labels.ORGANS):
        added, removed = int(np.count_nonzero(after[o] & ~before[o])), int(np.count_nonzero(before[o] & ~after[o]))
        if added or removed:
            rows.append(SliceEdit(edit, slice_index, slice_number, organ, added, removed, tool,
                                   (clicks or {}).get(organ, "")))
    return rows


def clicks_text(clicks) -> str:
    """Clicks ``(row, col, positive)`` as the log writes them: ``+row:col`` or ``-row:col``, space-separated."""
    return " ".join(f"{'+' if positive else '-'}{row}:{col}" for row, col, positive in clicks)


def write_edit_log(edits: list[SliceEdit], path: str | Path) -> Path:
    """``edits`` as a CSV with :data:`EDIT_LOG_HEADER` columns, one row per edit and organ."""
    path = Path(path)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(EDIT_LOG_HEADER)
        writer.writerows([e.edit, e.slice_index, e.slice_number, e.organ, e.pixels_added, e.pixels_removed,
                          e.tool, e.clicks] for e in edits)
    return path


def training_slice(voxels: np.ndarray, indices=None) -> np.ndarray:
    """A scan's voxels ``(D, H, W)`` (or any array) as ``uint16`` for a 16-bit PNG; ``indices``: only those slices.

    Integer scans within 0..65535 keep their values. Others (rescaled DICOM, float NIfTI) are
    stretched linearly from the scan's minimum to maximum onto 0..65535 (NaN counts as 0, as
    :func:`numpy.nan_to_num` has it): training normalises each slice by its own minimum and maximum
    (:func:`model.image.normalize_intensity`), so a linear map of the whole scan changes what the model
    sees by rounding only. The range is always the whole scan's; only the slices asked for are converted.
    """
    voxels = np.asarray(voxels)
    chosen = voxels if indices is None else voxels[list(indices)]
    if np.issubdtype(voxels.dtype, np.integer) and voxels.min() >= 0 and voxels.max() <= 65535:
        return chosen.astype(np.uint16)
    lo, hi = _nan_to_num_range(voxels)
    values = np.nan_to_num(chosen.astype(np.float64))
    return np.round((values - lo) * (65535.0 / (hi - lo) if hi > lo else 0.0)).astype(np.uint16)


def _nan_to_num_range(voxels: np.ndarray) -> tuple[float, float]:
    """The minimum and maximum of ``numpy.nan_to_num(voxels.astype(float64))``, without that float64 copy."""
    lo, hi = np.min(voxels), np.max(voxels)
    if np.isnan(lo) or np.isnan(hi):  # NaN becomes 0
        finite = voxels[~np.isnan(voxels)]
        lo, hi = (min(finite.min(), 0), max(finite.max(), 0)) if finite.size else (0, 0)
    lo, hi = np.nan_to_num(np.array([lo, hi], dtype=np.float64))  # ±inf become float64's extremes, as there
    return float(lo), float(hi)


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
    folder = scan_folder(case_day)
    pixels = training_slice(scan.voxels, indices)
    path = Path(path)
    rle_csv = path.with_suffix(".csv.tmp")
    write_rle_csv(rle_csv, [RleVolume(case_day, numbers, organ_masks[:, indices])], column="segmentation")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(rle_csv, "train.csv")
        for image, number in zip(pixels, numbers):
            # Written again after every edit, for every slice edited so far: zlib's fastest level (several
            # times faster than its default, a little larger), stored as it is (a PNG is compressed already).
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
            archive.writestr(f"{folder}/slice_{number:04d}_{width}_{height}_{col_mm:.2f}_{row_mm:.2f}.png",
                             buffer.getvalue(), compress_type=zipfile.ZIP_STORED)
    rle_csv.unlink()
    return path


@dataclass(frozen=True)
class ScanEdits:
    """One segmented scan and what was done to it by hand.

    ``organ_masks``: ``(O, D, H, W) bool``, corrected. ``predicted``: the model's masks, packed
    with :func:`numpy.packbits` (an eighth of the memory). ``flags``: the current review flags.
    ``planning``: the planning structures asked for when the scan was segmented, kept for every
    rewrite. ``edits``: the log. ``probabilities``: the model's ``(O, D, H, W) float16`` organ
    probabilities when they were kept (the app keeps them for the session: 96 MB for the largest
    scan), so that every applied edit scores the review flags again (:meth:`apply`). ``parts``: the slice
    PNGs, organ surfaces and review sums of these masks' downloads (:class:`model.exports.WrittenParts`): an
    edit makes them again only where it changed the masks.
    """

    scan: Scan
    organ_masks: np.ndarray
    predicted: np.ndarray
    flags: tuple = ()
    planning: PlanningRequest = PlanningRequest()
    edits: tuple[SliceEdit, ...] = ()
    probabilities: np.ndarray | None = None
    parts: WrittenParts = field(default_factory=WrittenParts, compare=False, repr=False)

    @classmethod
    def of(cls, result: SegmentedScan, planning: PlanningRequest = PlanningRequest()) -> ScanEdits:
        return cls(result.scan, result.organ_masks, np.packbits(result.organ_masks), tuple(result.outputs.flags),
                   planning, probabilities=result.probabilities, parts=result.outputs.parts)

    def predicted_slice(self, index: int) -> np.ndarray:
        """The model's own masks of slice ``index``, ``(O, H, W) bool``."""
        masks = np.unpackbits(self.predicted, count=self.organ_masks.size).reshape(self.organ_masks.shape)
        return masks[:, index].astype(bool)

    @property
    def edited_organs(self) -> frozenset[str]:
        return frozenset(e.organ for e in self.edits)

    def corrected(self, organ: str, tools: tuple[str, ...] = TOOLS) -> list[int]:
        """The slices (0-based, ascending) on which ``organ`` was changed by an applied edit made with one of
        ``tools`` (:data:`TOOLS`; by default any)."""
        return sorted({e.slice_index for e in self.edits if e.organ == organ and e.tool in tools})

    def apply(self, index: int, slice_masks: np.ndarray, out_dir: str | Path, tool: str = "brush",
              clicks: dict[str, str] | None = None) -> tuple[ScanEdits, SegmentedScan] | None:
        """Write ``slice_masks`` ``(O, H, W) bool`` into slice ``index`` and every download into ``out_dir``.

        Returns the new state and the rewritten scan, or ``None`` when nothing changed (then nothing
        is written or logged). ``tool`` and ``clicks`` (``{organ: clicks_text(...)}``) go into the edit log.
        """
        return self.apply_slices({index: slice_masks}, out_dir, tool, clicks)

    def apply_slices(self, slice_masks: dict[int, np.ndarray], out_dir: str | Path, tool: str = "brush",
                     clicks: dict[str, str] | None = None) -> tuple[ScanEdits, SegmentedScan] | None:
        """:meth:`apply` for several slices at once, one edit in the log: ``{slice index: (O, H, W) bool}``
        (a propagation or a fill between slices)."""
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
        expected = (len(labels.ORGANS), *self.scan.shape[1:])
        for index, masks in slice_masks.items():
            if not 0 <= int(index) < len(self.scan):
                raise ValueError(f"slice index {index} is outside the scan (0..{len(self.scan) - 1})")
            if masks.shape != expected:
                raise ValueError(f"slice_masks must be {expected}, got {masks.shape}")
        number = len({e.edit for e in self.edits}) + 1
        rows = [row for index, masks in sorted(slice_masks.items())
                for row in changes(self.organ_masks[:, index], masks, number, index, self.scan.slice_numbers[index],
                                   tool, clicks)]
        if not rows:
            return None
        masks = self.organ_masks.copy()
        for index, slice_mask in slice_masks.items():
            masks[:, index] = slice_mask
        return replace(self, organ_masks=masks, edits=(*self.edits, *rows),
                       parts=self.parts.without(self.organ_masks, masks, slice_masks)).write(out_dir)

    def write(self, out_dir: str | Path) -> tuple[ScanEdits, SegmentedScan]:
        """Every download of these masks into ``out_dir`` (the review flags scored again), and the state with
        those flags. :meth:`apply` calls it; so does an undo that goes back to an earlier state."""
        masks, edits = self.organ_masks, self.edits
        edited = frozenset((e.slice_index, e.organ) for e in edits)
        # Scored again from the corrected masks and the model's probabilities; when the probabilities were not
        # kept, the model's flags, but none on a slice someone corrected.
        flags = None if self.probabilities is not None else \
            [f for f in self.flags if f.slice_index not in {index for index, _ in edited}]
        out_dir = Path(out_dir)
        outputs = write_outputs(masks, self.scan, out_dir, probabilities=self.probabilities, planning=self.planning,
                                flags=flags, reviewed=edited, edited_organs=self.edited_organs, parts=self.parts)
        if edits:
            stem = self.scan.name
            outputs = replace(outputs, edit_log=write_edit_log(list(edits), out_dir / f"{stem}_edits.csv"),
                              corrections=write_corrections_zip(masks, self.scan, sorted({e.slice_index for e in edits}),
                                                                out_dir / f"{stem}_corrections.zip"))
        return (replace(self, flags=outputs.flags, parts=outputs.parts),
                SegmentedScan(self.scan, masks, outputs, measure(masks, self.scan), self.probabilities))


@dataclass(frozen=True)
class Undo:
    """The way back from an applied edit, holding only what it changed: the masks ``(O, H, W) bool`` of the
    slices it changed as they were before it (``slices``), and the edit log and review flags before it. An undo
    step costs the slices an edit touched, not a second copy of the scan's masks, so a session can keep many.

    ``after``: the edit log the edit left; the step fits only a state with that log (:meth:`fits`).
    """

    slices: dict[int, np.ndarray]
    edits: tuple[SliceEdit, ...]
    flags: tuple
    after: tuple[SliceEdit, ...]

    @classmethod
    def between(cls, before: ScanEdits, after: ScanEdits) -> Undo:
        """The step that takes ``after`` (an edit applied to ``before``) back to ``before``."""
        changed = np.flatnonzero((before.organ_masks != after.organ_masks).any(axis=(0, 2, 3)))
        return cls({int(d): before.organ_masks[:, d].copy() for d in changed}, before.edits, tuple(before.flags),
                   after.edits)

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.slices.values())

    def fits(self, edits: ScanEdits) -> bool:
        """Whether ``edits`` is the state this step was made from (nothing applied since)."""
        return edits.edits == self.after

    def back(self, edits: ScanEdits) -> ScanEdits:
        """``edits`` as it was before the step's edit (call :meth:`ScanEdits.write` to write its downloads)."""
        masks = edits.organ_masks.copy()
        for index, slice_masks in self.slices.items():
            masks[:, index] = slice_masks
        return replace(edits, organ_masks=masks, edits=self.edits, flags=self.flags,
                       parts=edits.parts.without(edits.organ_masks, masks, self.slices))
