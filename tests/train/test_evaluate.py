"""`python -m train score` on a hand-computed CSV, and `evaluate` agreeing with `score` on its own output."""

from __future__ import annotations

import csv
import gzip
import json
import math

import pytest

from tiny import make_tiny_checkpoint
from train.__main__ import main
from train.evaluate import EvaluationError, score


def write_rows(path, column, rows, shape=None):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "class", column, *(["width", "height"] if shape else [])])
        for row in rows:
            writer.writerow([*row, *([shape[1], shape[0]] if shape else [])])


def test_score_matches_a_hand_computed_value(tmp_path, capsys):
    """One 2-slice, 4×4 scan (D, H, W) = (2, 4, 4).

    stomach: truth = slice 0 pixels 1-2 (row 0, cols 0-1), prediction = pixel 1 only.
      Dice(slice 0) = 2·1/(1+2) = 2/3; slice 1 is empty on both sides and skipped.
      HD: the farthest truth voxel (0, 0, 1) is 1/W = 1/4 from the prediction → 0.25/√3.
    small bowel: truth empty, prediction = slice 1 pixel 16 → Dice(slice 1) = 0, HD = 1.
    large bowel: empty on both sides everywhere → skipped.
    """
    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    s0, s1 = "case1_day0_slice_0001", "case1_day0_slice_0002"
    write_rows(truth, "segmentation", [(s0, "stomach", "1 2"), (s0, "small_bowel", ""), (s0, "large_bowel", ""),
                                       (s1, "stomach", ""), (s1, "small_bowel", ""), (s1, "large_bowel", "")],
               shape=(4, 4))
    write_rows(pred, "predicted", [(s0, "stomach", "1 1"), (s1, "small_bowel", "16 1")])
    main(["score", str(truth), str(pred)])
    result = json.loads(capsys.readouterr().out)

    hd_stomach = 0.25 / math.sqrt(3)
    assert result["dice/stomach"] == pytest.approx(2 / 3)
    assert result["hausdorff/stomach"] == pytest.approx(hd_stomach)
    assert result["dice/small_bowel"] == pytest.approx(0.0) and result["hausdorff/small_bowel"] == 1.0
    assert result["dice/large_bowel"] is None and result["hausdorff/large_bowel"] is None
    assert result["dice"] == pytest.approx(1 / 3)
    assert result["hausdorff"] == pytest.approx((hd_stomach + 1) / 2)
    assert result["score"] == pytest.approx(0.4 / 3 + 0.6 * (1 - (hd_stomach + 1) / 2))  # 0.390032
    assert result["score"] == pytest.approx(0.390032, abs=1e-6)



def test_a_scan_missing_from_the_prediction_counts_as_empty(tmp_path, capsys):
    """The hand-computed scan above plus case2_day0, which the prediction leaves out.

    case2_day0 (2 slices, 4×4): stomach truth = slice 0 pixel 5; predicted empty → Dice(slice 0)
    = 0 and HD = 1; its other organs and slices are empty on both sides and skipped. So Dice
    pools (2/3, 0, 0) and HD pools (hd_stomach, 1, 1).
    """
    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    s0, s1 = "case1_day0_slice_0001", "case1_day0_slice_0002"
    t0, t1 = "case2_day0_slice_0001", "case2_day0_slice_0002"
    empty = [(s, o, "") for s in (t0, t1) for o in ("stomach", "small_bowel", "large_bowel")][1:]
    write_rows(truth, "segmentation", [(s0, "stomach", "1 2"), (s0, "small_bowel", ""), (s0, "large_bowel", ""),
                                       (t0, "stomach", "5 1"), *empty,
                                       (s1, "stomach", ""), (s1, "small_bowel", ""), (s1, "large_bowel", "")],
               shape=(4, 4))  # case1's rows split by case2's: rows of a scan need not be contiguous
    write_rows(pred, "predicted", [(s0, "stomach", "1 1"), (s1, "small_bowel", "16 1")])
    main(["score", str(truth), str(pred)])
    result = json.loads(capsys.readouterr().out)

    hd_stomach = 0.25 / math.sqrt(3)
    assert result["dice_pairs"] == 3 and result["hausdorff_pairs"] == 3
    assert result["dice/stomach"] == pytest.approx(1 / 3)
    assert result["hausdorff/stomach"] == pytest.approx((hd_stomach + 1) / 2)
    assert result["dice"] == pytest.approx(2 / 9)
    assert result["score"] == pytest.approx(0.4 * 2 / 9 + 0.6 * (1 - (hd_stomach + 2) / 3))  # 0.260021
    assert result["score"] == pytest.approx(0.260021, abs=1e-6)

    assert result["unscored"] == [] and result["scans"] == 2 and result["not_predicted"] == 1

    # --only-predicted scores just the scans the prediction has rows for (a fold's submission against the
    # whole train.csv): case1 alone, the hand-computed 0.390032 of the test above.
    main(["score", str(truth), str(pred), "--only-predicted"])
    alone = json.loads(capsys.readouterr().out)
    assert alone["score"] == pytest.approx(0.390032, abs=1e-6) and (alone["scans"], alone["not_predicted"]) == (1, 0)
    # The truth as Kaggle's gzipped train.csv.gz reads the same.
    gzipped = tmp_path / "truth.csv.gz"
    gzipped.write_bytes(gzip.compress(truth.read_bytes()))
    assert score(gzipped, pred) == score(truth, pred)
    # Sizes in the truth: --data-dir is not needed, so not read (a folder without scans is no error).
    assert score(truth, pred, data_dir=tmp_path) == score(truth, pred)

    # A scan the truth does not have cannot be scored: it is named, not silently dropped or counted.
    write_rows(pred, "predicted", [(s0, "stomach", "1 1"), ("case3_day0_slice_0001", "stomach", "1 1")])
    again = score(truth, pred)
    assert again["unscored"] == ["case3_day0"] and again["dice/stomach"] == pytest.approx(1 / 3)
    # A slice the truth does not have, in a scan it has, means the files do not belong together.
    write_rows(pred, "predicted", [(s0, "stomach", "1 1"), ("case1_day0_slice_0009", "stomach", "1 1")])
    with pytest.raises(EvaluationError, match=r"case1_day0: predicted slices \[9\] are not in the truth"):
        score(truth, pred)
    with pytest.raises(SystemExit) as exit_info:  # the command: one line, status 2
        main(["score", str(truth), str(pred)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {pred} against {truth}: case1_day0: predicted slices [9]")

def test_score_without_sizes_says_which_option_gives_them(tmp_path):
    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    write_rows(truth, "segmentation", [("case1_day0_slice_0001", "stomach", "1 2"), ("case2_day0_slice_0001", "stomach", "")])
    write_rows(pred, "predicted", [("case1_day0_slice_0001", "stomach", "1 1")])
    with pytest.raises(EvaluationError, match=r"truth\.csv has no width,height for case1_day0 and 1 more scans: pass "
                                              r"--data-dir with the scans; --only-predicted scores only the scans the "
                                              r"prediction has\.$"):
        score(truth, pred)
    with pytest.raises(EvaluationError, match=r"truth\.csv has no width,height for case1_day0: pass --data-dir with the "
                                              r"scans\.$"):
        score(truth, pred, only_predicted=True)


def test_score_takes_sizes_from_data_dir_and_perfect_prediction_scores_one(synthetic_kaggle, tmp_path, capsys):
    pred = tmp_path / "pred.csv"
    with open(synthetic_kaggle.root / "train.csv") as src, open(pred, "w") as dst:
        dst.write(src.read().replace("segmentation", "predicted", 1))
    main(["score", str(synthetic_kaggle.root / "train.csv"), str(pred), "--data-dir", str(synthetic_kaggle.root)])
    result = json.loads(capsys.readouterr().out)
    assert result["score"] == 1.0 and result["dice"] == 1.0 and result["hausdorff"] == 0.0


@pytest.mark.slow
def test_evaluate_writes_reports_that_score_reproduces(synthetic_kaggle, tmp_path, capsys):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", multi_label=True, size=32, slice_offsets=[-2, 0, 2])
    out, submission = tmp_path / "eval", tmp_path / "submission.csv"
    main(["evaluate", str(checkpoint), str(synthetic_kaggle.root), "--fold", "0", "--folds", "3",
          "--out", str(out), "--submission", str(submission)])
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary and summary["fold"] == 0 and summary["case_days"] >= 1
    with open(out / "per_case_day.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["case_days"] and "dice/stomach" in rows[0]

    # Scoring the written submission against the same scans' truth gives the same numbers.
    val_days = {r["case_day"] for r in rows}
    truth = tmp_path / "truth.csv"
    with open(synthetic_kaggle.root / "train.csv") as src, open(truth, "w") as dst:
        lines = src.readlines()
        dst.writelines([lines[0], *(ln for ln in lines[1:] if ln.split("_slice_")[0] in val_days)])
    main(["score", str(truth), str(submission), "--data-dir", str(synthetic_kaggle.root)])
    rescored = json.loads(capsys.readouterr().out)
    for key in ("score", "dice", "hausdorff", "dice/stomach", "hausdorff/large_bowel"):
        assert rescored[key] == pytest.approx(summary[key], nan_ok=True), key
    # So does the whole train.csv with --only-predicted; without it the other folds' scans count as empty.
    main(["score", str(synthetic_kaggle.root / "train.csv"), str(submission), "--data-dir", str(synthetic_kaggle.root),
          "--only-predicted"])
    only = json.loads(capsys.readouterr().out)
    assert only["score"] == pytest.approx(summary["score"]) and only["not_predicted"] == 0
    main(["score", str(synthetic_kaggle.root / "train.csv"), str(submission), "--data-dir", str(synthetic_kaggle.root)])
    every = json.loads(capsys.readouterr().out)
    assert every["not_predicted"] == every["scans"] - summary["case_days"] > 0
