"""``python -m model.predict ROOT``: a Kaggle tree of real slices, plus NIfTI and DICOM, as one cohort."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from model import labels
from model.cohort import run
from model.engines.torch import Segmenter
from model.labels import KAGGLE_CLASSES
from model.predict import main
from model.rle import RleCsv
from model.scans.sources import NameClashError, find_scans
from scan_fixtures import kaggle_slices, stack, write_dicom_series, write_nifti

#: case-day → (shared volume, slice count): three case-days, case1 on two days.
KAGGLE_SCANS = {"case1_day0": ("volume_234x234", 4), "case1_day3": ("volume_266x266", 3),
                "case12_day1": ("volume_276x276", 5)}


def kaggle_tree(root: Path, shared: Path, scans=KAGGLE_SCANS) -> dict[str, list[int]]:
    """``root/train/caseN/caseN_dayM/scans/`` from real slices; returns each scan's slice numbers."""
    numbers = {}
    for case_day, (volume, count) in scans.items():
        folder = root / "train" / case_day.split("_")[0] / case_day / "scans"
        folder.mkdir(parents=True)
        files = kaggle_slices(shared, volume, count=count)
        for f in files:
            shutil.copy(f, folder / f.name)
        numbers[case_day] = [int(f.name.split("_")[1]) for f in files]
    (root / "train.csv").write_text("id,class,segmentation\n")  # beside the scans, as downloaded: not a scan
    return numbers


@pytest.fixture(scope="module")
def cohort(shared_data, softmax_ckpt, tmp_path_factory):
    """One run over a Kaggle tree with a NIfTI and a DICOM series in it, and what it printed."""
    root = tmp_path_factory.mktemp("cohort") / "data"
    numbers = kaggle_tree(root, shared_data)
    nifti_voxels = stack(kaggle_slices(shared_data, "volume_360x310", count=3))
    (root / "other").mkdir()
    write_nifti(nifti_voxels, (4.0, 1.2, 1.2), root / "other" / "patientA.nii.gz")
    write_dicom_series(stack(kaggle_slices(shared_data, "volume_234x234", count=2)), root / "other" / "series")
    out = root.parent / "out"
    code = main([str(root), "--out", str(out), "--model", str(softmax_ckpt)])
    return root, out, numbers, code


#: Natural order of their paths: data/other/... before data/train/case1/... before data/train/case12/...
NAMES = ["patientA", "series", "case1_day0", "case1_day3", "case12_day1"]


def test_every_scan_is_found_and_named_after_its_case_day(cohort, capsys):
    root, out, numbers, code = cohort
    assert code == 0
    assert [s.name for s in find_scans([root])] == NAMES
    for name in NAMES:
        for suffix in ("_labels.nii.gz", "_masks.zip", "_organs.glb", "_summary.json"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
    # Only Kaggle-named slices have ids, so only they get a per-scan submission.
    assert sorted(p.name for p in out.glob("*_submission.csv")) == sorted(f"{cd}_submission.csv" for cd in numbers)


def test_one_submission_with_exactly_the_expected_ids(cohort):
    _, out, numbers, _ = cohort
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "class", "predicted"]
    expected = [(f"{cd}_slice_{n:04d}", KAGGLE_CLASSES[o]) for cd in KAGGLE_SCANS for n in numbers[cd]
                for o in labels.ORGANS]
    assert [(r[0], r[1]) for r in rows[1:]] == expected
    assert all(r[2] == "" or len(r[2].split()) % 2 == 0 for r in rows[1:])


def test_each_scans_rle_equals_its_nifti_and_the_model(cohort, shared_data, softmax_ckpt):
    _, out, numbers, _ = cohort
    segmenter = Segmenter.load(softmax_ckpt, device="cpu")
    for case_day, (volume, count) in KAGGLE_SCANS.items():
        voxels = stack(kaggle_slices(shared_data, volume, count=count))
        rle = RleCsv(out / "submission.csv").volume(case_day, voxels.shape[1:])
        assert list(rle.slice_numbers) == numbers[case_day]
        label_ids = np.asarray(nib.load(out / f"{case_day}_labels.nii.gz").dataobj).transpose(2, 1, 0)
        for o, organ in enumerate(labels.ORGANS):
            np.testing.assert_array_equal(rle.masks[o], label_ids == labels.ORGAN_IDS[organ])
        np.testing.assert_array_equal(rle.masks, segmenter.segment_scan(voxels).run().organ_masks)


def test_volumes_csv_has_one_row_per_scan(cohort):
    root, out, numbers, _ = cohort
    with open(out / "volumes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["scan"] for r in rows] == NAMES
    assert [int(r["slices"]) for r in rows] == [3, 2, 4, 3, 5]
    assert [r["kind"] for r in rows] == ["nifti", "dicom"] + ["slices"] * 3
    assert rows[4]["case_day"] == "case12_day1" and rows[0]["case_day"] == ""
    # Volumes: voxel count × voxel volume, from the written labels; slice ranges in the scan's numbers.
    for row in rows:
        label_ids = np.asarray(nib.load(out / f"{row['scan']}_labels.nii.gz").dataobj)
        voxel_ml = float(row["slice_mm"]) * float(row["row_mm"]) * float(row["col_mm"]) / 1000
        for organ in labels.ORGANS:
            count = int(np.count_nonzero(label_ids == labels.ORGAN_IDS[organ]))
            assert float(row[f"{organ}_ml"]) == pytest.approx(count * voxel_ml, abs=1e-3)
    case1_day0 = rows[2]
    assert (case1_day0["first_slice"], case1_day0["last_slice"]) == tuple(map(str, numbers["case1_day0"][::3]))
    assert rows[0]["slice_mm"] == "4.0" and rows[0]["source"].endswith("other/patientA.nii.gz")


def test_a_second_run_skips_finished_scans_and_rebuilds_the_cohort_files(cohort, softmax_ckpt, capsys):
    root, out, _, _ = cohort
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    submission = (out / "submission.csv").read_bytes()
    (out / "submission.csv").unlink()
    (out / "case1_day3_summary.json").unlink()  # as if interrupted while writing case1_day3
    capsys.readouterr()
    assert main([str(root), "--out", str(out), "--model", str(softmax_ckpt)]) == 0
    printed, err = capsys.readouterr()
    assert printed.splitlines()[0].startswith("case1_day3: 3 slices 266×266") and len(printed.splitlines()) == 1
    assert "5 scans, 1 segmented, 4 finished in an earlier run, 0 failed" in err
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    redone = {n for n in after if after[n] != before.get(n)}
    assert redone == {"case1_day3_labels.nii.gz", "case1_day3_masks.zip", "case1_day3_organs.glb",
                      "case1_day3_review.csv", "case1_day3_submission.csv", "case1_day3_summary.json",
                      "submission.csv", "volumes.csv"}
    assert (out / "submission.csv").read_bytes() == submission


def test_a_broken_scan_is_reported_and_skipped(shared_data, softmax_ckpt, tmp_path, capsys):
    root = tmp_path / "data"
    kaggle_tree(root, shared_data, {"case1_day0": ("volume_234x234", 2), "case5_day5": ("volume_266x266", 2)})
    broken = next((root / "train" / "case5" / "case5_day5" / "scans").iterdir())
    broken.write_bytes(broken.read_bytes()[:100])  # cut short
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--model", str(softmax_ckpt)]) == 1
    stdout, stderr = capsys.readouterr()
    assert f"error: {root}/train/case5/case5_day5/scans: {broken.name} could not be decoded" in stderr
    assert stdout.startswith("case1_day0: 2 slices") and "case5" not in stdout
    assert not list(out.glob("case5_day5*"))
    ids = {row[0].split("_slice_")[0] for row in csv.reader(open(out / "submission.csv"))}
    assert ids == {"id", "case1_day0"}


def test_several_scans_folders_by_their_case_day_and_clashing_names(shared_data, softmax_ckpt, tmp_path, capsys):
    """The issue's first report: two scans/ folders on the command line wrote scans_* once, and no submission."""
    root = tmp_path / "data"
    numbers = kaggle_tree(root, shared_data, {"case1_day0": ("volume_234x234", 2), "case2_day0": ("volume_266x266", 2)})
    folders = [root / "train" / cd.split("_")[0] / cd / "scans" for cd in numbers]
    out = tmp_path / "out"
    assert main([*map(str, folders), "--out", str(out), "--model", str(softmax_ckpt)]) == 0
    assert {p.name for p in out.glob("*_labels.nii.gz")} == {"case1_day0_labels.nii.gz", "case2_day0_labels.nii.gz"}
    ids = [row[0] for row in csv.reader(open(out / "submission.csv"))][1:]
    assert len(ids) == 3 * 4 and ids[0].startswith("case1_day0_slice_") and ids[-1].startswith("case2_day0_slice_")

    # The same case and day twice: refused in one line before anything is written.
    shutil.copytree(folders[0], tmp_path / "copy" / "case1_day0" / "scans")
    capsys.readouterr()
    out2 = tmp_path / "out2"
    assert main([str(folders[0]), str(tmp_path / "copy"), "--out", str(out2), "--model", str(softmax_ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: case1_day0 is named by 2 inputs") and err.count("\n") == 1
    assert not out2.exists()
    with pytest.raises(NameClashError):
        find_scans([folders[0], tmp_path / "copy"])

    # Other equal names get distinct ones; an --out holding another input's scan is refused.
    for name in ("a", "b"):
        write_dicom_series(stack(kaggle_slices(shared_data, count=2)), tmp_path / name / "series")
    assert [s.name for s in find_scans([tmp_path / "a", tmp_path / "b"])] == ["series", "series-2"]
    assert main([str(tmp_path / "a"), "--out", str(out2), "--model", str(softmax_ckpt)]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "b"), "--out", str(out2), "--model", str(softmax_ckpt)]) == 2
    assert "is from another input" in capsys.readouterr().err


def test_truth_scores_each_case_day_and_the_cohort(cohort, softmax_ckpt, tmp_path, capsys):
    """Truth = the prediction itself for case1_day0 (score 1), all empty for case1_day3, absent for case12_day1."""
    root, out, numbers, _ = cohort
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    truth = tmp_path / "train.csv"
    with open(truth, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "class", "segmentation"])
        for r in rows:
            if r[0].startswith("case1_day0"):
                writer.writerow(r)
            elif r[0].startswith("case1_day3"):
                writer.writerow([r[0], r[1], ""])
    capsys.readouterr()
    assert main([str(root), "--out", str(out), "--model", str(softmax_ckpt), "--truth", str(truth)]) == 0
    overall = json.loads(capsys.readouterr().out.splitlines()[-1])
    with open(out / "scores.csv", newline="") as f:
        scores = {r["case_day"]: r for r in csv.DictReader(f)}
    assert list(scores) == ["case1_day0", "case1_day3", "all"]
    assert float(scores["case1_day0"]["score"]) == 1.0
    predicted_day3 = any(r[2] for r in rows if r[0].startswith("case1_day3"))
    assert predicted_day3, "the tiny model predicts something on case1_day3, so its empty truth scores below 1"
    assert float(scores["case1_day3"]["hausdorff"]) == 1.0 and float(scores["case1_day3"]["dice"]) == 0.0
    assert overall["case_day"] == "all" and overall["score"] == pytest.approx(float(scores["all"]["score"]))
    assert overall["unscored"] == ["case12_day1"]  # no truth rows: named, not scored
    assert 0.0 < overall["score"] < 1.0


def test_rss_stays_flat_over_a_cohort(shared_data, softmax_ckpt, tmp_path):
    """Scan by scan: resident memory after the 6th of 6 scans is within 50 MiB of that after the 2nd.

    Read after ``gc.collect()`` and glibc's ``malloc_trim(0)``, so the reading is the memory still in use: the
    pages glibc keeps in its arenas after a free depend on what ran before in the process (a pytest-xdist
    worker's other tests), and once moved a reading by 73 MiB over these six scans on a Zen 4 machine where
    the live memory does not move (436-438 MiB over eight scans when trimmed, run alone)."""
    import ctypes
    import gc
    import platform

    import psutil

    trim = ctypes.CDLL(None).malloc_trim if platform.libc_ver()[0] == "glibc" else (lambda pad: None)

    volumes = ["volume_234x234", "volume_266x266", "volume_276x276", "volume_360x310"]
    scans = {f"case{i}_day0": (volumes[i % 4], 6) for i in range(1, 7)}
    root = tmp_path / "data"
    kaggle_tree(root, shared_data, scans)
    segmenter = Segmenter.load(softmax_ckpt, device="cpu")
    rss = []
    for result in run(segmenter, find_scans([root]), tmp_path / "out"):
        assert result.status == "done", result.error
        gc.collect()
        trim(0)
        rss.append(psutil.Process().memory_info().rss)
    assert len(rss) == 6
    assert rss[5] - rss[1] < 50 * 2**20, [r >> 20 for r in rss]
