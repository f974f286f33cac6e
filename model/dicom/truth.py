"""Clinical contours as ground truth: an RTSTRUCT or a DICOM SEG of the scan's series, on its grid.

Both are placed by patient coordinates, not by UIDs: the scan's affine (``Scan.affine``, RAS)
gives each voxel's position, so a file made on the same series lines up whatever order its
frames or contours come in. Structures are matched to organs by their coded anatomy (SEG) or
their names (:func:`organ_for_name`); planning margins (PRV) and unknown structures are skipped.

RTSTRUCT contours are filled slice by slice with ``skimage.draw.polygon`` (pixel centres inside
the contour), and contours on the same slice combine by the even-odd rule: a contour inside
another is a hole. That reads the keyhole contours of :mod:`model.dicom.rtstruct` and the separate
inner contours other systems write alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import labels
from ..scans.base import LPS_TO_RAS, Scan, ScanError
from .codes import ANATOMICAL_STRUCTURE, ORGAN_FOR_CODE, RT_STRUCTURE_SET_STORAGE, SEGMENTATION_STORAGE
#: How far (voxels) a contour plane or frame may sit from a slice of the scan and still be on it.
PLANE_TOLERANCE = 0.1


def organ_for_name(name: str) -> str | None:
    """The organ a structure name means, or ``None``: ``Stomach``; ``Small bowel``, ``Bowel_Small``,
    ``SmallIntestine``; ``Large bowel``, ``Bowel_Large``, ``Colon``. Names with PRV, bag or a margin
    in them are planning structures, not organs."""
    words = re.sub(r"[^a-z]+", " ", name.lower().replace("_", " ")).split()
    joined = "".join(words)
    if any(w in ("prv", "bag", "ring", "opt", "expand", "margin") for w in words) or "prv" in joined:
        return None
    if joined in ("stomach",):
        return "stomach"
    gut = any(w in joined for w in ("bowel", "intestine"))
    if "small" in joined and gut:
        return "small_bowel"
    if ("large" in joined and gut) or joined in ("colon", "largecolon"):
        return "large_bowel"
    return None


def truth_from_dicom(path: Path, scan: Scan) -> tuple[np.ndarray, list[str]]:
    """``(O, S, H, W) bool`` ground truth from an RTSTRUCT or DICOM SEG, plus one-line notes."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        sop_class = str(header.get("SOPClassUID", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
        raise ScanError(f"{path.name} is not a readable DICOM file.") from None
    if sop_class == RT_STRUCTURE_SET_STORAGE:
        return _truth_from_rtstruct(path, header, scan)
    if sop_class == SEGMENTATION_STORAGE:
        return _truth_from_seg(path, scan)
    raise ScanError(f"{path.name} is a DICOM file but neither an RTSTRUCT nor a DICOM SEG.")


def _lps(scan: Scan) -> np.ndarray:
    """``(4, 4)`` from ``(col, row, slice, 1)`` to DICOM patient (LPS) mm."""
    return LPS_TO_RAS @ scan.affine


def _to_voxels(scan: Scan, points_lps: np.ndarray) -> np.ndarray:
    """``(N, 3)`` LPS mm → ``(N, 3)`` ``(col, row, slice)`` voxel coordinates of ``scan``."""
    homogeneous = np.c_[points_lps, np.ones(len(points_lps))]
    return (np.linalg.solve(_lps(scan), homogeneous.T)[:3]).T


def _truth_from_rtstruct(path: Path, ds, scan: Scan) -> tuple[np.ndarray, list[str]]:
    truth = np.zeros((len(labels.ORGANS), *scan.shape), dtype=bool)
    names = _roi_names(ds)
    found: set[str] = set()
    skipped = off_grid = 0
    for roi_contour in ds.get("ROIContourSequence", []):
        organ = organ_for_name(names.get(int(roi_contour.ReferencedROINumber), ""))
        if organ is None or organ in found:
            skipped += 1
            continue
        found.add(organ)
        truth[labels.ORGANS.index(organ)], missed = _fill_roi(roi_contour, scan)
        off_grid += missed
    if off_grid and truth.sum() == 0:
        raise ScanError(f"None of the contours of {path.name} lie on the scan's slices; is it from another series?")
    notes = _notes(found, skipped, "ROIs")
    if off_grid:
        notes.append(f"{off_grid} contours of {path.name} lie off the scan's slices and were ignored.")
    if not found:
        raise ScanError(f"{path.name} has no ROI named as stomach, small bowel or large bowel.")
    return truth, notes


def _roi_names(ds) -> dict[int, str]:
    return {int(roi.ROINumber): str(roi.get("ROIName", "")) for roi in ds.get("StructureSetROISequence", [])}


def _fill_roi(roi_contour, scan: Scan) -> tuple[np.ndarray, int]:
    """One RTSTRUCT ROI's closed planar contours filled on the scan's grid: ``(D, H, W) bool`` and the
    number of contours that lie off the scan's slices.

    A contour is filled in the plane of the scan's grid it lies in: an axial slice, or (for a series
    stored sagittal or coronal, whose scan was turned to axial slices) a plane across the slices.
    """
    from skimage.draw import polygon

    filled = np.zeros(scan.shape, dtype=bool)
    off_grid = 0
    for contour in roi_contour.get("ContourSequence", []):
        if contour.get("ContourGeometricType", "") not in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR"):
            continue
        points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
        voxels = _to_voxels(scan, points)[:, ::-1]  # (slice, row, col), the array's axis order
        flat = [a for a in (0, 1, 2) if np.ptp(voxels[:, a]) <= 2 * PLANE_TOLERANCE]
        axis = 0 if 0 in flat else (flat[0] if flat else None)
        k = float(np.mean(voxels[:, axis])) if axis is not None else np.nan
        s = int(round(k)) if axis is not None else -1
        if axis is None or abs(k - s) > PLANE_TOLERANCE or not 0 <= s < scan.shape[axis]:
            off_grid += 1
            continue
        first, second = (a for a in (0, 1, 2) if a != axis)
        rr, cc = polygon(voxels[:, first], voxels[:, second], (scan.shape[first], scan.shape[second]))
        index: list = [None, None, None]
        index[axis], index[first], index[second] = s, rr, cc
        filled[tuple(index)] ^= True  # even-odd: a contour inside another is a hole
    return filled, off_grid


def _truth_from_seg(path: Path, scan: Scan) -> tuple[np.ndarray, list[str]]:
    seg, threshold = _read_seg(path, scan)
    segment_organ: dict[int, str] = {}
    skipped = 0
    for item in seg.SegmentSequence:
        category = str(item.SegmentedPropertyCategoryCodeSequence[0].CodeValue)
        code = str(item.SegmentedPropertyTypeCodeSequence[0].CodeValue)
        organ = ORGAN_FOR_CODE.get(code) if category == ANATOMICAL_STRUCTURE else None
        organ = organ or organ_for_name(str(item.get("SegmentLabel", "")))
        if organ is None or organ in segment_organ.values():
            skipped += 1
        else:
            segment_organ[int(item.SegmentNumber)] = organ
    if not segment_organ:
        raise ScanError(f"{path.name} has no stomach, small bowel or large bowel segment.")
    truth = np.zeros((len(labels.ORGANS), *scan.shape), dtype=bool)
    off_grid = 0
    for segment, index, frame in _seg_frames(seg, scan, set(segment_organ), threshold):
        if index is None:
            off_grid += 1
        else:
            truth[labels.ORGANS.index(segment_organ[segment])][index] |= frame
    if off_grid and truth.sum() == 0:
        raise ScanError(f"None of the frames of {path.name} lie on the scan's slices; is it from another series?")
    notes = _notes(set(segment_organ.values()), skipped, "segments")
    if off_grid:
        notes.append(f"{off_grid} frames of {path.name} are not on the scan's slices and were ignored.")
    return truth, notes


def _seg_frames(seg, scan: Scan, segments: set[int], threshold: float):
    """``(segment, index, (R, C) bool)`` for each frame of ``segments``: ``index`` places the frame's
    pixels in the scan's ``(D, H, W)`` array (an axial slice, or a plane across the slices when the
    series was stored sagittal or coronal and its scan turned to axial slices). The index is ``None``
    for a frame off the scan's grid (another plane, position, orientation or pixel size)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    rows, cols = np.arange(int(seg.Rows)), np.arange(int(seg.Columns))
    for f, frame_groups in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        segment = int(_group(frame_groups, shared, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        if segment not in segments:
            continue
        position = np.array([float(v) for v in _group(frame_groups, shared, "PlanePositionSequence").ImagePositionPatient])
        orientation = np.array([float(v) for v in
                                _group(frame_groups, shared, "PlaneOrientationSequence").ImageOrientationPatient])
        row_mm, col_mm = (float(v) for v in _group(frame_groups, shared, "PixelMeasuresSequence").PixelSpacing)
        # The frame's origin and its steps along a row and down a column, in the scan's (slice, row, col) voxels.
        origin, along_row, down_col = (_to_voxels(scan, np.array([position, position + orientation[:3] * col_mm,
                                                                  position + orientation[3:] * row_mm]))[:, ::-1])
        yield segment, _frame_index(origin, along_row - origin, down_col - origin, rows, cols, scan.shape), \
            seg.get_stored_frame(f) > threshold


def _frame_index(origin, step_col, step_row, rows, cols, shape):
    """Index arrays that place an ``(R, C)`` frame in a ``shape`` array, or ``None`` when its pixels are not
    voxels of it: each step must be one voxel along one axis, the origin a voxel, every pixel inside, and the
    frame's far edge still within :data:`PLANE_TOLERANCE` of a voxel (a tilt or a pixel size a little off
    adds up across the frame)."""
    axes = []
    for step, count in ((step_row, len(rows)), (step_col, len(cols))):
        axis = int(np.argmax(np.abs(step)))
        unit = np.zeros(3)
        unit[axis] = np.sign(step[axis])
        if np.abs(step - unit).max() * max(count - 1, 1) > PLANE_TOLERANCE:
            return None
        axes.append((axis, int(unit[axis])))
    (row_axis, row_sign), (col_axis, col_sign) = axes
    start = np.rint(origin)
    if row_axis == col_axis or np.abs(origin - start).max() > PLANE_TOLERANCE:
        return None
    plane = 3 - row_axis - col_axis
    index: list = [None, None, None]
    index[plane] = int(start[plane])
    index[row_axis] = (int(start[row_axis]) + row_sign * rows)[:, None]
    index[col_axis] = (int(start[col_axis]) + col_sign * cols)[None, :]
    inside = all(np.all((0 <= np.asarray(i)) & (np.asarray(i) < n)) for i, n in zip(index, shape))
    return tuple(index) if inside else None


def _read_seg(path: Path, scan: Scan):
    """A highdicom Segmentation of ``scan``'s frame size, and the threshold that makes its frames masks."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception:  # noqa: BLE001 - highdicom raises many types for a malformed SEG
        raise ScanError(f"{path.name} is not a readable DICOM SEG.") from None
    planes = {(scan.shape[a], scan.shape[b]) for a in range(3) for b in range(3) if a != b}
    if (int(seg.Rows), int(seg.Columns)) not in planes:
        raise ScanError(f"{path.name} has {seg.Columns}×{seg.Rows} px frames; the scan's slices are "
                        f"{scan.shape[2]}×{scan.shape[1]}.")
    if str(seg.get("SegmentationType", "BINARY")) == "LABELMAP":
        raise ScanError(f"{path.name} is a label-map DICOM SEG; export it as a BINARY or FRACTIONAL SEG.")
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    return seg, 0.5 * float(seg.get("MaximumFractionalValue", 1) or 1) if fractional else 0.5


def structure_header(path: Path):
    """The header of an RTSTRUCT or DICOM SEG file (no pixel data); :class:`ScanError` for an unreadable file or
    another kind of DICOM (an image, an RTDOSE, …)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        sop_class = str(header.get("SOPClassUID", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
        raise ScanError(f"{path.name} is not a readable DICOM file.") from None
    if sop_class not in (RT_STRUCTURE_SET_STORAGE, SEGMENTATION_STORAGE):
        raise ScanError(f"{path.name} is a DICOM file but neither an RTSTRUCT nor a DICOM SEG.")
    return header


def named_structure(path: Path, name: str, scan: Scan) -> tuple[np.ndarray, object]:
    """The RTSTRUCT ROI or DICOM SEG segment called ``name`` (case and spaces ignored) on ``scan``'s grid.

    Returns ``(D, H, W) bool`` and the file's header (for its patient and frame of reference).
    Raises :class:`ScanError` naming the structures the file has when none is called ``name``, and
    when its contours or frames lie off the scan's slices.
    """
    header = structure_header(path)
    sop_class = str(header.get("SOPClassUID", ""))

    def same(a: str) -> bool:
        return "".join(a.lower().split()) == "".join(name.lower().split())

    if sop_class == RT_STRUCTURE_SET_STORAGE:
        names = _roi_names(header)
        for roi_contour in header.get("ROIContourSequence", []):
            if same(names.get(int(roi_contour.ReferencedROINumber), "")):
                mask, off_grid = _fill_roi(roi_contour, scan)
                break
        else:
            raise ScanError(f"{path.name} has no ROI named {name!r}; its ROIs: {', '.join(names.values()) or 'none'}.")
    elif sop_class == SEGMENTATION_STORAGE:
        seg, threshold = _read_seg(path, scan)
        labels_by_number = {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in seg.SegmentSequence}
        wanted = {n for n, label in labels_by_number.items() if same(label)}
        if not wanted:
            raise ScanError(f"{path.name} has no segment named {name!r}; its segments: "
                            f"{', '.join(labels_by_number.values()) or 'none'}.")
        mask, off_grid = np.zeros(scan.shape, dtype=bool), 0
        for _, index, frame in _seg_frames(seg, scan, wanted, threshold):
            if index is None:
                off_grid += 1
            else:
                mask[index] |= frame
    if not mask.any():
        where = "lie off the scan's slices; is it from another series?" if off_grid else "are empty."
        raise ScanError(f"The contours of {name!r} in {path.name} {where}")
    return mask, header


def _group(frame_groups, shared, keyword: str):
    """One functional group's first item: the frame's own, else the shared one."""
    sequence = frame_groups.get(keyword) or shared.get(keyword)
    if not sequence:
        raise ScanError(f"The DICOM SEG lacks {keyword}.")
    return sequence[0]


def _notes(found: set[str], skipped: int, what: str) -> list[str]:
    notes = []
    missing = [labels.DISPLAY_NAMES[o].lower() for o in labels.ORGANS if o not in found]
    if missing:
        notes.append(f"No {', '.join(missing)} in the ground truth; counted as empty.")
    if skipped:
        notes.append(f"{skipped} other {what} (planning margins, other structures, duplicates) were ignored.")
    return notes
