"""NIfTI volumes (``.nii``, ``.nii.gz``, or renamed), read with nibabel as axial slices."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

import numpy as np

from ..image import MIN_SIDE
from .base import MAX_VOXELS, NIFTI_SUFFIXES, STANDARD_AXES, Scan, ScanError, file_head, scan_stem
from .kaggle import case_day_in


def read_nifti(path: str | Path) -> Scan:
    """Read a NIfTI volume as axial slices, whatever its stored orientation.

    The image is reoriented (nibabel's orientation tools, no resampling) so that the voxel
    axes point to the patient's left, posterior and superior (LPS): indices ``(col, row,
    slice)`` then give the usual axial view, and the reoriented affine still maps them to
    the same RAS+ positions as the file. Spacing comes from the header.

    A 2-D image is read as a scan of one slice. A 4-D image (time points, echoes, Dixon
    fat/water) is refused unless it holds one volume: which volume the model should see is
    the user's call, and segmenting the first one silently could segment the wrong contrast.
    """
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    path = Path(path)
    with contextlib.ExitStack() as stack:
        try:
            img = _open_nifti(path, stack)
            shape = tuple(int(n) for n in img.shape)
        except Exception:  # noqa: BLE001 - nibabel raises many types for bad files
            raise ScanError(f"{path.name} is not a readable NIfTI file.") from None
        while len(shape) > 3 and shape[-1] == 1:  # a 4-D (or 5-D) file holding one volume
            shape = shape[:-1]
        if len(shape) > 3:
            raise ScanError(f"{path.name} holds {int(np.prod(shape[3:]))} volumes (shape {shape}); "
                            "save the one to segment as a 3-D NIfTI.")
        if len(shape) < 2:
            raise ScanError(f"{path.name} has shape {shape}; a scan must be a 3-D volume or one 2-D slice.")
        if int(np.prod(shape)) > MAX_VOXELS:
            raise ScanError(f"{path.name} has {int(np.prod(shape)):,} voxels, over the {MAX_VOXELS:,} limit.")
        notes = []
        try:
            if _singular(img.affine):
                img = _with_usable_affine(img, notes)
            if len(img.shape) > 3:
                img = img.slicer[(slice(None),) * 3 + (0,) * (len(img.shape) - 3)]
            elif len(shape) == 2:
                img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., None], img.affine, img.header)
                notes.append("A 2-D NIfTI: read as a scan of one slice.")
            stored = "".join(nib.aff2axcodes(img.affine))
            img = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(STANDARD_AXES)))
            data = np.asanyarray(img.dataobj)
        except Exception:  # noqa: BLE001
            raise ScanError(f"{path.name} could not be decoded; the file looks truncated or corrupt.") from None
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    voxels = np.ascontiguousarray(data.transpose(2, 1, 0))  # (col, row, slice) → (slice, row, col)
    if min(voxels.shape[1:]) < MIN_SIDE:
        raise ScanError(f"{path.name}: axial slices of {voxels.shape[2]}×{voxels.shape[1]} px are too small.")
    col_mm, row_mm, slice_mm = (float(z) for z in img.header.get_zooms()[:3])
    if stored != "".join(STANDARD_AXES):
        notes.append(f"Stored in {stored} orientation; reoriented to axial slices (no resampling).")
    return Scan(voxels, (slice_mm, row_mm, col_mm), img.affine.astype(np.float64), tuple(range(1, len(voxels) + 1)),
                scan_stem(path), "nifti", case_day=case_day_in(path.name), notes=notes)


def _open_nifti(path: Path, stack: contextlib.ExitStack):
    """The nibabel image of ``path``; its data is read lazily while ``stack`` is open.

    nibabel chooses its reader by file name, so a NIfTI under another name (found by
    :func:`model.scans.sniff_kind`) is read from a stream instead, gunzipped when it is gzip.
    """
    import nibabel as nib

    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return nib.load(path)
    stream = stack.enter_context(gzip.open(path, "rb") if file_head(path, size=2) == b"\x1f\x8b" else open(path, "rb"))
    head = stream.read(8)
    stream.seek(0)
    return (nib.Nifti2Image if head[4:7] in (b"n+2", b"ni2") else nib.Nifti1Image).from_stream(stream)


def _singular(affine: np.ndarray) -> bool:
    return not np.isfinite(affine).all() or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9


def _with_usable_affine(img, notes: list[str]):
    """``img`` with an affine that says where its axes point, for a file whose best one is singular.

    nibabel prefers the sform; some writers set its code but leave it empty. The qform, when the
    file has one, is used then; otherwise the voxels are read as stored with the header's voxel
    sizes (LPS axes, ITK's reading of a file without orientation), and ``notes`` says so.
    """
    if int(img.header["qform_code"]) > 0 and not _singular(img.header.get_qform()):
        notes.append("The file's sform is empty; its qform gives the orientation.")
        return type(img)(img.dataobj, img.header.get_qform(), img.header)
    col_mm, row_mm, slice_mm = (tuple(float(z) for z in img.header.get_zooms()[:3]) + (1.0,))[:3]
    notes.append("The file's orientation matrix is empty; slices read as stored, with its voxel sizes "
                 "(left and right, head and feet not known).")
    return type(img)(img.dataobj, np.diag([-col_mm, -row_mm, slice_mm, 1.0]), img.header)
