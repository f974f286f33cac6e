"""A planned dose grid from a DICOM RTDOSE file, read with pydicom on its own geometry.

The stored values times DoseGridScaling are the dose in Gy (DoseUnits ``GY``; ``RELATIVE`` doses
are refused, they have no absolute scale). The frames' positions come from GridFrameOffsetVector,
in either of the standard's two forms: offsets from ImagePositionPatient along the frame normal
when its first value is 0, else the frames' z coordinates (allowed only for axial grids). Frames
must be evenly spaced, as every planning system writes them: the grid then has one affine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..scans.base import LPS_TO_RAS, ScanError
from .codes import RT_DOSE_STORAGE

#: How far (mm) frame offsets may stray from even spacing and still be one grid.
SPACING_TOLERANCE_MM = 1e-3


@dataclass
class Dose:
    """One dose grid. ``gy``: ``(F, R, C) float32`` Gy, frames along the grid's normal.
    ``affine``: ``(4, 4)`` from ``(col, row, frame, 1)`` to patient RAS+ mm, as :attr:`Scan.affine`.
    ``patient_id``, ``frame_of_reference_uid``: from the file (``""`` where it has none)."""

    gy: np.ndarray
    affine: np.ndarray
    patient_id: str = ""
    frame_of_reference_uid: str = ""
    name: str = "dose"


def read_rtdose(path: str | Path) -> Dose:
    """Read an RTDOSE file; :class:`ScanError` with one line when it is not one or its grid is unusable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, force=True)
        sop_class = str(ds.get("SOPClassUID", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
        raise ScanError(f"{path.name} is not a readable DICOM file.") from None
    if sop_class != RT_DOSE_STORAGE:
        raise ScanError(f"{path.name} is not an RTDOSE file (its SOP class is {sop_class or 'missing'}).")
    units = str(ds.get("DoseUnits", "")).upper()
    if units != "GY":
        raise ScanError(f"{path.name} has DoseUnits {units or 'missing'}; only absolute doses in GY can be reported.")
    need = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "DoseGridScaling", "PixelData")
    missing = [k for k in need if k not in ds]
    if missing:
        raise ScanError(f"{path.name} lacks {', '.join(missing)}.")
    try:
        stored = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom's decoders raise many types
        raise ScanError(f"{path.name}: its dose values cannot be decoded ({type(err).__name__}).") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stored = stored.reshape(frames, int(ds.Rows), int(ds.Columns))
    gy = (stored.astype(np.float64) * float(ds.DoseGridScaling)).astype(np.float32)

    position = np.array([float(v) for v in ds.ImagePositionPatient])
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    offsets = np.array([float(v) for v in ds.get("GridFrameOffsetVector", [0.0])], dtype=np.float64)
    if len(offsets) != frames:
        raise ScanError(f"{path.name} has {frames} frames but {len(offsets)} GridFrameOffsetVector values.")
    if offsets[0] != 0.0:  # the absolute form: the frames' z coordinates, axial grids only
        if not np.allclose(orientation, (1, 0, 0, 0, 1, 0), atol=1e-4):
            raise ScanError(f"{path.name}: GridFrameOffsetVector starts at {offsets[0]:g}, which the standard "
                            "allows only for axial grids.")
        offsets = offsets - position[2]
    steps = np.diff(offsets)
    if frames > 1 and (np.ptp(steps) > SPACING_TOLERANCE_MM or abs(steps[0]) < SPACING_TOLERANCE_MM):
        raise ScanError(f"{path.name}: its frames are not evenly spaced (GridFrameOffsetVector); "
                        "resample the dose to an even grid.")
    frame_mm = float(steps[0]) if frames > 1 else float(ds.get("SliceThickness", 0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row_cos * col_mm, col_cos * row_mm, normal * frame_mm
    lps[:3, 3] = position + normal * offsets[0]
    return Dose(gy, LPS_TO_RAS @ lps, str(ds.get("PatientID", "") or ""), str(ds.get("FrameOfReferenceUID", "") or ""),
                path.name)
