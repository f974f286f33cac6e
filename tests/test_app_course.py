"""The Course tab's handlers (:mod:`ui.course_tab`), called directly as Gradio would call them, on three DICOM
days of a real volume with a PTV RTSTRUCT and an RTDOSE on day A (:func:`course_cases.write_dicom_course`).

The table is checked against :func:`model.course.course` run directly on the same scans and masks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

import course_cases as K
from model import course as C
from model.course_report import read_target
from model.dicom.rtdose import read_rtdose
from model.scans import load_scan
from scan_fixtures import zip_files
from ui import course_tab

pytestmark = pytest.mark.slow

CONSTRAINTS = "small_bowel:V20Gy<=0.5cc\n\nstomach:Dmax<=38Gy"


@pytest.fixture(scope="module")
def uploads(shared_data, tmp_path_factory):
    """Day A and day B as their DICOM files, the third day as one zip, the target and the dose."""
    root = tmp_path_factory.mktemp("app_course")
    written = K.write_dicom_course(shared_data, root)
    series = written["series"]
    return {"a": [str(p) for p in series[1]], "b": [str(p) for p in series[3]],
            "more": [str(zip_files(series[5], root / "case7_day5.zip"))],
            "target": str(written["target"]), "dose": str(written["dose"]), "series": series}


@pytest.fixture(scope="module")
def ran(tiny_model, uploads):
    return course_tab.course_files(uploads["a"], uploads["b"], uploads["more"], uploads["target"], "PTV",
                                   uploads["dose"], CONSTRAINTS)


def test_the_roi_picker_lists_the_rtstruct_names(uploads):
    assert course_tab.structure_names(uploads["target"]) == ["PTV", "GTV"]
    picker = course_tab.roi_choices(uploads["target"])
    assert picker.value == "PTV" and [c[0] for c in picker.choices] == ["PTV", "GTV"]
    assert course_tab.structure_names(uploads["a"][0]) == []  # an MR image offers no structure


def test_course_table_matches_the_model_run_directly(tiny_model, uploads, ran):
    note, days_rows, picture, downloads, table, plots = ran
    # The same course straight from model.course: the days' scans, the tiny model's masks, the PTV, the dose.
    scans = [load_scan(uploads["series"][d]) for d in (1, 3, 5)]
    segmenter = tiny_model.MODEL.get()
    days = [(label, scan, segmenter.segment_scan(scan).run().organ_masks) for label, scan in zip("ABC", scans)]
    target, _ = read_target(f"{uploads['target']}:PTV", scans[0])
    settings = C.CourseSettings(constraints=tuple(C.parse_constraint(t) for t in CONSTRAINTS.split()))
    expected = C.course("A", target, days, read_rtdose(uploads["dose"]), settings)

    assert days_rows == []
    assert list(table.columns) == ["Day", "Organ", "Volume (ml)", "In target (cc)", "Ring 0–10 mm (cc)",
                                   "Ring 10–20 mm (cc)", "Min distance (mm)", "Dmax (Gy)", "D0.5cc (Gy)",
                                   "D2cc (Gy)", "small_bowel:V20Gy<=0.5cc", "stomach:Dmax<=38Gy"]
    assert [(r["Day"], r["Organ"]) for _, r in table.iterrows()] == [
        (d, o) for d in "ABC" for o in ("Stomach", "Small bowel", "Large bowel")]
    rows = iter(table.to_dict("records"))
    for day in expected.days:
        for organ in day.organs:
            row = next(rows)
            assert row["Volume (ml)"] == round(organ.volume_ml, 2)
            # Registration runs again in the handler: equal to the direct run within a hundredth of a cc or mm.
            assert row["In target (cc)"] == pytest.approx(organ.in_target_cc, abs=0.01)
            assert [row["Ring 0–10 mm (cc)"], row["Ring 10–20 mm (cc)"]] == pytest.approx(organ.ring_cc, abs=0.01)
            if organ.min_distance_mm is None:
                assert row["Min distance (mm)"] == "–"
            else:
                assert row["Min distance (mm)"] == pytest.approx(organ.min_distance_mm, abs=0.01)
            assert row["Dmax (Gy)"] == ("–" if organ.dmax_gy is None else pytest.approx(organ.dmax_gy, abs=0.01))
            for c, _, status, margin in organ.constraints:
                assert row[c.text].startswith(status), (row[c.text], status)
            if organ.organ != "stomach":
                assert row["stomach:Dmax<=38Gy"] == "–"
    assert "Day A is the reference" in note and "plan not adapted" in note
    assert picture.dtype == np.uint8 and picture.shape == (276, 2 * 276, 3)
    assert (picture == course_tab.TARGET_RGB).all(axis=2).any()  # the target's contour is drawn
    names = sorted(Path(p).name for p in downloads)
    assert {"course.csv", "dvh.csv", "course_stomach.png", "course_small_bowel.png", "course_large_bowel.png"} <= set(names)
    assert len([n for n in names if n.endswith("_course_rtstruct.dcm")]) == 3  # every day is a DICOM series
    assert sorted(Path(p).name for p in plots) == ["course_large_bowel.png", "course_small_bowel.png", "course_stomach.png"]
    with open(next(p for p in downloads if p.endswith("course.csv")), newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [(r["day"], r["organ"]) for r in csv_rows] == [(d, o) for d in "ABC"
                                                          for o in ("stomach", "small_bowel", "large_bowel")]
    assert {r["case"] for r in csv_rows} == {"case7"}  # from the caseN_dayM folders the files came from


def test_a_target_without_the_named_roi_lists_the_names(tiny_model, uploads):
    with pytest.raises(gr.Error, match="no ROI named 'CTV'; its ROIs: PTV, GTV"):
        course_tab.course_files(uploads["a"], uploads["b"], [], uploads["target"], "CTV", None, "")
    with pytest.raises(gr.Error, match=r"Name the target's structure in \S+ \(its ROI name"):
        course_tab.course_files(uploads["a"], uploads["b"], [], uploads["target"], None, None, "")
    # An RTDOSE given as the target is named as such, not asked for a structure it does not have.
    dose = Path(uploads["dose"]).name
    for roi in (None, "PTV"):
        with pytest.raises(gr.Error, match=f"{dose} is a DICOM file but neither an RTSTRUCT nor a DICOM SEG"):
            course_tab.course_files(uploads["a"], uploads["b"], [], uploads["dose"], roi, None, "")


def test_bad_constraints_and_a_missing_dose_are_one_line(tiny_model, uploads):
    with pytest.raises(gr.Error, match="does not parse"):
        course_tab.course_files(uploads["a"], uploads["b"], [], uploads["target"], "PTV", uploads["dose"],
                                "bowel:V20<=1")
    with pytest.raises(gr.Error, match="constraints need a dose: upload an RTDOSE"):
        course_tab.course_files(uploads["a"], uploads["b"], [], uploads["target"], "PTV", None, CONSTRAINTS)


def test_further_days_pair_each_file_with_the_result_named_after_it():
    assert course_tab.further_days(["/u/1/x.zip", "/u/2/y.nii.gz", "/u/3/y_masks.zip", "/u/4/x_labels.nii.gz"]) == [
        ["/u/1/x.zip", "/u/4/x_labels.nii.gz"], ["/u/2/y.nii.gz", "/u/3/y_masks.zip"]]
    assert course_tab.further_days(["/u/1/scans.zip", "/u/2/scans.zip"]) == [["/u/1/scans.zip"], ["/u/2/scans.zip"]]
    with pytest.raises(gr.Error, match="z_masks.zip is named after no uploaded day"):
        course_tab.further_days(["/u/1/x.zip", "/u/2/z_masks.zip"])


def test_without_a_target_it_compares_day_a_with_day_b(tiny_model, uploads):
    from ui import days_tab

    note, rows, picture, downloads, table, plots = course_tab.course_files(
        uploads["a"], uploads["b"], uploads["more"], None, None, None, "")
    expected = days_tab.compare_days_files(uploads["a"], uploads["b"])
    assert note == expected[0] + ("\n\nFurther days, a dose and constraints are used only in a course: "
                                  "upload a target on day A.")
    assert rows == expected[1] and np.array_equal(picture, expected[2])
    assert [Path(p).name for p in downloads] == [Path(p).name for p in expected[3]]
    assert table.empty and list(table.columns)[:3] == ["Day", "Organ", "Volume (ml)"] and plots == []
    # Two days alone (the API's optional parameters left out) compare them too.
    note, rows, *_ = course_tab.course_files(uploads["a"], uploads["b"])
    assert note == expected[0] and rows == expected[1]
