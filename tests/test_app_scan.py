"""The Scan tab's handlers, called directly as Gradio would call them."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import rt_series
from model.dicom.export import NOT_DICOM_NOTE
from model.scans import load_scan
from scan_bad_inputs import gunzipped
from scan_fixtures import kaggle_slices, stack, write_nifti, zip_files
from ui import overlays, scan_tab


def _run(*args, **kwargs):
    """Drain the handler's generator; return the status lines and the final outputs."""
    values = list(scan_tab.segment_scan_files(*args, **kwargs))
    return [v[0] for v in values[:-1]], values[-1]


def test_scan_tab_segments_a_kaggle_zip_and_compares_with_truth(tiny_model, shared_data, tmp_path):
    files = kaggle_slices(shared_data, "volume_266x266", count=10)
    upload = zip_files(files, tmp_path / "case5_day2.zip", folder="scans")
    statuses, out = _run([str(upload)], None, None, 0.4, overlays.ORGAN_CHOICES)
    note, slider, overlay, versus, table, plot, mesh, downloads, comparison, state, review = out
    assert statuses[-1].endswith("10/10 slices…")
    assert "case5_day2: 10 slices 266×266" in note and "3 mm" in note
    masks = state.organ_masks
    assert masks.shape == (3, 10, 266, 266)
    # The slider spans the scan and starts on the slice with the most organ area.
    areas = masks.sum(axis=(0, 2, 3))
    assert (slider.minimum, slider.maximum, slider.value) == (1, 10, int(np.argmax(areas)) + 1)
    image, annotations = overlay
    assert image.shape == (266, 266) and [name for _, name in annotations] == overlays.ORGAN_CHOICES
    assert versus is None and comparison == []
    voxel_ml = 3.0 * 1.5 * 1.5 / 1000
    assert [row[1] for row in table] == [round(masks[o].sum() * voxel_ml, 1) for o in range(3)]
    assert isinstance(plot, pd.DataFrame) and len(plot) == 30 and set(plot["organ"]) == set(overlays.ORGAN_CHOICES)
    names = sorted(p.rsplit("/", 1)[-1] for p in downloads)
    assert names == ["case5_day2_labels.nii.gz", "case5_day2_masks.zip", "case5_day2_organs.glb",
                     "case5_day2_review.csv", "case5_day2_submission.csv"]
    assert NOT_DICOM_NOTE in note  # slice files carry no DICOM references
    # The review table lists the review CSV's flags, at the slider's positions.
    with open(next(p for p in downloads if p.endswith("_review.csv")), newline="") as f:
        flags = list(csv.DictReader(f))
    assert [row[0] for row in review] == [int(f["slice_index"]) + 1 for f in flags]
    assert f"{len(flags)} review flag" in note
    labels_path = next(p for p in downloads if p.endswith(".nii.gz"))
    assert nib.load(labels_path).shape == (266, 266, 10)

    # Our own mask PNGs as ground truth: a perfect match, and a TP/FP/FN overlay.
    png_zip = next(p for p in downloads if p.endswith("_masks.zip"))
    _, out = _run([str(upload)], None, [png_zip], 0.5, overlays.ORGAN_CHOICES)
    comparison, versus = out[8], out[3]
    assert comparison[-1][0] == "All organs" and comparison[-1][3] == 1.0
    assert [name for _, name in versus[1]] == ["True positive", "False positive", "False negative"]
    assert not versus[1][1][0].any() and not versus[1][2][0].any()

    # The slider and controls re-render from the state without the model.
    overlay, _ = scan_tab.render_scan(out[9], 3, 1.0, ["Stomach"])
    np.testing.assert_array_equal(overlay[1][0][0], masks[0, 2].astype(np.float32))


def test_scan_tab_reads_nifti(tiny_model, shared_data, tmp_path):
    voxels = stack(kaggle_slices(shared_data, "volume_234x234", count=5))
    write_nifti(voxels, (4.0, 1.5, 1.5), tmp_path / "scan.nii.gz", ("R", "A", "S"))
    _, out = _run([str(tmp_path / "scan.nii.gz")], None, None, 0.5, overlays.ORGAN_CHOICES, True, 3)
    assert "5 slices 234×234" in out[0]
    np.testing.assert_array_equal(out[9].scan.voxels, voxels)
    # No DICOM references: one line says why there is no SEG or RTSTRUCT, and there is none.
    assert out[0].count(NOT_DICOM_NOTE) == 1 and not any(p.endswith(".dcm") for p in out[7])
    # The planning structures are still measured; the label NIfTI keeps the organs' ids only.
    assert [row[0] for row in out[4]][3:] == ["Bowel bag", "Stomach PRV 3mm", "Small bowel PRV 3mm",
                                              "Large bowel PRV 3mm", "Bowel bag PRV 3mm"]
    labels_path = next(p for p in out[7] if p.endswith("_labels.nii.gz"))
    assert set(np.unique(np.asarray(nib.load(labels_path).dataobj))) <= {0, 1, 2, 3}


@pytest.fixture(scope="module")
def mr_series(shared_data, tmp_path_factory):
    """A real 8-slice volume as a complete DICOM MR series, zipped as a user would upload it."""
    root = tmp_path_factory.mktemp("mr")
    voxels = stack(kaggle_slices(shared_data, "volume_266x266")[60:68])
    files = rt_series.write_mr_series(voxels, root / "series")
    return zip_files(files, root / "series.zip"), voxels


def test_scan_tab_offers_dicom_seg_and_rtstruct_for_a_dicom_series(tiny_model, mr_series, caplog):
    import highdicom as hd
    import pydicom

    upload, _ = mr_series
    with caplog.at_level(logging.DEBUG):
        _, out = _run([str(upload)], None, None, 0.5, overlays.ORGAN_CHOICES, True, 5)
    note, table, downloads, state, review = out[0], out[4], out[7], out[9], out[10]
    assert NOT_DICOM_NOTE not in note and "No DICOM" not in note
    seg_path = next(p for p in downloads if p.endswith("series_seg.dcm"))
    rtstruct_path = next(p for p in downloads if p.endswith("series_rtstruct.dcm"))
    names = ["Stomach", "Small bowel", "Large bowel", "Bowel bag", "Stomach PRV 5mm", "Small bowel PRV 5mm",
             "Large bowel PRV 5mm", "Bowel bag PRV 5mm"]
    assert [r.ROIName for r in pydicom.dcmread(rtstruct_path).StructureSetROISequence] == names
    seg = hd.seg.segread(seg_path)
    assert [str(d.SegmentLabel) for d in seg.SegmentSequence] == names
    # Every segment, read back on the source images (in the scan's order), is the app's mask.
    masks = state.organ_masks
    assert masks.any(axis=(1, 2, 3)).all()
    uids = [str(ds.SOPInstanceUID) for ds in load_scan(upload).source.datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3],
                                               ignore_spatial_locations=True)
    np.testing.assert_array_equal(np.moveaxis(pixels > 0, -1, 0), masks)
    # Measurements: the organs, then the structures.
    assert [row[0] for row in table] == names
    assert table[3][1] == pytest.approx(round((masks[1] | masks[2]).sum() * 3.0 * 1.5 * 1.25 / 1000, 1))
    # Identifiers reach these two files and nothing else: not the notes, tables, log or other files.
    identifiers = (rt_series.PATIENT_NAME, rt_series.PATIENT_ID, rt_series.PATIENT_BIRTH_DATE,
                   rt_series.ACCESSION_NUMBER)
    for path in (seg_path, rtstruct_path):
        assert all(tag.encode() in Path(path).read_bytes() for tag in identifiers), path
    shown = note + repr(table) + repr(review) + caplog.text
    assert not any(tag in shown for tag in (*identifiers, "Roe", rt_series.STUDY_ID))
    for path in downloads:
        if not path.endswith(("_seg.dcm", "_rtstruct.dcm")):
            data = gunzipped(Path(path))
            assert not any(tag.encode() in data for tag in identifiers), path


def test_a_click_on_a_review_row_moves_the_slider_and_picks_the_organ_to_correct(tiny_model):
    event = gr.SelectData(None, {"index": [2, 1], "value": "Small bowel", "row_value": [7, "Small bowel", "isolated"]})
    assert scan_tab.jump_to_flag(event) == (7, "Small bowel")
    odd = gr.SelectData(None, {"index": [0, 1], "value": 7, "row_value": [7, "Bowel bag", "isolated"]})
    assert scan_tab.jump_to_flag(odd) == (7, gr.skip())  # not an organ the clicks correct: the picker stays
    assert scan_tab.jump_to_flag() == (gr.skip(), gr.skip())  # called without the event's data (a hand-made request)


def test_a_negative_margin_is_one_line(tiny_model, mr_series):
    with pytest.raises(gr.Error, match="margin must be"):
        _run([str(mr_series[0])], None, None, 0.5, overlays.ORGAN_CHOICES, False, -1)


def test_scan_tab_takes_a_one_slice_scan(tiny_model, shared_data):
    _, out = _run([str(kaggle_slices(shared_data, "volume_234x234", count=1)[0])])
    slider, state = out[1], out[9]
    assert state.organ_masks.shape == (3, 1, 234, 234)
    assert slider.value == 1 and not slider.interactive


@pytest.mark.parametrize(("files", "message"), [
    (None, "No scan"),
    ("text", "not a slice image"),
])
def test_bad_scan_uploads_raise_one_line_errors(tiny_model, tmp_path, files, message):
    if files == "text":
        (tmp_path / "notes.exe").write_bytes(b"MZ\x00")
        files = [str(tmp_path / "notes.exe")]
    with pytest.raises(gr.Error, match=message) as err:
        _run(files)
    assert "\n" not in str(err.value.message)


def test_a_reader_bug_is_one_line_and_logs_no_content(tiny_model, tmp_path, monkeypatch, caplog):
    def broken_reader(*args, **kwargs):
        raise KeyError("Doe^Jane")  # an unforeseen failure, quoting a tag value

    monkeypatch.setattr(scan_tab, "load_scan", broken_reader)
    (tmp_path / "scan.nii").write_bytes(b"x")
    with pytest.raises(gr.Error, match="could not be read as a scan") as err:
        _run([str(tmp_path / "scan.nii")])
    assert "Doe" not in err.value.message and "Doe" not in caplog.text and "KeyError" in caplog.text


def test_ground_truth_that_does_not_fit_is_refused_before_segmenting(tiny_model, shared_data, tmp_path):
    files = kaggle_slices(shared_data, "volume_266x266", count=3)
    (tmp_path / "truth.csv").write_text("id,class,segmentation\ncase1_day1_slice_0001,stomach,1 5\n"
                                        "case2_day1_slice_0001,stomach,1 5\n")
    with pytest.raises(gr.Error, match="holds 2 scans"):
        _run([str(f) for f in files], None, [str(tmp_path / "truth.csv")])
