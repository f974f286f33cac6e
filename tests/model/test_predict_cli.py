"""``python -m model.predict``: one summary line and the UI's files per scan."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pydicom
import pytest

import rt_series

from model.dicom.export import NOT_DICOM_NOTE
from model.predict import main
from scan_fixtures import kaggle_slices, stack, write_dicom_series, zip_files


def test_cli_writes_the_ui_files_for_each_scan(shared_data, softmax_ckpt, tmp_path, capsys):
    files = kaggle_slices(shared_data, "volume_234x234", count=5)
    upload = zip_files(files, tmp_path / "case3_day9.zip", folder="case3_day9/scans")
    write_dicom_series(stack(files[:4]), tmp_path / "series")
    (tmp_path / "empty.zip").write_bytes(b"")
    out = tmp_path / "out"
    code = main([str(upload), str(tmp_path / "series"), str(tmp_path / "empty.zip"), "--out", str(out),
                 "--model", str(softmax_ckpt)])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and "empty.zip is not a readable zip" in stderr  # the bad input fails alone
    lines = stdout.splitlines()
    assert lines[0].startswith("case3_day9: 5 slices 234×234, stomach ") and lines[0].endswith(f"ml -> {out}")
    assert lines[1].startswith("series: 4 slices 234×234")
    assert sorted(p.name for p in out.iterdir()) == [
        "case3_day9_labels.nii.gz", "case3_day9_masks.zip", "case3_day9_organs.glb", "case3_day9_review.csv",
        "case3_day9_submission.csv", "case3_day9_summary.json", "series_labels.nii.gz", "series_masks.zip",
        "series_organs.glb", "series_review.csv", "series_summary.json", "submission.csv", "volumes.csv"]
    # That DICOM series has no Frame of Reference: no SEG or RTSTRUCT, said once, and the scan still done.
    assert stderr.count("note: No DICOM SEG or RTSTRUCT: ") == 1 and "frame of reference" in stderr
    assert f"note: {NOT_DICOM_NOTE}" in stderr
    # The cohort's submission is the one Kaggle-named scan's.
    assert (out / "submission.csv").read_bytes() == (out / "case3_day9_submission.csv").read_bytes()
    assert nib.load(out / "series_labels.nii.gz").shape == (234, 234, 4)


def test_cli_writes_dicom_seg_rtstruct_and_planning_structures_for_a_dicom_series(shared_data, softmax_ckpt,
                                                                                   tmp_path, capsys):
    from model.scans import load_scan

    voxels = stack(kaggle_slices(shared_data, "volume_234x234", count=6))
    rt_series.write_mr_series(voxels, tmp_path / "mr")
    out = tmp_path / "out"
    assert main([str(tmp_path / "mr"), "--out", str(out), "--model", str(softmax_ckpt),
                 "--bowel-bag", "--margin-mm", "3"]) == 0
    stdout, stderr = capsys.readouterr()
    assert "No DICOM SEG" not in stderr and NOT_DICOM_NOTE not in stderr
    names = ["Stomach", "Small bowel", "Large bowel", "Bowel bag", "Stomach PRV 3mm", "Small bowel PRV 3mm",
             "Large bowel PRV 3mm", "Bowel bag PRV 3mm"]
    rtstruct = pydicom.dcmread(out / "mr_rtstruct.dcm")
    assert [r.ROIName for r in rtstruct.StructureSetROISequence] == names
    seg = pydicom.dcmread(out / "mr_seg.dcm")
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == names
    assert str(seg.PatientID) == rt_series.PATIENT_ID  # the identifiers go into these two files ...
    for text in (stdout, stderr, (out / "volumes.csv").read_text(), (out / "mr_review.csv").read_text(),
                 (out / "mr_summary.json").read_text()):
        assert rt_series.PATIENT_ID not in text and "Roe" not in text  # ... and nowhere else
    # volumes.csv: the structures' volumes, voxel count × voxel volume of the same masks.
    row = next(csv.DictReader(open(out / "volumes.csv", newline="")))
    scan = load_scan(tmp_path / "mr")
    label_ids = np.asarray(nib.load(out / "mr_labels.nii.gz").dataobj)
    assert set(np.unique(label_ids)) <= {0, 1, 2, 3}  # the label volume keeps the organs only
    voxel_ml = float(np.prod(scan.spacing_mm)) / 1000
    bag = np.isin(label_ids, (2, 3)).sum()  # softmax: organs never overlap, so the bag is ids 2 and 3
    assert float(row["bowel_bag_ml"]) == pytest.approx(bag * voxel_ml, abs=1e-3)
    assert float(row["stomach_prv_3mm_ml"]) > float(row["stomach_ml"]) > 0
    # The review CSV: its header, and as many rows as volumes.csv counts.
    with open(out / "mr_review.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["slice_number", "organ", "score", "reason", "slice_index"]
    assert len(rows) - 1 == int(row["review_flags"])


def test_cli_refuses_a_negative_margin(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--out", str(tmp_path / "out"), "--margin-mm", "-2"])
    assert exit_.value.code == 2 and "--margin-mm must be" in capsys.readouterr().err


def test_cli_refuses_a_missing_truth_file_before_segmenting(capsys, tmp_path):
    """It segmented the whole cohort, then said the --truth file did not exist."""
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--out", str(tmp_path / "out"), "--truth", str(tmp_path / "train.csv")])
    assert exit_.value.code == 2 and "--truth" in capsys.readouterr().err and not (tmp_path / "out").exists()
