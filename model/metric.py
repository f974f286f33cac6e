"""The competition metric: the one implementation used by training, the scan UI and the CLI.

``score = 0.4 * Dice + 0.6 * (1 - HD)``, with

* **Dice** per slice and organ, ``2|P∩T| / (|P| + |T|)``. Pairs where both masks are empty
  are skipped; the rest are averaged together, over all slices, organs and scans.
* **HD** per scan (case-day) and organ, on the organ's ``(D, H, W)`` volume: the symmetric
  Hausdorff distance between voxel coordinates divided by the volume's shape ``(D, H, W)``
  (each slice counts as 1, whatever its thickness), so the scan fits a unit cube, then
  divided by √3, the cube's diagonal. HD is 1 when exactly one mask is empty; pairs where
  both are empty are skipped; the rest are averaged over all scans and organs.

Skipping pairs that are empty on both sides follows openai/mle-bench's grader
(``mlebench/competitions/uw-madison-gi-tract-image-segmentation/grade.py``, which cites Kaggle
discussion 324934). That grader differs from us in two ways: it ORs the three organs into one
mask before the Hausdorff distance, and it returns HD = 1 without computing it when the
prediction has more than ten times the truth's voxels. We follow the per-organ definition
and always compute the distance.

When nothing is left to average (every mask empty, or an organ absent from both prediction
and truth everywhere), that mean is NaN, and so is the score built from it: an empty
prediction on an empty scan says nothing about the model, so it is not scored as perfect.
Dice and HD are skipped for the same organs (a voxel in any slice makes both count), so
they are NaN together.

Written here rather than taken from MONAI or torchmetrics: their Hausdorff distances are
between mask edges and need torch; this one is between whole voxel sets in the unit cube,
with numpy and scipy only, so the app can import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model.labels import ORGANS

DICE_WEIGHT = 0.4
HAUSDORFF_WEIGHT = 0.6
_UNIT_CUBE_DIAGONAL = math.sqrt(3.0)


def dice_per_slice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each slice: ``(..., H, W) bool`` pair → ``(...) float64``, NaN where both are empty."""
    pred, truth = _bool_pair(pred, truth, min_ndim=2)
    axes = (-2, -1)
    overlap = np.count_nonzero(pred & truth, axis=axes)
    total = np.count_nonzero(pred, axis=axes) + np.count_nonzero(truth, axis=axes)
    dice = np.full(np.shape(total), np.nan)
    np.divide(2.0 * overlap, total, out=dice, where=total > 0)
    return dice


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool masks of one shape, ``2|P∩T| / (|P| + |T|)``, as one number over all their voxels.

    NaN when both are empty (the module's rule: such a pair says nothing). Callers that compare an
    organ present on at least one side (the day comparison) never meet that case.
    """
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    return 2.0 * np.count_nonzero(pred & truth) / total if total else math.nan


def bounding_box(mask: np.ndarray, pad=0, shape=None) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True voxel of a non-empty mask.

    ``pad``: voxels added each side, one number or one per axis; the box stays within ``shape``
    (default: the mask's). ``ValueError`` for an empty mask, which has no box: callers check first.
    """
    if not mask.any():
        raise ValueError("an empty mask has no bounding box")
    shape = mask.shape if shape is None else shape
    pads = pad if isinstance(pad, (list, tuple)) else [pad] * mask.ndim
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(int(present[0]) - pads[axis], 0), min(int(present[-1]) + pads[axis] + 1, shape[axis])))
    return tuple(box)


def hausdorff_3d(pred: np.ndarray, truth: np.ndarray) -> float:
    """Normalised Hausdorff distance of one organ: ``(D, H, W) bool`` pair → float in ``[0, 1]``.

    NaN when both are empty, 1.0 when exactly one is. ``D`` scales the slice axis, so pass
    the whole scan (every slice the truth file lists), not just the slices with organs.
    """
    pred, truth = _bool_pair(pred, truth, min_ndim=3)
    if pred.ndim != 3:
        raise ValueError(f"hausdorff_3d expects (D, H, W) volumes, got {pred.shape}")
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not (has_pred or has_truth):
        return math.nan
    if has_pred != has_truth:
        return 1.0
    if np.array_equal(pred, truth):
        return 0.0
    # Unit-cube coordinates of the *whole* volume: voxel index / (D, H, W).
    sampling = tuple(1.0 / n for n in pred.shape)
    # Crop to the box holding both masks before the distance transforms, which cost ~50 bytes
    # per voxel. Distances stay exact: every target voxel (a zero of ~target) lies in the box,
    # so the nearest one to any voxel of the box is found, and cropping moves both ends alike.
    box = bounding_box(pred | truth)
    pred, truth = pred[box], truth[box]
    distance = max(_farthest(pred, truth, sampling), _farthest(truth, pred, sampling))
    return distance / _UNIT_CUBE_DIAGONAL


@dataclass(frozen=True)
class CaseScore:
    """The per-pair parts of one scan's score, NaN where a pair is skipped.

    ``dice``: ``(O, D) float64`` per organ and slice; ``hausdorff``: ``(O,) float64`` per organ.
    """

    dice: np.ndarray
    hausdorff: np.ndarray


def score_case(pred: np.ndarray, truth: np.ndarray) -> CaseScore:
    """Score one scan: ``(O, D, H, W) bool`` prediction and truth, organs in ``ORGANS`` order."""
    pred, truth = _bool_pair(pred, truth, min_ndim=4)
    if pred.ndim != 4 or pred.shape[0] != len(ORGANS):
        raise ValueError(f"score_case expects (O={len(ORGANS)}, D, H, W) volumes, got {pred.shape}")
    hausdorff = np.array([hausdorff_3d(p, t) for p, t in zip(pred, truth)])
    return CaseScore(dice=dice_per_slice(pred, truth), hausdorff=hausdorff)


@dataclass(frozen=True)
class Score:
    """The competition score over a set of scans, overall and per organ (see the module doc).

    ``score`` combines the pooled means, so it is not the mean of ``score_per_organ`` when
    organs have different numbers of scored pairs. Any value may be NaN (nothing to score).
    """

    score: float
    dice: float
    hausdorff: float
    score_per_organ: dict[str, float]
    dice_per_organ: dict[str, float]
    hausdorff_per_organ: dict[str, float]
    dice_pairs: int  # (slice, organ) pairs averaged into `dice`
    hausdorff_pairs: int  # (scan, organ) pairs averaged into `hausdorff`

    def as_dict(self) -> dict[str, float | int | None]:
        """Flat JSON-ready values: ``score``, ``dice``, ``hausdorff``, ``dice/<organ>``, ...; NaN → None."""
        values: dict[str, float | int | None] = {
            "score": self.score,
            "dice": self.dice,
            "hausdorff": self.hausdorff,
        }
        for name, per_organ in (
            ("score", self.score_per_organ),
            ("dice", self.dice_per_organ),
            ("hausdorff", self.hausdorff_per_organ),
        ):
            values.update({f"{name}/{organ}": value for organ, value in per_organ.items()})
        values = {key: None if math.isnan(value) else float(value) for key, value in values.items()}
        return {**values, "dice_pairs": self.dice_pairs, "hausdorff_pairs": self.hausdorff_pairs}


def competition_score(case_scores: Iterable[CaseScore]) -> Score:
    """Combine scans scored by :func:`score_case` (pass a generator to hold one scan at a time)."""
    case_scores = list(case_scores)
    if case_scores:
        dice = np.concatenate([c.dice for c in case_scores], axis=1)  # (O, all slices)
        hausdorff = np.stack([c.hausdorff for c in case_scores], axis=1)  # (O, scans)
    else:
        dice = hausdorff = np.empty((len(ORGANS), 0))
    dice_per_organ = {organ: _mean(d) for organ, d in zip(ORGANS, dice)}
    hausdorff_per_organ = {organ: _mean(h) for organ, h in zip(ORGANS, hausdorff)}
    return Score(
        score=_combine(_mean(dice), _mean(hausdorff)),
        dice=_mean(dice),
        hausdorff=_mean(hausdorff),
        score_per_organ={o: _combine(dice_per_organ[o], hausdorff_per_organ[o]) for o in ORGANS},
        dice_per_organ=dice_per_organ,
        hausdorff_per_organ=hausdorff_per_organ,
        dice_pairs=int(np.count_nonzero(~np.isnan(dice))),
        hausdorff_pairs=int(np.count_nonzero(~np.isnan(hausdorff))),
    )


def _combine(dice: float, hausdorff: float) -> float:
    return DICE_WEIGHT * dice + HAUSDORFF_WEIGHT * (1.0 - hausdorff)


def _mean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without numpy's warning) when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _farthest(source: np.ndarray, target: np.ndarray, sampling: tuple[float, ...]) -> float:
    """Largest distance from a ``source`` voxel to its nearest ``target`` voxel (both non-empty)."""
    return float(ndimage.distance_transform_edt(~target, sampling=sampling)[source].max())


def _bool_pair(pred: np.ndarray, truth: np.ndarray, min_ndim: int) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.dtype != bool or truth.dtype != bool:
        raise TypeError(f"masks must be bool arrays, got {pred.dtype} and {truth.dtype}")
    if pred.shape != truth.shape or pred.ndim < min_ndim:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must share a shape of {min_ndim}+ dims")
    return pred, truth


# --------------------------------------------------------------------------- whole submissions


class ScoringError(ValueError):
    """A prediction and a truth that cannot be scored together. ``str(err)`` is one line."""


def score_submission(truth, predicted, case_days: Iterable[str] | None = None,
                     shapes: dict[str, tuple[int, int]] | None = None) -> tuple[list[dict], Score, list[str]]:
    """Score Kaggle RLE predictions against a ``train.csv``-style truth: the one cohort scorer.

    ``truth`` and ``predicted`` are :class:`model.rle.RleCsv`. ``case_days``: the scans to score
    (default: every scan of the truth and the prediction); ``shapes``: ``(H, W)`` per scan where
    the files carry none. The one rule for what either side lacks, checked before anything is decoded:

    * a scan or slice the **prediction** lacks counts as predicted empty (a model that found
      nothing writes empty rows, and a missing row means the same);
    * a **scan** the truth lacks cannot be scored: it is left out and returned in ``unscored``,
      for the caller to report (a cohort may hold scans beyond the truth file's);
    * a **slice** the truth lacks, in a scan it has, is refused with :class:`ScoringError`: the
      truth lists every slice of its scans, so the two files do not belong together.

    Scans are decoded and scored one at a time, on the truth's slices. Returns one row per
    scan (``case_day``, ``slices`` and the :class:`Score` fields), the overall :class:`Score`,
    and the unscored scans.
    """
    if case_days is None:
        case_days = [*truth.case_days, *(cd for cd in predicted.case_days if cd not in truth)]
    unscored = [cd for cd in case_days if cd not in truth]
    case_days = [cd for cd in case_days if cd in truth]
    for case_day in case_days:
        if case_day in predicted and (extra := sorted(set(predicted.slice_numbers(case_day))
                                                      - set(truth.slice_numbers(case_day)))):
            raise ScoringError(f"{case_day}: predicted slices {extra[:3]} are not in the truth")

    def scans():
        for case_day in case_days:
            true = truth.volume(case_day, (shapes or {}).get(case_day))
            pred = (predicted.masks_on(case_day, true.slice_numbers, true.masks.shape[-2:]).masks
                    if case_day in predicted else np.zeros_like(true.masks))
            yield case_day, pred, true.masks

    return *score_scans(scans()), unscored


def score_scans(scans: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> tuple[list[dict], Score]:
    """Score a cohort one scan at a time: the loop every cohort scorer shares.

    ``scans``: ``(case_day, pred, truth)`` with ``(O, D, H, W) bool`` masks (a generator keeps
    one scan in memory). Returns one row per scan (``case_day``, ``slices`` and the
    :class:`Score` fields) and the overall :class:`Score` over every scan.
    """
    rows, cases = [], []
    for case_day, pred, truth in scans:
        cases.append(score_case(pred, truth))
        rows.append({"case_day": case_day, "slices": truth.shape[1], **competition_score(cases[-1:]).as_dict()})
    return rows, competition_score(cases)
