"""Click correction: fix one organ on one slice with a few clicks, carry the fix to the neighbouring slices.

The verbs are pure functions of their inputs, so undo is replaying fewer clicks:

- :func:`click` turns the clicks so far on one slice and organ into that organ's new mask;
- :func:`propagate` re-proposes an organ on the slices above and below a corrected one;
- :func:`fill_between` interpolates an organ between two corrected slices.

How a click works (the method and its measurement: ``docs/correct.md``, ``benchmarks/reviewer.py``).
Each click changes the mask only inside its *zone*, a disc around it whose radius is twice the click's
distance to the mask's edge (plus a margin), capped: a click far inside a missed organ or an invented
component reaches its whole extent, a click near an edge moves only that edge. Outside every zone the
mask is kept as it was, so a click never disturbs a part of the organ the person did not touch. Inside
the zones scikit-image's random walker decides each pixel, seeded by the clicks (a small disc each,
positive as organ, negative as not), by the kept mask around the zones, and by the other organs
(never this organ). Its edge weights come from the slice stretched by the model's own
:func:`model.image.normalize_intensity` and, when given, the organ's probability map, so a click
snaps to the image's edges and to the model's. A positive click first grows a seed region of pixels
like the clicked one (scikit-image's ``flood`` within a tolerance), so the walker does not shrink
a large organ to a small blob around one seed point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from model.image import normalize_intensity

#: A click's zone: ``min(ZONE_CAP_PX, 2 * distance to the mask edge + ZONE_MARGIN_PX)``.
ZONE_CAP_PX = 40
ZONE_MARGIN_PX = 6
#: Radius of the seed disc a click draws.
SEED_RADIUS_PX = 2
#: Inside a zone, how far an edge the clicks are not about may move to snap to the image.
EDGE_SLACK_PX = 2
#: A positive click's seed region: pixels within this many grey levels (of 255) of the clicked pixel's
#: smoothed value, connected to it, inside ``SEED_GROW_PX`` of it.
SEED_TOLERANCE = 14
SEED_GROW_PX = 25
#: The random walker's edge penalty (scikit-image's ``beta``) and the probability channel's weight.
BETA = 130.0
PROBABILITY_WEIGHT = 1.0

Click = tuple[int, int, bool]


def _check_slice_inputs(image, probability, mask, others) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"image must be one slice (H, W); got shape {image.shape}")
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask {mask.shape} must have the slice's shape {image.shape}")
    mask = mask.astype(bool)
    if probability is not None:
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != image.shape:
            raise ValueError(f"probability {probability.shape} must have the slice's shape {image.shape}")
        if not np.isfinite(probability).all() or probability.min() < 0 or probability.max() > 1:
            raise ValueError("probability must be finite and within 0..1")
    if others is not None:
        others = np.asarray(others)
        if others.shape != image.shape:
            raise ValueError(f"others {others.shape} must have the slice's shape {image.shape}")
        others = others.astype(bool)
    return image, probability, mask, others


def _check_clicks(clicks: Sequence, shape: tuple[int, int]) -> list[Click]:
    checked = []
    for i, c in enumerate(clicks):
        try:
            row, col, positive = c
        except (TypeError, ValueError):
            raise ValueError(f"click {i} must be (row, col, positive); got {c!r}") from None
        if isinstance(row, bool) or isinstance(col, bool) or not float(row).is_integer() or not float(col).is_integer():
            raise ValueError(f"click {i} must be at whole pixels; got ({row!r}, {col!r})")
        row, col = int(row), int(col)
        if not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise ValueError(f"click {i} at (row {row}, col {col}) is outside the slice ({shape[0]} x {shape[1]})")
        checked.append((row, col, bool(positive)))
    return checked


def _disc(shape: tuple[int, int], row: int, col: int, radius: float) -> np.ndarray:
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= radius ** 2


def click(image: np.ndarray, probability: np.ndarray | None, mask: np.ndarray, clicks: Sequence[Click],
          others: np.ndarray | None = None) -> np.ndarray:
    """The organ's new mask ``(H, W) bool`` on one slice after ``clicks``.

    ``image``: the slice ``(H, W)``, any real dtype (stretched here as the model stretches it).
    ``probability``: the organ's probability ``(H, W)`` float in 0..1, or ``None``.
    ``mask``: ``(H, W) bool``, the organ's mask before these clicks (what the slice held when the
    person started clicking; the clicks are replayed on it, so undo is the same call with fewer).
    ``clicks``: every click so far on this slice and organ, oldest first, as ``(row, col, positive)``;
    a later click wins where two seeds meet. ``others``: ``(H, W) bool`` pixels of the other organs,
    never added to this one, or ``None``.
    Raises ``ValueError`` for shapes that differ or a click outside the slice.
    """
    image, probability, mask, others = _check_slice_inputs(image, probability, mask, others)
    clicks = _check_clicks(clicks, image.shape)
    if not clicks:
        return mask.copy()
    shape = image.shape
    # Distance of every pixel to the mask's edge, from inside and from outside.
    inside = ndimage.distance_transform_edt(mask) if mask.any() else np.zeros(shape)
    outside = ndimage.distance_transform_edt(~mask) if mask.any() else np.full(shape, np.inf)
    zone = np.zeros(shape, dtype=bool)
    for row, col, _ in clicks:
        to_edge = inside[row, col] if mask[row, col] else outside[row, col]
        zone |= _disc(shape, row, col, min(ZONE_CAP_PX, 2.0 * to_edge + ZONE_MARGIN_PX))
    # Work in the zones' bounding box, two pixels wider so kept mask pixels seed its rim.
    rows, cols = np.nonzero(zone)
    r0, r1 = max(rows.min() - 2, 0), min(rows.max() + 3, shape[0])
    c0, c1 = max(cols.min() - 2, 0), min(cols.max() + 3, shape[1])
    box = (slice(r0, r1), slice(c0, c1))
    stretched = ndimage.gaussian_filter(normalize_intensity(image).astype(np.float32), 1.0)
    crop, crop_zone, crop_mask = stretched[box], zone[box], mask[box]
    seeds = np.where(crop_zone, 0, np.where(crop_mask, 1, 2)).astype(np.int32)
    # Inside the zones the mask's interior still seeds the organ, and the interior of what lies outside it
    # seeds the rest, except the very pieces the clicks are about: a mask component holding a negative
    # click, the outside component holding a positive one. So a click moves its own piece, and an edge
    # elsewhere in its zone only snaps to the image by EDGE_SLACK_PX.
    negatives = [(r - r0, c - c0) for r, c, positive in clicks if not positive]
    positives = [(r - r0, c - c0) for r, c, positive in clicks if positive]
    keep_in = ndimage.binary_erosion(crop_mask, iterations=EDGE_SLACK_PX) & ~_components_at(crop_mask, negatives)
    keep_out = ndimage.binary_erosion(~crop_mask, iterations=EDGE_SLACK_PX) & ~_components_at(~crop_mask, positives)
    seeds[crop_zone & keep_in] = 1
    seeds[crop_zone & keep_out] = 2
    if others is not None:
        seeds[others[box] & crop_zone] = 2
    positive_seeds = np.zeros(crop.shape, dtype=bool)
    for row, col, positive in clicks:
        r, c = row - r0, col - c0
        disc = _disc(crop.shape, r, c, SEED_RADIUS_PX)
        if positive:
            grown = _similar_region(crop, r, c) & crop_zone
            if others is not None:
                grown &= ~others[box]
            disc |= grown
            positive_seeds |= disc
        else:
            positive_seeds &= ~disc
        seeds[disc] = 1 if positive else 2
    data = crop / 255.0
    if probability is not None:
        data = np.stack([data, PROBABILITY_WEIGHT * probability[box]], axis=-1)
    if (seeds == 0).any() and (seeds == 1).any() and (seeds == 2).any():
        from skimage.segmentation import random_walker

        walked = random_walker(data, seeds, beta=BETA, mode="cg_j", tol=1e-3,
                               channel_axis=-1 if data.ndim == 3 else None) == 1
    else:  # nothing left for the walker to decide, or one side without seeds: the seeds are the answer
        walked = seeds == 1
    decided = np.where(crop_zone, walked, crop_mask)
    # Organ pixels the walker left stranded (touching neither a positive click nor the kept mask) are dropped:
    # a click adds what is connected to it.
    anchors = positive_seeds | (crop_mask & ~crop_zone) | (crop_mask & decided & ~_components_at(crop_mask, negatives))
    regions, _ = ndimage.label(decided)
    decided &= np.isin(regions, np.unique(regions[anchors & decided]))
    result = mask.copy()
    result[box] = np.where(crop_zone, decided, crop_mask)
    if others is not None:
        result &= ~(others & zone)
    return result


def _components_at(mask: np.ndarray, points: list[tuple[int, int]]) -> np.ndarray:
    """``(h, w) bool``: the connected components of ``mask`` that hold any of ``points``."""
    if not points or not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    regions, _ = ndimage.label(mask)
    hit = [regions[r, c] for r, c in points if regions[r, c]]
    return np.isin(regions, hit) if hit else np.zeros(mask.shape, dtype=bool)


def _similar_region(stretched: np.ndarray, row: int, col: int) -> np.ndarray:
    """``(h, w) bool``: pixels like ``(row, col)`` in the smoothed stretch, connected to it, within ``SEED_GROW_PX``."""
    from skimage.segmentation import flood

    region = flood(stretched, (row, col), tolerance=SEED_TOLERANCE)
    region &= _disc(stretched.shape, row, col, SEED_GROW_PX)
    # Keep the seed away from the region's own edge: the walker places the edge.
    return ndimage.binary_erosion(region, iterations=1, border_value=1)


# --------------------------------------------------------------------------- propagate

#: How far a fix is carried at most, in slices each way.
MAX_PROPAGATE_SLICES = 8
#: The prior is eroded by this many pixels to seed the next slice (organs move a little between slices)
#: and the next slice's organ is looked for within this many pixels of it.
PRIOR_EROSION_PX = 3
PRIOR_REACH_PX = 8
#: A seed pixel of the next slice must lie within these grey levels of the prior's 10th-90th percentile
#: range on its own slice; when fewer than this share of the seeds do, the organ has ended.
INTENSITY_SLACK = 12
MIN_SEED_SHARE = 0.3
#: Propagation stops where the proposal agrees with what the slice already holds this well.
SAME_DICE = 0.9
MIN_ORGAN_PX = 20


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _check_volume_inputs(voxels, probabilities, organ_masks, organ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    voxels = np.asarray(voxels)
    if voxels.ndim != 3:
        raise ValueError(f"voxels must be (D, H, W); got shape {voxels.shape}")
    organ_masks = np.asarray(organ_masks)
    if organ_masks.ndim != 4 or organ_masks.shape[1:] != voxels.shape:
        raise ValueError(f"organ_masks {organ_masks.shape} must be (O, D, H, W) with (D, H, W) = voxels' {voxels.shape}")
    if organ_masks.dtype != bool:
        raise ValueError(f"organ_masks must be bool; got {organ_masks.dtype}")
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.shape != organ_masks.shape:
            raise ValueError(f"probabilities {probabilities.shape} must match organ_masks {organ_masks.shape}")
    if isinstance(organ, bool) or not isinstance(organ, (int, np.integer)) or not 0 <= organ < organ_masks.shape[0]:
        raise ValueError(f"organ must be an index into the {organ_masks.shape[0]} organs; got {organ!r}")
    return voxels, probabilities, organ_masks


def _check_slice_index(index, depth: int, name: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < depth:
        raise ValueError(f"{name} must be a slice index in 0..{depth - 1}; got {index!r}")
    return int(index)


def propagate(voxels: np.ndarray, probabilities: np.ndarray | None, organ_masks: np.ndarray, organ: int,
              slice_index: int) -> np.ndarray:
    """New organ masks ``(O, D, H, W) bool`` with ``organ`` re-proposed on the slices around a corrected one.

    ``voxels``: the scan ``(D, H, W)``, any real dtype. ``probabilities``: ``(O, D, H, W)`` float in 0..1
    (float16 is fine), or ``None``. ``organ_masks``: ``(O, D, H, W) bool``, where slice ``slice_index``
    of organ ``organ`` (an index into ``model.labels.ORGANS``) is the corrected one.
    Going up and down from it, each slice's organ is proposed from the slice before (its mask, eroded,
    seeds a random walker on this slice, kept to pixels of the organ's intensity there; the other organs
    and everything farther than ``PRIOR_REACH_PX`` are not organ). It stops where the organ ends (too few
    seeds of its intensity left, or under ``MIN_ORGAN_PX``), where the proposal agrees with the slice's
    mask already (Dice >= ``SAME_DICE``), or after ``MAX_PROPAGATE_SLICES``. The corrected slice and the
    other organs are returned unchanged. Raises ``ValueError`` for shapes that do not fit or a corrected
    slice where the organ is empty (nothing to carry).
    """
    voxels, probabilities, organ_masks = _check_volume_inputs(voxels, probabilities, organ_masks, organ)
    slice_index = _check_slice_index(slice_index, voxels.shape[0], "slice_index")
    if not organ_masks[organ, slice_index].any():
        raise ValueError(f"organ {organ} is empty on slice {slice_index}: there is no corrected mask to carry")
    result = organ_masks.copy()
    for step in (-1, 1):
        prior = organ_masks[organ, slice_index]
        prior_image = voxels[slice_index]
        for k in range(1, MAX_PROPAGATE_SLICES + 1):
            d = slice_index + step * k
            if not 0 <= d < voxels.shape[0]:
                break
            others = np.delete(organ_masks[:, d], organ, axis=0).any(axis=0)
            probability = None if probabilities is None else probabilities[organ, d].astype(np.float32)
            proposal = _carry(prior_image, prior, voxels[d], probability, others)
            if proposal.sum() < MIN_ORGAN_PX or _dice(proposal, organ_masks[organ, d]) >= SAME_DICE:
                break
            result[organ, d] = proposal
            prior, prior_image = proposal, voxels[d]
    return result


def _carry(prior_image: np.ndarray, prior: np.ndarray, image: np.ndarray, probability: np.ndarray | None,
           others: np.ndarray) -> np.ndarray:
    """The organ on ``image`` ``(H, W)`` proposed from its mask ``prior`` ``(H, W) bool`` on the slice next to it."""
    from skimage.segmentation import random_walker

    empty = np.zeros(image.shape, dtype=bool)
    seeds_fg = ndimage.binary_erosion(prior, iterations=PRIOR_EROSION_PX)
    if not seeds_fg.any():  # a thin organ: its skeleton seeds it
        from skimage.morphology import skeletonize

        seeds_fg = skeletonize(prior)
    before = normalize_intensity(prior_image).astype(np.float32)
    stretched = ndimage.gaussian_filter(normalize_intensity(image).astype(np.float32), 1.0)
    lo, hi = np.percentile(ndimage.gaussian_filter(before, 1.0)[prior], [10, 90])
    alike = seeds_fg & (stretched >= lo - INTENSITY_SLACK) & (stretched <= hi + INTENSITY_SLACK) & ~others
    if alike.sum() < MIN_SEED_SHARE * seeds_fg.sum():
        return empty  # the organ's intensity is gone from under it: it has ended
    reach = ndimage.binary_dilation(prior, iterations=PRIOR_REACH_PX)
    rows, cols = np.nonzero(reach)
    box = (slice(max(rows.min() - 1, 0), rows.max() + 2), slice(max(cols.min() - 1, 0), cols.max() + 2))
    seeds = np.zeros(image.shape, dtype=np.int32)
    seeds[~reach | others] = 2
    seeds[alike] = 1
    data = stretched[box] / 255.0
    if probability is not None:
        data = np.stack([data, PROBABILITY_WEIGHT * probability[box]], axis=-1)
    walked = random_walker(data, seeds[box], beta=BETA, mode="cg_j", tol=1e-3,
                           channel_axis=-1 if data.ndim == 3 else None)
    proposal = empty.copy()
    proposal[box] = walked == 1
    return proposal


# --------------------------------------------------------------------------- fill between


def fill_between(organ_masks: np.ndarray, organ: int, slice_a: int, slice_b: int) -> np.ndarray:
    """New organ masks ``(O, D, H, W) bool`` with ``organ`` interpolated on the slices strictly between two drawn ones.

    Shape-based interpolation (Raya & Udupa 1990): each slice between gets the zero level of the signed
    distance maps of ``slice_a`` and ``slice_b``, weighted by how near it lies to each (scipy's exact
    Euclidean distance transform). ITK's ``MorphologicalContourInterpolator`` was measured and not chosen
    (docs/correct.md: it pulls in the whole of ITK). Everything else is returned unchanged; adjacent slices
    leave nothing to fill. Raises ``ValueError`` when the two are the same slice or the organ is empty on
    either (a fill needs two corrected slices).
    """
    organ_masks = np.asarray(organ_masks)
    if organ_masks.ndim != 4 or organ_masks.dtype != bool:
        raise ValueError(f"organ_masks must be (O, D, H, W) bool; got {organ_masks.shape} {organ_masks.dtype}")
    if isinstance(organ, bool) or not isinstance(organ, (int, np.integer)) or not 0 <= organ < organ_masks.shape[0]:
        raise ValueError(f"organ must be an index into the {organ_masks.shape[0]} organs; got {organ!r}")
    depth = organ_masks.shape[1]
    slice_a = _check_slice_index(slice_a, depth, "slice_a")
    slice_b = _check_slice_index(slice_b, depth, "slice_b")
    if slice_a == slice_b:
        raise ValueError("fill between needs two different corrected slices; got the same slice twice")
    slice_a, slice_b = sorted((slice_a, slice_b))
    for d in (slice_a, slice_b):
        if not organ_masks[organ, d].any():
            raise ValueError(f"fill between needs the organ drawn on both slices; slice {d} is empty")
    result = organ_masks.copy()
    signed_a, signed_b = (_signed_distance(organ_masks[organ, d]) for d in (slice_a, slice_b))
    for d in range(slice_a + 1, slice_b):
        w = (d - slice_a) / (slice_b - slice_a)
        result[organ, d] = (1 - w) * signed_a + w * signed_b > 0
    return result


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """``(H, W) float64``: positive inside ``mask``, negative outside, zero half-way across its edge."""
    return np.where(mask, ndimage.distance_transform_edt(mask) - 0.5, -ndimage.distance_transform_edt(~mask) + 0.5)
