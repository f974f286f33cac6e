"""``python -m model.predict``: one summary line and the UI's files per scan."""

from __future__ import annotations

import nibabel as nib

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
        "case3_day9_labels.nii.gz", "case3_day9_masks.zip", "case3_day9_organs.glb", "case3_day9_submission.csv",
        "case3_day9_summary.json", "series_labels.nii.gz", "series_masks.zip", "series_organs.glb",
        "series_summary.json", "submission.csv", "volumes.csv"]
    # The cohort's submission is the one Kaggle-named scan's.
    assert (out / "submission.csv").read_bytes() == (out / "case3_day9_submission.csv").read_bytes()
    assert nib.load(out / "series_labels.nii.gz").shape == (234, 234, 4)
