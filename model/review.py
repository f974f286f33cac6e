"""Review flags: slices and organs a person should look at before using the contours.

Three rules, each per slice and organ, on ``(O, D, H, W)`` masks and probabilities (organs in
:data:`model.labels.ORGANS` order, as everywhere; the rules' helpers work slices first):

``low_confidence``
    The organ is on the slice and the mean probability margin in its boundary band is below
    ``min_margin`` (default :data:`MIN_MARGIN`). The margin of a pixel is ``|2p - 1|``: 0 at
    even odds, 1 when the model is certain either way. ``p`` is the organ's probability
    (sigmoid output, or the organ's softmax probability). The boundary band is every pixel
    within ``band_px`` pixels (8-connected steps, default :data:`BAND_PX`) of the organ's
    edge on that slice, inside or outside.
``isolated``
    The organ is on the slice and on neither neighbouring slice. Slices beyond the scan count
    as empty, so an organ only on the first slice of a scan is flagged; a one-slice scan gets
    no such flag.
``area_jump``
    The organ is on this slice and on the previous one, and the larger of the two areas is more
    than ``max_area_ratio`` (default :data:`MAX_AREA_RATIO`) times the smaller. Pairs whose
    larger area is under ``min_area_mm2`` (default :data:`MIN_AREA_MM2`) are skipped: a few
    pixels more or less would swing the ratio. The flag is put on the later slice.

Each flag is one :class:`ReviewFlag`; :func:`write_review_csv` writes them as a CSV.
"""

from __future__ import annotations

import csv
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from . import labels

#: Mean boundary-band margin below which a slice's organ is "low confidence" (p within 0.25 of 0.5).
MIN_MARGIN = 0.5
#: Half-width of the boundary band, pixels.
BAND_PX = 2
#: Largest accepted ratio of an organ's areas on neighbouring slices.
MAX_AREA_RATIO = 2.0
#: Area pairs smaller than this (the larger of the two, mm²) are not judged: 1 cm².
MIN_AREA_MM2 = 100.0


@dataclass(frozen=True)
class ReviewFlag:
    """One flag. ``slice_index`` is 0-based in the scan's order; ``slice_number`` is the scan's own
    (Kaggle number, else ``slice_index + 1``). ``value`` is what the rule measured (mean margin,
    or area ratio; 0 for ``isolated``) and ``limit`` the rule's threshold."""

    slice_index: int
    slice_number: int
    organ: str
    rule: str
    value: float
    limit: float
    detail: str


CSV_HEADER: tuple[str, ...] = tuple(f.name for f in fields(ReviewFlag))


def review_flags(organ_masks: np.ndarray, spacing_mm: tuple[float, float, float],
                 probabilities: np.ndarray | None = None, slice_numbers: tuple[int, ...] | None = None, *,
                 min_margin: float = MIN_MARGIN, band_px: int = BAND_PX, max_area_ratio: float = MAX_AREA_RATIO,
                 min_area_mm2: float = MIN_AREA_MM2) -> list[ReviewFlag]:
    """All flags, sorted by slice, then organ, then rule.

    ``organ_masks``: ``(O, D, H, W) bool``, the decision. ``probabilities``: ``(O, D, H, W)``
    float in 0..1, or ``None`` to skip the low-confidence rule. ``spacing_mm``: ``(slice, row, col)``.
    ``slice_numbers``: one per slice, which also fixes ``D`` (default ``1..D``).
    """
    organ_masks = np.asarray(organ_masks, dtype=bool)
    depth = organ_masks.shape[1] if organ_masks.ndim == 4 else 0
    if organ_masks.ndim != 4 or organ_masks.shape[0] != len(labels.ORGANS) or (
            slice_numbers is not None and len(slice_numbers) != depth):
        raise ValueError(f"organ_masks must be ({len(labels.ORGANS)}, D, H, W) with one slice number per slice, "
                         f"got {organ_masks.shape}")
    if probabilities is not None and probabilities.shape != organ_masks.shape:
        raise ValueError(f"probabilities are {probabilities.shape}; the masks are {organ_masks.shape}")
    organ_masks = organ_masks.transpose(1, 0, 2, 3)  # slices first for the rules below (a view)
    probabilities = None if probabilities is None else probabilities.transpose(1, 0, 2, 3)
    numbers = tuple(slice_numbers) if slice_numbers is not None else tuple(range(1, depth + 1))
    pixel_mm2 = spacing_mm[1] * spacing_mm[2]
    areas = np.count_nonzero(organ_masks, axis=(2, 3))  # (S, O) pixels
    present = areas > 0
    flags: list[ReviewFlag] = []

    if probabilities is not None:
        margins = boundary_margins(organ_masks, probabilities, band_px)
        for s, o in zip(*np.nonzero(present & (margins < min_margin))):
            flags.append(ReviewFlag(int(s), numbers[s], labels.ORGANS[o], "low_confidence", round(float(margins[s, o]), 4),
                                    min_margin, f"mean probability margin {margins[s, o]:.2f} in the {band_px}-px boundary band"))

    if depth > 1:
        padded = np.pad(present, ((1, 1), (0, 0)))
        isolated = present & ~padded[:-2] & ~padded[2:]
        for s, o in zip(*np.nonzero(isolated)):
            flags.append(ReviewFlag(int(s), numbers[s], labels.ORGANS[o], "isolated", 0.0, 0.0,
                                    "on this slice but on neither neighbouring slice"))

    small, large = np.minimum(areas[:-1], areas[1:]), np.maximum(areas[:-1], areas[1:])
    judged = (small > 0) & (large * pixel_mm2 >= min_area_mm2)
    ratio = np.divide(large, small, out=np.ones(large.shape), where=small > 0)
    for s, o in zip(*np.nonzero(judged & (ratio > max_area_ratio))):
        later = int(s) + 1
        flags.append(ReviewFlag(later, numbers[later], labels.ORGANS[o], "area_jump", round(float(ratio[s, o]), 4),
                                max_area_ratio, f"area {areas[later, o] * pixel_mm2 / 100:.2f} cm² here, "
                                f"{areas[s, o] * pixel_mm2 / 100:.2f} cm² on the previous slice"))

    rule_order = {"low_confidence": 0, "isolated": 1, "area_jump": 2}
    return sorted(flags, key=lambda f: (f.slice_index, labels.ORGANS.index(f.organ), rule_order[f.rule]))


def boundary_band(organ_masks: np.ndarray, band_px: int = BAND_PX) -> np.ndarray:
    """Pixels within ``band_px`` 8-connected steps of each mask's in-plane edge, ``(S, O, H, W) bool``.

    The band is the dilation minus the erosion, per slice (never across slices). Pixels outside
    the image count as background, so an organ cut by the image border has an edge there.
    """
    from scipy.ndimage import binary_dilation, binary_erosion

    footprint = np.zeros((1, 1, 3, 3), dtype=bool)
    footprint[0, 0] = True  # in-plane 3×3 only
    dilated = binary_dilation(organ_masks, footprint, iterations=band_px)
    eroded = binary_erosion(organ_masks, footprint, iterations=band_px, border_value=0)
    return dilated & ~eroded


def boundary_margins(organ_masks: np.ndarray, probabilities: np.ndarray, band_px: int = BAND_PX) -> np.ndarray:
    """Mean ``|2p - 1|`` in each slice's organ boundary band, ``(S, O) float64``; NaN where there is no band."""
    band = boundary_band(np.asarray(organ_masks, dtype=bool), band_px)
    total = np.zeros(band.shape[:2])
    for s in range(band.shape[0]):  # a slice at a time: the largest scan's margins at once are ~400 MB of float64
        margin = np.abs(2.0 * np.asarray(probabilities[s], dtype=np.float64) - 1.0)
        total[s] = np.where(band[s], margin, 0.0).sum(axis=(1, 2))
    count = band.sum(axis=(2, 3))
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def write_review_csv(flags: list[ReviewFlag], path: str | Path) -> Path:
    """``flags`` as a CSV with :data:`CSV_HEADER` columns, one row per flag; returns ``path``."""
    path = Path(path)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
        writer.writerows(astuple(f) for f in flags)
    return path
