"""The course report (:mod:`model.course`, :mod:`model.course_report`): analytic phantoms, a known motion,
plastimatch's DVH of a real scan, real labels over a real course, the CLI and its refusals.

The cases live in ``tests/course_cases.py``; ``docs/course_validation.py`` runs the same ones for docs/course.md.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pydicom
import pytest

import course_cases as K
import rt_series
from locations import read_csv_table, require_tool
from model import course as C
from model.course_report import COURSE_COLUMNS
from model.measure import organ_volumes_ml
from model.dicom.rtdose import read_rtdose
from model.dicom.truth import named_structure
from model.planning import Structure
from model.predict import main
from model.scans import Scan, ScanError, load_scan
from model.scans.base import LPS_TO_RAS

#: The phantom on the real scans' 1.5 × 1.5 × 3 mm voxels.
REAL_SPACING = K.Phantom()
#: The dose phantom on finer voxels (1.25 × 1.25 × 1.5 mm): at 3 mm slices the 3 cc cap of V30Gy is
#: a handful of slices and its voxelisation alone moves it 4 % (docs/course_validation.json has both).
FINE = K.Phantom(shape=(110, 150, 150), spacing_mm=(1.5, 1.25, 1.25))


# --------------------------------------------------------------------------- constraints


@pytest.mark.parametrize("text, organ, metric, at, limit, unit", [
    ("small_bowel:V33Gy<=0.5cc", "small_bowel", "vgy", 33.0, 0.5, "cc"),
    ("stomach:D0.5cc<=33Gy", "stomach", "dcc", 0.5, 33.0, "Gy"),
    ("large_bowel:Dmax<=38Gy", "large_bowel", "dmax", None, 38.0, "Gy"),
    (" Small bowel : v36gy < 1cc ", "small_bowel", "vgy", 36.0, 1.0, "cc"),
])
def test_constraints_parse(text, organ, metric, at, limit, unit):
    c = C.parse_constraint(text)
    assert (c.organ, c.metric, c.at, c.limit, c.unit) == (organ, metric, at, limit, unit)
    assert c.text.split(":")[0] == organ  # named by the organ's key: "Small bowel" lost its space before
    assert c.check(limit - 0.25) == ("pass", 0.25)
    assert c.check(limit + 1.0) == ("fail", -1.0)
    assert c.check(limit) == (("fail" if c.strict else "pass"), 0.0)


def test_a_constraint_entered_twice_counts_once():
    from model.course_report import course_settings

    texts = ["Large bowel:Dmax<45Gy", "large_bowel: Dmax < 45Gy", "stomach:Dmax<=38Gy"]
    settings = course_settings(texts, with_dose=True)
    assert [c.text for c in settings.constraints] == ["large_bowel:Dmax<45Gy", "stomach:Dmax<=38Gy"]


@pytest.mark.parametrize("text, says", [
    ("duodenum:V33Gy<=0.5cc", "unknown organ"),
    ("stomach:V33Gy<=33Gy", "limit is in cc"),
    ("stomach:Dmax<=3cc", "limit is in Gy"),
    ("stomach:D0cc<=3Gy", "positive"),
    ("stomach Dmax 38", "does not parse"),
    ("", "does not parse"),
])
def test_a_bad_constraint_is_one_clear_line(text, says):
    with pytest.raises(ValueError) as err:
        C.parse_constraint(text)
    assert says in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- phantoms


@pytest.mark.parametrize("gap_mm", [12.0, -6.0])
def test_sphere_and_cylinder_distance_and_rings_match_the_analytic_answers(gap_mm):
    phantom = replace(REAL_SPACING, gap_mm=gap_mm)
    found = K.phantom_errors(phantom)
    voxel = max(phantom.spacing_mm[1:])  # the gap runs along the columns
    assert abs(found["min_distance_error_mm"]) <= voxel
    assert np.sign(found["min_distance_mm"]) == np.sign(gap_mm)
    assert all(abs(e) <= 0.03 for e in found["ring_relative_error"]), found["ring_relative_error"]
    # The organ's share of each ring: the cylinder cut by a shell, a few cc voxelised on 3 mm slices.
    for ours, analytic in zip(found["organ_in_ring_cc"], found["organ_in_ring_analytic_cc"]):
        assert ours == pytest.approx(analytic, rel=0.06, abs=0.1)
    assert found["in_target_cc"] == pytest.approx(found["in_target_analytic_cc"], rel=0.03, abs=0.01)


def test_the_plain_voxel_distance_map_would_miss_the_ring_bound():
    """Why :func:`model.course.signed_distance_mm` measures to a smooth surface: scipy's distance to the
    nearest target voxel centre (what a ring by dilation counts) misses the 3 % bound on the real spacing."""
    from scipy.ndimage import distance_transform_edt

    phantom = REAL_SPACING
    target = phantom.target()
    naive = distance_transform_edt(~target, sampling=phantom.spacing_mm)
    voxel_cc = float(np.prod(phantom.spacing_mm)) / 1000
    naive_ring = np.count_nonzero((naive > 0) & (naive <= 10)) * voxel_cc
    assert abs(naive_ring / phantom.shell_cc(0, 10) - 1) > 0.05


def test_dose_numbers_match_the_analytic_dvh():
    found = K.dose_errors(FINE)
    assert all(abs(e) <= 0.02 for e in found["relative_error"].values()), found["relative_error"]


def test_the_dvh_curve_matches_the_analytic_one():
    phantom = FINE
    organ = C.measure_day(phantom.target(), phantom.organ(), phantom.spacing_mm, phantom.dose(),
                          C.CourseSettings())[0][0]
    doses, volumes = organ.dvh
    assert doses[0] == 0 and volumes[0] == pytest.approx(organ.volume_ml)
    assert np.all(np.diff(volumes) <= 0)
    for gy in (15.0, 20.0, 25.0, 30.0):
        i = int(np.argmin(np.abs(doses - gy)))
        assert volumes[i] == pytest.approx(phantom.v_gy_cc(doses[i]), rel=0.02)


def test_dose_numbers_by_hand():
    """Six 1 cc voxels of 1..6 Gy: Dmax 6, D2cc 5 (the 2 hottest cc), D0.5cc 6, V3Gy 4 cc; no D10cc."""
    settings = C.CourseSettings(v_gy=(3.0,), dose_volumes_cc=(0.5, 2.0, 10.0))
    numbers = C.dose_numbers(np.arange(1.0, 7.0), 1.0, settings)
    assert numbers["dmax"] == 6.0 and numbers["dcc"] == {0.5: 6.0, 2.0: 5.0, 10.0: None}
    assert numbers["vgy"] == {3.0: 4.0}


def test_day_b_follows_a_known_motion():
    found = K.motion_errors(REAL_SPACING)
    assert found["registration_translation_error_mm"] < 1.0
    voxel = max(REAL_SPACING.spacing_mm[1:])
    for ours, expected in zip(found["min_distance_mm"], found["expected_min_distance_mm"]):
        assert ours == pytest.approx(expected, abs=voxel)
    for ours_day, expected_day in zip(found["organ_in_ring_cc"], found["expected_organ_in_ring_cc"]):
        for ours, expected in zip(ours_day, expected_day):
            assert ours == pytest.approx(expected, rel=0.06, abs=0.25)
    assert found["target_cc"][1] == pytest.approx(found["target_cc"][0], rel=0.01)  # a rigid map keeps its volume


def test_the_target_maps_the_right_way():
    """Without registration (identity) day B's organ sits 6 mm nearer but the target does not follow the
    anatomy: the gap is then not 6 mm. Guards the direction of the mapping, not just its size."""
    days, target, phantom_b = K.moved_days(REAL_SPACING)
    from model.registration import registration_from_matrix

    identity = {label: registration_from_matrix(np.eye(4), days[0][1]) for label, _, _ in days}
    wrong = C.course("day1", target, days, registrations=identity).days[1].organs[0].min_distance_mm
    assert abs(wrong - phantom_b.gap_mm) > 2.0


# --------------------------------------------------------------------------- RTDOSE and plastimatch


def test_rtdose_geometry_on_another_grid(tmp_path):
    """A dose linear in patient position, on a coarser, shifted grid (absolute frame offsets) is sampled on
    the scan's voxels exactly where the grid covers them: the reader's geometry and the resampling agree."""
    texture = np.arange(20 * 40 * 48, dtype=np.uint16).reshape(20, 40, 48) % 97
    scan_files = rt_series.write_mr_series(texture, tmp_path / "mr", pixel_spacing=(1.5, 1.25))
    scan = load_scan(tmp_path / "mr")
    like = pydicom.dcmread(scan_files[0], stop_before_pixels=True)
    origin = np.array([-185.0, -163.0, -66.0])
    spacing = (2.5, 3.0, 4.0)  # row, col, frame mm
    f, r, c = np.indices((22, 30, 20)).astype(float)
    lps = origin[:, None, None, None] + np.array([c * spacing[1], r * spacing[0], f * spacing[2]])

    def dose_at(points_lps):
        return 20.0 + 0.05 * points_lps[0] - 0.03 * points_lps[1] + 0.04 * points_lps[2]

    path = rt_series.write_rtdose(dose_at(lps), tmp_path / "dose.dcm", like, origin=tuple(origin),
                                  pixel_spacing=spacing[:2], frame_mm=spacing[2], absolute_offsets=True)
    dose = read_rtdose(path)
    gy, covered = C.dose_on(scan, dose)
    assert covered.mean() > 0.5
    s, rr, cc = np.nonzero(covered)
    points = np.stack([scan.source.to_patient(k, np.array([a], float), np.array([b], float))[0]
                       for k, a, b in zip(s, rr, cc)]).T
    # Within the grid's outer voxel centres trilinear interpolation of a linear dose is exact; the
    # half voxel beyond them (still "covered") holds the edge value.
    index = np.linalg.solve(dose.affine, np.vstack([LPS_TO_RAS[:3, :3] @ points, np.ones(points.shape[1])]))[:3]
    inner = np.all((index > -1e-6) & (index < np.array(dose.gy.shape[::-1])[:, None] - 1 + 1e-6), axis=0)
    assert inner.mean() > 0.5
    assert np.abs(gy[covered][inner] - dose_at(points)[inner]).max() < 0.01


def test_our_dvh_agrees_with_plastimatch_on_a_real_scan(shared_data, tmp_path):
    require_tool("plastimatch")
    found = K.plastimatch_agreement(shared_data / "scans" / "volume_276x276", "case146_day25",
                                    shared_data / "kaggle" / "train.csv.gz", tmp_path / "work")
    assert found["dose_covers_scan"] == 1.0
    for organ, (ours, theirs) in found["voxels"].items():
        assert ours == theirs, organ  # the same structure, rasterised by each
    assert all(d <= 1.0 for d in found["max_difference_pct"].values()), found["max_difference_pct"]


# --------------------------------------------------------------------------- real labels


def test_real_labels_over_a_real_course(shared_data):
    result, volumes, _ = K.real_label_course(shared_data / "kaggle")
    assert len(result.days) >= 3
    for day in result.days:
        assert [o.volume_ml for o in day.organs] == pytest.approx(volumes[day.label])
        for o in day.organs:
            assert o.in_target_cc + sum(o.ring_cc) <= o.volume_ml + 1e-9
            if o.in_target_cc > 0:
                assert o.min_distance_mm < 0
    # The target does not move (no images: identity), so the table changes only as the organs do.
    seen = {tuple(round(o.in_target_cc + o.ring_cc[0], 3) for o in d.organs) for d in result.days}
    assert len(seen) > 1


# --------------------------------------------------------------------------- the command line


SHIFTS_VOX = K.DICOM_SHIFTS_VOX  # day → (slice, row, col) roll of the anatomy


@pytest.fixture(scope="module")
def dicom_course(shared_data, softmax_ckpt, tmp_path_factory):
    """Three DICOM days of one patient (a real volume rolled by :data:`SHIFTS_VOX`), a PTV sphere on day 1,
    a dose on day 1's grid (:func:`course_cases.write_dicom_course`), two constraints, run through
    ``python -m model.predict --course``."""
    root = tmp_path_factory.mktemp("course")
    written = K.write_dicom_course(shared_data, root)
    series, ptv, reference, target_file, dose = (written[k] for k in ("series", "ptv", "reference", "target", "dose"))
    out = root / "out"
    args = [str(root / "case7"), "--out", str(out), "--model", str(softmax_ckpt), "--course",
            "--target", f"{target_file}:PTV", "--dose", str(dose),
            "--constraint", "small_bowel:V20Gy<=0.5cc", "--constraint", "stomach:Dmax<=38Gy"]
    code = main(args)
    return {"root": root, "out": out, "code": code, "ptv": ptv, "reference": reference, "target": target_file,
            "dose": dose, "series": series, "args": args}


@pytest.mark.slow
def test_course_cli_writes_the_table_dvh_plots_and_rtstructs(dicom_course):
    out = dicom_course["out"]
    assert dicom_course["code"] == 0
    columns, rows = read_csv_table(out / "course.csv")
    required = ["case", "day", "organ", "volume_ml", "in_target_cc", "ring_0_10mm_cc", "ring_10_20mm_cc",
                "min_distance_mm", "dmax_gy", "d0_5cc_gy", "d2cc_gy"]
    assert set(required) <= set(columns) and columns[:len(COURSE_COLUMNS)] == COURSE_COLUMNS
    assert "small_bowel:V20Gy<=0.5cc" in columns and "stomach:Dmax<=38Gy margin" in columns
    assert [(r["day"], r["organ"]) for r in rows] == [(f"day{d}", o) for d in (1, 3, 5)
                                                      for o in ("stomach", "small_bowel", "large_bowel")]
    for row in rows:
        assert row["stomach:Dmax<=38Gy"] in (("pass", "fail", "n/a") if row["organ"] == "stomach" else ("",))
    _, dvh = read_csv_table(out / "dvh.csv")
    assert {r["day"] for r in dvh} == {"day1", "day3", "day5"}
    for organ in ("stomach", "small_bowel", "large_bowel"):
        assert (out / f"course_{organ}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".course-*"))  # the scratch folder is gone


@pytest.mark.slow
def test_mapped_target_follows_each_day(dicom_course):
    """Day 1's PTV_mapped is the PTV; days 3 and 5 carry it by the known roll (within a voxel)."""
    out = dicom_course["out"]
    for day, shift in SHIFTS_VOX.items():
        scan = load_scan(dicom_course["series"][day][0].parent)
        rtstruct = out / f"case7_day{day}_course_rtstruct.dcm"
        mapped, _ = named_structure(rtstruct, "PTV_mapped", scan)
        expected = np.roll(dicom_course["ptv"], shift, axis=(0, 1, 2))
        if day == 1:
            assert np.array_equal(mapped, dicom_course["ptv"])
        found = np.mean(np.nonzero(mapped), axis=1) - np.mean(np.nonzero(expected), axis=1)
        assert np.all(np.abs(found) <= 1.0), (day, found)
        ring, _ = named_structure(rtstruct, "PTV_ring_0_10mm", scan)
        assert not (ring & mapped).any() and ring.sum() > mapped.sum()
        named_structure(rtstruct, "PTV_ring_10_20mm", scan)


@pytest.mark.slow
def test_dciodvfy_accepts_the_mapped_rtstruct(dicom_course):
    tool = require_tool("dciodvfy")
    path = dicom_course["out"] / "case7_day3_course_rtstruct.dcm"
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    assert "RTStructureSet" in report
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], errors[:5]


@pytest.mark.slow
def test_course_again_reuses_the_segmented_days(dicom_course, capsys):
    """A second run with a model that does not exist: every day is finished, so nothing needs the model."""
    args = list(dicom_course["args"])
    args[args.index("--model") + 1] = str(dicom_course["root"] / "no-such-model")
    assert main(args) == 0
    wrote = [line for line in capsys.readouterr().err.splitlines() if line.startswith("course: wrote")]
    assert len(wrote) == 1 and "course.csv" in wrote[0] and "case7_day5_course_rtstruct.dcm" in wrote[0]


def refused(dicom_course, capsys, tmp_path, replace_args: dict, says: str):
    args = list(dicom_course["args"])
    for key, value in replace_args.items():
        if key in args:
            i = args.index(key)
            args[i + 1:i + 2] = [value] if value is not None else []
            if value is None:
                args.pop(i)
        else:
            args += [key, value]
    out = tmp_path / "refused"
    args[args.index("--out") + 1] = str(out)
    args[args.index("--model") + 1] = str(tmp_path / "no-such-model")  # refused before any model is needed
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and says in err[0], err
    assert not (out / "course.csv").exists()
    return err[0]


@pytest.mark.slow
def test_refuses_a_missing_roi_and_lists_the_names(dicom_course, capsys, tmp_path):
    line = refused(dicom_course, capsys, tmp_path, {"--target": f"{dicom_course['target']}:CTV"}, "no ROI named 'CTV'")
    assert "PTV" in line and "GTV" in line


@pytest.mark.slow
def test_refuses_a_bad_constraint(dicom_course, capsys, tmp_path):
    refused(dicom_course, capsys, tmp_path, {"--constraint": "bowel:V20<=1"}, "does not parse")


@pytest.mark.slow
def test_refuses_a_dose_that_misses_the_scan(dicom_course, capsys, tmp_path):
    like = pydicom.dcmread(dicom_course["series"][1][0], stop_before_pixels=True)
    far = rt_series.write_rtdose(np.ones((4, 5, 6)), tmp_path / "far.dcm", like, origin=(900.0, 900.0, 900.0))
    refused(dicom_course, capsys, tmp_path, {"--dose": str(far)}, "does not overlap")


@pytest.mark.slow
def test_refuses_a_dose_of_another_patient(dicom_course, capsys, tmp_path):
    like = pydicom.dcmread(dicom_course["series"][1][0], stop_before_pixels=True)
    other = rt_series.write_rtdose(np.ones((4, 5, 6)), tmp_path / "other.dcm", like, patient_id="SOMEONE-ELSE")
    refused(dicom_course, capsys, tmp_path, {"--dose": str(other)}, "another patient")


@pytest.mark.slow
def test_refuses_a_target_on_another_frame_of_reference(dicom_course, capsys, tmp_path):
    reference = dicom_course["reference"]
    ds = pydicom.dcmread(dicom_course["target"])
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = pydicom.uid.generate_uid()  # one of three places
    path = tmp_path / "other_frame.dcm"
    ds.save_as(path)
    assert reference.source.frame_of_reference_uid == ds.FrameOfReferenceUID
    refused(dicom_course, capsys, tmp_path, {"--target": f"{path}:PTV"}, "another frame of reference")


@pytest.mark.slow
def test_refuses_a_course_of_one_day(dicom_course, capsys, tmp_path):
    args = list(dicom_course["args"])
    args[0] = str(dicom_course["root"] / "case7" / "case7_day1")
    args[args.index("--out") + 1] = str(tmp_path / "one")
    args[args.index("--model") + 1] = str(tmp_path / "no-such-model")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two or more days" in err[0]
    assert not (tmp_path / "one" / "course.csv").exists()


def test_course_function_refuses_one_day_and_an_empty_target():
    scan = Scan(np.zeros((10, 8, 8), np.uint8), (3.0, 1.5, 1.5), np.eye(4), tuple(range(10)), "a", "nifti")
    masks = np.zeros((3, 10, 8, 8), bool)
    with pytest.raises(ScanError, match="two or more days"):
        C.course("a", np.ones((10, 8, 8), bool), [("a", scan, masks)])
    with pytest.raises(ScanError, match="empty"):
        C.course("a", np.zeros((10, 8, 8), bool), [("a", scan, masks), ("b", scan, masks)])


def test_volumes_are_the_days_module_volumes():
    phantom = REAL_SPACING
    organs, _ = C.measure_day(phantom.target(), phantom.organ(), phantom.spacing_mm, None, C.CourseSettings())
    assert [o.volume_ml for o in organs] == pytest.approx(organ_volumes_ml(phantom.organ(), phantom.spacing_mm))


def test_a_label_nifti_target_and_a_box(tmp_path):
    from scan_fixtures import write_nifti

    from model.course_report import read_target
    from model.scans.nifti import read_nifti

    labelled = np.zeros((10, 40, 40), np.uint8)
    labelled[4:6, 3:5, 3:5] = 2
    labelled[0, 0, 0] = 1
    path = tmp_path / "target.nii.gz"
    write_nifti(labelled, (3.0, 1.5, 1.5), path)
    scan = read_nifti(path)  # the reference scan's grid
    assert read_target(str(path), scan)[0].sum() == 9
    assert read_target(f"{path}:2", scan)[0].sum() == 8
    shifted = scan.affine.copy()
    shifted[:3, 3] += 5.0
    moved = Scan(scan.voxels, scan.spacing_mm, shifted, scan.slice_numbers, "moved", "nifti")
    with pytest.raises(ScanError, match="not on the reference scan's grid"):
        read_target(str(path), moved)
    # Messages name the file, never its folder (on the server: Gradio's cache) nor a command-line flag alone.
    with pytest.raises(ValueError, match=r"^target\.nii\.gz is a label NIfTI: its structures are label ids \(a number "
                                         r"such as 2\), not 'PTV'\.$"):
        read_target(f"{path}:PTV", scan)
    empty = tmp_path / "empty.nii.gz"  # an all-zero target is named as such, not as a blank scan
    write_nifti(np.zeros_like(labelled), (3.0, 1.5, 1.5), empty)
    with pytest.raises(ScanError, match=r"^empty\.nii\.gz has no voxel set\.$"):
        read_target(str(empty), scan)
    assert read_target("box:4:6,3:5,3:6", scan)[0].sum() == 12
    with pytest.raises(ValueError, match="box target"):
        read_target("box:4:6,3:5", scan)


@pytest.mark.slow
def test_the_dvh_csv_holds_each_organ_found_with_a_dose(dicom_course):
    _, rows = read_csv_table(dicom_course["out"] / "dvh.csv")
    _, course_rows = read_csv_table(dicom_course["out"] / "course.csv")
    found = [(r["day"], r["organ"]) for r in course_rows if float(r["volume_ml"]) > 0]
    assert found, "the model found no organ on any day"
    for day, organ in found:
        curve = [r for r in rows if (r["day"], r["organ"]) == (day, organ)]
        assert float(curve[0]["dose_gy"]) == 0.0 and float(curve[0]["volume_pct"]) == pytest.approx(100.0, abs=0.01)
        volumes = [float(r["volume_cc"]) for r in curve]
        assert volumes == sorted(volumes, reverse=True)


def test_a_seg_segment_by_name(tmp_path):
    from model.dicom.seg import write_seg

    texture = (np.arange(20 * 40 * 48, dtype=np.uint16).reshape(20, 40, 48) % 97) + 1
    rt_series.write_mr_series(texture, tmp_path / "mr", pixel_spacing=(1.5, 1.25))
    scan = load_scan(tmp_path / "mr")
    ptv = np.zeros(scan.shape, bool)
    ptv[5:12, 10:30, 12:40] = True
    stomach = np.zeros(scan.shape, bool)
    stomach[2:6, 2:9, 2:9] = True
    path = write_seg([Structure("stomach", "Stomach", stomach, "#007fff", "organ", "stomach"),
                      Structure("bowel_bag", "PTV", ptv, "#ff00ff", "bowel_bag")], scan.source, tmp_path / "seg.dcm")
    mask, header = named_structure(path, "ptv", scan)
    assert np.array_equal(mask, ptv) and str(header.PatientID) == rt_series.PATIENT_ID
    with pytest.raises(ScanError, match="no segment named 'CTV'; its segments: Stomach, PTV"):
        named_structure(path, "CTV", scan)


def test_constraints_pass_and_fail_with_their_margins_and_a_failing_day_comes_first():
    phantom = REAL_SPACING
    texts = ("stomach:D1cc<=30Gy", "stomach:V20Gy<=30cc", "stomach:Dmax<=33Gy", "small_bowel:Dmax<=1Gy")
    settings = C.CourseSettings(constraints=tuple(C.parse_constraint(t) for t in texts))
    organs = C.measure_day(phantom.target(), phantom.organ(), phantom.spacing_mm, phantom.dose(), settings)[0]
    found = {c.text: (value, status, margin) for o in organs for c, value, status, margin in o.constraints}
    stomach = organs[0]
    d1cc = C.dose_numbers(phantom.dose()[phantom.organ()[0]], float(np.prod(phantom.spacing_mm)) / 1000,
                          C.CourseSettings(dose_volumes_cc=(1.0,)))["dcc"][1.0]
    assert found["stomach:D1cc<=30Gy"] == (pytest.approx(d1cc), "fail", pytest.approx(30 - d1cc))
    assert found["stomach:V20Gy<=30cc"] == (pytest.approx(stomach.v_gy_cc[20.0]), "pass",
                                            pytest.approx(30 - stomach.v_gy_cc[20.0]))
    assert found["stomach:Dmax<=33Gy"][1:] == ("fail", pytest.approx(33 - stomach.dmax_gy))
    assert found["small_bowel:Dmax<=1Gy"] == (0.0, "pass", 1.0)  # an absent organ gets no dose

    # Day 2 has the organ 6 mm nearer: it fails the same constraint by more; the failing days' note comes first.
    days, target, _ = K.moved_days(phantom)
    from model.registration import registration_from_matrix
    from model.dicom.rtdose import Dose

    s, r, c = phantom.spacing_mm
    dose = Dose(phantom.dose(), np.diag([-c, -r, s, 1.0]), name="phantom dose")
    known = {"day1": registration_from_matrix(np.eye(4), days[0][1])}
    result = C.course("day1", target, days, dose, C.CourseSettings(constraints=(C.parse_constraint("stomach:Dmax<=35Gy"),)),
                      known)
    assert [d.label for d in result.days] == ["day1", "day2"]
    assert result.days[0].failed == [] and len(result.days[1].failed) == 1
    assert result.notes[0].startswith("day2 FAILS stomach:Dmax<=35Gy (over by")
