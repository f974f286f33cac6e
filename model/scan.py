"""Whole scans: the :class:`Scan` type, and :func:`load_scan`, which tells the formats apart.

The readers live one format per file: :mod:`model.scan_slices` (Kaggle slice files),
:mod:`model.scan_nifti`, :mod:`model.scan_dicom` and :mod:`model.scan_zip` (safe extraction).
Every reader returns a :class:`Scan` whose voxels are ``(D, H, W)``: slices from inferior to
superior where the file says so, each slice shown as a radiologist views an axial image
(anterior at the top, the patient's right on the left of the image). ``Scan.affine`` maps
voxel indices ``(col, row, slice, 1)`` to RAS+ millimetres, the NIfTI convention, so a label
volume written with it (:func:`model.volume.save_label_nifti`) opens aligned in 3D Slicer
and ITK-SNAP. Segmenting a scan is the model's job: :meth:`model.inference.Segmenter.segment_volume`.

A scan is named after the Kaggle case and day (``case123_day20``) wherever its path, zip or
file name holds one, else after its file or folder.

Patient privacy: the DICOM reader looks only at geometry and pixel tags. Nothing here puts
a DICOM tag value into a message, a log line or an output file.
"""

from __future__ import annotations

import gzip
import re
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .image import IMAGE_SUFFIXES, ImageError, normalize_intensity

#: Largest scan we read (voxels); 256 × 512 × 512. The biggest Kaggle scan is 144 × 360 × 310.
MAX_VOXELS = 256 * 512 * 512
MAX_SLICES = 1000
#: Most files one upload, folder or zip may hold (zip bombs, slow uploads).
MAX_FILES = 2000

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip's end record
_CASE_DAY = re.compile(r"case\d+_day\d+")
#: Files a zip or folder may hold besides the scan; ignored rather than refused.
JUNK = re.compile(r"(^|/)(__MACOSX/|\._|\.DS_Store$|Thumbs\.db$|desktop\.ini$|DICOMDIR$)|\.(txt|md|json|csv|xml)$", re.I)


class ScanError(ImageError):
    """A scan that cannot be read. ``str(err)`` is one line a person can act on."""


@dataclass
class Scan:
    """One axial scan.

    ``voxels``: ``(D, H, W)`` raw intensities (the file's dtype, or float32 after rescaling).
    ``spacing_mm``: ``(slice, row, col)`` voxel size. ``affine``: ``(4, 4)`` from
    ``(col, row, slice, 1)`` to RAS+ mm. ``slice_numbers``: the Kaggle slice numbers, or
    1..D for other inputs. ``case_day``: e.g. ``"case123_day20"`` when a path names it.
    ``notes``: one-line caveats for the user (assumed spacing, gaps, fallbacks).
    """

    voxels: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    slice_numbers: tuple[int, ...]
    name: str
    kind: str  # "slices", "nifti" or "dicom"
    case_day: str | None = None
    kaggle_named: bool = False
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = safe_name(self.name)
        if self.voxels.ndim != 3 or len(self.slice_numbers) != self.voxels.shape[0]:
            raise ValueError(f"voxels must be (D, H, W) with one slice number per slice, got {self.voxels.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.voxels.shape)  # type: ignore[return-value]

    def display_slice(self, index: int) -> np.ndarray:
        """Slice ``index`` stretched for display, ``(H, W) uint8`` (the model's own intensity step)."""
        return normalize_intensity(self.voxels[index])

    def __len__(self) -> int:
        return self.voxels.shape[0]

    def describe(self) -> str:
        d, h, w = self.shape
        s, r, c = self.spacing_mm
        return f"{self.name}: {d} slices of {w}×{h} px, voxel {c:g} × {r:g} × {s:g} mm ({self.kind})"


def safe_name(name: str) -> str:
    """``name`` cut to characters safe in output file names (names become file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "scan"


def case_day_in(*texts: str) -> str | None:
    """The innermost Kaggle ``caseN_dayM`` in the texts (paths), searched last to first; ``None`` if none."""
    for text in reversed(texts):
        found = _CASE_DAY.findall(text)
        if found:
            return found[-1]
    return None


def stack_voxels(slices: list[np.ndarray]) -> np.ndarray:
    """Slices ``(H, W)`` of one size → ``(D, H, W)``, refused when too big or flat everywhere."""
    voxels = np.stack(slices)
    if voxels.size > MAX_VOXELS:
        raise ScanError(f"The scan has {voxels.size:,} voxels, over the {MAX_VOXELS:,} limit.")
    if voxels.max() == voxels.min():
        raise ScanError("Every slice has the same flat intensity; there is nothing to segment.")
    return voxels


# --------------------------------------------------------------------------- entry point


def load_scan(paths: str | Path | Iterable[str | Path], slice_thickness_mm: float | None = None) -> Scan:
    """Read one scan from uploaded files: slice images, a zip, one NIfTI, or DICOM files.

    ``paths`` may also be one folder (the command line). ``slice_thickness_mm`` overrides the
    slice spacing of Kaggle slice files (default 3 mm); NIfTI and DICOM carry their own.
    Raises :class:`ScanError` with a one-line reason.
    """
    from .scan_zip import extract_zip  # the readers import this module for Scan: import them here

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
    zips = [p for p in paths if _kind(p) == "zip"]
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
    kinds = {p: _kind(p) for p in files}
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
        from .scan_nifti import read_nifti

        if len(files) > 1:
            raise ScanError("Upload one NIfTI file per scan.")
        scan = read_nifti(files[0])
    elif kind == "dicom":
        from .scan_dicom import read_dicom_series

        scan = read_dicom_series(files, name)
    else:
        from .scan_slices import read_slice_files

        scan = read_slice_files(files, name, slice_thickness_mm, root, context)
    scan.case_day = scan.case_day or case_day_in(context)
    if scan.case_day:
        scan.name = scan.case_day
    return scan


def _kind(path: Path) -> str | None:
    """``"zip"``, ``"nifti"``, ``"dicom"`` or ``"slices"``: by content where it is unambiguous, else by name.

    Content wins so that a renamed download (a zip saved as ``.nii``, a ``.nii.gz`` saved as
    ``.gz`` or ``.zip``) is still read; slice images are left to their decoder.
    """
    sniffed = sniff_kind(path)
    if sniffed:
        return sniffed
    return kind_by_name(path)


def kind_by_name(path: Path) -> str | None:
    """What a file's name says it is: ``"nifti"``, ``"slices"``, ``"dicom"``, ``"zip"`` or ``None``."""
    lower = path.name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "slices"
    if path.suffix.lower() == ".dcm":
        return "dicom"
    if path.suffix.lower() == ".zip":
        return "zip"
    return None


def sniff_kind(path: Path) -> str | None:
    """What the first bytes say: ``"zip"``, ``"nifti"`` (plain or gzipped), ``"dicom"``, or ``None``."""
    head = file_head(path)
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    if head[:2] == b"\x1f\x8b":  # gzip: a .nii.gz, or something else
        head = file_head(path, gzip.open)
    if _is_nifti_header(head):
        return "nifti"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def file_head(path: Path, opener=open, size: int = 352) -> bytes:
    """The first ``size`` bytes of ``path`` (through ``opener``); ``b""`` when unreadable."""
    try:
        with opener(path, "rb") as fh:
            return fh.read(size)
    except (OSError, EOFError, zlib.error):
        return b""


def _is_nifti_header(head: bytes) -> bool:
    return head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0")


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not JUNK.search(p.relative_to(folder).as_posix()))
    if len(files) > MAX_FILES:
        raise ScanError(f"{folder.name} holds {len(files)} files, over the {MAX_FILES}-file limit.")
    return files


def natural_key(name: str) -> list:
    """Sort key that orders ``slice_2`` before ``slice_10`` and ``case9`` before ``case10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def scan_stem(path: Path) -> str:
    """A file's name without its scan suffix (``.nii.gz``, ``.zip``, ``.png``, ...)."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".zip", ".dcm", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
