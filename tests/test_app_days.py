"""The Compare days tab's handler, called directly as Gradio would call it."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np
import pytest

from model.days import CHANGE_COLUMNS
from model.exports import save_mask_png_zip
from model.rle import RleCsv
from model.scans import load_scan
from scan_fixtures import kaggle_slices
from ui import days_tab
from ui.tables import DAYS_HEADERS

CASE_DAY = "case47_day29"  # the shared volume_360x310 (shared/data/README.md)


def _masks_zip(shared_data: Path, tmp_path: Path) -> Path:
    """Day A's earlier result: its real labels as the Scan tab's _masks.zip download."""
    scan = load_scan(shared_data / "scans" / "volume_360x310")
    volume = RleCsv(shared_data / "kaggle" / "train.csv.gz", [CASE_DAY]).volume(CASE_DAY, scan.shape[1:])
    masks = volume.masks[:, [volume.slice_numbers.index(n) for n in scan.slice_numbers]]
    return save_mask_png_zip(masks, scan, tmp_path / f"{scan.name}_masks.zip")


@pytest.mark.slow
def test_compare_days_tab_with_an_earlier_result_and_the_model(tiny_model, shared_data, tmp_path):
    day_a = [str(f) for f in kaggle_slices(shared_data, "volume_360x310")] + [str(_masks_zip(shared_data, tmp_path))]
    day_b = [str(f) for f in kaggle_slices(shared_data, "volume_266x266")]  # segmented by the tiny model
    note, rows, picture, downloads = days_tab.compare_days_files(day_a, day_b)
    assert "Rigid registration: B moved" in note and "volume_360x310" in note
    # Its slice by position in A, then (Kaggle files) the file's own number, as the Scan tab names slices.
    named = re.search(r"Slice (\d+) \(file (\d+)\) of A", note)
    assert named, note
    numbers = load_scan(shared_data / "scans" / "volume_360x310").slice_numbers
    assert numbers[int(named[1]) - 1] == int(named[2]) != int(named[1])
    assert [r[0] for r in rows] == ["Stomach", "Small bowel", "Large bowel"] and len(rows[0]) == len(DAYS_HEADERS)
    assert [r[1] for r in rows] == [pytest.approx(v, abs=0.1) for v in (202.0, 483.5, 870.5)]  # the real labels' ml
    assert picture.shape == (310, 3 * 360, 3) and picture.dtype == np.uint8
    names = [Path(p).name for p in downloads]
    assert names == ["volume_360x310_vs_volume_266x266_changes.csv", "volume_266x266_on_volume_360x310_labels.nii.gz"]
    with open(downloads[0], newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CHANGE_COLUMNS and len(list(reader)) == 3
    labels_b = nib.load(downloads[1])
    assert labels_b.shape == (360, 310, 115)  # B's labels on A's grid
    assert set(np.unique(np.asarray(labels_b.dataobj)).tolist()) <= {0, 1, 2, 3}


def test_compare_days_tab_refuses_a_2d_slice_before_running_the_model(tiny_model, shared_data):
    day_a = [str(f) for f in kaggle_slices(shared_data, "volume_360x310", count=10)]
    day_b = [str(f) for f in kaggle_slices(shared_data, "volume_266x266", count=1)]
    with pytest.raises(gr.Error, match="Day B .* is a single 2D slice"):
        days_tab.compare_days_files(day_a, day_b)
    with pytest.raises(gr.Error, match="Day A: upload its scan"):
        days_tab.compare_days_files([], day_b)
