"""Two scans of one patient on different treatment days: how each organ moved and changed.

:func:`register` aligns day B to day A (the reference day) rigidly with SimpleITK: Mattes mutual
information, a geometry-centred initialiser, a three-level pyramid and an Euler 3D transform.
:func:`compare_days` then reports per organ: volume each day and its change, the centroid shift
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from . import metric
from .labels import ORGANS
from .measure import organ_volumes_ml
from .scans import Scan, ScanError, check_organ_masks
from .scans.kaggle import case_of

#: Fewest slices a scan needs to be registered in 3D (the coarsest level shrinks by 4).
MIN_SLICES = 8
#: Least fraction of day A's voxels that day B must cover after alignment.
MIN_OVERLAP = 0.10
#: ITK's physical frame is LPS+; ours (NIfTI's) is RAS+. Flipping x and y converts either way.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

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
class RegistrationSettings:
    """How hard :func:`register` works. ``tests/model/test_days.py`` holds the defaults to a known
    8 mm and 3° motion of a real scan (within 1 mm and 0.5°); docs/compare.md has what they reach."""

    #: Both images are first averaged down to voxels of about this size (BinShrink); the pyramid
    #: below runs on those: full 1.5 mm pixels cost several times the time for no accuracy the tests see.
    working_spacing_mm: float = 3.0
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_vox: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 200
    sampling_fraction: float = 0.02  # of each level's voxels, drawn at random with ``seed``
    histogram_bins: int = 32
    seed: int = 19


@dataclass(frozen=True)
class Registration:
    """A rigid transform between the patient coordinates of day A and day B.

    ``a_to_b``: ``(4, 4)`` float64, maps a point in A's RAS mm to where the same anatomy lies in
    B's. ``translation_mm``: ``(LR, AP, SI)`` displacement of A's image centre under it.
    ``rotation_deg``: rotations about the LR, AP and SI axes (extrinsic x-y-z Euler angles).
    ``quality``: Pearson correlation of A's intensities with B's resampled onto A, over the
    voxels B covers (1 for identical scans). ``overlap``: fraction of A's voxels B covers.
    ``metric``: the final Mattes mutual information (lower is better; comparable only between
    registrations of the same pair).
    """

    a_to_b: np.ndarray
    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    quality: float = math.nan
    overlap: float = math.nan
    metric: float = math.nan

    @property
    def translation_length_mm(self) -> float:
        return float(np.linalg.norm(self.translation_mm))

    @property
    def rotation_angle_deg(self) -> float:
        """The single angle of the rotation (axis-angle form), degrees."""
        return float(np.degrees(Rotation.from_matrix(self.a_to_b[:3, :3]).magnitude()))

    def describe(self) -> str:
        lr, ap, si = self.translation_mm
        return (f"B moved {self.translation_length_mm:.1f} mm (LR {lr:+.1f}, AP {ap:+.1f}, SI {si:+.1f}) and "
                f"turned {self.rotation_angle_deg:.1f}° from A; intensity correlation after alignment "
                f"{self.quality:.2f}, overlap {100 * self.overlap:.0f}% of A")


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


def patient_affine(scan: Scan) -> np.ndarray:
    """``(4, 4)`` from voxel ``(col, row, slice, 1)`` to patient RAS mm (see the module doc).

    The scan's own affine where its file has an origin (NIfTI, DICOM); for Kaggle slice files
    the same axes with the stack's middle voxel at the origin.
    """
    affine = np.array(scan.affine, dtype=np.float64)
    if scan.kind == "slices":
        d, h, w = scan.shape
        centre = affine[:3, :3] @ np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
        affine[:3, 3] = -centre
    return affine


def organ_centroids_mm(organ_masks: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(O, 3) float64`` centroid of each organ in patient RAS mm; NaN rows for absent organs."""
    centroids = np.full((len(organ_masks), 3), np.nan)
    for o, mask in enumerate(organ_masks):
        if mask.any():
            s, r, c = np.mean(np.nonzero(mask), axis=1)  # ndimage.center_of_mass, without its float copy
            centroids[o] = (affine @ np.array([c, r, s, 1.0]))[:3]
    return centroids


# --------------------------------------------------------------------------- registration


def register(scan_a: Scan, scan_b: Scan, settings: RegistrationSettings = RegistrationSettings()) -> Registration:
    """Rigidly register day B (moving) to day A (fixed) on their images; raises :class:`ScanError`
    when a scan is not 3D or the two cannot be brought to overlap."""
    import SimpleITK as sitk  # ~1 s and ~100 MB: only when days are compared

    check_3d(scan_a, "A")
    check_3d(scan_b, "B")
    fixed, moving = _working_image(scan_a, settings), _working_image(scan_b, settings)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                    numberOfIterations=settings.iterations,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    levels = _levels(settings, min(fixed.GetSize()[2], moving.GetSize()[2]))
    method.SetShrinkFactorsPerLevel([settings.shrink_factors[i] for i in levels])
    method.SetSmoothingSigmasPerLevel([settings.smoothing_sigmas_vox[i] for i in levels])
    method.SetInitialTransform(initial, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as err:  # ITK: "All samples map outside moving image buffer", too few samples
        if "outside" in str(err) or "samples" in str(err).lower():
            raise ScanError("The two scans do not overlap enough to be aligned; are they of the same body region?"
                            ) from None
        raise
    a_to_b = _ras_matrix(initial)
    reg = _describe(a_to_b, patient_affine(scan_a), scan_a.shape)
    return Registration(reg.a_to_b, reg.translation_mm, reg.rotation_deg, metric=float(method.GetMetricValue()))


def registration_from_matrix(a_to_b: np.ndarray, scan_a: Scan) -> Registration:
    """A :class:`Registration` for a known ``(4, 4)`` RAS transform (identity, a stored result)."""
    return _describe(np.asarray(a_to_b, dtype=np.float64), patient_affine(scan_a), scan_a.shape)


def check_3d(scan: Scan, day: str) -> None:
    """Refuse a 2D slice (or a stack too thin to register) with a one-line reason."""
    if scan.shape[0] < MIN_SLICES:
        what = "a single 2D slice" if scan.shape[0] == 1 else f"only {scan.shape[0]} slices"
        raise ScanError(f"Day {day} ({scan.name}) is {what}; comparing days needs two 3D scans "
                        f"of at least {MIN_SLICES} slices each.")


def _working_image(scan: Scan, settings: RegistrationSettings):
    """The scan as a float32 SimpleITK image, averaged down to about ``settings.working_spacing_mm`` voxels."""
    import SimpleITK as sitk

    image = _itk_image(scan.voxels.astype(np.float32), patient_affine(scan))
    factors = [max(1, int(settings.working_spacing_mm // s)) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def _levels(settings: RegistrationSettings, slices: int) -> list[int]:
    """The pyramid levels whose shrink still leaves 4 slices (thin stacks skip the coarsest)."""
    levels = [i for i, f in enumerate(settings.shrink_factors) if slices // f >= 4]
    return levels or [len(settings.shrink_factors) - 1]


def resample(volume: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], onto_affine: np.ndarray,
             onto_to_volume: np.ndarray | None = None, linear: bool = True, outside: float = 0.0) -> np.ndarray:
    """``volume`` ``(D, H, W)`` (RAS ``affine``) sampled on another grid: ``shape`` with RAS ``onto_affine``.

    ``onto_to_volume``: ``(4, 4)`` RAS transform from a point of the new grid's frame to the same
    anatomy in the volume's frame (a registration's ``a_to_b`` when the volume is day B and the
    grid day A's; identity when ``None``). Trilinear or nearest neighbour; ``outside`` beyond the volume.
    Returns the volume's dtype (float32 for bool input: threshold it yourself).
    """
    import SimpleITK as sitk

    dtype = np.float32 if volume.dtype == bool else volume.dtype
    moving = _itk_image(volume.astype(dtype, copy=False), affine)
    grid = _itk_image(np.zeros(shape, np.uint8), onto_affine)
    transform = _itk_transform(np.eye(4) if onto_to_volume is None else onto_to_volume)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    return sitk.GetArrayFromImage(sitk.Resample(moving, grid, transform, interpolator, float(outside)))


def _itk_image(voxels: np.ndarray, affine: np.ndarray):
    """``(D, H, W)`` array with a RAS affine → a SimpleITK image in ITK's LPS frame."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels))  # ITK index (x, y, z) = (col, row, slice)
    lps = _RAS_TO_LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _itk_transform(a_to_b: np.ndarray):
    """A RAS ``(4, 4)`` A→B matrix as the ITK (LPS) transform that resamples B onto A."""
    import SimpleITK as sitk

    lps = _RAS_TO_LPS @ a_to_b @ _RAS_TO_LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps[:3, :3].ravel().tolist())
    transform.SetTranslation(lps[:3, 3].tolist())
    return transform


def _ras_matrix(transform) -> np.ndarray:
    """An ITK rigid transform (LPS, ``x → R (x − c) + c + t``) as a RAS ``(4, 4)`` matrix."""
    rotation = np.array(transform.GetMatrix()).reshape(3, 3)
    centre, shift = np.array(transform.GetCenter()), np.array(transform.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = rotation
    lps[:3, 3] = centre + shift - rotation @ centre
    return _RAS_TO_LPS @ lps @ _RAS_TO_LPS


def _describe(a_to_b: np.ndarray, affine_a: np.ndarray, shape_a: tuple[int, int, int]) -> Registration:
    d, h, w = shape_a
    centre = (affine_a @ np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2, 1.0]))[:3]
    moved = (a_to_b @ np.append(centre, 1.0))[:3] - centre
    angles = Rotation.from_matrix(a_to_b[:3, :3]).as_euler("xyz", degrees=True)
    return Registration(a_to_b, tuple(float(v) for v in moved), tuple(float(v) for v in angles))


# --------------------------------------------------------------------------- comparison


def compare_days(scan_a: Scan, masks_a: np.ndarray, scan_b: Scan, masks_b: np.ndarray,
                 registration: Registration | None = None,
                 settings: RegistrationSettings = RegistrationSettings()) -> DayComparison:
    """Compare day B with day A (the reference): registration plus one :class:`OrganChange` per organ.

    ``masks_a``, ``masks_b``: ``(O, D, H, W) bool`` over each scan. ``registration``: reuse one
    (the same two images compared with predicted and with true masks); else :func:`register`.
    Two scans named after different cases are compared with a warning, not refused.
    """
    import SimpleITK as sitk

    check_3d(scan_a, "A")
    check_3d(scan_b, "B")
    _check_masks(masks_a, scan_a, "A")
    _check_masks(masks_b, scan_b, "B")
    notes = []
    if scan_a.case_day and scan_b.case_day and case_of(scan_a.case_day) != case_of(scan_b.case_day):
        notes.append(f"{scan_a.name} and {scan_b.name} are named after different cases; compared anyway.")
        warnings.warn("The two scans are named after different cases; compared anyway.", stacklevel=2)
    for day, scan, masks in (("A", scan_a, masks_a), ("B", scan_b, masks_b)):
        if not masks.any():
            notes.append(f"No organ was found on day {day} ({scan.name}): its organs are reported absent.")

    if registration is None:
        registration = register(scan_a, scan_b, settings)
    affine_a, affine_b = patient_affine(scan_a), patient_affine(scan_b)
    fixed = _itk_image(np.zeros(scan_a.shape, np.uint8), affine_a)
    transform = _itk_transform(registration.a_to_b)

    def onto_a(volume: np.ndarray, interpolator, dtype) -> np.ndarray:
        moving = _itk_image(volume.astype(dtype), affine_b)
        return sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, interpolator, 0.0))

    covered = onto_a(np.ones(scan_b.shape, np.uint8), sitk.sitkNearestNeighbor, np.uint8).astype(bool)
    overlap = float(covered.mean())
    if overlap < MIN_OVERLAP:
        raise ScanError(f"After alignment day B covers {100 * overlap:.0f}% of day A; the two scans do not "
                        "overlap enough to compare (are they of the same body region?).")
    image_b_on_a = onto_a(scan_b.voxels, sitk.sitkLinear, np.float32)
    every = (slice(None, None, 2),) * 3  # an eighth of the voxels is plenty for a correlation
    quality = _correlation(scan_a.voxels[every][covered[every]], image_b_on_a[every][covered[every]])
    registration = Registration(registration.a_to_b, registration.translation_mm, registration.rotation_deg,
                                quality, overlap, registration.metric)
    masks_b_on_a = np.stack([onto_a(m, sitk.sitkNearestNeighbor, np.uint8).astype(bool) for m in masks_b])

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
