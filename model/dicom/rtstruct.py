"""RT Structure Set export: one ROI per structure, closed planar contours in patient coordinates.

Written with pydicom, with our own contour tracing (no well-kept library fits). rt-utils 1.2.7,
measured on a real volume when this was designed (issue #12), falls short twice: its Contour Data values can be longer than the 16 characters the
DS VR allows (dciodvfy reports them), and it traces through the centres of boundary pixels, so
rasterising its contours loses about half of the boundary pixels (Dice ~0.93 against its own
mask on bowel loops).

Here each slice's mask is traced with ``skimage.measure.find_contours`` at level 0.5 on the mask
padded by one pixel: the contour runs half-way between inside and outside pixel centres, so a
rasteriser that keeps the pixels whose centres fall inside the contour gets the mask back.
Planning systems disagree on what two contours on one plane mean: plastimatch, by default, ORs
them, others XOR them (inner contours as holes). So a hole is never written as its own contour: it
is joined to the contour around it by a zero-width cut (the "keyhole" encoding), along a row
line that passes between pixel centres. Every contour written then encloses only organ pixels,
and both rules give the same mask. Values are written with at most 3 decimals (µm), well within DS's
16 characters.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..planning import Structure
from ..scans.base import SourceSeries
from .codes import MANUFACTURER, MODEL_NAME, RT_STRUCTURE_SET_STORAGE, SOFTWARE_VERSION, STUDY_COMPONENT_MANAGEMENT
#: What RTROIInterpretedType each structure kind gets: organs and the bowel bag are organs at
#: risk; a PRV is a region whose dose is to be kept low (DICOM has no PRV term). The course report's
#: mapped target is a PTV, and its rings are CONTROL regions (structures to count within, not to treat).
INTERPRETED_TYPE = {"organ": "ORGAN", "bowel_bag": "ORGAN", "prv": "AVOIDANCE", "target": "PTV", "ring": "CONTROL"}
#: Source attributes copied so the file files under the same patient and study.
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                          "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
_CONTOUR_DATA = 0x30060050
_TYPE2 = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber"}


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours of one slice's ``(H, W) bool`` mask, each ``(N, 2) float64`` ``(row, col)``.

    One contour per connected piece, its holes joined in by keyholes (see the module notes). The
    last point is not repeated (CLOSED_PLANAR closes itself). Collinear points are dropped.
    """
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    rings = []
    for contour in find_contours(padded, 0.5):
        contour = approximate_polygon(contour, tolerance=0) - 1.0  # back to unpadded pixel indices
        if len(contour) > 3:  # a closed contour repeats its first point; three corners at least
            rings.append(contour[:-1])
    depth, parent = _nesting(rings)
    result = []
    for i, ring in enumerate(rings):
        if depth[i] % 2 == 0:  # an outer boundary (nested islands inside holes are outer again)
            holes = [rings[h] for h in range(len(rings)) if parent[h] == i]
            result.extend(_keyhole(ring, holes))
    return result


def _nesting(rings: list[np.ndarray]) -> tuple[list[int], list[int | None]]:
    """How many rings enclose each ring, and the innermost one that does (``None`` at the top level)."""
    from skimage.measure import points_in_poly

    enclosing: list[list[int]] = [[] for _ in rings]
    if len(rings) > 1:
        lows = np.array([r.min(axis=0) for r in rings])
        highs = np.array([r.max(axis=0) for r in rings])
        # Ring j can enclose ring i only if its bounding box does; test just those pairs.
        boxed = np.all(lows[:, None] >= lows[None], axis=2) & np.all(highs[:, None] <= highs[None], axis=2)
        np.fill_diagonal(boxed, False)
        for i, j in zip(*np.nonzero(boxed)):
            # Contours at level 0.5 never cross or touch, so one vertex decides.
            if points_in_poly(rings[i][:1], rings[j])[0]:
                enclosing[i].append(int(j))
    depth = [len(e) for e in enclosing]
    parent = [max(e, key=lambda j: depth[j]) if e else None for e in enclosing]
    return depth, parent


def _signed_area(ring: np.ndarray) -> float:
    r, c = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(r, np.roll(c, -1)) - np.dot(c, np.roll(r, -1)))


def _crossings(ring: np.ndarray, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns where ``ring``'s edges cross the row line ``y``, and the index of each edge's start."""
    r0, c0 = ring[:, 0], ring[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    edges = np.flatnonzero((r0 < y) != (r1 < y))
    x = c0[edges] + (y - r0[edges]) * (c1[edges] - c0[edges]) / (r1[edges] - r0[edges])
    return x, edges


def _keyhole(outer: np.ndarray, holes: list[np.ndarray]) -> list[np.ndarray]:
    """``outer`` with each hole joined in by a zero-width cut, as one ring (or more if a cut fails).

    Each cut runs left along a row line ``y`` (never a whole or half pixel, so it passes no
    pixel centre) from the hole's leftmost crossing to the nearest edge on its left: the outer
    ring, or another hole, which then carries this one with it.
    """
    if not holes:
        return [outer]
    sense = np.sign(_signed_area(outer))
    pending = [h if np.sign(_signed_area(h)) != sense else h[::-1] for h in holes]
    rings = [outer, *pending]  # rings[0] is the outer ring; the others are holes still to join
    cut = 0
    leftover = []
    while len(rings) > 1:
        hole = rings.pop(1)
        # A different row line for every cut, so a new cut never runs along an earlier one.
        y = float(hole[:, 0].min()) + 0.25 + 0.2 * ((cut * 0.6180339887) % 1.0)
        cut += 1
        xs, edges = _crossings(hole, y)
        x_hole, e_hole = float(xs.min()), int(edges[np.argmin(xs)])
        best = None
        for k, ring in enumerate(rings):
            xs_k, edges_k = _crossings(ring, y)
            left = xs_k < x_hole
            if left.any():
                m = int(np.argmax(np.where(left, xs_k, -np.inf)))
                if best is None or xs_k[m] > best[0]:
                    best = (float(xs_k[m]), k, int(edges_k[m]))
        if best is None:  # cannot happen for a hole inside its outer ring; keep the hole as it is
            leftover.append(hole)
            continue
        x_target, k, e_target = best
        at_hole, at_target = np.array([[y, x_hole]]), np.array([[y, x_target]])
        loop = np.concatenate([at_hole, hole[e_hole + 1:], hole[: e_hole + 1], at_hole])
        target = rings[k]
        rings[k] = np.concatenate([target[: e_target + 1], at_target, loop, at_target, target[e_target + 1:]])
    return [rings[0], *leftover]


class TracedSlices:
    """The Contour Data of slices already traced for one series, by slice and mask, for the next RTSTRUCT of
    the same series to take where a slice's mask is the same.

    After an edit, tracing every slice again (:func:`mask_contours`, then its points formatted) took most of
    an RTSTRUCT's time on a large scan, though the edit changed a slice or a few. A slice is looked up by its
    index in the series and a BLAKE2b digest of its mask (identical masks trace identically on one slice, for
    whichever structure), so an organ, the bowel bag and a PRV each find their unchanged slices; what a write
    used is what the next one can take (:attr:`earlier`), nothing older. Use one per series: the points are
    in its patient coordinates.
    """

    def __init__(self, earlier: TracedSlices | None = None):
        self.earlier = {} if earlier is None else earlier.used
        self.used: dict[tuple[int, bytes], list] = {}

    def contours(self, source: SourceSeries, index: int, mask: np.ndarray) -> list:
        """Slice ``index``'s ``(H, W) bool`` mask (in the series' order) as ``(points, Contour Data)`` pairs."""
        key = (int(index), hashlib.blake2b(np.packbits(mask).tobytes() + repr(mask.shape).encode(),
                                           digest_size=16).digest())
        found = self.used.get(key, self.earlier.get(key))
        if found is None:
            found = [(len(points), _contour_data(source.to_patient(int(index), points[:, 0], points[:, 1])))
                     for points in mask_contours(mask)]
        self.used[key] = found
        return found

    @property
    def nbytes(self) -> int:
        return sum(element.length for pairs in self.used.values() for _, element in pairs)


def write_rtstruct(structures: Sequence[Structure], source: SourceSeries, path: str | Path, *,
                   series_description: str = "Research segmentation, not for diagnostic use",
                   algorithm_types: Sequence[str] | None = None, traced: TracedSlices | None = None) -> Path:
    """Write ``structures`` (masks ``(D, H, W) bool`` on the scan's grid) as an RTSTRUCT on ``source``'s images.

    The file references the source series image by image and its Frame of Reference, and carries
    the source's patient and study identifiers (:data:`PATIENT_STUDY_KEYWORDS`). Empty structures
    are kept as ROIs without contours, so every file lists the same ROIs. ``algorithm_types``:
    each ROI's ROI Generation Algorithm, ``"AUTOMATIC"`` (the default) or ``"SEMIAUTOMATIC"``. ``traced``:
    the slices traced for this series before (:class:`TracedSlices`; it records this file's), else all are traced.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    traced = TracedSlices() if traced is None else traced
    kinds = list(algorithm_types or ["AUTOMATIC"] * len(structures))
    if len(kinds) != len(structures):
        raise ValueError(f"{len(kinds)} algorithm types for {len(structures)} structures")
    first = source.datasets[0]
    charset = first.get("SpecificCharacterSet", "ISO_IR 100") or "ISO_IR 100"

    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9901
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = source.frame_of_reference_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = MANUFACTURER, MODEL_NAME, SOFTWARE_VERSION
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "GI organs"
    ds.StructureSetName = "GI organs (automatic)" if set(kinds) <= {"AUTOMATIC"} else "GI organs (corrected)"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ApprovalStatus = "UNAPPROVED"

    def image_ref(slice_ds) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = slice_ds.SOPClassUID
        item.ReferencedSOPInstanceUID = slice_ds.SOPInstanceUID
        return item

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([image_ref(s) for s in source.datasets])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = source.frame_of_reference_uid
    frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_ref])

    rois, roi_contours, observations = [], [], []
    for number, structure in enumerate(structures, start=1):
        mask = source.to_source(structure.mask)  # the series' own voxel order
        if mask.shape != source.shape:
            raise ValueError(f"{structure.key} is {mask.shape} in the series' order; the series is {source.shape}")
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = source.frame_of_reference_uid
        roi.ROIName = structure.label
        roi.ROIGenerationAlgorithm = kinds[number - 1]
        rois.append(roi)
        contours = []
        for s in np.flatnonzero(mask.any(axis=(1, 2))):
            for count, data in traced.contours(source, s, mask[s]):
                contour = Dataset()
                contour.ContourImageSequence = DicomSequence([image_ref(source.datasets[s])])
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = count
                contour[_CONTOUR_DATA] = data
                contours.append(contour)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(structure.rgb)
        roi_contour.ReferencedROINumber = number
        if contours:
            roi_contour.ContourSequence = DicomSequence(contours)
        roi_contours.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = INTERPRETED_TYPE[structure.kind]
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)

    _as_if_read_explicit_little(ds)
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def _as_if_read_explicit_little(ds) -> None:
    """Mark ``ds`` and its items as read in the encoding they will be written in.

    pydicom re-parses raw elements of a dataset whose original encoding differs from the
    output's, which would undo :func:`_contour_data`. ``_character_set`` is what each item will
    be encoded with (the parent's Specific Character Set).
    """
    ds.set_original_encoding(False, True, ds._character_set)
    for tag in list(ds.keys()):
        element = ds.get_item(tag)  # get_item leaves raw elements raw
        if element.VR == "SQ":
            for item in element.value:
                _as_if_read_explicit_little(item)


def _contour_data(points: np.ndarray):
    """Contour Data of ``(N, 3)`` mm, DS values with at most 3 decimals (≤ 12 characters below 10 km).

    Built as the element's bytes: pydicom would validate each of the ~10⁶ values of a scan one by one.
    """
    from pydicom.dataelem import RawDataElement

    if np.abs(points).max(initial=0.0) >= 1e7:
        raise ValueError("contour coordinates beyond 10 km: the source geometry is broken")
    values = []
    for v in np.round(points.ravel(), 3).tolist():
        text = f"{v:.3f}".rstrip("0").rstrip(".")
        values.append("0" if text in ("-0", "") else text)
    raw = "\\".join(values).encode("ascii")
    raw += b" " * (len(raw) % 2)  # even length, padded with a space as DS requires
    return RawDataElement(_CONTOUR_DATA, "DS", len(raw), raw, 0, False, True, True, False)
