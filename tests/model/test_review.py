"""Review flags on constructed scans whose answers are known by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from model import review
from model.review import CSV_HEADER, boundary_band, boundary_margins, write_review_csv

SPACING = (3.0, 1.0, 1.0)  # 1 mm² pixels: areas in px are mm²


def review_flags(masks, spacing, probabilities=None, **options):
    """:func:`model.review.review_flags` on this file's slices-first cases (the function takes organs first)."""
    return review.review_flags(masks.transpose(1, 0, 2, 3), spacing,
                               None if probabilities is None else probabilities.transpose(1, 0, 2, 3), **options)


def _masks(depth=7, size=40) -> np.ndarray:
    return np.zeros((depth, 3, size, size), dtype=bool)


def test_isolated_organ_needs_both_neighbours_empty():
    masks = _masks()
    masks[3, 0, 10:20, 10:20] = True  # stomach on slice 3 only: isolated
    masks[1:3, 1, 5:8, 5:8] = True  # small bowel on slices 1-2: not isolated
    masks[0, 2, 30:35, 30:35] = True  # large bowel only on the first slice: isolated (beyond counts empty)
    masks[6, 2, 30:35, 30:35] = True  # ... and only on the last
    flags = [f for f in review_flags(masks, SPACING) if f.rule == "isolated"]
    assert [(f.slice_index, f.organ) for f in flags] == [(0, "large_bowel"), (3, "stomach"), (6, "large_bowel")]
    assert flags[1].slice_number == 4
    one_slice = _masks(depth=1)
    one_slice[0, 0, 1:5, 1:5] = True
    assert review_flags(one_slice, SPACING) == []


def test_area_jump_beyond_the_factor_and_above_the_minimum_area():
    masks = _masks(depth=5)
    masks[0:5, 0, 10:20, 10:20] = True  # 100 mm² on every slice
    masks[2, 0, 10:20, 10:30] = True  # 200 mm² on slice 2: exactly 2×, not beyond it
    masks[4, 0, 0:30, 10:20] = True  # 300 mm² on slice 4: 3× slice 3
    masks[0:2, 1, 0:2, 0:2] = True  # 4 mm² then 36 mm²: 9×, but under 1 cm²: not judged
    masks[1, 1, 0:6, 0:6] = True
    flags = review_flags(masks, SPACING, slice_numbers=(10, 11, 12, 13, 14))
    assert [(f.slice_index, f.slice_number, f.organ, f.rule, f.value) for f in flags] == [
        (4, 14, "stomach", "area_jump", 3.0)]
    assert "3.00 cm² here, 1.00 cm² on the previous slice" in flags[0].detail
    # A shrinking organ is flagged the same way, on the later slice.
    assert [(f.slice_index, f.value) for f in review_flags(masks[::-1], SPACING) if f.organ == "stomach"] == [(1, 3.0)]
    assert review_flags(masks, SPACING, max_area_ratio=3.0) == []
    # A pixel spacing that makes 36 px reach 1 cm² brings the small-bowel jump in.
    small = [f for f in review_flags(masks, (3.0, 2.0, 2.0)) if f.organ == "small_bowel"]
    assert [(f.slice_index, f.value) for f in small] == [(1, 9.0)]


def test_boundary_band_is_in_plane_and_two_pixels_each_side():
    masks = _masks(depth=3, size=20)
    masks[1, 0, 5:15, 5:15] = True
    band = boundary_band(masks, 2)
    assert not band[0].any() and not band[2].any()  # never across slices
    # 14×14 dilation minus 6×6 erosion.
    assert band[1, 0].sum() == 14 * 14 - 6 * 6
    assert band[1, 0, 3, 3] and not band[1, 0, 2, 2] and not band[1, 0, 7:13, 7:13].any()


def test_low_confidence_from_the_margin_in_the_band():
    masks = _masks(depth=3, size=20)
    masks[:, 0, 5:15, 5:15] = True
    masks[:, 1, 0:4, 0:4] = True  # cut by the image edge: the edge counts as its boundary
    probabilities = np.where(masks, 0.95, 0.05)  # margin 0.9 everywhere
    probabilities[1, 0] = np.where(masks[1, 0], 0.6, 0.4)  # margin 0.2 on slice 1's stomach
    margins = boundary_margins(masks, probabilities)
    assert margins[1, 0] == pytest.approx(0.2) and margins[0, 0] == pytest.approx(0.9)
    assert np.isnan(margins[0, 2])  # no large bowel, no band
    flags = review_flags(masks, SPACING, probabilities)
    assert [(f.slice_index, f.organ, f.rule, f.value, f.limit) for f in flags] == [(1, "stomach", "low_confidence", 0.2, 0.5)]
    # Interior pixels do not count: uncertain only deep inside the organ is not flagged.
    inner = np.where(masks, 0.95, 0.05)
    inner[1, 0, 8:12, 8:12] = 0.5
    assert review_flags(masks, SPACING, inner) == []
    # Half the band at margin 0.2 and half at 0.9: the mean, 0.55, passes 0.5 but not 0.6.
    half = np.where(masks, 0.95, 0.05)
    half[1, 0, :, :10] = np.where(masks[1, 0, :, :10], 0.6, 0.4)
    assert boundary_margins(masks, half)[1, 0] == pytest.approx(0.55)
    assert review_flags(masks, SPACING, half) == []
    assert [f.slice_index for f in review_flags(masks, SPACING, half, min_margin=0.6)] == [1]
    with pytest.raises(ValueError):
        review_flags(masks, SPACING, probabilities[:, :2])


def test_flags_as_csv(tmp_path):
    masks = _masks()
    masks[3, 0, 10:20, 10:20] = True
    probabilities = np.where(masks, 0.55, 0.45)
    flags = review_flags(masks, SPACING, probabilities)
    assert [f.rule for f in flags] == ["low_confidence", "isolated"]
    with open(write_review_csv(flags, tmp_path / "review.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1][:6] == ["3", "4", "stomach", "low_confidence", "0.1", "0.5"]
    assert rows[2][:4] == ["3", "4", "stomach", "isolated"]
