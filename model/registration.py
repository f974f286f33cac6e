"""Rigid registration of two scans of one patient (SimpleITK), and sampling one scan's voxels on the other's grid.

:func:`register` aligns day B to day A (the reference day): Mattes mutual information, a
geometry-centred initialiser, a three-level pyramid and an Euler 3D transform. :func:`resample`
carries a volume (masks, a dose, a target) through such a transform onto another grid.

Patient coordinates are RAS+ millimetres from :attr:`Scan.affine` (NIfTI, DICOM). Kaggle slice
PNGs carry no origin, so for them (``Scan.kind == "slices"``) the image centre is put at the
origin: columns run right→left (LR), rows anterior→posterior (AP), slices inferior→superior
(SI), as :mod:`model.scans.slices` assumes, with the middle voxel of the stack at ``(0, 0, 0)``.
SimpleITK is imported only inside the functions that need it, so the app starts without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .scans import Scan, ScanError
from .scans.base import centred_affine

#: Fewest slices a scan needs to be registered in 3D (the coarsest level shrinks by 4).
MIN_SLICES = 8


#: ITK's physical frame is LPS+; ours (NIfTI's) is RAS+. Flipping x and y converts either way.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def patient_affine(scan: Scan) -> np.ndarray:
    """``(4, 4)`` from voxel ``(col, row, slice, 1)`` to patient RAS mm (see the module doc).

    The scan's own affine where its file has an origin (NIfTI, DICOM); for Kaggle slice files
    the same axes with the stack's middle voxel at the origin (as :mod:`model.scans.slices` reads
    them; a :class:`Scan` of slices made otherwise is centred here too).
    """
    return centred_affine(scan.affine, scan.shape) if scan.kind == "slices" else np.array(scan.affine, np.float64)


def origins_note(scan_a: Scan, scan_b: Scan, a: str = "A", b: str = "B") -> str | None:
    """A note when one scan is slice files (no patient coordinates: the image centre is the origin, as
    :func:`patient_affine` puts it) and the other has its scanner's: a reported motion between them includes
    the distance between the two origins. ``None`` for two scans of one kind."""
    if (scan_a.kind == "slices") == (scan_b.kind == "slices"):
        return None
    files, scanner = (a, b) if scan_a.kind == "slices" else (b, a)
    return (f"Day {files} is slice files, which carry no patient coordinates (its image centre is taken as the "
            f"origin), and day {scanner} has its scanner's: the motion and the raw shifts reported between them "
            "include the distance between the two origins, not only the organs' motion. Compare days of one format.")


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
