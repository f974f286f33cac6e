"""Ground truth for a scan (RLE CSV, label NIfTI, mask PNGs) and the comparison numbers and overlay."""

from __future__ import annotations

import numpy as np
import pytest

from model.truth import compare, confusion, load_ground_truth
from locations import read_volume_shapes
from model.scans import Scan, ScanError
from model.exports import label_volume, save_label_nifti, save_mask_png_zip


def _kaggle_scan(case_day: str, shape: tuple[int, int, int], numbers=None) -> Scan:
    voxels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    numbers = numbers or tuple(range(1, shape[0] + 1))
    return Scan(voxels, (3.0, 1.5, 1.5), np.diag([-1.5, -1.5, 3.0, 1.0]), numbers, case_day, "slices",
                case_day=case_day, kaggle_named=True)


@pytest.fixture(scope="module")
def real_case(shared_data, rle_volumes):
    """The first real ground-truth volume, with a stand-in scan of its size and Kaggle numbering."""
    shapes = read_volume_shapes(shared_data / "rle" / "volumes.csv")
    case_day = next(iter(rle_volumes))
    volume = rle_volumes[case_day]
    scan = _kaggle_scan(case_day, (len(volume.slice_numbers), *shapes[case_day]), volume.slice_numbers)
    return scan, volume.masks


def test_real_rle_ground_truth_for_the_scan(shared_data, real_case):
    scan, masks = real_case
    truth, notes = load_ground_truth([shared_data / "rle" / "train.csv"], scan)
    np.testing.assert_array_equal(truth, masks)
    assert notes == []
    assert compare(truth, truth).score == pytest.approx(1.0)
    # The competition's own gzipped train.csv.gz (all 239 case-days) reads the same.
    truth, notes = load_ground_truth([shared_data / "kaggle" / "train.csv.gz"], scan)
    np.testing.assert_array_equal(truth, masks)


def test_rle_ground_truth_matches_slice_numbers_and_reports_missing(shared_data, real_case):
    scan, masks = real_case
    # A scan that holds every other slice, plus one number the CSV does not have.
    numbers = scan.slice_numbers[::2][:-1] + (999,)
    sub = _kaggle_scan(scan.case_day, (len(numbers), *scan.shape[1:]), numbers)
    truth, notes = load_ground_truth([shared_data / "rle" / "train.csv"], sub)
    np.testing.assert_array_equal(truth[:, :-1], masks[:, ::2][:, : len(numbers) - 1])
    assert not truth[:, -1].any() and "1 of the scan's slices" in notes[0]
    other = _kaggle_scan("case1_day1", sub.shape, numbers)
    with pytest.raises(ScanError, match="no rows for case1_day1"):
        load_ground_truth([shared_data / "rle" / "train.csv"], other)



def test_bad_rle_csv_errors_name_the_file_and_line_not_its_folder(tmp_path):
    scan = _kaggle_scan("case1_day1", (1, 4, 4))
    for body, message in [("case1_day1_slice_0001,liver,\n", "truth.csv:2: unknown class 'liver'"),
                          ("case1_day1_slice_0001,stomach,15 9\n", "truth.csv: case1_day1_slice_0001 stomach: RLE"),
                          ("case1_day1_slice_0001,stomach,\n" * 2, "truth.csv:3: second row")]:
        (tmp_path / "truth.csv").write_text("id,class,segmentation\n" + body)
        with pytest.raises(ScanError) as err:
            load_ground_truth([tmp_path / "truth.csv"], scan)
        assert str(err.value).startswith(message) and str(tmp_path) not in str(err.value)

def test_label_nifti_and_png_zip_ground_truth(tmp_path, real_case):
    scan, masks = real_case
    nifti = save_label_nifti(masks, scan, tmp_path / "truth.nii.gz")
    truth, _ = load_ground_truth([nifti], scan)
    ids = label_volume(masks)  # a label map keeps one organ per voxel
    np.testing.assert_array_equal(truth, np.stack([ids == 1, ids == 2, ids == 3]))
    pngs = save_mask_png_zip(masks, scan, tmp_path / "truth.zip")
    truth, _ = load_ground_truth([pngs], scan)
    np.testing.assert_array_equal(truth, masks)  # bit-packed PNGs keep overlaps
    wrong = _kaggle_scan(scan.case_day, (scan.shape[0], 40, 40))
    with pytest.raises(ScanError, match="the scan is"):
        load_ground_truth([nifti], wrong)
    # A label NIfTI with no organ anywhere is an answer (none), not a blank scan to refuse.
    none = save_label_nifti(np.zeros_like(masks), scan, tmp_path / "none.nii.gz")
    truth, _ = load_ground_truth([none], scan)
    assert truth.shape == masks.shape and not truth.any()


def test_comparison_numbers_through_the_scan_path():
    truth = np.zeros((3, 4, 10, 10), dtype=bool)
    truth[0, 1, 2:4, 2:4] = True  # stomach on one slice
    truth[1, 2, 5:9, 5:9] = True  # small bowel on one slice
    pred = truth.copy()
    pred[1] = False
    pred[1, 2, 0:2, 0:2] = True  # small bowel predicted elsewhere on the same slice: Dice 0
    # large bowel: empty in both, skipped everywhere
    result = compare(pred, truth)
    assert result.dice_per_organ["stomach"] == 1.0 and result.hausdorff_per_organ["stomach"] == 0.0
    assert result.dice_per_organ["small_bowel"] == 0.0
    # Farthest voxel pair: (2, 8, 8) vs (2, 1, 1) in the unit cube (slices /4, rows and cols /10), over √3.
    assert result.hausdorff_per_organ["small_bowel"] == pytest.approx(np.hypot(0.7, 0.7) / np.sqrt(3))
    assert np.isnan(result.dice_per_organ["large_bowel"])
    empty = compare(np.zeros_like(truth), truth)  # one side empty: Dice 0, HD 1
    assert empty.score == pytest.approx(0.0)


def test_confusion_overlay_by_hand():
    pred = np.zeros((3, 4, 4), dtype=bool)
    truth = np.zeros((3, 4, 4), dtype=bool)
    pred[0, 0, :2] = True
    truth[0, 0, 1:3] = True
    pred[2, 3, 3] = True
    tp, fp, fn = confusion(pred, truth)
    assert np.argwhere(tp).tolist() == [[0, 1]]
    assert np.argwhere(fp).tolist() == [[0, 0], [3, 3]]
    assert np.argwhere(fn).tolist() == [[0, 2]]
    _, fp_stomach_only, _ = confusion(pred, truth, visible=["stomach"])
    assert np.argwhere(fp_stomach_only).tolist() == [[0, 0]]
