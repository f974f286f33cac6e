"""Ground truth for a scan, and how a prediction compares with it.

Ground truth comes as Kaggle ``train.csv``-style RLE, a label NIfTI (ids 0–3 as in the
dataset), bit-packed mask PNGs (this app's own export: stomach 1, small bowel 2, large
bowel 4), or clinical contours of the same DICOM series: an RTSTRUCT or a DICOM SEG
(:mod:`model.dicom.truth`). The numbers are the competition's, from :mod:`model.metric`, the implementation
training uses too.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from . import labels
from .dicom.truth import truth_from_dicom
from .image import IMAGE_SUFFIXES, ImageError, read_slice
from .metric import Score, competition_score, score_case
from .mask_png import MASK_BITS, decode_mask_png
from .rle import RleCsv
from .scans.archive import extract_zip
from .scans.base import Scan, ScanError
from .scans.kinds import kind_of
from .scans.nifti import read_nifti

_SLICE_NUMBER = re.compile(r"slice_(\d+)")


def load_ground_truth(paths: Iterable[str | Path], scan: Scan) -> tuple[np.ndarray, list[str]]:
    """Read ground truth for ``scan`` as ``(O, D, H, W) bool`` plus one-line notes.

    One ``.csv`` or ``.csv.gz`` (RLE rows for the scan's case and day), one label NIfTI, one RTSTRUCT or DICOM
    SEG (placed on the scan's grid by patient coordinates), or mask PNGs (files or one zip)
    matched to the scan's slices by ``slice_NNNN`` in their names, else in name order. Raises
    :class:`ScanError` when it does not fit the scan.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ScanError("No ground-truth files given.")
    first, kind = paths[0].name.lower(), kind_of(paths[0])
    if first.endswith((".csv", ".csv.gz")):  # Kaggle's train.csv, or the gzipped copy RleCsv reads as it is
        if len(paths) > 1:
            raise ScanError("Upload one ground-truth CSV.")
        return _truth_from_csv(paths[0], scan)
    if kind == "nifti":
        if len(paths) > 1:
            raise ScanError("Upload one ground-truth NIfTI.")
        return _truth_from_nifti(paths[0], scan), []
    if kind == "dicom":
        if len(paths) > 1:
            raise ScanError("Upload one RTSTRUCT or DICOM SEG file as ground truth.")
        return truth_from_dicom(paths[0], scan)
    if kind == "zip":
        if len(paths) > 1:
            raise ScanError("Upload one ground-truth zip.")
        with tempfile.TemporaryDirectory(prefix="uwmgi-truth-") as tmp:
            files = [f for f in extract_zip(paths[0], Path(tmp)) if f.suffix.lower() in IMAGE_SUFFIXES]
            return _truth_from_pngs(files, scan), []
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return _truth_from_pngs(paths, scan), []
    raise ScanError("Ground truth must be a train.csv-style RLE CSV, a label NIfTI, an RTSTRUCT or DICOM SEG, "
                    "or mask PNGs.")


def _truth_from_csv(path: Path, scan: Scan) -> tuple[np.ndarray, list[str]]:
    # Keep only this scan's RLE strings and decode just its volume: a full train.csv holds
    # hundreds of scans (~8 GB decoded).
    try:
        rows = RleCsv(path, [scan.case_day] if scan.case_day else None)
        if scan.case_day in rows:
            case_day = scan.case_day
        elif len(rows.case_days) == 1 and not scan.case_day:
            case_day = rows.case_days[0]
        elif scan.case_day:
            raise ScanError(f"{path.name} has no rows for {scan.case_day}.")
        else:
            raise ScanError(f"{path.name} holds {len(rows.case_days)} scans and the upload's names do not say "
                            "which (name the zip or folder like case123_day20).")
        listed = rows.slice_numbers(case_day)
        if scan.kaggle_named:
            numbers = scan.slice_numbers
        else:  # NIfTI/DICOM: slices 1..D in order, matched to the CSV's numbers in order
            numbers = listed[: len(scan)]
            if len(listed) != len(scan):
                raise ScanError(f"{path.name} has {len(listed)} slices for {case_day}; the scan has {len(scan)}.")
        truth = rows.masks_on(case_day, numbers, scan.shape[1:]).masks
    except ScanError:  # a ValueError too; already says what is wrong
        raise
    except (OSError, UnicodeDecodeError, csv.Error):
        raise ScanError(f"{path.name} is not a readable CSV file.") from None
    except ValueError as err:  # the message names the file by its full (upload) path; show its name
        raise ScanError(str(err).splitlines()[0].replace(str(path), path.name)) from None
    notes = []
    found = len(set(numbers) & set(listed))
    if found < len(scan):
        notes.append(f"{len(scan) - found} of the scan's slices have no ground-truth rows; counted as empty.")
    return truth, notes


def _truth_from_nifti(path: Path, scan: Scan) -> np.ndarray:
    label_scan = read_nifti(path)
    if label_scan.shape != scan.shape:
        raise ScanError(f"{path.name} is {label_scan.shape} (slices, rows, columns); the scan is {scan.shape}.")
    ids = np.rint(label_scan.voxels).astype(np.int64)
    unknown = set(np.unique(ids).tolist()) - {0, *labels.ORGAN_IDS.values()}
    if unknown:
        raise ScanError(f"{path.name} has label values {sorted(unknown)[:5]}; expected 0–3 "
                        "(background, stomach, small bowel, large bowel).")
    return np.stack([ids == labels.ORGAN_IDS[o] for o in labels.ORGANS])


def _truth_from_pngs(files: list[Path], scan: Scan) -> np.ndarray:
    if not files:
        raise ScanError("No mask PNGs found in the ground truth.")
    numbered = [_SLICE_NUMBER.search(f.name) for f in files]
    if all(numbered) and scan.kaggle_named:
        by_number = {int(m[1]): f for m, f in zip(numbered, files)}
        order = [by_number.get(n) for n in scan.slice_numbers]
    elif len(files) == len(scan):
        order = sorted(files, key=lambda f: f.name)
    else:
        raise ScanError(f"{len(files)} mask PNGs for a scan of {len(scan)} slices; give one per slice.")
    truth = np.zeros((len(labels.ORGANS), *scan.shape), dtype=bool)
    all_bits = sum(MASK_BITS.values())
    for d, f in enumerate(order):
        if f is None:
            continue
        try:
            packed = read_slice(f, allow_flat=True)
        except ImageError as err:
            raise ScanError(str(err)) from None
        if packed.shape != scan.shape[1:]:
            raise ScanError(f"{f.name} is {packed.shape[1]}×{packed.shape[0]} px; the scan's slices are "
                            f"{scan.shape[2]}×{scan.shape[1]}.")
        if packed.max() > all_bits or np.any(packed != np.rint(packed)):
            raise ScanError(f"{f.name} is not a bit-packed mask PNG (stomach 1, small bowel 2, large bowel 4).")
        truth[:, d] = decode_mask_png(packed.astype(np.uint8))
    return truth


def compare(organ_masks: np.ndarray, truth: np.ndarray) -> Score:
    """The competition numbers of a prediction against ground truth, both ``(O, D, H, W) bool``."""
    return competition_score([score_case(organ_masks, truth)])


def confusion(organ_masks: np.ndarray, truth: np.ndarray, visible: Iterable[str] = labels.ORGANS) -> np.ndarray:
    """True positive, false positive and false negative pixels of one slice, ``(3, H, W) bool``.

    ``organ_masks`` and ``truth``: ``(O, H, W) bool``. Computed per organ, then joined over the
    ``visible`` organs.
    """
    keep = [labels.ORGANS.index(o) for o in visible]
    pred, true = organ_masks[keep], truth[keep]
    return np.stack([(pred & true).any(0), (pred & ~true).any(0), (~pred & true).any(0)])

