"""Reading one scan from uploaded files or a folder: :func:`load_scan` dispatches to one reader per kind.

Every reader returns a :class:`~model.scans.base.Scan` whose voxels are ``(D, H, W)``: slices from
inferior to superior where the file says so, each slice shown as a radiologist views an axial
image (anterior at the top, the patient's right on the left of the image). ``Scan.affine`` maps
voxel indices ``(col, row, slice, 1)`` to RAS+ millimetres, the NIfTI convention, so a label
volume written with it (:func:`model.exports.save_label_nifti`) opens aligned in 3D Slicer and
ITK-SNAP. Only this module knows the readers; they know only :mod:`.base`.

A scan is named after the Kaggle case and day (``case123_day20``) wherever its path, zip or
file name holds one, else after its file or folder.

Patient privacy: the DICOM reader looks only at geometry and pixel tags for the scan (it keeps
the headers for the DICOM exports). Nothing here puts a DICOM tag value into a message, a log
line or an output file other than those exports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..image import ImageError, entered_mm
from .archive import extract_zip
from .base import JUNK, MAX_FILES, Scan, ScanError, check_not_blank, scan_stem
from .kaggle import case_day_in
from .dicom import read_dicom_series
from .kinds import kind_of
from .nifti import read_nifti
from .slices import read_slice_files


def load_scan(paths: str | Path | Iterable[str | Path], slice_thickness_mm: float | None = None) -> Scan:
    """Read one scan from uploaded files: slice images, a zip, one NIfTI, or DICOM files.

    ``paths`` may also be one folder (the command line). ``slice_thickness_mm`` overrides the
    slice spacing of Kaggle slice files (default 3 mm); NIfTI and DICOM carry their own. An entered
    thickness outside :data:`model.image.ENTERED_MM_RANGE` is refused for every kind of input. Raises :class:`ScanError` with a one-line reason.
    """
    try:
        slice_thickness_mm = entered_mm(slice_thickness_mm, "Slice thickness")
    except ImageError as err:
        raise ScanError(str(err)) from None
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ScanError("No files: upload slice images, a .zip, a NIfTI file or a DICOM series.")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        return _load_files(_folder_files(folder), folder.name, slice_thickness_mm, folder.parent,
                           folder.absolute().as_posix())
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ScanError(f"File not found: {missing[0]}.")
    zips = [p for p in paths if kind_of(p) == "zip"]
    if zips:
        if len(paths) > 1:
            raise ScanError("Upload either one .zip or loose files, not both (or several zips).")
        with tempfile.TemporaryDirectory(prefix="uwmgi-scan-") as tmp:
            files = extract_zip(zips[0], Path(tmp))
            scan = _load_files(files, scan_stem(zips[0]), slice_thickness_mm, Path(tmp), zips[0].name)
            if not scan.case_day:  # a NIfTI inside is named after the zip too, as the user knows it
                scan.name = scan_stem(zips[0])
            return scan
    files = [p for p in paths if not JUNK.search(p.as_posix())]
    # Uploads each sit in their own temporary folder, so only a shared folder is a meaningful name.
    parents = {p.parent for p in paths}
    shared = parents.pop() if len(parents) == 1 else None
    name = scan_stem(paths[0]) if len(paths) == 1 else shared.name if shared else "scan"
    return _load_files(files, name, slice_thickness_mm, None, shared.absolute().as_posix() if shared else "")


def _load_files(files: list[Path], name: str, slice_thickness_mm: float | None,
                root: Path | None, context: str) -> Scan:
    """Read ``files`` (one kind) as a scan; ``context`` is the folder or zip they came from, searched for a case/day."""
    kinds = {p: kind_of(p) for p in files}
    unknown = [p.name for p, k in kinds.items() if k is None]
    if unknown:
        raise ScanError(f"{unknown[0]} is not a slice image, NIfTI or DICOM file.")
    archives = [p.name for p, k in kinds.items() if k == "zip"]
    if archives:
        container = context.rsplit("/", 1)[-1] or name
        raise ScanError(f"{container} contains another archive ({archives[0]}); upload a flat zip or folder.")
    found = set(kinds.values())
    if not found:
        raise ScanError("No slice images, NIfTI or DICOM files found in the upload.")
    if len(found) > 1:
        raise ScanError(f"The upload mixes {' and '.join(sorted(found))} files; upload one scan of one kind.")
    kind = found.pop()
    if kind == "nifti":
        if len(files) > 1:
            raise ScanError("Upload one NIfTI file per scan.")
        scan = read_nifti(files[0])
        check_not_blank(scan.voxels, files[0].name)  # here, not in read_nifti: a label NIfTI or a target may be all 0
    elif kind == "dicom":
        scan = read_dicom_series(files, name)
    else:
        scan = read_slice_files(files, name, slice_thickness_mm, root, context)
    scan.case_day = scan.case_day or case_day_in(context)
    if scan.case_day:
        scan.name = scan.case_day
    return scan


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not JUNK.search(p.relative_to(folder).as_posix()))
    if len(files) > MAX_FILES:
        raise ScanError(f"{folder.name} holds {len(files)} files, over the {MAX_FILES}-file limit.")
    return files
