"""Organ measurements: areas per slice, volumes, slice ranges and largest cross-sections.

Scan functions take ``organ_masks``: ``(O, D, H, W)`` bool, organs in :data:`model.labels.ORGANS`
order, over the slices of a :class:`model.scans.Scan`; :func:`organ_areas` takes one slice's
``(O, H, W)``. Planning structures are measured the same way (:func:`structure_volumes_ml`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import labels
from .planning import Structure
from .scans.base import Scan


def volume_ml(voxels, spacing_mm):
    """Voxel count(s) → ml (cm³): ``voxels`` × the product of the ``(slice, row, col)`` spacing in mm / 1000.

    The one volume rule: organ volumes, day changes, course tables and structures all use it, so they
    agree to the last digit. The voxel volume in ml is computed first and then multiplied, the order the
    app's and the CLI's volumes have always used, so their files did not change when the day comparison
    (which divided last) moved onto this rule; its published numbers were regenerated.
    ``voxels``: an int or an integer array; returns a float or a float64 array of its shape.
    """
    return voxels * (float(np.prod(spacing_mm)) / 1000.0)


def organ_volumes_ml(organ_masks: np.ndarray, spacing_mm) -> np.ndarray:
    """``(O, D, H, W)`` masks → ``(O,) float64`` ml, by :func:`volume_ml`."""
    return volume_ml(np.count_nonzero(organ_masks, axis=(1, 2, 3)), spacing_mm)


@dataclass(frozen=True)
class OrganArea:
    """One organ on one slice: present or not, its pixel count and area."""

    organ: str
    present: bool
    pixels: int
    area_cm2: float


def organ_areas(organ_masks: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> list[OrganArea]:
    """Pixel count and area (cm²) of each organ on one slice ``(O, H, W)``; ``pixel_spacing_mm`` is ``(row, col)``."""
    pixel_cm2 = pixel_spacing_mm[0] * pixel_spacing_mm[1] / 100.0
    counts = organ_masks.reshape(len(labels.ORGANS), -1).sum(axis=1)
    return [OrganArea(o, bool(c > 0), int(c), float(c) * pixel_cm2) for o, c in zip(labels.ORGANS, counts)]


@dataclass(frozen=True)
class OrganVolume:
    """One organ's measurements. Slice numbers are the scan's (Kaggle numbers, else 1..D)."""

    organ: str
    voxels: int
    volume_ml: float
    first_slice: int | None
    last_slice: int | None
    largest_area_cm2: float
    largest_slice: int | None


def slice_areas_cm2(organ_masks: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Area of each organ on each slice, ``(O, D) float64`` cm²; ``spacing_mm`` is ``(slice, row, col)``."""
    return np.count_nonzero(organ_masks, axis=(2, 3)) * (spacing_mm[1] * spacing_mm[2] / 100.0)


def measure(organ_masks: np.ndarray, scan: Scan) -> list[OrganVolume]:
    """Volume (voxel count × voxel volume), slice range and largest cross-section of each organ."""
    areas = slice_areas_cm2(organ_masks, scan.spacing_mm)
    result = []
    for o, organ in enumerate(labels.ORGANS):
        present = np.flatnonzero(areas[o])
        count = int(np.count_nonzero(organ_masks[o]))
        if present.size:
            biggest = int(np.argmax(areas[o]))
            numbers = scan.slice_numbers
            result.append(OrganVolume(organ, count, volume_ml(count, scan.spacing_mm), numbers[present[0]],
                                      numbers[present[-1]], float(areas[o, biggest]), numbers[biggest]))
        else:
            result.append(OrganVolume(organ, 0, 0.0, None, None, 0.0, None))
    return result


def busiest_slice(organ_masks: np.ndarray) -> int:
    """Index of the slice with the most organ area (all organs together); 0 for an empty prediction."""
    return int(np.argmax(np.count_nonzero(organ_masks, axis=(0, 2, 3)))) if organ_masks.size else 0


def summary_line(scan: Scan, volumes: list[OrganVolume]) -> str:
    """``name: D slices W×H, stomach 123.4 ml, small bowel …`` for the CLI and the UI."""
    d, h, w = scan.shape
    parts = ", ".join(f"{labels.DISPLAY_NAMES[v.organ].lower()} {v.volume_ml:.1f} ml" for v in volumes)
    return f"{scan.name}: {d} slices {w}×{h}, {parts}"


def structure_volumes_ml(structures: list[Structure], spacing_mm: tuple[float, float, float]) -> list[tuple[str, float]]:
    """``(label, volume in ml)`` per structure: voxel count × voxel volume, as the organ measurements."""
    return [(s.label, volume_ml(int(np.count_nonzero(s.mask)), spacing_mm)) for s in structures]

