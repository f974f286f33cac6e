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
    number of contours that lie off the scan's slices."""
    from skimage.draw import polygon

    filled = np.zeros(scan.shape, dtype=bool)
    off_grid = 0
    for contour in roi_contour.get("ContourSequence", []):
        if contour.get("ContourGeometricType", "") not in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR"):
            continue
        points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
        voxels = _to_voxels(scan, points)
        k = float(np.mean(voxels[:, 2]))
        s = int(round(k))
        if abs(k - s) > PLANE_TOLERANCE or np.ptp(voxels[:, 2]) > 2 * PLANE_TOLERANCE or not 0 <= s < len(scan):
            off_grid += 1
            continue
        rr, cc = polygon(voxels[:, 1], voxels[:, 0], scan.shape[1:])
        filled[s, rr, cc] ^= True  # even-odd: a contour inside another is a hole
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
    for segment, s, frame in _seg_frames(seg, scan, set(segment_organ), threshold):
        if frame is None:
            off_grid += 1
        else:
            truth[labels.ORGANS.index(segment_organ[segment]), s] |= frame
    if off_grid and truth.sum() == 0:
        raise ScanError(f"None of the frames of {path.name} lie on the scan's slices; is it from another series?")
    notes = _notes(set(segment_organ.values()), skipped, "segments")
    if off_grid:
        notes.append(f"{off_grid} frames of {path.name} are not on the scan's slices and were ignored.")
    return truth, notes


def _seg_frames(seg, scan: Scan, segments: set[int], threshold: float):
    """``(segment, slice index, (H, W) bool)`` for each frame of ``segments``; the mask is ``None``
    for a frame off the scan's slices (another plane, position or orientation)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    lps = _lps(scan)
    for f, frame_groups in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        segment = int(_group(frame_groups, shared, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        if segment not in segments:
            continue
        position = np.array([float(v) for v in _group(frame_groups, shared, "PlanePositionSequence").ImagePositionPatient])
        orientation = np.array([float(v) for v in
                                _group(frame_groups, shared, "PlaneOrientationSequence").ImageOrientationPatient])
        col, row, k = _to_voxels(scan, position[None])[0]
        s = int(round(k))
        same_plane = np.allclose(orientation[:3], lps[:3, 0] / np.linalg.norm(lps[:3, 0]), atol=1e-3) and \
            np.allclose(orientation[3:], lps[:3, 1] / np.linalg.norm(lps[:3, 1]), atol=1e-3)
        if not same_plane or max(abs(col), abs(row), abs(k - s)) > PLANE_TOLERANCE or not 0 <= s < len(scan):
            yield segment, s, None
        else:
            yield segment, s, seg.get_stored_frame(f) > threshold


def _read_seg(path: Path, scan: Scan):
    """A highdicom Segmentation of ``scan``'s frame size, and the threshold that makes its frames masks."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception:  # noqa: BLE001 - highdicom raises many types for a malformed SEG
        raise ScanError(f"{path.name} is not a readable DICOM SEG.") from None
    if (int(seg.Rows), int(seg.Columns)) != scan.shape[1:]:
        raise ScanError(f"{path.name} has {seg.Columns}×{seg.Rows} px frames; the scan's slices are "
                        f"{scan.shape[2]}×{scan.shape[1]}.")
    if str(seg.get("SegmentationType", "BINARY")) == "LABELMAP":
        raise ScanError(f"{path.name} is a label-map DICOM SEG; export it as a BINARY or FRACTIONAL SEG.")
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    return seg, 0.5 * float(seg.get("MaximumFractionalValue", 1) or 1) if fractional else 0.5


def named_structure(path: Path, name: str, scan: Scan) -> tuple[np.ndarray, object]:
    """The RTSTRUCT ROI or DICOM SEG segment called ``name`` (case and spaces ignored) on ``scan``'s grid.

    Returns ``(D, H, W) bool`` and the file's header (for its patient and frame of reference).
    Raises :class:`ScanError` naming the structures the file has when none is called ``name``, and
    when its contours or frames lie off the scan's slices.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        sop_class = str(header.get("SOPClassUID", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
        raise ScanError(f"{path.name} is not a readable DICOM file.") from None

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
        for _, s, frame in _seg_frames(seg, scan, wanted, threshold):
            if frame is None:
                off_grid += 1
            else:
                mask[s] |= frame
    else:
        raise ScanError(f"{path.name} is a DICOM file but neither an RTSTRUCT nor a DICOM SEG.")
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
