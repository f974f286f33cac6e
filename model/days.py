"""Two scans of one patient on different treatment days: how each organ moved and changed.

:func:`model.registration.register` aligns day B to day A (the reference day) rigidly with
SimpleITK (Mattes mutual information, Euler 3D). :func:`compare_days` then reports per organ: volume each day and its change, the centroid shift
before ("raw") and after registration, and Dice, 95th-percentile and largest surface distance
between A's masks and B's masks brought onto A's grid. Rigid only: organs that deform (bowel)
show their deformation in the registered numbers, which is what adaptive RT studies report.

Patient coordinates are RAS+ millimetres from :attr:`Scan.affine` (NIfTI, DICOM). Kaggle slice
PNGs carry no origin, so for them (``Scan.kind == "slices"``) the image centre is put at the
origin: columns run right→left (LR), rows anterior→posterior (AP), slices inferior→superior
(SI), as :mod:`model.scans.slices` assumes, with the middle voxel of the stack at ``(0, 0, 0)``.
Shifts are given as ``(LR, AP, SI)`` components, positive towards the patient's right, anterior
and superior (RAS), and as a length. Raw shifts between two such scans are therefore relative
to each image's centre: they include any change of set-up and field of view, not only motion.

Masks are ``(O, D, H, W) bool``, organs in :data:`model.labels.ORGANS` order, over the scan's
voxels. SimpleITK is imported only here and only when registering, so the app starts without it.
Nothing here logs; messages name no patient.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import metric
from .labels import ORGANS
from .exports import save_label_nifti
from .measure import organ_volumes_ml
from .registration import (Registration, RegistrationSettings, check_3d, origins_note, patient_affine, register,
                           resample)
from .scans import Scan, ScanError, check_organ_masks, load_scan
from .scans.kaggle import case_and_day, case_of

#: Least fraction of day A's voxels that day B must cover after alignment.
MIN_OVERLAP = 0.10

#: Columns of ``changes.csv``: the issue's list first, then the components behind the lengths.
CHANGE_COLUMNS = (
    "case", "day_a", "day_b", "organ", "volume_a_ml", "volume_b_ml", "volume_change_pct",
    "centroid_shift_raw_mm", "centroid_shift_registered_mm", "dice_registered", "hd95_registered_mm",
    "registration_translation_mm", "registration_rotation_deg",
    "status", "volume_change_ml", "raw_shift_lr_mm", "raw_shift_ap_mm", "raw_shift_si_mm",
    "registered_shift_lr_mm", "registered_shift_ap_mm", "registered_shift_si_mm",
    "max_surface_distance_registered_mm", "registration_quality", "masks",
)






@dataclass(frozen=True)
class OrganChange:
    """One organ between day A and day B. ``None`` where a value does not exist (an absent organ).

    Shifts are ``(LR, AP, SI)`` mm: raw (centroid in B's coordinates minus A's) and registered
    (B's centroid mapped into A's coordinates minus A's). Surface distances are symmetric, in mm,
    on A's grid after B's mask is resampled onto it.
    """

    organ: str
    status: str  # "present", "absent on day A", "absent on day B", "absent on both days"
    volume_a_ml: float
    volume_b_ml: float
    volume_change_pct: float | None
    centroid_shift_raw_mm: tuple[float, float, float] | None
    centroid_shift_registered_mm: tuple[float, float, float] | None
    dice_registered: float | None
    hd95_registered_mm: float | None
    max_surface_distance_registered_mm: float | None

    @property
    def volume_change_ml(self) -> float:
        return self.volume_b_ml - self.volume_a_ml

    @property
    def raw_shift_length_mm(self) -> float | None:
        return _length(self.centroid_shift_raw_mm)

    @property
    def registered_shift_length_mm(self) -> float | None:
        return _length(self.centroid_shift_registered_mm)


@dataclass
class DayComparison:
    """The result of :func:`compare_days`. ``masks_b_on_a``: ``(O, D, H, W) bool`` on A's grid;
    ``image_b_on_a``: ``(D, H, W) float32`` B's intensities on A's grid (0 outside B)."""

    name_a: str
    name_b: str
    registration: Registration
    organs: list[OrganChange]
    masks_b_on_a: np.ndarray
    image_b_on_a: np.ndarray
    notes: list[str] = field(default_factory=list)

    def rows(self, case: str | None = None, day_a: str | None = None, day_b: str | None = None,
             masks: str = "predicted") -> list[dict]:
        """One ``changes.csv`` row per organ (:data:`CHANGE_COLUMNS`), ``None`` where a value does not exist.

        ``masks`` says whose masks were compared (``"predicted"`` or ``"truth"``)."""
        reg = self.registration
        rows = []
        for o in self.organs:
            raw, registered = o.centroid_shift_raw_mm or (None,) * 3, o.centroid_shift_registered_mm or (None,) * 3
            rows.append({
                "case": case or self.name_a, "day_a": day_a or self.name_a, "day_b": day_b or self.name_b,
                "organ": o.organ, "volume_a_ml": o.volume_a_ml, "volume_b_ml": o.volume_b_ml,
                "volume_change_pct": o.volume_change_pct,
                "centroid_shift_raw_mm": o.raw_shift_length_mm,
                "centroid_shift_registered_mm": o.registered_shift_length_mm,
                "dice_registered": o.dice_registered, "hd95_registered_mm": o.hd95_registered_mm,
                "registration_translation_mm": reg.translation_length_mm,
                "registration_rotation_deg": reg.rotation_angle_deg,
                "status": o.status, "volume_change_ml": o.volume_change_ml,
                "raw_shift_lr_mm": raw[0], "raw_shift_ap_mm": raw[1], "raw_shift_si_mm": raw[2],
                "registered_shift_lr_mm": registered[0], "registered_shift_ap_mm": registered[1],
                "registered_shift_si_mm": registered[2],
                "max_surface_distance_registered_mm": o.max_surface_distance_registered_mm,
                "registration_quality": reg.quality, "masks": masks,
            })
        return rows


# --------------------------------------------------------------------------- patient coordinates




def organ_centroids_mm(organ_masks: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(O, 3) float64`` centroid of each organ in patient RAS mm; NaN rows for absent organs."""
    centroids = np.full((len(organ_masks), 3), np.nan)
    for o, mask in enumerate(organ_masks):
        if mask.any():
            s, r, c = np.mean(np.nonzero(mask), axis=1)  # ndimage.center_of_mass, without its float copy
            centroids[o] = (affine @ np.array([c, r, s, 1.0]))[:3]
    return centroids


# --------------------------------------------------------------------------- registration






















# --------------------------------------------------------------------------- comparison


def compare_days(scan_a: Scan, masks_a: np.ndarray, scan_b: Scan, masks_b: np.ndarray,
                 registration: Registration | None = None,
                 settings: RegistrationSettings = RegistrationSettings()) -> DayComparison:
    """Compare day B with day A (the reference): registration plus one :class:`OrganChange` per organ.

    ``masks_a``, ``masks_b``: ``(O, D, H, W) bool`` over each scan. ``registration``: reuse one
    (the same two images compared with predicted and with true masks); else :func:`register`.
    Two scans named after different cases are compared with a warning, not refused.
    """
    check_3d(scan_a, "A")
    check_3d(scan_b, "B")
    _check_masks(masks_a, scan_a, "A")
    _check_masks(masks_b, scan_b, "B")
    notes = []
    if scan_a.case_day and scan_b.case_day and case_of(scan_a.case_day) != case_of(scan_b.case_day):
        notes.append(f"{scan_a.name} and {scan_b.name} are named after different cases; compared anyway.")
        warnings.warn("The two scans are named after different cases; compared anyway.", stacklevel=2)
    if scan_a.voxels.shape == scan_b.voxels.shape and np.array_equal(scan_a.voxels, scan_b.voxels) \
            and np.allclose(scan_a.affine, scan_b.affine):
        notes.append("Day A and day B are the same scan (the same voxels at the same place): every change below "
                     "is zero by construction; upload another day as B.")
    if origins := origins_note(scan_a, scan_b):
        notes.append(origins)
    for day, scan, masks in (("A", scan_a, masks_a), ("B", scan_b, masks_b)):
        if not masks.any():
            notes.append(f"No organ was found on day {day} ({scan.name}): its organs are reported absent.")

    if registration is None:
        registration = register(scan_a, scan_b, settings)
    affine_a, affine_b = patient_affine(scan_a), patient_affine(scan_b)

    def onto_a(volume: np.ndarray, linear: bool, dtype) -> np.ndarray:
        return resample(volume.astype(dtype), affine_b, scan_a.shape, affine_a, registration.a_to_b, linear=linear)

    covered = onto_a(np.ones(scan_b.shape, np.uint8), False, np.uint8).astype(bool)
    overlap = float(covered.mean())
    if overlap < MIN_OVERLAP:
        raise ScanError(f"After alignment day B covers {100 * overlap:.0f}% of day A; the two scans do not "
                        "overlap enough to compare (are they of the same body region?).")
    image_b_on_a = onto_a(scan_b.voxels, True, np.float32)
    every = (slice(None, None, 2),) * 3  # an eighth of the voxels is plenty for a correlation
    quality = _correlation(scan_a.voxels[every][covered[every]], image_b_on_a[every][covered[every]])
    registration = Registration(registration.a_to_b, registration.translation_mm, registration.rotation_deg,
                                quality, overlap, registration.metric)
    masks_b_on_a = np.stack([onto_a(m, False, np.uint8).astype(bool) for m in masks_b])

    volumes_a, volumes_b = organ_volumes_ml(masks_a, scan_a.spacing_mm), organ_volumes_ml(masks_b, scan_b.spacing_mm)
    centroids_a, centroids_b = organ_centroids_mm(masks_a, affine_a), organ_centroids_mm(masks_b, affine_b)
    b_to_a = np.linalg.inv(registration.a_to_b)
    organs = []
    for o, organ in enumerate(ORGANS):
        in_a, in_b = bool(masks_a[o].any()), bool(masks_b[o].any())
        status = {(True, True): "present", (False, True): "absent on day A",
                  (True, False): "absent on day B", (False, False): "absent on both days"}[in_a, in_b]
        raw = registered = dice = hd95 = largest = None
        if in_a and in_b:
            raw = _vector(centroids_b[o] - centroids_a[o])
            registered = _vector((b_to_a @ np.append(centroids_b[o], 1.0))[:3] - centroids_a[o])
            dice = metric.dice(masks_a[o], masks_b_on_a[o])  # A's organ is present: never NaN
            if masks_b_on_a[o].any():  # B's organ may lie outside A's field of view after alignment
                hd95, largest = surface_distances_mm(masks_a[o], masks_b_on_a[o], scan_a.spacing_mm)
        change = 100.0 * (volumes_b[o] - volumes_a[o]) / volumes_a[o] if in_a else None
        organs.append(OrganChange(organ, status, float(volumes_a[o]), float(volumes_b[o]), change, raw, registered,
                                  dice, hd95, largest))
    return DayComparison(scan_a.name, scan_b.name, registration, organs, masks_b_on_a,
                         image_b_on_a.astype(np.float32), notes)


def surface_distances_mm(mask_a: np.ndarray, mask_b: np.ndarray,
                         spacing_mm: tuple[float, float, float]) -> tuple[float, float]:
    """95th-percentile and largest symmetric surface distance, mm, of two non-empty ``(D, H, W) bool`` masks.

    The 95th percentile is the larger of the two directed ones (MONAI's ``compute_hausdorff_distance``
    with ``percentile=95``). Written with scipy because SimpleITK has only the maximum and MONAI needs
    torch. Surfaces are the masks' voxels with a background 6-neighbour.
    """
    box = metric.bounding_box(mask_a | mask_b, pad=1)  # one voxel wider, so surfaces stay surfaces
    a, b = mask_a[box], mask_b[box]
    surface_a, surface_b = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing_mm)[surface_a]
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing_mm)[surface_b]
    hd95 = max(float(np.percentile(to_b, 95)), float(np.percentile(to_a, 95)))
    return hd95, float(max(to_b.max(), to_a.max()))


def write_changes_csv(rows: list[dict], path: str | Path) -> Path:
    """Write :meth:`DayComparison.rows` as ``changes.csv`` (:data:`CHANGE_COLUMNS`), empty cells for ``None``."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CHANGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in CHANGE_COLUMNS})
    return path


def _check_masks(masks: np.ndarray, scan: Scan, day: str) -> None:
    check_organ_masks(masks, scan.shape, f"masks of day {day}")
    if masks.dtype != bool:
        raise TypeError(f"masks of day {day} must be bool, got {masks.dtype}")


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _vector(v: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(x) for x in v)


def _length(v: tuple[float, float, float] | None) -> float | None:
    return None if v is None else float(np.linalg.norm(v))


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --------------------------------------------------------------------------- two days from their files


#: File names taken as an earlier result of a day (this app's downloads) rather than as its scan.
RESULT_SUFFIXES = ("_masks.zip", "_labels.nii.gz", "_labels.nii")


@dataclass(frozen=True)
class ComparedDayFiles:
    """Two days compared from their files: the scans, A's masks ``(O, D, H, W) bool``, the comparison
    (:class:`model.days.DayComparison`, B's masks and image on A's grid) and the two downloads."""

    scan_a: Scan
    scan_b: Scan
    masks_a: np.ndarray
    comparison: DayComparison
    changes_csv: Path
    labels_b_on_a: Path


def compare_day_files(paths_a: list[str], paths_b: list[str], get_segmenter: Callable, out_dir: Path,
                    slice_thickness_mm: float | None = None) -> ComparedDayFiles:
    """Compare two days given as files (each a scan in any format :func:`model.scans.load_scan` reads, and
    optionally an earlier ``<scan>_masks.zip`` or ``<scan>_labels.nii.gz`` of it, whose masks are then used
    instead of running the model), writing ``<A>_vs_<B>_changes.csv`` and ``<B>_on_<A>_labels.nii.gz``
    (B's masks on A's grid, as the Scan tab's label NIfTI). Raises :class:`ScanError` with one line."""
    scan_a, results_a = _read("A", paths_a, slice_thickness_mm)
    scan_b, results_b = _read("B", paths_b, slice_thickness_mm)
    masks_a, masks_b = _masks(scan_a, results_a, get_segmenter), _masks(scan_b, results_b, get_segmenter)
    comparison = compare_days(scan_a, masks_a, scan_b, masks_b)
    stem = f"{scan_a.name}_vs_{scan_b.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    changes = write_changes_csv(comparison.rows(*row_names(scan_a, scan_b)), out_dir / f"{stem}_changes.csv")
    labels_b = save_label_nifti(comparison.masks_b_on_a, scan_a,
                                out_dir / f"{scan_b.name}_on_{scan_a.name}_labels.nii.gz")
    return ComparedDayFiles(scan_a, scan_b, masks_a, comparison, changes, labels_b)


def row_names(scan_a: Scan, scan_b: Scan) -> tuple[str, str, str]:
    """``changes.csv``'s ``case``, ``day_a`` and ``day_b`` for two scans: ``("case47", "day29", "day31")`` when both
    are case-days of one case (as ``python -m model.predict --compare-days`` writes them), else day A's name and
    the two scans' names."""
    if scan_a.case_day and scan_b.case_day:
        (case_a, day_a), (case_b, day_b) = case_and_day(scan_a.case_day), case_and_day(scan_b.case_day)
        if case_a == case_b:
            return case_a, f"day{day_a}", f"day{day_b}"
    return scan_a.name, scan_a.name, scan_b.name


def _read(day: str, paths: list[str], slice_thickness_mm: float | None) -> tuple[Scan, list[Path]]:
    paths = [Path(p) for p in paths]
    results = [p for p in paths if p.name.lower().endswith(RESULT_SUFFIXES)]
    scan_paths = [p for p in paths if p not in results]
    if not scan_paths:
        raise ScanError(f"Day {day}: upload its scan (slice files, a .zip, NIfTI or DICOM), and optionally "
                        "its earlier _masks.zip or _labels.nii.gz.")
    scan = load_scan(scan_paths, slice_thickness_mm)
    check_3d(scan, day)  # before the model runs
    return scan, results


def _masks(scan: Scan, results: list[Path], get_segmenter: Callable) -> np.ndarray:
    """The earlier result's masks when one was given, else the model's; ``(O, D, H, W) bool``."""
    if results:
        from .truth import load_ground_truth

        return load_ground_truth(results[:1], scan)[0]
    return get_segmenter().segment_scan(scan).run().organ_masks
