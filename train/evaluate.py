"""``evaluate`` a contract checkpoint on the Kaggle layout, and ``score`` a submission CSV.

Both score through the one cohort scorer of :mod:`model.metric` (:func:`~model.metric.score_scans`,
which :func:`~model.metric.score_submission` and so :func:`model.cohort.score_cohort` use too), and
print one JSON object.
The functions raise :class:`EvaluationError` (or the readers' own errors); only the ``*_main``
commands turn errors into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


from model.checkpoint import CheckpointError
from model.engines.torch import Segmenter
from model.metric import ScoringError, score_scans, score_submission
from model.rle import RleCsv, RleVolume, write_rle_csv

from . import data


class EvaluationError(ValueError):
    """Inputs that cannot be scored together. ``str(err)`` is one line a person can act on."""


def evaluate(checkpoint: str, data_dir: str | Path, fold: int | None = None, folds: int = 5,
             out_dir: str | Path | None = None, drop_faulty: bool = True,
             submission: str | Path | None = None) -> dict:
    """Score ``checkpoint`` on the scans of ``data_dir`` (only fold ``fold``'s validation cases when given).

    Writes ``per_case_day.csv`` and ``summary.json`` into ``out_dir`` (default: ``./evaluation``),
    and with ``submission`` also the predictions as a Kaggle ``id,class,predicted`` CSV.
    """
    segmenter = Segmenter.load(checkpoint)
    scans = data.index_scans(data_dir)
    case_days = list(scans) if fold is None else data.split_cases(list(scans), folds, fold)[1]
    if drop_faulty:
        case_days = [cd for cd in case_days if cd not in data.FAULTY_SCANS]
    truth_rows = RleCsv(Path(data_dir) / "train.csv")
    out_dir = Path(out_dir or "evaluation")
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = []

    def segmented():  # one scan at a time, on the scan's own slices (a slice without rows: empty truth)
        for case_day in case_days:
            files = scans[case_day]
            pred = segmenter.segment_scan(data.read_scan(files)).run().organ_masks
            if submission:
                predictions.append(RleVolume(case_day, files.slice_numbers, pred))
            yield case_day, pred, data.organ_masks(data.read_scan_masks(truth_rows, files))

    rows, overall = score_scans(segmented())
    summary = {**overall.as_dict(), "checkpoint": str(checkpoint),
               "fold": fold, "folds": folds if fold is not None else None, "case_days": len(case_days)}
    with open(out_dir / "per_case_day.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case_day"])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if submission:
        write_rle_csv(submission, predictions)
    return summary


def score(truth_csv: str | Path, pred_csv: str | Path, data_dir: str | Path | None = None,
          only_predicted: bool = False) -> dict:
    """Score a Kaggle prediction CSV (``id,class,predicted``) against a ``train.csv``-style truth (``.csv`` or
    ``.csv.gz``).

    Image sizes come from ``width,height`` columns of ``truth_csv`` when present, else from the scans
    in ``data_dir``. Every scan of the truth is scored (``only_predicted``: only those the prediction has
    rows for, as ``python -m model.predict --truth`` scores the scans it ran, e.g. one fold's submission
    against the whole ``train.csv``), by :func:`model.metric.score_submission` and its rule for what
    either side lacks (the prediction's gaps count as empty; a scan the truth lacks is left out and
    listed under ``unscored``; a slice it lacks is an error). ``scans`` counts the scans scored and
    ``not_predicted`` those of them the prediction has no row for (each scored as empty).
    """
    try:
        truth, predicted = RleCsv(truth_csv), RleCsv(pred_csv)
    except UnicodeDecodeError:
        raise EvaluationError(f"{truth_csv} or {pred_csv} is not a text CSV (a .gz file must be named .gz)") from None
    case_days = [cd for cd in predicted.case_days if cd in truth] if only_predicted else list(truth.case_days)
    shapes = {}
    if data_dir is not None and any(cd not in truth.shapes for cd in case_days):  # walk the scans only if needed
        shapes = {cd: files.shape for cd, files in data.index_scans(data_dir).items()}
    sizeless = [cd for cd in case_days if cd not in truth.shapes and cd not in shapes]
    if sizeless:
        which = f"{sizeless[0]}{f' and {len(sizeless) - 1} more scans' if len(sizeless) > 1 else ''}"
        where = ", and --data-dir holds no such scan" if data_dir is not None else ": pass --data-dir with the scans"
        only = "" if only_predicted else "; --only-predicted scores only the scans the prediction has"
        raise EvaluationError(f"{truth_csv} has no width,height for {which}{where}{only}.")
    extra = [cd for cd in predicted.case_days if cd not in truth]
    try:
        _, overall, unscored = score_submission(truth, predicted, case_days=[*case_days, *extra], shapes=shapes)
    except ScoringError as err:
        raise EvaluationError(f"{pred_csv} against {truth_csv}: {err}") from None
    return {**overall.as_dict(), "scans": len(case_days),
            "not_predicted": sum(cd not in predicted for cd in case_days), "unscored": unscored}


def evaluate_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train evaluate",
                                     description="Score a contract checkpoint on Kaggle-layout data.")
    parser.add_argument("checkpoint", help="contract checkpoint: a directory or a Hub model repo")
    parser.add_argument("data_dir", help="Kaggle layout: train.csv and train/caseN/caseN_dayD/scans/")
    parser.add_argument("--fold", type=int, help="only this fold's validation cases (GroupKFold by case)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--out", default="evaluation", help="folder for per_case_day.csv and summary.json")
    parser.add_argument("--keep-faulty", action="store_true", help="keep the hosts' faulty scans")
    parser.add_argument("--submission", help="also write the predictions as a Kaggle CSV here")
    args = parser.parse_args(argv)
    try:
        summary = evaluate(args.checkpoint, args.data_dir, args.fold, args.folds, args.out,
                           drop_faulty=not args.keep_faulty, submission=args.submission)
    except (CheckpointError, ValueError, OSError) as err:
        _exit(err)
    json.dump(summary, sys.stdout, indent=1)
    print()


def score_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train score",
                                     description="Score a Kaggle prediction CSV against a train.csv, one scan "
                                                 "at a time. Scans and slices the prediction lacks count as "
                                                 "empty predictions; predicting ones the truth lacks is an error.")
    parser.add_argument("truth_csv", help="id,class,segmentation[,width,height] (.csv or .csv.gz)")
    parser.add_argument("pred_csv", help="id,class,predicted")
    parser.add_argument("--data-dir", help="Kaggle layout giving image sizes when TRUTH_CSV has no width,height")
    parser.add_argument("--only-predicted", action="store_true",
                        help="score only the scans PRED_CSV has rows for (e.g. one fold's submission against the "
                             "whole train.csv); by default every scan of TRUTH_CSV counts, one never predicted as empty")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(score(args.truth_csv, args.pred_csv, args.data_dir, args.only_predicted)))
    except (ValueError, OSError) as err:
        _exit(err)


def _exit(err: Exception) -> None:
    """A library error as the commands report it: one line on stderr, exit status 2."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    evaluate_main()
