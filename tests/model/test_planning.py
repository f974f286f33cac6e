"""Planning structures: bowel bag and millimetre margins, against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from model.measure import structure_volumes_ml
from model.planning import PlanningRequest, bowel_bag, margin_mask, planning_structures


def _point(shape=(9, 21, 21), at=(4, 10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[at] = True
    return mask


def test_margin_follows_the_spacing_of_each_axis():
    # 3 mm slices, 1.5 mm rows, 1 mm columns; a 3 mm margin around one voxel reaches
    # 1 slice, 2 rows and 3 columns: an ellipsoid, not a voxel-count dilation.
    grown = margin_mask(_point(), 3.0, (3.0, 1.5, 1.0))
    s, r, c = np.nonzero(grown)
    assert (s.min(), s.max()) == (3, 5)
    assert (r.min(), r.max()) == (8, 12)
    assert (c.min(), c.max()) == (7, 13)
    # Every voxel within 3 mm of the centre and no other: count the ellipsoid by hand.
    zz, yy, xx = np.mgrid[-4:5, -10:11, -10:11]
    expected = (zz * 3.0) ** 2 + (yy * 1.5) ** 2 + (xx * 1.0) ** 2 <= 9.0 + 1e-9
    np.testing.assert_array_equal(grown, expected)
    # Off the centre slice only the voxel straight above or below is within 3 mm.
    assert grown[3].sum() == 1 and grown[5].sum() == 1


def test_margin_of_a_block_and_at_the_scan_edge():
    block = np.zeros((6, 12, 12), dtype=bool)
    block[0:2, 0:4, 4:8] = True  # touches the first slice and the first row
    grown = margin_mask(block, 2.0, (2.0, 1.0, 1.0))
    # Faces move out by exactly the margin (1 slice, 2 pixels), clipped at the scan's edges.
    assert grown[0:3, 0:6, 2:10].sum() > 0 and not grown[3:].any()
    assert grown[1, 0:6, 4:8].all() and not grown[1, 7:].any()
    assert grown[1, 0:4, 2:10].all() and not grown[1, :, :2].any() and not grown[1, :, 10:].any()
    # Edges and corners are rounded: (row 5, col 9) is √(2²+2²) ≈ 2.8 mm away from the block.
    assert not grown[1, 5, 9] and grown[1, 4, 8]
    assert margin_mask(block, 0.0, (2.0, 1.0, 1.0)).sum() == block.sum()
    with pytest.raises(ValueError):
        margin_mask(block, -1.0, (2.0, 1.0, 1.0))


def test_bowel_bag_is_the_union_of_the_bowels():
    organ_masks = np.zeros((3, 2, 5, 5), dtype=bool)
    organ_masks[0, 0, 0, 0] = True  # stomach: not in the bag
    organ_masks[1, 0, 1:3, 1:3] = True
    organ_masks[2, 0, 2:4, 2:4] = True  # overlaps the small bowel at (2, 2)
    bag = bowel_bag(organ_masks)
    assert bag.sum() == 4 + 4 - 1 and not bag[0, 0, 0]


def test_planning_structures_and_their_volumes():
    organ_masks = np.zeros((3, 9, 21, 21), dtype=bool)
    organ_masks[0, 4, 10, 10] = True
    organ_masks[1, 2, 5, 5] = True
    organ_masks[2, 6, 15, 15] = True
    spacing = (3.0, 1.5, 1.0)
    assert planning_structures(organ_masks, spacing) == []
    structures = planning_structures(organ_masks, spacing, bowel_bag_structure=True, margin_mm=3.0)
    assert [s.key for s in structures] == ["bowel_bag", "stomach_prv_3mm", "small_bowel_prv_3mm",
                                          "large_bowel_prv_3mm", "bowel_bag_prv_3mm"]
    assert structures[1].label == "Stomach PRV 3mm" and structures[1].colour == "#007fff"
    one_prv = margin_mask(_point(), 3.0, spacing).sum()
    volumes = dict(structure_volumes_ml(structures, spacing))
    assert volumes["Bowel bag"] == pytest.approx(2 * 4.5 / 1000)
    assert volumes["Stomach PRV 3mm"] == pytest.approx(one_prv * 4.5 / 1000)
    assert volumes["Bowel bag PRV 3mm"] == pytest.approx(2 * one_prv * 4.5 / 1000)


def test_a_planning_request_is_checked_once_where_it_is_made():
    assert PlanningRequest() == PlanningRequest(False, 0.0) == PlanningRequest(None, None)  # the app's empty fields
    request = PlanningRequest(1, 3)
    assert (request.bowel_bag, request.margin_mm) == (True, 3.0)
    assert isinstance(request.margin_mm, float)
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="The margin must be a number of mm"):
            PlanningRequest(margin_mm=bad)
    masks = np.zeros((3, 4, 8, 8), dtype=bool)
    masks[1, 1:3, 2:5, 2:5] = True
    got = request.structures(masks, (3.0, 1.5, 1.5))
    want = planning_structures(masks, (3.0, 1.5, 1.5), bowel_bag_structure=True, margin_mm=3.0)
    assert [s.key for s in got] == [s.key for s in want] == [
        "bowel_bag", "stomach_prv_3mm", "small_bowel_prv_3mm", "large_bowel_prv_3mm", "bowel_bag_prv_3mm"]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.mask, b.mask)
