"""Click correction: fix one organ on one slice with a few clicks, carry the fix to the neighbouring slices.

The verbs are pure functions of their inputs, so undo is replaying fewer clicks:

- :func:`click` turns the clicks so far on one slice and organ into that organ's new mask;
- :func:`propagate` re-proposes an organ on the slices above and below a corrected one;
- :func:`fill_between` interpolates an organ between two corrected slices.

How a click works (the method and its measurement: ``docs/correct.md``, ``benchmarks/reviewer.py``).
The clicks are applied in order, each to the mask the ones before it left. A click changes the mask
only inside its *zone*, a disc around it whose radius is twice its *reach* plus a margin, capped. A
negative click inside the mask reaches its distance to the mask's edge; a positive one, the smaller of
that and the radius of the region of like intensity around it (scikit-image's ``flood`` of the smoothed
slice within a tolerance). A click at the middle of a bounded piece (a mask component, or a hole in it)
takes the whole piece into its zone: one click removes an invented component, while a click near an
edge moves only that edge. Outside the zone the mask is kept, so a click never disturbs a part of
the organ the person did not touch. Inside it scikit-image's random walker decides each pixel, seeded
by the click (a disc of half its reach, within the like region: organ for a positive click, not organ
for a negative one), by every earlier click (so later clicks do not undo them), by the mask's interior
and its exterior away from the piece the click is about, and by the other organs (not this organ,
unless a positive click lands on one: organs may overlap, and the person said so).
Its edge weights come from the slice stretched by the model's own :func:`model.image.normalize_intensity`
and, when given, the organ's probability map, so a click snaps to the image's edges and the model's.
Organ pixels the walker leaves connected to neither the click nor the kept mask are dropped.
Replaying ``n`` clicks costs ``n`` walks; the results of click prefixes are cached, so a session that
adds one click at a time pays one walk a click.

Given a learned refiner (:mod:`model.engines.click_refiner`; the app ships one and passes it), the refiner
decides each click instead of the walk, held to the click's word: a positive click only adds, a negative
one only removes (:func:`_refined_click`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .image import normalize_intensity

#: A click's zone: ``min(ZONE_CAP_PX, 2 * reach + ZONE_MARGIN_PX)``.
ZONE_CAP_PX = 40
ZONE_MARGIN_PX = 4
#: The smallest seed disc a click draws, and the most a reach counts.
SEED_RADIUS_PX = 2
MAX_REACH_PX = 30
#: A click seeds a disc of this share of its reach (within the like region).
SEED_SHARE = 0.5
#: Inside a zone, how far an edge the click is not about may move to snap to the image.
EDGE_SLACK_PX = 2
#: The like region: pixels within this many grey levels (of 255) of the clicked pixel's smoothed value.
SEED_TOLERANCE = 40
#: The random walker's edge penalty (scikit-image's ``beta``) and the probability channel's weight.
BETA = 130.0
PROBABILITY_WEIGHT = 1.0
#: A click at least this share of a piece's thickest inscribed radius inside it is about the whole piece.
WHOLE_PIECE_SHARE = 0.85
#: Replayed prefixes kept (one slice's session is a handful).
CACHE_SIZE = 64

Click = tuple[int, int, bool]
_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()


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


def simulated_click(mask: np.ndarray, truth: np.ndarray) -> Click | None:
    """Where the interactive-segmentation literature's simulated reviewer clicks: the pixel farthest inside the
    largest error region (distance to its edge, the slice's border counting as edge); positive where ``mask``
    misses the organ, negative where it has extra pixels; ``None`` when ``mask`` equals ``truth`` (both
    ``(H, W) bool``). The benchmark's reviewer and the click refiner's training share it."""
    best = None
    for error, positive in ((truth & ~mask, True), (mask & ~truth, False)):
        regions, n = ndimage.label(error)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (sizes[k], regions == k + 1, positive)
    if best is None:
        return None
    _, region, positive = best
    inner = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(row), int(col), positive


def _disc(shape: tuple[int, int], row: int, col: int, radius: float) -> np.ndarray:
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= radius ** 2


def click(image: np.ndarray, probability: np.ndarray | None, mask: np.ndarray, clicks: Sequence[Click],
          others: np.ndarray | None = None, refiner=None) -> np.ndarray:
    """The organ's new mask ``(H, W) bool`` on one slice after ``clicks``.

    ``image``: the slice ``(H, W)``, any real dtype (stretched here as the model stretches it).
    ``probability``: the organ's probability ``(H, W)`` float in 0..1, or ``None``.
    ``mask``: ``(H, W) bool``, the organ's mask before these clicks (what the slice held when the
    person started clicking; the clicks are replayed on it, so undo is the same call with fewer).
    ``clicks``: every click so far on this slice and organ, oldest first, as ``(row, col, positive)``.
    ``others``: ``(H, W) bool`` pixels of the other organs, or ``None``; they are not added to this organ
    unless a positive click lands on them (organs may overlap, and the person has said so).
    ``refiner``: a :class:`model.engines.click_refiner.ClickRefiner` (learned); without one, the random walker below.
    Raises ``ValueError`` for shapes that differ or a click outside the slice.
    """
    image, probability, mask, others = _check_slice_inputs(image, probability, mask, others)
    clicks = _check_clicks(clicks, image.shape)
    if not clicks:
        return mask.copy()
    digest = hashlib.blake2b(digest_size=16)
    for part in (image, probability, mask, others):
        digest.update(b"-" if part is None else np.ascontiguousarray(part).tobytes() + str(part.dtype).encode())
    key = (digest.hexdigest(), None if refiner is None else refiner.fingerprint())
    done, current = 0, mask
    for n in range(len(clicks), 0, -1):  # the longest prefix already replayed
        if (key, tuple(clicks[:n])) in _CACHE:
            done, current = n, _CACHE[(key, tuple(clicks[:n]))]
            break
    if refiner is not None:
        from .engines import click_refiner

        stretched = normalize_intensity(image)
        one = lambda current, n: _refined_click(click_refiner.refine(refiner, stretched, probability, current,  # noqa: E731
                                                                     clicks[:n + 1]), current, clicks[n])
    else:
        smoothed = ndimage.gaussian_filter(normalize_intensity(image).astype(np.float32), 1.0)
        one = lambda current, n: _one_click(smoothed, probability, current, clicks[:n], clicks[n], others)  # noqa: E731
    for n in range(done, len(clicks)):
        current = one(current, n)
        _CACHE[(key, tuple(clicks[:n + 1]))] = current
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return current.copy()


def _refined_click(refined: np.ndarray, mask: np.ndarray, new: Click) -> np.ndarray:
    """A learned refiner's answer held to what the click says: a positive click only adds to ``mask`` and
    a negative one only removes from it (the network redraws its whole window, boundaries included, and a
    person who pressed Add does not expect pixels to go), and the clicked pixel follows the click. It costs
    about nothing in the simulated reviewer's clicks (``docs/correct.md``, the app's click refiner)."""
    row, col, positive = new
    out = (mask | refined) if positive else (mask & refined)
    out[row, col] = positive
    return out


def _one_click(stretched: np.ndarray, probability: np.ndarray | None, mask: np.ndarray, earlier: list[Click],
               new: Click, others: np.ndarray | None) -> np.ndarray:
    """``mask`` ``(H, W) bool`` after the click ``new``; ``earlier`` clicks stay seeds."""
    shape = stretched.shape
    row, col, positive = new
    if positive and others is not None and others[row, col]:
        others = None  # a positive click on another organ's pixels says they are (also) this organ's
    like = _like_region(stretched, row, col)
    reach = ndimage.distance_transform_edt(np.pad(like, 1))[1:-1, 1:-1][row, col] if like[row, col] else 1.0
    piece = mask if mask[row, col] else ~mask  # the side of the edge the click is on
    to_edge = ndimage.distance_transform_edt(piece)[row, col] if not piece.all() else np.inf
    # A negative click inside the mask reaches the piece the mask drew; a positive one outside it,
    # the like region (it has no drawn piece to go by), and neither goes past the mask's edge.
    reach = min(reach, to_edge) if positive or not mask[row, col] else to_edge
    reach = min(reach, MAX_REACH_PX)
    radius = min(ZONE_CAP_PX, 2.0 * reach + ZONE_MARGIN_PX)
    r0, r1 = max(row - int(radius) - 2, 0), min(row + int(radius) + 3, shape[0])
    c0, c1 = max(col - int(radius) - 2, 0), min(col + int(radius) + 3, shape[1])
    box = (slice(r0, r1), slice(c0, c1))
    r, c = row - r0, col - c0
    crop_mask = mask[box]
    zone = _disc(crop_mask.shape, r, c, radius)
    whole = _whole_piece(piece, row, col, to_edge)
    if whole is not None:  # a click at the middle of a bounded piece means all of it
        rows, cols = np.nonzero(whole)
        r0, r1 = min(r0, max(rows.min() - 2, 0)), max(r1, min(rows.max() + 3, shape[0]))
        c0, c1 = min(c0, max(cols.min() - 2, 0)), max(c1, min(cols.max() + 3, shape[1]))
        box = (slice(r0, r1), slice(c0, c1))
        r, c = row - r0, col - c0
        crop_mask = mask[box]
        zone = _disc(crop_mask.shape, r, c, radius) | ndimage.binary_dilation(whole[box], iterations=EDGE_SLACK_PX)
    seeds = np.where(zone, 0, np.where(crop_mask, 1, 2)).astype(np.int32)
    # In the zone the mask's interior still seeds the organ and its exterior the rest, except the piece
    # the click is about (the mask component under a negative click, the outside component under a
    # positive one), so an edge the click is not about only snaps to the image by EDGE_SLACK_PX.
    about = _components_at(crop_mask if not positive else ~crop_mask, [(r, c)])
    seeds[zone & ndimage.binary_erosion(crop_mask, iterations=EDGE_SLACK_PX) & ~about] = 1
    seeds[zone & ndimage.binary_erosion(~crop_mask, iterations=EDGE_SLACK_PX) & ~about] = 2
    if others is not None:
        seeds[others[box] & zone] = 2
    kept = np.zeros(crop_mask.shape, dtype=bool)  # earlier positive clicks: organ, and anchors of what they added
    for er, ec, epositive in earlier:
        disc = _disc(crop_mask.shape, er - r0, ec - c0, SEED_RADIUS_PX)
        seeds[disc] = 1 if epositive else 2
        kept = (kept | disc) if epositive else (kept & ~disc)
    seed = _disc(crop_mask.shape, r, c, max(SEED_RADIUS_PX, SEED_SHARE * reach)) & like[box]
    if others is not None:
        seed &= ~others[box]
    seed |= _disc(crop_mask.shape, r, c, SEED_RADIUS_PX)
    seeds[seed] = 1 if positive else 2
    data = stretched[box] / 255.0
    if probability is not None:
        data = np.stack([data, PROBABILITY_WEIGHT * probability[box]], axis=-1)
    if (seeds == 0).any() and (seeds == 1).any() and (seeds == 2).any():
        from skimage.segmentation import random_walker

        walked = random_walker(data, seeds, beta=BETA, mode="cg_j", tol=1e-3,
                               channel_axis=-1 if data.ndim == 3 else None) == 1
    else:  # nothing left to decide, or one side without seeds: the seeds are the answer
        walked = seeds == 1
    decided = np.where(zone, walked, crop_mask)
    # Organ pixels connected to neither the click nor the kept mask are dropped: a click adds what is
    # connected to it.
    anchors = (seed if positive else kept & ~seed) | (crop_mask & ~zone) | (crop_mask & ~about & decided)
    regions, _ = ndimage.label(decided)
    decided &= np.isin(regions, np.unique(regions[anchors & decided]))
    if others is not None:  # another organ's pixels only where the person clicked on them
        decided &= ~(others[box] & zone & ~(seed if positive else np.zeros_like(seed)))
    result = mask.copy()
    result[box] = np.where(zone, decided, crop_mask)
    return result


def _whole_piece(piece: np.ndarray, row: int, col: int, to_edge: float) -> np.ndarray | None:
    """``(H, W) bool``, the connected component of ``piece`` under the click when the click sits at its middle
    (at least ``WHOLE_PIECE_SHARE`` of its thickest inscribed radius) and it does not touch the slice's
    border (the outside of a missed organ is not a piece); else ``None``."""
    if not np.isfinite(to_edge):
        return None
    regions, _ = ndimage.label(piece)
    component = regions == regions[row, col]
    if component[0].any() or component[-1].any() or component[:, 0].any() or component[:, -1].any():
        return None
    thickest = ndimage.distance_transform_edt(component).max()
    return component if to_edge >= WHOLE_PIECE_SHARE * thickest else None


def _components_at(mask: np.ndarray, points: list[tuple[int, int]]) -> np.ndarray:
    """``(h, w) bool``: the connected components of ``mask`` that hold any of ``points``."""
    if not points or not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    regions, _ = ndimage.label(mask)
    hit = [regions[r, c] for r, c in points if regions[r, c]]
    return np.isin(regions, hit) if hit else np.zeros(mask.shape, dtype=bool)


def _like_region(stretched: np.ndarray, row: int, col: int) -> np.ndarray:
    """``(H, W) bool``: pixels within ``SEED_TOLERANCE`` of the clicked one in the smoothed stretch, connected to it,
    within ``MAX_REACH_PX * 2`` of it."""
    from skimage.segmentation import flood

    span = 2 * MAX_REACH_PX
    r0, c0 = max(row - span, 0), max(col - span, 0)
    window = (slice(r0, row + span + 1), slice(c0, col + span + 1))
    like = np.zeros(stretched.shape, dtype=bool)
    like[window] = flood(stretched[window], (row - r0, col - c0), tolerance=SEED_TOLERANCE)
    return like


# --------------------------------------------------------------------------- propagate

#: How far a fix is carried at most, in slices each way. A carried mask drifts with every slice it crosses: in
#: scratch traces of the whole-scan reviewer (``benchmarks/reviewer.py``) a proposal's slices 5 to 8 away
#: were, on average, worse than what they held. Chosen on case139_day0 and case146_day25 with the own-click
#: refiner (2, 3, 4, 5 and 8 tried; 4 took the fewest clicks) and confirmed on case47_day29 and with the
#: training-free corrector; measured in ``docs/correct.md`` ("How far a proposal reaches").
MAX_PROPAGATE_SLICES = 4
#: A carried fix changes a neighbour only within this many pixels of it (the zone is carried along with the
#: mask); a carried removal takes the pieces lying mostly within this many pixels of what was removed.
PRIOR_REACH_PX = 8
#: The organ's intensity is checked on the carried mask eroded by this many pixels (its edge may be off).
PRIOR_EROSION_PX = 3
#: A carried pixel must lie within these grey levels of the organ's 10th-90th percentile range on the slice
#: before; when fewer than this share of them do, the organ has ended.
INTENSITY_SLACK = 12
MIN_SEED_SHARE = 0.3
#: Propagation stops where the slice already holds the organ about where the proposal puts it (Dice with
#: the proposal at least this): a right slice past the fix is not overwritten by a carried mask, which
#: drifts a little from slice to slice.
SAME_DICE = 0.8
#: A proposal that changes fewer pixels than this changes nothing: propagation stops there.
MIN_ORGAN_PX = 20
#: A carried removal takes a neighbour's piece of the organ when this share of it lies near what was removed.
REMOVED_SHARE = 0.5
#: The registration between two slices is solved in the box around the carried masks, this much wider,
#: with scikit-image's TV-L1 at 3 warps of 5 iterations: in a scratch run of the known-answer propagation
#: part (``benchmarks/reviewer.py --propagation``) on case139_day0, its defaults (5 of 10) took three
#: times as long for Dice within 0.015.
FLOW_MARGIN_PX = 16
FLOW_WARPS, FLOW_ITERATIONS = 3, 5


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
              slice_index: int, before: np.ndarray | None = None, kept: Sequence[int] = ()) -> np.ndarray:
    """New organ masks ``(O, D, H, W) bool`` with ``organ`` re-proposed on the slices around a corrected one.

    ``voxels``: the scan ``(D, H, W)``, any real dtype. ``probabilities``: ``(O, D, H, W)`` float in 0..1
    (float16 is fine), or ``None``; accepted for the API's sake, not used: the corrected slice is a
    better guide to its neighbours than the model that got it wrong. ``organ_masks``: ``(O, D, H, W)
    bool``, where slice ``slice_index`` of organ ``organ`` (an index into ``model.labels.ORGANS``) is the
    corrected one.

    Going up and down from it, the corrected mask is carried one slice at a time by registering each
    slice onto the next (scikit-image's TV-L1 optical flow, :func:`_carried`): the organ moves and changes
    shape between slices, and the flow follows the image. The other organs do not stop it (organs may
    overlap, and the held-out models often call one organ another). The fix is what is carried: given
    ``before``, the organ's ``(H, W) bool`` mask on the corrected slice before the correction (the
    model's), each neighbour takes the carried mask only within ``PRIOR_REACH_PX`` of the carried fix (the
    pixels the person added or removed, carried by the same flow), and keeps its own mask elsewhere;
    without it the whole mask is re-proposed. It stops where the organ ends (fewer
    than ``MIN_SEED_SHARE`` of the carried pixels keep the organ's intensity), where the proposal changes
    fewer than ``MIN_ORGAN_PX`` pixels, where the slice already agrees with it (Dice >= ``SAME_DICE``),
    or after ``MAX_PROPAGATE_SLICES``. A removal is carried too: each neighbour loses the pieces of the
    organ lying mostly (at least ``REMOVED_SHARE``) within ``PRIOR_REACH_PX`` of what was removed from
    the slice before it, until a neighbour has none. The slices in ``kept`` (where a person corrected the
    organ by hand) are returned as they were: the proposal is made as if they were not kept, and they are
    left out of it, so the carry goes on past them. The corrected slice and the other organs are returned
    unchanged. Raises ``ValueError`` for shapes that do not fit, a corrected slice where the organ is empty
    and was empty before (nothing to carry), or a kept slice outside the scan.
    """
    voxels, probabilities, organ_masks = _check_volume_inputs(voxels, probabilities, organ_masks, organ)
    slice_index = _check_slice_index(slice_index, voxels.shape[0], "slice_index")
    kept = {_check_slice_index(d, voxels.shape[0], "each kept slice") for d in kept}
    corrected = organ_masks[organ, slice_index]
    if before is not None:
        before = np.asarray(before).astype(bool)
        if before.shape != corrected.shape:
            raise ValueError(f"before {before.shape} must have the slice's shape {corrected.shape}")
    if not corrected.any() and (before is None or not before.any()):
        raise ValueError(f"organ {organ} is empty on slice {slice_index}: there is no corrected mask to carry")
    result = _proposal(voxels, organ_masks, organ, slice_index, before)
    kept = sorted(kept)
    result[organ, kept] = organ_masks[organ, kept]  # the slices corrected by hand, as the person left them
    return result


def _proposal(voxels: np.ndarray, organ_masks: np.ndarray, organ: int, slice_index: int,
              before: np.ndarray | None) -> np.ndarray:
    """:func:`propagate`'s proposal, every slice but the corrected one re-proposed (no slice kept)."""
    corrected = organ_masks[organ, slice_index]
    result = organ_masks.copy()
    if before is not None:
        removed, added = before & ~corrected, corrected & ~before
        if removed.any():
            result = _carry_removal(result, organ, slice_index, removed)
        if not added.any():
            return result
        zone = ndimage.binary_dilation(added | removed, iterations=PRIOR_REACH_PX)
    else:
        zone = np.ones(corrected.shape, dtype=bool)
    for step in (-1, 1):
        carried, near = corrected, zone
        for k in range(1, MAX_PROPAGATE_SLICES + 1):
            d = slice_index + step * k
            if not 0 <= d < voxels.shape[0]:
                break
            prior = carried
            carried, near = _carried(voxels[d - step], voxels[d], carried, near)
            if not _organ_goes_on(voxels[d - step], voxels[d], prior, carried):
                break
            current = result[organ, d]
            new = np.where(near, carried, current)
            if (new ^ current).sum() < MIN_ORGAN_PX or _dice(carried & near, current & near) >= SAME_DICE:
                break
            result[organ, d] = new
    return result


def _carried(image: np.ndarray, following: np.ndarray, mask: np.ndarray, zone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mask`` and ``zone`` (``(H, W) bool`` on ``image``) moved onto the slice ``following`` by registering the two.

    TV-L1 optical flow (scikit-image ``optical_flow_tvl1``, ``FLOW_WARPS`` warps of ``FLOW_ITERATIONS``)
    between the two slices stretched together, solved in the box around both ``FLOW_MARGIN_PX`` wider (a
    whole-slice zone stays whole, and the box is the mask's), then each warped by it (linear, kept where at
    least half)."""
    from skimage.registration import optical_flow_tvl1
    from skimage.transform import warp

    around = mask if zone.all() else mask | zone
    if not around.any():
        return np.zeros_like(mask), np.zeros_like(zone)
    rows, cols = np.nonzero(around)
    box = (slice(max(rows.min() - FLOW_MARGIN_PX, 0), rows.max() + FLOW_MARGIN_PX + 1),
           slice(max(cols.min() - FLOW_MARGIN_PX, 0), cols.max() + FLOW_MARGIN_PX + 1))
    pair = normalize_intensity(np.stack([image[box], following[box]])).astype(np.float32) / 255.0
    flow_rows, flow_cols = optical_flow_tvl1(pair[1], pair[0], num_warp=FLOW_WARPS, num_iter=FLOW_ITERATIONS)
    grid_rows, grid_cols = np.meshgrid(np.arange(pair.shape[1]), np.arange(pair.shape[2]), indexing="ij")
    coordinates = np.array([grid_rows + flow_rows, grid_cols + flow_cols])
    moved = []
    for layer in (mask, zone):
        if layer.all():  # a whole-slice zone stays whole
            moved.append(layer.copy())
            continue
        out = np.zeros_like(layer)
        out[box] = warp(layer[box].astype(np.float32), coordinates, order=1, mode="constant", cval=0.0) >= 0.5
        moved.append(out)
    return moved[0], moved[1]


def _organ_goes_on(image: np.ndarray, following: np.ndarray, prior: np.ndarray, carried: np.ndarray) -> bool:
    """Whether the organ, ``prior`` on ``image``, goes on under ``carried`` on the slice ``following``: at
    least ``MIN_SEED_SHARE`` of the carried mask's core keeps the intensity ``prior`` has on ``image``."""
    if not carried.any() or not prior.any():
        return False
    core = ndimage.binary_erosion(carried, iterations=PRIOR_EROSION_PX)
    if not core.any():  # a thin organ: its skeleton
        from skimage.morphology import skeletonize

        core = skeletonize(carried)
    before = ndimage.gaussian_filter(normalize_intensity(image).astype(np.float32), 1.0)
    after = ndimage.gaussian_filter(normalize_intensity(following).astype(np.float32), 1.0)
    lo, hi = np.percentile(before[prior], [10, 90])
    alike = core & (after >= lo - INTENSITY_SLACK) & (after <= hi + INTENSITY_SLACK)
    return alike.sum() >= MIN_SEED_SHARE * core.sum()


def _carry_removal(organ_masks: np.ndarray, organ: int, slice_index: int, removed: np.ndarray) -> np.ndarray:
    """:func:`propagate` of a removal: ``removed`` ``(H, W) bool`` taken off slice ``slice_index``."""
    result = organ_masks.copy()
    for step in (-1, 1):
        zone = ndimage.binary_dilation(removed, iterations=PRIOR_REACH_PX)
        for k in range(1, MAX_PROPAGATE_SLICES + 1):
            d = slice_index + step * k
            if not 0 <= d < organ_masks.shape[1]:
                break
            regions, n = ndimage.label(organ_masks[organ, d])
            if n == 0:
                break
            sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
            within = np.bincount(regions[zone], minlength=n + 1)[1:]
            gone = np.isin(regions, 1 + np.flatnonzero(within >= REMOVED_SHARE * sizes))
            if not gone.any():
                break
            result[organ, d] &= ~gone
            zone = ndimage.binary_dilation(gone, iterations=PRIOR_REACH_PX)
    return result


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
