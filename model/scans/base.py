"""What every scan reader shares: the :class:`Scan` type, :class:`ScanError`, limits and naming helpers.

The readers (:mod:`.slices`, :mod:`.nifti`, :mod:`.dicom`, :mod:`.archive`) and the dispatcher
(:mod:`.load`) import this module; it imports none of them, so nothing here reaches back up.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..image import IMAGE_SUFFIXES, ImageError, normalize_intensity

#: Largest scan we read (voxels); 256 × 512 × 512. The biggest Kaggle scan is 144 × 360 × 310.
MAX_VOXELS = 256 * 512 * 512
MAX_SLICES = 1000
#: Most files one upload, folder or zip may hold (zip bombs, slow uploads).
MAX_FILES = 2000
#: The dataset's slice thickness: assumed (with a note) wherever a scan does not carry its own.
DEFAULT_SLICE_THICKNESS_MM = 3.0

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Files a zip or folder may hold besides the scan; ignored rather than refused.
JUNK = re.compile(r"(^|/)(__MACOSX/|\._|\.DS_Store$|Thumbs\.db$|desktop\.ini$|DICOMDIR$)|\.(txt|md|json|csv|xml)$", re.I)
#: NIfTI's RAS+ world from DICOM's LPS world (and back: the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Where a scan's voxel axes ``(col, row, slice)`` point (nibabel's codes): the patient's left, posterior and
#: superior, i.e. axial slices seen from the feet, patient's left on the image's right (radiological view), as
#: the model was trained.
STANDARD_AXES = ("L", "P", "S")


class ScanError(ImageError):
    """A scan that cannot be read. ``str(err)`` is one line a person can act on."""


@dataclass
class SourceSeries:
    """The headers of one single-frame series, in its slice order (along the slice normal).

    ``datasets``: headers (pixel data dropped), in the series' voxel order ``(S, H, W)``: the scan's
    own, unless the series was stored in another orientation (``stored_axes``; :meth:`to_source`). ``row_cos``,
    ``col_cos``: ImageOrientationPatient's direction of increasing column and of increasing row.
    ``pixel_spacing``: ``(row, col)`` mm (PixelSpacing). ``positions``: ``(S, 3)``
    ImagePositionPatient of each slice, LPS mm.
    """

    datasets: list
    row_cos: np.ndarray
    col_cos: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: np.ndarray
    stored_axes: np.ndarray | None = None  # nibabel orientation of the stored voxel axes; None: the scan's own

    def to_source(self, mask: np.ndarray) -> np.ndarray:
        """A ``(D, H, W)`` array on the scan's grid in the series' own voxel order ``(S, Rows, Columns)``.

        The scan's voxels are the series turned to the standard axes (:func:`to_standard_axes`); the
        SEG and RTSTRUCT reference the series' own images, so their masks are turned back.
        """
        if self.stored_axes is None:
            return mask
        from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

        back = ornt_transform(axcodes2ornt(STANDARD_AXES), self.stored_axes)
        return np.ascontiguousarray(apply_orientation(mask.transpose(2, 1, 0), back).transpose(2, 1, 0))

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

    def check_referenceable(self) -> None:
        """Raise :class:`ScanError` unless every header has what a SEG or RTSTRUCT must reference."""
        need = ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
        if not all(all(ds.get(k) not in (None, "") for k in need) for ds in self.datasets):
            raise ScanError("The DICOM series lacks the UIDs (study, series, instance, frame of reference) "
                            "that a DICOM SEG or RTSTRUCT must reference.")


@dataclass
class Scan:
    """One axial scan.

    ``voxels``: ``(D, H, W)`` raw intensities (the file's dtype, or float32 after rescaling).
    ``spacing_mm``: ``(slice, row, col)`` voxel size. ``affine``: ``(4, 4)`` from
    ``(col, row, slice, 1)`` to RAS+ mm. ``slice_numbers``: the Kaggle slice numbers, or
    1..D for other inputs. ``case_day``: e.g. ``"case123_day20"`` when a path names it.
    ``notes``: one-line caveats for the user (assumed spacing, gaps, fallbacks). ``source``:
    a DICOM series' headers in voxel order (:class:`SourceSeries`), which the
    DICOM SEG and RTSTRUCT reference; ``None`` for other inputs.
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
    source: SourceSeries | None = field(default=None, repr=False)

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


def check_organ_masks(organ_masks: np.ndarray, shape: tuple[int, int, int], what: str = "organ_masks") -> np.ndarray:
    """``organ_masks`` as ``(O, D, H, W)`` bool for a scan of ``shape`` ``(D, H, W)``; ``ValueError`` otherwise.

    Every dimension is checked, so slices and organs swapped (``(D, O, H, W)``) are refused even
    for a three-slice scan.
    """
    from ..labels import ORGANS

    organ_masks = np.asarray(organ_masks)
    expected = (len(ORGANS), *shape)
    if organ_masks.shape != expected:
        raise ValueError(f"{what} must be (organs, slices, rows, cols) = {expected}, got {organ_masks.shape}")
    return organ_masks


def safe_name(name: str) -> str:
    """``name`` cut to characters safe in output file names (names become file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "scan"


def axis_codes(orientation: np.ndarray) -> str:
    """``"RAS"``-style codes of a nibabel orientation array (where each voxel axis points)."""
    from nibabel.orientations import ornt2axcodes

    return "".join(ornt2axcodes(orientation))


def to_standard_axes(voxels: np.ndarray, affine: np.ndarray, spacing_mm: tuple[float, float, float]):
    """``(D, H, W)`` voxels whose affine (``(col, row, slice)`` → RAS mm) points elsewhere, turned to
    :data:`STANDARD_AXES` by flips and axis swaps (nibabel's orientation tools; no resampling).

    Returns ``(voxels, affine, spacing_mm, stored_axes)``: the affine still maps each voxel to the
    same place, ``spacing_mm`` ``(slice, row, col)`` follows the axes, and ``stored_axes`` is the
    stored orientation (to turn masks back, :meth:`SourceSeries.to_source`), ``None`` when the
    voxels already had the standard axes (then all is returned unchanged).
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    stored = io_orientation(affine)
    standard = axcodes2ornt(STANDARD_AXES)
    if np.array_equal(stored, standard):
        return voxels, affine, spacing_mm, None
    transform = ornt_transform(stored, standard)
    xyz = voxels.transpose(2, 1, 0)
    turned = apply_orientation(xyz, transform)
    stored_xyz = spacing_mm[::-1]
    xyz_mm = [0.0, 0.0, 0.0]
    for axis, (to, _) in enumerate(transform):
        xyz_mm[int(to)] = stored_xyz[axis]
    return (np.ascontiguousarray(turned.transpose(2, 1, 0)), affine @ inv_ornt_aff(transform, xyz.shape),
            tuple(xyz_mm[::-1]), stored)


def centred_affine(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``affine`` ``(4, 4)`` with the middle voxel of a ``(D, H, W)`` stack at the origin: the patient coordinates
    of slice files, which carry none of their own (the label NIfTI, the surfaces, Compare days and the course
    all use them)."""
    d, h, w = shape
    centred = np.array(affine, dtype=np.float64)
    centred[:3, 3] = -centred[:3, :3] @ np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
    return centred


def stack_voxels(slices: list[np.ndarray]) -> np.ndarray:
    """Slices ``(H, W)`` of one size → ``(D, H, W)``, refused when too big or blank (:func:`check_not_blank`)."""
    voxels = np.stack(slices)
    if voxels.size > MAX_VOXELS:
        raise ScanError(f"The scan has {voxels.size:,} voxels, over the {MAX_VOXELS:,} limit.")
    return check_not_blank(voxels)


def check_not_blank(voxels: np.ndarray, name: str | None = None) -> np.ndarray:
    """``voxels``, or :class:`ScanError` when no voxel is finite (all NaN or infinite) or every finite one has the
    same intensity: the model would see a blank scan and answer "no organs", which is no answer. ``name``: the
    file the message names (else "the scan")."""
    values = voxels
    if np.issubdtype(voxels.dtype, np.floating):
        finite = np.isfinite(voxels)
        if not finite.any():
            raise ScanError(f"{name or 'The scan'} has no finite voxel values (all NaN or infinite); "
                            "there is nothing to segment.")
        if not finite.all():  # a copy only when some voxels are not finite
            values = voxels[finite]
    if values.min() == values.max():
        raise ScanError(f"Every voxel of {name or 'the scan'} has the same intensity; there is nothing to segment.")
    return voxels


def file_head(path: Path, opener=open, size: int = 352) -> bytes:
    """The first ``size`` bytes of ``path`` (through ``opener``); ``b""`` when unreadable."""
    try:
        with opener(path, "rb") as fh:
            return fh.read(size)
    except (OSError, EOFError, zlib.error):
        return b""


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
