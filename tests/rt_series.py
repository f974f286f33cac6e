"""A complete single-frame MR series (patient, study, frame of reference) and organ masks for it.

Written with pydicom from a real shared volume, into tmp dirs only. Unlike
``scan_fixtures.write_dicom_series`` it carries everything a DICOM SEG or RTSTRUCT references:
a Frame of Reference, study date and ids, and a free choice of orientation and instance order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PATIENT_NAME = "Roe^Richard"  # must reach the SEG and RTSTRUCT, and nothing else
PATIENT_ID = "RT-PID-98765"
PATIENT_BIRTH_DATE = "19620817"
ACCESSION_NUMBER = "ACC-5544"
STUDY_ID = "ST-77"

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _new_instance(sop_class_uid: str):
    """An empty Part 10 dataset of ``sop_class_uid`` with a fresh instance UID, explicit VR little endian, Latin-1."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class_uid, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, meta.MediaStorageSOPInstanceUID
    return ds


def oblique_orientation(degrees_about_z: float = 20.0, degrees_about_x: float = 15.0) -> tuple[float, ...]:
    """ImageOrientationPatient of axial rows and columns rotated about z, then about x."""
    a, b = np.radians(degrees_about_z), np.radians(degrees_about_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rx @ rz
    return tuple(float(v) for v in (*rot[:, 0], *rot[:, 1]))


def write_mr_series(voxels: np.ndarray, dst: Path, *, orientation=AXIAL, pixel_spacing=(1.5, 1.25), slice_mm=3.0,
                    origin=(-180.0, -160.0, -60.0), instance_order: str = "ascending", seed: int = 0) -> list[Path]:
    """Write ``(S, H, W)`` voxels as one file per slice; returns the files in slice (spatial) order.

    ``instance_order``: ``"ascending"`` (InstanceNumber follows position), ``"descending"`` or
    ``"shuffled"`` (neither). File names are shuffled in every case.
    """
    from pydicom.uid import MRImageStorage, generate_uid

    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    row_cos, col_cos = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_cos, col_cos)
    depth, rows, cols = voxels.shape
    numbers = {"ascending": np.arange(1, depth + 1), "descending": np.arange(depth, 0, -1),
               "shuffled": rng.permutation(depth) + 1}[instance_order]
    names = rng.permutation(depth)
    files = []
    for k in range(depth):
        ds = _new_instance(MRImageStorage)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (PATIENT_NAME, PATIENT_ID,
                                                                            PATIENT_BIRTH_DATE, "M")
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, "20240102", "101500"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = STUDY_ID, ACCESSION_NUMBER, ""
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", series_uid, 3
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 10.0, 500.0, 1
        ds.InstanceNumber = int(numbers[k])
        ds.ImagePositionPatient = [round(float(v), 4) for v in np.array(origin) + k * slice_mm * normal]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = slice_mm
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(voxels[k].astype(np.uint16)).tobytes()
        path = dst / f"MR{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def organ_masks_for(voxels: np.ndarray) -> np.ndarray:
    """Deterministic ``(3, S, H, W) bool`` organs with the shapes that test contour tracing.

    Stomach: an ellipsoid. Small bowel: the bright voxels of the real scan in a box (ragged,
    many pieces, holes). Large bowel: a thick ring (a hole on every slice). Each has hundreds of
    voxels or more.
    """
    depth, rows, cols = voxels.shape
    s, r, c = np.mgrid[0:depth, 0:rows, 0:cols].astype(np.float64)
    stomach = ((s - depth * 0.5) / (depth * 0.3)) ** 2 + ((r - rows * 0.35) / 25) ** 2 + ((c - cols * 0.65) / 35) ** 2 <= 1
    box = (s >= depth * 0.2) & (s < depth * 0.8) & (r > rows * 0.5) & (r < rows * 0.8) & (c > cols * 0.25) & (c < cols * 0.6)
    small_bowel = box & (voxels > np.percentile(voxels[box], 60)) & ~stomach
    radius = np.hypot(r - rows * 0.55, c - cols * 0.72)
    large_bowel = (radius >= 12) & (radius <= 22) & (s >= depth * 0.1) & (s < depth * 0.7)
    return np.stack([stomach, small_bowel, large_bowel])


def write_rtdose(gy: np.ndarray, path: Path, like, *, origin=(-180.0, -160.0, -60.0), orientation=AXIAL,
                 pixel_spacing=(1.5, 1.25), frame_mm=3.0, absolute_offsets: bool = False,
                 patient_id: str | None = None, frame_uid: str | None = None) -> Path:
    """Write ``(F, R, C)`` Gy as a synthetic RTDOSE: 16-bit values scaled by DoseGridScaling (for a 32-bit
    dose, ``plastimatch header`` reported half the pixel data's length, so 16 bits are used).

    ``like``: a dataset of the MR series whose patient, study and frame of reference it copies
    (``patient_id``, ``frame_uid`` override them, for the refusals). ``absolute_offsets``: write
    GridFrameOffsetVector as the frames' z coordinates (the standard's second form, axial only).
    """
    from pydicom.uid import generate_uid

    rt_dose_storage = "1.2.840.10008.5.1.4.1.1.481.2"
    ds = _new_instance(rt_dose_storage)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID"):
        setattr(ds, keyword, like.get(keyword, ""))
    if patient_id is not None:
        ds.PatientID = patient_id
    if frame_uid is not None:
        ds.FrameOfReferenceUID = frame_uid
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "RTDOSE", generate_uid(), 90, 1
    ds.PositionReferenceIndicator, ds.Manufacturer = "", "test"
    frames, rows, cols = gy.shape
    row_cos, col_cos = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_cos, col_cos)
    ds.ImagePositionPatient = [round(float(v), 4) for v in origin]
    ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = frame_mm
    offsets = np.arange(frames) * frame_mm
    ds.GridFrameOffsetVector = [round(float(v), 4) for v in (offsets + origin[2] if absolute_offsets else offsets)]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    scale = max(float(np.max(gy)), 1e-3) / 60000.0
    ds.DoseGridScaling = f"{scale:.6e}"
    scale = float(ds.DoseGridScaling)
    ds.PixelData = np.rint(np.clip(gy, 0, None) / scale).astype("<u2").tobytes()
    assert abs(float(normal[2])) > 0.99 or not absolute_offsets
    ds.save_as(path, enforce_file_format=True)
    return path
