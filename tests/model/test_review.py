"""Review flags on constructed scans whose scores are known by hand, and on a real labelled volume."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from model import labels
from model.review import (
    CSV_HEADER,
    MIN_ORGAN_PX,
    PROFILE_WEIGHT,
    SliceSums,
    expected_areas,
    max_flagged_slices,
    organ_scores,
    review_flags,
    write_review_csv,
)

SPACING = (3.0, 1.0, 1.0)  # 1 mm² pixels: 100 px are 1 cm²
STOMACH, SMALL_BOWEL, LARGE_BOWEL = (labels.ORGANS.index(o) for o in ("stomach", "small_bowel", "large_bowel"))


def _clean(depth=20, size=40) -> tuple[np.ndarray, np.ndarray]:
    """Stomach 10×10 px on every slice, drawn with probability 0.99 inside and 0.01 outside: nothing to flag."""
    masks = np.zeros((len(labels.ORGANS), depth, size, size), dtype=bool)
    masks[STOMACH, :, 10:20, 10:20] = True
    return masks, np.where(masks, 0.99, 0.01).astype(np.float32)


def test_a_confident_consistent_prediction_is_not_flagged():
    masks, probabilities = _clean()
    scores = organ_scores(masks, probabilities)
    # Soft Dice of a 100-px mask at p = 0.99 (the 0.01 outside is under the floor): 1 - 2·99 / (99 + 100).
    assert scores.uncertain[STOMACH] == pytest.approx(1 - 198 / 199)
    assert not scores.missed.any() and not scores.jump.any()
    assert review_flags(masks, SPACING, probabilities) == []


def test_uncertain_contour_is_soft_dice_against_the_probabilities():
    masks, probabilities = _clean()
    probabilities[STOMACH, 5] = np.where(masks[STOMACH, 5], 0.6, 0.0)
    probabilities[STOMACH, 5, 20:30, 10:20] = 0.4  # 100 px of competing mass just under the threshold
    scores = organ_scores(masks, probabilities)
    # overlap 60, mass 60 + 40, area 100: 1 - 120 / 200.
    assert scores.uncertain[STOMACH, 5] == pytest.approx(0.4)
    flags = review_flags(masks, SPACING, probabilities)
    assert [(f.slice_index, f.slice_number, f.organ, f.score) for f in flags] == [(5, 6, "stomach", 0.4)]
    assert flags[0].reason.startswith("uncertain contour") and "1.00 cm²" in flags[0].reason


def test_a_missed_organ_with_mass_under_the_threshold_is_flagged():
    masks, probabilities = _clean()
    probabilities[LARGE_BOWEL, 7, 25:35, 25:35] = 0.45  # nothing drawn, 45 px worth of mass
    probabilities[LARGE_BOWEL, 9, 25:35, 25:35] = 0.04  # under the floor: no evidence at all
    scores = organ_scores(masks, probabilities)
    assert scores.missed[LARGE_BOWEL, 7] == pytest.approx(45 / (45 + MIN_ORGAN_PX))
    assert scores.missed[LARGE_BOWEL, 9] == 0
    flags = review_flags(masks, SPACING, probabilities, tuple(range(101, 121)))
    assert [(f.slice_number, f.organ) for f in flags] == [(108, "large_bowel")]
    assert flags[0].score == pytest.approx(45 / 95, abs=1e-3)
    assert flags[0].reason == "possibly missed: nothing drawn, but probability mass worth 0.45 cm² under the threshold"


def test_an_organ_gone_between_slices_where_it_is_large_is_an_area_jump():
    masks, probabilities = _clean()
    masks[STOMACH, 10] = False
    probabilities[STOMACH, 10] = 0.0  # sure of it, so only the profile can tell
    scores = organ_scores(masks, probabilities)
    assert scores.jump[STOMACH, 10] == pytest.approx(PROFILE_WEIGHT)
    # The slices beside it still see a median of 100 px (four of their five slices have it): no jump there.
    assert scores.jump[STOMACH, 9] == 0 and scores.jump[STOMACH, 11] == 0
    flags = review_flags(masks, SPACING, probabilities)
    assert [(f.slice_index, f.score) for f in flags] == [(10, PROFILE_WEIGHT)]
    assert flags[0].reason == "area jump: 0.00 cm² here, median 1.00 cm² over the five slices around it"


def test_without_probabilities_only_the_area_jump_speaks():
    masks, probabilities = _clean()
    masks[STOMACH, 10] = False
    masks[LARGE_BOWEL, 4, 0:3, 0:3] = True  # 9 px alone: under MIN_ORGAN_PX, so 0.6 · 9 / 50
    flags = review_flags(masks, SPACING)
    assert [(f.slice_index, f.organ, f.score) for f in flags] == [(10, "stomach", PROFILE_WEIGHT)]
    assert organ_scores(masks, masks).jump[LARGE_BOWEL, 4] == pytest.approx(PROFILE_WEIGHT * 9 / MIN_ORGAN_PX)
    with pytest.raises(ValueError, match=r"\(O=3, D, H, W\)"):
        review_flags(masks.transpose(1, 0, 2, 3), SPACING)


def test_expected_area_is_the_median_of_the_five_slices_around():
    areas = np.array([[10, 20, 30, 40, 1000], [0, 0, 500, 0, 0]])
    # Mirrored beyond the scan: slice 0 sees 30, 20, 10, 20, 30; slice 4 sees 30, 40, 1000, 40, 30.
    assert expected_areas(areas).tolist() == [[20.0, 20.0, 30.0, 40.0, 40.0], [0.0] * 5]
    assert expected_areas(np.array([[7]])).tolist() == [[7.0]]  # one slice: its own area, no jump
    # An empty slice beside an organ's first slices expects nothing there (not half the organ).
    assert expected_areas(np.array([[0, 0, 0, 300, 300, 300, 300]]))[0, 2] == 0


def test_budget_caps_the_flags_and_ranks_them_worst_first():
    masks, probabilities = _clean(depth=40)
    # Every slice unsure, each a little more than the last: 40 slices over the limit, 6 (15 %) kept.
    for d in range(40):
        probabilities[STOMACH, d] = np.where(masks[STOMACH, d], 0.9 - 0.01 * d, 0.0)
        probabilities[STOMACH, d, 20:30, 10:20] = 0.45
    flags = review_flags(masks, SPACING, probabilities)
    assert max_flagged_slices(40) == 6 and len(flags) == 6
    assert [f.slice_index for f in flags] == [39, 38, 37, 36, 35, 34]
    assert [f.score for f in flags] == sorted((f.score for f in flags), reverse=True)
    assert len(review_flags(masks, SPACING, probabilities, budget=0.5)) == 20
    assert max_flagged_slices(3) == 1  # a short scan still gets its worst slice
    with pytest.raises(ValueError, match="budget"):
        review_flags(masks, SPACING, probabilities, budget=0)


def test_one_row_per_slice_naming_its_worst_organ():
    masks, probabilities = _clean()
    probabilities[SMALL_BOWEL, 4, 25:35, 25:35] = 0.3  # missed small bowel: 30 / 80
    probabilities[LARGE_BOWEL, 4, 25:35, 25:35] = 0.45  # missed large bowel: 45 / 95, the worse
    flags = review_flags(masks, SPACING, probabilities)
    assert [(f.slice_index, f.organ) for f in flags] == [(4, "large_bowel")]


@pytest.mark.parametrize("shape", [(20, 3, 40, 40), (2, 20, 40, 40), (4, 20, 40, 40), (3, 20, 40), (3, 0, 40, 40)])
def test_any_other_layout_is_refused(shape):
    masks = _clean()[0]
    with pytest.raises(ValueError, match=r"\(O=3, D, H, W\)"):
        review_flags(np.zeros(shape, dtype=bool), SPACING, np.zeros(shape))
    with pytest.raises(ValueError):
        organ_scores(masks, np.zeros(shape))


def test_probabilities_of_another_shape_are_refused_in_every_dimension():
    masks, probabilities = _clean()
    for wrong in (probabilities[:, :-1], probabilities[:, :, :-1], probabilities[:, :, :, :-1]):
        with pytest.raises(ValueError, match="the masks are"):
            organ_scores(masks, wrong)
    with pytest.raises(ValueError, match="slice numbers"):
        review_flags(masks, SPACING, probabilities, (1, 2, 3))


def test_flags_as_csv(tmp_path):
    masks, probabilities = _clean()
    probabilities[LARGE_BOWEL, 7, 25:35, 25:35] = 0.45
    flags = review_flags(masks, SPACING, probabilities, tuple(range(101, 121)))
    with open(write_review_csv(flags, tmp_path / "review.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER == ("slice_number", "organ", "score", "reason", "slice_index")
    assert rows[1][:3] == ["108", "large_bowel", "0.474"] and rows[1][4] == "7"
    assert len(rows) == 2


def test_real_labels_with_one_organ_taken_out(shared_data):
    """A real ground-truth volume as the prediction: a bowel loop removed mid-organ, its mass left under the threshold, ranks first."""
    from locations import read_volume_shapes

    from model.rle import RleCsv

    rle = shared_data / "rle"
    case_day = RleCsv(rle / "train.csv").case_days[0]
    truth = RleCsv(rle / "train.csv", [case_day]).volume(case_day, read_volume_shapes(rle / "volumes.csv")[case_day])
    masks = truth.masks.copy()
    areas = masks.sum(axis=(2, 3))
    # The slice where the large bowel is largest, not at the scan's ends.
    d = int(np.argmax(areas[LARGE_BOWEL, 2:-2])) + 2
    probabilities = np.where(masks, np.float16(0.97), np.float16(0.0))
    probabilities[LARGE_BOWEL, d] = np.where(masks[LARGE_BOWEL, d], 0.4, 0.0)  # seen, but under the threshold
    masks[LARGE_BOWEL, d] = False
    flags = review_flags(masks, (3.0, 1.5, 1.5), probabilities, truth.slice_numbers)
    assert (flags[0].slice_index, flags[0].organ) == (d, "large_bowel")
    assert flags[0].reason.startswith("possibly missed")
    assert flags[0].score == pytest.approx(0.4 * areas[LARGE_BOWEL, d] / (0.4 * areas[LARGE_BOWEL, d] + MIN_ORGAN_PX),
                                           abs=1e-3)
    assert len(flags) <= max_flagged_slices(masks.shape[1])


def test_slice_sums_summed_again_on_some_slices_are_those_of_the_whole_scan():
    """An edit's sums: the changed slices summed again, the others kept, the very numbers of summing it all."""
    rng = np.random.default_rng(3)
    probabilities = rng.random((3, 7, 20, 24)).astype(np.float16)
    masks = probabilities > 0.5
    before = SliceSums.of(masks, probabilities)
    edited = masks.copy()
    edited[1, 2] = ~edited[1, 2]
    edited[0, 5, :10] = True
    after = before.updated(edited, probabilities, [2, 5])
    whole = SliceSums.of(edited, probabilities)
    np.testing.assert_array_equal(after.mass, whole.mass)
    np.testing.assert_array_equal(after.overlap, whole.overlap)
    assert not np.array_equal(after.overlap, before.overlap)  # the edit changed what is summed
    np.testing.assert_array_equal(before.overlap, SliceSums.of(masks, probabilities).overlap)  # untouched
    scores = organ_scores(edited, probabilities, sums=after)
    np.testing.assert_array_equal(scores.score, organ_scores(edited, probabilities).score)
    assert review_flags(edited, (3.0, 1.5, 1.5), probabilities, sums=after) == review_flags(
        edited, (3.0, 1.5, 1.5), probabilities)
    with pytest.raises(ValueError, match="floor"):
        organ_scores(edited, probabilities, sums=after, probability_floor=0.1)
    with pytest.raises(ValueError, match="sums are of"):
        organ_scores(edited[:, :6], probabilities[:, :6], sums=after)
