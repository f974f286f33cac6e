"""DICOM series (single-frame files, with or without ``.dcm``), read once with pydicom.

The one series reader: it orders the slices, builds the scan's voxels and affine from the
geometry and pixel tags, and keeps the headers (without pixel data) in the same order as
:class:`~.base.SourceSeries` on ``Scan.source``, which the DICOM SEG and RTSTRUCT exports reference
image by image. A DICOM SEG or RTSTRUCT lying next to the images (our own exports, re-uploaded
with their series) is skipped, never read as a slice.

Patient privacy: the headers hold the patient's identifiers. They go only into the export
files; no tag value reaches a message or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..image import DEFAULT_PIXEL_SPACING_MM, MIN_SIDE
from .base import (DEFAULT_SLICE_THICKNESS_MM, LPS_TO_RAS, Scan, ScanError, SourceSeries, axis_codes, stack_voxels,
                   to_standard_axes)


def read_dicom_series(files: list[Path], name: str = "dicom") -> Scan:
    """Read one single-frame DICOM series as a scan.

    Slices are ordered by ImagePositionPatient projected on the slice normal (the cross
    product of the ImageOrientationPatient cosines), else by InstanceNumber. RescaleSlope and
    RescaleIntercept are applied (pydicom's modality LUT). Spacing: PixelSpacing in-plane,
    the slice positions across (SpacingBetweenSlices or SliceThickness without positions).
    Mixed series, sizes or orientations, malformed geometry tags and compressed pixel data
    without an installed decoder are refused. Messages never quote tag values.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_rescale
    # pydicom's names for the derived objects' SOP classes: model.dicom (the exports) imports this
    # package, so taking them from model.dicom.codes would make the two packages import each other.
    from pydicom.uid import RTStructureSetStorage, SegmentationStorage

    datasets, headers, derived = [], [], 0
    for f in files:
        try:
            ds = pydicom.dcmread(f, force=f.suffix.lower() == ".dcm")
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
            raise ScanError(f"{f.name} is not a readable DICOM file.") from None
        if str(ds.get("SOPClassUID", "")) in (SegmentationStorage, RTStructureSetStorage):
            derived += 1  # a SEG or RTSTRUCT next to its series: not an image of it
            continue
        if "PixelData" not in ds:
            raise ScanError(f"{f.name} holds no image (a DICOM without pixel data).")
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            header = _slice_header(ds)
        except (AttributeError, TypeError, ValueError):
            raise ScanError(f"{f.name} has an incomplete DICOM header (image size, position or spacing "
                            "missing or malformed).") from None
        if frames > 1:
            raise ScanError(f"{f.name} is a multi-frame DICOM; upload a series of single-slice files.")
        _check_decoder(f, ds)
        datasets.append((f, ds))
        headers.append(header)
    if not datasets:
        raise ScanError("No DICOM images found (only DICOM SEG or RTSTRUCT files)." if derived
                        else "No DICOM files found.")

    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise ScanError(f"The files belong to {len(series)} different DICOM series; upload one series at a time.")
    if len({h.size for h in headers}) > 1:
        raise ScanError("The DICOM slices have different sizes; upload one series at a time.")
    if len({str(ds.get("FrameOfReferenceUID", "") or "") for _, ds in datasets}) > 1:
        raise ScanError("The DICOM slices have different frames of reference (FrameOfReferenceUID); "
                        "upload one series at a time.")
    photometric = {str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2") for _, ds in datasets}
    if len(photometric) > 1:
        raise ScanError(f"The DICOM slices mix photometric interpretations ({', '.join(sorted(photometric))}); "
                        "upload one series at a time.")
    have_geometry = all(h.orientation is not None and h.position is not None for h in headers)
    notes: list[str] = [f"{derived} DICOM SEG or RTSTRUCT file(s) next to the series were skipped."] if derived else []
    if have_geometry:
        iop = np.array([h.orientation for h in headers])
        if not np.allclose(iop, iop[0], atol=1e-4):
            raise ScanError("The DICOM slices have different orientations; upload one series at a time.")
        if (iop != iop[0]).any():
            # Within rounding of one another: every header takes the one orientation the voxels are placed
            # by, so the SEG (highdicom needs one shared orientation) and RTSTRUCT describe the same planes.
            shared = datasets[0][1].ImageOrientationPatient
            for _, ds in datasets:
                ds.ImageOrientationPatient = shared
        row_cos, col_cos = iop[0, :3], iop[0, 3:]
        normal = np.cross(row_cos, col_cos)
        positions = np.array([h.position for h in headers])
        along = positions @ normal
        order = np.argsort(along, kind="stable")
        along = along[order]
        if len(along) > 1 and np.min(np.diff(along)) < 1e-3:
            raise ScanError("Two DICOM slices share one position (several echoes, time points or repeats in one series?); "
                              "upload one image per position.")
    else:
        order = np.argsort([h.instance for h in headers], kind="stable")
        notes.append("DICOM files lack ImagePositionPatient; slices ordered by InstanceNumber.")
    datasets = [datasets[i] for i in order]
    first = headers[order[0]]

    if first.pixel_spacing is not None:
        row_mm, col_mm = first.pixel_spacing
    else:
        row_mm = col_mm = DEFAULT_PIXEL_SPACING_MM
        notes.append(f"No PixelSpacing; {DEFAULT_PIXEL_SPACING_MM} mm pixels assumed.")
    if have_geometry and len(along) > 1:
        gaps = np.diff(along)
        slice_mm = float(np.median(gaps))
        if np.max(np.abs(gaps - slice_mm)) > 0.1 * slice_mm:
            even = along[0] + np.arange(len(along)) * (along[-1] - along[0]) / (len(along) - 1)
            notes.append(f"Uneven slice spacing (median {slice_mm:.3g} mm, gaps up to {np.max(gaps):.3g} mm): volumes "
                         "use the median spacing, and the label NIfTI, which needs even spacing, places slices up to "
                         f"{np.max(np.abs(along - even)):.2g} mm from their true positions (the DICOM SEG and RTSTRUCT "
                         "keep the exact ones).")
    elif first.thickness_mm:
        slice_mm = first.thickness_mm
    else:
        slice_mm = DEFAULT_SLICE_THICKNESS_MM
        notes.append(f"The DICOM files give no slice positions or thickness; {slice_mm:g} mm slices assumed.")

    slices = []
    for f, ds in datasets:
        try:
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 - corrupt or truncated data (missing decoders were refused above)
            raise ScanError(f"{f.name}: pixel data could not be decoded (corrupt or truncated); "
                            "export the series uncompressed.") from None
        if pixels.ndim != 2:
            raise ScanError(f"{f.name} is not a greyscale slice.")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(apply_rescale(pixels, ds).astype(np.float32) if (slope, intercept) != (1.0, 0.0) else pixels)
        del ds.PixelData  # the header stays for the exports; the pixels now live in the voxels
    voxels = stack_voxels(slices)
    if photometric == {"MONOCHROME1"}:
        voxels = _inverted(voxels)
        notes.append("MONOCHROME1 series (low values shown bright): intensities inverted so that signal is bright, "
                     "as the model was trained.")

    if have_geometry:
        origin = positions[order[0]]
        step = (positions[order[-1]] - origin) / (len(order) - 1) if len(order) > 1 else normal * slice_mm
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_cos * col_mm, col_cos * row_mm, step, origin
    else:
        lps = np.diag([col_mm, row_mm, slice_mm, 1.0])
    affine = LPS_TO_RAS @ lps
    voxels, affine, spacing, stored_axes = to_standard_axes(voxels, affine, (slice_mm, row_mm, col_mm))
    if min(voxels.shape[1:]) < MIN_SIDE:  # e.g. a few sagittal slices, turned to axial slices a few pixels wide
        raise ScanError(f"Turned to axial slices, the series gives slices of {voxels.shape[2]}×{voxels.shape[1]} px, "
                        f"under {MIN_SIDE} px a side; upload a series that covers the abdomen in every direction.")
    if stored_axes is not None:
        notes.append(f"Stored in {axis_codes(stored_axes)} orientation; reoriented to axial slices in the standard "
                     "orientation (no resampling), as the model was trained.")
    source = None
    if have_geometry and first.pixel_spacing is not None:
        source = SourceSeries([ds for _, ds in datasets], row_cos, col_cos, (row_mm, col_mm), positions[order],
                              stored_axes)
    return Scan(voxels, spacing, affine, tuple(range(1, len(voxels) + 1)), name, "dicom", notes=notes, source=source)


def _inverted(voxels: np.ndarray) -> np.ndarray:
    """``voxels`` with the grey scale turned over within its own range (MONOCHROME1 → MONOCHROME2), same dtype."""
    lo, hi = voxels.min(), voxels.max()
    if np.issubdtype(voxels.dtype, np.integer):
        return (int(hi) + int(lo) - voxels.astype(np.int64)).astype(voxels.dtype)
    return (hi + lo - voxels).astype(voxels.dtype)


@dataclass(frozen=True)
class _SliceHeader:
    """The tags that place one DICOM slice (geometry only, never a patient tag)."""

    size: tuple[int, int]  # Rows, Columns
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: 6 direction cosines
    position: tuple[float, ...] | None  # ImagePositionPatient: 3 values, mm
    pixel_spacing: tuple[float, ...] | None  # PixelSpacing: row, column mm
    thickness_mm: float | None  # SpacingBetweenSlices, else SliceThickness
    instance: int  # InstanceNumber, 0 when absent


def _slice_header(ds) -> _SliceHeader:
    """Geometry tags of ``ds``; ``AttributeError``/``TypeError``/``ValueError`` when missing or malformed."""
    from pydicom.multival import MultiValue

    def floats(keyword: str, count: int) -> tuple[float, ...] | None:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        values = tuple(float(v) for v in value) if isinstance(value, (MultiValue, list, tuple)) else (float(value),)
        if len(values) != count or not np.all(np.isfinite(values)) or (keyword == "PixelSpacing" and min(values) <= 0):
            raise ValueError(f"{keyword} needs {count} valid values")
        return values

    thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    thickness_mm = float(thickness) if thickness else None
    return _SliceHeader((int(ds.Rows), int(ds.Columns)), floats("ImageOrientationPatient", 6),
                        floats("ImagePositionPatient", 3), floats("PixelSpacing", 2),
                        thickness_mm if thickness_mm and thickness_mm > 0 else None,
                        int(ds.get("InstanceNumber", 0) or 0))


def _check_decoder(path: Path, ds) -> None:
    """Refuse compressed pixel data that no installed pydicom plugin can decode, naming the codec."""
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # a transfer syntax pydicom knows no decoder for
        available = False
    if not available:
        # The transfer syntax's name is a codec, not patient data: safe to show.
        raise ScanError(f"{path.name} is compressed as {syntax.name}, and no decoder for it is installed; "
                        "export the series uncompressed.")
