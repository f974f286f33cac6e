"""Kaggle RLE: known values, malformed input, round trips on random and on all real masks."""

from __future__ import annotations

import csv
import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import model.rle
from model.labels import ORGANS
from locations import decode_rle_file, read_volume_shapes
from model.rle import (
    RleCsv,
    RleVolume,
    parse_slice_id,
    rle_decode,
    rle_encode,
    slice_id,
    write_rle_csv,
)

# 3 rows x 4 columns. Row-major pixel numbers (1-indexed):  1  2  3  4 /  5  6  7  8 /  9 10 11 12
SMALL_MASK = np.array(
    [
        [0, 1, 1, 1],
        [1, 0, 0, 0],
        [0, 0, 1, 1],
    ],
    dtype=bool,
)
# Pixels 2-5 are one run because row-major order wraps from the end of row 0 to row 1.
# (Column-major, i.e. Fortran order, would give "2 1 4 1 7 1 10 2".)
SMALL_RLE = "2 4 11 2"


def test_small_mask_has_its_row_major_rle():
    assert rle_encode(SMALL_MASK) == SMALL_RLE
    np.testing.assert_array_equal(rle_decode(SMALL_RLE, (3, 4)), SMALL_MASK)


def test_empty_masks():
    assert rle_encode(np.zeros((5, 7), dtype=bool)) == ""
    for empty in ("", "  ", None, float("nan")):
        decoded = rle_decode(empty, (5, 7))
        assert decoded.shape == (5, 7) and decoded.dtype == bool and not decoded.any()


def test_full_mask_is_one_run():
    assert rle_encode(np.ones((3, 4), dtype=bool)) == "1 12"
    assert rle_decode("1 12", (3, 4)).all()


def test_adjacent_runs_decode_as_one():
    np.testing.assert_array_equal(rle_decode("2 3 5 1 11 2", (3, 4)), SMALL_MASK)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number"),
        ("1 x", "not a pixel number"),
        ("1.5 2", "not a pixel number"),
        ("-1 2", "not a pixel number"),
        ("1 99999999999999999999", "not a pixel number"),
        ("0 2", "at least 1"),
        ("3 0", "at least 1"),
        ("5 2 1 2", "unsorted or overlap"),
        ("1 3 2 2", "unsorted or overlap"),
        ("11 3", "past the 3x4 image"),
        ("13 1", "past the 3x4 image"),
    ],
)
def test_malformed_rle_raises(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (3, 4))


def test_run_to_the_last_pixel_is_allowed():
    assert rle_decode("11 2", (3, 4))[2, 2:].all()


@pytest.mark.parametrize("shape", [(3,), (0, 4), (3, -1), (3.0, 4)])
def test_bad_shape_raises(shape):
    with pytest.raises(ValueError, match="shape"):
        rle_decode("1 1", shape)


def test_encode_rejects_non_bool_and_non_2d():
    with pytest.raises(TypeError, match="bool"):
        rle_encode(SMALL_MASK.astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        rle_encode(np.zeros((2, 3, 4), dtype=bool))


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
        lambda shape: arrays(bool, shape, elements=st.booleans())
    )
)
def test_random_masks_round_trip(mask):
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), mask)
    # The encoding is canonical: sorted, merged runs that decode and re-encode to themselves.
    assert rle_encode(rle_decode(rle, mask.shape)) == rle


def test_slice_ids():
    assert parse_slice_id("case123_day20_slice_0065") == ("case123_day20", 65)
    assert slice_id("case123_day20", 65) == "case123_day20_slice_0065"
    assert slice_id(*parse_slice_id("case7_day0_slice_0144")) == "case7_day0_slice_0144"
    for bad in ("case123_slice_0065", "case123_day20_slice_", "slice_0065_266_266_1.50_1.50.png"):
        with pytest.raises(ValueError, match="not a Kaggle slice id"):
            parse_slice_id(bad)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_read_groups_sorts_and_fills_missing_organs(tmp_path):
    path = _write(
        tmp_path / "sub.csv",
        ["id", "class", "predicted", "width", "height"],
        [
            ["case1_day2_slice_0009", "large_bowel", "11 2", "4", "3"],
            ["case1_day2_slice_0003", "stomach", SMALL_RLE, "4", "3"],
            ["case1_day2_slice_0003", "small_bowel", "", "4", "3"],
            ["case5_day0_slice_0001", "stomach", "", "4", "3"],
        ],
    )
    volumes = decode_rle_file(path)
    assert list(volumes) == ["case1_day2", "case5_day0"]
    volume = volumes["case1_day2"]
    assert volume.slice_numbers == (3, 9)
    assert volume.masks.shape == (len(ORGANS), 2, 3, 4) and volume.masks.dtype == bool
    np.testing.assert_array_equal(volume.masks[ORGANS.index("stomach"), 0], SMALL_MASK)
    assert volume.masks[ORGANS.index("large_bowel"), 1].sum() == 2
    assert volume.masks.sum() == SMALL_MASK.sum() + 2  # every other organ and slice is empty
    assert not volumes["case5_day0"].masks.any()


def test_masks_on_a_scans_slices(tmp_path):
    """train.csv → slice masks: rows land on the scan's slices by number, slices without rows are empty."""
    written = np.zeros((len(ORGANS), 2, 3, 4), dtype=bool)
    written[ORGANS.index("stomach"), 0] = SMALL_MASK
    written[ORGANS.index("large_bowel"), 1, 2, 2:] = True
    write_rle_csv(tmp_path / "train.csv", [RleVolume("case1_day2", (3, 9), written)], column="segmentation")
    rows = RleCsv(tmp_path / "train.csv")
    volume = rows.masks_on("case1_day2", (9, 4, 3), (3, 4))
    assert volume.slice_numbers == (9, 4, 3) and volume.masks.shape == (len(ORGANS), 3, 3, 4)
    np.testing.assert_array_equal(volume.masks[:, [2, 0]], written)
    assert not volume.masks[:, 1].any()  # slice 4 has no rows: empty
    assert rows.masks_on("case1_day2", (9,), (3, 4)).masks.sum() == 2  # slice 3's mask dropped
    with pytest.raises(ValueError, match=r"case1_day2_slice_0003: train.csv has a mask for a slice with no image"):
        rows.masks_on("case1_day2", (9,), (3, 4), strict=True)


def test_read_needs_shapes_and_rejects_bad_rows(tmp_path):
    header = ["id", "class", "segmentation"]
    path = _write(tmp_path / "a.csv", header, [["case1_day2_slice_0001", "stomach", "1 1"]])
    with pytest.raises(ValueError, match="no \\(height, width\\) for case1_day2"):
        decode_rle_file(path)
    assert decode_rle_file(path, {"case1_day2": (3, 4)})["case1_day2"].masks.sum() == 1

    cases = {
        "unknown class": [["case1_day2_slice_0001", "liver", ""]],
        "second row": [["case1_day2_slice_0001", "stomach", ""]] * 2,
        "slice_0001 stomach: RLE run ends at pixel 13": [["case1_day2_slice_0001", "stomach", "13 1"]],
    }
    for message, rows in cases.items():
        with pytest.raises(ValueError, match=message):
            decode_rle_file(_write(tmp_path / "b.csv", header, rows), {"case1_day2": (3, 4)})
    with pytest.raises(ValueError, match="need columns"):
        decode_rle_file(_write(tmp_path / "c.csv", ["id", "class", "rle"], []), {})


def test_write_then_read_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    volumes = [
        RleVolume("case1_day2", (3, 4, 10), rng.random((len(ORGANS), 3, 5, 6)) < 0.3),
        RleVolume("case9_day0", (1,), np.zeros((len(ORGANS), 1, 2, 2), dtype=bool)),
    ]
    path = tmp_path / "submission.csv"
    write_rle_csv(path, volumes)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "class", "predicted"]
    assert rows[1][:2] == ["case1_day2_slice_0003", ORGANS[0]]
    assert len(rows) == 1 + len(ORGANS) * 4
    read = decode_rle_file(path, {"case1_day2": (5, 6), "case9_day0": (2, 2)})
    for volume in volumes:
        assert read[volume.case_day].slice_numbers == volume.slice_numbers
        np.testing.assert_array_equal(read[volume.case_day].masks, volume.masks)


def test_volume_checks_its_shape():
    with pytest.raises(ValueError, match="masks must be"):
        RleVolume("case1_day2", (1, 2), np.zeros((len(ORGANS), 3, 2, 2), dtype=bool))
    with pytest.raises(TypeError, match="bool"):
        RleVolume("case1_day2", (1,), np.zeros((len(ORGANS), 1, 2, 2), dtype=np.uint8))


# --- real data ---------------------------------------------------------------------------


def _real_rows(shared_data: Path):
    """(id, class, rle, (H, W)) for every row of the real train.csv."""
    rle_dir = shared_data / "rle"
    shapes = read_volume_shapes(rle_dir / "volumes.csv")
    with open(rle_dir / "train.csv", newline="") as f:
        for row in csv.DictReader(f):
            yield row["id"], row["class"], row["segmentation"], shapes[parse_slice_id(row["id"])[0]]


def test_every_real_mask_round_trips_exactly(shared_data):
    masks = 0
    for kaggle_id, organ, rle, shape in _real_rows(shared_data):
        assert rle_encode(rle_decode(rle, shape)) == rle, (kaggle_id, organ)
        masks += bool(rle)
    assert masks > 1000  # the file's non-empty masks were all exercised


def test_real_runs_stay_inside_image_rows(shared_data):
    """Why row-major: read that way no run crosses a row end; read column-major, many would."""
    crossing_rows = crossing_columns = 0
    for _, _, rle, (height, width) in _real_rows(shared_data):
        values = np.array(rle.split(), dtype=np.int64)
        starts, lengths = values[0::2] - 1, values[1::2]
        crossing_rows += np.count_nonzero(starts % width + lengths > width)
        crossing_columns += np.count_nonzero(starts % height + lengths > height)
    assert crossing_rows == 0
    assert crossing_columns > 1000  # from the 360x310 scans, where height != width


def test_real_volumes(rle_volumes):
    assert len(rle_volumes) == 9
    for volume in rle_volumes.values():
        assert volume.slice_numbers == tuple(range(1, 145))
        assert volume.masks.shape[:2] == (len(ORGANS), 144)
        assert volume.masks.shape[2:] in {(310, 360), (266, 266)}
        assert all(volume.masks[o].any() for o in range(len(ORGANS)))
    assert rle_volumes["case16_day0"].masks.shape[2:] == (310, 360)  # volumes.csv: width 360, height 310


def _intervals(rle: str) -> list[tuple[int, int]]:
    values = [int(v) for v in rle.split()]
    return [(start, start + length) for start, length in zip(values[0::2], values[1::2])]


def test_real_organs_overlap_on_some_slices(shared_data, rle_volumes):
    """Multi-label: organs share pixels on some slices (the data's README says so).

    Counted twice: on the decoded volumes, and independently from the raw runs (two organs
    share a pixel exactly when their runs intersect, as both flatten the slice alike).
    """
    labelled = overlapping = 0
    for volume in rle_volumes.values():
        labelled += np.count_nonzero(volume.masks.any(axis=(0, 2, 3)))
        overlapping += np.count_nonzero((volume.masks.sum(axis=0) >= 2).any(axis=(1, 2)))

    runs: dict[str, list[list[tuple[int, int]]]] = {}
    for kaggle_id, _, rle, _ in _real_rows(shared_data):
        runs.setdefault(kaggle_id, []).append(_intervals(rle))
    overlapping_from_runs = sum(
        any(
            s1 < e2 and s2 < e1
            for a, b in itertools.combinations(organs, 2)
            for (s1, e1), (s2, e2) in itertools.product(a, b)
        )
        for organs in runs.values()
    )
    total = sum(len(v.slice_numbers) for v in rle_volumes.values())
    print(f"{overlapping} of {labelled} labelled slices ({total} in all) have overlapping organs")
    assert overlapping == overlapping_from_runs
    # The shared sample's own numbers (also counted with awk on the raw file): 651 of its
    # 1,296 slices carry a label, 176 of them with organs overlapping.
    assert (total, labelled, overlapping) == (1296, 651, 176)


# --- streaming: one case-day decoded at a time ------------------------------------------


def _real_files(shared_data: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    rle_dir = shared_data / "rle"
    return rle_dir / "train.csv", read_volume_shapes(rle_dir / "volumes.csv")


def test_case_days_filter_decodes_only_those(shared_data, rle_volumes, monkeypatch):
    path, shapes = _real_files(shared_data)
    decoded = []
    real_decode = model.rle.rle_decode
    monkeypatch.setattr(model.rle, "rle_decode", lambda rle, shape: decoded.append(1) or real_decode(rle, shape))
    first, *_, last = rle_volumes
    both = RleCsv(path, case_days=[last, first])
    assert both.case_days == (first, last) and decoded == []  # file order, whatever the order asked; nothing decoded yet
    volumes = {case_day: both.volume(case_day, shapes[case_day]) for case_day in both.case_days}
    assert len(decoded) == len(ORGANS) * (len(rle_volumes[first].slice_numbers) + len(rle_volumes[last].slice_numbers))
    np.testing.assert_array_equal(volumes[last].masks, rle_volumes[last].masks)

    decoded.clear()
    rows = RleCsv(path, case_days=[last, "case1_day1"])
    assert rows.case_days == (last,) and last in rows and first not in rows and decoded == []
    assert rows.slice_numbers(last) == rle_volumes[last].slice_numbers
    with pytest.raises(ValueError, match=f"no rows for {first}"):
        rows.volume(first, shapes[first])


def test_unsorted_rows_are_grouped_by_case_day(shared_data, rle_volumes, tmp_path):
    path, shapes = _real_files(shared_data)
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    order = np.random.default_rng(0).permutation(len(rows))
    shuffled = _write(tmp_path / "shuffled.csv", header, [rows[i] for i in order])
    volumes = list(decode_rle_file(shuffled, shapes).values())
    assert sorted(v.case_day for v in volumes) == sorted(rle_volumes)
    for volume in volumes:
        assert volume.slice_numbers == rle_volumes[volume.case_day].slice_numbers
        np.testing.assert_array_equal(volume.masks, rle_volumes[volume.case_day].masks)


def _peak_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_one_case_day_at_a_time_holds_one_volume_not_the_file(shared_data, rle_volumes):
    path, shapes = _real_files(shared_data)
    case_day = next(iter(rle_volumes))
    one_volume = rle_volumes[case_day].masks.nbytes  # 3 x 144 x 310 x 360 bool: 48 MB
    largest = max(v.masks.nbytes for v in rle_volumes.values())
    whole_file = sum(v.masks.nbytes for v in rle_volumes.values())  # all decoded at once: 365 MB
    assert whole_file > 6 * largest

    def one():
        assert RleCsv(path, case_days=[case_day]).volume(case_day, shapes[case_day]).masks.any()

    def each():  # as cohort scoring and train.evaluate walk a file
        rows = RleCsv(path)
        assert sum(int(rows.volume(cd, shapes[cd]).masks.sum()) for cd in rows.case_days) > 0

    assert _peak_bytes(one) < 2 * one_volume
    # Without a filter, at most the volume just counted and the one being decoded are alive.
    assert _peak_bytes(each) < 3 * largest
