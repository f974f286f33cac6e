"""Review flags: the slices whose contours are most likely wrong, ranked, within a budget.

Every slice and organ gets an error score in 0..1 (:func:`organ_scores`) from the organ masks
and the probabilities the masks were thresholded from, with no second forward pass. The score
is the largest of three signs of a wrong contour:

``uncertain contour``
    One minus the soft Dice between the drawn mask ``m`` and the organ's probability map
    ``p`` (pixels under :data:`PROBABILITY_FLOOR` count as 0): ``1 - 2 Σ p·m / (Σ p + Σ m)``.
    It is 0 when the model is sure of every pixel it drew and of nothing else, and it grows
    with unsure pixels inside or along the contour and with probability mass left outside it,
    normalised by the organ's own size, so a small, unsure piece scores high and a large organ
    with a soft edge does not.
``possibly missed``
    Nothing drawn, but probability mass below the decision threshold: ``M / (M + MIN_ORGAN_PX)``
    with ``M = Σ p`` over the slice's pixels at or above :data:`PROBABILITY_FLOOR` (50 pixels'
    worth of mass scores 0.5).
``area jump``
    The organ's area ``A`` against ``ref``, the median area of the five slices centred on it (two
    each side, mirrored at the scan's ends; the slice itself included, so a lone outlier never
    sets the median): ``|A - ref| / max(A, ref, MIN_ORGAN_PX)``, times :data:`PROFILE_WEIGHT`.
    An organ gone from one slice where it is large on both sides, or on one or two slices alone,
    scores the weight.

:func:`review_flags` keeps the slices whose worst organ scores at least ``min_score``, ranks
them by that score and keeps at most ``budget`` (default 15 %) of the scan's slices: one
:class:`ReviewFlag` per slice, naming its worst organ and why. The weights and limits were
chosen, and the flags measured, against real labels: ``docs/review.md`` (the numbers),
``docs/review_validation.py`` (the run).
"""

from __future__ import annotations

import csv
import math
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from . import labels

#: Share of a scan's slices flagged at most (one slice when the scan has fewer than 1 / budget).
BUDGET = 0.15
#: Scores below this are never flagged, whatever the budget leaves.
MIN_SCORE = 0.3
#: Probabilities below this count as 0: the far background's tiny values add up over a slice.
PROBABILITY_FLOOR = 0.05
#: Organ pieces smaller than this (pixels) are noise to the missed-organ and area-jump signs.
MIN_ORGAN_PX = 50
#: The area-jump sign's weight: it may lift a slice, but alone it is weaker evidence than the others.
PROFILE_WEIGHT = 0.6
#: Slices on each side that, with the slice itself, make an organ's expected area (a median).
PROFILE_SLICES = 2

SIGNS = ("uncertain contour", "possibly missed", "area jump")


@dataclass(frozen=True)
class OrganScores:
    """Per slice and organ, ``(O, D) float64`` each: the three signs, their maximum and which one it is.

    ``sign`` is ``(O, D) int``, an index into :data:`SIGNS`. ``areas``: the drawn masks' areas,
    ``(O, D) int`` pixels; ``expected``: the median area around each slice (:func:`expected_areas`);
    ``mass``: the probability mass (pixels at or above the floor) of each slice and organ.
    """

    score: np.ndarray
    uncertain: np.ndarray
    missed: np.ndarray
    jump: np.ndarray
    sign: np.ndarray
    areas: np.ndarray
    expected: np.ndarray
    mass: np.ndarray


@dataclass(frozen=True)
class ReviewFlag:
    """One flagged slice. ``slice_index`` is 0-based in the scan's order; ``slice_number`` is the
    scan's own (Kaggle number, else ``slice_index + 1``). ``organ`` is the slice's worst organ,
    ``score`` its error score (0..1) and ``reason`` what raised it, in words."""

    slice_number: int
    organ: str
    score: float
    reason: str
    slice_index: int


CSV_HEADER: tuple[str, ...] = tuple(f.name for f in fields(ReviewFlag))


def check_shapes(organ_masks: np.ndarray, probabilities: np.ndarray) -> None:
    """Refuse anything but ``(O, D, H, W)`` masks and probabilities of the same shape, ``O`` = the organs."""
    organs = len(labels.ORGANS)
    for name, array in (("organ_masks", organ_masks), ("probabilities", probabilities)):
        if np.ndim(array) != 4 or np.shape(array)[0] != organs or 0 in np.shape(array):
            raise ValueError(f"{name} must be (O={organs}, D, H, W) with no empty axis, got {np.shape(array)}")
    if np.shape(probabilities) != np.shape(organ_masks):
        raise ValueError(f"probabilities are {np.shape(probabilities)}; the masks are {np.shape(organ_masks)}")


@dataclass(frozen=True)
class SliceSums:
    """Per slice and organ, ``(O, D) float64`` each: the probability mass (pixels at or above the floor) and its
    part under the drawn mask, what :func:`organ_scores` scores from besides the areas.

    A person's edit changes the masks of a few slices and never the probabilities, so :meth:`updated` sums
    those slices again and keeps the rest: the same numbers as summing the whole scan, for a fraction of its
    time (:class:`model.exports.WrittenParts` keeps them with a scan's downloads).
    """

    mass: np.ndarray
    overlap: np.ndarray
    probability_floor: float = PROBABILITY_FLOOR

    @classmethod
    def of(cls, organ_masks: np.ndarray, probabilities: np.ndarray,
           probability_floor: float = PROBABILITY_FLOOR) -> SliceSums:
        """Every slice's sums; ``organ_masks`` ``(O, D, H, W) bool`` and ``probabilities`` as in :func:`organ_scores`."""
        check_shapes(organ_masks, probabilities)
        shape = np.shape(organ_masks)[:2]
        sums = cls(np.zeros(shape), np.zeros(shape), probability_floor)
        sums._fill(organ_masks, probabilities, range(shape[1]))
        return sums

    def updated(self, organ_masks: np.ndarray, probabilities: np.ndarray, slices) -> SliceSums:
        """The sums with ``slices`` (indices) summed again from ``organ_masks``, the others kept."""
        sums = SliceSums(self.mass.copy(), self.overlap.copy(), self.probability_floor)
        sums._fill(organ_masks, probabilities, sorted({int(d) for d in slices}))
        return sums

    def _fill(self, organ_masks: np.ndarray, probabilities: np.ndarray, slices) -> None:
        for d in slices:  # a slice at a time: a whole scan in float64 is ~400 MB
            p = np.asarray(probabilities[:, d], dtype=np.float64)
            p = np.where(p >= self.probability_floor, p, 0.0)
            self.mass[:, d] = p.sum(axis=(1, 2))
            self.overlap[:, d] = np.where(np.asarray(organ_masks[:, d], dtype=bool), p, 0.0).sum(axis=(1, 2))


def organ_scores(organ_masks: np.ndarray, probabilities: np.ndarray, *,
                 probability_floor: float = PROBABILITY_FLOOR, min_organ_px: int = MIN_ORGAN_PX,
                 profile_weight: float = PROFILE_WEIGHT, sums: SliceSums | None = None) -> OrganScores:
    """The error score of every slice and organ and its three signs (module docstring).

    ``organ_masks``: ``(O, D, H, W) bool``, organs in :data:`model.labels.ORGANS` order.
    ``probabilities``: ``(O, D, H, W)`` float in 0..1 (float16 is fine), each organ's probability
    as the masks were decided from (:func:`model.engines.torch.organ_probabilities`). ``sums``: these
    masks' and probabilities' :class:`SliceSums` at ``probability_floor``, when already summed.
    """
    check_shapes(organ_masks, probabilities)
    organ_masks = np.asarray(organ_masks, dtype=bool)
    if sums is None:
        sums = SliceSums.of(organ_masks, probabilities, probability_floor)
    elif sums.probability_floor != probability_floor or sums.mass.shape != organ_masks.shape[:2]:
        raise ValueError(f"the sums are of {sums.mass.shape} at floor {sums.probability_floor}; "
                         f"the masks are {organ_masks.shape[:2]}, the floor {probability_floor}")
    mass, overlap = sums.mass, sums.overlap
    areas = np.count_nonzero(organ_masks, axis=(2, 3))
    drawn = areas > 0
    total = mass + areas
    uncertain = np.where(drawn, 1.0 - 2.0 * overlap / np.where(total > 0, total, 1.0), 0.0)
    missed = np.where(drawn, 0.0, mass / (mass + min_organ_px))
    expected = expected_areas(areas)
    jump = profile_weight * np.abs(areas - expected) / np.maximum(np.maximum(areas, expected), min_organ_px)
    signs = np.stack([uncertain, missed, jump])
    return OrganScores(signs.max(axis=0), uncertain, missed, jump, signs.argmax(axis=0), areas, expected, mass)


def expected_areas(areas: np.ndarray, neighbours: int = PROFILE_SLICES) -> np.ndarray:
    """Median area of the window of ``neighbours`` slices each side and the slice itself: ``(O, D)`` → ``(O, D) float64``.

    The slice itself is in the window so that an empty slice beside an organ's first slice does
    not get half the organ as its expectation. Beyond the scan's ends the areas are mirrored
    (slice -1 is slice 1), so the window always holds ``2 * neighbours + 1`` areas, an odd count,
    and an end slice does not outvote its neighbours.
    """
    padded = np.pad(np.asarray(areas, dtype=np.float64), ((0, 0), (neighbours, neighbours)), mode="reflect")
    window = np.lib.stride_tricks.sliding_window_view(padded, 2 * neighbours + 1, axis=1)  # (O, D, 2n + 1)
    return np.median(window, axis=2)


def review_flags(organ_masks: np.ndarray, spacing_mm: tuple[float, float, float],
                 probabilities: np.ndarray | None = None, slice_numbers: tuple[int, ...] | None = None, *,
                 budget: float = BUDGET, min_score: float = MIN_SCORE,
                 reviewed: frozenset[tuple[int, str]] = frozenset(), sums: SliceSums | None = None) -> list[ReviewFlag]:
    """The slices to review first, worst first: one :class:`ReviewFlag` per slice, at most ``budget`` of them.

    ``organ_masks`` ``(O, D, H, W) bool`` and ``probabilities`` ``(O, D, H, W)`` float as in
    :func:`organ_scores`; without probabilities only the area-jump sign can speak (the masks
    stand in for them: sure of every pixel). ``spacing_mm``: ``(slice, row, col)``, for areas in
    the reasons. ``slice_numbers``: the scan's own, one per slice (default ``1..D``). A slice is
    flagged when its worst organ scores at least ``min_score`` and it ranks within
    ``max(1, floor(budget * D))`` slices; ties go to the earlier slice. ``reviewed``: ``(slice_index,
    organ)`` pairs a person corrected by hand; their score is 0 (the model's probabilities disagree
    with a correction by design), while their new areas still count in their neighbours' area jumps.
    ``sums``: the masks' and probabilities' :class:`SliceSums`, when already summed.
    """
    if not 0 < budget <= 1:
        raise ValueError(f"budget is a share of the slices, in (0, 1]; got {budget}")
    scores = organ_scores(organ_masks, organ_masks if probabilities is None else probabilities,
                          sums=sums if probabilities is not None else None)
    for index, organ in reviewed:
        scores.score[labels.ORGANS.index(organ), index] = 0.0
    depth = scores.score.shape[1]
    numbers = tuple(slice_numbers) if slice_numbers is not None else tuple(range(1, depth + 1))
    if len(numbers) != depth:
        raise ValueError(f"{len(numbers)} slice numbers for {depth} slices")
    worst = scores.score.argmax(axis=0)  # (D,) the worst organ of each slice
    slice_score = scores.score[worst, np.arange(depth)]
    ranked = [int(d) for d in np.argsort(-slice_score, kind="stable") if slice_score[d] >= min_score]
    cm2 = spacing_mm[1] * spacing_mm[2] / 100.0
    return [ReviewFlag(numbers[d], labels.ORGANS[worst[d]], round(float(slice_score[d]), 3),
                       _reason(scores, int(worst[d]), d, cm2), d)
            for d in ranked[:max_flagged_slices(depth, budget)]]


def max_flagged_slices(depth: int, budget: float = BUDGET) -> int:
    """The most slices a scan of ``depth`` slices gets flagged: ``max(1, floor(budget * depth))``."""
    return max(1, math.floor(budget * depth + 1e-9))


def _reason(scores: OrganScores, o: int, d: int, cm2: float) -> str:
    sign = SIGNS[scores.sign[o, d]]
    if sign == "uncertain contour":
        agreement = 1.0 - scores.uncertain[o, d]
        return (f"uncertain contour: the model's probabilities agree with the drawn {scores.areas[o, d] * cm2:.2f} cm² "
                f"at soft Dice {agreement:.2f}")
    if sign == "possibly missed":
        return (f"possibly missed: nothing drawn, but probability mass worth {scores.mass[o, d] * cm2:.2f} cm² "
                "under the threshold")
    return (f"area jump: {scores.areas[o, d] * cm2:.2f} cm² here, median {scores.expected[o, d] * cm2:.2f} cm² "
            "over the five slices around it")


def write_review_csv(flags: list[ReviewFlag], path: str | Path) -> Path:
    """``flags`` as a CSV with :data:`CSV_HEADER` columns, one row per flagged slice, worst first; returns ``path``."""
    path = Path(path)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
        writer.writerows(astuple(f) for f in flags)
    return path


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """How unsure the model is at each pixel, ``(H, W) float32`` in 0..1, from ``(O, H, W)`` organ probabilities.

    ``1 − min over organs of |2p − 1|``: 1 where some organ is at even odds, 0 where the model is
    certain of every organ either way.
    """
    margin = np.abs(2.0 * np.asarray(probabilities, dtype=np.float32) - 1.0)
    return (1.0 - margin.min(axis=0)).astype(np.float32)
