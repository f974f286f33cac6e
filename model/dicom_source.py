"""The headers of a source DICOM series, in the voxel order of :func:`model.scan_dicom.read_dicom_series`.

The DICOM SEG and RTSTRUCT exports reference the source images one by one, so they need the
source's UIDs and geometry slice by slice, in the same order as the scan's voxels
``(S, H, W)``: along the slice normal (the cross product of the ImageOrientationPatient
cosines), by ImagePositionPatient. Only headers are read (``stop_before_pixels``).

Patient privacy: the headers hold the patient's identifiers. They go only into the export
files; nothing here puts a tag value into a message or a log line.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scan import ScanError
from .scan_zip import extract_zip

#: Segmentation and RT Structure Set storage: derived objects, never source images.
_DERIVED = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.3"}


@dataclass
class SourceSeries:
    """One single-frame series, sorted along its slice normal.

    ``datasets``: headers (no pixel data), in the scan's slice order. ``row_cos``,
    ``col_cos``: ImageOrientationPatient's direction of increasing column and of increasing row.
    ``pixel_spacing``: ``(row, col)`` mm (PixelSpacing). ``positions``: ``(S, 3)``
    ImagePositionPatient of each slice, LPS mm.
    """

    datasets: list
    row_cos: np.ndarray
    col_cos: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.datasets), int(self.datasets[0].Rows), int(self.datasets[0].Columns)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.datasets[0].FrameOfReferenceUID)

    def to_patient(self, slice_index: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Patient (LPS) mm of sub-pixel ``(row, col)`` positions on one slice, ``(N, 3) float64``.

        DICOM's pixel-centre convention: pixel ``(0, 0)``'s centre is at ImagePositionPatient.
        """
        row_mm, col_mm = self.pixel_spacing
        return (self.positions[slice_index] + np.outer(cols * col_mm, self.row_cos)
                + np.outer(rows * row_mm, self.col_cos))


def read_source_series(paths: str | Path | Iterable[str | Path]) -> SourceSeries:
    """Headers of one DICOM series from files, a folder, or one zip; raises :class:`ScanError`.

    Files pydicom cannot read as DICOM are skipped (a README in the folder). The series needs
    ImagePositionPatient, ImageOrientationPatient, PixelSpacing and a FrameOfReferenceUID: the
    exports place their contours with them and a planning system aligns the files by them.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_file() and zipfile.is_zipfile(paths[0]):
        with tempfile.TemporaryDirectory(prefix="uwmgi-dicom-") as tmp:
            return _read_headers(extract_zip(paths[0], Path(tmp)))
    if len(paths) == 1 and paths[0].is_dir():
        paths = sorted(p for p in paths[0].rglob("*") if p.is_file())
    return _read_headers(paths)


def _read_headers(files: list[Path]) -> SourceSeries:
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=f.suffix.lower() == ".dcm")
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
            continue
        # An image: not a DICOMDIR, a report, or a SEG or RTSTRUCT exported next to the series.
        if "Rows" in ds and "SOPInstanceUID" in ds and str(ds.get("SOPClassUID", "")) not in _DERIVED:
            datasets.append(ds)
    if not datasets:
        raise ScanError("No DICOM images found to reference in the DICOM SEG and RTSTRUCT.")
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets}) > 1:
        raise ScanError("The files belong to several DICOM series; the exports reference one series.")
    need = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "FrameOfReferenceUID",
            "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
    if not all(all(ds.get(k) not in (None, "") for k in need) for ds in datasets):
        raise ScanError("The DICOM series lacks the geometry or UIDs (position, orientation, pixel spacing, "
                        "frame of reference) that a DICOM SEG or RTSTRUCT must reference.")
    if int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        raise ScanError("A multi-frame DICOM cannot be referenced slice by slice here.")
    try:
        iop = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
        spacing = tuple(float(v) for v in datasets[0].PixelSpacing)
    except (TypeError, ValueError):
        raise ScanError("The DICOM series has malformed geometry tags.") from None
    if iop.shape[1] != 6 or positions.shape[1] != 3 or len(spacing) != 2 or not np.allclose(iop, iop[0], atol=1e-4):
        raise ScanError("The DICOM slices have malformed or different orientations.")
    # The same order as model.scan_dicom.read_dicom_series: positions projected on the slice normal.
    row_cos, col_cos = iop[0, :3], iop[0, 3:]
    order = np.argsort(positions @ np.cross(row_cos, col_cos), kind="stable")
    return SourceSeries([datasets[i] for i in order], row_cos, col_cos, spacing, positions[order])
