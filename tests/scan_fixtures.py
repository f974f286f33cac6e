"""Scan fixtures written as real files (zip, NIfTI, DICOM) from real Kaggle slices, into tmp dirs only."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from model.image import read_slice

PATIENT_NAME = "Doe^Jane"  # must never show up in anything the app reads back out
PATIENT_ID = "PID-123456"
PATIENT_BIRTH_DATE = "19710503"


def kaggle_slices(shared_data: Path, volume: str = "volume_266x266", count: int | None = None) -> list[Path]:
    """The Kaggle-named slice files of a shared volume in slice order (the first ``count``)."""
    files = sorted((shared_data / "scans" / volume).glob("slice_*.png"))
    return files[:count] if count else files


def stack(files: list[Path]) -> np.ndarray:
    """``(D, H, W)`` voxels of slice files in the given order."""
    return np.stack([read_slice(f) for f in files])


def zip_files(files: list[Path], dst: Path, folder: str = "") -> Path:
    """A zip holding ``files`` under ``folder/`` (a Kaggle ``caseN_dayM/scans`` path, say)."""
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f, f"{folder}/{f.name}" if folder else f.name)
    return dst


def write_nifti(voxels: np.ndarray, spacing_mm: tuple[float, float, float], dst: Path,
                axcodes: tuple[str, str, str] = ("L", "P", "S")) -> np.ndarray:
    """Write ``(D, H, W)`` voxels as NIfTI stored in ``axcodes`` orientation; returns the LPS affine.

    The scan is first placed in LPS voxel order (col → left, row → posterior, slice →
    superior), then reoriented for storage, so every stored orientation shows the same anatomy.
    """
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    slice_mm, row_mm, col_mm = spacing_mm
    lps_affine = np.diag([-col_mm, -row_mm, slice_mm, 1.0])
    lps_affine[:3, 3] = (120.0, 80.0, -200.0)
    img = nib.Nifti1Image(np.ascontiguousarray(voxels.transpose(2, 1, 0)), lps_affine)
    img = img.as_reoriented(ornt_transform(axcodes2ornt(("L", "P", "S")), axcodes2ornt(axcodes)))
    assert nib.aff2axcodes(img.affine) == tuple(axcodes)
    nib.save(img, dst)
    return lps_affine


def write_dicom_series(voxels: np.ndarray, dst: Path, *, pixel_spacing=(0.9, 0.8), slice_mm=3.0,
                       slope=1.0, intercept=0.0, series_uid: str | None = None, positions=True,
                       suffix=".dcm", orientation=(1, 0, 0, 0, 1, 0), origin=(-100.0, -120.0, 50.0),
                       rng: np.random.Generator | None = None) -> list[Path]:
    """Write a single-frame MR series, one file per slice, in a shuffled file order.

    Stored values are ``(voxels - intercept) / slope`` so that the rescale gives ``voxels`` back.
    InstanceNumbers run *against* the slice positions, so a reader that orders by them gets it
    backwards. Returns the files in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    rng = rng or np.random.default_rng(0)
    dst.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    row_cos, col_cos = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row_cos, col_cos)
    stored = np.rint((voxels.astype(np.float64) - intercept) / slope).astype(np.uint16)
    depth, rows, cols = voxels.shape
    names = [f"IM{n:04d}" for n in rng.permutation(depth)]
    files = []
    for k in range(depth):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE
        ds.Modality = "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = depth - k
        if positions:
            ds.ImagePositionPatient = [float(v) for v in np.array(origin) + k * (slice_mm or 3.0) * normal]
            ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        if slice_mm is not None:  # None: a series that gives no thickness
            ds.SliceThickness = slice_mm
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = dst / f"{names[k]}{suffix}"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
