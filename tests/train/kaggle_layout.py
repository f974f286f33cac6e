"""Kaggle layouts written for tests: 16-bit PNG scans plus a ``train.csv`` of RLE rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.labels import KAGGLE_CLASSES, ORGANS
from model.rle import rle_encode

from locations import REPO  # noqa: F401 - re-exported for the training tests
#: Synthetic scans: (H, W) deliberately not square, so a transposed decode cannot pass.
SYNTH_SHAPE = (40, 48)
SYNTH_DEPTH = 8
SYNTH_SCANS = ("case7_day0", "case7_day3", "case12_day0", "case20_day5", "case33_day1", "case41_day2")
#: A hand-written row-major RLE: a horizontal bar in row 5, columns 10..29 of case12_day0, slice 3.
BAR_ROW, BAR_COL, BAR_LEN = 5, 10, 20
BAR_RLE = f"{BAR_ROW * SYNTH_SHAPE[1] + BAR_COL + 1} {BAR_LEN}"


@dataclass(frozen=True)
class KaggleFixture:
    """A Kaggle layout on disk and the truth it encodes: ``{case_day: (O, D, H, W) bool}``."""

    root: Path
    truth: dict[str, np.ndarray]
    slice_numbers: dict[str, list[int]]


def write_kaggle(root: Path, scans: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                 slice_numbers: dict[str, list[int]], spacing: float = 1.5,
                 rle_override: dict[tuple[str, int, int], str] | None = None) -> KaggleFixture:
    """Write 16-bit PNG scans ``(D, H, W)`` and a ``train.csv`` (masks → RLE via :mod:`model.rle`)."""
    rows = []
    for case_day, scan in scans.items():
        case = case_day.split("_")[0]
        folder = root / "train" / case / case_day / "scans"
        folder.mkdir(parents=True)
        height, width = scan.shape[1:]
        for d, number in enumerate(slice_numbers[case_day]):
            name = f"slice_{number:04d}_{width}_{height}_{spacing:.2f}_{spacing:.2f}.png"
            Image.fromarray(scan[d].astype(np.uint16)).save(folder / name)
            for o, organ in enumerate(ORGANS):
                rle = (rle_override or {}).get((case_day, d, o)) or rle_encode(truth[case_day][o, d])
                rows.append([f"{case_day}_slice_{number:04d}", KAGGLE_CLASSES[organ], rle])
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "class", "segmentation"], *rows])
    return KaggleFixture(root, truth, slice_numbers)


def synthetic_scan(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One ``(D, H, W)`` uint16 scan with bright organ blobs and its ``(O, D, H, W)`` truth.

    Stomach and small bowel overlap on some slices; the first and last slices are empty.
    """
    depth, (height, width) = SYNTH_DEPTH, SYNTH_SHAPE
    yy, xx = np.mgrid[:height, :width]
    truth = np.zeros((len(ORGANS), depth, height, width), dtype=bool)
    for d in range(1, depth - 1):
        cy, cx = rng.integers(12, 28), rng.integers(12, 36)
        truth[0, d] = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
        truth[1, d] = (yy - cy - 4) ** 2 + (xx - cx - 5) ** 2 < 16
        truth[2, d] = (yy > 32) & (xx > 4) & (xx < 40)
    scan = rng.integers(200, 600, size=(depth, height, width))
    scan = scan + truth[0] * 2000 + truth[1] * 3000 + truth[2] * 1200
    return scan.astype(np.uint16), truth
