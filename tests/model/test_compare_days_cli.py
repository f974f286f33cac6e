"""``python -m model.predict ROOT --out DIR --compare-days``: a Kaggle tree with two days of one case."""

from __future__ import annotations

import csv
import gzip
import shutil

import pytest

from model.cohort import compare_cohort_days, plan_cohort
from model.days import CHANGE_COLUMNS
from model.predict import main
from locations import read_csv_table
from scan_fixtures import kaggle_slices

#: Day 40 holds slices 10..69 of day 29's 115 (the real 360×310 volume, case47_day29): the same
#: anatomy cut to 60 slices, so with each stack's middle at the origin, day 40's anatomy lies
#: (57 − 39.5) × 3 mm = 52.5 mm superior of day 29's in patient coordinates.
FIRST, COUNT = 10, 60
EXPECTED_SI_MM = ((115 - 1) / 2 - (FIRST + (COUNT - 1) / 2)) * 3.0


def _two_day_cohort(root, shared_data, checkpoint, day_29: slice, day_40: slice):
    """A Kaggle tree of case47 (the real 360×310 volume, case47_day29) holding ``day_29`` of its slices as
    day 29 and ``day_40`` of them as day 40, with the real truth rows of each; then one
    ``--compare-days`` run with ``--truth``. Returns ``(root, out, truth, exit code)``."""
    files = kaggle_slices(shared_data, "volume_360x310")
    assert len(files) == 115
    numbers = {}
    for case_day, chosen in (("case47_day29", files[day_29]), ("case47_day40", files[day_40])):
        folder = root / "train" / "case47" / case_day / "scans"
        folder.mkdir(parents=True)
        for f in chosen:
            shutil.copy(f, folder / f.name)
        numbers[case_day] = {f.name.split("_")[1] for f in chosen}
    # Truth: day 29's real rows for the slices each day holds, under that day's name.
    truth = root / "truth.csv"
    with gzip.open(shared_data / "kaggle" / "train.csv.gz", "rt", newline="") as f, \
            open(truth, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "class", "segmentation"])
        for row in csv.DictReader(f):
            if row["id"].startswith("case47_day29_"):
                for case_day, kept in numbers.items():
                    if row["id"].rsplit("_", 1)[1] in kept:
                        writer.writerow([row["id"].replace("case47_day29", case_day), row["class"],
                                         row["segmentation"]])
    out = root / "out"
    code = main([str(root / "train"), "--out", str(out), "--model", str(checkpoint), "--truth", str(truth),
                 "--compare-days"])
    return root, out, truth, code


@pytest.fixture(scope="module")
def two_days(shared_data, softmax_ckpt, tmp_path_factory):
    """The whole volume as day 29 and its slices FIRST.. as day 40: a known offset to register."""
    return _two_day_cohort(tmp_path_factory.mktemp("days"), shared_data, softmax_ckpt,
                           slice(None), slice(FIRST, FIRST + COUNT))


@pytest.fixture(scope="module")
def short_days(shared_data, softmax_ckpt, tmp_path_factory):
    """The same, cut to 30 and 16 slices: for what does not need the whole volume (about a quarter of the voxels)."""
    return _two_day_cohort(tmp_path_factory.mktemp("short_days"), shared_data, softmax_ckpt,
                           slice(50, 80), slice(57, 73))


@pytest.mark.slow
def test_changes_csv_has_predicted_and_true_rows_side_by_side(two_days):
    _, out, _, code = two_days
    assert code == 0
    columns, rows = read_csv_table(out / "changes.csv")
    assert columns == CHANGE_COLUMNS
    assert columns[:13] == ("case", "day_a", "day_b", "organ", "volume_a_ml", "volume_b_ml", "volume_change_pct",
                            "centroid_shift_raw_mm", "centroid_shift_registered_mm", "dice_registered",
                            "hd95_registered_mm", "registration_translation_mm", "registration_rotation_deg")
    assert [(r["organ"], r["masks"]) for r in rows] == [(o, m) for o in ("stomach", "small_bowel", "large_bowel")
                                                        for m in ("predicted", "truth")]
    assert {(r["case"], r["day_a"], r["day_b"]) for r in rows} == {("case47", "day29", "day40")}
    for row in rows:  # one registration for both, on the images: the known 52.5 mm SI offset
        assert float(row["registration_translation_mm"]) == pytest.approx(abs(EXPECTED_SI_MM), abs=1.0)
        assert float(row["registration_rotation_deg"]) < 0.5
        assert "nan" not in ",".join(row.values()).lower()
    for row in (r for r in rows if r["masks"] == "truth"):
        a, b = float(row["volume_a_ml"]), float(row["volume_b_ml"])
        assert 0 < b <= a
        # Day 40's organ is day 29's cut to its slices, so after registration it lies inside A's: Dice 2b/(a+b).
        assert float(row["dice_registered"]) == pytest.approx(2 * b / (a + b), abs=0.01)
        assert float(row["volume_change_pct"]) == pytest.approx(100 * (b / a - 1), abs=0.01)


@pytest.mark.slow
def test_compare_days_again_from_the_outputs_alone(short_days, capsys):
    """A finished cohort is compared again without a model: nothing is segmented."""
    root, out, truth, code = short_days
    assert code == 0
    _, first = read_csv_table(out / "changes.csv")
    (out / "changes.csv").unlink()
    nifti_times = {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.nii.gz")}
    code = main([str(root / "train"), "--out", str(out), "--model", str(root / "no-such-model"),
                 "--truth", str(truth), "--compare-days"])
    _, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "2 finished in an earlier run" in stderr and "wrote changes.csv" in stderr
    _, again = read_csv_table(out / "changes.csv")
    # The same numbers; ITK's threads sum the metric in any order, so the registration's last digits vary.
    assert [(r["organ"], r["masks"], r["status"]) for r in again] == [(r["organ"], r["masks"], r["status"]) for r in first]
    for new, old in zip(again, first):
        assert new["volume_a_ml"] == old["volume_a_ml"] and new["volume_b_ml"] == old["volume_b_ml"]
        for key in ("registration_translation_mm", "centroid_shift_registered_mm"):
            assert (new[key] == old[key] == "") or float(new[key]) == pytest.approx(float(old[key]), abs=0.05)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.nii.gz")} == nifti_times


@pytest.mark.slow
def test_a_day_the_truth_lacks_keeps_its_predicted_rows(short_days, tmp_path):
    root, out, truth, _ = short_days
    partial = tmp_path / "truth.csv"
    partial.write_text("".join(line for line in truth.read_text().splitlines(keepends=True) if "day40" not in line))
    sources = plan_cohort([root / "train"], out)
    path, problems = compare_cohort_days(sources, out, partial)
    _, rows = read_csv_table(path)
    assert [r["masks"] for r in rows] == ["predicted"] * 3
    assert len(problems) == 1 and problems[0].startswith("case47_day40: no truth compared: ")


@pytest.mark.slow
def test_one_day_cases_give_an_empty_table(shared_data, softmax_ckpt, tmp_path):
    folder = tmp_path / "train" / "case9" / "case9_day0" / "scans"
    folder.mkdir(parents=True)
    for f in kaggle_slices(shared_data, "volume_234x234", count=8):
        shutil.copy(f, folder / f.name)
    assert main([str(tmp_path / "train"), "--out", str(tmp_path / "out"), "--model", str(softmax_ckpt),
                 "--compare-days"]) == 0
    columns, rows = read_csv_table(tmp_path / "out" / "changes.csv")
    assert columns == CHANGE_COLUMNS and rows == []
