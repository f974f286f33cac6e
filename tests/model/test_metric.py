"""The competition metric: hand-computed values, the empty-mask rules, and agreement with an
independent Hausdorff computation (scipy's directed_hausdorff) on the real volumes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from model.labels import ORGANS
from model.metric import CaseScore, competition_score, dice_per_slice, hausdorff_3d, score_case

STOMACH, SMALL_BOWEL, LARGE_BOWEL = (ORGANS.index(o) for o in ("stomach", "small_bowel", "large_bowel"))


def _volume(shape, *voxels):
    mask = np.zeros(shape, dtype=bool)
    for voxel in voxels:
        mask[voxel] = True
    return mask


def _reference_hausdorff(pred: np.ndarray, truth: np.ndarray) -> float:
    """The definition, computed the slow, independent way: point sets in the unit cube.

    Voxels in both masks are at distance 0 and cannot raise the maximum, so each direction
    only queries the source's voxels outside the target (this keeps directed_hausdorff fast).
    """
    scale = np.array(truth.shape, dtype=float)

    def directed(source, target):
        points = np.argwhere(source & ~target) / scale
        return directed_hausdorff(points, np.argwhere(target) / scale, seed=0)[0] if len(points) else 0.0

    return max(directed(pred, truth), directed(truth, pred)) / math.sqrt(3)


def _uncropped_hausdorff(pred: np.ndarray, truth: np.ndarray) -> float:
    """Distance transforms of the whole volume, without the crop hausdorff_3d makes."""
    sampling = [1.0 / n for n in truth.shape]
    to_truth = ndimage.distance_transform_edt(~truth, sampling=sampling)[pred].max()
    to_pred = ndimage.distance_transform_edt(~pred, sampling=sampling)[truth].max()
    return max(to_truth, to_pred) / math.sqrt(3)


# --- Dice -----------------------------------------------------------------------------------


def test_dice_known_values():
    pred = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    truth = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    assert dice_per_slice(pred, truth) == pytest.approx(2 * 1 / (2 + 3))  # 0.4
    assert dice_per_slice(truth, truth) == 1.0
    assert dice_per_slice(pred, ~pred) == 0.0  # disjoint
    assert dice_per_slice(pred, np.zeros_like(pred)) == 0.0  # only one empty


def test_dice_is_nan_only_where_both_are_empty():
    pred = np.zeros((len(ORGANS), 2, 4, 4), dtype=bool)
    truth = pred.copy()
    truth[STOMACH, 1, 0, 0] = True
    dice = dice_per_slice(pred, truth)
    assert dice.shape == (len(ORGANS), 2)
    assert dice[STOMACH, 1] == 0.0
    assert np.isnan(dice).sum() == dice.size - 1


# --- Hausdorff ------------------------------------------------------------------------------


def test_hausdorff_of_two_single_voxels_by_hand():
    # (0,0,0) vs (3,9,9) in a 4x10x10 volume: scaled offsets (3/4, 9/10, 9/10).
    pred, truth = _volume((4, 10, 10), (0, 0, 0)), _volume((4, 10, 10), (3, 9, 9))
    expected = math.sqrt((0.75**2 + 0.9**2 + 0.9**2) / 3)
    assert expected == pytest.approx(0.852936105461599)
    assert hausdorff_3d(pred, truth) == pytest.approx(expected, abs=1e-12)
    assert hausdorff_3d(truth, pred) == pytest.approx(expected, abs=1e-12)


def test_hausdorff_is_symmetric_max_of_both_directions():
    # Prediction inside the truth: prediction→truth is 0, truth→prediction is 8/10 along W.
    truth = _volume((1, 1, 10), (0, 0, 0), (0, 0, 8))
    pred = _volume((1, 1, 10), (0, 0, 0))
    assert hausdorff_3d(pred, truth) == pytest.approx(0.8 / math.sqrt(3), abs=1e-12)  # 0.46188...
    assert hausdorff_3d(truth, pred) == pytest.approx(0.8 / math.sqrt(3), abs=1e-12)


def test_hausdorff_counts_slices_as_one_each_scaled_by_depth():
    # Two slices apart in a 5-slice volume: 2/5 of the cube's depth, not 2 x slice thickness.
    pred, truth = _volume((5, 8, 8), (1, 4, 4)), _volume((5, 8, 8), (3, 4, 4))
    assert hausdorff_3d(pred, truth) == pytest.approx(0.4 / math.sqrt(3), abs=1e-12)


def test_hausdorff_empty_rules():
    empty = np.zeros((3, 6, 6), dtype=bool)
    voxel = _volume((3, 6, 6), (1, 2, 3))
    assert math.isnan(hausdorff_3d(empty, empty))
    assert hausdorff_3d(voxel, empty) == 1.0
    assert hausdorff_3d(empty, voxel) == 1.0
    assert hausdorff_3d(voxel, voxel) == 0.0


def test_hausdorff_rejects_bad_input():
    with pytest.raises(TypeError, match="bool"):
        hausdorff_3d(np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match="share a shape"):
        hausdorff_3d(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        hausdorff_3d(np.zeros((1, 2, 3, 3), bool), np.zeros((1, 2, 3, 3), bool))


@pytest.mark.parametrize(
    ("pred_voxels", "truth_voxels"),
    [
        # Both masks in one corner: the crop is small and offset from the origin.
        ([(5, 17, 20), (6, 18, 21)], [(6, 19, 23)]),
        # Opposite corners: the crop is the whole volume.
        ([(0, 0, 0)], [(6, 19, 23), (6, 0, 23)]),
        # One mask nested in the other's box, far from the origin.
        ([(4, 10, 10), (4, 10, 11), (5, 12, 14)], [(3, 9, 9), (5, 13, 15)]),
    ],
)
def test_cropping_does_not_change_the_distance(pred_voxels, truth_voxels):
    shape = (7, 20, 24)
    pred, truth = _volume(shape, *pred_voxels), _volume(shape, *truth_voxels)
    assert hausdorff_3d(pred, truth) == pytest.approx(_uncropped_hausdorff(pred, truth), abs=1e-12)
    assert hausdorff_3d(pred, truth) == pytest.approx(_reference_hausdorff(pred, truth), abs=1e-12)


def test_random_masks_match_the_reference():
    rng = np.random.default_rng(7)
    for _ in range(20):
        shape = tuple(rng.integers(2, 12, size=3))
        pred, truth = rng.random(shape) < 0.05, rng.random(shape) < 0.05
        pred[0, 0, 0] = truth[-1, -1, -1] = True  # both non-empty
        assert hausdorff_3d(pred, truth) == pytest.approx(_reference_hausdorff(pred, truth), abs=1e-12)


# --- Combining into the score ---------------------------------------------------------------


def _case_a() -> tuple[np.ndarray, np.ndarray]:
    """2 slices of 2x2: stomach right on slice 0, small bowel absent, large bowel a false positive."""
    pred = np.zeros((len(ORGANS), 2, 2, 2), dtype=bool)
    truth = pred.copy()
    pred[STOMACH, 0, 0, 0] = truth[STOMACH, 0, 0, 0] = True
    pred[LARGE_BOWEL, 0, 1, 1] = True
    return pred, truth


def test_score_of_a_hand_made_case():
    case = score_case(*_case_a())
    np.testing.assert_array_equal(case.dice, [[1.0, np.nan], [np.nan, np.nan], [0.0, np.nan]])
    np.testing.assert_array_equal(case.hausdorff, [0.0, np.nan, 1.0])

    score = competition_score([case])
    # Dice over the 2 pairs not empty on both sides: (1 + 0) / 2; HD over 2 organs: (0 + 1) / 2.
    assert (score.dice, score.hausdorff, score.dice_pairs, score.hausdorff_pairs) == (0.5, 0.5, 2, 2)
    assert score.score == pytest.approx(0.4 * 0.5 + 0.6 * (1 - 0.5))
    assert score.score_per_organ["stomach"] == pytest.approx(1.0)
    assert score.score_per_organ["large_bowel"] == pytest.approx(0.0)
    assert math.isnan(score.score_per_organ["small_bowel"])
    assert math.isnan(score.dice_per_organ["small_bowel"]) and math.isnan(score.hausdorff_per_organ["small_bowel"])


def test_scores_pool_pairs_across_cases():
    # Case B: one stomach slice right, three stomach slices wholly missed.
    pred = np.zeros((len(ORGANS), 4, 2, 2), dtype=bool)
    truth = pred.copy()
    truth[STOMACH, :, 0, 0] = True
    pred[STOMACH, 0, 0, 0] = True
    score = competition_score([score_case(*_case_a()), score_case(pred, truth)])
    # Dice pairs: case A (1, 0) and case B (1, 0, 0, 0): pooled 2/6, not the mean of per-case means.
    assert score.dice == pytest.approx(2 / 6)
    assert score.dice_pairs == 6 and score.hausdorff_pairs == 3
    assert score.dice_per_organ["stomach"] == pytest.approx(2 / 5)
    # Case B's stomach: truth voxels 3 slices beyond the prediction in a 4-slice volume.
    assert score.hausdorff_per_organ["stomach"] == pytest.approx((0 + 0.75 / math.sqrt(3)) / 2)


def test_identical_masks_score_one_and_empty_pairs_do_not_count():
    pred, truth = _case_a()
    perfect = competition_score([score_case(truth | pred, truth | pred)])
    assert (perfect.score, perfect.dice, perfect.hausdorff) == (1.0, 1.0, 0.0)
    # Padding the scan with slices empty on both sides leaves Dice alone (HD would rescale).
    padded = np.concatenate([truth | pred, np.zeros((len(ORGANS), 5, 2, 2), dtype=bool)], axis=1)
    assert competition_score([score_case(padded, padded)]).dice_pairs == perfect.dice_pairs == 2


def test_nothing_to_score_is_nan_not_perfect():
    empty = np.zeros((len(ORGANS), 3, 4, 4), dtype=bool)
    for score in (competition_score([score_case(empty, empty)]), competition_score([])):
        assert math.isnan(score.score) and math.isnan(score.dice) and math.isnan(score.hausdorff)
        assert score.dice_pairs == score.hausdorff_pairs == 0
        values = score.as_dict()
        assert values["score"] is None and values["dice/stomach"] is None
        json.dumps(values, allow_nan=False)


def test_as_dict_is_flat_and_json_ready():
    values = competition_score([score_case(*_case_a())]).as_dict()
    assert values["score"] == pytest.approx(0.5) and values["dice"] == 0.5 and values["hausdorff"] == 0.5
    assert {f"{part}/{organ}" for part in ("score", "dice", "hausdorff") for organ in ORGANS} <= set(values)
    assert values["hausdorff/large_bowel"] == 1.0 and values["dice/small_bowel"] is None
    assert all(type(v) in (float, int, type(None)) for v in values.values())
    json.dumps(values, allow_nan=False)


def test_score_case_checks_its_input():
    with pytest.raises(ValueError, match="O=3"):
        score_case(np.zeros((2, 1, 2, 2), bool), np.zeros((2, 1, 2, 2), bool))
    with pytest.raises(TypeError, match="bool"):
        score_case(np.zeros((3, 1, 2, 2), np.float32), np.zeros((3, 1, 2, 2), bool))
    assert isinstance(score_case(np.zeros((3, 1, 2, 2), bool), np.zeros((3, 1, 2, 2), bool)), CaseScore)


# --- Real volumes ---------------------------------------------------------------------------


def test_real_truth_against_itself_scores_one(rle_volumes):
    score = competition_score(score_case(v.masks, v.masks) for v in rle_volumes.values())
    assert (score.score, score.dice, score.hausdorff) == (1.0, 1.0, 0.0)
    # Every non-empty (slice, organ) pair, and all 9 scans x 3 organs, were scored.
    assert score.dice_pairs == sum(np.count_nonzero(v.masks.any(axis=(2, 3))) for v in rle_volumes.values())
    assert score.hausdorff_pairs == 9 * len(ORGANS)


def test_translated_real_organ_is_off_by_the_translation(rle_volumes):
    """A shifted copy of a set is exactly the shift's length away (Hausdorff), here in unit-cube units."""
    truth = rle_volumes["case16_day0"].masks[STOMACH]
    depth, height, width = truth.shape
    shift = (2, -4, 6)
    assert not truth[:2].any() and not truth[:, :4].any() and not truth[:, :, -6:].any()  # np.roll wraps nothing
    pred = np.roll(truth, shift, axis=(0, 1, 2))
    expected = math.hypot(2 / depth, 4 / height, 6 / width) / math.sqrt(3)
    assert hausdorff_3d(pred, truth) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("case_day", "organ"), [("case16_day0", STOMACH), ("case122_day27", SMALL_BOWEL), ("case133_day0", STOMACH)]
)
def test_real_organs_match_directed_hausdorff(rle_volumes, case_day, organ):
    truth = rle_volumes[case_day].masks[organ]
    stray = truth.copy()
    stray[10, 5, 5] = True  # a far false positive: the crop box becomes almost the whole scan
    predictions = {
        "eroded": ndimage.binary_erosion(truth, np.ones((1, 5, 5), dtype=bool)),
        "dilated": ndimage.binary_dilation(truth, np.ones((3, 3, 3), dtype=bool)),
        "stray voxel": stray,
    }
    for name, pred in predictions.items():
        assert pred.any() and not np.array_equal(pred, truth), name
        expected = _reference_hausdorff(pred, truth)
        assert hausdorff_3d(pred, truth) == pytest.approx(expected, abs=1e-12), name
        assert 0 < expected < 1, name
