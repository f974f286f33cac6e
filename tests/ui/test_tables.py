"""The page's tables (ui/tables.py): rows a wrong rounding, order or placeholder would not produce."""

from __future__ import annotations

import numpy as np

from model.truth import compare
from model.edits import SliceEdit
from model.review import ReviewFlag
from model.scans import Scan
from ui.tables import AREA_HEADERS, VOLUME_HEADERS, area_plot_frame, area_rows, comparison_rows, review_rows, volume_rows


def _scan(depth: int = 3, height: int = 10, width: int = 10) -> Scan:
    return Scan(np.zeros((depth, height, width), np.uint16), (3.0, 1.5, 2.0), np.eye(4), tuple(range(11, 11 + depth)),
                name="s", kind="slices")


def test_area_rows_round_the_area_and_say_yes_or_no():
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[1, :4, :5] = True
    rows = area_rows(masks, (1.5, 2.0))
    assert rows == [["Stomach", "no", 0, 0.0], ["Small bowel", "yes", 20, 0.6], ["Large bowel", "no", 0, 0.0]]
    assert all(len(r) == len(AREA_HEADERS) for r in rows)


def test_volume_rows_name_slices_by_slider_position_then_the_files_number_and_dash_absent_organs():
    """Kaggle files numbered 11-13 sit at slider positions 1-3: the table says both, the position first."""
    import dataclasses

    from model.measure import measure

    scan = _scan()
    masks = np.zeros((3, *scan.shape), dtype=bool)
    masks[0, 1:3, :2, :2] = True  # 8 voxels of 9 mm³, on files 12-13, 4 pixels of 3 mm² = 0.12 cm² each
    masks[0, 2, :2, 2] = True  # the largest cross-section: file 13, position 3
    rows = volume_rows(measure(masks, scan), [], scan)
    assert rows[0] == ["Stomach", 0.1, "2–3 (files 12–13)", 0.18, "3 (file 13)"]
    assert rows[1] == ["Small bowel", 0.0, "–", 0.0, "–"]
    assert all(len(r) == len(VOLUME_HEADERS) for r in rows)
    numbered = dataclasses.replace(scan, slice_numbers=(1, 2, 3))  # NIfTI, DICOM: the numbers are the positions
    assert volume_rows(measure(masks, numbered), [], numbered)[0] == ["Stomach", 0.1, "2–3", 0.18, 3]


def test_area_plot_frame_is_long_one_row_per_slice_and_organ_by_slider_position():
    scan = _scan()
    masks = np.zeros((3, *scan.shape), dtype=bool)
    masks[2, 0, :5, :5] = True
    frame = area_plot_frame(masks, scan)
    assert list(frame.columns) == ["slice", "organ", "area (cm²)"] and len(frame) == 9
    large = frame[frame["organ"] == "Large bowel"]
    assert large["slice"].tolist() == [1, 2, 3] and large["area (cm²)"].tolist() == [0.75, 0.0, 0.0]


def test_comparison_rows_show_nothing_to_score_as_a_dash():
    truth = np.zeros((3, 4, 10, 10), dtype=bool)
    truth[0, 1, 2:4, 2:4] = True
    rows = comparison_rows(compare(truth, truth))
    assert rows[0] == ["Stomach", 1.0, 0.0, 1.0] and rows[2][1:] == ["–", "–", "–"]
    assert rows[-1][0] == "All organs" and rows[-1][1:] == [1.0, 0.0, 1.0]


def test_review_rows_list_flags_worst_first_then_edited_pairs_by_slider_position():
    """The flags keep their rank (worst first, what the page's note and the review CSV say), even where a
    worse flag sits on a later slice; the edited rows follow, by slider position."""
    flags = (ReviewFlag(9, "large_bowel", 0.9, "uncertain contour", 4), ReviewFlag(7, "small_bowel", 0.5, "possibly missed", 2))
    edits = (SliceEdit(1, 0, 5, "large_bowel", 3, 0), SliceEdit(1, 0, 5, "stomach", 0, 4),
             SliceEdit(2, 0, 5, "stomach", 2, 1))
    assert review_rows(flags, edits) == [
        [5, "Large bowel", 0.9, "uncertain contour"],
        [3, "Small bowel", 0.5, "possibly missed"],
        [1, "Stomach", "edited", "corrected by hand: 2 pixels added, 5 removed"],
        [1, "Large bowel", "edited", "corrected by hand: 3 pixels added, 0 removed"],
    ]
    assert review_rows(flags[1:]) == [[3, "Small bowel", 0.5, "possibly missed"]]
