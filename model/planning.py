"""Planning structures derived from the organ masks: a bowel bag and organ margins.

A :class:`Structure` is one named ``(S, H, W) bool`` mask on the scan's grid. The organs
themselves are structures too (:func:`organ_structures`), so the DICOM exports, the
measurements and the review all take one list. ``spacing_mm`` is always ``(slice, row, col)``,
the order of :attr:`model.scans.Scan.spacing_mm` and of the mask axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import labels

@dataclass(frozen=True, eq=False)  # eq on a mask array would be ambiguous; compare keys and masks yourself
class Structure:
    """One structure to export or measure.

    ``key``: a file-safe name (``stomach``, ``bowel_bag``, ``stomach_prv_5mm``).
    ``label``: what a planning system shows (``Stomach``, ``Bowel bag``, ``Stomach PRV 5mm``;
    at most 64 characters, the DICOM LO limit). ``mask``: ``(S, H, W) bool``. ``colour``:
    ``#rrggbb``. ``kind``: ``"organ"``, ``"bowel_bag"`` or ``"prv"``. ``organ``: the organ it
    comes from (``None`` for the bowel bag). ``margin_mm``: the PRV margin, else 0.
    """

    key: str
    label: str
    mask: np.ndarray
    colour: str
    kind: str
    organ: str | None = None
    margin_mm: float = 0.0

    @property
    def rgb(self) -> tuple[int, int, int]:
        return labels.hex_rgb(self.colour)


@dataclass(frozen=True)
class PlanningRequest:
    """The planning structures a user asks for, checked once, here: the one value the app, the CLIs
    and the exports pass along.

    ``bowel_bag``: add the bowel bag (:func:`bowel_bag`). ``margin_mm``: a planning margin (PRV)
    of that many millimetres around each organ (and the bag); 0 (or ``None``): none. Raises
    ``ValueError`` with one line for a margin that is negative, infinite or not a number.
    """

    bowel_bag: bool = False
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        margin_mm = float(self.margin_mm or 0)
        if not (margin_mm >= 0 and math.isfinite(margin_mm)):
            raise ValueError(f"The margin must be a number of mm, 0 or more (0: no margin), not {margin_mm:g}.")
        object.__setattr__(self, "bowel_bag", bool(self.bowel_bag))
        object.__setattr__(self, "margin_mm", margin_mm)

    def structures(self, organ_masks: np.ndarray, spacing_mm: tuple[float, float, float]) -> list[Structure]:
        """The structures asked for (:func:`planning_structures`), each ``(S, H, W) bool``."""
        return planning_structures(organ_masks, spacing_mm, bowel_bag_structure=self.bowel_bag, margin_mm=self.margin_mm)


def organ_structures(organ_masks: np.ndarray) -> list[Structure]:
    """The organs as structures, in :data:`model.labels.ORGANS` order; ``organ_masks`` is ``(O, D, H, W) bool``."""
    return [Structure(o, labels.DISPLAY_NAMES[o], organ_masks[i].astype(bool, copy=False), labels.COLOURS[o],
                      "organ", o) for i, o in enumerate(labels.ORGANS)]


def bowel_bag(organ_masks: np.ndarray) -> np.ndarray:
    """Small bowel ∪ large bowel, ``(S, H, W) bool``, from ``(O, S, H, W) bool`` organ masks.

    Just the union of the two bowel masks: no filling between loops and no margin (add one with
    :func:`margin_mask` if your protocol defines the bag as the loops plus a margin).
    """
    return organ_masks[labels.ORGANS.index("small_bowel")] | organ_masks[labels.ORGANS.index("large_bowel")]


def margin_mask(mask: np.ndarray, margin_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """``mask`` grown by ``margin_mm`` in every direction, in millimetres: ``(S, H, W) bool``.

    A voxel is in the result when the distance from its centre to the nearest voxel centre of
    ``mask``, measured with the voxel spacing (``scipy.ndimage.distance_transform_edt`` with
    ``sampling=spacing_mm``), is at most ``margin_mm``. With 3 mm slices and 1.5 mm pixels a
    3 mm margin reaches 1 slice across and 2 pixels in-plane; a voxel dilation would grow both
    by the same number of voxels. The margin stops at the edges of the scan.
    """
    if margin_mm < 0 or not math.isfinite(margin_mm):
        raise ValueError(f"margin must be a finite number of mm ≥ 0, got {margin_mm}")
    mask = np.asarray(mask, dtype=bool)
    if margin_mm == 0 or not mask.any():
        return mask.copy()
    from scipy.ndimage import distance_transform_edt

    # Work in the mask's bounding box plus the margin: the transform of a whole scan would
    # allocate a feature-index array several times the scan's size.
    reach = [int(math.ceil(margin_mm / s)) + 1 for s in spacing_mm]
    box = tuple(slice(max(int(idx.min()) - r, 0), min(int(idx.max()) + r + 1, n))
                for idx, r, n in zip(np.nonzero(mask), reach, mask.shape))
    distance = distance_transform_edt(~mask[box], sampling=spacing_mm)
    grown = np.zeros_like(mask)
    # A small tolerance keeps voxels exactly at the margin (3 mm at 1.5 mm pixels is 2 pixels).
    grown[box] = distance <= margin_mm + 1e-6
    return grown


def planning_structures(organ_masks: np.ndarray, spacing_mm: tuple[float, float, float], *,
                        bowel_bag_structure: bool = False, margin_mm: float = 0.0,
                        margin_organs: tuple[str, ...] = labels.ORGANS) -> list[Structure]:
    """The optional planning structures, each ``(S, H, W) bool``.

    ``bowel_bag_structure``: add the bowel bag (:func:`bowel_bag`). ``margin_mm`` > 0: add a
    planning organ-at-risk volume (PRV) of that margin around each of ``margin_organs``
    (:func:`margin_mask`), and around the bowel bag when it is asked for. The organs themselves
    are not included (see :func:`organ_structures`).
    """
    result = []
    bag = bowel_bag(organ_masks) if bowel_bag_structure else None
    if bag is not None:
        result.append(Structure("bowel_bag", "Bowel bag", bag, labels.BOWEL_BAG_COLOUR, "bowel_bag"))
    if margin_mm > 0:
        mm = f"{margin_mm:g}mm"
        for organ in margin_organs:
            grown = margin_mask(organ_masks[labels.ORGANS.index(organ)], margin_mm, spacing_mm)
            result.append(Structure(f"{organ}_prv_{mm}", f"{labels.DISPLAY_NAMES[organ]} PRV {mm}", grown,
                                    labels.COLOURS[organ], "prv", organ, margin_mm))
        if bag is not None:
            result.append(Structure(f"bowel_bag_prv_{mm}", f"Bowel bag PRV {mm}", margin_mask(bag, margin_mm, spacing_mm),
                                    labels.BOWEL_BAG_COLOUR, "prv", None, margin_mm))
    return result
